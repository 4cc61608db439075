"""Metrics and baselines on hand-computed cases (each expected number worked out by hand)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from relevance_core.evaluation import metrics as M
from relevance_core.evaluation.baselines import CooccurrenceRecommender, PopularityRecommender
from relevance_core.evaluation.gates import ann_recall, beats_baselines, not_worse_than_published
from relevance_core.evaluation.offline import EvaluationReport, build_queries, evaluate_systems

RECS = ["a", "b", "c", "d"]


def test_hit_rate_and_recall():
    rel = {"c": 10.0, "a": 1.0}
    assert M.hit_rate_at_k(RECS, rel, 1) == 1.0
    assert M.hit_rate_at_k(RECS, {"d": 1.0}, 3) == 0.0
    assert M.recall_at_k(RECS, rel, 2) == 0.5
    assert M.recall_at_k(RECS, rel, 3) == 1.0
    assert M.recall_at_k(RECS, {"a": 1, "x": 1, "y": 1}, 4) == pytest.approx(1 / 3)


def test_ndcg_is_graded_by_event_weight():
    rel = {"c": 10.0, "a": 1.0}
    # DCG = 1/log2(2) + 10/log2(4) = 6; IDCG = 10/log2(2) + 1/log2(3)
    assert M.ndcg_at_k(RECS, rel, 3) == pytest.approx(6 / (10 + 1 / math.log2(3)))
    # putting the purchase first is better than putting the view first
    assert M.ndcg_at_k(["c", "a"], rel, 2) == pytest.approx(1.0)
    assert M.ndcg_at_k(["a", "c"], rel, 2) < 0.8
    assert M.ndcg_at_k(RECS, {"z": 4.0}, 4) == 0.0
    # a duplicate recommendation earns nothing the second time
    assert M.ndcg_at_k(["c", "c"], {"c": 1.0, "e": 1.0}, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_mrr():
    assert M.mrr_at_k(RECS, {"c": 10.0}, 4) == pytest.approx(1 / 3)
    assert M.mrr_at_k(RECS, {"c": 10.0}, 2) == 0.0
    assert M.mrr_at_k(RECS, {"b": 1.0, "d": 1.0}, 4) == 0.5


def test_coverage_gini_popularity_novelty():
    assert M.catalog_coverage([["a", "b"], ["a", "c"]], 10, 2) == pytest.approx(0.3)
    assert M.catalog_coverage([["a", "b"], ["a", "c"]], 10, 1) == pytest.approx(0.1)
    assert M.gini([0, 0, 0, 10]) == pytest.approx(0.75)
    assert M.gini([3, 3, 3]) == pytest.approx(0.0)
    assert M.recommendation_gini([["a"], ["a"]], ["a", "b"], 1) == pytest.approx(0.5)
    pct = M.popularity_percentiles({"a": 10, "b": 5, "c": 5, "d": 1})
    assert pct == pytest.approx({"a": 1.0, "b": 0.625, "c": 0.625, "d": 0.25})
    assert M.mean_popularity_percentile([["a", "d"], ["zz"]], pct, 2) == pytest.approx((1.0 + 0.25 + 0.0) / 3)
    # p(a) = (3+1)/(4+4) = 1/2 -> 1 bit; p(b) = 2/8 -> 2 bits; unseen 1/8 -> 3 bits
    assert M.novelty([["a", "b", "x"]], {"a": 3, "b": 1}, 4, 3) == pytest.approx(2.0)


def test_evaluate_lists_averages_over_queries():
    out = M.evaluate_lists(
        [["a", "b"], ["c", "d"]], [{"b": 1.0}, {"x": 1.0}], k=2, catalog=list("abcdx"), popularity={"a": 1}
    )
    assert out["hr"] == 0.5
    assert out["mrr"] == pytest.approx(0.25)
    assert out["coverage"] == pytest.approx(4 / 5)
    with pytest.raises(ValueError):
        M.evaluate_lists([["a"]], [], k=1, catalog=["a"], popularity={})


def _train_pairs():
    rows = [
        # (user, session, hist, target, weight)
        ("u1", "s1", ["a"], "b", 1.0),
        ("u1", "s1", ["a", "b"], "c", 10.0),
        ("u2", "s2", ["a"], "b", 2.0),
        ("u2", "s2", ["d"], "e", 1.0),
        ("u3", "s3", ["x"], "b", 1.0),
    ]
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "session_key": [r[1] for r in rows],
            "hist_item_ids": [r[2] for r in rows],
            "hist_event_types": [["view"] * len(r[2]) for r in rows],
            "hist_age_s": [[10.0] * len(r[2]) for r in rows],
            "target_item_id": [r[3] for r in rows],
            "target_event_type": ["view"] * len(rows),
            "target_weight": [r[4] for r in rows],
            "target_ts": pd.date_range("2026-01-01", periods=len(rows), freq="h", tz="UTC"),
            "split": ["train"] * len(rows),
        }
    )


def test_popularity_baseline_excludes_seen():
    pop = PopularityRecommender.fit(_train_pairs())
    # mass: b = 1+2+1 = 4, c = 10, e = 1
    assert pop.ranked == ["c", "b", "e"]
    assert pop.recommend([["c"]], 2) == [["b", "e"]]
    assert pop.recommend([["c"]], 2, exclude_seen=False) == [["c", "b"]]


def test_cooccurrence_baseline_follows_transitions():
    co = CooccurrenceRecommender.fit(_train_pairs())
    # after "a" came b (w 1+2) and c (w 10); after "d" came e
    recs = co.recommend([["d"]], 1)
    assert recs == [["e"]]
    recs = co.recommend([["a"]], 3)
    assert set(recs[0][:2]) == {"b", "c"} and "a" not in recs[0]
    # an unknown history falls back to popularity
    assert co.recommend([["zzz"]], 2) == [["c", "b"]]


def test_build_queries_rest_of_session_and_segments():
    train = _train_pairs()
    test = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", None],
            "session_key": ["t1", "t1", "t1", "t2"],
            "hist_item_ids": [["a"], ["a", "b"], ["a", "b", "new1"], ["c"]],
            "hist_event_types": [["view"], ["view"] * 2, ["view"] * 3, ["view"]],
            "hist_age_s": [[1.0], [2.0, 1.0], [3.0, 2.0, 1.0], [5.0]],
            "target_item_id": ["b", "new1", "c", "coldX"],
            "target_weight": [1.0, 4.0, 10.0, 2.0],
            "target_ts": pd.date_range("2026-02-01", periods=4, freq="min", tz="UTC"),
            "split": ["test"] * 4,
        }
    )
    q = build_queries(test, train, max_queries=None, seed=0).set_index("session_key")
    assert len(q) == 2
    t2 = q.loc["t2"]
    assert t2["relevant"] == {"coldX": 2.0} and t2["cold_relevant"] == {"coldX": 2.0} and t2["new_user"]
    t1 = q.loc["t1"]
    assert not t1["new_user"]
    seen = set(t1["hist_item_ids"])
    # relevant = every later target not already in the history, graded by its weight
    expected = {i: w for i, w in (("b", 1.0), ("new1", 4.0), ("c", 10.0)) if i not in seen}
    n_hist = len(t1["hist_item_ids"])
    later = {1: {"b": 1.0, "new1": 4.0, "c": 10.0}, 2: {"new1": 4.0, "c": 10.0}, 3: {"c": 10.0}}[n_hist]
    assert t1["relevant"] == {i: w for i, w in later.items() if i in expected}
    assert set(t1["cold_relevant"]) == {"new1"} & set(t1["relevant"])


def test_report_segments_and_gates():
    queries = pd.DataFrame(
        {
            "relevant": [{"a": 1.0}, {"b": 10.0}],
            "cold_relevant": [{}, {"b": 10.0}],
            "new_user": [True, False],
        }
    )
    systems = {"two_tower": [["a", "x"], ["b", "y"]], "popularity": [["x", "a"], ["y", "z"]]}
    rep = evaluate_systems(systems, queries, k=2, catalog=list("abxyz"), popularity={"x": 5, "y": 3})
    assert rep.metric("two_tower", "ndcg") == pytest.approx(1.0)
    assert rep.metric("popularity", "ndcg", "new_users") == pytest.approx(1 / math.log2(3))
    assert rep.metric("two_tower", "hr", "cold_items") == 1.0
    assert rep.results["two_tower"]["cold_items"]["queries"] == 1
    assert "| **two_tower** |" in rep.to_markdown()
    assert beats_baselines(rep).passed
    assert not beats_baselines(rep, min_margin=0.9).passed
    assert EvaluationReport.from_dict(rep.to_dict()).summary() == rep.summary()
    assert not_worse_than_published(rep, None).passed
    assert not_worse_than_published(rep, {"ndcg@2": 1.01}, tolerance=0.02).passed
    assert not not_worse_than_published(rep, {"ndcg@2": 1.5}, tolerance=0.02).passed
    assert ann_recall(0.95, k=100).passed and not ann_recall(0.949, k=100).passed
