"""Synthetic marketplace generation + landing-zone writing (1M items, 10M events < 60 s).

Reference in the same run: ``pyarrow.parquet.write_table`` of an equally sized random event table (same
schema, same id widths) to the same disk, i.e. the floor of merely writing that much Parquet. ``ratio`` =
generate-and-write seconds / that floor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default="bench", help="generator preset (default: bench = 1M items, 10M events)"
    )
    parser.add_argument("--items", type=int, default=None, help="catalog size (default: the bench preset's)")
    parser.add_argument("--users", type=int, default=None, help="number of users (default: the preset's)")
    parser.add_argument("--events", type=int, default=None, help="valid event rows (default: the preset's)")
    parser.add_argument("--days", type=int, default=None, help="days of events (default: the preset's)")
    parser.add_argument(
        "--format",
        dest="fmt",
        default=None,
        choices=["csv", "jsonl", "parquet", "mixed"],
        help="event file format (default: the preset's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--out", default=None, help="directory to write into (default: a temporary one, removed)"
    )


def _reference_table(n_events: int, n_items: int, n_users: int, n_sessions: int, seed: int):
    """Random events with the generator's schema and id widths: what the floor writes."""
    import numpy as np
    import pyarrow as pa

    from relevance_core.generator import vocabulary as V
    from relevance_core.generator.strings import format_ids, id_width, take_strings
    from relevance_core.schemas import EVENT_ARROW_SCHEMA, EVENT_TYPES, TS

    rng = np.random.default_rng(seed + 1)
    ts = np.sort(rng.integers(1_767_571_200_000, 1_767_571_200_000 + 28 * 86_400_000, size=n_events))
    return pa.table(
        {
            "user_id": format_ids("u", rng.integers(0, n_users, size=n_events), id_width(n_users)),
            "session_id": format_ids("s", rng.integers(0, n_sessions, size=n_events), id_width(n_sessions)),
            "item_id": format_ids("i", rng.integers(0, n_items, size=n_events), id_width(n_items)),
            "event_type": take_strings(EVENT_TYPES, rng.integers(0, 6, size=n_events)),
            "timestamp": pa.array(ts * 1000, type=TS),
            "device_type": take_strings(V.DEVICE_TYPES, rng.integers(0, 3, size=n_events)),
        },
        schema=EVENT_ARROW_SCHEMA,
    )


def run(args: argparse.Namespace) -> dict:
    import pyarrow.parquet as pq

    from relevance_core.generator import generate_tables, preset, write_marketplace
    from relevance_core.storage import LocalStore

    cfg = preset(
        args.preset,
        n_items=args.items,
        n_users=args.users,
        n_events=args.events,
        n_days=args.days,
        format=args.fmt,
        seed=args.seed,
    )
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="relevance-bench-generate-"))
    try:
        store = LocalStore(base / "store")
        c0, t0 = time.process_time(), time.perf_counter()
        tables = generate_tables(cfg)
        t1 = time.perf_counter()
        report = write_marketplace(cfg, store, clean=True, tables=tables)
        c2, t2 = time.process_time(), time.perf_counter()
        n_sessions = report.sessions
        del tables

        ref = _reference_table(cfg.n_events, cfg.n_items, cfg.n_users, n_sessions, cfg.seed)
        rc0, r0 = time.process_time(), time.perf_counter()
        pq.write_table(ref, base / "reference.parquet", compression="snappy")
        ref_seconds = time.perf_counter() - r0
        ref_cpu = time.process_time() - rc0
        ref_bytes = (base / "reference.parquet").stat().st_size
        seconds = t2 - t0
        return {
            "benchmark": "generate",
            "preset": args.preset,
            "format": cfg.format,
            "items": report.items,
            "events": report.events,
            "users": report.users,
            "sessions": n_sessions,
            "days": cfg.n_days,
            "seconds": round(seconds, 3),
            "generate_seconds": round(t1 - t0, 3),
            "write_seconds": round(t2 - t1, 3),
            "events_per_s": round(report.events / seconds, 1),
            "bytes_written": sum(d.bytes for d in report.days),
            "reference": "pyarrow.parquet.write_table of an equally sized random event table (write-only floor)",
            "reference_seconds": round(ref_seconds, 3),
            "reference_bytes": ref_bytes,
            "ratio": round(seconds / ref_seconds, 2) if ref_seconds > 0 else None,
            # CPU seconds (all threads) are far less sensitive to other jobs on a shared machine than wall time
            "cpu_seconds": round(c2 - c0, 3),
            "reference_cpu_seconds": round(ref_cpu, 3),
            "cpu_ratio": round((c2 - c0) / ref_cpu, 2) if ref_cpu > 0 else None,
            "under_60s": seconds < 60.0,
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        if not args.out:
            shutil.rmtree(base, ignore_errors=True)
