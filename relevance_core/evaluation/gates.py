"""The publishing gates: pure functions over measured numbers, so the Dagster blocking checks,
the ``published_bundle`` asset (which re-checks before it publishes, in case it is materialized on its
own) and the tests all apply exactly the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relevance_core.evaluation.offline import EvaluationReport
from relevance_core.index import RECALL_TARGET

#: Default allowed relative NDCG drop vs the currently published bundle (0.02 = may be 2% worse).
DEFAULT_REGRESSION_TOLERANCE = 0.02


@dataclass
class GateResult:
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def beats_baselines(
    report: EvaluationReport, *, metric: str = "ndcg", segment: str = "all", min_margin: float = 0.0
) -> GateResult:
    """The model's ``metric`` must exceed the best baseline's by more than ``min_margin`` (absolute)."""
    key = f"{metric}@{report.k}"
    model = report.metric(report.model_name, metric, segment)
    name, best = report.best_baseline(metric, segment)
    passed = not math.isnan(model) and model > best + min_margin
    return GateResult(
        name="beats_baselines",
        passed=passed,
        description=f"model {key}={model:.4f} vs best baseline {name} {best:.4f} (margin {min_margin})",
        metadata={"model": model, "best_baseline": name, "best_baseline_value": best, "metric": key},
    )


def not_worse_than_published(
    report: EvaluationReport,
    published_metrics: Mapping[str, Any] | None,
    *,
    metric: str = "ndcg",
    tolerance: float = DEFAULT_REGRESSION_TOLERANCE,
) -> GateResult:
    """The model may be at most ``tolerance`` (relative) worse than the bundle that is live now.

    Passes when nothing is published yet or the live bundle recorded no comparable metric (different K):
    there is nothing to regress against, and the baseline gate still applies.
    """
    key = f"{metric}@{report.k}"
    model = report.metric(report.model_name, metric)
    live = None if not published_metrics else published_metrics.get(key)
    if live is None or (isinstance(live, float) and math.isnan(live)):
        return GateResult(
            name="not_worse_than_published",
            passed=True,
            description=f"no published {key} to compare with; model {key}={model:.4f}",
            metadata={"model": model, "published": None, "tolerance": tolerance},
        )
    floor = float(live) * (1.0 - tolerance)
    passed = model >= floor
    return GateResult(
        name="not_worse_than_published",
        passed=passed,
        description=f"model {key}={model:.4f} vs published {float(live):.4f} (floor {floor:.4f}, tolerance {tolerance:.0%})",
        metadata={"model": model, "published": float(live), "floor": floor, "tolerance": tolerance},
    )


def ann_recall(recall: float, *, k: int, target: float = RECALL_TARGET) -> GateResult:
    return GateResult(
        name="ann_recall",
        passed=recall >= target,
        description=f"ANN recall@{k} vs exact = {recall:.4f} (target {target})",
        metadata={"recall": recall, "k": k, "target": target},
    )
