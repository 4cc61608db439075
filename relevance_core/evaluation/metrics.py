"""Offline ranking metrics (gains are event weights).

Every metric takes, per query, the ranked recommendation list and the *relevant* items with their gains
(the event weight of the strongest interaction with that item: a purchase counts 10× a view). Accuracy
metrics are averaged over queries; beyond-accuracy metrics look at all lists together, because a model
that shows everyone the same 10 bestsellers can score well on accuracy and still be a bad recommender.

Definitions (K = cut-off, rank r starts at 1):

- HR@K: 1 if any relevant item is in the top K.
- Recall@K: |relevant ∩ top K| / |relevant|.
- NDCG@K: Σ gain(r)/log2(r+1) over the top K, divided by the same sum for the ideal order of the
  relevant gains (graded relevance, so ranking the purchase above the view matters).
- MRR@K: 1/r of the first relevant item in the top K (0 if none).
- Catalog coverage@K: distinct items recommended in any top K / catalog size.
- Popularity percentile: mean, over recommended items, of the item's popularity percentile (1.0 = the most
  popular item, 0 = never interacted) — how much the recommender leans on bestsellers.
- Gini@K: inequality of how often each catalog item is recommended (0 = every item equally, → 1 = a few
  items take all slots).
- Novelty@K: mean self-information −log2 p(i) of recommended items, p(i) the item's (add-one smoothed)
  share of training interactions; higher = less obvious recommendations.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

ACCURACY_METRICS = ("hr", "recall", "ndcg", "mrr")


def hit_rate_at_k(recommended: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    return 1.0 if any(item in relevant for item in recommended[:k]) else 0.0


def recall_at_k(recommended: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    if not relevant:
        return 0.0
    hits = len(set(recommended[:k]).intersection(relevant))
    return hits / len(relevant)


def dcg(gains: Iterable[float]) -> float:
    return sum(g / math.log2(r + 1) for r, g in enumerate(gains, start=1))


def ndcg_at_k(recommended: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    """Graded NDCG; each relevant item is credited once (a duplicate in the list earns nothing)."""
    ideal = dcg(sorted(relevant.values(), reverse=True)[:k])
    if ideal <= 0:
        return 0.0
    seen: set[str] = set()
    gains = []
    for item in recommended[:k]:
        if item in relevant and item not in seen:
            gains.append(relevant[item])
            seen.add(item)
        else:
            gains.append(0.0)
    return dcg(gains) / ideal


def mrr_at_k(recommended: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    for r, item in enumerate(recommended[:k], start=1):
        if item in relevant:
            return 1.0 / r
    return 0.0


def catalog_coverage(rec_lists: Iterable[Sequence[str]], catalog_size: int, k: int) -> float:
    if catalog_size <= 0:
        return 0.0
    distinct = {item for recs in rec_lists for item in recs[:k]}
    return len(distinct) / catalog_size


def popularity_percentiles(popularity: Mapping[str, float]) -> dict[str, float]:
    """Rank-based percentile in (0, 1] of every item with positive popularity (ties share the mean rank);
    items not in the mapping (never interacted) are treated as percentile 0 by the callers."""
    items = [i for i, c in popularity.items() if c > 0]
    if not items:
        return {}
    counts = np.array([popularity[i] for i in items], dtype=np.float64)
    order = counts.argsort(kind="stable")
    ranks = np.empty(len(items), dtype=np.float64)
    ranks[order] = np.arange(1, len(items) + 1)
    # average ranks over ties so equal popularity gets equal percentile
    _, inverse, tie_counts = np.unique(counts, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = sums[inverse] / tie_counts[inverse]
    return dict(zip(items, (ranks / len(items)).tolist(), strict=True))


def mean_popularity_percentile(
    rec_lists: Iterable[Sequence[str]], percentiles: Mapping[str, float], k: int
) -> float:
    vals = [percentiles.get(item, 0.0) for recs in rec_lists for item in recs[:k]]
    return float(np.mean(vals)) if vals else 0.0


def gini(values: Sequence[float] | np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = all equal)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    total = x.sum()
    if n == 0 or total <= 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float((2.0 * (i * x).sum()) / (n * total) - (n + 1.0) / n)


def recommendation_gini(rec_lists: Iterable[Sequence[str]], catalog: Sequence[str], k: int) -> float:
    """Gini of recommendation counts over the whole catalog (items never recommended count as 0)."""
    counts = Counter(item for recs in rec_lists for item in recs[:k])
    return gini([counts.get(item, 0) for item in catalog])


def novelty(
    rec_lists: Iterable[Sequence[str]], popularity: Mapping[str, float], catalog_size: int, k: int
) -> float:
    total = float(sum(popularity.values()))
    denom = total + max(catalog_size, len(popularity))
    vals = [-math.log2((popularity.get(item, 0.0) + 1.0) / denom) for recs in rec_lists for item in recs[:k]]
    return float(np.mean(vals)) if vals else 0.0


def evaluate_lists(
    rec_lists: Sequence[Sequence[str]],
    relevants: Sequence[Mapping[str, float]],
    *,
    k: int,
    catalog: Sequence[str],
    popularity: Mapping[str, float],
    percentiles: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Every metric for one recommender over one set of queries (``rec_lists[i]`` answers query i)."""
    if len(rec_lists) != len(relevants):
        raise ValueError(f"{len(rec_lists)} recommendation lists for {len(relevants)} queries")
    n = len(rec_lists)
    out: dict[str, float] = {"queries": float(n)}
    if n == 0:
        return out | {
            m: float("nan") for m in (*ACCURACY_METRICS, "coverage", "pop_percentile", "gini", "novelty")
        }
    out["hr"] = float(np.mean([hit_rate_at_k(r, g, k) for r, g in zip(rec_lists, relevants, strict=True)]))
    out["recall"] = float(np.mean([recall_at_k(r, g, k) for r, g in zip(rec_lists, relevants, strict=True)]))
    out["ndcg"] = float(np.mean([ndcg_at_k(r, g, k) for r, g in zip(rec_lists, relevants, strict=True)]))
    out["mrr"] = float(np.mean([mrr_at_k(r, g, k) for r, g in zip(rec_lists, relevants, strict=True)]))
    out["coverage"] = catalog_coverage(rec_lists, len(catalog), k)
    pct = percentiles if percentiles is not None else popularity_percentiles(popularity)
    out["pop_percentile"] = mean_popularity_percentile(rec_lists, pct, k)
    out["gini"] = recommendation_gini(rec_lists, catalog, k)
    out["novelty"] = novelty(rec_lists, popularity, len(catalog), k)
    return out
