"""``learned_ranker``: the second stage's candidate sources and its ranker, for the model version at hand.

Thin: :func:`relevance_core.ranking.build.build_ranking_stage` builds the co-visitation table and item
statistics from the train split, trains the ranker on the validation split and gates it against the
retrieval-only order on held-out days. A ranker that fails its gate is not saved, so the bundle ships
with the sources and without the ranker, and the service serves the retrieval order as before: a worse
ranker never reaches users, and the run does not fail for it.
"""

import dagster as dg

from relevance_assets.config import build_config, core_fields, to_core
from relevance_assets.defs.serving.assets import MODEL_GROUP, model_version
from relevance_assets.resources import StorageResource
from relevance_core.ranking.build import MAX_RANKER_QUERIES
from relevance_core.ranking.ranker import RankerConfig
from relevance_core.ranking.stage import StageConfig


class LearnedRankerConfig(
    build_config("_StageAndRankerFields", "", core_fields(StageConfig) | core_fields(RankerConfig))
):
    """The ranking stage's run config: every ``StageConfig`` (candidates per source) and ``RankerConfig``
    (the LightGBM ranker and its gate) field with the core's default; ``enabled=False`` builds the
    sources only."""

    enabled: bool = True
    #: validation queries the ranker is trained and gated on (the most recent ones)
    max_queries: int = MAX_RANKER_QUERIES


@dg.asset(
    key="learned_ranker",
    group_name=MODEL_GROUP,
    deps=["faiss_index", "item_embeddings", "training_pairs", "two_tower_model"],
    kinds={"lightgbm", "numpy"},
)
def learned_ranker(
    context: dg.AssetExecutionContext, config: LearnedRankerConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Co-visitation, history and popular-by-category candidate sources beside the two-tower ANN, and a
    LightGBM lambdarank ranker over their features, trained on the validation days and kept only if it
    beats the retrieval-only order on held-out days (MRR@20 higher, HR@20 not lower)."""
    from relevance_core.ranking.build import build_ranking_stage, ranking_key

    store = storage.get_store()
    v = model_version(context, store)
    built = build_ranking_stage(
        store,
        v,
        stage_cfg=to_core(config, StageConfig),
        ranker_cfg=to_core(config, RankerConfig),
        max_queries=config.max_queries,
        with_ranker=config.enabled,
    )
    context.log.info(built.fit.reason)
    m = built.fit.metrics
    md = {
        "model_version": dg.MetadataValue.text(v),
        "ranker_shipped": dg.MetadataValue.bool(built.fit.shipped),
        "gate": dg.MetadataValue.text(built.fit.reason),
        "covisit_edges": dg.MetadataValue.int(int(built.info["covisit_edges"])),
        "content_features": dg.MetadataValue.bool(bool(built.info["content_features"])),
        "path": dg.MetadataValue.text(f"{store.base_uri}/{ranking_key(v)}"),
    }
    for key in ("queries", "held_out_queries", "candidate_recall", "rounds"):
        if key in m:
            md[key] = dg.MetadataValue.float(float(m[key]))
    for key, value in m.items():
        if key.startswith(("ranked_", "retrieval_")):
            md[key] = dg.MetadataValue.float(float(value))
    if "feature_gain" in m:
        md["feature_gain"] = dg.MetadataValue.json(m["feature_gain"])
    return dg.MaterializeResult(metadata=md)
