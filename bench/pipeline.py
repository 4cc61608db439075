"""raw_events → sessions → training_pairs on Spark vs the same rules as plain DuckDB SQL, same input.

The input is the synthetic marketplace (``relevance_core.generator``, the ``bench`` preset scaled to
``--events``), deduplicated and written as ``lake/raw_events/date=D`` Parquet the way the ``raw_events``
asset leaves it; generating and writing it is not timed. Both engines then write their sessions and
pairs as Parquet. Spark's time is split into JVM start and work so a reader can see what dominates on
a small machine; ``events_per_s`` is end to end (JVM start included), as a Dagster run would see it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

BENCH_NAME = "pipeline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000_000, help="events to generate (default 10M)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--shuffle-partitions", type=int, default=8, help="spark.sql.shuffle.partitions")
    parser.add_argument("--driver-memory", default="6g", help="spark.driver.memory")
    parser.add_argument("--workdir", default=None, help="where the lake goes (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--skip-reference", action="store_true", help="time Spark only")


class PeakRss:
    """Samples the RSS of this process (driver + DuckDB) and of its children (the JVM) every 200 ms."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak_self = 0
        self.peak_children = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                me = self.proc.memory_info().rss
                kids = 0
                for c in self.proc.children(recursive=True):
                    try:
                        kids += c.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_self = max(self.peak_self, me)
                self.peak_children = max(self.peak_children, kids)
            except psutil.Error:
                pass
            self._stop.wait(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def reset(self) -> tuple[float, float]:
        out = (self.peak_self / 2**20, self.peak_children / 2**20)
        self.peak_self = self.peak_children = 0
        return out


def _marketplace_config(n_events: int, seed: int):
    from relevance_core.generator import preset

    scale = n_events / 10_000_000
    return preset(
        "bench",
        n_events=n_events,
        n_users=max(1_000, int(400_000 * scale)),
        n_items=max(5_000, int(1_000_000 * scale)),
        seed=seed,
    )


def write_raw_events(events, root: Path) -> tuple[int, list[str]]:
    """Exact duplicates removed and one directory per UTC day, as ``raw_events`` writes them."""
    import duckdb

    con = duckdb.connect()
    con.register("gen_events", events)
    con.execute("SET TimeZone = 'UTC'").fetchall()
    out = root / "lake" / "raw_events"
    out.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"""COPY (SELECT *, CAST(timestamp AS DATE) AS date FROM (SELECT DISTINCT * FROM gen_events))
            TO '{out}' (FORMAT parquet, PARTITION_BY (date), OVERWRITE_OR_IGNORE)"""
    ).fetchall()
    n = con.execute(f"SELECT count(*) FROM read_parquet('{out}/*/*.parquet')").fetchall()[0][0]
    days = sorted(p.name.removeprefix("date=") for p in out.iterdir() if p.name.startswith("date="))
    con.close()
    return int(n), days


def run_reference(raw_root: Path, out: Path, last_day: str) -> dict:
    import duckdb

    from relevance_core.pipeline.reference import reference_pipeline

    t0 = time.perf_counter()
    con = duckdb.connect()
    files = sorted(str(p) for p in (raw_root / "lake" / "raw_events").rglob("*.parquet"))
    sessions, pairs = reference_pipeline(con, files, last_event_day=last_day)
    out.mkdir(parents=True, exist_ok=True)
    # Materialise the sessions once (pairs read them), as the Spark path reads its written sessions.
    con.execute("CREATE TABLE ref_sessions_t AS SELECT * FROM ref_sessions").fetchall()
    con.execute(f"COPY ref_sessions_t TO '{out}/sessions' (FORMAT parquet, PARTITION_BY (date))").fetchall()
    t_sessions = time.perf_counter() - t0
    from relevance_core.pipeline.config import PairsConfig
    from relevance_core.pipeline.reference import reference_pairs_sql

    val, test = PairsConfig().split_dates(last_day)
    con.execute(
        f"COPY ({reference_pairs_sql('ref_sessions_t', PairsConfig(), val, test)}) TO '{out}/pairs' "
        "(FORMAT parquet, PARTITION_BY (date))"
    ).fetchall()
    seconds = time.perf_counter() - t0
    n_sessions = con.execute("SELECT count(*) FROM ref_sessions_t").fetchall()[0][0]
    n_pairs = con.execute(f"SELECT count(*) FROM read_parquet('{out}/pairs/*/*.parquet')").fetchall()[0][0]
    del sessions, pairs
    con.close()
    return {
        "seconds": seconds,
        "sessions_seconds": t_sessions,
        "sessions": int(n_sessions),
        "pairs": int(n_pairs),
    }


def run(args) -> dict:
    from relevance_core.generator import generate_tables
    from relevance_core.pipeline.config import shift_day
    from relevance_core.storage import LocalStore

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="relevance-bench-pipeline-"))
    result: dict = {"bench": BENCH_NAME}
    try:
        with PeakRss() as rss:
            t0 = time.perf_counter()
            cfg = _marketplace_config(args.events, args.seed)
            _items, events, _truth = generate_tables(cfg)
            del _items, _truth
            n_events, days = write_raw_events(events, work)
            del events
            result["generate_s"] = round(time.perf_counter() - t0, 2)
            rss.reset()

            # -- Spark --------------------------------------------------------------------------------------
            from relevance_core.pipeline.pairs import build_training_pairs
            from relevance_core.pipeline.sessionize import build_sessions
            from relevance_core.spark import get_spark

            t_spark = time.perf_counter()
            spark = get_spark(
                {
                    "spark.sql.shuffle.partitions": str(args.shuffle_partitions),
                    "spark.default.parallelism": str(args.shuffle_partitions),
                    "spark.driver.memory": args.driver_memory,
                    "spark.ui.showConsoleProgress": "false",
                }
            )
            spark.range(1).count()  # the JVM and the executor threads are really up
            jvm_start = time.perf_counter() - t_spark
            store = LocalStore(work)
            start, end = days[0], shift_day(days[-1], 1)
            s = build_sessions(spark, store, start, end)
            p = build_training_pairs(spark, store, start, end, last_event_day=days[-1])
            spark_total = time.perf_counter() - t_spark
            spark.stop()
            driver_mb, jvm_mb = rss.reset()

            ref = None
            ref_mb = 0.0
            if not args.skip_reference:
                ref = run_reference(work, work / "reference", days[-1])
                ref_mb, _ = rss.reset()
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    eps = n_events / spark_total
    result.update(
        {
            "events": n_events,
            "days": len(days),
            "events_per_s": round(eps, 1),
            "events_per_s_excluding_jvm_start": round(n_events / (spark_total - jvm_start), 1),
            "duckdb_reference_events_per_s": round(n_events / ref["seconds"], 1) if ref else None,
            "ratio": round(eps / (n_events / ref["seconds"]), 4) if ref else None,
            "spark_seconds": round(spark_total, 2),
            "spark_breakdown_s": {
                "jvm_start": round(jvm_start, 2),
                "sessions": round(s.seconds, 2),
                "training_pairs": round(p.seconds, 2),
            },
            "duckdb_reference_seconds": round(ref["seconds"], 2) if ref else None,
            "duckdb_reference_breakdown_s": (
                {
                    "sessions": round(ref["sessions_seconds"], 2),
                    "training_pairs": round(ref["seconds"] - ref["sessions_seconds"], 2),
                }
                if ref
                else None
            ),
            "sessions": s.sessions,
            "pairs": p.pairs,
            "bot_events": s.bot_events,
            "pairs_per_split": p.pairs_per_split,
            "counts_match_reference": (ref["sessions"], ref["pairs"]) == (s.sessions, p.pairs)
            if ref
            else None,
            "peak_rss_mb": {
                "driver_python": round(driver_mb, 1),
                "jvm": round(jvm_mb, 1),
                "spark_total": round(driver_mb + jvm_mb, 1),
                "duckdb_reference_process": round(ref_mb, 1),
            },
            "cpu_count": os.cpu_count(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "goal_events_per_s": 100_000,
        }
    )
    return result
