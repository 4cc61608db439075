"""The learned ranker (relevance_core.ranking.ranker): training on query blocks, the gate against the
retrieval-only order, save/load, grades and the metrics the gate reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from relevance_core.ranking.features import (
    ABSENT_RANK,
    FEATURES,
    Gathered,
    History,
    candidate_features,
)
from relevance_core.ranking.ranker import (
    RANKER_META,
    QueryBlock,
    Ranker,
    RankerConfig,
    evaluate_orders,
    grade,
    ranker_gate,
    train_ranker,
)
from relevance_core.ranking.sources import ItemAttributes

CFG = RankerConfig(num_threads=1, max_rounds=60)
N_ITEMS = 500
N_CANDIDATES = 30
N_ANN = 20
ANN_COL = FEATURES.index("ann_rank")


def id_only_attrs(n: int) -> ItemAttributes:
    return ItemAttributes(
        path_code=np.full(n, -1, np.int32),
        top_code=np.full(n, -1, np.int32),
        brand_code=np.full(n, -1, np.int32),
        price=np.full(n, np.nan),
        created_s=np.full(n, np.nan),
        interactions=np.zeros(n, np.float32),
        recent=np.zeros(n, np.float32),
    )


ATTRS = id_only_attrs(N_ITEMS)


def make_block(
    rng: np.random.Generator,
    target_ann_rank: int | None,
    target_covisit_best: bool,
    target_found: bool = True,
) -> QueryBlock:
    """One query: 30 candidates, the first 20 the ANN list (scores falling with the rank), 8 of them
    with co-visitation scores; the target at ``target_ann_rank`` of the ANN list (None: not from the ANN)
    and, with ``target_covisit_best``, the best co-visitation score."""
    rows = rng.choice(N_ITEMS, N_CANDIDATES + 1, replace=False)
    outside, rows = int(rows[-1]), rows[:-1].astype(np.int64)
    ann_rank = np.full(N_CANDIDATES, ABSENT_RANK, np.float32)
    ann_rank[:N_ANN] = rng.permutation(N_ANN)
    ann_score = np.where(
        ann_rank < ABSENT_RANK, 0.9 - 0.02 * ann_rank, rng.uniform(0.2, 0.5, N_CANDIDATES)
    ).astype(np.float32) + rng.normal(0, 0.001, N_CANDIDATES).astype(np.float32)
    if target_ann_rank is None:
        t = int(rng.integers(N_ANN, N_CANDIDATES))
    else:
        t = int(np.flatnonzero(ann_rank == target_ann_rank)[0])
    cv = np.zeros(N_CANDIDATES, np.float32)
    others = rng.choice(np.delete(np.arange(N_CANDIDATES), t), 8, replace=False)
    cv[others] = rng.uniform(0.05, 0.5, 8)
    cv[t] = rng.uniform(0.6, 1.0) if target_covisit_best else rng.choice([0.0, rng.uniform(0.05, 0.5)])
    order = np.argsort(-cv, kind="stable")
    cv_rank = np.full(N_CANDIDATES, ABSENT_RANK, np.float32)
    cv_rank[order] = np.arange(N_CANDIDATES)
    cv_rank[cv == 0] = ABSENT_RANK
    g = Gathered(rows, ann_rank, cv, cv * 0.5, cv_rank, np.full(N_CANDIDATES, ABSENT_RANK, np.float32))
    hist_rows = rng.choice(N_ITEMS, 3)
    hist = History(hist_rows, rng.integers(1, 4, 3), np.array([300.0, 200.0, 100.0]))
    X = candidate_features(hist, g, ann_score, ATTRS, 0.0)
    target = int(rows[t]) if target_found else outside
    return QueryBlock(X, rows, X[:, ANN_COL].copy(), target, grade(float(rng.choice([1.0, 2.0, 8.0]))))


@pytest.fixture(scope="module")
def covisit_blocks() -> list[QueryBlock]:
    """Most targets are the top co-visitation item at a poor ANN rank (5..19); some are the ANN's first;
    one query in ten has a target no source found."""
    rng = np.random.default_rng(7)
    blocks = []
    for _ in range(250):
        u = rng.random()
        if u < 0.1:
            blocks.append(make_block(rng, int(rng.integers(0, N_ANN)), False, target_found=False))
        elif u < 0.25:
            blocks.append(make_block(rng, 0, False))
        else:
            blocks.append(make_block(rng, int(rng.integers(5, N_ANN)), True))
    return blocks


@pytest.fixture(scope="module")
def covisit_fit(covisit_blocks):
    return train_ranker(covisit_blocks, CFG)


def test_ranker_that_reads_covisitation_beats_retrieval_and_ships(covisit_blocks, covisit_fit):
    fit, m = covisit_fit, covisit_fit.metrics
    assert fit.shipped is True and fit.ranker is not None, fit.reason
    assert "beats" in fit.reason and "does not beat" not in fit.reason
    assert m[f"ranked_mrr_at_{CFG.k}"] > m[f"retrieval_mrr_at_{CFG.k}"] + 30  # a large margin, not noise
    assert m[f"ranked_hr_at_{CFG.k}"] >= m[f"retrieval_hr_at_{CFG.k}"]
    # the split: 60% fit, 20% early stopping, 20% held out; queries without their target are not fitted
    # on but count as misses in the held-out metrics
    found = [(b.rows == b.target_row).any() for b in covisit_blocks]
    assert m["queries"] == 250 and m["held_out_queries"] == 50
    assert m["fit_queries"] == sum(found[:150]) < 150
    assert m["stop_queries"] == sum(found[150:200])
    assert m["candidate_recall"] == pytest.approx(100 * np.mean(found), abs=1e-3)
    assert m[f"ranked_hr_at_{CFG.k}"] <= 100 * np.mean(found[200:]) + 1e-9
    assert 1 <= m["rounds"] <= CFG.max_rounds
    top = next(iter(m["feature_gain"]))
    assert top.startswith("covisit"), m["feature_gain"]
    assert fit.ranker.meta["shipped"] is True and fit.ranker.features == FEATURES


def test_the_gate_keeps_retrieval_when_the_ann_order_is_already_perfect():
    rng = np.random.default_rng(11)
    blocks = [make_block(rng, 0, bool(rng.random() < 0.5)) for _ in range(200)]
    fit = train_ranker(blocks, CFG)
    m = fit.metrics
    assert m[f"retrieval_mrr_at_{CFG.k}"] == 100.0 and m[f"retrieval_hr_at_{CFG.k}"] == 100.0
    assert m[f"ranked_mrr_at_{CFG.k}"] <= 100.0
    assert fit.shipped is False and fit.ranker is None
    assert "does not beat" in fit.reason


def test_too_few_queries_train_nothing():
    rng = np.random.default_rng(3)
    fit = train_ranker([make_block(rng, 7, True) for _ in range(40)], CFG)
    assert fit.ranker is None and not fit.shipped and "too few" in fit.reason
    assert fit.metrics["queries"] == 40


def test_ranker_gate_on_known_cases():
    def r(hr, mrr):
        return {"hr": hr, "mrr": mrr, "queries": 100}

    assert ranker_gate(r(50.0, 30.0), r(50.0, 20.0))[0] is True  # higher MRR, same HR
    assert ranker_gate(r(60.0, 30.0), r(50.0, 20.0))[0] is True
    ok, reason = ranker_gate(r(50.0, 20.0), r(50.0, 20.0))  # a tie is not a win
    assert ok is False and "does not beat" in reason
    assert ranker_gate(r(49.9, 30.0), r(50.0, 20.0))[0] is False  # higher MRR, lower HR
    assert ranker_gate(r(70.0, 19.0), r(50.0, 20.0))[0] is False  # higher HR, lower MRR
    assert "HR 49.9 vs 50.0" in ranker_gate(r(49.9, 30.0), r(50.0, 20.0))[1]


def test_ranker_gate_on_evaluated_orders_answers_a_plain_bool():
    """The verdict goes into RankerFit.shipped and from there into the asset's metadata
    (``dg.MetadataValue.bool``, which refuses numpy booleans) and JSON files."""
    b = QueryBlock(
        X=np.zeros((3, len(FEATURES)), np.float32),
        rows=np.array([5, 6, 7]),
        ann_rank=np.array([1.0, ABSENT_RANK, 0.0], np.float32),
        target_row=5,
        target_grade=1,
    )
    retrieval = evaluate_orders([b], None, 10)  # 7, 5: MRR 50
    for scores, want in (([0.5, 0.1, 0.9], False), ([0.9, 0.1, 0.5], True)):  # a tie; a win
        ok, _ = ranker_gate(evaluate_orders([b], [np.array(scores)], 10), retrieval)
        assert ok is want
        json.dumps({"shipped": ok})


def test_evaluate_orders_retrieval_order_reads_only_ann_candidates():
    b = QueryBlock(
        X=np.zeros((3, len(FEATURES)), np.float32),
        rows=np.array([5, 6, 7]),
        ann_rank=np.array([1.0, ABSENT_RANK, 0.0], np.float32),
        target_row=6,
        target_grade=1,
    )
    assert evaluate_orders([b], None, 10) == {"hr": 0.0, "mrr": 0.0, "queries": 1}  # 6 is not an ANN row
    assert evaluate_orders([b], [np.array([0.1, 0.9, 0.5])], 10) == {"hr": 100.0, "mrr": 100.0, "queries": 1}
    b.target_row = 5
    assert evaluate_orders([b], None, 10)["mrr"] == 50.0  # ANN order 7, 5
    assert evaluate_orders([b], [np.array([0.1, 0.9, 0.5])], 10)["mrr"] == pytest.approx(100 / 3, abs=1e-3)
    assert evaluate_orders([b], [np.array([0.1, 0.9, 0.5])], 2)["hr"] == 0.0  # cut at k


def test_ranker_save_load_round_trip(tmp_path, covisit_blocks, covisit_fit):
    ranker = covisit_fit.ranker
    X = np.concatenate([b.X for b in covisit_blocks[:20]])
    ranker.save(tmp_path)
    back = Ranker.load(tmp_path)
    assert back.features == FEATURES
    assert back.meta["shipped"] is True and back.meta["metrics"]["queries"] == 250
    np.testing.assert_array_equal(back.predict(X), ranker.predict(X))
    assert back.predict(X).dtype == np.float32 and len(np.unique(back.predict(X))) > 1
    assert back.predict(X[:0]).shape == (0,)


@pytest.mark.parametrize(
    "features",
    [list(FEATURES[:-1]), list(reversed(FEATURES)), [*FEATURES, "new_feature"]],
    ids=["missing", "reordered", "extra"],
)
def test_load_refuses_a_ranker_for_other_features(tmp_path, covisit_fit, features):
    covisit_fit.ranker.save(tmp_path)
    meta = json.loads((tmp_path / RANKER_META).read_text())
    meta["features"] = features
    (tmp_path / RANKER_META).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="ranker expects features"):
        Ranker.load(tmp_path)


@pytest.mark.parametrize(
    ("weight", "expected"),
    [(1.0, 1), (2.0, 2), (4.0, 3), (8.0, 4), (10.0, 4), (0.0, 1), (0.5, 1), (3.0, 2), (100.0, 4)],
)
def test_grade(weight, expected):
    assert grade(weight) == expected
