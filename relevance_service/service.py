"""The per-app :class:`Service` container and its lifespan.

Everything one app instance owns lives on one :class:`Service` (``app.state.service``): settings, the
artifact store, the current :class:`~relevance_service.live_items.ServingState`, user state, the live
catalog, the landing writer, the reloader and the metrics registry. Nothing is a module-level global, so
tests can run several apps side by side and a benchmark can build one in-process.

The lifespan (Litestar runs it; ``TestClient`` as a context manager runs it too):

1. pins torch/FAISS intra-op threads (default 1: parallelism comes from concurrent requests; a
   single-query search with 2 threads was measured slower on this machine), restored on shutdown;
2. loads the bundle ``LATEST`` names before accepting traffic; when that fails (store unreachable, bundle
   refused) it serves the last good bundle from local disk (:mod:`relevance_service.bundle_cache`), and
   without one ``/readyz`` stays 503 until a bundle loads (the process does not stop; the poller keeps
   trying);
3. seeds user state from the lake in a background thread (once per lake window among the workers and
   replicas that share a Redis store: one claims it, the others wait for it, not ready);
4. starts the reloader's polling task and the landing writer; on shutdown flushes pending impressions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

import faiss
import torch
from litestar import Litestar

from relevance_core.pseudonyms import Pseudonymizer
from relevance_core.ranking.rules import Promotions
from relevance_core.storage import ArtifactStore, store_from_uri
from relevance_service.bundle_cache import BundleCache
from relevance_service.impressions import LandingWriter
from relevance_service.live_items import LiveCatalog, ServingState
from relevance_service.metrics import ServiceMetrics
from relevance_service.recommender import Recommender
from relevance_service.reloader import BundleReloader
from relevance_service.settings import ServiceSettings
from relevance_service.user_state import (
    SEED_DONE,
    SEED_RUNNING,
    InMemoryUserState,
    RedisUserState,
    UserStateStore,
    lake_window,
    seed_from_lake,
)

log = logging.getLogger("relevance_service")

#: a worker that claimed the lake window and died frees it after this long (seeding 200k users takes
#: about a minute); the others check every SEED_POLL_S whether it is done
SEED_LEASE_S = 600.0
SEED_POLL_S = 0.5


class Service:
    """One app's state and collaborators (see the module docstring)."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        store: ArtifactStore | None = None,
        user_state: UserStateStore | None = None,
    ):
        self.settings = settings
        self.store = store or open_store(settings)
        self.bundle_cache = BundleCache(settings.bundle_cache_dir, settings.home)
        self.metrics = ServiceMetrics()
        self.recommender = Recommender(settings)
        # `is None`, not `or`: a store is falsy while empty (``__len__``), and an empty shared store passed
        # in must still be the one used
        self.user_state = user_state if user_state is not None else default_user_state(settings)
        self.catalog = LiveCatalog(max_items=settings.max_live_items)
        self.writer = LandingWriter(self.store, self.metrics, settings)
        self.pseudonymize = Pseudonymizer(settings.pseudonym_key)
        self.promotions: Promotions | None = None
        if settings.promotions_file:
            with open(settings.promotions_file, "rb") as f:
                self.promotions = Promotions.load(f.read())
        self.serving: ServingState | None = None
        self.reloader = BundleReloader(self)
        self.seeded_users: int | None = None
        #: "lake": this process seeded the user state; "shared": another process sharing the store had
        #: already seeded this lake window (then ``seeded_users`` is 0)
        self.seed_source: str | None = None
        self.started_at = time.time()
        self._seed_task: asyncio.Task | None = None

    def swap(self, state: ServingState) -> None:
        """Replace the serving state: one reference assignment (atomic for every reader)."""
        self.serving = state
        self.metrics.set_bundle(state.version, state.bundle.n_items)
        self.metrics.live_items.set(len(state.overlay.data))
        settle_gc()

    @property
    def seed_running(self) -> bool:
        return self._seed_task is not None and not self._seed_task.done()

    def seeding_for(self) -> float | None:
        """Seconds seeding has run while it still runs and /readyz should wait for it, else None.

        Not while the artifact store is unreachable: seeding reads the lake there and cannot finish, and
        a replica that comes back on its last good bundle during an outage must serve, not wait."""
        if not self.seed_running or self.reloader.store_health.reachable is False:
            return None
        running = time.time() - self.started_at
        return running if running < self.settings.seed_ready_timeout_s else None

    async def _seed(self) -> None:
        """Seed the user state from the lake, once per lake window among the processes that share it
        (workers and replicas on one Redis): the first claims the window, the others wait, not ready,
        until it is done — instead of every one of them reading the lake and rewriting every history."""
        s, state = self.settings, self.user_state
        window, claimed = "", False
        try:
            try:
                window = await asyncio.to_thread(lake_window, self.store, s.seed_days)
            except Exception:  # an unreachable store: seed_from_lake below says so and seeds nothing
                window = ""
            if window:
                while (
                    claim := await asyncio.to_thread(state.claim_seeding, window, SEED_LEASE_S)
                ) == SEED_RUNNING:
                    await asyncio.sleep(SEED_POLL_S)
                if claim == SEED_DONE:
                    log.info(
                        "user state: lake window %s was already seeded by another worker or replica", window
                    )
                    self.seeded_users, self.seed_source = 0, "shared"
                    return
                claimed = True
            self.seeded_users = await asyncio.to_thread(
                seed_from_lake, state, self.store, days=s.seed_days, max_users=s.seed_max_users
            )
            self.seed_source = "lake"
            if claimed:
                await asyncio.to_thread(state.release_seeding, window, done=True)
                claimed = False
            self.metrics.users.set(len(state))
            settle_gc()
        except Exception:
            log.exception("user state seeding failed; continuing with empty state")
            self.seeded_users = 0
        finally:
            if claimed:  # failed or cancelled half-way: another process may seed the window
                with contextlib.suppress(Exception):
                    state.release_seeding(window, done=False)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        s = self.settings
        prev_torch, prev_faiss = torch.get_num_threads(), faiss.omp_get_max_threads()
        torch.set_num_threads(s.torch_threads)
        faiss.omp_set_num_threads(s.faiss_threads)
        try:
            await asyncio.to_thread(self.bundle_cache.remove_stale_partials)  # left by a killed process
            outcome = await self.reloader.check()
            if self.serving is None and outcome.error:
                outcome = await self.reloader.load_last_good(f"LATEST could not be loaded: {outcome.error}")
            if self.serving is None:
                log.warning(
                    "starting without a bundle: %s (polling every %ss)",
                    self.reloader.last_error or outcome.error,
                    s.poll_interval_s,
                )
            if s.seed_from_lake:
                self._seed_task = asyncio.get_running_loop().create_task(self._seed(), name="seed-user-state")
            self.writer.start()
            self.reloader.start()
            yield
        finally:
            await self.reloader.stop()
            if self._seed_task is not None:
                self._seed_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._seed_task
            await self.writer.stop()
            await self.user_state.aclose()
            torch.set_num_threads(prev_torch)
            faiss.omp_set_num_threads(prev_faiss)


def settle_gc() -> None:
    """Collect now, then exempt every surviving object from the cyclic garbage collector.

    Called after a bundle swap and after seeding: a loaded 1M-item bundle holds ~200k long-lived Python
    containers, and each full collection walked all of them (123 ms measured), every few seconds under
    load — requests stalled behind it were the open-loop p99 tail of ``relevance bench serve``. Frozen
    objects are still freed by reference counting; ``unfreeze`` first so that cycles left by the bundle
    being replaced are collected here, once per reload, rather than never.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def default_user_state(settings: ServiceSettings) -> UserStateStore:
    """Redis when ``redis_url`` is set (several workers or replicas see one history), else in-process."""
    max_len = max(settings.max_history, 50)
    if settings.redis_url:
        return RedisUserState.from_url(settings.redis_url, max_len=max_len, ttl_s=settings.state_ttl_s)
    return InMemoryUserState(max_len=max_len, ttl_s=settings.state_ttl_s, max_users=settings.state_max_users)


def open_store(settings: ServiceSettings) -> ArtifactStore:
    """The artifact store; for S3 a client with bounded timeouts and retries, so a poll of an unreachable
    store fails in seconds (and is reported) instead of hanging on botocore's 60 s defaults."""
    if not settings.home.startswith("s3://"):
        return store_from_uri(settings.home)
    import boto3
    from botocore.config import Config

    from relevance_core.settings import s3_endpoint

    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint or s3_endpoint(),
        config=Config(
            connect_timeout=settings.s3_connect_timeout_s,
            read_timeout=settings.s3_read_timeout_s,
            retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
        ),
    )
    return store_from_uri(settings.home, s3_client=client)
