"""Candidate sources besides the two-tower ANN, and the per-item attributes the ranker's features read.

Each source is cheap (a few array lookups per request) and brings its own score:

* **co-visitation** (:mod:`relevance_core.ranking.covisit`): what followed the history's items in other
  sessions;
* **the history itself** ("more from what you viewed"): in session data a large share of next clicks
  are items already in the session; the two-tower ANN finds them only by chance;
* **popular / trending in the history's category**: items many people touch right now, in the
  category of the most recent interaction (global when it has none).

Item attributes (category, brand, price, listing time, training interactions overall and in the
newest days) are computed once per bundle from the catalog and the ``train`` split, as plain arrays over
the bundle's item rows; rows past the end (live listings added after the bundle) read as unknown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ITEM_STATS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string()),
        pa.field("interactions", pa.float32()),
        pa.field("recent_interactions", pa.float32()),
    ]
)
#: the newest days of the train split that count as "recent" for the trend feature and source
RECENT_DAYS = 7


def build_item_stats(pair_files: Sequence[str | Path], recent_days: int = RECENT_DAYS) -> pa.Table:
    """Per item: weighted training interactions (as a target of the ``train`` split) overall and within
    the last ``recent_days`` of that split. Training-split only, for the same reason as the co-visitation
    table: the ranker's training days must not see their own targets in its features."""
    import duckdb

    files = [str(f) for f in pair_files]
    if not files:
        return ITEM_STATS_SCHEMA.empty_table()
    con = duckdb.connect()
    try:
        table = con.sql(
            f"""
            WITH p AS (
                SELECT target_item_id AS item_id, target_weight AS w, target_ts AS ts
                FROM read_parquet($files) WHERE split = 'train'
            ), last AS (SELECT max(ts) AS m FROM p)
            SELECT item_id,
                   CAST(sum(w) AS FLOAT) AS interactions,
                   CAST(sum(CASE WHEN ts > last.m - INTERVAL {int(recent_days)} DAY THEN w ELSE 0 END)
                        AS FLOAT) AS recent_interactions
            FROM p, last GROUP BY item_id ORDER BY item_id
            """,
            params={"files": files},
        ).to_arrow_table()
    finally:
        con.close()
    return table.cast(ITEM_STATS_SCHEMA)


def _codes(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dictionary codes of a string column (null/empty → -1)."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = pc.if_else(pc.equal(pc.utf8_trim_whitespace(arr.cast(pa.string())), ""), None, arr)
    enc = arr.dictionary_encode()
    return enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)


def _aligned(table: pa.Table, item_ids: pa.Array) -> pa.Table:
    """Rows of ``table`` in ``item_ids`` order (the last row per id wins; missing ids are nulls)."""
    ids = table.column("item_id").combine_chunks().cast(pa.string())
    pos = pc.index_in(item_ids, value_set=ids)
    return table.take(pos)


#: One record per item holding what the per-request feature pass reads of a candidate. Packed, a
#: candidate costs one or two cache lines instead of one per attribute array: on a 1M-item bundle the
#: feature pass over 180 candidates took 90 µs from six separate arrays and 30 µs when every read hit
#: the cache, nearly all of the difference cache misses.
ITEM_RECORD = np.dtype(
    [
        ("price", np.float64),
        ("created_s", np.float64),
        ("path_code", np.int32),
        ("brand_code", np.int32),
        ("interactions", np.float32),
        ("recent", np.float32),
    ]
)


@dataclass(frozen=True)
class ItemAttributes:
    """Per-row arrays over the bundle's items (index row order). The arrays named in
    :data:`ITEM_RECORD` are views into :attr:`records` (one copy in memory)."""

    path_code: np.ndarray  # int32, -1 unknown
    top_code: np.ndarray  # int32: top-level category, -1 unknown
    brand_code: np.ndarray  # int32, -1 unknown
    price: np.ndarray  # float64, NaN unknown
    created_s: np.ndarray  # float64 epoch seconds, NaN unknown
    interactions: np.ndarray  # float32 (training split, weighted)
    recent: np.ndarray  # float32 (newest RECENT_DAYS of the training split)

    records: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rec = np.empty(len(self.path_code), ITEM_RECORD)
        for name in ITEM_RECORD.names:
            rec[name] = getattr(self, name)
        object.__setattr__(self, "records", rec)
        for name in ITEM_RECORD.names:
            object.__setattr__(self, name, rec[name])

    def __len__(self) -> int:
        return len(self.path_code)

    @classmethod
    def from_tables(cls, item_ids: Sequence[str], items: pa.Table, stats: pa.Table | None) -> ItemAttributes:
        ids = pa.array(list(item_ids), pa.string())
        n = len(ids)
        cols = set(items.column_names)
        it = _aligned(
            items.select(
                [c for c in ("item_id", "category_path", "brand", "price", "created_at") if c in cols]
            ),
            ids,
        )

        def col(name: str, typ: pa.DataType) -> pa.Array:
            if name in it.column_names:
                return it.column(name).combine_chunks().cast(typ)
            return pa.nulls(n, typ)

        paths = col("category_path", pa.string())
        top = pc.utf8_trim_whitespace(pc.list_element(pc.split_pattern(pc.fill_null(paths, ""), ">"), 0))
        created = col("created_at", pa.timestamp("us", tz="UTC"))
        created_s = pc.divide(pc.cast(pc.cast(created, pa.int64()), pa.float64()), 1e6)
        interactions = np.zeros(n, np.float32)
        recent = np.zeros(n, np.float32)
        if stats is not None and stats.num_rows:
            st = _aligned(stats, ids)
            interactions = st.column("interactions").fill_null(0).to_numpy(zero_copy_only=False)
            recent = st.column("recent_interactions").fill_null(0).to_numpy(zero_copy_only=False)
        return cls(
            path_code=_codes(paths),
            top_code=_codes(top),
            brand_code=_codes(col("brand", pa.string())),
            price=pc.fill_null(col("price", pa.float64()), math.nan).to_numpy(zero_copy_only=False),
            created_s=pc.fill_null(created_s, math.nan).to_numpy(zero_copy_only=False),
            interactions=np.asarray(interactions, np.float32),
            recent=np.asarray(recent, np.float32),
        )

    @cached_property
    def has_content(self) -> bool:
        """False for catalogs that carry ids only (public session data): content features are all unknown
        (and the per-request feature pass skips them). Cached: the arrays never change."""
        return bool(
            (self.path_code >= 0).any() or (self.brand_code >= 0).any() or np.isfinite(self.price).any()
        )

    @cached_property
    def has_created(self) -> bool:
        return bool(np.isfinite(self.created_s).any())


@dataclass(frozen=True)
class PopularByCategory:
    """The ``top_k`` items by recent interactions per top-level category, and overall."""

    by_top: dict[int, np.ndarray]
    overall: np.ndarray

    @classmethod
    def build(cls, attrs: ItemAttributes, top_k: int = 20) -> PopularByCategory:
        score = attrs.recent + 1e-3 * attrs.interactions  # recent first, all-time breaks ties
        has = np.flatnonzero(score > 0)
        if len(has) == 0:
            return cls({}, np.zeros(0, np.int64))
        order = has[np.lexsort((-score[has], attrs.top_code[has]))]
        codes = attrs.top_code[order]
        by_top: dict[int, np.ndarray] = {}
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            code = int(codes[s])
            if code >= 0:
                by_top[code] = order[s : min(e, s + top_k)].astype(np.int64)
        overall = has[np.argsort(-score[has], kind="stable")[:top_k]].astype(np.int64)
        return cls(by_top, overall)

    def for_category(self, top_code: int) -> np.ndarray:
        return self.by_top.get(int(top_code), self.overall)
