"""What a long CLI command shows on the terminal: one line per step with the elapsed time, a progress
bar where a step repeats, and nothing else.

Dagster's run logs, dbt's test lines, Spark's JVM output, Lightning's tips and library warnings all
matter when something breaks and drown the few lines that matter when nothing does. So, unless
``verbose``, file descriptors 1 and 2 are pointed at a log file for the duration of the command: that
catches Python loggers and ``print``, child processes (the JVM) and C libraries alike, which redirecting
``sys.stdout`` alone would not. The console keeps its own copy of the original terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")


class Console:
    """Step lines and progress bars on the terminal; every other output in ``log_path``."""

    def __init__(self, term: IO[str], log: IO[bytes] | None, t0: float):
        self.term = term
        self.log = log
        self.t0 = t0

    def step(self, msg: str) -> None:
        self.term.write(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}\n")
        self.term.flush()
        if self.log is not None:  # the log file reads as a whole story, step lines included
            self.log.write(f"=== {msg}\n".encode())

    def say(self, msg: str = "") -> None:
        self.term.write(msg + "\n")
        self.term.flush()

    def progress(self, items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, file=self.term, leave=False, dynamic_ncols=True)


def default_log_path(command: str, home: str | None = None) -> Path:
    """``<home>/logs/<command>-<UTC time>.log`` for a local store, else under the current directory."""
    base = Path(home) if home and "://" not in home else Path.cwd() / ".relevance"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return base / "logs" / f"{command}-{stamp}.log"


@contextmanager
def console(log_path: Path, *, verbose: bool = False) -> Iterator[Console]:
    """Everything written to fd 1/2 inside goes to ``log_path`` (``verbose``: to the terminal, as usual)."""
    t0 = time.perf_counter()
    if verbose:
        yield Console(sys.stdout, None, t0)
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    term = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield Console(term, log, t0)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            term.close()
