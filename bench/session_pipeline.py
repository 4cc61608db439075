"""The session benchmark's pipeline: the converted sessions through the product's own graph.

The converted sessions go into the landing zone and the real code location runs over them
(:class:`~relevance_assets.local_run.LocalRun`, the driver the demo uses too): ``items`` and
``raw_events`` (ingestion, validation, quarantine), ``sessions`` and ``training_pairs`` (Spark, one run
over the whole partition range, as a backfill would), then ``two_tower_model`` → ``item_embeddings`` →
``faiss_index`` → ``learned_ranker``. Hyper-parameters travel as the assets' own run config, so anything
the benchmark can set, an operator can set in the Dagster UI, and nothing the assets do is bypassed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relevance_core.session_bench.convert import Layout
from relevance_core.storage import LocalStore

log = logging.getLogger(__name__)

#: what the benchmark materializes after the pipeline (the dbt models, evaluation and publishing are
#: left out: the benchmark scores the model version's own artifacts)
MODEL_ASSETS = ("two_tower_model", "item_embeddings", "faiss_index", "learned_ranker")


@dataclass
class PipelineRun:
    """What the pipeline produced: the model version and where its artifacts are, plus timings."""

    store: LocalStore
    model_version: str
    model_metrics: dict[str, Any]
    index_meta: dict[str, Any]
    pairs: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    #: the learned_ranker asset's metadata (gate, held-out figures, feature gains)
    ranker: dict[str, Any] = field(default_factory=dict)


def run_pipeline(
    store_root: str | Path,
    layout: Layout,
    *,
    pairs_config: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    index_config: dict[str, Any] | None = None,
    ranker_config: dict[str, Any] | None = None,
    spark_config: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    log_level: str = "WARNING",
) -> PipelineRun:
    """Materialize ingestion → pipeline → model assets over the converted landing zone in ``store_root``.

    ``pairs_config`` / ``model_config`` / ``index_config`` / ``ranker_config`` are the run config of
    ``training_pairs``, ``two_tower_model``, ``faiss_index`` and ``learned_ranker``; the split dates come
    from ``layout`` (validation sessions start on their own day; the test split is empty). ``log_level``
    is the Dagster console log level of the runs (a backfill of 20 days at DEBUG buries the result)."""
    from dagster_pyspark import LazyPySparkResource

    from relevance_assets.local_run import LocalRun, metadata
    from relevance_core import publishing as P
    from relevance_core.spark import spark_conf

    say = progress or log.info
    store = LocalStore(store_root)
    run = LocalRun(
        str(store.root),
        resources={"spark": LazyPySparkResource(spark_config=spark_conf(spark_config))},
        log_level=log_level,
        log=log.info,
    )
    seconds: dict[str, float] = {}

    def execute(key: str, assets: list[str], *, days: list[str] | None = None, **kwargs: Any):
        t0 = time.perf_counter()
        res = run.execute_range(key, assets, days, **kwargs) if days else run.execute(key, assets, **kwargs)
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0
        if not res.success:
            raise RuntimeError(f"materializing {assets} failed")
        return res

    say("materializing items")
    execute("items", ["items"])
    for i, day in enumerate(layout.days):
        say(f"materializing raw_events {day} ({i + 1}/{len(layout.days)})")
        execute("raw_events", ["raw_events"], partition_key=day)
    pairs_cfg = dict(pairs_config or {})
    pairs_cfg.setdefault("test_start", layout.test_start)
    pairs_cfg.setdefault("validation_start", layout.validation_start or layout.test_start)
    say(f"materializing sessions + training_pairs {layout.days[0]}..{layout.days[-1]}")
    res = execute(
        "sessions_pairs", ["sessions", "training_pairs"], days=layout.days, ops={"training_pairs": pairs_cfg}
    )
    pairs_md = metadata(res, "training_pairs")
    sess_md = metadata(res, "sessions")
    say(f"training_pairs: {pairs_md.get('pairs')} pairs, sessions: {sess_md.get('sessions')}")
    say(f"materializing {' → '.join(MODEL_ASSETS)}")
    ops = {
        "two_tower_model": dict(model_config or {}),
        "faiss_index": dict(index_config or {}),
        "learned_ranker": dict(ranker_config or {}),
    }
    res = execute("model_assets", list(MODEL_ASSETS), ops=ops)
    model_md = metadata(res, "two_tower_model")
    version = str(model_md["model_version"])
    metrics = dict(model_md.get("metrics") or {})
    for name in ("item_embeddings", "faiss_index"):
        seconds[name] = float(metadata(res, name).get("seconds", 0.0) or 0.0)
    seconds["train"] = float(metrics.get("train_seconds", 0.0) or 0.0)
    _, index_meta = P.load_index(store, version)
    return PipelineRun(
        store=store,
        model_version=version,
        model_metrics=metrics,
        index_meta=index_meta,
        pairs={
            "pairs": pairs_md.get("pairs"),
            "pairs_train": pairs_md.get("pairs_train"),
            "pairs_validation": pairs_md.get("pairs_validation"),
            "sessions": sess_md.get("sessions"),
            "events": sess_md.get("events"),
        },
        seconds=seconds,
        ranker=metadata(res, "learned_ranker"),
    )
