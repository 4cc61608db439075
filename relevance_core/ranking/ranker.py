"""The learned ranker: LightGBM with a lambdarank objective over :data:`~relevance_core.ranking.features.FEATURES`.

Why gradient-boosted trees and not an MLP: the features mix scales (cosines, counts, ranks, ages) and
have missing values, which trees take as they are; and the model is one text file a reviewer can diff.
(Per request the trees are evaluated by :mod:`~relevance_core.ranking.trees`, ~0.1 ms for ~180
candidates and 150 trees where ``Booster.predict`` takes ~0.4-0.55 ms: docs/ranking.md.)

Training data is the validation days of ``training_pairs`` (the days the two-tower model did not train
on): one query per pair, its candidates from every source, the target graded by its event weight. The
queries are split by time into fit (60%), early-stopping (20%) and held-out (20%) parts; once early
stopping has said how many trees to grow, the ranker is trained again on the first two parts together
(more queries; the tree count scaled to them). It is kept only if, on the held-out part, it beats the retrieval-only order (the two-tower ANN's) on MRR@k
without losing HR@k (:func:`ranker_gate`). Otherwise the bundle ships without it and the service serves
the retrieval order, as before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relevance_core.ranking.features import ABSENT_RANK, FEATURES
from relevance_core.ranking.trees import CompiledTrees

RANKER_FILE = "ranker.txt"
RANKER_META = "ranker.json"


def grade(weight: float) -> int:
    """Relevance grade of a target from its event weight: view 1, click 2, favourite/cart 3,
    contact/purchase 4 (lambdarank gains grow as 2^grade − 1)."""
    return int(min(4, max(1, 1 + math.floor(math.log2(max(float(weight), 1.0))))))


@dataclass(frozen=True)
class RankerConfig:
    #: small trees, few of them: serving cost is trees x candidates (compiled: ~12 ns per row-tree at 31 leaves,
    #: ~4 at 7), and on DIGINETICA's validation split 7 leaves at rate 0.1 (113 trees) served
    #: 53.38 / 19.13 against 53.13-53.38 for 15-31 leaves (docs/ranking.md, "Choosing the ranker's size")
    num_leaves: int = 7
    learning_rate: float = 0.1
    max_rounds: int = 150
    early_stopping_rounds: int = 20
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    #: metrics cut-off, and the lambdarank truncation level
    k: int = 20
    num_threads: int = 2
    seed: int = 0
    #: shares of the validation queries (time order) used to fit and to stop early; the rest is held out
    fit_share: float = 0.6
    stop_share: float = 0.2
    #: after early stopping, train once more on the fit and early-stopping parts together
    refit: bool = True


@dataclass
class Ranker:
    """A trained LightGBM booster and the feature names it expects (refused if they differ)."""

    booster: Any
    features: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    #: the same trees for the compiled evaluator (None: a model it does not implement)
    trees: CompiledTrees | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.trees = CompiledTrees.from_booster(self.booster)
        if self.trees is not None:  # compile (or load the cached machine code) now, not on a request
            self.trees.predict(np.full((1, len(self.features)), np.nan, np.float32))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores (higher is better). One thread: the service runs one worker per core."""
        if len(X) == 0:
            return np.zeros(0, np.float32)
        if self.trees is not None:
            return self.trees.predict(X).astype(np.float32)
        return self.booster.predict(X, num_threads=1).astype(np.float32)

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(d / RANKER_FILE))
        (d / RANKER_META).write_text(json.dumps({"features": list(self.features)} | self.meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> Ranker:
        import lightgbm as lgb

        d = Path(directory)
        meta = json.loads((d / RANKER_META).read_text())
        features = tuple(meta.pop("features"))
        if features != FEATURES:
            raise ValueError(f"ranker expects features {list(features)}, this code computes {list(FEATURES)}")
        booster = lgb.Booster(model_file=str(d / RANKER_FILE))
        return cls(booster, features, meta)


@dataclass
class QueryBlock:
    """One query's candidates as the ranker sees them: features, the row of each candidate, its
    retrieval-only position (ANN rank, ABSENT for non-ANN candidates) and the target's row."""

    X: np.ndarray
    rows: np.ndarray
    ann_rank: np.ndarray
    target_row: int
    target_grade: int


def hit_and_rr(order_rows: np.ndarray, target_row: int, k: int) -> tuple[float, float]:
    top = order_rows[:k]
    hit = np.flatnonzero(top == target_row)
    return (1.0, 1.0 / (hit[0] + 1)) if len(hit) else (0.0, 0.0)


def evaluate_orders(
    blocks: Sequence[QueryBlock], scores: Sequence[np.ndarray] | None, k: int
) -> dict[str, float]:
    """HR@k and MRR@k (%) of the ranker's order (``scores``) or, with None, of the retrieval-only order."""
    if not blocks:
        return {"hr": 0.0, "mrr": 0.0, "queries": 0}
    hr = rr = 0.0
    for i, b in enumerate(blocks):
        if scores is None:
            ann = np.flatnonzero(b.ann_rank < ABSENT_RANK)
            order = b.rows[ann[np.argsort(b.ann_rank[ann], kind="stable")]]
        else:
            order = b.rows[np.argsort(-scores[i], kind="stable")]
        h, r = hit_and_rr(order, b.target_row, k)
        hr += h
        rr += r
    n = len(blocks)
    return {"hr": round(float(100 * hr / n), 3), "mrr": round(float(100 * rr / n), 3), "queries": n}


@dataclass
class RankerFit:
    #: the ranker to ship: None when it failed its gate (or none could be trained)
    ranker: Ranker | None
    shipped: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)
    #: what training produced, shipped or not (for inspection and tests)
    trained: Ranker | None = None


def ranker_gate(ranked: dict[str, float], retrieval: dict[str, float]) -> tuple[bool, str]:
    """The ranker ships only if it beats the retrieval-only order on held-out days: higher MRR@k and no
    lower HR@k. A tie is not a win: a ranker that changes nothing adds latency for nothing."""
    ok = bool(ranked["mrr"] > retrieval["mrr"] and ranked["hr"] >= retrieval["hr"])
    verdict = "beats" if ok else "does not beat"
    return ok, (
        f"ranker {verdict} retrieval-only on held-out days: HR {ranked['hr']} vs {retrieval['hr']}, "
        f"MRR {ranked['mrr']} vs {retrieval['mrr']} ({ranked['queries']} queries)"
    )


def _dataset(blocks: Sequence[QueryBlock]):
    import lightgbm as lgb

    X = np.concatenate([b.X for b in blocks]) if blocks else np.zeros((0, len(FEATURES)), np.float32)
    y = np.concatenate([(b.rows == b.target_row).astype(np.int32) * b.target_grade for b in blocks])
    group = [len(b.rows) for b in blocks]
    return lgb.Dataset(X, label=y, group=group, feature_name=list(FEATURES), free_raw_data=False)


def _predict_blocks(ranker: Ranker, blocks: Sequence[QueryBlock]) -> list[np.ndarray]:
    if not blocks:
        return []
    s = ranker.predict(np.concatenate([b.X for b in blocks]))
    return np.split(s, np.cumsum([len(b.rows) for b in blocks])[:-1])


def train_ranker(blocks: Sequence[QueryBlock], cfg: RankerConfig | None = None) -> RankerFit:
    """Fit, early-stop and gate a ranker on ``blocks`` (in time order). Queries whose target no source
    found teach nothing and are left out of fitting, but they count as misses in every evaluation."""
    import lightgbm as lgb

    cfg = cfg or RankerConfig()
    n = len(blocks)
    a, b = int(n * cfg.fit_share), int(n * (cfg.fit_share + cfg.stop_share))
    fit = [q for q in blocks[:a] if (q.rows == q.target_row).any()]
    stop = [q for q in blocks[a:b] if (q.rows == q.target_row).any()]
    held = list(blocks[b:])
    metrics: dict[str, Any] = {"queries": n, "fit_queries": len(fit), "stop_queries": len(stop)}
    metrics["candidate_recall"] = round(
        100 * float(np.mean([(q.rows == q.target_row).any() for q in blocks])) if n else 0.0, 3
    )
    if len(fit) < 50 or len(stop) < 10 or len(held) < 10:
        return RankerFit(None, False, f"too few validation queries to train a ranker ({n})", metrics)
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [cfg.k],
        "lambdarank_truncation_level": cfg.k,
        "label_gain": [0, 1, 3, 7, 15],
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction,
        "num_threads": cfg.num_threads,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    train_set = _dataset(fit)
    valid_set = _dataset(stop)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=cfg.max_rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )
    booster.free_dataset()
    rounds = int(booster.best_iteration or booster.current_iteration())
    if cfg.refit:
        # the early-stopping part has told us how long to train: train again on it and the fit part
        # together (more queries, rounds scaled to the data), and judge that on the held-out part
        booster = lgb.train(
            params, _dataset(fit + stop), num_boost_round=max(1, round(rounds * len(fit + stop) / len(fit)))
        )
        booster.free_dataset()
    ranker = Ranker(booster, FEATURES)
    ranked = evaluate_orders(held, _predict_blocks(ranker, held), cfg.k)
    retrieval = evaluate_orders(held, None, cfg.k)
    shipped, reason = ranker_gate(ranked, retrieval)
    gain = booster.feature_importance(importance_type="gain")
    metrics |= {
        "held_out_queries": len(held),
        "rounds": int(booster.current_iteration()),
        "rounds_at_early_stop": rounds,
        f"ranked_hr_at_{cfg.k}": ranked["hr"],
        f"ranked_mrr_at_{cfg.k}": ranked["mrr"],
        f"retrieval_hr_at_{cfg.k}": retrieval["hr"],
        f"retrieval_mrr_at_{cfg.k}": retrieval["mrr"],
        "feature_gain": {
            name: round(float(v), 1)
            for name, v in sorted(zip(FEATURES, gain, strict=True), key=lambda x: -x[1])
        },
        "config": asdict(cfg),
    }
    ranker.meta = {"metrics": metrics, "shipped": shipped, "reason": reason}
    return RankerFit(ranker if shipped else None, shipped, reason, metrics, trained=ranker)
