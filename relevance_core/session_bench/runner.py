"""Run the product's own pipeline on a session benchmark and answer its test rows the way the service does.

Why it is built like this:

* **The product, not a side script.** The converted sessions go into the landing zone, and the Dagster
  assets are materialized in-process with ``dg.materialize`` on one instance: ``items`` and
  ``raw_events`` (ingestion, validation, quarantine), ``sessions`` and ``training_pairs`` (Spark, one run
  over the whole partition range, as a backfill would), then ``two_tower_model`` → ``item_embeddings`` →
  ``faiss_index``. Hyper-parameters travel as the assets' own run config, so anything the benchmark can
  set, an operator can set in the Dagster UI, and nothing the assets do is bypassed.
* **Serving path.** Each test prefix is encoded by the *exported* TorchScript user tower the bundle would
  ship (``TowerRetriever``, the class the offline evaluation and the service path share) and answered by
  the FAISS index the ``faiss_index`` asset built. The benchmark's protocol lets an item already in the
  prefix be the answer, so the seen-item filter is off (``exclude_seen=False``).
* **Same features at train and serve time.** Prefix clicks get the event type and the ages the
  ``training_pairs`` asset computed for the converted sessions (``convert.history_ages``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relevance_core.session_bench.convert import Layout, history_ages
from relevance_core.storage import LocalStore

log = logging.getLogger(__name__)


@dataclass
class PipelineRun:
    """What the pipeline produced: the model version and where its artifacts are, plus timings."""

    store: LocalStore
    model_version: str
    model_dir: Path
    model_metrics: dict[str, Any]
    index_meta: dict[str, Any]
    pairs: dict[str, Any]
    model_step: str = "dagster"
    seconds: dict[str, float] = field(default_factory=dict)
    #: the learned_ranker asset's metadata (gate, held-out figures, feature gains)
    ranker: dict[str, Any] = field(default_factory=dict)


def _metadata(result, asset: str) -> dict[str, Any]:
    """Materialization metadata of ``asset`` in a materialize result, as plain values."""
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.to_user_string() == asset:
            return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return {}


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

    ``pairs_config`` / ``model_config`` / ``index_config`` are the run config of ``training_pairs``,
    ``two_tower_model`` and ``faiss_index`` (their ``dg.Config`` fields); the split dates come from
    ``layout`` (validation sessions start on their own day; the test split is empty). ``log_level`` is
    the Dagster console log level of the runs (a backfill of 20 days at DEBUG buries the result)."""
    import dagster as dg
    from dagster_pyspark import LazyPySparkResource

    from relevance_assets.defs.ingestion.assets import items, raw_events
    from relevance_assets.defs.pipeline.assets import sessions, training_pairs
    from relevance_assets.defs.serving.assets import faiss_index, item_embeddings
    from relevance_assets.defs.serving.ranking import learned_ranker
    from relevance_assets.resources import StorageResource
    from relevance_core import publishing as P
    from relevance_core.spark import spark_conf

    say = progress or log.info
    store = LocalStore(store_root)
    instance = dg.DagsterInstance.ephemeral()
    resources = {
        "storage": StorageResource(base_uri=str(store.root)),
        "spark": LazyPySparkResource(spark_config=spark_conf(spark_config)),
    }
    seconds: dict[str, float] = {}
    loggers = {"console": {"config": {"log_level": log_level}}}

    def materialize(assets, *, key: str, run_config: dict[str, Any] | None = None, **kwargs):
        t0 = time.perf_counter()
        rc = dict(run_config or {}) | {"loggers": loggers}
        res = dg.materialize(assets, instance=instance, resources=resources, run_config=rc, **kwargs)
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0
        if not res.success:
            raise RuntimeError(f"materializing {[a.key.to_user_string() for a in assets]} failed")
        return res

    say("materializing items")
    materialize([items], key="items")
    for i, day in enumerate(layout.days):
        say(f"materializing raw_events {day} ({i + 1}/{len(layout.days)})")
        materialize([raw_events], key="raw_events", partition_key=day)
    pairs_cfg = dict(pairs_config or {})
    pairs_cfg.setdefault("test_start", layout.test_start)
    pairs_cfg.setdefault("validation_start", layout.validation_start or layout.test_start)
    say(f"materializing sessions + training_pairs {layout.days[0]}..{layout.days[-1]}")
    res = materialize(
        [sessions, training_pairs],
        key="sessions_pairs",
        tags={
            "dagster/asset_partition_range_start": layout.days[0],
            "dagster/asset_partition_range_end": layout.days[-1],
        },
        run_config={"ops": {"training_pairs": {"config": pairs_cfg}}},
    )
    pairs_md = _metadata(res, "training_pairs")
    sess_md = _metadata(res, "sessions")
    say(f"training_pairs: {pairs_md.get('pairs')} pairs, sessions: {sess_md.get('sessions')}")
    t0 = time.perf_counter()
    model_cfg = dict(model_config or {})
    try:
        from relevance_assets.defs.model.two_tower import two_tower_model
    except Exception as e:  # noqa: BLE001 - see train_model_direct
        say(
            f"two_tower_model asset unavailable ({type(e).__name__}: {str(e).strip()[:120]}); training directly"
        )
        model_step = f"direct: the two_tower_model asset module failed to import ({type(e).__name__})"
        version, metrics = train_model_direct(store, model_cfg)
        model_assets = [item_embeddings, faiss_index, learned_ranker]
        seconds["train_step"] = time.perf_counter() - t0
    else:
        model_step = "dagster"
        model_assets = [two_tower_model, item_embeddings, faiss_index, learned_ranker]
    names = " → ".join(a.key.to_user_string() for a in model_assets)
    say(f"materializing {names}")
    ops: dict[str, Any] = {
        "faiss_index": {"config": dict(index_config or {})},
        "learned_ranker": {"config": dict(ranker_config or {})},
    }
    if model_step == "dagster":
        ops["two_tower_model"] = {"config": model_cfg}
    res = dg.materialize(
        model_assets, instance=instance, resources=resources, run_config={"ops": ops, "loggers": loggers}
    )
    if not res.success:
        raise RuntimeError(f"materializing {names} failed")
    if model_step == "dagster":
        model_md = _metadata(res, "two_tower_model")
        version = str(model_md["model_version"])
        metrics = dict(model_md.get("metrics") or {})
    for name in ("item_embeddings", "faiss_index"):
        seconds[name] = float(_metadata(res, name).get("seconds", 0.0) or 0.0)
    ranker_md = _metadata(res, "learned_ranker")
    seconds["model_assets"] = time.perf_counter() - t0
    seconds["train"] = float(metrics.get("train_seconds", 0.0) or 0.0)
    _, index_meta = P.load_index(store, version)
    return PipelineRun(
        store=store,
        model_version=version,
        model_dir=store.local_dir(P.model_key(version)),
        model_metrics=dict(metrics),
        model_step=model_step,
        index_meta=index_meta,
        pairs={
            "pairs": pairs_md.get("pairs"),
            "pairs_train": pairs_md.get("pairs_train"),
            "pairs_validation": pairs_md.get("pairs_validation"),
            "sessions": sess_md.get("sessions"),
            "events": sess_md.get("events"),
        },
        seconds=seconds,
        ranker=ranker_md,
    )


def train_model_direct(store: LocalStore, model_config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What the ``two_tower_model`` asset does, step for step, for when its module cannot be imported.

    Same inputs (every ``training_pairs`` partition, the ``items`` catalog), the same training entry
    point (``train_two_tower``) and the same outputs (``artifacts/models/<version>/`` via
    ``save_artifacts`` + ``replace_dir``, then the ``LATEST`` pointer), so ``item_embeddings`` and
    ``faiss_index`` downstream run unchanged on it. Only the Dagster wrapper is skipped."""
    import tempfile

    from relevance_core import publishing as P
    from relevance_core.bundle import new_version
    from relevance_core.model.config import TwoTowerConfig
    from relevance_core.model.train import save_artifacts, train_two_tower
    from relevance_core.pipeline.pairs import read_training_pairs

    values = dict(model_config)
    dev = values.get("devices")
    if dev is not None and str(dev).isdigit():
        values["devices"] = int(dev)
    cfg = TwoTowerConfig.from_dict(values)
    version = new_version()
    with tempfile.TemporaryDirectory(prefix="relevance-model-") as tmp:
        result = train_two_tower(
            read_training_pairs(store), P.load_catalog(store), cfg, work_dir=Path(tmp) / "work"
        )
        if result is None:
            raise RuntimeError("training ended without a result on rank 0")
        result.metrics["model_version"] = version
        out = Path(tmp) / "model"
        save_artifacts(result, out)
        store.replace_dir(out, P.model_key(version))
        store.write_text(P.MODEL_POINTER, version + "\n")
    return version, dict(result.metrics)


def serve_predictions(
    run: PipelineRun, prefixes: Sequence[Sequence[str]], k: int, spacing_s: float
) -> dict[str, list[list[str]]]:
    """Top-``k`` per prefix through the serving path (user tower → FAISS → candidate sources → ranker;
    seen items allowed, as the protocol wants), with the same bundle's retrieval-only order and each
    candidate source alone beside it: ``{"served", "retrieval_only", "covisit", "history", "popular",
    "union"}`` ("union": every source's candidates in retrieval order, ANN first)."""
    from relevance_core import publishing as P
    from relevance_core.evaluation.retrieval import TowerRetriever
    from relevance_core.ranking.batch import orders_by_source
    from relevance_core.ranking.build import batch_inputs, load_ranking_stage

    index, _ = P.load_index(run.store, run.model_version)
    retriever = TowerRetriever.from_dir(run.model_dir, index=index)
    retriever.batch_size = 2048
    _, emb, _ = P.read_embeddings(run.store, run.model_version)
    item_ids = [str(i) for i in index.item_ids.tolist()]
    stage = load_ranking_stage(run.store, run.model_version, item_ids)
    frame = pd.DataFrame(
        {
            "hist_item_ids": [list(p) for p in prefixes],
            "hist_event_types": [["view"] * len(p) for p in prefixes],
            "hist_age_s": [history_ages(len(p), spacing_s) for p in prefixes],
        }
    )
    inp = batch_inputs(frame, retriever, index, emb, max(stage.cfg.ann_k, k))
    ids = index.item_ids
    return {
        name: [[str(ids[r]) for r in top] for top in lists]
        for name, lists in orders_by_source(stage, inp, k).items()
    }


def hit_and_mrr(lists: Sequence[Sequence[str]], labels: Sequence[str], k: int) -> tuple[float, float]:
    """HR@k and MRR@k in % with the project's metric functions (one relevant item per row)."""
    from relevance_core.evaluation.metrics import hit_rate_at_k, mrr_at_k

    if not labels:
        return 0.0, 0.0
    hr = np.mean([hit_rate_at_k(r, {lab: 1.0}, k) for r, lab in zip(lists, labels, strict=True)])
    mrr = np.mean([mrr_at_k(r, {lab: 1.0}, k) for r, lab in zip(lists, labels, strict=True)])
    return round(float(hr) * 100, 2), round(float(mrr) * 100, 2)
