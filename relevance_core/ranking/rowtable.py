"""A small open-addressing table from item rows to positions, built per call inside compiled kernels.

The ranking stage and the rules ask "where (or whether) is each of these rows in that list?" for lists
of a few hundred rows on every request. ``np.isin`` sorts (~100-190 µs per call). A dense map over all
item rows answers with one scatter and one gather, but on a 1M-item bundle each of those reads is a
cache (and TLB) miss in a 4 MB array: the stage's three uses cost ~60 µs a request in misses alone. This
table holds only the rows asked about (a few KB, in L1), so a lookup is a multiply and a probe or two.
Keys are hashed by Fibonacci hashing (the high bits of ``row * 2^64/φ``), so rows that share their low
bits (multiples of a power of two) still spread.
"""

from __future__ import annotations

import numpy as np

from relevance_core.compiled import kernel

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = -1


@kernel
def _slot(keys, shift, r):
    mask = keys.shape[0] - 1
    h = np.int64((np.uint64(r) * _GOLDEN) >> shift)
    while keys[h] != _EMPTY and keys[h] != r:
        h = (h + 1) & mask
    return h


@kernel
def _empty(n):
    """Empty keys for ``n`` rows (a power of two, at most half full) and the hash's shift."""
    bits = 4
    while (1 << bits) < 2 * n:
        bits += 1
    return np.full(1 << bits, _EMPTY, np.int64), np.uint64(64 - bits)


@kernel
def build(rows):
    """(keys, positions, shift) for ``rows`` (each >= 0): a repeated row keeps its last position."""
    keys, shift = _empty(rows.shape[0])
    vals = np.empty(keys.shape[0], np.int32)
    for i in range(rows.shape[0]):
        h = _slot(keys, shift, rows[i])
        keys[h] = rows[i]
        vals[h] = i
    return keys, vals, shift


@kernel
def find(keys, vals, shift, r):
    """The position of row ``r``, or -1 (also for a negative ``r``: FAISS's "no result")."""
    if r < 0:
        return -1
    h = _slot(keys, shift, r)
    return vals[h] if keys[h] == r else -1


@kernel
def contains(values, rows):
    """``np.isin(values, rows)`` for non-negative integer rows."""
    keys, _vals, shift = build(rows)
    out = np.empty(values.shape[0], np.bool_)
    for i in range(values.shape[0]):
        out[i] = keys[_slot(keys, shift, values[i])] == values[i]
    return out


@kernel
def first_occurrences(rows):
    """``rows`` (>= 0) without repeats, in first-occurrence order."""
    keys, shift = _empty(rows.shape[0])
    out = np.empty(rows.shape[0], np.int64)
    m = 0
    for r in rows:
        h = _slot(keys, shift, r)
        if keys[h] != r:
            keys[h] = r
            out[m] = r
            m += 1
    return out[:m]
