"""The ranker's trees evaluated by compiled code (QuickScorer's bit-mask traversal) instead of
LightGBM's ``Booster.predict``.

Why: the service scores ~180 candidates with up to 150 trees on every personalised request, and
``Booster.predict`` spends ~0.4-0.55 ms on that, one node at a time with a mispredicted branch at each.
QuickScorer (Lucchese et al., SIGIR 2015) turns a tree into bit masks: every split that sends a
candidate right clears the leaves of its left subtree from that candidate's mask, and the exit leaf is
the lowest bit left. The test of one split over all candidates is a branch-free loop the compiler
vectorises, so the same trees cost ~60 µs (docs/ranking.md). The result is the same float64 sum of
leaf values LightGBM computes, compared in the same double precision (tests check equality).

Models this evaluator does not implement (categorical splits, ``zero_as_missing``, linear trees, more
than 64 leaves) keep ``Booster.predict``: :meth:`CompiledTrees.from_booster` returns None for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from relevance_core.compiled import kernel

#: rows scored per compiled call: bounds the transposed float64 copy of a large offline batch
_CHUNK = 16_384
#: objectives whose ``predict`` is the plain sum of the trees' leaf values
_RAW_OBJECTIVES = ("lambdarank", "rank_xendcg", "regression")
#: a mask with every leaf still possible
_EVERY = np.uint64(0xFFFFFFFFFFFFFFFF)
#: de Bruijn sequence for the index of a 64-bit word's lowest set bit
_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_LOWEST_BIT = np.zeros(64, np.int8)
for _i in range(64):
    _LOWEST_BIT[((1 << _i) * int(_DEBRUIJN) & int(_EVERY)) >> 58] = _i


@kernel
def _score(X, feature, threshold, nan_left, clear, tree_start, leaf_start, leaf_value, lowest_bit):
    n = X.shape[0]
    cols = np.ascontiguousarray(X.T).astype(np.float64)
    out = np.zeros(n, np.float64)
    state = np.empty(n, np.uint64)
    for t in range(tree_start.shape[0] - 1):
        state[:] = _EVERY
        for j in range(tree_start[t], tree_start[t + 1]):
            col = cols[feature[j]]
            th = threshold[j]
            m = clear[j]
            # one plain comparison per loop (the compiler vectorises it): a NaN compares false both
            # ways, so it goes left under ``v > th`` and right under ``v <= th``, as the split says
            if nan_left[j]:
                for i in range(n):
                    state[i] &= m if col[i] > th else _EVERY
            else:
                for i in range(n):
                    state[i] &= _EVERY if col[i] <= th else m
        base = leaf_start[t]
        for i in range(n):
            s = state[i]
            low = s & (~s + np.uint64(1))
            out[i] += leaf_value[base + lowest_bit[(low * _DEBRUIJN) >> np.uint64(58)]]
    return out


@dataclass(frozen=True)
class CompiledTrees:
    """A LightGBM model's numerical trees as flat arrays: one entry per split (its feature, threshold,
    where a missing value goes, the leaves it rules out when it sends a row right) and the leaf values."""

    feature: np.ndarray  # int32 per split
    threshold: np.ndarray  # float64 per split
    nan_left: np.ndarray  # bool per split: where NaN goes
    clear: np.ndarray  # uint64 per split: the leaf mask when the row goes right
    tree_start: np.ndarray  # int32, [n_trees + 1]: each tree's first split
    leaf_start: np.ndarray  # int32 per tree: its first leaf in leaf_value
    leaf_value: np.ndarray  # float64

    @classmethod
    def from_booster(cls, booster: Any) -> CompiledTrees | None:
        """The flattened model, or None when it uses a split this evaluator does not implement."""
        return cls.from_dump(booster.dump_model())

    @classmethod
    def from_dump(cls, dump: dict[str, Any]) -> CompiledTrees | None:
        # a ranking objective's prediction is the raw sum; others transform it (or average the trees)
        if not str(dump.get("objective", "")).startswith(_RAW_OBJECTIVES) or dump.get("average_output"):
            return None
        feature: list[int] = []
        threshold: list[float] = []
        nan_left: list[bool] = []
        clear: list[int] = []
        tree_start, leaf_start, leaf_value = [0], [], []
        for tree in dump.get("tree_info", []):
            leaves: list[float] = []
            if not _flatten(tree["tree_structure"], leaves, feature, threshold, nan_left, clear):
                return None
            if len(leaves) > 64:
                return None
            leaf_start.append(len(leaf_value))
            leaf_value.extend(leaves)
            tree_start.append(len(feature))
        return cls(
            np.asarray(feature, np.int32),
            np.asarray(threshold, np.float64),
            np.asarray(nan_left, np.bool_),
            np.asarray(clear, np.uint64),
            np.asarray(tree_start, np.int32),
            np.asarray(leaf_start, np.int32),
            np.asarray(leaf_value, np.float64),
        )

    @property
    def n_trees(self) -> int:
        return len(self.leaf_start)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """float64 raw scores of the rows of ``X`` (float32 or float64, ``[n, n_features]``)."""
        X = np.asarray(X)
        if X.dtype != np.float32 and X.dtype != np.float64:
            X = X.astype(np.float64)
        if len(X) <= _CHUNK:
            return self._call(X)
        return np.concatenate([self._call(X[i : i + _CHUNK]) for i in range(0, len(X), _CHUNK)])

    def _call(self, X: np.ndarray) -> np.ndarray:
        return _score(
            X,
            self.feature,
            self.threshold,
            self.nan_left,
            self.clear,
            self.tree_start,
            self.leaf_start,
            self.leaf_value,
            _LOWEST_BIT,
        )


def _flatten(
    node: dict[str, Any],
    leaves: list[float],
    feature: list[int],
    threshold: list[float],
    nan_left: list[bool],
    clear: list[int],
) -> list[int] | None:
    """Append ``node``'s splits (pre-order) and leaves (left to right); returns its leaves' indices,
    None when a split is not a plain numerical one."""
    if "leaf_value" in node:
        if "leaf_coeff" in node:  # a linear tree's leaf
            return None
        leaves.append(float(node["leaf_value"]))
        return [len(leaves) - 1]
    if node.get("decision_type") != "<=":
        return None
    t = float(node["threshold"])
    missing = node.get("missing_type", "None")
    if missing == "NaN":
        goes_left = bool(node["default_left"])
    elif missing == "None":  # LightGBM reads NaN as 0.0 for such a split
        goes_left = 0.0 <= t
    else:  # "Zero": zero and NaN are missing
        return None
    at = len(feature)
    feature.append(int(node["split_feature"]))
    threshold.append(t)
    nan_left.append(goes_left)
    clear.append(0)
    left = _flatten(node["left_child"], leaves, feature, threshold, nan_left, clear)
    if left is None:
        return None
    right = _flatten(node["right_child"], leaves, feature, threshold, nan_left, clear)
    if right is None:
        return None
    mask = int(_EVERY)
    for leaf in left:  # indices within the tree: ``leaves`` is the tree's own list
        mask &= ~(1 << leaf)
    clear[at] = mask
    return left + right
