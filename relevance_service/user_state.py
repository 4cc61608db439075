"""Recent history per user: the only user state the service keeps (no user-ID embedding).

The user tower reads the last L interactions, so "state" is a short, bounded, expiring list per user.
:class:`UserStateStore` is the interface; :class:`InMemoryUserState` is the default (one process,
bounded number of users, LRU eviction, per-entry TTL). :class:`RedisUserState` keeps the same contract in
a shared Redis for several replicas or workers (``RELEVANCE_REDIS_URL``): one sorted set per user, scored
by time, so "newest ``max_len`` in time order" holds for out-of-order batches too, and an identical event
written twice (a client's retry, every worker seeding from the same lake) is stored once — in both stores.

Seeding at start (:func:`seed_from_lake`) reads the newest ``lake/sessions`` partitions so that a restart
does not make every known user look anonymous.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

import msgspec

from relevance_core.settings import LAYOUT
from relevance_core.storage import ArtifactStore

log = logging.getLogger(__name__)

#: a history expires this long after the user's last event
DEFAULT_TTL_S = 30 * 86_400.0


class HistoryEntry(msgspec.Struct, frozen=True, gc=False):
    """One interaction as the user tower needs it: ``ts`` is epoch seconds (UTC).

    ``gc=False``: a store of a million users holds tens of millions of these, and the cyclic garbage
    collector would walk every one of them in each full collection (seconds of stalled requests); they
    hold only strings and a float, so they can never be part of a reference cycle.
    """

    item_id: str
    event_type: str
    ts: float


SEED_MINE, SEED_RUNNING, SEED_DONE = "mine", "running", "done"


class UserStateUnavailable(RuntimeError):
    """The shared user-state store cannot be reached (Redis down, timed out). Reads degrade to "no
    history" (the popular fallback); writes and erasures answer 503 rather than claim success."""


class UserStateStore(ABC):
    """Recent interactions per user, oldest first, at most ``max_len`` each, entries expire after ``ttl_s``."""

    max_len: int
    ttl_s: float

    @abstractmethod
    def get(self, user_id: str, *, now: float | None = None) -> list[HistoryEntry]:
        """The user's unexpired history, oldest first (empty for unknown users)."""

    @abstractmethod
    def append(self, user_id: str, entries: Iterable[HistoryEntry], *, now: float | None = None) -> int:
        """Add interactions (any order; kept sorted by time) and drop the oldest beyond ``max_len``.
        Returns how many of ``entries`` were stored: entries older than the TTL never are, and an entry
        equal to one already held (same item, event type and time) is the same event, held once.
        """

    @abstractmethod
    def delete(self, user_id: str) -> bool:
        """Forget a user (erasure requests). True when there was something to forget."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of users held (approximate for shared stores)."""

    # the request handlers' entry points: a store that does network I/O overrides these so that waiting
    # for it never blocks the event loop (and every other request of the worker) — in-process stores
    # answer at once
    async def get_async(self, user_id: str, *, now: float | None = None) -> list[HistoryEntry]:
        return self.get(user_id, now=now)

    async def append_async(
        self, user_id: str, entries: Iterable[HistoryEntry], *, now: float | None = None
    ) -> int:
        return self.append(user_id, entries, now=now)

    async def delete_async(self, user_id: str) -> bool:
        return self.delete(user_id)

    async def aclose(self) -> None:  # noqa: B027 - optional hook: in-process stores hold no connections
        """Release connections at shutdown."""

    # seeding from the lake once per lake window, whoever shares the store (see :func:`lake_window`)
    def claim_seeding(self, window: str, lease_s: float) -> str:
        """``"mine"``: this process seeds ``window`` (then :meth:`release_seeding`); ``"running"``:
        another process sharing the store is at it; ``"done"``: another process already seeded it.
        A store no other process reads is always ``"mine"``."""
        return SEED_MINE

    def release_seeding(self, window: str, *, done: bool) -> None:  # noqa: B027 - nothing shared to mark
        """After seeding ``window``: mark it done, or (``done=False``, it failed) let another process try."""


class InMemoryUserState(UserStateStore):
    """Thread-safe in-process store: an LRU of at most ``max_users`` users, each a bounded deque.

    Expired entries are dropped lazily on read and on write, so no sweeper thread is needed; a user whose
    entries all expired is removed when next touched, and LRU eviction bounds memory in any case.
    """

    def __init__(self, *, max_len: int = 50, ttl_s: float = DEFAULT_TTL_S, max_users: int = 1_000_000):
        if max_len < 1 or max_users < 1 or ttl_s <= 0:
            raise ValueError("max_len, max_users and ttl_s must be positive")
        self.max_len = max_len
        self.ttl_s = ttl_s
        self.max_users = max_users
        self._users: OrderedDict[str, deque[HistoryEntry]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user_id: str, *, now: float | None = None) -> list[HistoryEntry]:
        cutoff = (time.time() if now is None else now) - self.ttl_s
        with self._lock:
            q = self._users.get(user_id)
            if q is None:
                return []
            while q and q[0].ts < cutoff:
                q.popleft()
            if not q:
                del self._users[user_id]
                return []
            self._users.move_to_end(user_id)
            return list(q)

    def append(self, user_id: str, entries: Iterable[HistoryEntry], *, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - self.ttl_s
        new = [e for e in entries if e.ts >= cutoff]
        if not new:
            return 0
        with self._lock:
            q = self._users.get(user_id)
            if q is None:
                q = self._users[user_id] = deque(maxlen=self.max_len)
            else:
                self._users.move_to_end(user_id)
                held = set(q)
                new = [e for e in new if e not in held]  # the same event twice is one event
                if not new:
                    return 0
            new = list(dict.fromkeys(new))
            if q and min(e.ts for e in new) < q[-1].ts:
                # out-of-order arrival (batched clients, seeding): merge, keep the newest max_len
                merged = sorted([*q, *new], key=lambda e: e.ts)
                q.clear()
                q.extend(merged[-self.max_len :])
            else:
                q.extend(sorted(new, key=lambda e: e.ts))
            while q and q[0].ts < cutoff:
                q.popleft()
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
        return len(new)

    def delete(self, user_id: str) -> bool:
        with self._lock:
            return self._users.pop(user_id, None) is not None

    def __len__(self) -> int:
        return len(self._users)


class RedisUserState(UserStateStore):
    """The same contract on a shared Redis (a ``redis.Redis``-compatible client), for several replicas.

    One sorted set per user (``<prefix><user_id>``): members are msgpack-encoded ``(item, event, ts)``,
    scored by ``ts``. A write adds the new entries (``ZADD``: an identical entry is one member), drops
    expired ones (``ZREMRANGEBYSCORE``) and all but the newest ``max_len`` (``ZREMRANGEBYRANK``), and
    renews the key's expiry, in one transaction; a read is one ``ZRANGEBYSCORE`` from the TTL cut-off.
    The client is injected (:meth:`from_url` builds one) so the service needs the ``redis`` package only
    when this store is used.
    """

    def __init__(
        self,
        client: Any,
        *,
        aclient: Any = None,
        max_len: int = 50,
        ttl_s: float = DEFAULT_TTL_S,
        prefix: str = "rel:h:",
    ):
        if max_len < 1 or ttl_s <= 0:
            raise ValueError("max_len and ttl_s must be positive")
        self.client = client  # blocking: seeding (in a worker thread), the users gauge
        self.aclient = aclient  # ``redis.asyncio``: the request handlers (None: they use ``client``)
        self.max_len = max_len
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(tuple[str, str, float])

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisUserState:
        """``redis://host:port/db`` → a store on a client with short timeouts (a request must not hang on
        a slow Redis)."""
        import redis
        import redis.asyncio
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # one quick retry, not the client's default backoff (seconds of a request's time when Redis is down)
        opts = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
        client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 1), **opts)
        aclient = redis.asyncio.Redis.from_url(url, retry=AsyncRetry(NoBackoff(), 1), **opts)
        return cls(client, aclient=aclient, **kwargs)

    @staticmethod
    @contextlib.contextmanager
    def _reachable(what: str):
        """Redis errors as :class:`UserStateUnavailable` naming the operation."""
        import redis

        try:
            yield
        except redis.exceptions.RedisError as e:
            raise UserStateUnavailable(f"user state store ({what}): {type(e).__name__}: {e}") from e

    def _call(self, what: str, fn, *args):
        with self._reachable(what):
            return fn(*args)

    async def _acall(self, what: str, fn, *args):
        with self._reachable(what):
            return await fn(*args)

    def _decode(self, raw: list[bytes]) -> list[HistoryEntry]:
        return [HistoryEntry(*self._dec.decode(r)) for r in raw]

    def _write(self, client: Any, user_id: str, entries: Iterable[HistoryEntry], now: float | None):
        """The write transaction on ``client`` (not yet executed), or None when nothing is recent."""
        cutoff = (time.time() if now is None else now) - self.ttl_s
        new = {self._enc.encode((e.item_id, e.event_type, e.ts)): e.ts for e in entries if e.ts >= cutoff}
        if not new:
            return None
        key = self.prefix + user_id
        pipe = client.pipeline(transaction=True)
        pipe.zadd(key, new)
        pipe.zremrangebyscore(key, "-inf", f"({cutoff}")
        pipe.zremrangebyrank(key, 0, -self.max_len - 1)
        pipe.expire(key, max(1, math.ceil(self.ttl_s)))
        return pipe

    def get(self, user_id: str, *, now: float | None = None) -> list[HistoryEntry]:
        cutoff = (time.time() if now is None else now) - self.ttl_s
        return self._decode(
            self._call("read", self.client.zrangebyscore, self.prefix + user_id, cutoff, "+inf")
        )

    def append(self, user_id: str, entries: Iterable[HistoryEntry], *, now: float | None = None) -> int:
        pipe = self._write(self.client, user_id, entries, now)
        return 0 if pipe is None else int(self._call("write", pipe.execute)[0])

    def delete(self, user_id: str) -> bool:
        return bool(self._call("delete", self.client.delete, self.prefix + user_id))

    async def get_async(self, user_id: str, *, now: float | None = None) -> list[HistoryEntry]:
        if self.aclient is None:
            return self.get(user_id, now=now)
        cutoff = (time.time() if now is None else now) - self.ttl_s
        raw = await self._acall("read", self.aclient.zrangebyscore, self.prefix + user_id, cutoff, "+inf")
        return self._decode(raw)

    async def append_async(
        self, user_id: str, entries: Iterable[HistoryEntry], *, now: float | None = None
    ) -> int:
        if self.aclient is None:
            return self.append(user_id, entries, now=now)
        pipe = self._write(self.aclient, user_id, entries, now)
        return 0 if pipe is None else int((await self._acall("write", pipe.execute))[0])

    async def delete_async(self, user_id: str) -> bool:
        if self.aclient is None:
            return self.delete(user_id)
        return bool(await self._acall("delete", self.aclient.delete, self.prefix + user_id))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # shutting down: a Redis that is gone has nothing to close
            if self.aclient is not None:
                await self.aclient.aclose()
            self.client.close()

    def __len__(self) -> int:
        return self._call(
            "count", lambda: sum(1 for _ in self.client.scan_iter(match=self.prefix + "*", count=1000))
        )

    def _seed_key(self, window: str) -> str:
        # outside ``prefix``: the users count scans ``prefix*``
        return f"relevance-seeding:{self.prefix}{window}"

    def claim_seeding(self, window: str, lease_s: float) -> str:
        """One ``SET NX`` with a lease: the first worker or replica seeds, the others wait for ``done``
        (a claimer that dies mid-seed frees the window when its lease runs out)."""
        key = self._seed_key(window)
        lease = max(1, math.ceil(lease_s))
        if self._call("seed claim", lambda: self.client.set(key, SEED_RUNNING, ex=lease, nx=True)):
            return SEED_MINE
        state = self._call("seed claim", self.client.get, key)
        return SEED_DONE if state == SEED_DONE.encode() else SEED_RUNNING

    def release_seeding(self, window: str, *, done: bool) -> None:
        key = self._seed_key(window)
        if done:  # as long as the seeded histories can live
            ttl = max(1, math.ceil(self.ttl_s))
            self._call("seed release", lambda: self.client.set(key, SEED_DONE, ex=ttl))
        else:
            self._call("seed release", self.client.delete, key)


def lake_window(store: ArtifactStore, days: int = 7) -> str:
    """What a start-up would seed from: the newest ``days`` ``lake/sessions`` partitions, as one name
    (``date=2026-01-01..date=2026-01-07``; empty when there are none). A new day's partition is a new
    window, seeded again (idempotent: the stores hold each event once)."""
    parts = newest_partitions(store, days)
    return f"{parts[0]}..{parts[-1]}" if parts else ""


def newest_partitions(store: ArtifactStore, days: int) -> list[str]:
    """The newest ``days`` ``date=`` partitions of ``lake/sessions``, oldest first."""
    return sorted(p for p in store.list_dirs(LAYOUT.table("sessions")) if p.startswith("date="))[-days:]


def seed_from_lake(
    state: UserStateStore, store: ArtifactStore, *, days: int = 7, max_users: int = 200_000
) -> int:
    """Fill ``state`` from the newest ``days`` partitions of ``lake/sessions`` (user sessions only).

    Returns the number of users seeded. A missing or unreadable table is logged and seeds nothing: the
    service must start even on an empty lake (users then get the popular fallback until they act).
    """
    import pyarrow.parquet as pq

    table_key = LAYOUT.table("sessions")
    try:
        partitions = newest_partitions(store, days)
    except Exception as e:  # an unreachable store must not stop the service from starting
        log.warning("user state: cannot list %s: %s", table_key, e)
        return 0
    per_user: dict[str, list[HistoryEntry]] = {}
    for part in partitions:
        try:
            local = store.local_dir(f"{table_key}/{part}")
            files = sorted(p for p in local.rglob("*.parquet") if not p.name.startswith("."))
            for f in files:
                t = pq.read_table(f, columns=["user_id", "item_ids", "event_types", "timestamps"])
                for uid, items, types, tss in zip(
                    *(t.column(c).to_pylist() for c in t.column_names), strict=True
                ):
                    if uid is None or not items:
                        continue
                    if uid not in per_user and len(per_user) >= max_users:
                        continue
                    per_user.setdefault(uid, []).extend(
                        HistoryEntry(i, e, ts.timestamp())
                        for i, e, ts in zip(items, types, tss, strict=False)
                    )
        except Exception as e:
            log.warning("user state: skipping sessions partition %s: %s", part, e)
    # entries older than the TTL are dropped by the store, as on any write; a user with none left is
    # not seeded
    seeded = sum(1 for uid, entries in per_user.items() if state.append(uid, entries))
    expired = len(per_user) - seeded
    log.info("user state: seeded %d users from %d sessions partitions", seeded, len(partitions))
    if expired:
        # replayed or historical data (the demo's generated January) is older than the TTL: say so, or
        # every lake user silently gets the popular fallback
        log.warning(
            "user state: %d users' lake histories are all older than the state TTL (%.0f s) and were not "
            "seeded; raise RELEVANCE_STATE_TTL_S to serve them personally",
            expired,
            state.ttl_s,
        )
    return seeded
