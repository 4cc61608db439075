"""The ranking stage's row table agrees with NumPy's set operations, including keys that share their
low bits (which a hash of the low bits alone would pile into one chain) and repeated rows."""

from __future__ import annotations

import numpy as np
import pytest

from relevance_core.ranking import rowtable


@pytest.mark.parametrize("n", [0, 1, 7, 180, 1500])
def test_table_matches_numpy(n):
    rng = np.random.default_rng(n)
    rows = np.concatenate(
        [rng.integers(0, 1_000_000, n), np.arange(0, 1 << 20, 1 << 14), rng.integers(0, 50, n // 3)]
    ).astype(np.int64)
    values = np.concatenate([rng.integers(0, 1_000_000, 300), rows[: n // 2]]).astype(np.int64)

    np.testing.assert_array_equal(rowtable.contains(values, rows), np.isin(values, rows))
    _, first = np.unique(rows, return_index=True)
    np.testing.assert_array_equal(rowtable.first_occurrences(rows), rows[np.sort(first)])
    keys, pos, shift = rowtable.build(rows)
    last = {int(r): i for i, r in enumerate(rows)}
    for v in values.tolist() + [-1, 10**12]:
        assert rowtable.find(keys, pos, shift, v) == last.get(v, -1)
