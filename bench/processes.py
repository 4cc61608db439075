"""Server processes for benchmarks and tests: ``relevance serve`` and ``redis-server`` started on
127.0.0.1, waited for and stopped, the way an operator's supervisor would, so the benchmark and the tests
measure the same processes a deployment runs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    home: Path, port: int, workers: int, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``relevance serve`` on 127.0.0.1 in its own process; ``env`` adds or overrides ``RELEVANCE_*``."""
    from relevance_cli.commands.serve import serve_argv

    env = {
        **os.environ,
        "RELEVANCE_HOME": str(home),
        "RELEVANCE_API_TOKEN": TOKEN,
        "RELEVANCE_PSEUDONYM_KEY": "bench",
        "RELEVANCE_SEED_FROM_LAKE": "0",
        "RELEVANCE_POLL_INTERVAL_S": "60",
        **(env or {}),
    }
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the process for its lifetime
    return subprocess.Popen(
        serve_argv(port, workers=workers),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_redis(work_dir: Path, timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """A ``redis-server`` on 127.0.0.1 (no persistence) for a shared user state: (process, URL)."""
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server not found (apt-get install redis-server; `make test` installs it)")
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    log = open(work_dir / "redis.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        # latency-monitor: Redis notes any of its own events slower than 25 ms (read after the open loop)
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--latency-monitor-threshold", "25"],
        cwd=work_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.time() + timeout
    while True:
        try:
            client.ping()
            return proc, url
        except redis.exceptions.ConnectionError as e:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                tail = (work_dir / "redis.log").read_text()[-2000:]
                raise RuntimeError(f"redis-server did not start: {tail}") from e
            time.sleep(0.05)


def redis_latency_events(url: str) -> list[dict[str, Any]]:
    """What Redis's latency monitor noted (its own events slower than the threshold), then reset it."""
    import redis

    with redis.Redis.from_url(url) as r:
        events = r.execute_command("LATENCY", "LATEST") or []
        r.execute_command("LATENCY", "RESET")
    return [
        {
            "event": e[0].decode() if isinstance(e[0], bytes) else e[0],
            "at": int(e[1]),
            "ms": int(e[2]),
            "max_ms": int(e[3]),
        }
        for e in events
    ]


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (uvicorn's graceful shutdown), then SIGKILL if it has not gone in 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_ready(
    url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 900.0, workers: int = 1
) -> None:
    """Until ``workers`` distinct worker processes have answered ``/readyz`` (each on a fresh connection,
    which the kernel hands to a random listening worker): a load started while one worker is still
    loading its bundle would pin every connection to the others."""
    import httpx

    seen: set[int] = set()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                seen.add(r.json().get("worker"))
                if len(seen) >= workers:
                    return
                time.sleep(0.1)
                continue
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server did not become ready ({len(seen)} of {workers} workers answered)")


def drain(url: str, timeout: float = 120.0) -> None:
    """Wait until the server answers promptly again (a backlog left by an overloaded phase must not be
    measured by the next one)."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        t = time.perf_counter()
        try:
            httpx.get(f"{url}/healthz", timeout=30)
        except httpx.HTTPError:
            pass
        if time.perf_counter() - t < 0.05:
            return
        time.sleep(0.5)
