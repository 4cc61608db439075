"""One offline evaluation run against the artifact store: the model, the baselines and the live bundle
scored on the same test queries (what the ``offline_evaluation`` asset calls).

The live bundle is re-scored on *these* queries rather than compared through the number in its manifest:
a manifest's metric was measured on an older test window, and comparing numbers from different test sets
would let data drift pass or block a model on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from relevance_core import bundle as B
from relevance_core import publishing as P
from relevance_core.evaluation.baselines import (
    CooccurrenceRecommender,
    PopularityRecommender,
    training_popularity,
)
from relevance_core.evaluation.offline import (
    PUBLISHED,
    RETRIEVAL_ONLY,
    EvaluationReport,
    build_queries,
    run_evaluation,
)
from relevance_core.evaluation.retrieval import TowerRetriever
from relevance_core.index import ItemIndex
from relevance_core.ranking.build import StageRecommender, load_ranking_stage
from relevance_core.ranking.stage import RankingStage
from relevance_core.storage import ArtifactStore

log = logging.getLogger(__name__)

PAIR_COLUMNS = [
    "user_id",
    "session_key",
    "hist_item_ids",
    "hist_event_types",
    "hist_age_s",
    "target_item_id",
    "target_weight",
    "target_ts",
]


def load_pairs(store: ArtifactStore, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One split of ``lake/training_pairs`` as pandas (list columns as Python lists)."""
    from relevance_core.pipeline.pairs import read_training_pairs

    table = read_training_pairs(store, split=split).to_table(columns=columns or PAIR_COLUMNS)
    return table.to_pandas(types_mapper=None)


@dataclass
class EvaluationRun:
    report: EvaluationReport
    queries: pd.DataFrame
    published_version: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _baseline_fns(train: pd.DataFrame):
    pop = PopularityRecommender(training_popularity(train))
    co = CooccurrenceRecommender.fit(train)

    def popularity(q: pd.DataFrame, k: int) -> list[list[str]]:
        return pop.recommend(q["hist_item_ids"].tolist(), k)

    def cooccurrence(q: pd.DataFrame, k: int) -> list[list[str]]:
        return co.recommend(q["hist_item_ids"].tolist(), k, event_types=q["hist_event_types"].tolist())

    return {"popularity": popularity, "cooccurrence": cooccurrence}


def bundle_recommender(bdir) -> StageRecommender:
    """A published bundle's full path (its towers, index, sources and ranker) as a ``RecommendFn``."""
    import numpy as np
    import pyarrow.parquet as pq

    index = ItemIndex.load(bdir)
    item_ids = [str(i) for i in index.item_ids.tolist()]
    stage = RankingStage.load(bdir, item_ids, pq.read_table(bdir / B.ITEMS))
    emb = np.load(bdir / B.EMBEDDINGS, mmap_mode="r")
    return StageRecommender(TowerRetriever.from_dir(bdir, index=index), index, emb, stage)


def run_offline_evaluation(
    store: ArtifactStore,
    model_version: str,
    *,
    k: int = 10,
    max_queries: int | None = 5_000,
    seed: int = 0,
    include_published: bool = True,
) -> EvaluationRun:
    """Score the model through the serving path (user tower → this model's FAISS index → candidate
    sources → ranker, seen items removed), its retrieval-only order when it has a ranker, the baselines
    and, if one is live, the published bundle on the same queries from the test split."""
    train = load_pairs(store, "train")
    test = load_pairs(store, "test")
    queries = build_queries(test, train, max_queries=max_queries, seed=seed)
    index, _meta = P.load_index(store, model_version)
    retriever = TowerRetriever.from_dir(store.local_dir(P.model_key(model_version)), index=index)
    _, emb, _ = P.read_embeddings(store, model_version)
    item_ids = [str(i) for i in index.item_ids.tolist()]
    stage = load_ranking_stage(store, model_version, item_ids)
    recommenders = {"two_tower": StageRecommender(retriever, index, emb, stage)}
    if stage.ranker is not None:
        recommenders[RETRIEVAL_ONLY] = retriever
    recommenders |= _baseline_fns(train)
    published = B.latest_version(store) if include_published else None
    if published is not None:
        try:
            bdir, _manifest = B.fetch(store, published)
            recommenders[PUBLISHED] = bundle_recommender(bdir)
        except Exception as e:  # noqa: BLE001 - an unloadable live bundle must not block evaluation
            log.warning("could not re-score the published bundle %s: %s", published, e)
            published = None
    report = run_evaluation(
        recommenders,
        queries,
        k=k,
        catalog=index.item_ids.tolist(),
        popularity=training_popularity(train),
    )
    info = {
        "train_pairs": len(train),
        "test_pairs": len(test),
        "queries": len(queries),
        "model_version": model_version,
        "published_version": published,
    }
    return EvaluationRun(report=report, queries=queries, published_version=published, info=info)
