"""Faults injected into real runs (item 2): the process killed with SIGKILL in the middle of writing
a partition, and a Spark executor JVM killed in the middle of a distributed job.

* ``relevance ingest --date D`` runs in its own process group against a landing day large enough to
  take seconds; the whole group (Python driver *and* its JVM) gets SIGKILL, like an OOM kill or a lost
  node. Two kill points: while Spark writes the staged partition, and while the finished partition is
  being copied into the store (the copy is slowed down in the child so the kill lands mid-copy). After
  each kill the store must show the previous version of the partition, whole; a re-run must give exactly
  the rows of a clean run in a fresh store (compared sorted, so a duplicate or a lost row fails).
* ``build_sessions`` + ``build_training_pairs`` on ``local-cluster[2,1,1024]`` (a master and two executor
  JVMs): one executor gets SIGKILL while the sessions are being written. Spark reschedules the lost tasks
  (and recomputes the lost shuffle output) on the surviving/replacement executor; the job must succeed
  with output identical to a ``local[*]`` run. ``spark.task.maxFailures`` is set to 8 so a task that
  was on the killed executor and then hits a fetch failure still has attempts left (tasks lost with
  their executor are not counted as the task's failure, but fetch-failure retries of the stage are).

Service-side faults (killed during a reload, S3 unreachable) are tested with the service.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from support.lake import table_diff, write_raw_events

from relevance_core.ingest import ingest_events_day
from relevance_core.pipeline.pairs import build_training_pairs
from relevance_core.pipeline.sessionize import build_sessions
from relevance_core.storage import LocalStore

ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-04-02"
HEADER = "user_id,session_id,item_id,event_type,timestamp,device_type"
TYPES = ["view"] * 6 + ["click"] * 3 + ["impression"] * 3 + ["add_to_cart", "purchase", "teleport"]

#: Child process: ingest with the store's directory copy slowed down, logging each copied file, so the
#: parent can SIGKILL it in the middle of publishing the partition.
SLOW_PUBLISH = r"""
import shutil, sys, time
marker = sys.argv[1]
_copytree = shutil.copytree
def copytree(src, dst, *a, **k):
    def copy(s, d):
        r = shutil.copy2(s, d)
        with open(marker, "a") as f:
            f.write(str(d) + "\n")
        time.sleep(0.5)
        return r
    k["copy_function"] = copy
    return _copytree(src, dst, *a, **k)
shutil.copytree = copytree
from relevance_cli.main import main
sys.exit(main(sys.argv[2:]))
"""

CLUSTER_CHILD = r"""
import json, sys, time
from relevance_core.spark import get_spark
from relevance_core.storage import LocalStore
from relevance_core.pipeline.sessionize import build_sessions
from relevance_core.pipeline.pairs import build_training_pairs

root, start, end, last = sys.argv[1:5]
spark = get_spark({
    "spark.master": "local-cluster[2,1,1024]",
    "spark.executor.memory": "512m",
    "spark.sql.shuffle.partitions": "8",
    "spark.task.maxFailures": "8",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "false",
})
sc = spark.sparkContext
deadline = time.time() + 300
while sc._jsc.sc().getExecutorMemoryStatus().size() - 1 < 2 and time.time() < deadline:
    time.sleep(0.5)
print("READY", flush=True)
store = LocalStore(root)
s = build_sessions(spark, store, start, end)
p = build_training_pairs(spark, store, start, end, last_event_day=last)
print("RESULT " + json.dumps({"sessions": s.sessions, "pairs": p.pairs}), flush=True)
spark.stop()
"""


def _env(tmp: Path) -> dict[str, str]:
    import pyspark

    env = {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "PYTHONDONTWRITEBYTECODE": "1"}
    env["TMPDIR"] = str(tmp)  # the child's staging directories land here, where the test can watch them
    env.pop("RELEVANCE_SPARK_MASTER", None)
    return env


def _landing_csv(n: int, seed: int) -> str:
    rng = random.Random(seed)
    start = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    lines = [HEADER]
    for _ in range(n):
        u = rng.randrange(3000)
        ts = start + timedelta(milliseconds=rng.randrange(86_400_000))
        t = ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if rng.random() < 0.01:
            t = "not a time"
        lines.append(
            f"u{u},,i{rng.randrange(20000)},{rng.choice(TYPES)},{t},{rng.choice(['mobile', 'desktop', ''])}"
        )
    lines += lines[1:2001]  # exact duplicates
    return "\n".join(lines) + "\n"


def _rows(path: Path) -> list[tuple]:
    return sorted(tuple(str(v) for v in r.values()) for r in pq.read_table(path).to_pylist())


def _kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _wait_for(proc: subprocess.Popen, found, timeout: float = 600.0) -> bool:
    """Poll every 20 ms until ``found()`` or the process exits; True when found while it still ran."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if found():
            return proc.poll() is None
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def _visible_partition(store: LocalStore, table: str) -> list[tuple] | None:
    key = f"lake/{table}/date={DAY}"
    if not store.list(key):
        return None
    return _rows(store.path(key))


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_sigkill_mid_partition_write_then_rerun_gives_the_clean_data(spark, tmp_path):
    small, big = _landing_csv(2_000, seed=1), _landing_csv(200_000, seed=2)
    # the reference: a clean run over the final landing day, in a store of its own
    ref = LocalStore(tmp_path / "ref")
    ref.write_text(f"landing/events/date={DAY}/a.csv", small)
    ref.write_text(f"landing/events/date={DAY}/b.csv", big)
    clean = ingest_events_day(spark, ref, DAY)
    ref_events, ref_quarantine = (
        _visible_partition(ref, "raw_events"),
        _visible_partition(ref, "quarantine/raw_events"),
    )

    # the store under test holds a previous version of the partition (only a.csv had landed then)
    home = tmp_path / "home"
    store = LocalStore(home)
    store.write_text(f"landing/events/date={DAY}/a.csv", small)
    ingest_events_day(spark, store, DAY)
    old_events = _visible_partition(store, "raw_events")
    old_quarantine = _visible_partition(store, "quarantine/raw_events")
    store.write_text(f"landing/events/date={DAY}/b.csv", big)
    faults = 0

    # kill 1: while Spark writes the staged partition
    tmp1 = tmp_path / "tmp1"
    tmp1.mkdir()
    cmd = [sys.executable, "-m", "relevance_cli.main", "ingest", "--date", DAY, "--home", str(home)]
    proc = subprocess.Popen(
        cmd,
        env=_env(tmp1),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    hit = _wait_for(proc, lambda: any(tmp1.glob(f"relevance-ingest-{DAY}-*/events/_temporary")))
    if not hit:
        out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
        pytest.fail(f"the ingest finished before it could be killed mid-write: {out[-2000:]}")
    _kill_group(proc)
    faults += 1
    assert _visible_partition(store, "raw_events") == old_events  # the previous version, whole
    assert _visible_partition(store, "quarantine/raw_events") == old_quarantine

    # kill 2: in the middle of copying the finished partition into the store
    tmp2 = tmp_path / "tmp2"
    tmp2.mkdir()
    marker = tmp_path / "copied.txt"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_PUBLISH, str(marker), "ingest", "--date", DAY, "--home", str(home)],
        env=_env(tmp2),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    in_events_copy = lambda: marker.exists() and f"/lake/raw_events/.date={DAY}.new-" in marker.read_text()  # noqa: E731
    if not _wait_for(proc, in_events_copy):
        out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
        pytest.fail(f"the ingest finished before it could be killed mid-publish: {out[-2000:]}")
    _kill_group(proc)
    faults += 1
    # the half-copied directory exists, hidden; readers still see the previous partition, whole.
    # (Quarantine was published just before the events: the two are separate partitions, each whole.)
    assert list((home / "lake" / "raw_events").glob(f".date={DAY}.new-*"))
    assert _visible_partition(store, "raw_events") == old_events
    assert _visible_partition(store, "quarantine/raw_events") in (old_quarantine, ref_quarantine)

    # re-run → exactly the clean run's rows: nothing lost, nothing duplicated, nothing half-written
    again = ingest_events_day(spark, store, DAY)
    assert (again.rows_in, again.accepted, again.quarantined, again.duplicates_removed) == (
        clean.rows_in,
        clean.accepted,
        clean.quarantined,
        clean.duplicates_removed,
    )
    assert _visible_partition(store, "raw_events") == ref_events
    assert _visible_partition(store, "quarantine/raw_events") == ref_quarantine
    assert len(ref_events) == clean.accepted and clean.duplicates_removed >= 2000
    print(f"FAULTS sigkill: injected {faults}, survived {faults}, rows {clean.rows_in}, lost 0")


def _raw_events(root: Path, n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    start = datetime(2026, 4, 1, tzinfo=UTC)
    rows, seen = [], set()
    types = (
        ["view"] * 6 + ["click"] * 3 + ["impression"] * 4 + ["add_to_cart", "purchase", "add_to_favorites"]
    )
    for _ in range(n):
        u = rng.randrange(2000)
        row = {
            "user_id": None if u < 100 else f"u{u}",
            "session_id": f"s{rng.randrange(3)}" if u % 5 == 0 else None,
            "item_id": f"i{rng.randrange(5000)}",
            "event_type": rng.choice(types),
            "timestamp": start + timedelta(seconds=rng.randrange(2 * 86400)),
            "device_type": rng.choice([None, "mobile", "desktop"]),
        }
        key = tuple(row.values())
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return write_raw_events(root, rows)


def _executors(pid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if any("CoarseGrainedExecutorBackend" in part for part in p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_executor_killed_mid_job_the_job_still_succeeds(spark, tmp_path):
    cluster_root, local_root = tmp_path / "cluster", tmp_path / "local"
    days = _raw_events(cluster_root, 200_000)
    shutil.copytree(cluster_root / "lake", local_root / "lake")
    start, end, last = days[0], days[-1], days[-1]
    local = LocalStore(local_root)
    s = build_sessions(spark, local, start, end)
    p = build_training_pairs(spark, local, start, end, last_event_day=last)

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    log = tmp_path / "child.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLUSTER_CHILD, str(cluster_root), start, end, last],
            env=_env(tmp),
            cwd=ROOT,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            writing = lambda: any(tmp.glob("relevance-sessions-*/out/*"))  # noqa: E731
            if not _wait_for(proc, writing):
                pytest.fail("the job ended before an executor could be killed: " + log.read_text()[-3000:])
            victims = _executors(proc.pid)
            assert len(victims) >= 1, "no executor JVM found under the driver"
            victims[0].send_signal(signal.SIGKILL)
            killed_at = time.time()
            rc = proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-4000:]
    result = json.loads([x for x in text.splitlines() if x.startswith("RESULT ")][-1][len("RESULT ") :])
    assert "Lost executor" in text or "ExecutorLostFailure" in text or "lost worker" in text.lower(), text[
        -3000:
    ]
    assert time.time() >= killed_at
    assert (result["sessions"], result["pairs"]) == (s.sessions, p.pairs)
    for table in ("sessions", "training_pairs"):
        only_cluster, only_local, n = table_diff(table, cluster_root, local_root)
        assert n > 0 and only_cluster == 0 and only_local == 0, table
    print(f"FAULTS executor: injected 1, survived 1, sessions {s.sessions}, pairs {p.pairs}, lost 0")
