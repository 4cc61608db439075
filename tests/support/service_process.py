"""``relevance serve`` as a real uvicorn process on 127.0.0.1, for the e2e service tests (one helper for
every test module that starts one: the plain e2e suite, the fault tests, the access tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from bench.processes import free_port, start_redis  # noqa: F401 - re-exported for the Redis fixture
from relevance_cli.commands.serve import serve_argv

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL_S = 0.2


def wait_for(pred, timeout: float = 30.0, step: float = 0.05, what: str = "the condition"):
    """``pred()``'s first truthy value, polling every ``step`` s; an AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Server:
    """One ``relevance serve`` process in its own session (so a SIGKILL reaches all of it).

    ``env`` adds/overrides ``RELEVANCE_*`` settings; ``port`` reuses a port (a restart after a kill keeps
    the URL). The process's stdout and stderr (every log line it writes) go to ``log_path`` (appended)."""

    def __init__(
        self,
        home: str | Path,
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        log_level: str = "warning",
        poll_s: float = POLL_S,
        workers: int = 1,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "RELEVANCE_HOME": str(home),
            "RELEVANCE_API_TOKEN": TOKEN,
            "RELEVANCE_PSEUDONYM_KEY": "e2e",
            "RELEVANCE_STATE_TTL_S": "1e10",
            "RELEVANCE_LANDING_FLUSH_S": "0.2",
            "RELEVANCE_SEED_FROM_LAKE": "0",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self._spawn(
            serve_argv(self.port, workers=workers, log_level=log_level, poll_interval=poll_s),
            full_env,
            log_path,
        )

    @classmethod
    def exact(cls, argv: list[str], env: dict[str, str], log_path: Path, port: int) -> Server:
        """A ``relevance serve`` command line run exactly as a user would type it, ``--port`` added: no
        token, TTL or seeding default of the test suite's, only ``env`` (the caller's environment)."""
        self = cls.__new__(cls)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._spawn([*argv, "--port", str(port)], env, log_path)
        return self

    def _spawn(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.log_path = log_path

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hook, no flush, no cleanup runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20
