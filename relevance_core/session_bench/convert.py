"""Session-benchmark files → the product's landing zone (canonical events + a catalog).

The public session benchmarks (DIGINETICA, YOOCHOOSE, RetailRocket, … as preprocessed by SR-GNN /
GCE-GNN) ship two files: training sessions, one per line, comma-separated item ids in click order, and a
TSV of test rows ``prefix<TAB>label``. They carry no users, timestamps or item content. To measure *the
product* on them (not a side script), the training sessions are turned into what a shop would send:

* one ``view`` event per click, ``session_id`` = the line number (anonymous: ``user_id`` null, so the
  pipeline only ever builds histories inside a session, exactly the benchmark's setting);
* timestamps that keep the click order: events ``event_spacing_s`` apart, never more than the 30-minute
  session gap, so the ``sessions`` asset cuts nothing;
* sessions spread over consecutive days from ``start_date`` (``sessions_per_day`` each, in file order,
  which is time order in these benchmarks), so they land in the daily partitions like a real backfill
  and the pipeline's time-based train/validation split can be a day boundary;
* a catalog with one listing per item id seen in training, built from the id alone (these datasets have
  no content, and every published baseline on them learns from ids only). The catalog contract requires
  a title; ``catalog_title`` is a template over ``{item_id}``: a constant (``"item"``) gives the item
  tower's content path nothing, while ``"{item_id}"`` makes the hashed title token a second, randomly
  initialised id embedding. The latter is what the configs use: with a constant title every item starts
  out as the same content vector plus a small id term, so early training can only learn popularity; a
  per-item token breaks that symmetry and the model learns co-visitation from the first steps.

The day layout is returned as a :class:`Layout`, so the runner knows which partitions to materialize and
where validation starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from relevance_core.schemas import EVENT_ARROW_SCHEMA, ITEM_ARROW_SCHEMA, TS
from relevance_core.settings import LAYOUT
from relevance_core.storage import ArtifactStore

SOURCE_NAME = "session-bench"
CATALOG_KEY = f"{LAYOUT.catalog_landing}/{SOURCE_NAME}-items.parquet"
#: Sessions of a day start within the first 20 hours, so with ``max_session_span_s`` they end that day.
DAY_WINDOW_S = 20 * 3600
#: Longest a session may span; ``event_spacing_s`` shrinks for datasets with very long sessions.
MAX_SESSION_SPAN_S = 3.5 * 3600
US = 1_000_000


def read_sessions(path: str | Path) -> list[list[str]]:
    """Training sessions: one per line, comma-separated item ids in click order (blank lines skipped).
    Whitespace around ids is ignored; sessions of one item are kept (they carry no pair but do carry
    popularity and kNN evidence)."""
    out: list[list[str]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            items = [x.strip() for x in line.strip().split(",") if x.strip()]
            if items:
                out.append(items)
    if not out:
        raise ValueError(f"no sessions in {path}")
    return out


def read_test(path: str | Path) -> tuple[list[list[str]], list[str]]:
    """Test rows from a TSV with header ``prefix<TAB>label``: (prefixes, labels), file order kept."""
    prefixes: list[list[str]] = []
    labels: list[str] = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n\r").split("\t")
        if [h.strip().lower() for h in header[:2]] != ["prefix", "label"]:
            raise ValueError(f"{path}: expected the header 'prefix<TAB>label', got {header!r}")
        for n, line in enumerate(f, start=2):
            line = line.rstrip("\n\r")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise ValueError(f"{path}:{n}: expected two tab-separated columns")
            prefixes.append([x.strip() for x in parts[0].split(",") if x.strip()])
            labels.append(parts[1].strip())
    return prefixes, labels


@dataclass
class Layout:
    """Where the converted sessions went: days, and where the validation sessions start."""

    days: list[str]
    validation_start: str | None
    #: first day after the data: the pipeline's test split starts there, so it is empty
    test_start: str
    event_spacing_s: float
    sessions: int = 0
    events: int = 0
    items: int = 0
    landing_keys: list[str] = field(default_factory=list)


def event_spacing(sessions: Sequence[Sequence[str]], wanted_s: float, gap_s: float = 1800.0) -> float:
    """``wanted_s`` unless the longest session would then span more than ``MAX_SESSION_SPAN_S``; always
    below the session gap so the sessionizer never splits a benchmark session."""
    longest = max((len(s) for s in sessions), default=1)
    spacing = min(float(wanted_s), MAX_SESSION_SPAN_S / max(longest - 1, 1), gap_s / 2)
    return max(spacing, 0.001)


def _day_table(sessions: Sequence[Sequence[str]], first_index: int, day: date, spacing_s: float) -> pa.Table:
    n = len(sessions)
    slot = DAY_WINDOW_S / max(n, 1)
    day_us = int((day - date(1970, 1, 1)).days) * 86_400 * US
    sids: list[str] = []
    items: list[str] = []
    ts: list[int] = []
    for j, sess in enumerate(sessions):
        start = day_us + int(j * slot * US)
        sid = f"s{first_index + j}"
        for pos, item in enumerate(sess):
            sids.append(sid)
            items.append(item)
            ts.append(start + int(round(pos * spacing_s * US)))
    m = len(items)
    return pa.table(
        {
            "user_id": pa.nulls(m, pa.string()),
            "session_id": pa.array(sids, pa.string()),
            "item_id": pa.array(items, pa.string()),
            "event_type": pa.array(["view"] * m, pa.string()),
            "timestamp": pa.array(ts, pa.int64()).cast(TS),
            "device_type": pa.nulls(m, pa.string()),
        },
        schema=EVENT_ARROW_SCHEMA,
    )


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def catalog_table(item_ids: Sequence[str], title: str = "item") -> pa.Table:
    """One canonical listing per id; ``title`` is a template over ``{item_id}`` (see module doc)."""
    ids = sorted(set(item_ids))
    n = len(ids)
    cols = {
        "item_id": pa.array(ids, pa.string()),
        "title": pa.array([title.format(item_id=i) for i in ids], pa.string()),
        "available": pa.array([True] * n, pa.bool_()),
    }
    return pa.table(
        {f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in ITEM_ARROW_SCHEMA}, schema=ITEM_ARROW_SCHEMA
    )


def write_landing(
    store: ArtifactStore,
    train_sessions: Sequence[Sequence[str]],
    *,
    validation_sessions: int = 0,
    start_date: str = "2026-01-01",
    sessions_per_day: int = 10_000,
    event_spacing_s: float = 60.0,
    catalog_title: str = "item",
) -> Layout:
    """Write ``train_sessions`` as landing events (the last ``validation_sessions`` of them starting on a
    fresh day, so the pipeline's validation split is exactly those sessions) and the catalog.

    Idempotent for the same input: the keys are per day and are overwritten."""
    if sessions_per_day < 1:
        raise ValueError("sessions_per_day must be >= 1")
    n = len(train_sessions)
    n_val = max(0, min(int(validation_sessions), n - 1))
    spacing = event_spacing(train_sessions, event_spacing_s)
    day0 = date.fromisoformat(start_date)
    blocks: list[tuple[int, int]] = []  # (first index, end index) per day
    for lo, hi in ((0, n - n_val), (n - n_val, n)):
        for s in range(lo, hi, sessions_per_day):
            blocks.append((s, min(s + sessions_per_day, hi)))
    layout = Layout(days=[], validation_start=None, test_start="", event_spacing_s=spacing)
    for d, (lo, hi) in enumerate(blocks):
        day = day0 + timedelta(days=d)
        table = _day_table(train_sessions[lo:hi], lo, day, spacing)
        key = f"{LAYOUT.landing_day(day.isoformat())}/{SOURCE_NAME}.parquet"
        store.write_bytes(key, _parquet_bytes(table))
        layout.days.append(day.isoformat())
        layout.landing_keys.append(key)
        layout.events += table.num_rows
        if n_val and lo == n - n_val:
            layout.validation_start = day.isoformat()
    layout.sessions = n
    layout.test_start = (day0 + timedelta(days=len(blocks))).isoformat()
    items = {i for s in train_sessions for i in s}
    store.write_bytes(CATALOG_KEY, _parquet_bytes(catalog_table(sorted(items), catalog_title)))
    layout.items = len(items)
    return layout


def history_ages(prefix_len: int, spacing_s: float) -> list[float]:
    """Seconds between each prefix click and the next (predicted) click: the same ``hist_age_s`` the
    ``training_pairs`` asset computes for the converted sessions, so serving sees what training saw."""
    return [float((prefix_len - j) * spacing_s) for j in range(prefix_len)]
