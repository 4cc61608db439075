"""Build a model version's ranking stage from the artifact store: the co-visitation table and item
statistics from the ``train`` split, then the ranker from the ``validation`` split, gated on its held-out
days (what the ``learned_ranker`` asset calls). Written to ``artifacts/ranking/<model_version>/``, which
the bundle copies.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relevance_core import publishing as P
from relevance_core.index import ItemIndex
from relevance_core.ranking.batch import BatchInputs, history_of, query_blocks
from relevance_core.ranking.covisit import Covisitation, CovisitConfig, build_covisit_table
from relevance_core.ranking.ranker import RankerConfig, RankerFit, train_ranker
from relevance_core.ranking.sources import ItemAttributes, PopularByCategory, build_item_stats
from relevance_core.ranking.stage import RankingStage, StageConfig
from relevance_core.storage import ArtifactStore

log = logging.getLogger(__name__)

RANKING_PREFIX = f"{P.B.LAYOUT.artifacts}/ranking"


def ranking_key(version: str) -> str:
    return f"{RANKING_PREFIX}/{version}"


def batch_inputs(
    pairs: pd.DataFrame,
    retriever: Any,
    index: ItemIndex,
    embeddings: np.ndarray,
    ann_k: int,
    ts_column: str = "target_ts",
) -> BatchInputs:
    """Histories, user vectors and ANN rows for pair-shaped rows (``hist_*`` columns and the moment of
    each query in ``ts_column``: a missing column or value leaves time features unknown)."""
    row_of = {str(i): r for r, i in enumerate(index.item_ids.tolist())}
    ids, events, ages = (pairs[c].tolist() for c in ("hist_item_ids", "hist_event_types", "hist_age_s"))
    vecs = retriever.user_vectors(ids, events, ages)
    ann = index.search(vecs, min(ann_k, len(index))).rows if len(vecs) else np.zeros((0, ann_k), np.int64)
    if ts_column in pairs.columns:
        ts = pd.to_datetime(pairs[ts_column], utc=True)
        now = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
    else:
        now = np.full(len(pairs), np.nan)
    return BatchInputs(
        histories=[history_of(row_of, i, e, a) for i, e, a in zip(ids, events, ages, strict=True)],
        user_vecs=vecs,
        ann_rows=ann,
        embeddings=embeddings,
        now_s=now.astype(np.float64),
    )


@dataclass
class StageBuild:
    stage: RankingStage
    fit: RankerFit
    stats: Any  # pa.Table: the item statistics the stage's attributes came from
    info: dict[str, Any] = field(default_factory=dict)


def build_stage(
    pair_files: list[str],
    validation: pd.DataFrame,
    *,
    index: ItemIndex,
    embeddings: np.ndarray,
    catalog: Any,
    retriever: Any,
    covisit_cfg: CovisitConfig | None = None,
    stage_cfg: StageConfig | None = None,
    ranker_cfg: RankerConfig | None = None,
    with_ranker: bool = True,
) -> StageBuild:
    """Sources from the ``train`` rows of ``pair_files``; the ranker from ``validation`` (pair rows in
    time order), gated on its held-out tail. ``retriever`` gives user vectors (``TowerRetriever``)."""
    stage_cfg = stage_cfg or StageConfig()
    t0 = time.perf_counter()
    table = build_covisit_table(pair_files, covisit_cfg)
    stats = build_item_stats(pair_files)
    item_ids = [str(i) for i in index.item_ids.tolist()]
    attrs = ItemAttributes.from_tables(item_ids, catalog, stats)
    stage = RankingStage(
        attrs,
        Covisitation.from_table(table, item_ids),
        PopularByCategory.build(attrs, stage_cfg.popular_k),
        None,
        stage_cfg,
    )
    info: dict[str, Any] = {
        "covisit_edges": stage.covisit.n_edges,
        "items_with_stats": int(stats.num_rows),
        "content_features": attrs.has_content,
        "sources_s": round(time.perf_counter() - t0, 2),
    }
    fit = RankerFit(None, False, "ranker training disabled")
    if with_ranker and len(validation):
        t1 = time.perf_counter()
        inp = batch_inputs(validation, retriever, index, embeddings, stage_cfg.ann_k)
        row_of = {i: r for r, i in enumerate(item_ids)}
        targets = np.asarray([row_of.get(str(t), -1) for t in validation["target_item_id"]], np.int64)
        blocks = query_blocks(stage, inp, targets, validation["target_weight"].to_numpy(np.float64))
        fit = train_ranker(blocks, ranker_cfg)
        info["ranker_s"] = round(time.perf_counter() - t1, 2)
    elif with_ranker:
        fit = RankerFit(None, False, "no validation pairs: nothing to train a ranker on")
    stage.ranker = fit.ranker
    info |= {"ranker_shipped": fit.shipped, "ranker_reason": fit.reason, "ranker_metrics": fit.metrics}
    return StageBuild(stage, fit, stats, info)


#: validation queries the ranker is trained and gated on (the most recent ones)
MAX_RANKER_QUERIES = 100_000


def build_ranking_stage(
    store: ArtifactStore,
    version: str,
    *,
    max_queries: int = MAX_RANKER_QUERIES,
    **kwargs: Any,
) -> StageBuild:
    """:func:`build_stage` over the store's ``training_pairs`` for model ``version``; the stage (and a
    rejected ranker's figures) saved under :func:`ranking_key`."""
    from relevance_core.evaluation.retrieval import TowerRetriever
    from relevance_core.evaluation.runner import load_pairs
    from relevance_core.pipeline.pairs import read_training_pairs

    val = load_pairs(store, "validation").sort_values("target_ts", kind="stable").reset_index(drop=True)
    if len(val) > max_queries:
        val = val.iloc[-max_queries:].reset_index(drop=True)
    index, _ = P.load_index(store, version)
    _, emb, _ = P.read_embeddings(store, version)
    built = build_stage(
        list(read_training_pairs(store).files),
        val,
        index=index,
        embeddings=emb,
        catalog=P.load_catalog(store),
        retriever=TowerRetriever.from_dir(store.local_dir(P.model_key(version)), load_index=False),
        **kwargs,
    )
    with tempfile.TemporaryDirectory(prefix="relevance-ranking-") as tmp:
        built.stage.save(tmp, built.stats)
        if built.fit.ranker is None and built.fit.metrics:
            (Path(tmp) / "rejected.json").write_text(
                json.dumps({"reason": built.fit.reason, "metrics": built.fit.metrics}, default=float)
            )
        store.replace_dir(tmp, ranking_key(version))
    log.info("ranking stage for %s: %s", version, built.fit.reason)
    return built


def load_ranking_stage(store: ArtifactStore, version: str, item_ids: list[str]) -> RankingStage:
    """The stage saved for ``version``; a retrieval-only stage when none was built."""
    key = ranking_key(version)
    catalog = P.load_catalog(store)
    if not store.dir_exists(key):
        return RankingStage.retrieval_only(item_ids, catalog)
    return RankingStage.load(store.local_dir(key), item_ids, catalog)


class StageRecommender:
    """The full serving path over query frames (``hist_*`` columns): user tower → ANN → sources →
    ranker, seen items removed like the service does. The ``RecommendFn`` form the offline evaluation
    scores; ``use_ranker=False`` is the retrieval-only order of the same bundle."""

    def __init__(
        self,
        retriever: Any,
        index: ItemIndex,
        embeddings: np.ndarray,
        stage: RankingStage,
        *,
        use_ranker: bool = True,
        exclude_seen: bool = True,
        ts_column: str = "query_ts",
    ):
        self.retriever, self.index, self.embeddings, self.stage = retriever, index, embeddings, stage
        self.use_ranker, self.exclude_seen, self.ts_column = use_ranker, exclude_seen, ts_column

    def __call__(self, queries: pd.DataFrame, k: int) -> list[list[str]]:
        from relevance_core.ranking.batch import rank_batch

        ann_k = max(self.stage.cfg.ann_k, k + max((len(h) for h in queries["hist_item_ids"]), default=0))
        inp = batch_inputs(queries, self.retriever, self.index, self.embeddings, ann_k, self.ts_column)
        ids = self.index.item_ids
        tops = rank_batch(self.stage, inp, k, exclude_seen=self.exclude_seen, use_ranker=self.use_ranker)
        return [[str(ids[r]) for r in top] for top in tops]
