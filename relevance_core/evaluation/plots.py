"""PNG charts of the offline evaluation (model vs baselines), attached to the asset's metadata and
kept with the evaluation results: a glance tells whether the model wins and at what cost in diversity."""

from __future__ import annotations

from pathlib import Path

from relevance_core.evaluation.offline import METRIC_LABELS, EvaluationReport

ACCURACY = ("hr", "recall", "ndcg", "mrr")
BEYOND = ("coverage", "pop_percentile", "gini")


def plot_report(report: EvaluationReport, path: str | Path, *, segment: str = "all") -> Path:
    """Grouped bars: accuracy metrics (left) and beyond-accuracy metrics (right), one bar per system."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display in Dagster runs or CI
    import matplotlib.pyplot as plt
    import numpy as np

    systems = [s for s in report.results if segment in report.results[s]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metrics, title in ((axes[0], ACCURACY, "accuracy"), (axes[1], BEYOND, "beyond accuracy")):
        x = np.arange(len(metrics))
        width = 0.8 / max(1, len(systems))
        for i, s in enumerate(systems):
            vals = [report.results[s][segment].get(m, float("nan")) for m in metrics]
            ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=s)
        ax.set_xticks(x, [f"{METRIC_LABELS[m]}@{report.k}" for m in metrics])
        ax.set_title(f"{title} ({segment})")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
