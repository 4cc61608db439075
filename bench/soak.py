"""Load and soak: ``relevance bench soak`` — minutes of steady load with events and hot reloads.

What it does, in one run:

1. **Bundle.** The same bundle as ``relevance bench serve`` (``bench/serve.py::build_bundle``: generated
   catalog of ``--items`` listings, fitted feature encoder, exported two-tower model, tuned FAISS index,
   assembled and published with the project's code), cached under ``--work-dir/soak-<items>``. The landing
   zone of earlier runs is cleared, so the store only grows by what this run writes.
2. **Server.** ``relevance serve`` in its own process on 127.0.0.1, polling ``LATEST`` every second (no
   admin call: reloads happen the way a deploy makes them happen). ``--users`` users get a history first.
3. **Load.** A second process drives an *open-loop* schedule at ``--rate`` requests/s for ``--minutes``
   with an asyncio client over keep-alive connections: ``GET /v1/users/{id}/recommendations`` (known and
   unknown users), ``POST /v1/recommendations`` (guests) and ``POST /v1/events`` (one event of a known
   user; the token is sent). Latency counts from the *scheduled* send time (no coordinated omission). A
   request fails on a non-2xx answer, a transport error, a 10 s timeout, or when 512 are already waiting
   (then it is not even sent).
4. **During the load** this process publishes ``--reloads`` new bundles (a copy of the serving bundle
   under a new version, re-checksummed and published with ``bundle.publish``; the server downloads,
   verifies, smoke-tests and swaps it in), evenly spread, and samples the server's RSS every second.

Reported (one JSON object, last line): ``requests`` sent / ``failed`` (the goal is 0), per ``--window``
seconds the request count, failures, latency p50 / p95 / p99 / max, RSS at the window's end and the
bundle versions answered; RSS at start (after seeding), end, and ``rss_growth_mb`` (end − start) plus
``rss_growth_after_first_window_mb``; reloads seen (server metric, and distinct versions in responses) and
how long each publish took to be served; ``older_version_answers``: requests sent after a newer version
had answered and still answered by an older one (the goal is 0: versions only move forward). Reference in the same
run: ``p99_drift`` = p99 of the last window / p99 of the first (1.0 = no degradation over time).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.processes import TOKEN, free_port, stop_server, wait_ready
from bench.processes import start_server as serve_process
from bench.serve import _rss_mb, build_bundle, bundle_item_ids, seed_users, user_histories

MAX_IN_FLIGHT = 512
TIMEOUT_S = 10.0
KEEPALIVE_S = 4.0


def add_arguments(p) -> None:
    p.add_argument("--minutes", type=float, default=5.0, help="length of the load (default 5)")
    p.add_argument("--rate", type=float, default=50.0, help="open-loop offered rate, requests/s (default 50)")
    p.add_argument("--window", type=float, default=30.0, help="seconds per reported window (default 30)")
    p.add_argument("--items", type=int, default=20_000, help="catalog size of the bundle (default 20k)")
    p.add_argument("--users", type=int, default=500, help="users given a history before the run")
    p.add_argument("--reloads", type=int, default=2, help="bundles published during the load (default 2)")
    p.add_argument("--event-share", type=float, default=0.1, help="share of requests that post an event")
    p.add_argument("--guest-share", type=float, default=0.1, help="share of guest recommendation requests")
    p.add_argument("--rate-limit", default=None, help="RELEVANCE_RATE_LIMIT for the server (default off)")
    p.add_argument(
        "--work-dir",
        default=os.environ.get("RELEVANCE_BENCH_DIR", str(Path(tempfile.gettempdir()) / "relevance-bench")),
        help="where the bench bundle is built and cached (default: RELEVANCE_BENCH_DIR or <tmp>/relevance-bench)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the bundle even if cached")
    p.add_argument("--seed", type=int, default=0, help="seed of the bundle and the request mix (default 0)")


# -- bundle and server -----------------------------------------------------------------------------------------
def ensure_home(work_dir: Path, n_items: int, rebuild: bool, seed: int) -> tuple[Path, dict[str, Any]]:
    from relevance_core import bundle as B
    from relevance_core.storage import LocalStore

    home = work_dir / f"soak-{n_items}" / "home"
    if not rebuild and home.exists():
        store = LocalStore(home)
        version = B.latest_version(store)
        try:
            if version and B.read_manifest(store, version).n_items == n_items:
                shutil.rmtree(home / "landing", ignore_errors=True)
                return home, {"version": version, "cached": True}
        except B.BundleError:
            pass
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    return home, {**build_bundle(home, n_items, seed), "cached": False}


def republish(home: Path) -> str:
    """Publish the serving bundle again under a new version (a full, verified bundle: what a retrain that
    changed nothing would publish), the way the pipeline does it; returns the new version."""
    from relevance_core import bundle as B
    from relevance_core.storage import LocalStore

    store = LocalStore(home)
    current = B.latest_version(store)
    stage = Path(tempfile.mkdtemp(prefix="relevance-soak-", dir=home.parent)) / "bundle"
    try:
        shutil.copytree(store.local_dir(B.bundle_key(current)), stage)
        manifest = B.verify_dir(stage)
        manifest.version = B.new_version()
        manifest.created_at = datetime.now(UTC).isoformat()
        manifest.data = {**manifest.data, "republished_from": current, "source": "bench/soak.py"}
        B.finalize_manifest(stage, manifest)
        B.publish(store, stage, keep=3)
        return manifest.version
    finally:
        shutil.rmtree(stage.parent, ignore_errors=True)


def start_server(home: Path, port: int, log_path: Path, rate_limit: str | None) -> subprocess.Popen:
    """The bench's server, polling ``LATEST`` every second (bundles are published during the run)."""
    env = {
        "RELEVANCE_PSEUDONYM_KEY": "soak",
        "RELEVANCE_POLL_INTERVAL_S": "1",
        "RELEVANCE_BUNDLE_CACHE_DIR": str(home.parent / "bundle-cache"),
    }
    if rate_limit:
        env["RELEVANCE_RATE_LIMIT"] = rate_limit
    return serve_process(home, port, 1, log_path, env)


def server_metric(url: str, name: str) -> float | None:
    import httpx

    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


# -- the load generator (its own process) --------------------------------------------------------------------------
class StaleConnection(ConnectionError):
    """The server had closed this keep-alive connection: nothing of the request was read."""


async def _request(reader, writer, raw: bytes) -> tuple[int, str | None]:
    writer.write(raw)
    line = await reader.readline()
    if not line:
        raise StaleConnection
    status = int(line.split()[1])
    length, version = 0, None
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"x-bundle-version":
            version = value.strip().decode()
    if length:
        await reader.readexactly(length)
    return status, version


def _requests(plan: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The request mix, pre-encoded: (kind, raw HTTP/1.1 request)."""
    rng = random.Random(plan["seed"])
    users, items = plan["users"], plan["items"]
    out = []
    for i in range(plan["n_templates"]):
        x = rng.random()
        if x < plan["event_share"]:
            body = json.dumps(
                {
                    "events": [
                        {"user_id": rng.choice(users), "item_id": rng.choice(items), "event_type": "view"}
                    ]
                }
            ).encode()
            head = (
                f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {plan['token']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            out.append(("event", head.encode() + body))
        elif x < plan["event_share"] + plan["guest_share"]:
            hist = [{"item_id": it, "event_type": "view"} for it in rng.sample(items, 5)]
            body = json.dumps({"history": hist, "k": 20}).encode()
            head = (
                "POST /v1/recommendations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            out.append(("guest", head.encode() + body))
        else:
            user = rng.choice(users) if rng.random() < 0.9 else f"soak-anon-{i}"
            out.append(
                (
                    "user",
                    f"GET /v1/users/{user}/recommendations?k=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
                )
            )
    return out


async def _load(port: int, plan: dict[str, Any], t0_wall: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    reqs = _requests(plan)
    rate, n = plan["rate"], int(plan["rate"] * plan["duration"])
    idle: list[tuple] = []
    in_flight = 0
    t_rel = np.full(n, np.nan)
    t_sent = np.full(n, np.nan)
    t_done = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    ok = np.zeros(n, dtype=bool)
    kind = np.zeros(n, dtype=np.int8)
    ver = np.full(n, -1, dtype=np.int32)
    versions: dict[str, int] = {}
    errors: dict[str, int] = {}
    kinds = {"user": 0, "guest": 1, "event": 2}

    def fail(why: str) -> None:
        errors[why] = errors.get(why, 0) + 1

    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    stale_retries = 0

    async def connection(fresh: bool) -> tuple:
        # uvicorn closes a keep-alive connection idle for 5 s; one idle for 4 s is not reused
        while idle and not fresh:
            c = idle.pop()
            if clock() - c[2] < KEEPALIVE_S:
                return c
            c[1].close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return reader, writer, clock()

    async def one(i: int, t_sched: float, raw: bytes) -> None:
        nonlocal in_flight, stale_retries
        in_flight += 1
        c = None
        try:
            c = await connection(fresh=False)
            t_sent[i] = clock() - start
            try:
                status, version = await asyncio.wait_for(_request(c[0], c[1], raw), timeout=TIMEOUT_S)
            except StaleConnection:
                # closed by the server before it read anything (idle timeout race): what any HTTP client
                # does, send it again on a new connection (counted in the report)
                stale_retries += 1
                c[1].close()
                c = await connection(fresh=True)
                status, version = await asyncio.wait_for(_request(c[0], c[1], raw), timeout=TIMEOUT_S)
            t_done[i] = clock() - start
        except Exception as e:
            fail(type(e).__name__)
            if c is not None:
                c[1].close()
            lat[i] = clock() - t_sched
            return
        finally:
            in_flight -= 1
        idle.append((c[0], c[1], clock()))
        lat[i] = clock() - t_sched
        if 200 <= status < 300:
            ok[i] = True
        else:
            fail(f"http_{status}")
        if version is not None:
            ver[i] = versions.setdefault(version, len(versions))

    cpu0 = time.process_time()
    start = clock() + max(0.0, t0_wall - time.time())
    tasks: set[asyncio.Task] = set()
    for i in range(n):
        t = start + i / rate
        delay = t - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        k, raw = reqs[i % len(reqs)]
        t_rel[i], kind[i] = t - start, kinds[k]
        if in_flight >= MAX_IN_FLIGHT:
            fail("not_sent_512_waiting")
            continue
        task = loop.create_task(one(i, t, raw))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*list(tasks))
    cpu = time.process_time() - cpu0
    for _, w, _ in idle:
        w.close()
    return {
        "stale_connection_retries": stale_retries,
        "t": t_rel.tolist(),
        "t_sent": t_sent.tolist(),
        "t_done": t_done.tolist(),
        "lat_ms": (lat * 1000).tolist(),
        "ok": ok.tolist(),
        "kind": kind.tolist(),
        "ver": ver.tolist(),
        "versions": sorted(versions, key=versions.get),
        "errors": errors,
        "client_cpu_s": cpu,
    }


def _client_process(q, port: int, plan: dict[str, Any], t0_wall: float) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    q.put(asyncio.run(_load(port, plan, t0_wall)))


# -- report ------------------------------------------------------------------------------------------------------
def _pct(a: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(a, q)), 2) if len(a) else None


def summarise(res: dict[str, Any], rss: list[tuple[float, float]], window: float, duration: float) -> dict:
    t = np.asarray(res["t"], dtype=float)
    lat = np.asarray(res["lat_ms"], dtype=float)
    ok = np.asarray(res["ok"], dtype=bool)
    ver = np.asarray(res["ver"], dtype=np.int64)
    names = res["versions"]
    windows = []
    edges = np.arange(0.0, duration + 1e-9, window)
    if edges[-1] < duration - 1e-6:
        edges = np.append(edges, duration)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (t >= lo) & (t < hi)
        good = lat[sel & ok & ~np.isnan(lat)]
        in_win = [r for ts, r in rss if lo <= ts < hi]
        seen = sorted({int(v) for v in ver[sel] if v >= 0})
        windows.append(
            {
                "from_s": round(float(lo), 1),
                "to_s": round(float(hi), 1),
                "requests": int(sel.sum()),
                "failed": int((sel & ~ok).sum()),
                "p50_ms": _pct(good, 50),
                "p95_ms": _pct(good, 95),
                "p99_ms": _pct(good, 99),
                "max_ms": round(float(good.max()), 2) if len(good) else None,
                "rss_mb": round(in_win[-1], 1) if in_win else None,
                "versions": [names[v] for v in seen],
            }
        )
    # versions only move forward: a request sent after a response from version N had arrived is never
    # answered by a version older than N (version indices are in the order the client first saw them)
    sent, done = np.asarray(res["t_sent"], dtype=float), np.asarray(res["t_done"], dtype=float)
    have = (ver >= 0) & ~np.isnan(done) & ~np.isnan(sent)
    by_done = np.argsort(done[have], kind="stable")
    done_sorted = done[have][by_done]
    newest_so_far = np.maximum.accumulate(ver[have][by_done]) if have.any() else np.zeros(0, np.int64)
    pos = np.searchsorted(done_sorted, sent[have], side="left")  # responses completed before the send
    floor = np.where(pos > 0, newest_so_far[np.maximum(pos - 1, 0)], -1)
    older = int((ver[have] < floor).sum())
    return {"windows": windows, "older_version_answers": older}


# -- entry point ---------------------------------------------------------------------------------------------------
def run(args) -> dict[str, Any]:
    import httpx

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t_build = time.perf_counter()
    home, build = ensure_home(work, args.items, args.rebuild, args.seed)
    print(f"bundle ready in {time.perf_counter() - t_build:.1f}s: {build}", file=sys.stderr)
    first = build["version"]  # what LATEST names: the cached or the freshly published bundle
    ids = bundle_item_ids(home)
    histories = user_histories(ids, args.users, args.seed)
    duration = args.minutes * 60.0
    plan = {
        "rate": args.rate,
        "duration": duration,
        "seed": args.seed,
        "users": list(histories),
        "items": ids[: min(len(ids), 50_000)],
        "n_templates": 4096,
        "event_share": args.event_share,
        "guest_share": args.guest_share,
        "token": TOKEN,
    }
    del ids
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = home.parent / "server.log"
    proc = start_server(home, port, log_path, args.rate_limit)
    publishes: list[dict[str, Any]] = []
    rss: list[tuple[float, float]] = []
    try:
        t = time.perf_counter()
        wait_ready(url, proc, log_path)
        startup_s = time.perf_counter() - t
        seed_users(url, histories)
        reloads_before = server_metric(url, "relevance_bundle_reloads_total") or 0.0
        rss_start = _rss_mb(proc.pid)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        t0_wall = time.time() + 1.0
        client = ctx.Process(target=_client_process, args=(q, port, plan, t0_wall))
        client.start()
        publish_at = [duration * (i + 1) / (args.reloads + 1) for i in range(args.reloads)]
        pending: dict[str, Any] | None = None
        while time.time() < t0_wall + duration + 2.0:
            now = time.time() - t0_wall
            r = _rss_mb(proc.pid)
            if r is not None and now >= 0:
                rss.append((now, r))
            if proc.poll() is not None:
                raise RuntimeError(f"server exited during the soak: {log_path.read_text()[-2000:]}")
            if publish_at and now >= publish_at[0]:
                publish_at.pop(0)
                t_pub = time.time()
                version = republish(home)
                pending = {"version": version, "published_at_s": round(now, 1), "t": t_pub}
                publishes.append(pending)
            if pending is not None:
                try:
                    serving = httpx.get(f"{url}/v1/bundle", timeout=5).json()["version"]
                except httpx.HTTPError:
                    serving = None
                if serving == pending["version"]:
                    pending["served_after_s"] = round(time.time() - pending.pop("t"), 2)
                    pending = None
            time.sleep(1.0)
        res = q.get(timeout=duration + 300)
        client.join(timeout=30)
        rss_end = _rss_mb(proc.pid)
        reloads_after = server_metric(url, "relevance_bundle_reloads_total") or 0.0
        reload_failures = server_metric(url, "relevance_bundle_reload_failures_total") or 0.0
        dropped = sum(
            float(line.split()[-1])
            for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines()
            if line.startswith("relevance_landing_dropped_total{")
        )
    finally:
        stop_server(proc)
    for p in publishes:
        p.pop("t", None)
    summary = summarise(res, rss, args.window, duration)
    windows = summary["windows"]
    sent = len(res["ok"])
    failed = int(sent - sum(res["ok"]))
    lat = np.asarray(res["lat_ms"])[np.asarray(res["ok"], dtype=bool)]
    first_w, last_w = windows[0], windows[-1]
    after_first = first_w["rss_mb"]
    return {
        "bench": "soak",
        "minutes": args.minutes,
        "offered_rps": args.rate,
        "requests": sent,
        "failed": failed,
        "errors": res["errors"],
        "stale_connection_retries": res["stale_connection_retries"],
        "achieved_rps": round(sent / duration, 1),
        "p50_ms": _pct(lat, 50),
        "p95_ms": _pct(lat, 95),
        "p99_ms": _pct(lat, 99),
        "p99_drift": (
            round(last_w["p99_ms"] / first_w["p99_ms"], 2) if first_w["p99_ms"] and last_w["p99_ms"] else None
        ),
        "windows": windows,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_max_mb": round(max(r for _, r in rss), 1) if rss else None,
        "rss_growth_mb": round(rss_end - rss_start, 1) if rss_end and rss_start else None,
        "rss_growth_after_first_window_mb": round(rss_end - after_first, 1)
        if rss_end and after_first
        else None,
        "reloads_published": len(publishes),
        "reloads_seen": int(reloads_after - reloads_before),
        "reload_failures": int(reload_failures),
        "versions_answered": res["versions"],
        "older_version_answers": summary["older_version_answers"],
        "publishes": publishes,
        "first_version": first,
        "landing_dropped": int(dropped),
        "mix": {"event_share": args.event_share, "guest_share": args.guest_share, "users": args.users},
        "rate_limit": args.rate_limit,
        "items": args.items,
        "server_startup_s": round(startup_s, 2),
        "client_cpu_pct": round(100.0 * res["client_cpu_s"] / duration, 1),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "bundle": build,
    }
