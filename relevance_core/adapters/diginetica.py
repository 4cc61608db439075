"""DIGINETICA (CIKM Cup 2016) raw files → canonical landing files, so real data flows through the same
ingestion, validation and pipeline as a shop's own exports (nothing downstream knows where it came from).

Mapping, and why:

* Views (``sample_train-item-views.csv``) and purchases (``train-purchases.csv``) become ``view`` and
  ``purchase`` events. The files give a session's date (``eventdate``) and each event's offset from the
  session start (``timeframe``, ms), so ``timestamp = eventdate 00:00 UTC + timeframe``; that keeps the
  order inside a session exact, which is what session models learn from.
* ``session_id`` / ``user_id`` are prefixed (``dg-s…`` / ``dg-u…``) so they cannot collide with another
  source's ids in the same lake; ``NA`` users are anonymous (null), as the canonical event allows.
* Item ids are kept as they are: they join ``product-categories.csv`` and the catalog written here.
* Purchases: the views file is a sample of ~3k sessions while the purchases file has every purchase (18k),
  mostly in sessions whose views are absent. ``purchases="viewed_sessions"`` (default) keeps the purchases
  of sampled sessions, so the stream stays coherent; ``"all"`` or ``"none"`` are there when wanted.
* Catalog: one row per categorised item (``title = "Item <id>"``, ``category_path = "Category <cid>"``;
  DIGINETICA publishes no names or prices), plus any item seen in events without a category. Items never
  interacted with stay in the catalog on purpose: they are the cold-start listings.
* ``shift_to``: the data is from 2016, the Dagster partitions start in 2026. Every timestamp moves by the
  same whole number of weeks, so order, gaps and weekdays (weekly seasonality) are preserved; the first
  day lands on the first date on/after ``shift_to`` with the original first day's weekday.

Events go to ``landing/events/date=D/diginetica.<fmt>`` (one file per UTC day), the catalog to
``landing/catalog/diginetica-items.parquet``. Re-running overwrites the same keys (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date as Date
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from relevance_core.schemas import EVENT_ARROW_SCHEMA, ITEM_ARROW_SCHEMA, TS
from relevance_core.settings import LAYOUT
from relevance_core.storage import ArtifactStore

VIEWS_FILE = "sample_train-item-views.csv"
PURCHASES_FILE = "train-purchases.csv"
CATEGORIES_FILE = "product-categories.csv"
SOURCE_NAME = "diginetica"
CATALOG_KEY = f"{LAYOUT.catalog_landing}/{SOURCE_NAME}-items.parquet"

Purchases = Literal["viewed_sessions", "all", "none"]
Format = Literal["parquet", "csv", "jsonl"]


@dataclass
class DigineticaImport:
    """What the import wrote: per-day landing keys and counts, the catalog key, and the date shift."""

    shift_days: int
    first_day: str
    last_day: str
    views: int
    purchases: int
    items: int
    catalog_key: str
    event_keys: dict[str, str] = field(default_factory=dict)

    @property
    def days(self) -> list[str]:
        return sorted(self.event_keys)

    @property
    def events(self) -> int:
        return self.views + self.purchases


def raw_dir(path: str | Path) -> Path:
    """Accept the dataset root (``…/diginetica``) or its ``raw`` folder."""
    p = Path(path)
    return p / "raw" if (p / "raw" / VIEWS_FILE).exists() else p


def _read(path: Path, types: dict[str, pa.DataType]) -> pa.Table:
    if not path.exists():
        raise FileNotFoundError(f"DIGINETICA file not found: {path}")
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=";"),
        convert_options=pacsv.ConvertOptions(
            column_types=types, null_values=["NA", ""], strings_can_be_null=True
        ),
    )


def _timestamps(eventdate: pa.ChunkedArray, timeframe: pa.ChunkedArray) -> pa.Array:
    midnight = pc.cast(pc.strptime(eventdate, format="%Y-%m-%d", unit="ms"), pa.int64())
    return pc.cast(pc.cast(pc.add(midnight, timeframe), pa.timestamp("ms", tz="UTC")), TS)


def _prefixed(prefix: str, ids: pa.ChunkedArray) -> pa.ChunkedArray:
    # a null id stays null (an anonymous user), which is what binary_join_element_wise does with nulls
    return pc.binary_join_element_wise(pa.scalar(prefix), pc.cast(ids, pa.string()), "")


def load_events(raw: Path, purchases: Purchases = "viewed_sessions") -> pa.Table:
    """All DIGINETICA events as one canonical table (original 2016 dates), sorted by time."""
    views = _read(
        raw / VIEWS_FILE,
        {
            "session_id": pa.int64(),
            "user_id": pa.int64(),
            "item_id": pa.string(),
            "timeframe": pa.int64(),
            "eventdate": pa.string(),
        },
    )
    tables = [
        pa.table(
            {
                "user_id": _prefixed("dg-u", views["user_id"]),
                "session_id": _prefixed("dg-s", views["session_id"]),
                "item_id": views["item_id"],
                "event_type": pa.array(["view"] * views.num_rows, pa.string()),
                "timestamp": _timestamps(views["eventdate"], views["timeframe"]),
                "device_type": pa.nulls(views.num_rows, pa.string()),
            }
        )
    ]
    if purchases != "none":
        buys = _read(
            raw / PURCHASES_FILE,
            {
                "sessionId": pa.int64(),
                "userId": pa.int64(),
                "timeframe": pa.int64(),
                "eventdate": pa.string(),
                "ordernumber": pa.int64(),
                "itemId": pa.string(),
            },
        )
        if purchases == "viewed_sessions":
            buys = buys.filter(pc.is_in(buys["sessionId"], value_set=pc.unique(views["session_id"])))
        tables.append(
            pa.table(
                {
                    "user_id": _prefixed("dg-u", buys["userId"]),
                    "session_id": _prefixed("dg-s", buys["sessionId"]),
                    "item_id": buys["itemId"],
                    "event_type": pa.array(["purchase"] * buys.num_rows, pa.string()),
                    "timestamp": _timestamps(buys["eventdate"], buys["timeframe"]),
                    "device_type": pa.nulls(buys.num_rows, pa.string()),
                }
            )
        )
    events = pa.concat_tables(tables).cast(EVENT_ARROW_SCHEMA)
    return events.sort_by([("timestamp", "ascending"), ("session_id", "ascending")])


def load_catalog(raw: Path, extra_item_ids: pa.Array | None = None) -> pa.Table:
    cats = _read(raw / CATEGORIES_FILE, {"itemId": pa.string(), "categoryId": pa.string()})
    item_ids = cats["itemId"]
    category = pc.binary_join_element_wise(pa.scalar("Category "), cats["categoryId"], "")
    if extra_item_ids is not None:
        missing = pc.unique(
            pc.filter(extra_item_ids, pc.invert(pc.is_in(extra_item_ids, value_set=item_ids)))
        )
        item_ids = pa.chunked_array(item_ids.chunks + [missing.cast(pa.string())])
        category = pa.chunked_array(category.chunks + [pa.array([""] * len(missing), pa.string())])
    n = len(item_ids)
    columns = {
        "item_id": item_ids,
        "title": pc.binary_join_element_wise(pa.scalar("Item "), item_ids, ""),
        "description": pa.array([""] * n, pa.string()),
        "category_path": category,
        "available": pa.array([True] * n, pa.bool_()),
    }
    return pa.table(
        {f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in ITEM_ARROW_SCHEMA},
        schema=ITEM_ARROW_SCHEMA,
    )


def shift_days_for(first_day: Date, shift_to: Date | str | None) -> int:
    """Days to add so ``first_day`` lands on the first date ≥ ``shift_to`` with the same weekday (a whole
    number of weeks: weekly patterns stay on their weekdays)."""
    if shift_to is None:
        return 0
    target = Date.fromisoformat(shift_to) if isinstance(shift_to, str) else shift_to
    delta = (target - first_day).days
    return -(-delta // 7) * 7


def _encode(table: pa.Table, fmt: Format) -> bytes:
    sink = pa.BufferOutputStream()
    if fmt == "parquet":
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()
    # ISO-8601 UTC with milliseconds (the landing contract's text form); %S carries the fraction in Arrow.
    iso = pc.strftime(pc.cast(table["timestamp"], pa.timestamp("ms", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
    table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", iso)
    if fmt == "csv":
        pacsv.write_csv(table, sink)
        return sink.getvalue().to_pybytes()
    import json

    lines = (json.dumps(row, separators=(",", ":")) for row in table.to_pylist())
    return ("\n".join(lines) + "\n").encode("utf-8")


def import_diginetica(
    source: str | Path,
    store: ArtifactStore,
    *,
    shift_to: Date | str | None = None,
    purchases: Purchases = "viewed_sessions",
    fmt: Format = "parquet",
) -> DigineticaImport:
    """Write DIGINETICA as canonical landing files into ``store`` (see the module docstring)."""
    raw = raw_dir(source)
    events = load_events(raw, purchases)
    if events.num_rows == 0:
        raise ValueError(f"no DIGINETICA events in {raw}")
    day = pc.cast(events["timestamp"], pa.date32())
    first = pc.min(day).as_py()
    shift = shift_days_for(first, shift_to)
    if shift:
        shifted = pc.add(pc.cast(events["timestamp"], pa.int64()), shift * 86_400_000_000)
        events = events.set_column(
            events.schema.get_field_index("timestamp"), "timestamp", pc.cast(shifted, TS)
        )
        day = pc.cast(events["timestamp"], pa.date32())
    result = DigineticaImport(
        shift_days=shift,
        first_day=(first + timedelta(days=shift)).isoformat(),
        last_day=pc.max(day).as_py().isoformat(),
        views=pc.sum(pc.equal(events["event_type"], "view")).as_py() or 0,
        purchases=pc.sum(pc.equal(events["event_type"], "purchase")).as_py() or 0,
        items=0,
        catalog_key=CATALOG_KEY,
    )
    for d in pc.unique(day).to_pylist():
        part = events.filter(pc.equal(day, pa.scalar(d, pa.date32())))
        key = f"{LAYOUT.landing_day(d.isoformat())}/{SOURCE_NAME}.{fmt}"
        store.write_bytes(key, _encode(part, fmt))
        result.event_keys[d.isoformat()] = key
    catalog = load_catalog(raw, pc.unique(events["item_id"]))
    sink = pa.BufferOutputStream()
    pq.write_table(catalog, sink)
    store.write_bytes(CATALOG_KEY, sink.getvalue().to_pybytes())
    result.items = catalog.num_rows
    return result
