"""``relevance generate``: write a synthetic marketplace (catalog, daily event files, ground truth) into
the artifact store, so the pipeline has a landing zone to ingest without any real data."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    from relevance_core.generator.config import PRESETS

    p = subparsers.add_parser(
        "generate",
        help="write a synthetic marketplace (catalog + daily events) into the landing zone",
        description=__doc__,
    )
    p.add_argument(
        "--preset", default="demo", choices=sorted(PRESETS), help="size and noise preset (default: demo)"
    )
    p.add_argument(
        "--out", default=None, help="store URI: a directory or s3://bucket/prefix (default: RELEVANCE_HOME)"
    )
    p.add_argument("--seed", type=int, default=None, help="generator seed (default: the preset's)")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=["csv", "jsonl", "parquet", "mixed"],
        default=None,
        help="event file format; mixed cycles csv, jsonl, parquet day by day",
    )
    p.add_argument(
        "--catalog-format",
        choices=["csv", "jsonl", "parquet"],
        default=None,
        help="catalog file format (default: the preset's)",
    )
    p.add_argument("--items", type=int, default=None, help="catalog size")
    p.add_argument("--users", type=int, default=None, help="number of users (default: the preset's)")
    p.add_argument("--events", type=int, default=None, help="exact number of valid event rows")
    p.add_argument("--days", type=int, default=None, help="number of days of events (default: the preset's)")
    p.add_argument("--start-date", default=None, help="first day, YYYY-MM-DD, not before 2026-01-01")
    p.add_argument(
        "--clean",
        action="store_true",
        help="remove landing/events, landing/catalog and generator_truth before writing",
    )
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from relevance_core.generator import preset, write_marketplace
    from relevance_core.settings import relevance_home
    from relevance_core.storage import store_from_uri

    cfg = preset(
        args.preset,
        seed=args.seed,
        format=args.fmt,
        catalog_format=args.catalog_format,
        n_items=args.items,
        n_users=args.users,
        n_events=args.events,
        n_days=args.days,
        start_date=args.start_date,
    )
    store = store_from_uri(args.out or relevance_home())
    report = write_marketplace(cfg, store, clean=args.clean)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    first, last = report.days[0].date, report.days[-1].date
    formats = ",".join(sorted({d.format for d in report.days}))
    print(f"wrote a synthetic marketplace to {report.base_uri} in {report.seconds:.1f} s")
    print(
        f"  catalog   {report.items:,} items ({report.items_new_in_window:,} listed during the window, "
        f"{report.items_sold:,} sold) -> {report.catalog_key}"
    )
    print(
        f"  events    {report.events:,} in {len(report.days)} days {first}..{last} ({formats}), "
        f"{report.sessions:,} sessions, {report.users:,} users"
    )
    print(
        f"  noise     {report.duplicates_injected:,} duplicates, {report.bot_events:,} bot events "
        f"({report.bots} bots), {report.malformed_injected:,} malformed lines"
    )
    print(f"  truth     {', '.join(report.truth_keys)}")
    return 0
