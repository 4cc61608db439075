"""Item metadata for hydration, packed as one JSON array per row in a single ``bytes`` buffer.

Why not the Arrow table it comes from: a request hydrates ~30 random rows (the slate and the history
items its reasons name), and an Arrow ``take`` over ten columns plus ``to_pylist`` cost ≈ 150 µs for 20
rows at 1M items — dispatch per column and per call, not data. Slicing a buffer at precomputed offsets and
decoding with msgspec costs ≈ 1 µs a row. Why not a cache of Python dicts (what hydration used before):
at 1M items it grows to hundreds of thousands of long-lived containers that every full garbage
collection walks. One buffer is one object: nothing for the collector to walk, and about the size of the
Arrow columns (values only; the column names are stored once).
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

_DECODER = msgspec.json.Decoder()


class PackedRows:
    def __init__(self, names: tuple[str, ...], blob: bytes, offsets: np.ndarray):
        self.names = names
        self.blob = blob
        self._view = memoryview(blob)
        self.offsets = offsets  # int64 [n + 1]: row i is blob[offsets[i]:offsets[i + 1]]

    @classmethod
    def from_table(cls, table: pa.Table, batch_rows: int = 16_384) -> PackedRows:
        """Pack every row of ``table`` (values must be JSON types: strings, numbers, booleans, nulls)."""
        enc = msgspec.json.Encoder()
        chunks: list[bytes] = []
        lengths = np.zeros(table.num_rows, dtype=np.int64)
        at = 0
        for batch in table.to_batches(max_chunksize=batch_rows):
            columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            encoded = [enc.encode(row) for row in zip(*columns, strict=True)]
            lengths[at : at + len(encoded)] = [len(e) for e in encoded]
            chunks.append(b"".join(encoded))
            at += len(encoded)
        offsets = np.zeros(table.num_rows + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(tuple(table.column_names), b"".join(chunks), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return len(self.blob) + self.offsets.nbytes

    def get(self, rows: np.ndarray | list[int]) -> list[dict[str, Any]]:
        """Fresh dicts (column → value) for ``rows`` (each in ``[0, len)``), in order."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return []
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"row out of range [0, {len(self)})")
        view, names = self._view, self.names
        starts = self.offsets[rows].tolist()
        ends = self.offsets[rows + 1].tolist()
        return [
            dict(zip(names, _DECODER.decode(view[a:b]), strict=True))
            for a, b in zip(starts, ends, strict=True)
        ]
