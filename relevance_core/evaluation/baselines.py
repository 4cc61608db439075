"""Baselines the model must beat, computed in the same evaluation run.

- :class:`PopularityRecommender`: the most-interacted items of the training period (weighted by event
  type), minus what the user has already seen. Strong on skewed marketplaces and the fallback the service
  uses for an empty history.
- :class:`CooccurrenceRecommender`: item-to-item co-occurrence "session kNN": items that followed the
  user's recent items in training sessions, cosine-normalised so bestsellers do not dominate every
  neighbour list, scored by the history's event weights and recency; topped up with popularity. A
  simple, hard-to-beat baseline for session-based recommendation.

Both learn only from training-split pairs, so neither sees the test period.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from relevance_core.schemas import DEFAULT_EVENT_WEIGHTS


def training_popularity(train_pairs: pd.DataFrame) -> dict[str, float]:
    """Weighted interaction mass per item in the training split: each target counts its event weight."""
    if train_pairs.empty:
        return {}
    s = train_pairs.groupby("target_item_id")["target_weight"].sum()
    return {str(k): float(v) for k, v in s.items() if v > 0}


class PopularityRecommender:
    name = "popularity"

    def __init__(self, popularity: Mapping[str, float]):
        items = sorted(popularity, key=lambda i: (-popularity[i], i))
        self.ranked: list[str] = items

    @classmethod
    def fit(cls, train_pairs: pd.DataFrame) -> PopularityRecommender:
        return cls(training_popularity(train_pairs))

    def recommend_one(self, history: Sequence[str], k: int, *, exclude_seen: bool = True) -> list[str]:
        seen = set(history) if exclude_seen else set()
        out: list[str] = []
        for item in self.ranked:
            if item not in seen:
                out.append(item)
                if len(out) == k:
                    break
        return out

    def recommend(
        self, histories: Sequence[Sequence[str]], k: int, *, exclude_seen: bool = True, **_: object
    ) -> list[list[str]]:
        return [self.recommend_one(h, k, exclude_seen=exclude_seen) for h in histories]


class CooccurrenceRecommender:
    """Directed co-occurrence ``a → b``: ``b`` was the target of a training pair with ``a`` among the last
    ``window`` history items. Score(a, b) = Σ weight / √(n_a · n_b) (cosine-style normalisation)."""

    name = "cooccurrence"

    def __init__(
        self,
        neighbours: dict[str, tuple[np.ndarray, np.ndarray]],
        popularity: PopularityRecommender,
        *,
        decay: float = 0.8,
        event_weights: Mapping[str, float] | None = None,
        max_history: int = 10,
    ):
        self.max_history = max_history
        self.neighbours = neighbours
        self.popularity = popularity
        self.decay = decay
        self.event_weights = dict(event_weights or DEFAULT_EVENT_WEIGHTS)

    @classmethod
    def fit(
        cls,
        train_pairs: pd.DataFrame,
        *,
        window: int = 5,
        max_neighbours: int = 200,
        decay: float = 0.8,
        event_weights: Mapping[str, float] | None = None,
    ) -> CooccurrenceRecommender:
        pop = PopularityRecommender.fit(train_pairs)
        if train_pairs.empty:
            return cls({}, pop, decay=decay, event_weights=event_weights)
        hist = train_pairs["hist_item_ids"].map(lambda h: list(h)[-window:] if h is not None else [])
        edges = pd.DataFrame(
            {
                "src": hist,
                "dst": train_pairs["target_item_id"].astype(str),
                "w": train_pairs["target_weight"].astype(float),
            }
        ).explode("src")
        edges = edges.dropna(subset=["src"])
        edges = edges[(edges["src"] != edges["dst"]) & (edges["w"] > 0)]
        if edges.empty:
            return cls({}, pop, decay=decay, event_weights=event_weights)
        # per (src, dst) pair, count each training pair at most once (a repeated history item is one signal)
        c = edges.groupby(["src", "dst"], sort=False)["w"].sum().reset_index()
        n_src = c.groupby("src")["w"].transform("sum")
        n_dst = c.groupby("dst")["w"].transform("sum")
        c["score"] = c["w"] / np.sqrt(n_src * n_dst)
        c = c.sort_values(["src", "score"], ascending=[True, False])
        c = c.groupby("src", sort=False).head(max_neighbours)
        neighbours = {
            str(src): (g["dst"].to_numpy(dtype=object), g["score"].to_numpy(dtype=np.float64))
            for src, g in c.groupby("src", sort=False)
        }
        return cls(neighbours, pop, decay=decay, event_weights=event_weights)

    def recommend_one(
        self,
        history: Sequence[str],
        k: int,
        *,
        event_types: Sequence[str] | None = None,
        exclude_seen: bool = True,
    ) -> list[str]:
        scores: dict[str, float] = {}
        n = len(history)
        start = max(0, n - self.max_history)  # decay**max_history is negligible: skip the tail's cost
        for pos in range(start, n):
            item = history[pos]
            nb = self.neighbours.get(item)
            if nb is None:
                continue
            w = self.decay ** (n - 1 - pos)  # most recent item weighs most
            if event_types is not None:
                w *= max(self.event_weights.get(event_types[pos], 1.0), 0.5)
            for dst, s in zip(nb[0], nb[1], strict=True):
                scores[dst] = scores.get(dst, 0.0) + w * float(s)
        seen = set(history) if exclude_seen else set()
        ranked = [i for i, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])) if i not in seen][:k]
        if len(ranked) < k:  # top up with popular items
            have = set(ranked) | seen
            for item in self.popularity.ranked:
                if item not in have:
                    ranked.append(item)
                    if len(ranked) == k:
                        break
        return ranked

    def recommend(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        *,
        event_types: Sequence[Sequence[str]] | None = None,
        exclude_seen: bool = True,
        **_: object,
    ) -> list[list[str]]:
        return [
            self.recommend_one(
                h, k, event_types=None if event_types is None else event_types[i], exclude_seen=exclude_seen
            )
            for i, h in enumerate(histories)
        ]
