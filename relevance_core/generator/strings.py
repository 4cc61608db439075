"""Vectorised string building: millions of ids and timestamps without a Python loop per value.

Fixed-width strings are written straight into an Arrow buffer from a ``uint8`` matrix, which is an order of
magnitude faster than formatting Python strings and keeps generation inside the 60-second budget.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MS_PER_DAY = 86_400_000


#: "0000".."9999" as little-endian uint32 words: four digits per gather instead of four divisions
_FOUR_DIGITS = np.frombuffer("".join(f"{i:04d}" for i in range(10_000)).encode(), dtype=np.uint32)


def _digits_into(out: np.ndarray, values: np.ndarray, col: int, width: int) -> None:
    """Write ``values`` zero-padded to ``width`` decimal digits into ``out[:, col:col+width]``."""
    v = np.asarray(values, dtype=np.int64)
    end = col + width
    while width > 0:
        k = min(4, width)
        words = _FOUR_DIGITS[v % 10_000].view(np.uint8).reshape(-1, 4)
        out[:, end - k : end] = words[:, 4 - k :]
        v = v // 10_000
        end -= k
        width -= k


def _from_matrix(matrix: np.ndarray, valid: np.ndarray | None = None) -> pa.StringArray:
    """Rows of a ``uint8`` matrix as strings; ``valid`` (bool per row) marks nulls where False."""
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32 if n * width < 2**31 else np.int64)
    typ = pa.string() if offsets.dtype == np.int32 else pa.large_string()
    bitmap = None
    if valid is not None and not valid.all():
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    arr = pa.Array.from_buffers(
        typ, n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(matrix))]
    )
    return arr if typ == pa.string() else arr.cast(pa.string())


def id_width(n: int) -> int:
    return max(len(str(max(n - 1, 0))), 1)


def format_ids(prefix: str, values: np.ndarray, width: int) -> pa.StringArray:
    """``prefix`` followed by each value zero-padded to ``width`` digits ("i0004711"); a negative value
    is a null."""
    values = np.asarray(values)
    valid = values >= 0
    p = prefix.encode()
    matrix = np.empty((len(values), len(p) + width), dtype=np.uint8)
    matrix[:, : len(p)] = np.frombuffer(p, dtype=np.uint8)
    _digits_into(matrix, np.maximum(values, 0), len(p), width)
    return _from_matrix(matrix, valid)


def iso_timestamps_ms(ts_ms: np.ndarray) -> pa.StringArray:
    """``2026-03-01T12:34:56.123Z`` for epoch milliseconds, the landing zone's text timestamp form."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    days = ts_ms // MS_PER_DAY
    rest = ts_ms - days * MS_PER_DAY
    uniq, inv = np.unique(days, return_inverse=True)
    epoch = date(1970, 1, 1)
    day_bytes = np.frombuffer(
        "".join((epoch + timedelta(days=int(d))).isoformat() for d in uniq).encode(), dtype=np.uint8
    ).reshape(len(uniq), 10)
    m = np.empty((len(ts_ms), 24), dtype=np.uint8)
    m[:, :10] = day_bytes[inv]
    m[:, 10] = ord("T")
    m[:, 13] = m[:, 16] = ord(":")
    m[:, 19] = ord(".")
    m[:, 23] = ord("Z")
    _digits_into(m, rest // 3_600_000, 11, 2)
    _digits_into(m, (rest // 60_000) % 60, 14, 2)
    _digits_into(m, (rest // 1000) % 60, 17, 2)
    _digits_into(m, rest % 1000, 20, 3)
    return _from_matrix(m)


def take_strings(values: list[str] | tuple[str, ...], codes: np.ndarray) -> pa.Array:
    """A string column from small integer codes into a vocabulary (negative code = null)."""
    codes = np.asarray(codes)
    mask = codes < 0
    indices = pa.array(codes.astype(np.int32), mask=mask if mask.any() else None)
    dictionary = pa.array(list(values), type=pa.string())
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())


def join(*parts, null_as: str | None = None) -> pa.Array:
    """Element-wise concatenation of arrays and literal strings; a null part makes the row null
    (or ``null_as``)."""
    out = pc.binary_join_element_wise(*parts, "")
    return pc.fill_null(out, null_as) if null_as is not None else out


def quoted_or_null(arr: pa.Array) -> pa.Array:
    """A JSON string value (ids and vocabulary need no escaping) or the literal ``null``."""
    return join('"', arr, '"', null_as="null")
