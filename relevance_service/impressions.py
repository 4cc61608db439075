"""Everything the service writes back to the landing zone: impressions, live events, live listings.

Every served slate becomes ``impression`` events (one row per shown item: request id, pseudonymised
user, bundle version, position, score), so the pipeline learns from what was shown and not acted on and
evaluation gets real negatives (DESIGN.md §2: ``impression`` has weight 0). Real-time events posted to
``/v1/events`` and listings from ``PUT /v1/items`` are written the same way, so the next bundle is
trained on them.

Requests never wait on storage: they append a small tuple to an in-memory buffer (O(1), no I/O, no
JSON); a background task swaps the buffer every ``flush_s`` seconds, turns it into JSONL in a worker
thread, and writes one file per kind and day with the store's atomic ``write_bytes``. A full buffer
drops new records and counts them (``relevance_landing_dropped_total``) rather than grow without bound
or slow requests down. A write that fails (store unreachable) keeps its records and retries them, under
the same object key, at every following flush until the store answers again: an outage shorter than the
buffer loses nothing, and a retried PUT that had in fact landed is overwritten, not duplicated. Rows carry the canonical event columns (``EVENT_COLUMNS``) plus the extra
impression fields; readers that project the canonical columns ignore the extras.
"""

from __future__ import annotations

import asyncio
import logging
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

log = logging.getLogger(__name__)


def iso_utc(ts: float) -> str:
    """Epoch seconds → ``2026-03-01T12:34:56.123Z`` (the landing zone's text timestamp format)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


class LandingWriter:
    def __init__(
        self,
        store: ArtifactStore,
        metrics: ServiceMetrics | None = None,
        *,
        flush_s: float = 2.0,
        max_pending: int = 200_000,
        impressions: bool = True,
        persist_items: bool = True,
    ):
        self.store = store
        self.metrics = metrics
        self.flush_s = flush_s
        self.max_pending = max_pending
        self.impressions_enabled = impressions
        self.persist_items = persist_items
        self._slates: list[tuple] = []
        self._events: list[dict[str, Any]] = []
        self._items: list[dict[str, Any]] = []
        self._retry: list[tuple[str, str, list[dict[str, Any]]]] = []  # (key, kind, rows) that failed
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
        if self._admit("impression", len(item_ids)):
            self._slates.append((request_id, user, version, strategy, item_ids, scores, ts or time.time()))

    def log_events(self, rows: list[dict[str, Any]]) -> None:
        """Canonical event rows (``timestamp`` as epoch seconds; converted at flush)."""
        if rows and self._admit("event", len(rows)):
            self._events.extend(rows)

    def log_item(self, item: dict[str, Any]) -> None:
        if self.persist_items and self._admit("item", 1):
            self._items.append(item)

    def forget(self, users: set[str]) -> set[str]:
        """Drop the buffered (not yet written) slates and events of ``users`` (erasure requests; the
        writer holds pseudonymised ids, so pass those). Returns the users that had rows pending."""
        if not users:
            return set()
        if self._flushing:  # rows of these users may be in the write under way; never re-queue them
            self._forgotten_in_flight |= users
        hit: set[str] = set()
        kept_slates = []
        for s in self._slates:
            if s[1] in users:
                hit.add(s[1])
                self._pending -= len(s[4])
            else:
                kept_slates.append(s)
        kept_events = []
        for row in self._events:
            if row.get("user_id") in users:
                hit.add(row["user_id"])
                self._pending -= 1
            else:
                kept_events.append(row)
        kept_retry = []
        for key, kind, rows in self._retry:
            left = []
            for row in rows:
                if row.get("user_id") in users:
                    hit.add(row["user_id"])
                    self._pending -= 1
                else:
                    left.append(row)
            if left:
                kept_retry.append((key, kind, left))
        self._slates, self._events, self._retry = kept_slates, kept_events, kept_retry
        self._pending = max(self._pending, 0)
        return hit

    @property
    def pending(self) -> int:
        return self._pending + self._in_flight[0]

    @property
    def retrying(self) -> int:
        """Records whose write failed and that wait for the next flush."""
        return sum(len(rows) for _, _, rows in self._retry) + self._in_flight[1]

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
            for key, kind, rows in self._retry:
                log.error(
                    "landing writer: shutting down with %d unwritten %s records (%s)", len(rows), kind, key
                )
                if self.metrics:
                    self.metrics.landing_dropped.labels(kind=kind).inc(len(rows))
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
            slates, events, items = self._slates, self._events, self._items
            retry = self._retry
            self._slates, self._events, self._items, self._retry = [], [], [], []
            taken, self._pending = self._pending, 0
            if not (slates or events or items or retry):
                return 0
            self._flushing = True
            self._in_flight = (taken, sum(len(rows) for _, _, rows in retry))
            try:
                written, failed = await asyncio.to_thread(self._write, slates, events, items, retry)
            finally:
                self._flushing = False
                self._in_flight = (0, 0)
                gone, self._forgotten_in_flight = self._forgotten_in_flight, set()
            if gone:
                failed = [
                    (k, kind, [r for r in rows if r.get("user_id") not in gone]) for k, kind, rows in failed
                ]
                failed = [f for f in failed if f[2]]
            if failed:  # back on the event loop: requests may have added rows meanwhile
                self._retry = failed + self._retry
                self._pending += sum(len(rows) for _, _, rows in failed)
            return written

    def _write(
        self, slates: list[tuple], events: list[dict], items: list[dict], retry: list[tuple]
    ) -> tuple[int, list[tuple[str, str, list[dict[str, Any]]]]]:
        files: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for request_id, user, version, strategy, item_ids, scores, ts in slates:
            stamp = iso_utc(ts)
            key = f"{LAYOUT.landing_day(day_of(ts))}/impressions"
            for pos, (iid, score) in enumerate(zip(item_ids, scores, strict=True)):
                files[key].append(
                    {
                        "user_id": user,
                        "session_id": None,
                        "item_id": iid,
                        "event_type": "impression",
                        "timestamp": stamp,
                        "device_type": None,
                        "request_id": request_id,
                        "bundle_version": version,
                        "strategy": strategy,
                        "position": pos,
                        "score": round(float(score), 6),
                    }
                )
        for row in events:
            ts = row["timestamp"]
            files[f"{LAYOUT.landing_day(day_of(ts))}/live-events"].append({**row, "timestamp": iso_utc(ts)})
        for item in items:
            files[f"{LAYOUT.catalog_landing}/live-items"].append(item)
        written = 0
        failed: list[tuple[str, str, list[dict[str, Any]]]] = []
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        batches = list(retry)
        for prefix, rows in files.items():
            key = f"{prefix}-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
            batches.append((key, prefix.rsplit("/", 1)[-1], rows))
        for key, kind, rows in batches:
            try:
                self.store.write_bytes(key, b"\n".join(self._encoder.encode(r) for r in rows) + b"\n")
            except Exception as e:
                failed.append((key, kind, rows))
                self.write_failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                if self.metrics:
                    self.metrics.landing_write_failures.labels(kind=kind).inc()
                continue
            written += len(rows)
            self.files_written += 1
            if self.metrics:
                self.metrics.landing_records.labels(kind=kind).inc(len(rows))
        if failed:
            log.warning(
                "landing writer: %d file(s) (%d records) not written, kept for a retry: %s",
                len(failed),
                sum(len(r) for _, _, r in failed),
                self.last_error,
            )
        elif retry:
            log.info("landing writer: %d delayed file(s) written", len(retry))
            self.last_error = None
        return written, failed
