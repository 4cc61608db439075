"""What a landing day looked like when it was ingested, so the landing sensor can tell a day the lake
already reflects from a new or changed one.

Both ways a day is ingested (the ``raw_events`` asset and ``relevance ingest``) run ``ingest_events_day``,
which records the day's *landing fingerprint* next to the lake, in ``lake/_ingested/raw_events/date=D.json``,
after the partition is published. The fingerprint is a hash of the listing alone (key, size and a version
token per data file: ``mtime_ns`` locally, the ETag on S3), so the sensor computes the current one for every
day from one listing per tick, without reading a byte of data.

Why the lake and not the Dagster instance: a by-hand ingest records no materialization, and a lake moved
to another instance keeps its record. Why a separate key and not a file inside the partition: the
partition directory holds only Parquet (readers, the erasure's rewrite and Spark's conventions assume
that), and ``_``-prefixed tables are skipped by everything that walks the lake.

The fingerprint is taken *before* the files are read, so a file rewritten during an ingest leaves a
record that no longer matches and the day is ingested once more: a change is never lost, at worst
ingested twice. Rewriting a file with identical bytes changes its fingerprint too (the listing cannot
tell), which costs one unnecessary, idempotent re-ingest.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime

from relevance_core.ingest.landing import _hidden, file_format
from relevance_core.settings import LAYOUT, LakeLayout
from relevance_core.storage import ArtifactStore, StoreEntry, StoreError

DATASET = "raw_events"
_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def _is_data_file(rel: str) -> bool:
    """Exactly the files ``landing.landing_files`` hands to the ingestion."""
    return not _hidden(rel) and file_format(rel) is not None


def landing_entries(store: ArtifactStore, date: str, layout: LakeLayout = LAYOUT) -> list[StoreEntry]:
    """The data files of one landing day (sorted by key); empty when the day does not exist."""
    prefix = layout.landing_day(date)
    return [e for e in store.list_entries(prefix) if _is_data_file(e.key[len(prefix) + 1 :])]


def landing_entries_by_day(store: ArtifactStore, layout: LakeLayout = LAYOUT) -> dict[str, list[StoreEntry]]:
    """The data files of every landing day, from one listing of the events landing zone. Days without a
    data file (only markers, or nothing readable) are left out: there is nothing to ingest."""
    root = layout.events_landing
    out: dict[str, list[StoreEntry]] = {}
    for entry in store.list_entries(root):
        day_dir, _, rel = entry.key[len(root) + 1 :].partition("/")
        m = _DAY_DIR.match(day_dir)
        if m and rel and _is_data_file(rel):
            out.setdefault(m.group(1), []).append(entry)
    return {day: sorted(entries) for day, entries in sorted(out.items())}


def fingerprint(entries: list[StoreEntry]) -> str:
    """Order-independent hash of a day's files; equal exactly when no data file was added, removed or
    rewritten."""
    payload = json.dumps(sorted([e.key, e.size, e.version] for e in entries), separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def ingested_key(date: str, layout: LakeLayout = LAYOUT) -> str:
    return f"{layout.lake}/_ingested/{DATASET}/date={date}.json"


def record_ingested(
    store: ArtifactStore, date: str, entries: list[StoreEntry], layout: LakeLayout = LAYOUT
) -> str:
    """Write the day's record (after its partition is published: a record never outlives a failed run's
    partition, and a crash before the write only costs a re-ingest). Returns the fingerprint."""
    fp = fingerprint(entries)
    record = {
        "dataset": DATASET,
        "partition": date,
        "landing_fingerprint": fp,
        "files": [e._asdict() for e in entries],
        "ingested_at": datetime.now(UTC).isoformat(),
    }
    store.write_text(ingested_key(date, layout), json.dumps(record, indent=2))
    return fp


def ingested_fingerprint(store: ArtifactStore, date: str, layout: LakeLayout = LAYOUT) -> str | None:
    """The landing fingerprint the day's current partition was built from; None when it was never
    ingested with a record (or the record is unreadable: then the day is simply ingested again)."""
    try:
        return json.loads(store.read_text(ingested_key(date, layout))).get("landing_fingerprint")
    except (StoreError, ValueError, AttributeError):
        return None
