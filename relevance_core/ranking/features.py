"""The ranker's features for one history and its candidates: one function, used by the service for a
request and by training and offline evaluation for every query, so a feature cannot mean one thing
offline and another online.

Missing values are NaN (LightGBM routes them on their own branch); a candidate a source did not return
gets that source's "absent" rank (:data:`ABSENT_RANK`) and a score of 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relevance_core.compiled import kernel
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


_C = {name: i for i, name in enumerate(FEATURES)}
# column numbers as module constants: the compiled kernel reads them as compile-time constants
_ANN_SCORE, _ANN_GAP, _ANN_RANK = _C["ann_score"], _C["ann_score_gap"], _C["ann_rank"]
_CV_SCORE, _CV_SHARE, _CV_LAST, _CV_RANK = (
    _C["covisit_score"],
    _C["covisit_share"],
    _C["covisit_last"],
    _C["covisit_rank"],
)
_IN_HIST, _H_RECENCY, _H_COUNT, _H_WEIGHT = (
    _C["in_history"],
    _C["history_recency"],
    _C["history_count"],
    _C["history_weight"],
)
_H_LAST_EVENT, _H_AGE = _C["history_last_event"], _C["history_age_s"]
_POPULARITY, _TREND, _POP_RANK, _ITEM_AGE = (
    _C["popularity"],
    _C["trend"],
    _C["popular_rank"],
    _C["item_age_days"],
)
_SAME_CAT, _CAT_SHARE, _BRAND_SHARE, _PRICE_RATIO = (
    _C["same_category_last"],
    _C["category_share"],
    _C["brand_share"],
    _C["price_ratio"],
)
_H_LENGTH, _LAST_EVENT, _LAST_AGE = _C["history_length"], _C["last_event"], _C["last_age_s"]
_ABSENT = np.float32(ABSENT_RANK)
_PER_DAY = 1.0 / _SECONDS_PER_DAY


def candidate_features(
    hist: History, g: Gathered, ann_score: np.ndarray, attrs: ItemAttributes, now_s: float
) -> np.ndarray:
    """float32 ``[len(g), N_FEATURES]`` in :data:`FEATURES` order.

    This runs on every personalised request for ~150-200 candidates, between the filters and the
    rules, and for every query of the ranker's training data: one compiled pass over the candidates
    (~15 µs; as a few dozen NumPy operations it cost ~190 µs, nearly all of it per-call overhead)."""
    F = np.full((len(g), N_FEATURES), np.nan, dtype=np.float32)
    if len(g) == 0:
        return F
    _fill(
        F,
        np.asarray(g.rows, np.int64),
        np.asarray(ann_score, np.float32),
        np.asarray(g.ann_rank, np.float32),
        np.asarray(g.covisit_score, np.float32),
        np.asarray(g.covisit_last, np.float32),
        np.asarray(g.covisit_rank, np.float32),
        np.asarray(g.popular_rank, np.float32),
        np.asarray(hist.rows, np.int64),
        hist.recency_weights(),
        np.asarray(hist.events, np.float32),
        np.asarray(hist.ages_s, np.float64),
        attrs.records,
        attrs.has_created,
        attrs.has_content,
        float(now_s),
    )
    return F


@kernel
def _fill(
    F,
    rows,
    ann_score,
    ann_rank,
    cv_score,
    cv_last,
    cv_rank,
    pop_rank,
    h_rows,
    weights,
    h_events,
    h_ages,
    items,
    has_created,
    has_content,
    now_s,
):
    n, L, n_attr = rows.shape[0], h_rows.shape[0], items.shape[0]
    # what the whole history says, once
    best_ann = ann_score.max()
    best_cv = cv_score.max()
    cv_scale = np.float32(1.0 / np.float64(best_cv)) if best_cv > 0 else np.float32(0.0)
    h_path = np.full(L, -1, np.int64)
    h_brand = np.full(L, -1, np.int64)
    h_price = np.empty(L, np.float64)
    n_known = n_path = n_brand = n_price = 0
    for j in range(L):
        r = h_rows[j]
        if 0 <= r < n_attr:
            it = items[r]
            n_known += 1
            h_path[j] = it.path_code
            h_brand[j] = it.brand_code
            n_path += it.path_code >= 0
            n_brand += it.brand_code >= 0
            p = it.price
            if np.isfinite(p) and p > 0:
                h_price[n_price] = p
                n_price += 1
    content = has_content and n_known > 0
    last_path = h_path[L - 1] if L > 0 and 0 <= h_rows[L - 1] < n_attr else -1
    path_scale = np.float32(1.0 / n_path) if n_path > 0 else np.float32(0.0)
    brand_scale = np.float32(1.0 / n_brand) if n_brand > 0 else np.float32(0.0)
    median = 0.0
    if n_price > 0:
        v = np.sort(h_price[:n_price])
        median = (v[(n_price - 1) // 2] + v[n_price // 2]) / 2.0

    for i in range(n):
        f = F[i]
        r = rows[i]
        inside = 0 <= r < n_attr
        # the sources
        f[_ANN_SCORE] = ann_score[i]
        f[_ANN_GAP] = ann_score[i] - best_ann
        f[_ANN_RANK] = ann_rank[i]
        f[_CV_SCORE] = cv_score[i]
        f[_CV_SHARE] = cv_score[i] * cv_scale
        f[_CV_LAST] = cv_last[i]
        f[_CV_RANK] = cv_rank[i]
        f[_POP_RANK] = pop_rank[i]
        # the history: latest occurrence, count and recency weight of this candidate
        count, weight, last = 0, np.float32(0.0), -1
        for j in range(L):
            if h_rows[j] == r:
                count += 1
                weight += weights[j]
                last = j
        f[_IN_HIST] = 1.0 if count else 0.0
        f[_H_COUNT] = count
        f[_H_WEIGHT] = weight
        f[_H_RECENCY] = (L - 1 - last) if count else _ABSENT
        if count:
            f[_H_LAST_EVENT] = h_events[last]
            f[_H_AGE] = h_ages[last]
        if L > 0:
            f[_H_LENGTH] = L
            f[_LAST_EVENT] = h_events[L - 1]
            f[_LAST_AGE] = h_ages[L - 1]
        # the item; rows past the end (live listings newer than the bundle) read as unknown
        inter, rec, created = np.float32(0.0), np.float32(0.0), np.nan
        path, brand, price = -1, -1, np.nan
        if inside:
            it = items[r]
            inter, rec, created = it.interactions, it.recent, it.created_s
            path, brand, price = it.path_code, it.brand_code, it.price
        log_inter = np.log1p(inter)
        f[_POPULARITY] = log_inter
        f[_TREND] = np.log1p(rec) - log_inter
        if has_created:
            f[_ITEM_AGE] = (now_s - created) * _PER_DAY
        if not content:
            continue
        # the item against the history
        if last_path >= 0 and path >= 0:
            f[_SAME_CAT] = 1.0 if path == last_path else 0.0
        if n_path > 0 and path >= 0:
            f[_CAT_SHARE] = np.sum(h_path == path) * path_scale
        if n_brand > 0 and brand >= 0:
            f[_BRAND_SHARE] = np.sum(h_brand == brand) * brand_scale
        if n_price > 0:
            ratio = np.log(price * (1.0 / median))
            if np.isfinite(ratio):
                f[_PRICE_RATIO] = ratio
