"""The load generator of ``relevance bench serve``: raw HTTP/1.1 on keep-alive connections from its own
process, open loop (a fixed send schedule, latency from the scheduled time: no coordinated omission) or
closed loop (a fixed number outstanding), with per-second and per-worker percentiles so a stall can be
told from queueing."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import numpy as np

#: open loop: a request that cannot even be sent because this many are already outstanding counts as an
#: error (the server is not keeping up); without a cap a stalled server would be buried under thousands
#: of queued requests and the next phase would measure the backlog
MAX_IN_FLIGHT = 512
#: a request not answered in this long is an error
REQUEST_TIMEOUT_S = 10.0


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def post_request(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


PERSONALIZED = b'"strategy":"personalized"'


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    """Send one pre-built request on a keep-alive connection; (status, body, whether the connection may
    be reused: not after ``Connection: close``, which a worker holding more than its share of
    connections sends, ``relevance_service.connection_balance``)."""
    writer.write(request)
    status = int((await reader.readline()).split()[1])
    length = 0
    keep = True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    return status, await reader.readexactly(length) if length else b"", keep


async def _open(port: int, tries: int = 20) -> tuple[tuple, int | None]:
    """A keep-alive connection and the server process behind it (``/readyz`` names it); a connection the
    server asks to close at once (its worker is over its share) is replaced by a fresh one."""
    for _ in range(tries):
        c = await asyncio.open_connection("127.0.0.1", port)
        _, body, keep = await _exchange(*c, get_request("/readyz"))
        if keep:
            return c, json.loads(body).get("worker") if body else None
        c[1].close()
    raise ConnectionError(f"no keep-alive connection after {tries} tries")


async def _http_call(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool, bool]:
    """Send one pre-built request; (status, whether the answer was personalised, keep the connection)."""
    status, body, keep = await _exchange(reader, writer, request)
    return status, PERSONALIZED in body, keep


def _split(workers) -> dict[str, int]:
    """Connections per worker pid (as text, for JSON)."""
    out: dict[str, int] = {}
    for w in workers:
        if w is not None:
            out[str(w)] = out.get(str(w), 0) + 1
    return dict(sorted(out.items()))


class _Pool:
    """A fixed FIFO pool of keep-alive connections opened up front: requests rotate over all of them, so
    with several workers (each owning the connections it accepted) the load spreads the way many clients'
    traffic would. A LIFO pool reuses the same one or two connections whenever the server keeps up, which
    sends nearly every request to one worker and measures that worker's queue instead.

    The pool does not grow: a request that finds every connection busy waits for one (counted in its
    latency and in ``pool_waits``), as a client with a connection limit does. A pool that grew under a
    backlog spread the backlog over ever more connections, which the workers then had to even out while
    already behind."""

    def __init__(self, port: int, opened: list[tuple[tuple, int | None]]):
        self.port = port
        self.idle: asyncio.Queue[tuple] = asyncio.Queue()
        for c, _ in opened:
            self.idle.put_nowait(c)
        # which worker holds each connection: a slow second on one worker is that worker's, on all of them
        # something they share (Redis, the client, the host)
        self.worker_of = {id(c[1]): w for c, w in opened}
        self.split_at_start = _split(self.worker_of.values())
        self.reconnects = 0
        self.pool_waits = 0
        self.pending: set[asyncio.Task] = set()

    @classmethod
    async def open(cls, port: int, connections: int) -> _Pool:
        return cls(port, [await _open(port) for _ in range(connections)])

    async def call(self, request: bytes, held: list) -> tuple[tuple, int, bool, bool]:
        """One request on a pooled connection (``held`` gets it, so a failure can replace it); one the
        server closed while idle (uvicorn's keep-alive timeout) fails before any answer: that request is
        re-sent once on a fresh connection, as any HTTP client pool does. Returns (connection, status,
        personalised, keep the connection)."""
        if self.idle.empty():
            self.pool_waits += 1
        c = await self.idle.get()
        held.append(c)
        try:
            return (c, *await _http_call(*c, request))
        except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
            c[1].close()
        c = await asyncio.open_connection("127.0.0.1", self.port)
        held[0] = c
        return (c, *await _http_call(*c, request))

    def give_back(self, c: tuple) -> None:
        self.idle.put_nowait(c)

    def retire(self, c: tuple | None) -> None:
        """Retire a connection (shed by the server with ``Connection: close``, or broken by an error) and
        pool a fresh one, as an HTTP client pool does, off the measured request's path."""
        task = asyncio.get_running_loop().create_task(self._replace(c))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _replace(self, c: tuple | None) -> None:
        if c is not None:
            c[1].close()
            self.worker_of.pop(id(c[1]), None)
        try:
            fresh, w = await _open(self.port)
        except (OSError, ConnectionError):
            return
        self.reconnects += 1
        self.worker_of[id(fresh[1])] = w
        self.idle.put_nowait(fresh)

    async def close(self) -> None:
        await asyncio.gather(*list(self.pending))
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()


class _Record:
    """What the measured requests did: latency from the scheduled send, the worker that answered, and how
    late this client itself started each one (a stall of its own event loop, not the server's, shows
    there, in the second it happened)."""

    def __init__(self) -> None:
        self.lat: list[float] = []
        self.sent_at: list[float] = []  # scheduled send times (the per-second timeline)
        self.served_by: list[int | None] = []
        self.send_lag: list[tuple[float, float]] = []
        self.errors = 0
        self.done = 0
        self.answered = 0  # warm-up included: what the server's CPU time per phase is divided by
        self.personalized = 0
        self.kinds: dict[str, int] = {}
        self.dropped = 0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def answer(self, t_sched: float, latency: float, worker: int | None, status: int, pers: bool) -> None:
        self.lat.append(latency)
        self.sent_at.append(t_sched)
        self.served_by.append(worker)  # None: a connection opened during the run
        self.done += 1
        self.personalized += pers
        if status != 200:
            self.error(f"http {status}")

    def summary(self, pool: _Pool, wall: float, cpu: float, warmup: float) -> dict[str, Any]:
        arr = np.asarray(self.lat) * 1000.0
        origin = min(self.sent_at, default=0.0)
        # p99 per second of the run: a periodic stall (a flush, a collection) shows as a beat, queueing as
        # noise
        sec = (np.asarray(self.sent_at) - origin).astype(int) if self.sent_at else np.zeros(0, int)
        seconds = np.unique(sec)
        by_second = [round(float(np.percentile(arr[sec == s], 99)), 1) for s in seconds]
        workers = np.asarray([w if w is not None else -1 for w in self.served_by])
        known = sorted({*pool.worker_of.values(), *(int(w) for w in pool.split_at_start)} - {None})
        by_worker = {
            str(w): [
                round(float(np.percentile(arr[m], 99)), 1)
                if (m := (sec == s) & (workers == w)).any()
                else None
                for s in seconds
            ]
            for w in known
        }
        lag_by_second = [0.0] * len(by_second)
        for t, lag in self.send_lag:
            s = int(t - origin)
            if 0 <= s < len(lag_by_second):
                lag_by_second[s] = max(lag_by_second[s], round(lag * 1000.0, 1))
        pct = (lambda q: round(float(np.percentile(arr, q)), 3)) if len(arr) else (lambda q: None)
        done = self.done
        return {
            "requests": done,
            "answered_incl_warmup": self.answered,
            "errors": self.errors,
            "error_kinds": self.kinds,
            "rps": round(done / wall, 1) if wall > 0 else 0.0,
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "max_ms": round(float(arr.max()), 3) if len(arr) else None,
            "p99_by_second_ms": by_second,
            "p99_by_second_by_worker_ms": by_worker,
            "client_send_lag_by_second_ms": lag_by_second,
            # the kernel's split of the connections opened up front, and the split at the end, after
            # workers holding more than their share had the client reconnect (``reconnects`` times)
            "connections_per_worker_at_start": pool.split_at_start,
            "connections_per_worker": _split(pool.worker_of.values()),
            "reconnects": pool.reconnects,
            "pool_waits": pool.pool_waits,
            "measured_from": origin if self.sent_at else None,  # perf_counter: the seconds' origin
            "client_cpu_pct": round(100.0 * cpu / (warmup + wall), 1),
            "not_sent": self.dropped,
            # share of answers from the user tower (not the popular fallback): a check that the load
            # measures the personalised path (≈ 0.9 with 10% unknown users)
            "personalized_share": round(self.personalized / done, 3) if done else None,
        }


async def _load(
    port: int,
    paths: list[bytes],
    mode: str,
    rate: float,
    duration: float,
    warmup: float,
    concurrency: int,
    connections: int,
) -> dict[str, Any]:
    # latencies on a fine clock: uvloop's loop.time() counts whole milliseconds
    clock = time.perf_counter
    pool = await _Pool.open(port, connections)
    rec = _Record()
    rng = random.Random(1)
    in_flight = 0

    async def one(t_sched: float, measure: bool) -> None:
        nonlocal in_flight
        in_flight += 1
        if measure:
            rec.send_lag.append((t_sched, clock() - t_sched))
        held: list = []
        try:
            c, status, pers, keep = await asyncio.wait_for(
                pool.call(rng.choice(paths), held), timeout=REQUEST_TIMEOUT_S
            )
        except Exception as e:
            if measure:
                rec.error(type(e).__name__)
            if held:  # the connection is in an unknown state: the pool gets a fresh one
                pool.retire(held[0])
            return
        finally:
            in_flight -= 1
        if keep:
            pool.give_back(c)
        else:
            pool.retire(c)
        rec.answered += 1
        if measure:
            rec.answer(t_sched, clock() - t_sched, pool.worker_of.get(id(c[1])), status, pers)

    cpu0 = time.process_time()
    if mode == "open":
        tasks: set[asyncio.Task] = set()
        start = clock() + 0.05
        n_warm, n = int(rate * warmup), int(rate * (warmup + duration))
        for i in range(n):
            t = start + i / rate
            if (delay := t - clock()) > 0:
                await asyncio.sleep(delay)
            if in_flight >= MAX_IN_FLIGHT:
                if i >= n_warm:
                    rec.dropped += 1
                    rec.errors += 1
                continue
            task = asyncio.get_running_loop().create_task(one(t, i >= n_warm))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*list(tasks))
        wall = clock() - (start + warmup)
    else:
        stop_warm = clock() + warmup
        end = stop_warm + duration

        async def worker() -> None:
            while (t := clock()) < end:
                await one(t, t >= stop_warm)

        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = duration
    await pool.close()
    return rec.summary(pool, wall, time.process_time() - cpu0, warmup)


def client_process(q, port, paths, mode, rate, duration, warmup, concurrency, connections) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    q.put(asyncio.run(_load(port, paths, mode, rate, duration, warmup, concurrency, connections)))
