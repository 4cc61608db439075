"""``item_embeddings`` → ``faiss_index`` → ``offline_evaluation`` → ``published_bundle``.

Thin wrappers around ``relevance_core`` (index, evaluation, publishing). Each step keeps its output in the
artifact store under the model version it was computed for (``artifacts/embeddings|index|evaluation/<v>/``),
so steps can be re-run one at a time and the CLI, benchmarks and service read exactly what was built.

Gates: ``faiss_index`` has a blocking ANN-recall check; ``offline_evaluation`` has blocking "beats the
best baseline" and "not worse than the published bundle" checks. A failed blocking check stops the run
before ``published_bundle``, and ``published_bundle`` re-applies the same gates itself, so materializing
it on its own cannot publish an unchecked model either. Either way ``artifacts/LATEST`` is untouched.
"""

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from relevance_assets.metadata import png_markdown
from relevance_assets.resources import StorageResource
from relevance_core import bundle as B
from relevance_core import publishing as P
from relevance_core.evaluation import gates as G
from relevance_core.index import FLAT_CROSSOVER, MIN_ANN_SPEEDUP, RECALL_TARGET, TUNING_MARGIN
from relevance_core.storage import ArtifactStore

MODEL_GROUP = "model"
SERVING_GROUP = "serving"
MODEL_ASSET = dg.AssetKey("two_tower_model")

#: Check names (constants, so tests and the UI refer to the same thing).
CHECK_ANN_RECALL = "ann_recall_vs_exact"
CHECK_BEATS_BASELINES = "beats_best_baseline"
CHECK_NOT_WORSE = "not_worse_than_published"


class ModelVersionMissing(dg.Failure):
    pass


def model_version(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, store: ArtifactStore
) -> str:
    """The model version to work on: the ``model_version`` metadata of ``two_tower_model``'s latest
    materialization (Dagster's record of what the model step produced), else the store's own view
    (``artifacts/models/LATEST`` or the newest model directory)."""
    try:
        event = context.instance.get_latest_materialization_event(MODEL_ASSET)
        mat = event.asset_materialization if event is not None else None
        if mat is not None:
            for key in ("model_version", "version"):
                if key in mat.metadata:
                    value = mat.metadata[key].value
                    if value and store.dir_exists(P.model_key(str(value))):
                        return str(value)
    except Exception as e:  # noqa: BLE001 - an instance without the record: fall back to the store
        context.log.debug(f"no model_version from the instance: {e}")
    v = P.latest_model_version(store)
    if v is None:
        raise ModelVersionMissing(
            description="no trained model in artifacts/models: materialize two_tower_model first"
        )
    return v


# -- item_embeddings ------------------------------------------------------------------------------------------
class ItemEmbeddingsConfig(dg.Config):
    batch_size: int = 8192


@dg.asset(
    key="item_embeddings",
    group_name=MODEL_GROUP,
    deps=["two_tower_model", "dim_items"],
    kinds={"pytorch", "numpy", "parquet"},
)
def item_embeddings(
    context: dg.AssetExecutionContext, config: ItemEmbeddingsConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """The exported item tower over the whole catalog (dim_items), cold items and brand-new listings
    included: they are embedded from content, which is what lets them be recommended before anyone has
    interacted with them. Batched; written as NumPy + Parquet under ``artifacts/embeddings/<model_version>/``."""
    import torch

    from relevance_core.features import FeatureEncoder
    from relevance_core.index import embed_items

    store = storage.get_store()
    v = model_version(context, store)
    mdir = store.local_dir(P.model_key(v))
    tower = torch.jit.load(str(mdir / B.ITEM_TOWER), map_location="cpu").eval()
    encoder = FeatureEncoder.from_json((mdir / B.FEATURES).read_text())
    catalog = P.load_catalog(store)
    t0 = time.perf_counter()
    ids, emb = embed_items(tower, encoder, catalog, batch_size=config.batch_size)
    seconds = time.perf_counter() - t0
    rows = encoder.rows_of(ids)
    known = np.asarray(encoder.id_known, dtype=bool)
    no_id = int(np.count_nonzero(~known[rows]))  # content-only: never interacted, or unknown to the encoder
    new_listings = int(np.count_nonzero(rows == 0))
    meta = {
        "model_version": v,
        "items": len(ids),
        "dim": int(emb.shape[1]),
        "content_only_items": no_id,
        "new_listings": new_listings,
        "seconds": round(seconds, 3),
        "run_id": context.run.run_id,
    }
    P.write_embeddings(store, v, ids, emb, meta)
    context.log.info(f"embedded {len(ids)} items with model {v} in {seconds:.1f}s ({no_id} content-only)")
    return dg.MaterializeResult(
        metadata={
            "model_version": dg.MetadataValue.text(v),
            "items": dg.MetadataValue.int(len(ids)),
            "dim": dg.MetadataValue.int(int(emb.shape[1])),
            "content_only_items": dg.MetadataValue.int(no_id),
            "new_listings": dg.MetadataValue.int(new_listings),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
            "path": dg.MetadataValue.text(f"{store.base_uri}/{P.embeddings_key(v)}"),
        }
    )


# -- faiss_index ----------------------------------------------------------------------------------------------
class FaissIndexConfig(dg.Config):
    """``factory`` overrides the size-based choice (any FAISS factory string, e.g. ``"HNSW32"``)."""

    factory: str | None = None
    crossover: int = FLAT_CROSSOVER
    recall_k: int = 100
    target_recall: float = RECALL_TARGET
    #: Search breadth is tuned on one half of the held-out queries to ``target_recall + tuning_margin`` and
    #: measured on the other half (``relevance_core.index.TUNING_MARGIN`` says why).
    tuning_margin: float = TUNING_MARGIN
    #: With the size-based choice, the tuned ANN is kept only if it is at least this much faster than
    #: exact search on the held-out queries (``relevance_core.index.keep_ann_if_faster``); 0 keeps it always.
    min_ann_speedup: float = MIN_ANN_SPEEDUP
    max_queries: int = 1_000
    use_gpu: bool | None = None
    seed: int = 0


def _query_vectors(store: ArtifactStore, model_dir: Path, max_queries: int, seed: int) -> np.ndarray:
    """User-tower vectors of held-out histories (validation split, else test): the queries the index
    will really see, which is what recall must be measured on."""
    from relevance_core.evaluation.retrieval import TowerRetriever
    from relevance_core.evaluation.runner import load_pairs

    for split in ("validation", "test", "train"):
        pairs = load_pairs(store, split, ["hist_item_ids", "hist_event_types", "hist_age_s"])
        if len(pairs):
            break
    if len(pairs) > max_queries:
        pairs = pairs.sample(n=max_queries, random_state=seed)
    retr = TowerRetriever.from_dir(model_dir, load_index=False)
    return retr.user_vectors(
        pairs["hist_item_ids"].tolist(), pairs["hist_event_types"].tolist(), pairs["hist_age_s"].tolist()
    )


@dg.asset(
    key="faiss_index",
    group_name=MODEL_GROUP,
    deps=["item_embeddings", "two_tower_model", "training_pairs"],
    kinds={"faiss"},
)
def faiss_index(
    context: dg.AssetExecutionContext, config: FaissIndexConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """FAISS index over the item embeddings (inner product on unit vectors). Exact below the measured
    crossover size, IVF above (or ``config.factory``); the search breadth is tuned on half of the held-out
    user-tower queries and recall@K vs exact is measured on the other half (the ANN check's number). A
    size-chosen IVF is served only if it is also ``min_ann_speedup`` times faster than exact search on
    those queries, else Flat. Built on GPU when a GPU FAISS and a GPU are present."""
    from relevance_core.index import build_index, keep_ann_if_faster, measure_recall, tune_search

    store = storage.get_store()
    v = model_version(context, store)
    ids, emb, _ = P.read_embeddings(store, v)
    queries = _query_vectors(store, store.local_dir(P.model_key(v)), config.max_queries, config.seed)
    index = build_index(
        emb, ids, factory=config.factory, use_gpu=config.use_gpu, seed=config.seed, crossover=config.crossover
    )
    k = min(config.recall_k, len(index))
    half = max(1, len(queries) // 2)
    tuned = tune_search(
        index, emb, queries[:half], k=k, target_recall=min(1.0, config.target_recall + config.tuning_margin)
    )
    held_out = queries[half:] if len(queries) > 1 else queries
    speed: dict = {}
    if config.factory is None:  # the size rule chose: the ANN must also earn its place by speed
        index, speed = keep_ann_if_faster(index, emb, held_out, k=k, min_speedup=config.min_ann_speedup)
        if index.is_exact:
            tuned = {"recall": 1.0}
    recall = 1.0 if index.is_exact else measure_recall(index, emb, held_out, k=k)
    if speed:
        context.log.info(
            f"{speed['ann_factory']}: {speed['ann_speedup_vs_flat']}x exact search at {speed['ann_search_params']}"
            f" -> serving {index.factory}"
        )
    desc = index.describe()
    meta = desc | {
        "model_version": v,
        "recall": recall,
        "recall_k": k,
        "target_recall": config.target_recall,
        "tuning_recall": tuned["recall"],
        "queries": len(queries),
        "speed_vs_exact": speed,
        "run_id": context.run.run_id,
    }
    P.save_index(store, v, index, meta)
    context.log.info(
        f"index {index.factory} over {len(index)} items: recall@{k}={recall:.4f} {index.search_params}"
    )
    return dg.MaterializeResult(
        metadata={
            "model_version": dg.MetadataValue.text(v),
            "type": dg.MetadataValue.text(desc["type"]),
            "factory": dg.MetadataValue.text(index.factory),
            "size": dg.MetadataValue.int(len(index)),
            "dim": dg.MetadataValue.int(index.dim),
            "bytes_per_vector": dg.MetadataValue.float(desc["bytes_per_vector"]),
            "build_s": dg.MetadataValue.float(desc["build_s"]),
            "built_on": dg.MetadataValue.text(index.built_on),
            "search_params": dg.MetadataValue.json(dict(index.search_params)),
            f"recall_at_{k}_vs_exact": dg.MetadataValue.float(round(recall, 4)),
            "recall_queries": dg.MetadataValue.int(len(queries) - half if len(queries) > 1 else len(queries)),
            "ann_vs_exact": dg.MetadataValue.json(speed),
        }
    )


@dg.asset_check(asset="faiss_index", name=CHECK_ANN_RECALL, blocking=True)
def ann_recall_check(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    """The index must find ≥ 95% of the exact top-K on held-out user queries: below that the ANN changes
    what users see, not just how fast they see it."""
    store = storage.get_store()
    v = model_version(context, store)
    _, meta = P.load_index(store, v)
    gate = G.ann_recall(
        float(meta["recall"]), k=int(meta["recall_k"]), target=float(meta.get("target_recall", RECALL_TARGET))
    )
    return dg.AssetCheckResult(passed=gate.passed, description=gate.description, metadata=_md(gate.metadata))


# -- offline_evaluation ---------------------------------------------------------------------------------------
class OfflineEvaluationConfig(dg.Config):
    """``k``: cut-off of every metric; ``regression_tolerance``: how much worse (relative NDCG@K) than the
    live bundle, re-scored on the same queries, a new model may be; ``baseline_margin``: how much
    (absolute NDCG@K) it must beat the best baseline by."""

    k: int = 10
    max_queries: int = 5_000
    seed: int = 0
    regression_tolerance: float = G.DEFAULT_REGRESSION_TOLERANCE
    baseline_margin: float = 0.0


def _md(d: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    out = {}
    for key, value in d.items():
        if isinstance(value, bool) or value is None:
            out[key] = dg.MetadataValue.text(str(value))
        elif isinstance(value, int | float):
            out[key] = dg.MetadataValue.float(float(value))
        else:
            out[key] = dg.MetadataValue.text(str(value))
    return out


def read_evaluation(store: ArtifactStore, v: str) -> dict[str, Any]:
    key = f"{store.resolve_dir(P.evaluation_key(v))}/{P.REPORT_FILE}"
    if not store.exists(key):
        raise dg.Failure(
            description=f"no offline evaluation for model {v}: materialize offline_evaluation first"
        )
    return json.loads(store.read_text(key))


def evaluation_gates(evaluation: dict[str, Any], index_meta: dict[str, Any]) -> list[G.GateResult]:
    """The three publishing gates from the stored evaluation and index metadata."""
    from relevance_core.evaluation.offline import PUBLISHED, EvaluationReport

    report = EvaluationReport.from_dict(evaluation["report"])
    settings = evaluation.get("gates", {})
    published = None
    if PUBLISHED in report.results:
        published = {f"ndcg@{report.k}": report.metric(PUBLISHED, "ndcg")}
    return [
        G.beats_baselines(report, min_margin=float(settings.get("baseline_margin", 0.0))),
        G.not_worse_than_published(
            report,
            published,
            tolerance=float(settings.get("regression_tolerance", G.DEFAULT_REGRESSION_TOLERANCE)),
        ),
        G.ann_recall(
            float(index_meta["recall"]),
            k=int(index_meta["recall_k"]),
            target=float(index_meta.get("target_recall", RECALL_TARGET)),
        ),
    ]


@dg.asset(
    key="offline_evaluation",
    group_name=SERVING_GROUP,
    deps=["faiss_index", "learned_ranker", "training_pairs"],
    kinds={"python"},
)
def offline_evaluation(
    context: dg.AssetExecutionContext, config: OfflineEvaluationConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """The model through the service's own path (history → user tower → FAISS top-K → candidate sources
    → ranker, seen items removed; the retrieval-only order beside it) on the time-split test sessions, against popularity and item-to-item co-occurrence baselines and the
    live bundle, all on the same queries: HR/Recall/NDCG/MRR@K, coverage, popularity bias, Gini, novelty,
    overall and for new users and cold items."""
    from relevance_core.evaluation.plots import plot_report
    from relevance_core.evaluation.runner import run_offline_evaluation

    store = storage.get_store()
    v = model_version(context, store)
    t0 = time.perf_counter()
    run = run_offline_evaluation(store, v, k=config.k, max_queries=config.max_queries, seed=config.seed)
    seconds = time.perf_counter() - t0
    report = run.report
    if run.queries.empty:
        raise dg.Failure(description="no test queries: training_pairs has no usable test split")
    payload = {
        "report": report.to_dict(),
        "info": run.info | {"seconds": round(seconds, 3), "run_id": context.run.run_id},
        "gates": {
            "regression_tolerance": config.regression_tolerance,
            "baseline_margin": config.baseline_margin,
        },
        "summary": report.summary(),
    }
    table = report.to_markdown()
    with tempfile.TemporaryDirectory(prefix="relevance-eval-") as tmp:
        d = Path(tmp)
        (d / P.REPORT_FILE).write_text(json.dumps(payload, indent=2, default=float))
        (d / "report.md").write_text(table)
        plot_report(report, d / "metrics.png")
        plot_report(report, d / "metrics_new_users.png", segment="new_users")
        pictures = {
            "plot": png_markdown(d / "metrics.png", "model vs baselines"),
            "plot_new_users": png_markdown(d / "metrics_new_users.png", "new users: model vs baselines"),
        }
        store.replace_dir(d, P.evaluation_key(v))
    k = report.k
    best_name, best = report.best_baseline()
    md: dict[str, Any] = {
        "model_version": dg.MetadataValue.text(v),
        "results": dg.MetadataValue.md(table),
        "queries": dg.MetadataValue.int(len(run.queries)),
        "best_baseline": dg.MetadataValue.text(best_name),
        f"best_baseline_ndcg_at_{k}": dg.MetadataValue.float(round(best, 5)),
        "published_version": dg.MetadataValue.text(str(run.published_version)),
        **pictures,
        "plot_path": dg.MetadataValue.path(f"{store.base_uri}/{P.evaluation_key(v)}/metrics.png"),
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
    }
    for name, value in report.summary().items():
        md[name.replace("@", "_at_")] = dg.MetadataValue.float(round(float(value), 5))
    return dg.MaterializeResult(metadata=md)


@dg.asset_check(asset="offline_evaluation", name=CHECK_BEATS_BASELINES, blocking=True)
def beats_best_baseline_check(
    context: dg.AssetCheckExecutionContext, storage: StorageResource
) -> dg.AssetCheckResult:
    """A model that cannot beat popularity or co-occurrence on NDCG@K adds cost without value: not published."""
    store = storage.get_store()
    v = model_version(context, store)
    _, index_meta = P.load_index(store, v)
    gate = evaluation_gates(read_evaluation(store, v), index_meta)[0]
    return dg.AssetCheckResult(passed=gate.passed, description=gate.description, metadata=_md(gate.metadata))


@dg.asset_check(asset="offline_evaluation", name=CHECK_NOT_WORSE, blocking=True)
def not_worse_than_published_check(
    context: dg.AssetCheckExecutionContext, storage: StorageResource
) -> dg.AssetCheckResult:
    """NDCG@K may drop at most the configured tolerance below the live bundle re-scored on the same queries."""
    store = storage.get_store()
    v = model_version(context, store)
    _, index_meta = P.load_index(store, v)
    gate = evaluation_gates(read_evaluation(store, v), index_meta)[1]
    return dg.AssetCheckResult(passed=gate.passed, description=gate.description, metadata=_md(gate.metadata))


def _ranking_dir(store: ArtifactStore, v: str) -> Path | None:
    from relevance_core.ranking.build import ranking_key

    return store.local_dir(ranking_key(v)) if store.dir_exists(ranking_key(v)) else None


# -- published_bundle -----------------------------------------------------------------------------------------
class PublishedBundleConfig(dg.Config):
    keep: int = 5


@dg.asset(
    key="published_bundle",
    group_name=SERVING_GROUP,
    deps=[
        "offline_evaluation",
        "faiss_index",
        "learned_ranker",
        "item_embeddings",
        "two_tower_model",
        "dim_items",
        "item_popularity",
    ],
    kinds={"faiss", "pytorch"},
)
def published_bundle(
    context: dg.AssetExecutionContext, config: PublishedBundleConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Assemble the bundle (towers, features, index, id map, embeddings, items, popularity, manifest with
    lineage, metrics and checksums), re-check the gates, upload, verify, then atomically move
    ``artifacts/LATEST``; keep the last N bundles. A failed gate fails this step and leaves LATEST alone."""
    store = storage.get_store()
    v = model_version(context, store)
    evaluation = read_evaluation(store, v)
    index, index_meta = P.load_index(store, v)
    gates = evaluation_gates(evaluation, index_meta)
    failed = [g for g in gates if not g.passed]
    if failed:
        raise dg.Failure(
            description="not published, gates failed: "
            + "; ".join(f"{g.name}: {g.description}" for g in failed),
            metadata={"live_version": dg.MetadataValue.text(str(B.latest_version(store)))},
        )
    ids, emb, emb_meta = P.read_embeddings(store, v)
    if list(ids) != list(index.item_ids):
        raise dg.Failure(description="embeddings and index disagree on the item order: rebuild faiss_index")
    staging = Path(tempfile.mkdtemp(prefix="relevance-bundle-"))
    try:
        manifest = P.assemble_bundle(
            staging / "bundle",
            model_dir=store.local_dir(P.model_key(v)),
            index=index,
            embeddings=emb,
            items=P.load_catalog(store),
            popularity=P.load_popularity(store),
            model_version=v,
            ranking_dir=_ranking_dir(store, v),
            data={
                "store": store.base_uri,
                "run_id": context.run.run_id,
                "embeddings": emb_meta,
                "evaluation": evaluation.get("info", {}),
            },
            metrics=evaluation.get("summary", {}),
            extra={
                "gates": {g.name: {"passed": g.passed, "description": g.description} for g in gates},
                "index_recall": index_meta.get("recall"),
            },
        )
        outcome = P.publish_if_passed(store, staging / "bundle", gates, keep=config.keep)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    context.log.info(outcome.reason)
    return dg.MaterializeResult(
        metadata={
            "version": dg.MetadataValue.text(manifest.version),
            "model_version": dg.MetadataValue.text(v),
            "live_version": dg.MetadataValue.text(str(outcome.live_version)),
            "items": dg.MetadataValue.int(manifest.n_items),
            "index_factory": dg.MetadataValue.text(manifest.index_factory),
            "bundles_kept": dg.MetadataValue.json(B.list_versions(store)),
            "metrics": dg.MetadataValue.json(manifest.metrics),
            "path": dg.MetadataValue.text(f"{store.base_uri}/{B.bundle_key(manifest.version)}"),
        }
    )
