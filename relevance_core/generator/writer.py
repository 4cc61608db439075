"""Writing a generated marketplace into an artifact store: the landing zone the ingestion assets read,
and the ground truth beside it (never inside ``landing/``, so no pipeline can learn from it by accident).

Text formats are produced with Arrow string kernels over whole columns (the landing zone's text form has
no characters that need escaping), so writing CSV or JSONL costs about as much as Parquet.
"""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from relevance_core.generator import noise
from relevance_core.generator import vocabulary as V
from relevance_core.generator.config import MarketplaceConfig
from relevance_core.generator.strings import iso_timestamps_ms, join, quoted_or_null
from relevance_core.generator.tables import MarketplaceTruth, generate_tables, window_start_ms
from relevance_core.schemas import EVENT_COLUMNS, ITEM_COLUMNS
from relevance_core.settings import LAYOUT
from relevance_core.storage import ArtifactStore

TRUTH_PREFIX = "generator_truth"
EXTENSIONS: dict[str, str] = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}
CATALOG_NAME = "items"
EVENTS_NAME = "events"


class DayReport(msgspec.Struct, frozen=True, kw_only=True):
    date: str
    format: str
    key: str
    #: valid event rows (duplicates and bot events included)
    events: int
    duplicates: int
    bot_events: int
    #: broken lines by kind (text formats only)
    malformed: dict[str, int]
    #: data rows a reader sees: events + malformed (header excluded)
    rows_written: int
    bytes: int


class MarketplaceReport(msgspec.Struct, frozen=True, kw_only=True):
    """What was written and how much of it is noise, so ingestion tests can check their accounting."""

    config: MarketplaceConfig
    base_uri: str
    catalog_key: str
    truth_keys: list[str]
    items: int
    items_initial: int
    items_new_in_window: int
    items_sold: int
    users: int
    bots: int
    sessions: int
    events: int
    duplicates_injected: int
    bot_events: int
    anonymous_events: int
    null_session_events: int
    malformed_injected: int
    malformed_by_kind: dict[str, int]
    days: list[DayReport]
    seconds: float

    def to_dict(self) -> dict:
        return msgspec.to_builtins(self)


# -- serialisation ---------------------------------------------------------------------------------------
def _lines_bytes(lines: pa.Array) -> tuple[bytes, np.ndarray]:
    """``lines`` joined with newlines, and the byte offset where each line starts (plus the end)."""
    lines = join(lines, "\n").cast(pa.large_string())
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if len(lines) == 0:
        return b"", np.zeros(1, dtype=np.int64)
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    body = lines.buffers()[2].to_pybytes()[int(offsets[0]) : int(offsets[-1])]
    return body, offsets - offsets[0]


def _text_columns(events: pa.Table) -> dict[str, pa.Array]:
    """The event columns as strings, timestamps in the landing zone's ISO form."""
    cols = {name: events.column(name).combine_chunks() for name in EVENT_COLUMNS if name != "timestamp"}
    ts_ms = events.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy() // 1000
    cols["timestamp"] = iso_timestamps_ms(ts_ms)
    return cols


def events_csv(events: pa.Table) -> tuple[bytes, bytes, np.ndarray]:
    """(header, body, line starts). Nulls are empty fields; ids and vocabulary contain no commas or
    quotes, so no field needs quoting."""
    cols = _text_columns(events)
    lines = pc.binary_join_element_wise(
        *(cols[c] for c in EVENT_COLUMNS), ",", null_handling="replace", null_replacement=""
    )
    body, starts = _lines_bytes(lines)
    return (",".join(EVENT_COLUMNS) + "\n").encode(), body, starts


def events_jsonl(events: pa.Table) -> tuple[bytes, bytes, np.ndarray]:
    cols = _text_columns(events)
    parts: list = []
    for i, name in enumerate(EVENT_COLUMNS):
        parts.append(("{" if i == 0 else ",") + f'"{name}":')
        parts.append(quoted_or_null(cols[name]))
    parts.append("}")
    body, starts = _lines_bytes(join(*parts))
    return b"", body, starts


#: Session ids are nearly unique within a day: a dictionary for them costs a third of the write time and
#: saves almost nothing. Every other event column repeats a lot.
EVENT_DICTIONARY_COLUMNS = [c for c in EVENT_COLUMNS if c not in ("session_id", "timestamp")]


def parquet_bytes(table: pa.Table, use_dictionary: bool | list[str] = True) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy", use_dictionary=use_dictionary)
    return sink.getvalue().to_pybytes()


def catalog_bytes(items: pa.Table, fmt: str) -> bytes:
    """The catalog in one of the landing formats; text forms keep the canonical column order."""
    if fmt == "parquet":
        return parquet_bytes(items)
    ts = iso_timestamps_ms(items.column("created_at").combine_chunks().cast(pa.int64()).to_numpy() // 1000)
    text = items.set_column(items.schema.get_field_index("created_at"), "created_at", ts)
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(text, buf, pacsv.WriteOptions(quoting_style="needed"))
        return buf.getvalue()
    if fmt == "jsonl":
        _check_json_safe()
        parts: list = []
        for i, name in enumerate(ITEM_COLUMNS):
            parts.append(("{" if i == 0 else ",") + f'"{name}":')
            col = text.column(name).combine_chunks()
            if name == "price":
                parts.append(pc.fill_null(col.cast(pa.string()), "null"))
            elif name == "available":
                parts.append(pc.if_else(col, "true", "false"))
            else:
                parts.append(quoted_or_null(col))
        parts.append("}")
        return _lines_bytes(join(*parts))[0]
    raise ValueError(f"unknown catalog format {fmt!r}")


def _check_json_safe() -> None:
    """Text columns are concatenated into JSON without escaping: the vocabulary must not need any."""
    words = [
        w for c in V.CATEGORIES for w in (c.l1, c.l2, *c.brands, *c.features, *(x for p in c.l3 for x in p))
    ]
    words += [*V.ADJECTIVES, *V.COLORS, *V.CITIES, *(c[1] for c in V.CONDITIONS)]
    bad = [w for w in words if '"' in w or "\\" in w or any(ord(ch) < 32 for ch in w)]
    if bad:
        raise ValueError(f"vocabulary words need JSON escaping: {bad}")


# -- writing ---------------------------------------------------------------------------------------------
def _day_bounds(events: pa.Table, cfg: MarketplaceConfig) -> np.ndarray:
    ts_us = events.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy()
    t0_us = window_start_ms(cfg) * 1000
    edges = t0_us + np.arange(cfg.n_days + 1, dtype=np.int64) * 86_400_000_000
    return np.searchsorted(ts_us, edges, side="left")


def _malformed_lines(
    day_text: pa.Table, fmt: str, n_bad: int, rng: np.random.Generator
) -> tuple[list[bytes], dict[str, int]]:
    kinds = noise.CSV_KINDS if fmt == "csv" else noise.JSONL_KINDS
    counts = dict.fromkeys(kinds, 0)
    if n_bad == 0 or day_text.num_rows == 0:
        return [], counts
    picks = rng.integers(0, day_text.num_rows, size=n_bad)
    # Every kind shows up as soon as there are enough bad lines; the rest are drawn at random.
    kind_idx = np.concatenate(
        [np.arange(min(n_bad, len(kinds))), rng.integers(0, len(kinds), size=max(n_bad - len(kinds), 0))]
    )
    rows = day_text.take(pa.array(picks)).to_pylist()
    build = noise.csv_line if fmt == "csv" else noise.jsonl_line
    lines = []
    for row, k in zip(rows, kind_idx, strict=True):
        kind = kinds[int(k)]
        counts[kind] += 1
        lines.append(build(row, kind, rng))
    return lines, counts


def write_events_day(
    store: ArtifactStore, day: str, table: pa.Table, fmt: str, malformed_rate: float, rng: np.random.Generator
) -> tuple[str, int, dict[str, int], int]:
    """Write one landing day as one file; returns (key, bytes, malformed counts, malformed lines)."""
    prefix = LAYOUT.landing_day(day)
    key = f"{prefix}/{EVENTS_NAME}.{EXTENSIONS[fmt]}"
    counts: dict[str, int] = {}
    if fmt == "parquet":
        data = parquet_bytes(table, EVENT_DICTIONARY_COLUMNS)
    else:
        header, body, starts = (events_csv if fmt == "csv" else events_jsonl)(table)
        n_bad = int(round(malformed_rate * table.num_rows))
        text_cols = _text_columns(table) if n_bad else {}
        day_text = pa.table({c: text_cols[c] for c in EVENT_COLUMNS}) if n_bad else table
        bad, counts = _malformed_lines(day_text, fmt, n_bad, rng)
        data = header + noise.inject(body, starts, bad, rng)
    store.write_bytes(key, data)
    for other in EXTENSIONS.values():  # a re-run in another format must not leave the old file beside it
        if other != EXTENSIONS[fmt]:
            store.delete(f"{prefix}/{EVENTS_NAME}.{other}")
    return key, len(data), counts, sum(counts.values())


def write_marketplace(
    config: MarketplaceConfig,
    store: ArtifactStore,
    *,
    clean: bool = False,
    tables: tuple[pa.Table, pa.Table, MarketplaceTruth] | None = None,
) -> MarketplaceReport:
    """Generate (or take already generated ``tables``) and write the landing zone and ground truth.

    ``clean`` first removes everything under ``landing/events``, ``landing/catalog`` and the truth prefix,
    so days from an earlier, longer run cannot linger; without it only the files this run owns are replaced.
    """
    started = time.perf_counter()
    items, events, truth = tables if tables is not None else generate_tables(config)
    if clean:
        for prefix in (LAYOUT.events_landing, LAYOUT.catalog_landing, TRUTH_PREFIX):
            store.delete_prefix(prefix)

    catalog_key = f"{LAYOUT.catalog_landing}/{CATALOG_NAME}.{EXTENSIONS[config.catalog_format]}"
    store.write_bytes(catalog_key, catalog_bytes(items, config.catalog_format))
    for ext in EXTENSIONS.values():
        if ext != EXTENSIONS[config.catalog_format]:
            store.delete(f"{LAYOUT.catalog_landing}/{CATALOG_NAME}.{ext}")

    bounds = _day_bounds(events, config)
    dup_per_day = np.diff(np.searchsorted(truth.duplicate_positions, bounds))
    is_bot = pc.is_in(events.column("user_id"), truth.users.filter(truth.users["is_bot"])["user_id"])
    bot_pos = np.flatnonzero(is_bot.to_numpy(zero_copy_only=False))
    bot_per_day = np.diff(np.searchsorted(bot_pos, bounds))
    first_day = config.start_day
    days: list[DayReport] = []
    by_kind: dict[str, int] = {}
    for d in range(config.n_days):
        day = (first_day + timedelta(days=d)).isoformat()
        fmt = config.day_format(d)
        lo, hi = int(bounds[d]), int(bounds[d + 1])
        rng = np.random.Generator(np.random.PCG64([config.seed, 0x6E6F697365, d]))
        key, size, counts, n_bad = write_events_day(
            store, day, events.slice(lo, hi - lo), fmt, config.malformed_rate, rng
        )
        for k, v in counts.items():
            by_kind[k] = by_kind.get(k, 0) + v
        days.append(
            DayReport(
                date=day,
                format=fmt,
                key=key,
                events=hi - lo,
                duplicates=int(dup_per_day[d]),
                bot_events=int(bot_per_day[d]),
                malformed=counts,
                rows_written=hi - lo + n_bad,
                bytes=size,
            )
        )

    stats = truth.stats
    report = MarketplaceReport(
        config=config,
        base_uri=store.base_uri,
        catalog_key=catalog_key,
        truth_keys=[f"{TRUTH_PREFIX}/users.parquet", f"{TRUTH_PREFIX}/report.json"],
        items=stats["items"],
        items_initial=stats["items_initial"],
        items_new_in_window=stats["items_new_in_window"],
        items_sold=stats["items_sold"],
        users=stats["users"],
        bots=stats["bots"],
        sessions=stats["sessions"],
        events=stats["events"],
        duplicates_injected=stats["duplicates_injected"],
        bot_events=stats["bot_events"],
        anonymous_events=stats["anonymous_events"],
        null_session_events=stats["null_session_events"],
        malformed_injected=sum(by_kind.values()),
        malformed_by_kind=by_kind,
        days=days,
        seconds=round(time.perf_counter() - started, 3),
    )
    store.write_bytes(f"{TRUTH_PREFIX}/users.parquet", parquet_bytes(truth.users))
    summary = report.to_dict() | {
        "complements": truth.complements,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.write_text(f"{TRUTH_PREFIX}/report.json", json.dumps(summary, indent=2, sort_keys=True))
    return report
