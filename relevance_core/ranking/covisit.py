"""Session co-visitation: an item-to-item table of "what comes next" built from the training sessions.

Why a table and not session-kNN itself: a session-kNN answer needs every recent session in memory and a
scan of the neighbours per request; the table keeps, per item, only the ``top_m`` items that followed it
(or, with a smaller weight, came before it) within a history window, weighted by how close they were.
A request then sums a handful of short rows (the history's items, the most recent weighing most), which
costs tens of microseconds, and the ranker learns how much to trust it against the two-tower score. On
session data the two disagree on many hits, which is what a ranker over both gains from.

Built from the ``train`` split of ``training_pairs`` only: every (history item, target) pair in it is one
observed transition at a known distance. Validation and test sessions never feed the table, so a ranker
trained on validation days sees the table exactly as it will be at serving time (no target leaks into
its own features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from relevance_core.compiled import kernel

#: the table's files in a bundle: CSR row pointers, neighbour rows (int32), scores (float32)
COVISIT_FILES = ("covisit_indptr.npy", "covisit_neighbors.npy", "covisit_scores.npy")

COVISIT_SCHEMA = pa.schema(
    [
        pa.field("src_item_id", pa.string()),
        pa.field("dst_item_id", pa.string()),
        pa.field("score", pa.float32()),
    ]
)


@dataclass(frozen=True)
class CovisitConfig:
    #: neighbours kept per item (the table's size is at most items x top_m)
    top_m: int = 50
    #: weight of "came before" relative to "came after" (sessions are not read strictly in order)
    backward_weight: float = 0.5
    #: DuckDB memory limit and spill directory for the build (None: DuckDB's defaults)
    memory_limit: str | None = "2GB"


def build_covisit_table(pair_files: Sequence[str | Path], cfg: CovisitConfig | None = None) -> pa.Table:
    """``src_item_id, dst_item_id, score`` from training-pair Parquet files (``split = 'train'`` rows).

    A pair with history ``h_1..h_n`` and target ``t`` adds ``1/d`` to ``h_i → t`` (``d = n - i + 1``,
    the distance) and ``backward_weight / d`` to ``t → h_i``. DuckDB aggregates out of core, so the
    build does not grow with the Python heap."""
    import duckdb

    cfg = cfg or CovisitConfig()
    files = [str(f) for f in pair_files]
    if not files:
        return COVISIT_SCHEMA.empty_table()
    con = duckdb.connect()
    try:
        if cfg.memory_limit:
            con.execute(f"SET memory_limit = '{cfg.memory_limit}'")
        sql = f"""
        WITH p AS (
            SELECT hist_item_ids AS h, target_item_id AS t, len(hist_item_ids) AS n
            FROM read_parquet($files) WHERE split = 'train'
        ), u AS (
            SELECT t, n, unnest(h) AS src, unnest(range(n)) AS i FROM p
        ), e AS (
            SELECT src, t AS dst, 1.0 / (n - i) AS w FROM u WHERE src <> t
            UNION ALL
            SELECT t AS src, src AS dst, {float(cfg.backward_weight)} / (n - i) AS w
            FROM u WHERE src <> t AND {float(cfg.backward_weight)} > 0
        ), s AS (
            SELECT src, dst, sum(w) AS score FROM e GROUP BY src, dst
        )
        SELECT src AS src_item_id, dst AS dst_item_id, CAST(score AS FLOAT) AS score FROM s
        QUALIFY row_number() OVER (PARTITION BY src ORDER BY score DESC, dst) <= {int(cfg.top_m)}
        ORDER BY src_item_id, score DESC
        """
        table = con.sql(sql, params={"files": files}).to_arrow_table()
    finally:
        con.close()
    return table.cast(COVISIT_SCHEMA)


@dataclass(frozen=True)
class Covisitation:
    """The table as CSR arrays over item rows (the bundle's row order): row ``r``'s neighbours are
    ``neighbors[indptr[r]:indptr[r+1]]``, best first."""

    indptr: np.ndarray  # int64 [n_items + 1]
    neighbors: np.ndarray  # int32 (int64 while building)
    scores: np.ndarray  # float32

    @property
    def n_items(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_edges(self) -> int:
        return len(self.neighbors)

    @classmethod
    def empty(cls, n_items: int) -> Covisitation:
        return cls(np.zeros(n_items + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))

    @classmethod
    def from_table(cls, table: pa.Table, item_ids: Sequence[str]) -> Covisitation:
        """Over the rows of ``item_ids``; edges to items without a row (no longer in the catalog) are
        dropped. Ids are matched in Arrow (a 1M-item table has tens of millions of edges)."""
        import pyarrow.compute as pc

        n_items = len(item_ids)
        if table.num_rows == 0:
            return cls.empty(n_items)
        ids = pa.array(list(item_ids), pa.string())

        def rows(col: str) -> np.ndarray:
            pos = pc.index_in(table.column(col).combine_chunks().cast(pa.string()), value_set=ids)
            return pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

        src, dst = rows("src_item_id"), rows("dst_item_id")
        score = table.column("score").to_numpy(zero_copy_only=False).astype(np.float32)
        ok = (src >= 0) & (dst >= 0)
        src, dst, score = src[ok], dst[ok], score[ok]
        order = np.lexsort((-score, src))
        src, dst, score = src[order], dst[order], score[order]
        indptr = np.zeros(n_items + 1, np.int64)
        np.cumsum(np.bincount(src, minlength=n_items), out=indptr[1:])
        return cls(indptr, dst.astype(np.int32), score)

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        if r < 0 or r >= self.n_items:
            return self.neighbors[:0], self.scores[:0]
        a, b = self.indptr[r], self.indptr[r + 1]
        return self.neighbors[a:b], self.scores[a:b]

    def aggregate(self, hist_rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct neighbour rows of the history and their summed ``weight x score``, best first (ties:
        lower row first). Compiled: on every personalised request, for ~10-50 history rows."""
        if self.n_edges == 0 or len(hist_rows) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return _aggregate(
            self.indptr,
            self.neighbors,
            self.scores,
            np.asarray(hist_rows, np.int64),
            np.asarray(weights, np.float32),
        )

    def save(self, directory: str | Path) -> None:
        """Three ``.npy`` files (:data:`COVISIT_FILES`) in ``directory``: plain arrays, so the service can
        memory-map them (every worker on a host reads one page-cache copy, as with the FAISS index)."""
        d = Path(directory)
        np.save(d / COVISIT_FILES[0], self.indptr.astype(np.int64))
        np.save(d / COVISIT_FILES[1], self.neighbors.astype(np.int32))
        np.save(d / COVISIT_FILES[2], self.scores.astype(np.float32))

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> Covisitation | None:
        """None when ``directory`` has no table."""
        d = Path(directory)
        if not all((d / f).is_file() for f in COVISIT_FILES):
            return None
        mode = "r" if mmap else None
        arrays = [np.asarray(np.load(d / f, mmap_mode=mode)) for f in COVISIT_FILES]
        indptr, neighbors, scores = arrays
        if len(neighbors) != len(scores) or (len(indptr) and indptr[-1] != len(neighbors)):
            raise ValueError("co-visitation arrays disagree on their length")
        return cls(indptr, neighbors, scores)


@kernel
def _aggregate(indptr, neighbors, scores, hist_rows, weights):
    n_items = indptr.shape[0] - 1
    total = 0
    for r in hist_rows:
        if 0 <= r < n_items:
            total += indptr[r + 1] - indptr[r]
    nb = np.empty(total, np.int64)
    sc = np.empty(total, np.float32)
    at = 0
    for h in range(hist_rows.shape[0]):
        r = hist_rows[h]
        if 0 <= r < n_items:
            w = weights[h]
            for e in range(indptr[r], indptr[r + 1]):
                nb[at] = neighbors[e]
                sc[at] = scores[e] * w
                at += 1
    # sum per distinct row (in float64, in history order, then float32)
    order = np.argsort(nb, kind="mergesort")
    rows = np.empty(total, np.int64)
    sums = np.empty(total, np.float32)
    m = 0
    i = 0
    while i < total:
        row = nb[order[i]]
        acc = 0.0
        while i < total and nb[order[i]] == row:
            acc += np.float64(sc[order[i]])
            i += 1
        rows[m] = row
        sums[m] = acc
        m += 1
    best = np.argsort(-sums[:m], kind="mergesort")
    return rows[:m][best], sums[:m][best]
