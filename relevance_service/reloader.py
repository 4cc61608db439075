"""Hot reload: poll ``artifacts/LATEST``, load the named bundle beside the current one, check it, swap.

The sequence for a new version (DESIGN.md §4):

1. ``bundle.fetch`` gives a local copy (the directory itself for a local store, a download for S3) and
   verifies every checksum against the manifest — a truncated or tampered file stops here;
2. :meth:`ServingBundle.load` reads it and runs a smoke query through the user tower, the index, the
   hydration table and the item tower — a file that passes its checksum but cannot be read, or towers
   that disagree with the index, stop here;
3. the live overlay (listings and availability received through the API) is re-applied to the new
   bundle, re-embedding live listings with its item tower;
4. the app's single :class:`ServingState` reference is replaced. Requests that already hold the old one
   finish on it; new requests see only the new one.

Steps 1–3 run in a worker thread so requests keep being served. Any failure is logged, counted
(``relevance_bundle_reload_failures_total``) and remembered, so a broken version is not retried on every
poll (a forced reload retries it); the old bundle keeps serving. Reloads are serialised by a lock.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from relevance_core import bundle as bundle_format
from relevance_core.storage import LocalStore
from relevance_service.live_items import LiveOverlay, ServingState
from relevance_service.serving_bundle import ServingBundle

if TYPE_CHECKING:
    from relevance_service.app import Service

log = logging.getLogger(__name__)


@dataclass
class ReloadOutcome:
    reloaded: bool
    version: str | None
    previous_version: str | None
    error: str | None = None


class BundleReloader:
    def __init__(self, service: Service):
        self.service = service
        self.failed: dict[str, str] = {}
        self.last_error: str | None = None
        self.last_check: float | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="bundle-reloader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        interval = self.service.settings.poll_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:  # the poller must outlive any single failure
                log.exception("bundle reloader: poll failed")

    # -- one check ----------------------------------------------------------------------------------------
    async def check(
        self, *, force: bool = False, version: str | None = None, retry_failed: bool = False
    ) -> ReloadOutcome:
        """Load ``version`` (default: what LATEST names) if it is not the one serving.

        ``force`` reloads even the current version; ``retry_failed`` (and ``force``) retry a version that
        was refused before (polling does not, so a broken bundle is not re-downloaded every interval).
        """
        svc = self.service
        async with self._lock:
            self.last_check = time.time()
            current = svc.serving.version if svc.serving else None
            if version is None:
                try:
                    version = await asyncio.to_thread(bundle_format.latest_version, svc.store)
                except Exception as e:
                    return self._failed(None, current, f"cannot read LATEST: {e}", count=False)
            if version is None:
                return ReloadOutcome(False, current, current, "no bundle published yet (no artifacts/LATEST)")
            if version == current and not force:
                return ReloadOutcome(False, current, current)
            if version in self.failed and not (force or retry_failed):
                return ReloadOutcome(False, current, current, self.failed[version])
            t0 = time.perf_counter()
            try:
                state = await asyncio.to_thread(self._load, version)
                # changes that arrived while loading; runs on the event loop, like the write handlers,
                # so nothing can slip in between this and the swap
                state.overlay.catch_up(svc.catalog)
            except Exception as e:
                return self._failed(version, current, f"{type(e).__name__}: {e}")
            old = svc.serving
            svc.swap(state)
            self.failed.pop(version, None)
            self.last_error = None
            svc.metrics.reloads.inc()
            log.info(
                "bundle %s now serving (was %s; loaded in %.2fs)", version, current, time.perf_counter() - t0
            )
            if old is not None and old.bundle.path != state.bundle.path:
                self._cleanup(old.bundle.path)
            return ReloadOutcome(True, version, current)

    def _load(self, version: str) -> ServingState:
        svc = self.service
        s = svc.settings
        path, manifest = bundle_format.fetch(svc.store, version)  # verifies every checksum
        b = ServingBundle.load(
            path,
            manifest,
            nprobe=s.nprobe,
            ef_search=s.ef_search,
            history_length=s.history_length,
            diversity_level=s.diversity_category_level,
            promotions=svc.promotions,
            verify=False,  # fetch just verified it
        )
        return ServingState(b, LiveOverlay.build(b, svc.catalog))

    def _failed(
        self, version: str | None, current: str | None, error: str, *, count: bool = True
    ) -> ReloadOutcome:
        if count:
            self.service.metrics.reload_failures.inc()
        if version is not None:
            self.failed[version] = error
        self.last_error = error
        log.error("bundle %s refused, still serving %s: %s", version, current, error)
        return ReloadOutcome(False, current, current, error)

    def _cleanup(self, path: Path) -> None:
        """Remove a replaced bundle's downloaded copy (S3). Local stores serve the published directory
        itself, which belongs to the store's retention (``bundle.prune``), not to us."""
        store = self.service.store
        if isinstance(store, LocalStore):
            return
        cache = getattr(store, "cache_dir", None)
        if cache is not None and Path(cache) in Path(path).parents:
            shutil.rmtree(path, ignore_errors=True)  # open memory maps stay valid after unlink
