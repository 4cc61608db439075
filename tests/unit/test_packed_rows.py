"""Packed hydration rows: every value comes back as the Arrow table held it, in the order asked."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from relevance_service.packed_rows import PackedRows


def test_rows_round_trip_in_the_order_asked_with_nulls_and_awkward_text():
    table = pa.table(
        {
            "item_id": ["a", "b", None, "d"],
            "title": ['quote " and \\ backslash', "naïve café ✓", None, "line\nbreak"],
            "price": [1.5, None, 0.1 + 0.2, 1e12],
            "available": [True, False, None, True],
        }
    )
    packed = PackedRows.from_table(table, batch_rows=3)  # two batches: offsets must carry over
    assert len(packed) == 4 and packed.nbytes > 0
    rows = [3, 0, 2, 0, 1]
    assert packed.get(rows) == [table.slice(r, 1).to_pylist()[0] for r in rows]
    assert packed.get(np.asarray([2]))[0]["price"] == 0.1 + 0.2  # floats round-trip exactly
    first = packed.get([0])[0]
    first["title"] = "changed"  # fresh dicts: a caller's change never reaches the next request
    assert packed.get([0])[0]["title"] == 'quote " and \\ backslash'
    assert packed.get([]) == []


@pytest.mark.parametrize("bad", [[4], [-1], [0, 99]])
def test_rows_out_of_range_are_refused(bad):
    packed = PackedRows.from_table(pa.table({"item_id": ["a", "b", "c", "d"]}))
    with pytest.raises(IndexError):
        packed.get(bad)
