"""The ranker's features (relevance_core.ranking.features), the stage's candidate union
(relevance_core.ranking.stage) and the batch path (relevance_core.ranking.batch), which must compute
exactly what the service computes for one request."""

from __future__ import annotations

import math

import numpy as np
import pytest

from relevance_core.ranking.batch import BatchInputs, history_of, query_blocks, rank_batch
from relevance_core.ranking.covisit import Covisitation
from relevance_core.ranking.features import (
    ABSENT_RANK,
    FEATURES,
    N_FEATURES,
    Gathered,
    History,
    candidate_features,
)
from relevance_core.ranking.ranker import FEATURES as RANKER_FEATURES
from relevance_core.ranking.ranker import Ranker, grade
from relevance_core.ranking.sources import ItemAttributes, PopularByCategory
from relevance_core.ranking.stage import RankingStage, StageConfig
from relevance_core.schemas import EVENT_TYPE_CODES


def F(name: str) -> int:
    return FEATURES.index(name)


def attrs_of(path, top=None, brand=None, price=None, created=None, interactions=None, recent=None):
    n = len(path)
    return ItemAttributes(
        path_code=np.asarray(path, np.int32),
        top_code=np.asarray(path if top is None else top, np.int32),
        brand_code=np.asarray([-1] * n if brand is None else brand, np.int32),
        price=np.asarray([np.nan] * n if price is None else price, np.float64),
        created_s=np.asarray([np.nan] * n if created is None else created, np.float64),
        interactions=np.asarray([0] * n if interactions is None else interactions, np.float32),
        recent=np.asarray([0] * n if recent is None else recent, np.float32),
    )


def gathered(rows, ann_rank=None, cv=None, cv_last=None, cv_rank=None, pop_rank=None) -> Gathered:
    n = len(rows)

    def arr(v, fill):
        return np.asarray([fill] * n if v is None else v, np.float32)

    return Gathered(
        rows=np.asarray(rows, np.int64),
        ann_rank=arr(ann_rank, ABSENT_RANK),
        covisit_score=arr(cv, 0.0),
        covisit_last=arr(cv_last, 0.0),
        covisit_rank=arr(cv_rank, ABSENT_RANK),
        popular_rank=arr(pop_rank, ABSENT_RANK),
    )


# -- candidate_features ------------------------------------------------------------------------------

NOW = 1_700_000_000.0
#            row:    0     1      2     3     4     5 (6 is past the end: a live listing)
ATTRS = attrs_of(
    path=[10, 11, 10, 12, -1, 11],
    brand=[1, 2, 1, -1, 2, 1],
    price=[10.0, 20.0, 40.0, np.nan, 20.0, 0.0],
    created=[NOW - 86_400 * 3, NOW, np.nan, NOW - 43_200, NOW, NOW],
    interactions=[9, 0, 3, 0, 0, 0],
    recent=[1, 0, 3, 0, 0, 0],
)
#: oldest first: row 1 (view), 0 (click), 1 (favourite), unknown (-1), 2 (contact)
HIST = History(
    rows=np.array([1, 0, 1, -1, 2]),
    events=np.array([1, 2, 3, 4, 5]),
    ages_s=np.array([500.0, 400.0, 300.0, 200.0, 100.0]),
)


def features_for(rows, **g):
    ann_score = np.linspace(0.9, 0.1, len(rows)).astype(np.float32)
    return candidate_features(HIST, gathered(rows, **g), ann_score, ATTRS, NOW), ann_score


def test_history_features_of_a_candidate_seen_twice():
    X, _ = features_for([1, 3, 2])
    r1, r3, r2 = X
    assert r1[F("in_history")] == 1.0
    assert r1[F("history_count")] == 2.0
    # latest occurrence at position 2 of 5: two entries after it (the unknown one counts as an entry)
    assert r1[F("history_recency")] == 2.0
    assert r1[F("history_last_event")] == 3.0  # the event of the latest occurrence, not the first
    assert r1[F("history_age_s")] == 300.0
    assert r1[F("history_weight")] == pytest.approx(1 / 5 + 1 / 3)
    assert r2[F("history_recency")] == 0.0 and r2[F("history_weight")] == pytest.approx(1.0)
    # not in the history
    assert r3[F("in_history")] == 0.0 and r3[F("history_count")] == 0.0
    assert r3[F("history_recency")] == ABSENT_RANK
    assert math.isnan(r3[F("history_last_event")]) and math.isnan(r3[F("history_age_s")])
    # the history itself, the same for every candidate
    assert (X[:, F("history_length")] == 5).all()
    assert (X[:, F("last_event")] == 5).all() and (X[:, F("last_age_s")] == 100).all()


def test_source_features_shares_and_gap():
    X, ann_score = features_for(
        [0, 3, 5],
        ann_rank=[0, ABSENT_RANK, 4],
        cv=[0.5, 2.0, 0.0],
        cv_last=[0.1, 0, 0],
        cv_rank=[1, 0, ABSENT_RANK],
    )
    np.testing.assert_allclose(X[:, F("covisit_share")], [0.25, 1.0, 0.0])
    np.testing.assert_allclose(X[:, F("ann_score")], ann_score)
    np.testing.assert_allclose(X[:, F("ann_score_gap")], ann_score - ann_score.max())
    assert X[0, F("ann_score_gap")] == 0.0 and (X[1:, F("ann_score_gap")] < 0).all()
    assert X[:, F("ann_rank")].tolist() == [0.0, ABSENT_RANK, 4.0]
    assert X[:, F("covisit_rank")].tolist() == [1.0, 0.0, ABSENT_RANK]
    assert X[0, F("covisit_last")] == pytest.approx(0.1)
    # no co-visitation at all: shares are 0, not NaN
    X0, _ = features_for([0, 3])
    assert X0[:, F("covisit_share")].tolist() == [0.0, 0.0]


def test_item_against_history_features():
    X, _ = features_for([0, 1, 2, 3, 4, 5])
    # the most recent known history item is row 2 (path 10); the last entry is row 2 itself
    assert X[:, F("same_category_last")][:4].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert math.isnan(X[4, F("same_category_last")])  # candidate of unknown category
    # history paths (known rows 1, 0, 1, 2): 11, 10, 11, 10
    np.testing.assert_allclose(X[[0, 1, 3, 5], F("category_share")], [0.5, 0.5, 0.0, 0.5])
    assert math.isnan(X[4, F("category_share")])
    # history brands 2, 1, 2, 1
    np.testing.assert_allclose(X[[0, 1, 4], F("brand_share")], [0.5, 0.5, 0.5])
    assert math.isnan(X[3, F("brand_share")])
    # history prices 20, 10, 20, 40 → median 20
    np.testing.assert_allclose(X[:3, F("price_ratio")], np.log([10 / 20, 20 / 20, 40 / 20]), rtol=1e-6)
    assert math.isnan(X[3, F("price_ratio")])  # unknown price
    assert math.isnan(X[5, F("price_ratio")])  # price 0: log would be -inf
    np.testing.assert_allclose(X[[0, 3], F("item_age_days")], [3.0, 0.5])
    assert math.isnan(X[2, F("item_age_days")])
    np.testing.assert_allclose(X[[0, 2], F("popularity")], np.log1p([9, 3]), rtol=1e-6)
    np.testing.assert_allclose(X[[0, 2], F("trend")], [np.log(2 / 10), 0.0], atol=1e-6)


def test_rows_past_the_end_of_the_attributes_are_unknown_not_an_error():
    X, _ = features_for([6, 0])  # row 6: a live listing newer than the bundle (6 item rows)
    live = X[0]
    for name in ("same_category_last", "category_share", "brand_share", "price_ratio", "item_age_days"):
        assert math.isnan(live[F(name)]), name
    assert live[F("popularity")] == 0.0 and live[F("trend")] == 0.0
    assert X[1, F("same_category_last")] == 1.0  # the known row next to it is unaffected


def test_history_with_unknown_last_entry_and_no_history():
    hist = History(np.array([0, 7]), np.array([1, 1]), np.array([2.0, 1.0]))  # 7: past the end
    X = candidate_features(hist, gathered([0, 2]), np.zeros(2, np.float32), ATTRS, NOW)
    assert np.isnan(X[:, F("same_category_last")]).all()  # the last entry's category is unknown
    assert X[:, F("category_share")].tolist() == [1.0, 1.0]  # row 0's path 10 is still known
    empty = History(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    X = candidate_features(empty, gathered([0, 2]), np.zeros(2, np.float32), ATTRS, NOW)
    assert X.shape == (2, N_FEATURES) and X.dtype == np.float32
    assert X[:, F("in_history")].tolist() == [0.0, 0.0]
    assert X[:, F("history_recency")].tolist() == [ABSENT_RANK, ABSENT_RANK]
    for name in ("history_length", "last_event", "category_share", "price_ratio", "same_category_last"):
        assert np.isnan(X[:, F(name)]).all(), name
    none = candidate_features(empty, gathered([]), np.zeros(0, np.float32), ATTRS, NOW)
    assert none.shape == (0, N_FEATURES)


# -- RankingStage.candidates -------------------------------------------------------------------------


def csr(n_items: int, edges: dict[int, list[tuple[int, float]]]) -> Covisitation:
    indptr, nb, sc = [0], [], []
    for r in range(n_items):
        for d, s in sorted(edges.get(r, []), key=lambda e: -e[1]):
            nb.append(d)
            sc.append(s)
        indptr.append(len(nb))
    return Covisitation(np.array(indptr, np.int64), np.array(nb, np.int64), np.array(sc, np.float32))


def small_stage(cfg: StageConfig) -> RankingStage:
    #           row:  0  1  2  3  4  5  6  7  8  9 10 11
    top = [0, 1, 0, 1, 0, 1, 2, 0, 0, 1, 2, 2]
    recent = [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 3]
    attrs = attrs_of(path=top, top=top, recent=recent, interactions=recent)
    covisit = csr(12, {5: [(7, 1.0), (0, 0.6)], 6: [(8, 0.5), (9, 0.4), (1, 0.3)]})
    return RankingStage(attrs, covisit, PopularByCategory.build(attrs, top_k=20), None, cfg)


CFG = StageConfig(ann_k=3, covisit_k=2, popular_k=2, history_k=2)


def test_candidates_are_ann_then_covisit_then_history_then_popular_distinct():
    stage = small_stage(CFG)
    # history (oldest first): 5, unknown, 6, 99 (past the end: unknown too)
    hist = History(np.array([5, -1, 6, 99]), np.ones(4, np.int64), np.array([4.0, 3.0, 2.0, 1.0]))
    got = stage.candidates(hist, np.array([0, 1, 2, 3, 4]))
    # ANN: 0 1 2 (ann_k = 3; 3 and 4 are cut)
    # co-visitation, recency weights 1/4 (row 5) and 1/2 (row 6): 7 .25, 8 .25, 9 .2, 0 .15, 1 .15
    #   → the best two (a tie keeps row order): 7, 8
    # history, most recent first: 6, 5
    # popular in row 6's category (2): 10, 11
    assert got.tolist() == [0, 1, 2, 7, 8, 6, 5, 10, 11]
    assert -1 not in got and 99 not in got
    assert len(set(got.tolist())) == len(got)


def test_candidates_deduplicate_across_sources_keeping_the_first_place():
    stage = small_stage(CFG)
    hist = History(np.array([6, 5, 6]), np.ones(3, np.int64), np.array([3.0, 2.0, 1.0]))
    got = stage.candidates(hist, np.array([8, 6, 10]))
    # co-visitation (weights 1/3, 1/2, 1: row 6 twice): 8 (.5 x 4/3), 9 (.4 x 4/3), then 7 (.5) is cut
    # history, most recent first: 6 (ANN), 5; popular of category 2: 10 (ANN), 11
    assert got.tolist() == [8, 6, 10, 9, 5, 11]


def test_anonymous_empty_history_gets_the_popular_items_overall():
    stage = small_stage(CFG)
    empty = History(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    assert stage.candidates(empty, np.array([3, 4, 2, 1])).tolist() == [3, 4, 2, 10, 0]
    unknown_only = History(np.array([-1, 50]), np.ones(2, np.int64), np.array([2.0, 1.0]))
    assert stage.candidates(unknown_only, np.array([3])).tolist() == [3, 10, 0]


def test_gather_reports_each_source_for_any_rows():
    stage = small_stage(CFG)
    hist = History(np.array([5, -1, 6]), np.ones(3, np.int64), np.array([3.0, 2.0, 1.0]))
    g = stage.gather(hist, np.array([8, 7, 0, 10, 4]), np.array([4, 0, 3]))
    assert g.ann_rank.tolist() == [ABSENT_RANK, ABSENT_RANK, 1.0, ABSENT_RANK, 0.0]
    # weights: row 5 → 1/3, row 6 → 1
    # aggregated: 8 .5, 9 .4, 7 1/3, 1 .3, 0 .2
    np.testing.assert_allclose(g.covisit_score, [0.5, 1 / 3, 0.2, 0.0, 0.0], rtol=1e-6)
    assert g.covisit_rank.tolist() == [0.0, 2.0, 4.0, ABSENT_RANK, ABSENT_RANK]
    np.testing.assert_allclose(g.covisit_last, [0.5, 0.0, 0.0, 0.0, 0.0])  # from row 6 alone
    assert g.popular_rank.tolist() == [ABSENT_RANK, ABSENT_RANK, ABSENT_RANK, 0.0, ABSENT_RANK]


# -- offline = online --------------------------------------------------------------------------------


def random_stage_and_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    n, d, q = 40, 8, 6
    top = rng.integers(-1, 3, n)
    attrs = attrs_of(
        path=rng.integers(-1, 6, n),
        top=top,
        brand=rng.integers(-1, 4, n),
        price=np.where(rng.random(n) < 0.2, np.nan, rng.uniform(1, 100, n)),
        created=1_000_000.0 - rng.uniform(0, 1e6, n),
        interactions=rng.integers(0, 20, n),
        recent=rng.integers(0, 5, n),
    )
    edges = {
        r: [(int(x), float(s)) for x, s in zip(rng.choice(n, 5, replace=False), rng.random(5), strict=True)]
        for r in range(n)
    }
    cfg = StageConfig(ann_k=8, covisit_k=5, popular_k=4, history_k=3)
    stage = RankingStage(attrs, csr(n, edges), PopularByCategory.build(attrs, cfg.popular_k), None, cfg)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    item_ids = [f"i{r}" for r in range(n)]
    row_of = {i: r for r, i in enumerate(item_ids)}
    histories = []
    for _ in range(q - 1):
        length = int(rng.integers(1, 6))
        ids = [item_ids[r] for r in rng.integers(0, n, length)] + (["gone"] if rng.random() < 0.5 else [])
        events = rng.choice(["view", "click", "purchase"], len(ids)).tolist()
        histories.append(history_of(row_of, ids, events, np.arange(len(ids), 0, -1) * 60.0))
    histories.append(history_of(row_of, [], [], []))  # an anonymous first request
    user = rng.normal(size=(q, d)).astype(np.float32)
    ann = np.argsort(-(user @ emb.T), axis=1)[:, :12].astype(np.int64)
    ann[1, 10:] = -1  # a short ANN answer, -1 padded
    inp = BatchInputs(histories, user, ann, emb, np.full(q, 1_000_500.0))
    return stage, inp


def tiny_ranker(seed: int = 0) -> Ranker:
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, N_FEATURES)).astype(np.float32)
    y = (X[:, F("ann_score")] + X[:, F("covisit_score")] + 0.3 * rng.normal(size=400) > 1).astype(int)
    params = {"objective": "lambdarank", "num_leaves": 4, "min_data_in_leaf": 5, "verbosity": -1}
    params |= {"num_threads": 1, "deterministic": True, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(X, label=y, group=[20] * 20), num_boost_round=10)
    return Ranker(booster, RANKER_FEATURES)


def test_history_of_maps_ids_and_event_types():
    h = history_of({"a": 0, "b": 3}, ["b", "zz", "a"], ["click", "view", "purchase"], [3.0, 2.0, 1.0])
    assert h.rows.tolist() == [3, -1, 0]
    assert h.events.tolist() == [EVENT_TYPE_CODES[e] for e in ("click", "view", "purchase")]
    assert h.ages_s.tolist() == [3.0, 2.0, 1.0]


def test_query_blocks_compute_what_the_service_computes_for_one_request():
    stage, inp = random_stage_and_inputs()
    targets = np.arange(len(inp))
    weights = np.array([1.0, 2.0, 4.0, 8.0, 10.0, 1.0])
    blocks = query_blocks(stage, inp, targets, weights)
    assert len(blocks) == len(inp)
    for i, b in enumerate(blocks):
        hist, ann = inp.histories[i], inp.ann_rows[i][inp.ann_rows[i] >= 0]
        rows = stage.candidates(hist, ann)  # the service: its candidates, then features for them
        ann_score = (inp.embeddings[rows] @ inp.user_vecs[i]).astype(np.float32)
        X = stage.features(hist, rows, ann, ann_score, float(inp.now_s[i]))
        np.testing.assert_array_equal(b.rows, rows)
        np.testing.assert_array_equal(b.X, X)  # NaN == NaN here
        np.testing.assert_array_equal(b.ann_rank, X[:, F("ann_rank")])
        assert b.target_row == i and b.target_grade == grade(weights[i])
        assert (b.ann_rank < ABSENT_RANK).sum() == min(len(ann), stage.cfg.ann_k)
        assert not np.isin(-1, b.rows)


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_rank_batch_orders_by_the_stage_score(exclude_seen):
    stage, inp = random_stage_and_inputs(1)
    stage.ranker = tiny_ranker()
    k = 7
    tops = rank_batch(stage, inp, k, exclude_seen=exclude_seen, chunk=4)  # chunks of 4 and 2 queries
    assert len(tops) == len(inp)
    for i, top in enumerate(tops):
        hist, ann = inp.histories[i], inp.ann_rows[i][inp.ann_rows[i] >= 0]
        rows = stage.candidates(hist, ann)
        s = stage.score(hist, rows, ann, inp.user_vecs[i], lambda r: inp.embeddings[r], float(inp.now_s[i]))
        order = rows[np.argsort(-s, kind="stable")]
        if exclude_seen:
            order = order[~np.isin(order, hist.rows)]
        np.testing.assert_array_equal(top, order[:k])
    # the ranker changes the order somewhere (otherwise this test would compare the ANN list to itself)
    plain = rank_batch(stage, inp, k, exclude_seen=exclude_seen, use_ranker=False)
    assert any(not np.array_equal(a, b) for a, b in zip(tops, plain, strict=True))


def test_rank_batch_without_ranker_is_the_ann_list():
    stage, inp = random_stage_and_inputs(2)
    tops = rank_batch(stage, inp, 5, exclude_seen=True)
    for i, top in enumerate(tops):
        ann = inp.ann_rows[i][inp.ann_rows[i] >= 0]
        np.testing.assert_array_equal(top, ann[~np.isin(ann, inp.histories[i].rows)][:5])


def test_score_without_ranker_puts_other_sources_below_every_ann_candidate():
    stage, inp = random_stage_and_inputs(3)
    hist, ann = inp.histories[0], inp.ann_rows[0]
    rows = stage.candidates(hist, ann)
    s = stage.score(hist, rows, ann, inp.user_vecs[0], lambda r: inp.embeddings[r], 0.0)
    in_ann = np.isin(rows, ann[: stage.cfg.ann_k])
    assert in_ann.any() and (~in_ann).any()
    assert s[in_ann].min() > s[~in_ann].max()
    np.testing.assert_allclose(s[in_ann], inp.embeddings[rows[in_ann]] @ inp.user_vecs[0], rtol=1e-6)
