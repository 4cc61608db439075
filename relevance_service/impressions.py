"""Everything the service writes back to the landing zone: impressions, live events, live listings.

Every served slate becomes ``impression`` events (one row per shown item: request id, pseudonymised
user, bundle version, position, score), so the pipeline learns from what was shown and not acted on and
evaluation gets real negatives (``impression`` has weight 0). Real-time events posted to
``/v1/events`` and listings from ``PUT /v1/items`` are written the same way, so the next bundle is
trained on them.

Requests never wait on storage: they encode their rows to JSONL at once (msgspec, ≈ 10 µs a slate)
and append the bytes to an in-memory buffer (no I/O); a background task swaps the buffer every
``flush_s`` seconds and, in a worker thread, joins the bytes and writes one file per kind and day with the
store's atomic ``write_bytes``. Encoding happens on the request, spread evenly, not at the flush: a flush
that turned 2 s of slates (≈ 20k rows) into JSON in its thread held the GIL for tens of milliseconds, and
the request thread waited for it at each of its GIL-releasing calls (torch, FAISS) — every 2 s a burst of
requests took 30–50 ms (at 500 req/s: p99 54 ms with impressions, 7 ms without; docs/benchmark-history.md).
A full buffer drops new records and counts them (``relevance_landing_dropped_total``) rather than grow
without bound or slow requests down. A write that fails (store unreachable) keeps its records and retries
them, under the same object key, at every following flush until the store answers again: an outage
shorter than the buffer loses nothing, and a retried PUT that had in fact landed is overwritten, not
duplicated. Rows carry the canonical event columns (``EVENT_COLUMNS``) plus the extra impression fields;
readers that project the canonical columns ignore the extras. Each buffered record keeps its (pseudonymised)
user id beside its bytes, so an erasure request can still drop it before it is written.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import msgspec

from relevance_core.settings import LAYOUT
from relevance_core.storage import ArtifactStore
from relevance_service.metrics import ServiceMetrics
from relevance_service.settings import ServiceSettings

log = logging.getLogger(__name__)


#: (whole second, its formatted text): every slate of one second shares it (``strftime`` per slate was
#: ~1.5% of a worker's CPU under load)
_last_second: tuple[int, str] = (-1, "")


def iso_utc(ts: float) -> str:
    """Epoch seconds → ``2026-03-01T12:34:56.123Z`` (the landing zone's text timestamp format)."""
    global _last_second
    sec = math.floor(ts)
    us = round((ts - sec) * 1e6)  # microseconds rounded as datetime does, then cut to milliseconds
    if us >= 1_000_000:
        sec, us = sec + 1, 0
    cached = _last_second
    if cached[0] != sec:
        cached = _last_second = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{us // 1000:03d}Z"


class Impression(msgspec.Struct):
    """One shown item (one JSONL row; the field order is the file's column order)."""

    user_id: str | None
    session_id: None
    item_id: str
    event_type: str
    timestamp: str
    device_type: None
    request_id: str
    bundle_version: str
    strategy: str
    position: int
    score: float


#: a buffered record: (pseudonymised user or None, its JSONL lines, how many rows they are)
Record = tuple[str | None, bytes, int]
#: a file to write: (object key, kind, records)
Batch = tuple[str, str, list[Record]]


def rows_in(records: list[Record]) -> int:
    return sum(n for _, _, n in records)


def rows_in_batches(batches: list[Batch]) -> int:
    return sum(rows_in(records) for _, _, records in batches)


class LandingWriter:
    def __init__(
        self,
        store: ArtifactStore,
        metrics: ServiceMetrics | None = None,
        settings: ServiceSettings | None = None,
    ):
        s = settings or ServiceSettings()
        self.store = store
        self.metrics = metrics
        self.flush_s = s.landing_flush_s
        self.max_pending = s.landing_max_pending
        self.impressions_enabled = s.impressions_enabled
        self.persist_items = s.persist_live_items
        self._files: dict[str, list[Record]] = defaultdict(list)  # file prefix → records to write
        self._retry: list[Batch] = []  # files whose write failed, to write again under the same key
        self._pending = 0
        self._flushing = False
        self._forgotten_in_flight: set[str] = set()  # erased while their rows were being written
        # records taken by the flush now writing (all, and those from earlier failed writes): they still
        # count as pending / retrying until written, so "nothing pending" means written, not in flight
        self._in_flight = (0, 0)
        self.write_failures = 0
        self.last_error: str | None = None
        self._encoder = msgspec.json.Encoder()
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self.files_written = 0

    # -- request side: O(1), never blocks -------------------------------------------------------------
    def _admit(self, kind: str, n: int) -> bool:
        if self._pending + n > self.max_pending:
            if self.metrics:
                self.metrics.landing_dropped.labels(kind=kind).inc(n)
            return False
        self._pending += n
        return True

    def log_slate(
        self,
        request_id: str,
        user: str | None,
        version: str,
        strategy: str,
        item_ids: list[str],
        scores: list[float],
        ts: float | None = None,
    ) -> None:
        if not self.impressions_enabled or not item_ids:
            return
        if not self._admit("impression", len(item_ids)):
            return
        stamp = iso_utc(ts or time.time())
        rows = [
            Impression(
                user,
                None,
                iid,
                "impression",
                stamp,
                None,
                request_id,
                version,
                strategy,
                pos,
                round(float(score), 6),
            )
            for pos, (iid, score) in enumerate(zip(item_ids, scores, strict=True))
        ]
        # stamp[:10] is the UTC day of ts (one strftime per slate, not two)
        self._files[f"{LAYOUT.landing_day(stamp[:10])}/impressions"].append(
            (user, self._encoder.encode_lines(rows), len(rows))
        )

    def log_events(self, rows: list[dict[str, Any]]) -> None:
        """Canonical event rows (``timestamp`` as epoch seconds, written as ISO text)."""
        if not rows or not self._admit("event", len(rows)):
            return
        for row in rows:
            stamp = iso_utc(row["timestamp"])
            line = self._encoder.encode({**row, "timestamp": stamp}) + b"\n"
            self._files[f"{LAYOUT.landing_day(stamp[:10])}/live-events"].append((row.get("user_id"), line, 1))

    def log_item(self, item: dict[str, Any]) -> None:
        if self.persist_items and self._admit("item", 1):
            line = self._encoder.encode(item) + b"\n"
            self._files[f"{LAYOUT.catalog_landing}/live-items"].append((None, line, 1))

    def forget(self, users: set[str]) -> set[str]:
        """Drop the buffered (not yet written) slates and events of ``users`` (erasure requests; the
        writer holds pseudonymised ids, so pass those). Returns the users that had rows pending."""
        if not users:
            return set()
        if self._flushing:  # rows of these users may be in the write under way; never re-queue them
            self._forgotten_in_flight |= users
        hit: set[str] = set()

        def keep(records: list[Record]) -> list[Record]:
            kept = []
            for rec in records:
                if rec[0] in users:
                    hit.add(rec[0])
                    self._pending -= rec[2]
                else:
                    kept.append(rec)
            return kept

        for prefix in list(self._files):
            self._files[prefix] = keep(self._files[prefix])
        self._retry = [(key, kind, left) for key, kind, recs in self._retry if (left := keep(recs))]
        self._pending = max(self._pending, 0)
        return hit

    @property
    def pending(self) -> int:
        return self._pending + self._in_flight[0]

    @property
    def retrying(self) -> int:
        """Records whose write failed and that wait for the next flush."""
        return rows_in_batches(self._retry) + self._in_flight[1]

    def buffered_users(self) -> set[str]:
        """Users with records not yet written (buffered or waiting for a retry)."""
        recs = [r for records in self._files.values() for r in records]
        recs += [r for _, _, records in self._retry for r in records]
        return {r[0] for r in recs if r[0] is not None}

    # -- background side ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="landing-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
        if self._retry:  # the store is still unreachable at shutdown: these are lost, and counted
            for key, kind, recs in self._retry:
                n = rows_in(recs)
                log.error("landing writer: shutting down with %d unwritten %s records (%s)", n, kind, key)
                if self.metrics:
                    self.metrics.landing_dropped.labels(kind=kind).inc(n)
            self._retry = []
            self._pending = 0

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception:  # a broken store must not kill the loop; records were counted as dropped
                log.exception("landing writer: flush failed")

    async def flush(self) -> int:
        """Write everything buffered so far; returns the number of records written."""
        async with self._lock:
            files, retry = self._files, self._retry
            self._files, self._retry = defaultdict(list), []
            taken, self._pending = self._pending, 0
            if not (files or retry):
                return 0
            self._flushing = True
            self._in_flight = (taken, rows_in_batches(retry))
            try:
                written, failed = await asyncio.to_thread(self._write, files, retry)
            finally:
                self._flushing = False
                self._in_flight = (0, 0)
                gone, self._forgotten_in_flight = self._forgotten_in_flight, set()
            if gone:
                failed = [(k, kind, [r for r in recs if r[0] not in gone]) for k, kind, recs in failed]
                failed = [f for f in failed if f[2]]
            if failed:  # back on the event loop: requests may have added rows meanwhile
                self._retry = failed + self._retry
                self._pending += rows_in_batches(failed)
            return written

    def _write(self, files: dict[str, list[Record]], retry: list[Batch]) -> tuple[int, list[Batch]]:
        """Join each file's encoded records and write it (a worker thread: only I/O and ``bytes.join``,
        which leave the GIL to the requests)."""
        written = 0
        failed: list[Batch] = []
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        batches = list(retry)
        for prefix, recs in files.items():
            key = f"{prefix}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
            batches.append((key, prefix.rsplit("/", 1)[-1], recs))
        for key, kind, recs in batches:
            n = rows_in(recs)
            try:
                self.store.write_bytes(key, b"".join(r[1] for r in recs))
            except Exception as e:
                failed.append((key, kind, recs))
                self.write_failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                if self.metrics:
                    self.metrics.landing_write_failures.labels(kind=kind).inc()
                continue
            written += n
            self.files_written += 1
            if self.metrics:
                self.metrics.landing_records.labels(kind=kind).inc(n)
        if failed:
            log.warning(
                "landing writer: %d file(s) (%d records) not written, kept for a retry: %s",
                len(failed),
                rows_in_batches(failed),
                self.last_error,
            )
        elif retry:
            log.info("landing writer: %d delayed file(s) written", len(retry))
            self.last_error = None
        return written, failed
