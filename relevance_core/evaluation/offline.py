"""The offline evaluation protocol: queries from the time-split test pairs, every system scored on the
same queries with the same metrics, per segment.

Protocol (and why):

- **One query per test session**, at a seeded random cut point: its history is what the user had done
  before that moment (``hist_*`` of that training pair, at most L), its relevant set is the rest of the
  session (the target and every later target), each item graded by its strongest event weight. One cut per
  session keeps long sessions from dominating and keeps queries independent.
- **Seen items are excluded** from recommendations (the service's "remove seen" rule) and therefore from
  the relevant set too: an item in the history cannot be recommended, so counting it would only add noise.
- **Segments.** ``new_users``: the user has no training-split interaction (or is anonymous): the model has
  no user id embedding, so this is where session-based recommendation must still work. ``cold_items``:
  queries whose relevant set contains items with no training interaction; their relevant set is restricted
  to those items — only content features can find them.
- Popularity (for the popularity baseline, popularity bias and novelty) comes from the training split
  only, so nothing leaks from the test period.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from relevance_core.evaluation.metrics import evaluate_lists, popularity_percentiles

SEGMENTS = ("all", "new_users", "cold_items")
#: Name of the currently published bundle when it is re-scored on the same queries.
PUBLISHED = "published"
#: The model's own retrieval order (ANN only, no ranking stage): reported beside the full path, and not a
#: baseline the gate compares with (the ranker has its own gate against it).
RETRIEVAL_ONLY = "retrieval_only"
METRIC_ORDER = ("hr", "recall", "ndcg", "mrr", "coverage", "pop_percentile", "gini", "novelty")
METRIC_LABELS = {
    "hr": "HR",
    "recall": "Recall",
    "ndcg": "NDCG",
    "mrr": "MRR",
    "coverage": "Coverage",
    "pop_percentile": "Pop. pct",
    "gini": "Gini",
    "novelty": "Novelty",
}

#: ``recommend(queries_frame, k) -> list[list[item_id]]`` (one list per query row)
RecommendFn = Callable[[pd.DataFrame, int], list[list[str]]]


def _list(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, float) and math.isnan(x):
        return []
    return list(x)


def warm_items(train_pairs: pd.DataFrame) -> set[str]:
    """Items with at least one training interaction (as history or as target)."""
    out = set(train_pairs["target_item_id"].astype(str))
    for h in train_pairs["hist_item_ids"]:
        out.update(map(str, _list(h)))
    return out


def build_queries(
    test_pairs: pd.DataFrame,
    train_pairs: pd.DataFrame,
    *,
    max_queries: int | None = 5_000,
    seed: int = 0,
) -> pd.DataFrame:
    """One query per test session (see module docstring). Columns: ``session_key, user_id, hist_item_ids,
    hist_event_types, hist_age_s, query_ts, relevant (dict item→gain), cold_relevant (dict), new_user (bool)``
    (``query_ts``: when the query is asked, the cut pair's target time)."""
    cols = [
        "session_key",
        "user_id",
        "hist_item_ids",
        "hist_event_types",
        "hist_age_s",
        "query_ts",
        "relevant",
        "cold_relevant",
        "new_user",
    ]
    if test_pairs.empty:
        return pd.DataFrame(columns=cols)
    warm = warm_items(train_pairs)
    train_users = set(train_pairs["user_id"].dropna().astype(str))
    rng = np.random.default_rng(seed)
    df = test_pairs.sort_values(["session_key", "target_ts"], kind="stable").reset_index(drop=True)
    rows = []
    for _key, idx in df.groupby("session_key", sort=True).indices.items():
        idx = np.sort(idx)
        cut = int(rng.integers(0, len(idx)))
        q = df.iloc[idx[cut]]
        hist = [str(i) for i in _list(q["hist_item_ids"])]
        seen = set(hist)
        relevant: dict[str, float] = {}
        for j in idx[cut:]:
            item, w = str(df.at[j, "target_item_id"]), float(df.at[j, "target_weight"])
            if item in seen or w <= 0:
                continue
            relevant[item] = max(relevant.get(item, 0.0), w)
        if not relevant:
            continue
        uid = q["user_id"]
        uid = None if uid is None or (isinstance(uid, float) and math.isnan(uid)) else str(uid)
        rows.append(
            {
                "session_key": str(q["session_key"]),
                "user_id": uid,
                "hist_item_ids": hist,
                "hist_event_types": [str(e) for e in _list(q["hist_event_types"])],
                "hist_age_s": [float(a) for a in _list(q["hist_age_s"])],
                "query_ts": q["target_ts"] if "target_ts" in q.index else None,
                "relevant": relevant,
                "cold_relevant": {i: g for i, g in relevant.items() if i not in warm},
                "new_user": uid is None or uid not in train_users,
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    if max_queries is not None and len(out) > max_queries:
        out = out.sample(n=max_queries, random_state=seed).sort_index().reset_index(drop=True)
    return out


@dataclass
class EvaluationReport:
    k: int
    #: system → segment → metric → value
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    n_queries: int = 0
    model_name: str = "two_tower"

    def metric(self, system: str, name: str, segment: str = "all") -> float:
        return float(self.results.get(system, {}).get(segment, {}).get(name, float("nan")))

    def baselines(self) -> list[str]:
        """Systems the model must beat: everything except the model, the live bundle (``published``),
        which is a regression reference, and the model's own retrieval-only order."""
        return [s for s in self.results if s not in (self.model_name, PUBLISHED, RETRIEVAL_ONLY)]

    def best_baseline(self, metric: str = "ndcg", segment: str = "all") -> tuple[str, float]:
        cands = [(s, self.metric(s, metric, segment)) for s in self.baselines()]
        cands = [(s, v) for s, v in cands if not math.isnan(v)]
        if not cands:
            return ("none", float("-inf"))
        return max(cands, key=lambda sv: sv[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "n_queries": self.n_queries,
            "model_name": self.model_name,
            "results": self.results,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvaluationReport:
        return cls(
            k=int(d["k"]),
            results=d["results"],
            n_queries=int(d.get("n_queries", 0)),
            model_name=d.get("model_name", "two_tower"),
        )

    def summary(self) -> dict[str, float]:
        """Flat ``{"ndcg@10": ..., ...}`` of the model on all queries: what the bundle manifest records."""
        k = self.k
        return {f"{m}@{k}": self.metric(self.model_name, m) for m in METRIC_ORDER}

    def to_markdown(self) -> str:
        """One table per segment: systems as rows, metrics as columns (the Dagster UI renders it)."""
        lines = []
        for seg in SEGMENTS:
            present = [s for s in self.results if seg in self.results[s]]
            if not present:
                continue
            n = int(self.results[present[0]][seg].get("queries", 0))
            lines.append(f"**{seg}** ({n} queries, K={self.k})\n")
            header = "| system | " + " | ".join(f"{METRIC_LABELS[m]}@{self.k}" for m in METRIC_ORDER) + " |"
            lines += [header, "|" + "---|" * (len(METRIC_ORDER) + 1)]
            for s in present:
                vals = self.results[s][seg]
                cells = []
                for m in METRIC_ORDER:
                    v = vals.get(m, float("nan"))
                    cells.append("–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}")
                name = f"**{s}**" if s == self.model_name else s
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        return "\n".join(lines)


def evaluate_systems(
    systems: Mapping[str, Sequence[Sequence[str]]],
    queries: pd.DataFrame,
    *,
    k: int,
    catalog: Sequence[str],
    popularity: Mapping[str, float],
    model_name: str = "two_tower",
) -> EvaluationReport:
    """Score precomputed recommendation lists (``systems[name][i]`` answers ``queries.iloc[i]``)."""
    pct = popularity_percentiles(popularity)
    report = EvaluationReport(k=k, n_queries=len(queries), model_name=model_name)
    masks = {
        "all": np.ones(len(queries), dtype=bool),
        "new_users": queries["new_user"].to_numpy(dtype=bool) if len(queries) else np.zeros(0, bool),
        "cold_items": queries["cold_relevant"].map(bool).to_numpy(dtype=bool)
        if len(queries)
        else np.zeros(0, bool),
    }
    for name, lists in systems.items():
        if len(lists) != len(queries):
            raise ValueError(f"{name}: {len(lists)} lists for {len(queries)} queries")
        report.results[name] = {}
        for seg, mask in masks.items():
            sel = np.flatnonzero(mask)
            rel_col = "cold_relevant" if seg == "cold_items" else "relevant"
            rels = [queries[rel_col].iloc[i] for i in sel]
            recs = [list(lists[i]) for i in sel]
            report.results[name][seg] = evaluate_lists(
                recs, rels, k=k, catalog=catalog, popularity=popularity, percentiles=pct
            )
    return report


def run_evaluation(
    recommenders: Mapping[str, RecommendFn],
    queries: pd.DataFrame,
    *,
    k: int,
    catalog: Sequence[str],
    popularity: Mapping[str, float],
    model_name: str = "two_tower",
) -> EvaluationReport:
    """Ask every recommender for its top-``k`` on the same queries, then score them all."""
    lists = {name: fn(queries, k) for name, fn in recommenders.items()}
    return evaluate_systems(
        lists, queries, k=k, catalog=catalog, popularity=popularity, model_name=model_name
    )
