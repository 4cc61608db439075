"""The ranker's features for one history and its candidates: one function, used by the service for a
request and by training and offline evaluation for every query, so a feature cannot mean one thing
offline and another online.

Missing values are NaN (LightGBM routes them on their own branch); a candidate a source did not return
gets that source's "absent" rank (:data:`ABSENT_RANK`) and a score of 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relevance_core.ranking.sources import ItemAttributes

#: rank given to a candidate that a source did not return (larger than any real rank)
ABSENT_RANK = 1000.0
#: weight of the history entry ``d`` positions before the most recent one: 1, 1/2, 1/3, …
_SECONDS_PER_DAY = 86_400.0

FEATURES: tuple[str, ...] = (
    # the two-tower source
    "ann_score",  # cosine of the user vector and the item vector (computed for every candidate)
    "ann_score_gap",  # ann_score minus the best ann_score among the candidates
    "ann_rank",  # rank in the ANN list (ABSENT_RANK when the ANN did not return it)
    # the co-visitation source
    "covisit_score",  # sum over the history of recency weight x co-visitation score
    "covisit_share",  # covisit_score / the best covisit_score among the candidates
    "covisit_last",  # co-visitation score from the most recent history item alone
    "covisit_rank",
    # the history ("more from what you viewed")
    "in_history",
    "history_recency",  # positions before the most recent entry of the candidate's latest occurrence
    "history_count",
    "history_weight",  # sum of recency weights of the candidate's occurrences
    "history_last_event",  # event code of the candidate's latest occurrence (NaN: not in the history)
    "history_age_s",  # age of the candidate's latest occurrence
    # popularity and trend
    "popularity",  # log1p(training interactions)
    "trend",  # log((recent + 1) / (all-time + 1)): rising items are positive-ish
    "popular_rank",  # rank in the popular source of the history's category
    # the item against the history
    "item_age_days",
    "same_category_last",  # same category path as the most recent history item (NaN: unknown)
    "category_share",  # share of the history's known categories equal to the candidate's
    "brand_share",
    "price_ratio",  # log(price / median price of the history)
    # the history itself
    "history_length",
    "last_event",  # event code of the most recent interaction
    "last_age_s",
)
N_FEATURES = len(FEATURES)


@dataclass(frozen=True)
class History:
    """One user's recent interactions, oldest first, as bundle rows (-1: an item the bundle lacks)."""

    rows: np.ndarray  # int64
    events: np.ndarray  # int event codes (``EVENT_TYPE_CODES``)
    ages_s: np.ndarray  # float64, seconds before now

    def __len__(self) -> int:
        return len(self.rows)

    def recency_weights(self) -> np.ndarray:
        """1 for the most recent entry, 1/2 for the one before, …"""
        n = len(self.rows)
        return (1.0 / np.arange(n, 0, -1, dtype=np.float64)).astype(np.float32)


@dataclass
class Gathered:
    """The union of the sources for one history: distinct rows and what each source said of them."""

    rows: np.ndarray  # int64, distinct
    ann_rank: np.ndarray  # float32
    covisit_score: np.ndarray  # float32
    covisit_last: np.ndarray  # float32
    covisit_rank: np.ndarray  # float32
    popular_rank: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.rows)


_COL = {name: i for i, name in enumerate(FEATURES)}


def _share(hist_codes: np.ndarray, cand_codes: np.ndarray) -> np.ndarray:
    known = hist_codes[hist_codes >= 0]
    if len(known) == 0:
        return np.full(len(cand_codes), np.nan)
    out = (cand_codes[:, None] == known).sum(axis=1) * np.float32(1.0 / len(known))
    out[cand_codes < 0] = np.nan
    return out


def _median(values: np.ndarray) -> float:
    v = np.sort(values)
    m = len(v)
    return float(v[(m - 1) // 2] + v[m // 2]) / 2.0


def candidate_features(
    hist: History, g: Gathered, ann_score: np.ndarray, attrs: ItemAttributes, now_s: float
) -> np.ndarray:
    """float32 ``[len(g), N_FEATURES]`` in :data:`FEATURES` order.

    Written for one request's ~150-200 candidates: a few dozen vectorised operations, no Python loop
    over candidates (this runs on every personalised request, between the filters and the rules). The
    features are filled as rows of a ``[N_FEATURES, n]`` array (contiguous writes) and transposed once."""
    n = len(g)
    F = np.full((N_FEATURES, n), np.nan, dtype=np.float32)
    if n == 0:
        return np.ascontiguousarray(F.T)
    c = _COL
    rows = g.rows
    F[c["ann_score"]] = ann_score
    F[c["ann_score_gap"]] = ann_score - ann_score.max()
    F[c["ann_rank"]] = g.ann_rank
    F[c["covisit_score"]] = g.covisit_score
    best = float(g.covisit_score.max())
    F[c["covisit_share"]] = g.covisit_score * np.float32(1.0 / best) if best > 0 else 0.0
    F[c["covisit_last"]] = g.covisit_last
    F[c["covisit_rank"]] = g.covisit_rank
    F[c["popular_rank"]] = g.popular_rank

    # the history: latest occurrence, count and recency weight per candidate
    L = len(hist)
    F[[c["in_history"], c["history_count"], c["history_weight"]]] = 0.0
    F[c["history_recency"]] = ABSENT_RANK
    if L:
        match = rows[:, None] == hist.rows  # [n, L]
        sel = np.flatnonzero(match.any(axis=1))
        if len(sel):
            m = match[sel]
            last_pos = (L - 1) - np.argmax(m[:, ::-1], axis=1)
            F[c["in_history"], sel] = 1.0
            F[c["history_count"], sel] = m.sum(axis=1)
            F[c["history_weight"], sel] = m @ hist.recency_weights()
            F[c["history_recency"], sel] = (L - 1) - last_pos
            F[c["history_last_event"], sel] = hist.events[last_pos]
            F[c["history_age_s"], sel] = hist.ages_s[last_pos]
        F[c["history_length"]] = L
        F[c["last_event"]] = hist.events[-1]
        F[c["last_age_s"]] = hist.ages_s[-1]

    # item attributes; rows past the end (live listings newer than the bundle) read as unknown
    inside = rows < len(attrs)
    all_inside = bool(inside.all())
    r = rows if all_inside else np.where(inside, rows, 0)

    def take(values: np.ndarray, fill: float) -> np.ndarray:
        got = values[r]
        return got if all_inside else np.where(inside, got, fill)

    log_inter = np.log1p(take(attrs.interactions, 0.0))
    F[c["popularity"]] = log_inter
    F[c["trend"]] = np.log1p(take(attrs.recent, 0.0)) - log_inter
    if attrs.has_created:
        F[c["item_age_days"]] = (now_s - take(attrs.created_s, np.nan)) * (1.0 / _SECONDS_PER_DAY)

    hist_rows = hist.rows[(hist.rows >= 0) & (hist.rows < len(attrs))]
    if len(hist_rows) and attrs.has_content:
        path = take(attrs.path_code, -1)
        hist_path = attrs.path_code[hist_rows]
        last_known = 0 <= hist.rows[-1] < len(attrs)
        if last_known and hist_path[-1] >= 0:
            same = (path == hist_path[-1]).astype(np.float32)
            same[path < 0] = np.nan
            F[c["same_category_last"]] = same
        F[c["category_share"]] = _share(hist_path, path)
        F[c["brand_share"]] = _share(attrs.brand_code[hist_rows], take(attrs.brand_code, -1))
        hist_price = attrs.price[hist_rows]
        hist_price = hist_price[np.isfinite(hist_price) & (hist_price > 0)]
        if len(hist_price):
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.log(take(attrs.price, np.nan) * (1.0 / _median(hist_price)))
            ratio[~np.isfinite(ratio)] = np.nan
            F[c["price_ratio"]] = ratio
    return np.ascontiguousarray(F.T)
