"""``relevance ingest`` and ``relevance import-diginetica``: the ingestion the ``raw_events`` / ``items``
assets run, from a shell, for a person checking a landing day without starting Dagster (same code, same
store, same quarantine)."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="validate landing files into the lake (events of given days and/or the catalog)",
        description=__doc__,
    )
    p.add_argument("--date", action="append", default=[], help="event day YYYY-MM-DD (repeatable)")
    p.add_argument("--all-days", action="store_true", help="every day found under landing/events/")
    p.add_argument("--catalog", action="store_true", help="also ingest landing/catalog/ into lake/items")
    p.add_argument("--home", default=None, help="store URI (default: RELEVANCE_HOME)")
    p.add_argument("--json", action="store_true", help="print each report as JSON")
    p.set_defaults(func=run_ingest)

    d = subparsers.add_parser(
        "import-diginetica",
        help="write the DIGINETICA raw files as canonical landing files",
        description="DIGINETICA (CIKM Cup 2016) views/purchases/categories → landing/events + landing/catalog.",
    )
    d.add_argument("source", help="the diginetica folder (or its raw/ folder)")
    d.add_argument("--home", default=None, help="store URI (default: RELEVANCE_HOME)")
    d.add_argument(
        "--shift-to", default="2026-01-01", help="move dates by whole weeks to start here ('' = keep)"
    )
    d.add_argument(
        "--purchases",
        choices=["viewed_sessions", "all", "none"],
        default="viewed_sessions",
        help="which purchases become events: those in sessions with views (default), all, or none",
    )
    d.add_argument(
        "--format",
        dest="fmt",
        choices=["parquet", "csv", "jsonl"],
        default="parquet",
        help="landing file format (default parquet)",
    )
    d.set_defaults(func=run_import)


def _store(home: str | None):

    from relevance_core.settings import relevance_home
    from relevance_core.storage import store_from_uri

    return store_from_uri(home or relevance_home())


def run_ingest(args: argparse.Namespace) -> int:
    from relevance_core.ingest import ingest_catalog, ingest_events_day
    from relevance_core.settings import LAYOUT
    from relevance_core.spark import get_spark

    store = _store(args.home)
    days = list(args.date)
    if args.all_days:
        days += [
            d.removeprefix("date=") for d in store.list_dirs(LAYOUT.events_landing) if d.startswith("date=")
        ]
    if not days and not args.catalog:
        print("nothing to do: give --date D, --all-days or --catalog")
        return 2
    reports = []
    if args.catalog:
        reports.append(ingest_catalog(store))
    if days:
        spark = get_spark()
        for day in sorted(set(days)):
            reports.append(ingest_events_day(spark, store, day))
    for r in reports:
        print(json.dumps(r.to_dict()) if args.json else r.summary())
    return 0


def run_import(args: argparse.Namespace) -> int:
    from relevance_core.adapters.diginetica import import_diginetica

    result = import_diginetica(
        args.source, _store(args.home), shift_to=args.shift_to or None, purchases=args.purchases, fmt=args.fmt
    )
    print(
        f"DIGINETICA: {result.views} views + {result.purchases} purchases over {len(result.days)} days "
        f"({result.first_day} … {result.last_day}, shifted {result.shift_days} days), "
        f"{result.items} items → {result.catalog_key}"
    )
    return 0
