"""FAISS index over the item embeddings: build, tune, search, measure.

Why it looks like this:

- **Inner product on L2-normalised vectors.** The towers are trained with a dot-product/cosine softmax;
  normalising both sides makes inner product = cosine, so exact search is "the model's own ranking".
- **Index type by catalog size.** Below :data:`FLAT_CROSSOVER` items an exact scan is at least as fast
  as an IVF probe on this kind of machine (measured, see ``docs/benchmark-history.md``), so approximate search
  would only cost recall. Above it an IVF index (``nlist ≈ 4·√N``, a power of two) is used. From
  :data:`FASTSCAN_ABOVE` items the lists hold 4-bit PQ codes of the residual to their centroid, scanned
  with FAISS' SIMD "fast scan", and the best ``k·k_factor`` (for long lists: :data:`REFINE_DEPTH`) are
  re-ranked exactly (``RFlat``): two-tower queries sit away from the item clusters, so a query's top 100
  spread over ~5% of the catalog and the scan dominates — 4-bit codes scan several times faster than
  floats. Fast-scan lists are few and long (``nlist ≈ √N/2``): each probed list has a fixed cost, the
  codes in it are cheap. Measured at 1M items, recall@100 0.95: 41× exact search, against 19× with 4·√N
  lists and 15× for IVF-Flat (docs/benchmark-history.md). Any FAISS factory string overrides the choice.
- **The search breadth is tuned, not guessed.** After building, :func:`tune_search` picks the smallest
  ``nprobe`` (IVF) or ``efSearch`` (HNSW) whose recall@K against exact search on held-out query vectors
  reaches the target. The chosen value travels with the index (and the bundle manifest).
- **Search parameters go per call** (``faiss.SearchParametersIVF`` / ``SearchParametersHNSW``): setting
  ``index.nprobe`` globally on an index shared by concurrent requests is a data race.
- **Row → item id map.** FAISS labels are the row numbers of ``item_ids``; the map is stored beside the
  index (``item_ids.parquet``) instead of an ``IndexIDMap``, because item ids are strings.
- **GPU when available.** With a GPU build of FAISS and a visible GPU, training/adding runs on the GPU and
  the result is copied back to a CPU index (the service searches on CPU); otherwise everything is CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

INDEX_FILE = "index.faiss"
ITEM_IDS_FILE = "item_ids.parquet"

#: Catalog size below which exact (``Flat``) search is used. Measured on the 2-core development machine
#: with ``relevance bench index --crossover`` (single-query latency of Flat vs. the tuned IVF at
#: recall@100 ≥ 0.95); see docs/benchmark-history.md.
FLAT_CROSSOVER = 20_000
#: From this size the IVF lists hold 4-bit fast-scan PQ codes with an exact re-rank (see above); measured
#: faster than IVF-Flat at the same recall from 50k items (3.6× vs 3.4× exact search; 12.3× vs 7.3× at 200k).
FASTSCAN_ABOVE = 50_000
#: Fast-scan lists per √N. Few, long lists: a fast-scan probe has a fixed cost per list (look-up tables,
#: result collection) beside its cheap per-code scan, so at 1M items 512 lists probed 25 times beat 4,096
#: lists probed 208 times for the same recall@100 (41× vs 19× exact search; docs/benchmark-history.md).
FASTSCAN_LISTS_PER_SQRT = 0.5
#: From this many lists the coarse quantizer is an HNSW graph (assigning a query to 16k+ lists by brute
#: force starts to cost as much as scanning them).
HNSW_QUANTIZER_FROM_NLIST = 16_384
#: Recall@K vs exact that an approximate index must keep (the ``faiss_index`` blocking check's bar).
RECALL_TARGET = 0.95
#: Breadth is tuned to ``RECALL_TARGET + TUNING_MARGIN`` on half of the held-out queries and measured on
#: the other half: tuned exactly to the target, fresh queries miss it about half the time (seen in the
#: demo: 0.95 on the tuning half, 0.946 on the other).
TUNING_MARGIN = 0.02
#: How deep the exact re-rank of a refined index (``…,RFlat``) is multiplied by ``k_factor``: a top-``k``
#: search re-ranks ``max(k, k_factor · min(k, REFINE_DEPTH))`` compressed-code candidates. The breadth is
#: tuned at recall@100, and the first 100 of a longer list come from the same pool (or a larger one), so
#: they keep the tuned recall; ``k_factor`` times a long list (the service's K = 500 candidates for
#: re-ranking) would only sharpen its tail. Measured at 1M items, nprobe 42: K = 500 re-ranking 2,000
#: candidates 742 µs, re-ranking 500 414 µs, recall@100 0.978 vs 0.971 (tuned: 0.971); docs/benchmark-history.md.
REFINE_DEPTH = 100


def normalize(x: np.ndarray) -> np.ndarray:
    """float32, C-contiguous, unit-norm rows (a copy; zero rows stay zero)."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    faiss.normalize_L2(x)
    return x


def _nlist_for(n: int, per_sqrt: float = 4.0) -> int:
    """≈``per_sqrt``·√N lists (a power of two), at least 39 training points per list (FAISS warns below
    that)."""
    target = per_sqrt * math.sqrt(max(n, 1))
    nlist = 2 ** max(4, round(math.log2(target)))
    while nlist > 16 and n < 39 * nlist:
        nlist //= 2
    return nlist


def choose_factory(n_items: int, dim: int, *, crossover: int = FLAT_CROSSOVER) -> str:
    """The FAISS factory string for a catalog of ``n_items`` vectors of dimension ``dim``."""
    if n_items < crossover:
        return "Flat"
    if n_items < FASTSCAN_ABOVE or dim % 2:
        return f"IVF{_nlist_for(n_items)},Flat"
    nlist = _nlist_for(n_items, FASTSCAN_LISTS_PER_SQRT)
    quantizer = f"IVF{nlist}_HNSW32" if nlist >= HNSW_QUANTIZER_FROM_NLIST else f"IVF{nlist}"
    # at most 64 4-bit sub-quantizers (32 bytes of codes): the largest even divisor of dim up to 64 (PQ
    # splits dim into equal parts; fast scan packs codes in pairs); "fsr": codes of the residual to the
    # list centroid, finer than codes of the vector itself for the same bytes
    m = max(d for d in range(2, min(dim, 64) + 1, 2) if dim % d == 0)
    return f"{quantizer},PQ{m}x4fsr,RFlat"


def gpu_available() -> bool:
    """A GPU build of FAISS (``StandardGpuResources`` exists) and at least one visible GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


# -- per-call search parameters ---------------------------------------------------------------------------
def refine_k_factor(k_factor: float, k: int | None, depth: int = REFINE_DEPTH) -> float:
    """The re-rank factor of a top-``k`` search: ``k_factor`` up to ``depth`` results, then a pool of
    ``max(k, k_factor · depth)`` (see :data:`REFINE_DEPTH`)."""
    if k is None or k <= depth:
        return float(k_factor)
    return max(1.0, float(k_factor) * depth / k)


def search_parameters(
    index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None, k: int | None = None
):
    """A ``faiss.SearchParameters`` tree matching ``index``'s structure, or None for exact indexes.
    ``k``: the number of results the tree will be used for (sets a refined index's re-rank pool,
    :func:`refine_k_factor`); None keeps the index's own ``k_factor``.

    Returns ``(params, keepalive)``: SWIG does not hold references to nested parameter objects, so the
    caller keeps ``keepalive`` alive for the duration of the search.
    """
    keep: list[Any] = []
    idx = faiss.downcast_index(index)

    def build(ix):
        ix = faiss.downcast_index(ix)
        if isinstance(ix, faiss.IndexRefine):
            base = build(ix.base_index)
            p = faiss.IndexRefineSearchParameters(k_factor=refine_k_factor(ix.k_factor, k))
            if base is not None:
                p.base_index_params = base
            keep.append(p)
            return p
        if isinstance(ix, faiss.IndexPreTransform):
            inner = build(ix.index)
            if inner is None:
                return None
            p = faiss.SearchParametersPreTransform(index_params=inner)
            keep.append(p)
            return p
        if isinstance(ix, faiss.IndexIVF):
            probe = int(nprobe or ix.nprobe)
            p = faiss.SearchParametersIVF(nprobe=probe)
            quant = faiss.downcast_index(ix.quantizer)
            if isinstance(quant, faiss.IndexHNSW):
                # an HNSW coarse quantizer returns at most efSearch lists: it must explore >= nprobe
                qp = faiss.SearchParametersHNSW(efSearch=int(max(ef_search or 0, 2 * probe, 16)))
                keep.append(qp)
                p.quantizer_params = qp
            keep.append(p)
            return p
        if isinstance(ix, faiss.IndexHNSW):
            p = faiss.SearchParametersHNSW(efSearch=int(ef_search or ix.hnsw.efSearch))
            keep.append(p)
            return p
        return None

    return build(idx), keep


class ParameterTrees:
    """One :func:`search_parameters` tree per breadth (and re-rank pool) for one shared index, built on
    first use.

    FAISS only reads a tree during a search, so concurrent calls share it; building one per call cost
    ~25 µs, 4% of a tuned 1M-item search. The keep-alive objects stay referenced here."""

    def __init__(self, index: faiss.Index):
        self.index = index
        self._trees: dict[tuple[int | None, int | None, int | None], tuple[Any, list[Any]]] = {}

    def get(self, nprobe: int | None = None, ef_search: int | None = None, k: int | None = None):
        """The tree for this breadth and a top-``k`` search, or None for exact indexes."""
        key = (nprobe, ef_search, k if k is not None and k > REFINE_DEPTH else None)
        tree = self._trees.get(key)
        if tree is None:
            tree = self._trees[key] = search_parameters(self.index, nprobe=nprobe, ef_search=ef_search, k=k)
        return tree[0]


def _search_knob(index: faiss.Index) -> str | None:
    """Which breadth knob ``index`` has: ``"nprobe"`` (IVF), ``"ef_search"`` (HNSW) or None (exact)."""
    idx = faiss.downcast_index(index)
    while isinstance(idx, faiss.IndexRefine | faiss.IndexPreTransform):
        idx = faiss.downcast_index(idx.base_index if isinstance(idx, faiss.IndexRefine) else idx.index)
    if isinstance(idx, faiss.IndexIVF):
        return "nprobe"
    if isinstance(idx, faiss.IndexHNSW):
        return "ef_search"
    return None


@dataclass
class SearchResult:
    scores: np.ndarray  # float32 [Q, k], descending; -inf where fewer than k results
    rows: np.ndarray  # int64 [Q, k], FAISS rows; -1 where fewer than k results
    item_ids: np.ndarray  # object [Q, k], None where rows == -1


@dataclass
class ItemIndex:
    """A FAISS index plus the row → item id map and the search parameters it was tuned with."""

    index: faiss.Index
    item_ids: np.ndarray
    factory: str
    search_params: dict[str, int] = field(default_factory=dict)
    build_s: float = 0.0
    built_on: str = "cpu"
    _trees: ParameterTrees | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype=object)
        if self.index.ntotal != len(self.item_ids):
            raise ValueError(f"index has {self.index.ntotal} vectors but {len(self.item_ids)} item ids")

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def is_exact(self) -> bool:
        return isinstance(faiss.downcast_index(self.index), faiss.IndexFlat)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        normalized: bool = False,
    ) -> SearchResult:
        """Top-``k`` items per query. Breadth defaults to the tuned values; overrides apply to this call
        only (thread-safe on a shared index)."""
        q = np.ascontiguousarray(queries, dtype=np.float32) if normalized else normalize(queries)
        k = int(min(k, len(self)))
        nprobe = nprobe if nprobe is not None else self.search_params.get("nprobe")
        ef_search = ef_search if ef_search is not None else self.search_params.get("ef_search")
        if self._trees is None or self._trees.index is not self.index:
            self._trees = ParameterTrees(self.index)
        params = self._trees.get(nprobe, ef_search, k)
        if params is None:
            scores, rows = self.index.search(q, k)
        else:
            scores, rows = self.index.search(q, k, params=params)
        ids = np.where(rows >= 0, self.item_ids[np.clip(rows, 0, None)], None)
        return SearchResult(scores=scores, rows=rows, item_ids=ids)

    def bytes_per_vector(self) -> float:
        """Serialized index size / vectors: what each item costs in memory and on disk (id map excluded)."""
        return float(faiss.serialize_index(self.index).nbytes) / max(1, len(self))

    def describe(self) -> dict[str, Any]:
        return {
            "factory": self.factory,
            "type": type(faiss.downcast_index(self.index)).__name__,
            "size": len(self),
            "dim": self.dim,
            "search_params": dict(self.search_params),
            "bytes_per_vector": round(self.bytes_per_vector(), 2),
            "build_s": round(self.build_s, 3),
            "built_on": self.built_on,
        }

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """``index.faiss`` + ``item_ids.parquet`` (row i of the index is row i of the table)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(d / INDEX_FILE))
        pq.write_table(
            pa.table({"item_id": pa.array(list(self.item_ids), type=pa.string())}), d / ITEM_IDS_FILE
        )

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        factory: str | None = None,
        search_params: dict[str, int] | None = None,
        mmap: bool = False,
    ) -> ItemIndex:
        d = Path(directory)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(d / INDEX_FILE), flags)
        ids = pq.read_table(d / ITEM_IDS_FILE).column("item_id").to_pylist()
        return cls(
            index=index,
            item_ids=np.asarray(ids, dtype=object),
            factory=factory or "?",
            search_params=search_params or {},
        )


# -- build ------------------------------------------------------------------------------------------------
def _to_gpu(index: faiss.Index):
    res = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(res, 0, index), res


def build_index(
    embeddings: np.ndarray,
    item_ids: np.ndarray | list[str],
    *,
    factory: str | None = None,
    use_gpu: bool | None = None,
    train_size: int | None = None,
    seed: int = 0,
    crossover: int = FLAT_CROSSOVER,
    refine_k_factor: float = 4.0,
) -> ItemIndex:
    """Build the index over (normalised) ``embeddings``; row i ↔ ``item_ids[i]``.

    ``factory`` overrides :func:`choose_factory`. IVF quantizers are trained on a seeded sample of
    ``train_size`` rows (default 64 per list, what k-means needs for stable centroids) to bound build time.
    ``use_gpu=None`` means "when available"; a factory FAISS cannot move to the GPU is built on the CPU.
    """
    x = normalize(embeddings)
    n, dim = x.shape
    if n == 0:
        raise ValueError("cannot build an index over zero items")
    if len(item_ids) != n:
        raise ValueError(f"{n} embeddings but {len(item_ids)} item ids")
    factory = factory or choose_factory(n, dim, crossover=crossover)
    t0 = time.perf_counter()
    cpu_index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    built_on = "cpu"
    index = cpu_index
    gpu_res = None
    if use_gpu is None:
        use_gpu = gpu_available()
    if use_gpu and gpu_available():
        try:
            index, gpu_res = _to_gpu(cpu_index)
            built_on = "gpu"
        except RuntimeError:  # e.g. HNSW or refine wrappers have no GPU implementation
            index = cpu_index
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(cpu_index)  # the CPU template knows nlist on either device
        nlist = ivf.nlist if ivf is not None else 256
        m = min(n, train_size or max(nlist * 64, 10_000))
        rng = np.random.default_rng(seed)
        sample = x[np.sort(rng.choice(n, size=m, replace=False))] if m < n else x
        if ivf is not None and built_on == "cpu":
            ivf.cp.seed = seed  # deterministic k-means: the same embeddings give the same index
        index.train(sample)
    index.add(x)
    if built_on == "gpu":
        index = faiss.index_gpu_to_cpu(index)
        del gpu_res
    refine = faiss.downcast_index(index)
    if isinstance(refine, faiss.IndexRefine):
        # re-rank k·k_factor compressed-code candidates with exact distances: what makes PQ/SQ codes
        # reach high recall@k (FAISS' default k_factor of 1 re-ranks nothing extra)
        refine.k_factor = float(refine_k_factor)
    build_s = time.perf_counter() - t0
    return ItemIndex(
        index=index,
        item_ids=np.asarray(item_ids, dtype=object),
        factory=factory,
        build_s=build_s,
        built_on=built_on,
    )


# -- measurement ------------------------------------------------------------------------------------------
def exact_topk(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: brute-force inner product on normalised vectors (scores, rows)."""
    x = normalize(embeddings)
    q = normalize(queries)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    return flat.search(q, int(min(k, len(x))))


def recall_at_k(approx_rows: np.ndarray, exact_rows: np.ndarray, k: int | None = None) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (ignoring -1 padding)."""
    k = k or exact_rows.shape[1]
    hits, total = 0, 0
    for a, e in zip(approx_rows[:, :k], exact_rows[:, :k], strict=True):
        truth = set(e[e >= 0].tolist())
        if not truth:
            continue
        hits += len(truth.intersection(a[a >= 0].tolist()))
        total += len(truth)
    return hits / total if total else 1.0


def measure_recall(
    index: ItemIndex, embeddings: np.ndarray, queries: np.ndarray, k: int = 100, **search_kwargs
) -> float:
    """Recall@k of ``index`` vs exact search over the same ``embeddings`` on held-out ``queries``."""
    _, truth = exact_topk(embeddings, queries, k)
    got = index.search(queries, k, **search_kwargs).rows
    return recall_at_k(got, truth, k)


def _candidates(knob: str, index: faiss.Index) -> list[int]:
    if knob == "nprobe":
        nlist = faiss.try_extract_index_ivf(index).nlist
        vals = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
        return [v for v in vals if v < nlist] + [nlist]
    return [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024]


def tune_search(
    index: ItemIndex,
    embeddings: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 100,
    target_recall: float = RECALL_TARGET,
) -> dict[str, Any]:
    """Set ``index.search_params`` to the smallest breadth reaching ``target_recall`` at ``k`` on
    ``queries`` (held out: not used to build the index); return what was measured.

    Exact indexes need no tuning (recall 1.0). If no breadth reaches the target, the widest tried is kept
    and the returned recall says so — the ``faiss_index`` check then fails loudly instead of silently.
    """
    if index.is_exact:
        return {"recall": 1.0, "k": k, "search_params": {}}
    _, truth = exact_topk(embeddings, queries, k)
    q = normalize(queries)
    knob = _search_knob(index.index)
    if knob is None:  # approximate but without a breadth knob (e.g. plain PQ): measure only
        return {
            "recall": recall_at_k(index.search(q, k, normalized=True).rows, truth, k),
            "k": k,
            "search_params": {},
        }
    tried: list[tuple[int, float]] = []

    def measure(v: int) -> float:
        r = recall_at_k(index.search(q, k, normalized=True, **{knob: v}).rows, truth, k)
        tried.append((v, r))
        return r

    lo = None  # the widest breadth known to miss the target
    for v in _candidates(knob, index.index):
        if measure(v) >= target_recall:
            break
        lo = v
    value, recall = tried[-1]
    if recall >= target_recall and lo is not None:
        # the grid steps by up to 1.5x; bisect the last step to within 1/16 (at 1M items nprobe 256 →
        # 208 for the same target: ~20% more queries per second)
        hi, hi_recall = value, recall
        while hi - lo > max(1, lo // 16):
            mid = (lo + hi) // 2
            r = measure(mid)
            if r >= target_recall:
                hi, hi_recall = mid, r
            else:
                lo = mid
        value, recall = hi, hi_recall
    index.search_params = {knob: int(value)}
    return {"recall": recall, "k": k, "search_params": dict(index.search_params), "tried": tried}


def single_query_qps(
    index: ItemIndex,
    queries: np.ndarray,
    k: int = 100,
    *,
    min_seconds: float = 1.0,
    max_queries: int = 2000,
    threads: int | None = 1,
) -> float:
    """Queries per second answering one query per call (the service's request pattern).

    ``threads=1`` by default: the service runs one search per request and gets its parallelism from
    concurrent requests; on this 2-core machine a single-query search with 2 OpenMP threads was measured
    2-3× *slower* than with one (thread start-up and contention dominate a 1-query scan).
    """
    if threads is not None:
        prev = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(threads)
        try:
            return single_query_qps(
                index, queries, k, min_seconds=min_seconds, max_queries=max_queries, threads=None
            )
        finally:
            faiss.omp_set_num_threads(prev)
    q = normalize(queries)
    for row in q[: min(10, len(q))]:  # warm caches
        index.search(row[None, :], k, normalized=True)
    done, t0 = 0, time.perf_counter()
    while True:
        for row in q:
            index.search(row[None, :], k, normalized=True)
            done += 1
            if done >= max_queries:
                break
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds or done >= max_queries:
            return done / elapsed


#: An ANN index is served instead of exact search only when, tuned to the recall target, it answers single
#: queries at least this much faster than Flat on the same held-out queries. Where the neighbours of a
#: query are spread out (weakly trained towers, catalogs of mostly cold items) IVF needs so many probes
#: that exact search is faster: measured from 50k to 200k items in docs/benchmark-history.md, while on other
#: embeddings IVF was 4x faster at 50k. No fixed crossover size captures that; a measurement does.
MIN_ANN_SPEEDUP = 1.5


def keep_ann_if_faster(
    index: ItemIndex,
    embeddings: np.ndarray,
    queries: np.ndarray,
    k: int = 100,
    *,
    min_speedup: float = MIN_ANN_SPEEDUP,
    max_queries: int = 100,
) -> tuple[ItemIndex, dict[str, Any]]:
    """``(index to serve, what was measured)``: ``index`` if it is exact or at least ``min_speedup`` times
    faster than a Flat index over the same vectors on ``queries`` (single-query QPS, one thread, as the
    service searches), else that Flat index. ``max_queries`` bounds the time (≈1.5 s at 1M items)."""
    q = queries[:max_queries]
    if index.is_exact or len(q) == 0 or min_speedup <= 0:
        return index, {}
    flat = build_index(embeddings, index.item_ids, factory="Flat", use_gpu=False)
    ann_qps = single_query_qps(index, q, k, min_seconds=0.2, max_queries=len(q))
    flat_qps = single_query_qps(flat, q, k, min_seconds=0.2, max_queries=len(q))
    speedup = ann_qps / flat_qps if flat_qps > 0 else math.inf
    info = {
        "ann_factory": index.factory,
        "ann_search_params": dict(index.search_params),
        "ann_qps": round(ann_qps, 1),
        "flat_qps": round(flat_qps, 1),
        "ann_speedup_vs_flat": round(speedup, 2),
        "min_ann_speedup": min_speedup,
        "ann_kept": bool(speedup >= min_speedup),
    }
    return (index if info["ann_kept"] else flat), info


# -- item embeddings ----------------------------------------------------------------------------------------
def embed_items(
    item_tower: Any, encoder: Any, items: Any, *, batch_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """``(item_ids, float32 [N, D] unit vectors)`` of every row of ``items`` through the exported item tower.

    Runs on content for every item, so listings with no interactions (cold start) and listings the encoder
    has never seen (``item_row`` 0: content only) get an embedding and a place in the index. Batched to
    bound memory (the catalog can be millions of rows); ``inference_mode`` because no gradients are needed.
    """
    import pandas as pd
    import torch

    df = items.to_pandas() if hasattr(items, "to_pandas") else pd.DataFrame(items)
    df = (
        df.assign(item_id=df["item_id"].astype(str))
        .drop_duplicates("item_id", keep="last")
        .reset_index(drop=True)
    )
    out = []
    with torch.inference_mode():
        for s in range(0, len(df), batch_size):
            feats = encoder.encode_items(df.iloc[s : s + batch_size])
            out.append(item_tower(**feats).float().cpu().numpy())
    dim = out[0].shape[1] if out else 0
    emb = np.concatenate(out, axis=0) if out else np.zeros((0, dim), dtype=np.float32)
    return df["item_id"].to_numpy(dtype=object), normalize(emb) if len(emb) else emb
