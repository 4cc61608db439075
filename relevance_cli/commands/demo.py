"""``relevance demo`` (what ``make demo`` runs): generate a marketplace, run the whole asset graph in this
process, publish a bundle, and show a few users' recent history next to what the bundle recommends them.

Steps, each a Dagster run on the same instance (``DAGSTER_HOME`` when set, so ``dagster dev`` shows the
runs afterwards; otherwise an ephemeral one):

1. ``relevance generate`` equivalent: the ``demo`` preset into ``RELEVANCE_HOME`` (landing zone).
2. ``items`` and every day of ``raw_events`` (one run per day: ingestion is per partition).
3. ``sessions`` + ``training_pairs`` over the whole date range in one run (their backfill policy is
   single-run: one Spark job, not one per day).
4. dbt models, ``two_tower_model``, ``item_embeddings``, ``faiss_index``, ``offline_evaluation`` and
   ``published_bundle`` with every asset check; the blocking checks gate the publish.

The model settings are sized so that the whole demo finishes in under 10 minutes on a 2-core laptop
(``--epochs`` and ``--quick`` trade quality for time).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="generate data, run the whole pipeline, publish, show recommendations",
        description=__doc__,
    )
    p.add_argument("--preset", default="demo", help="generator preset (default: demo)")
    p.add_argument("--seed", type=int, default=None, help="generator seed (default: the preset's)")
    p.add_argument(
        "--start-date",
        default=None,
        help="first day of the generated events, YYYY-MM-DD (default: the window ends yesterday, so the "
        "demo users' histories are recent and served personally)",
    )
    p.add_argument("--home", default=None, help="store URI (default: RELEVANCE_HOME)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs (early stopping may stop sooner)")
    p.add_argument("--users", type=int, default=2, help="how many users' recommendations to show (default 2)")
    p.add_argument(
        "--skip-generate",
        action="store_true",
        help="run the graph on the landing zone already there (your own data: docs/your-data.md)",
    )
    p.add_argument(
        "--verbose", action="store_true", help="show Dagster, Spark, dbt and Lightning output live"
    )
    p.add_argument("--log-file", default=None, help="where the details go (default: <home>/logs/demo-*.log)")
    p.set_defaults(func=run)


def demo_model_config(epochs: int) -> dict:
    """Training settings for the demo's time budget (< 10 minutes end to end on 2 CPU cores): a one-layer
    transformer, and at most 150 batches of 1,024 pairs per epoch (the model already clears 3× popularity
    after a fraction of the first epoch on the demo marketplace)."""
    return {
        "max_epochs": epochs,
        "limit_train_batches": 150,
        "patience": 1,
        "n_layers": 1,
        "hidden": 64,
        "batch_size": 1024,
        "max_val_examples": 5_000,
        "progress_bar": False,
    }


def run_pipeline(
    home: str,
    *,
    days: list[str],
    model_config: dict | None = None,
    run_config_extra: dict | None = None,
    instance=None,
    log=print,
    progress=None,
) -> dict[str, bool]:
    """Materialize every asset of the graph (all partitions, all checks) into ``home``; return
    ``{step: success}``. Used by the demo and by the full-graph integration test. ``log`` gets one line
    per failed step (and per step, except the per-day ingestion runs, which ``progress(days, desc)``
    may show as a bar instead)."""
    from relevance_assets.local_run import LocalRun

    run = LocalRun(home, instance=instance, log=log)
    if not run.execute("items", ["items"]).success:
        return run.results
    for day in (progress or (lambda it, desc: it))(days, "raw_events"):
        step = run.execute(f"raw_events {day}", ["raw_events"], quiet=progress is not None, partition_key=day)
        if not step.success:
            return run.results
    log(f"raw_events: {len(days)} days ingested ({days[0]}..{days[-1]})")
    pipeline = ["sessions", "training_pairs"]
    if not run.execute_range(f"sessions + training_pairs {days[0]}..{days[-1]}", pipeline, days).success:
        return run.results
    rest = [a for a in run.asset_names() if a not in ("items", "raw_events", *pipeline)]
    ops = dict(run_config_extra or {})
    if model_config:
        ops["two_tower_model"] = model_config
    log("model, index, evaluation, publish: running (training is the longest step; details in the log)")
    run.execute("model, index, evaluation, publish", rest, ops=ops)
    return run.results


def _outside_partitions(days: list[str]) -> str | None:
    """Why the landing days cannot run through the graph (none, or outside its daily partitions), said
    before any run starts rather than as a Dagster error half-way."""
    from relevance_assets.partitions import PARTITIONS_START, daily_partitions

    if not days:
        return "no landing days under landing/events/date=YYYY-MM-DD/: nothing to run (docs/your-data.md)"
    valid = set(daily_partitions.get_partition_keys())
    outside = [d for d in days if d not in valid]
    if not outside:
        return None
    return (
        f"landing days outside the graph's daily partitions ({PARTITIONS_START} to yesterday, UTC): "
        f"{', '.join(outside[:5])}{' ...' if len(outside) > 5 else ''}; set RELEVANCE_PARTITIONS_START to "
        "your first day for older data, and deliver a day once it is over"
    )


def show_recommendations(home: str, n_users: int = 2, k: int = 5, say=print) -> None:
    """A few test-period users: their last interactions and what the live bundle recommends them."""
    import pandas as pd

    from relevance_core import bundle as B
    from relevance_core.evaluation.runner import bundle_recommender, load_pairs
    from relevance_core.storage import store_from_uri

    store = store_from_uri(home)
    version = B.latest_version(store)
    if version is None:
        say("no bundle is published")
        return
    bdir, manifest = B.fetch(store, version)
    recommend = bundle_recommender(bdir)  # the served path: sources, ranker, seen items removed
    items = pd.read_parquet(bdir / B.ITEMS).set_index("item_id")
    pairs = load_pairs(store, "test")
    pairs = pairs[pairs["user_id"].notna()]
    if pairs.empty:
        pairs = load_pairs(store, "validation")
    latest = pairs.sort_values("target_ts").groupby("user_id").tail(1)
    latest = latest[latest["hist_item_ids"].map(len) >= 4]
    sample = latest.sample(n=min(n_users, len(latest)), random_state=7)
    recs = recommend(sample.rename(columns={"target_ts": "query_ts"}), k * 3)
    avail = items["available"].to_dict() if "available" in items else {}

    def label(item_id: str) -> str:
        if item_id not in items.index:
            return item_id
        row = items.loc[item_id]
        return f"{row['title']}  [{row['category_path']}]"

    m = manifest.metrics or {}
    shown_metrics = ", ".join(
        f"{name} {value:.3f}" for name, value in m.items() if name.split("@")[0] in ("hr", "ndcg", "mrr")
    )
    say(f"bundle {version}: {manifest.n_items:,} items, offline {shown_metrics or 'metrics n/a'}")
    for (_, q), rec in zip(sample.iterrows(), recs, strict=True):
        say(f"user {q['user_id']}: last 3 of their history, oldest first")
        hist = list(zip(q["hist_item_ids"], q["hist_event_types"], q["hist_age_s"], strict=False))[-3:]
        for item_id, ev, age in hist:
            say(f"    {ev:>12}  {label(item_id)}  ({age / 3600:.1f} h before)")
        shown = [i for i in rec if avail.get(i, True)][:k]
        hit = q["target_item_id"] in shown
        say("  recommended: " + ("(their next interaction is among them)" if hit else ""))
        for i, item_id in enumerate(shown, 1):
            say(f"    {i}. {label(item_id)}")


def run(args: argparse.Namespace) -> int:
    from relevance_cli.console import console, default_log_path
    from relevance_core import bundle as B
    from relevance_core.settings import relevance_home
    from relevance_core.storage import store_from_uri

    home = args.home or relevance_home()
    if "://" not in home:
        home = os.path.abspath(home)
    log_path = Path(args.log_file) if args.log_file else default_log_path("demo", home)
    if not args.verbose:
        print(f"relevance demo: details in {log_path} (--verbose shows them here)", flush=True)
    with console(log_path, verbose=args.verbose) as out:
        store = store_from_uri(home)
        if not args.skip_generate:
            from relevance_core.generator import ending_yesterday, preset, write_marketplace

            cfg = preset(args.preset, seed=args.seed)
            cfg = cfg.replace(start_date=args.start_date or ending_yesterday(cfg.n_days))
            report = write_marketplace(cfg, store, clean=True)
            days = [d.date for d in report.days]
            out.step(
                f"generated {report.items:,} items, {report.events:,} events, {days[0]}..{days[-1]}, "
                f"into {home}"
            )
        else:
            days = sorted(
                d.removeprefix("date=") for d in store.list_dirs("landing/events") if d.startswith("date=")
            )
            if problem := _outside_partitions(days):
                out.step(problem)
                return 2
        before = B.latest_version(store)
        results = run_pipeline(
            home,
            days=days,
            model_config=demo_model_config(args.epochs),
            log=out.step,
            progress=out.progress,
        )
        after = B.latest_version(store)
        if after is None or not all(results.values()):
            out.step(f"pipeline did not publish (LATEST {before} -> {after}); see the failures above")
            return 1
        out.step(f"published bundle {after}")
        show_recommendations(home, n_users=args.users, say=out.say)
        out.step("demo done. Next:")
    local = "://" not in home
    serve = "relevance serve" + (
        "" if not local or home == os.path.abspath(relevance_home()) else f" --home {home}"
    )
    print(f"  explorer:   .venv/bin/{serve}   then open http://localhost:8000/explorer")
    print("  API docs:   http://localhost:8000/docs   (same server)")
    print(
        f"  Dagster UI: DAGSTER_HOME={os.environ.get('DAGSTER_HOME', '$PWD/.dagster_home')} "
        ".venv/bin/dagster dev -w workspace.yaml   then open http://localhost:3000"
    )
    return 0
