"""Offline evaluation: metrics, baselines, the protocol, the publishing gates and plots.

- :mod:`.metrics` — HR/Recall/NDCG/MRR@K, coverage, popularity bias, Gini, novelty.
- :mod:`.baselines` — popularity and item-to-item co-occurrence (session kNN).
- :mod:`.offline` — test queries from the time split, scoring per segment, the report and its table.
- :mod:`.retrieval` — user tower → FAISS top-K, the service's candidate path.
- :mod:`.gates` — the rules that decide whether a model may be published.
- :mod:`.plots` — PNG charts of a report.
"""

from relevance_core.evaluation.baselines import (
    CooccurrenceRecommender,
    PopularityRecommender,
    training_popularity,
)
from relevance_core.evaluation.gates import GateResult, ann_recall, beats_baselines, not_worse_than_published
from relevance_core.evaluation.metrics import evaluate_lists
from relevance_core.evaluation.offline import (
    EvaluationReport,
    build_queries,
    evaluate_systems,
    run_evaluation,
)

__all__ = [
    "CooccurrenceRecommender",
    "EvaluationReport",
    "GateResult",
    "PopularityRecommender",
    "ann_recall",
    "beats_baselines",
    "build_queries",
    "evaluate_lists",
    "evaluate_systems",
    "not_worse_than_published",
    "run_evaluation",
    "training_popularity",
]
