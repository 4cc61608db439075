"""Distributed proof: the same sessions/pairs code on ``local-cluster[2,1,1024]`` (a master and two executor
JVMs talking over the network, like a real cluster) writes the same data as ``local[*]``.

It runs in a subprocess because this process already holds a local SparkSession (one per JVM). With the
pip wheel of pyspark 4.3 nothing extra was needed here: pyspark's launcher exports its package directory
as ``SPARK_HOME`` to the JVM, and the local-cluster workers start executors from its ``bin/`` and
``jars/`` (no ``spark.driver.extraClassPath``). The test still sets ``SPARK_HOME`` explicitly so an
unrelated Spark installation on the machine cannot be picked up instead.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.lake import table_diff, write_raw_events

from relevance_core.pipeline.config import shift_day
from relevance_core.pipeline.pairs import build_training_pairs
from relevance_core.pipeline.sessionize import build_sessions
from relevance_core.storage import LocalStore

CHILD = r"""
import json, sys
from relevance_core.spark import get_spark
from relevance_core.storage import LocalStore
from relevance_core.pipeline.sessionize import build_sessions
from relevance_core.pipeline.pairs import build_training_pairs

root, start, end, last = sys.argv[1:5]
spark = get_spark({
    "spark.master": "local-cluster[2,1,1024]",
    "spark.executor.memory": "512m",
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.showConsoleProgress": "false",
})
sc = spark.sparkContext
store = LocalStore(root)
s = build_sessions(spark, store, start, end)
p = build_training_pairs(spark, store, start, end, last_event_day=last)
executors = sc._jsc.sc().getExecutorMemoryStatus().size() - 1  # minus the driver
print("RESULT " + json.dumps({"master": sc.master, "executors": executors, "sessions": s.sessions, "pairs": p.pairs}))
spark.stop()
"""


def _events(seed: int = 7, n: int = 4000) -> list[dict]:
    rng = random.Random(seed)
    start = datetime(2026, 4, 1, tzinfo=UTC)
    rows, seen = [], set()
    types = (
        ["view"] * 6 + ["click"] * 3 + ["impression"] * 4 + ["add_to_cart", "purchase", "add_to_favorites"]
    )
    for _ in range(n):
        u = rng.randrange(60)
        ts = start + timedelta(seconds=rng.randrange(3 * 86400))
        row = {
            "user_id": None if u < 8 else f"u{u}",
            "session_id": (f"s{rng.randrange(3)}" if u % 4 == 0 else None),
            "item_id": f"i{rng.randrange(200)}",
            "event_type": rng.choice(types),
            "timestamp": ts,
            "device_type": rng.choice([None, "mobile", "desktop"]),
        }
        key = tuple(row.values())
        if key not in seen:
            seen.add(key)
            rows.append(row)
    # one bot user-day
    rows += [
        {
            **rows[0],
            "user_id": "bot",
            "session_id": None,
            "timestamp": start + timedelta(hours=5, milliseconds=100 * k),
        }
        for k in range(200)
    ]
    return rows


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_local_cluster_matches_local(spark, tmp_path):
    rows = _events()
    cluster_root, local_root = tmp_path / "cluster", tmp_path / "local"
    days = write_raw_events(cluster_root, rows)
    assert write_raw_events(local_root, rows) == days
    start, end, last = days[0], shift_day(days[-1], 1), days[-1]

    local_store = LocalStore(local_root)
    s = build_sessions(spark, local_store, start, end)
    p = build_training_pairs(spark, local_store, start, end, last_event_day=last)
    assert s.sessions > 100 and p.pairs > 100 and s.bot_events == 200

    import pyspark

    env = {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("RELEVANCE_SPARK_MASTER", None)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(cluster_root), start, end, last],
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        cwd=Path(__file__).resolve().parents[2],
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    info = json.loads(lines[-1][len("RESULT ") :])
    assert info["master"] == "local-cluster[2,1,1024]" and info["executors"] == 2
    assert (info["sessions"], info["pairs"]) == (s.sessions, p.pairs)

    for table in ("sessions", "training_pairs", "quarantine/sessions"):
        only_cluster, only_local, n = table_diff(table, cluster_root, local_root)
        assert n > 0 and only_cluster == 0 and only_local == 0, table
