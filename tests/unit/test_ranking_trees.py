"""The compiled tree evaluator gives LightGBM's own scores, and declines models it does not implement."""

import lightgbm as lgb
import numpy as np
import pytest

from relevance_core.ranking.features import FEATURES
from relevance_core.ranking.ranker import Ranker
from relevance_core.ranking.trees import CompiledTrees


def _data(rng, n, f=6):
    X = rng.normal(size=(n, f)).astype(np.float32)
    X[rng.random(X.shape) < 0.2] = np.nan  # missing values go their split's default way
    X[:, 2] = np.round(X[:, 2])  # ties on thresholds
    X[:, 3] = np.where(rng.random(n) < 0.3, 0.0, X[:, 3])
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 2]) + rng.normal(size=n)) > 1).astype(int)
    return X, y * rng.integers(1, 4, n)


def _train(params, rounds=40, seed=0):
    rng = np.random.default_rng(seed)
    X, y = _data(rng, 2000)
    base = {"objective": "lambdarank", "min_data_in_leaf": 5, "verbosity": -1, "num_threads": 1}
    return lgb.train(base | params, lgb.Dataset(X, label=y, group=[50] * 40), num_boost_round=rounds)


@pytest.mark.parametrize("leaves", [2, 7, 31, 63])
@pytest.mark.parametrize("use_missing", [True, False])
def test_scores_equal_lightgbms(leaves, use_missing):
    booster = _train({"num_leaves": leaves, "use_missing": use_missing})
    trees = CompiledTrees.from_booster(booster)
    assert trees is not None and trees.n_trees == booster.num_trees()
    X, _ = _data(np.random.default_rng(1), 3000)
    X[:50] = np.nan  # rows with nothing known
    np.testing.assert_array_equal(trees.predict(X), booster.predict(X, num_threads=1))
    np.testing.assert_array_equal(trees.predict(X.astype(np.float64)), booster.predict(X, num_threads=1))


def test_a_large_batch_is_scored_in_chunks_with_the_same_result():
    booster = _train({"num_leaves": 7}, rounds=5)
    trees = CompiledTrees.from_booster(booster)
    X, _ = _data(np.random.default_rng(2), 40_000)
    np.testing.assert_array_equal(trees.predict(X), booster.predict(X, num_threads=1))


def test_a_tree_that_is_a_single_leaf():
    dump = {"objective": "lambdarank", "tree_info": [{"tree_structure": {"leaf_value": 0.25}}]}
    trees = CompiledTrees.from_dump(dump)
    np.testing.assert_array_equal(trees.predict(np.zeros((3, 2), np.float32)), [0.25, 0.25, 0.25])


@pytest.mark.parametrize(
    "params",
    [
        {"zero_as_missing": True},  # "Zero" missing type
        {"objective": "binary"},  # predict applies a sigmoid
        {"linear_tree": True},
    ],
)
def test_models_it_does_not_implement_keep_lightgbms_predict(params):
    booster = _train({"num_leaves": 7} | params, rounds=5)
    assert CompiledTrees.from_booster(booster) is None


def test_categorical_splits_keep_lightgbms_predict():
    rng = np.random.default_rng(3)
    X = rng.integers(0, 8, size=(1000, 2)).astype(np.float32)
    y = (X[:, 0] % 3 == 0).astype(int)
    params = {"objective": "regression", "verbosity": -1, "min_data_in_leaf": 5, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, label=y, categorical_feature=[0]), num_boost_round=5)
    assert CompiledTrees.from_booster(booster) is None


def test_ranker_predicts_with_the_compiled_trees_or_falls_back():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(600, len(FEATURES))).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(int)
    for extra, compiled in [({}, True), ({"zero_as_missing": True}, False)]:
        params = {"objective": "lambdarank", "num_leaves": 7, "verbosity": -1, "num_threads": 1} | extra
        booster = lgb.train(params, lgb.Dataset(X, label=y, group=[30] * 20), num_boost_round=8)
        ranker = Ranker(booster, FEATURES)
        assert (ranker.trees is not None) is compiled
        got = ranker.predict(X)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, booster.predict(X, num_threads=1).astype(np.float32))
    assert ranker.predict(X[:0]).shape == (0,)
