"""The loaded bundle: one immutable object holding everything a request reads.

A request takes one reference to the current :class:`ServingBundle` (via
:class:`relevance_service.live_items.ServingState`) and uses only that for its whole life, so a hot swap
can never make one response mix two versions. Nothing here is mutated after :meth:`ServingBundle.load`
returns; per-request knobs (FAISS ``nprobe``/``efSearch``) are passed per call as
``faiss.SearchParameters`` and never set on the shared index.

Memory layout, chosen for 1M-item catalogs on a small machine:

- item attributes used by filters and diversity (category path, seller, location, price, availability,
  popularity, boosts) are flat numpy arrays indexed by FAISS row, with strings dictionary-encoded once at
  load, so a filter over K≈500 candidates is a handful of vectorised ops;
- hydration metadata is packed at load into one buffer of JSON rows aligned to FAISS rows
  (:class:`~relevance_service.packed_rows.PackedRows`: no 1M Python dicts, ≈ 1 µs a hydrated row); only
  the rows a response shows are decoded;
- ``embeddings.npy`` is memory-mapped ("similar items", reasons, exact re-scans touch a few rows);
- the FAISS index is memory-mapped too (``INDEX_READ_FLAGS``), zero-copy from the bundle file: every
  worker on a host searches the one copy in the page cache instead of reading its own (≈ 285 MB each at
  1M items), a load takes milliseconds instead of a copy, and workers scanning the same lists can share
  cache lines. Bundle files are never rewritten in place (a new version is a new directory,
  old ones are unlinked, which a mapping survives), and FAISS checks every read against the file's size,
  so a truncated index is refused at load like before.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from relevance_core import bundle as bundle_format
from relevance_core.bundle import BundleError, Manifest
from relevance_core.features import FeatureEncoder
from relevance_core.index import ParameterTrees
from relevance_core.model.onnx_encoder import OnnxUserEncoder, onnx_runtime_available
from relevance_core.ranking.rules import Promotions, boost_per_code, category_prefix_matches
from relevance_core.ranking.stage import RankingStage
from relevance_core.schemas import EVENT_TYPE_CODES
from relevance_service.packed_rows import PackedRows
from relevance_service.settings import ServiceSettings

log = logging.getLogger(__name__)

#: Optional bundle file with promotions/boosts (checksummed like every other file when present).
PROMOTIONS_FILE = "promotions.json"
#: Largest |ONNX − TorchScript| user-vector difference a bundle may show at load (export checks 1e-5)
ONNX_TOLERANCE = 1e-4
#: how the service reads ``index.faiss``: mapped, not copied (see the module docstring); a FAISS without
#: the flag (older than 1.12) copies
INDEX_READ_FLAGS = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)
#: The per-row columns the business rules read for each candidate, as one 32-byte record per item: a
#: request gathers ~500 random rows of a 1M-item catalog, and one record per row is one cache miss where
#: seven column arrays were seven (21 vs 65 µs; the columns themselves stay for full-catalog scans).
RULE_RECORD = np.dtype(
    [
        ("path_code", np.int32),
        ("diversity_code", np.int32),
        ("seller_code", np.int32),
        ("location_code", np.int32),
        ("price", np.float64),
        ("popularity", np.float32),
        ("boost", np.float32),
    ]
)
#: Metadata columns returned with every recommended item (the description is not: it is long and unused).
HYDRATION_COLUMNS = (
    "item_id",
    "title",
    "price",
    "brand",
    "category_path",
    "location",
    "condition",
    "image_url",
    "seller_id",
    "available",
)

#: item columns the ranking stage's features read (``relevance_core.ranking.sources.ItemAttributes``)
RANKING_COLUMNS = ("item_id", "category_path", "brand", "price", "created_at")


def _norm(s: Any) -> str | None:
    if s is None:
        return None
    s = " ".join(str(s).split()).lower()
    return s or None


def category_prefix(path: str | None, level: int) -> str:
    """The first ``level`` levels of a category path, normalised (the per-category diversity key)."""
    if not path:
        return ""
    parts = [" ".join(p.split()).lower() for p in path.split(">") if p.strip()]
    return " > ".join(parts[:level])


def top_level(path: str | None) -> str | None:
    if not path:
        return None
    head = path.split(">", 1)[0].strip()
    return head or None


@dataclass(frozen=True)
class SearchBreadth:
    """How wide one FAISS search looks (defaults: the index's tuned values, else settings)."""

    nprobe: int | None = None
    ef_search: int | None = None

    def widened(self, factor: int) -> SearchBreadth:
        return SearchBreadth(
            nprobe=self.nprobe * factor if self.nprobe else None,
            ef_search=self.ef_search * factor if self.ef_search else None,
        )


@dataclass(eq=False)
class ServingBundle:
    version: str
    manifest: Manifest
    path: Path
    loaded_at: float
    user_tower: torch.jit.ScriptModule
    item_tower: torch.jit.ScriptModule
    encoder: FeatureEncoder
    index: faiss.Index
    item_ids: list[str]
    row_of: dict[str, int]
    embeddings: np.ndarray  # float32 [N, D], memory-mapped
    items: PackedRows  # hydration metadata, row-aligned with the index (null rows for missing metadata)
    # per-row attributes
    available: np.ndarray
    path_code: np.ndarray
    diversity_code: np.ndarray
    seller_code: np.ndarray
    location_code: np.ndarray
    price: np.ndarray
    popularity: np.ndarray  # normalised log popularity in [0, 1]
    pop_score: np.ndarray  # raw popularity score
    boost: np.ndarray
    popular_order: np.ndarray  # rows by popularity, best first (only rows with a positive score)
    # vocabularies (code → value, value → code)
    paths: list[str]
    path_index: dict[str, int]
    diversity_index: dict[str, int]
    seller_index: dict[str, int]
    location_index: dict[str, int]
    promotions: Promotions
    default_breadth: SearchBreadth
    history_length: int
    diversity_level: int
    #: ONNX Runtime twin of the user tower's encoder (``user_encoder.onnx``); None: TorchScript serves
    user_encoder: OnnxUserEncoder | None = None
    #: the second stage (candidate sources + ranker); retrieval-only when the bundle has none
    ranking: RankingStage | None = None
    _category_cache: dict[str, np.ndarray] = field(default_factory=dict)
    _trees: ParameterTrees | None = field(default=None, repr=False)
    _rule_records: np.ndarray = field(init=False, repr=False)  # int32 [N, 8]: RULE_RECORD per row

    def __post_init__(self) -> None:
        rec = np.empty(len(self.path_code), dtype=RULE_RECORD)
        for name in RULE_RECORD.names:
            rec[name] = getattr(self, name)
        self._rule_records = rec.view(np.int32).reshape(len(rec), RULE_RECORD.itemsize // 4)

    # -- loading ----------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: Path,
        manifest: Manifest | None = None,
        *,
        settings: ServiceSettings | None = None,
        promotions: Promotions | None = None,
        verify: bool = True,
    ) -> ServingBundle:
        """Load and check a bundle directory; raise :class:`BundleError` if anything is wrong with it.

        ``settings`` supplies the serving knobs (search breadth, history length, diversity level, user
        tower runtime); the defaults when omitted, as a library caller or a benchmark wants."""
        path = Path(path)
        t0 = time.perf_counter()
        if verify or manifest is None:
            manifest = bundle_format.verify_dir(path)
        try:
            b = cls._load(path, manifest, settings or ServiceSettings(), promotions)
        except BundleError:
            raise
        except Exception as e:  # torch/faiss/arrow errors on a corrupt file all mean "do not serve this"
            raise BundleError(f"bundle {manifest.version}: cannot load: {type(e).__name__}: {e}") from e
        b.smoke_test()
        log.info("bundle %s loaded in %.2fs (%d items)", b.version, time.perf_counter() - t0, len(b.item_ids))
        return b

    @classmethod
    def _load(
        cls,
        path: Path,
        manifest: Manifest,
        settings: ServiceSettings,
        promotions: Promotions | None,
    ) -> ServingBundle:
        diversity_level = settings.diversity_category_level
        user_tower, user_encoder, item_tower = _towers(path, manifest, settings.user_tower_runtime)
        encoder = FeatureEncoder.from_json((path / bundle_format.FEATURES).read_bytes())
        index, ids_arr, embeddings = _index_and_vectors(path, manifest)
        item_ids = ids_arr.to_pylist()
        n = len(item_ids)
        row_of = dict(zip(item_ids, range(n), strict=True))
        if len(row_of) != n:
            raise BundleError("item_ids.parquet has duplicate item ids")
        items, available, schema_names = _hydration_items(path, ids_arr)
        price = (
            pc.cast(items.column("price"), pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)
        )
        # JSON types for the packed rows (a decimal or integer price would not round-trip as a number)
        meta = PackedRows.from_table(
            items.set_column(
                HYDRATION_COLUMNS.index("price"), "price", pc.cast(items.column("price"), pa.float64())
            )
        )
        codes = _rule_codes(items, diversity_level)
        pop_score, popularity, popular_order = _popularity(path, ids_arr)
        promo = Promotions()
        if (path / PROMOTIONS_FILE).is_file():
            promo = Promotions.load((path / PROMOTIONS_FILE).read_bytes())
        promo = promo.merged(promotions)
        boost = _boosts(
            promo, n, row_of, codes["path_code"], codes["paths"], codes["seller_code"], codes["sellers"]
        )
        ranking = RankingStage.load(
            path,
            item_ids,
            pq.read_table(
                path / bundle_format.ITEMS, columns=[c for c in RANKING_COLUMNS if c in schema_names]
            ),
        )

        tuned = dict(manifest.extra.get("search_params") or {}) if isinstance(manifest.extra, dict) else {}
        tuned.update(manifest.model.get("search_params") or {} if isinstance(manifest.model, dict) else {})
        breadth = SearchBreadth(
            nprobe=int(settings.nprobe or tuned.get("nprobe") or 32),
            ef_search=int(settings.ef_search or tuned.get("ef_search") or 128),
        )
        return cls(
            version=manifest.version,
            manifest=manifest,
            path=path,
            loaded_at=time.time(),
            user_tower=user_tower,
            item_tower=item_tower,
            encoder=encoder,
            index=index,
            item_ids=item_ids,
            row_of=row_of,
            embeddings=embeddings,
            items=meta,
            available=available,
            path_code=codes["path_code"],
            diversity_code=codes["diversity_code"],
            seller_code=codes["seller_code"],
            location_code=codes["location_code"],
            price=price,
            popularity=popularity,
            pop_score=pop_score,
            boost=boost,
            popular_order=popular_order,
            paths=codes["paths"],
            path_index={p: i for i, p in enumerate(codes["paths"])},
            diversity_index=codes["diversity_index"],
            seller_index={s: i for i, s in enumerate(codes["sellers"])},
            location_index={s: i for i, s in enumerate(codes["locations"])},
            promotions=promo,
            default_breadth=breadth,
            history_length=int(settings.history_length or manifest.history_length or encoder.history_length),
            diversity_level=diversity_level,
            user_encoder=user_encoder,
            ranking=ranking,
        )

    # -- model calls --------------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return int(self.manifest.dim)

    @property
    def ranked(self) -> bool:
        """True when a learned ranker orders this bundle's candidates (else the retrieval order)."""
        return self.ranking is not None and self.ranking.ranker is not None

    @property
    def user_tower_runtime(self) -> str:
        return "onnxruntime" if self.user_encoder is not None else "torchscript"

    def user_vector(self, history: list[tuple[str, str, float]]) -> np.ndarray | None:
        """``[(item_id, event_type, age_s)]`` oldest first → float32 [1, D]; None when no history item is
        known to the model (then the tower would only see padding: the caller falls back to popular)."""
        rows, events, ages = self.encode_history(history, padded=False)
        if rows is None:
            return None
        if self.user_encoder is not None:
            return self.user_encoder(rows, events, ages)
        return self._torchscript_user_vector(
            torch.from_numpy(rows), torch.from_numpy(events), torch.from_numpy(ages)
        )

    def _torchscript_user_vector(self, rows, events, ages) -> np.ndarray:
        with torch.inference_mode():
            v = self.user_tower(rows, events, ages)
        return np.ascontiguousarray(v.numpy(), dtype=np.float32)

    def encode_history(self, history: list[tuple[str, str, float]], *, padded: bool = True):
        """One history → the user tower's ``[1, L]`` inputs; ``(None, None, None)`` when no item is known.

        ``padded``: the same encoding as ``FeatureEncoder.encode_histories`` (torch tensors, left-padded to
        the model's history length, most recent last), built from Python lists in one tensor call each
        instead of per-element tensor writes: this is on every request, and the generic batch encoder
        costs ~10x more for one history. ``smoke_test`` checks that both agree on every bundle.

        ``padded=False`` (what requests use): numpy arrays without the left padding, and without unknown
        items before the first known one (the tower treats those exactly like padding). The tower masks
        those positions and numbers positions from the most recent, so it returns the same vector (to
        float rounding: 9e-8 measured; ``smoke_test`` checks it on every bundle) for less work: a
        10-item history's user vector took 196-216 µs instead of 262-289 µs with ONNX Runtime.
        """
        L = self.history_length
        hist = history[-L:]
        get = self.encoder.item_index.get
        rows = [get(str(i), 0) for i, _, _ in hist]
        first = next((k for k, r in enumerate(rows) if r), None)
        if first is None:
            return None, None, None
        events = [EVENT_TYPE_CODES.get(str(ev), 0) for _, ev, _ in hist]
        ages = [max(float(age or 0.0), 0.0) for _, _, age in hist]
        if not padded:
            return (
                np.asarray([rows[first:]], dtype=np.int64),
                np.asarray([events[first:]], dtype=np.int64),
                np.asarray([ages[first:]], dtype=np.float32),
            )
        pad = [0] * (L - len(hist))
        return (
            torch.tensor([pad + rows], dtype=torch.long),
            torch.tensor([pad + events], dtype=torch.long),
            torch.tensor([[0.0] * len(pad) + ages], dtype=torch.float32),
        )

    def embed_items(self, items: list[Any]) -> np.ndarray:
        """Listings (``Item`` structs / dicts) → float32 [B, D] with the exported item tower."""
        feats = self.encoder.encode_items(items)
        with torch.inference_mode():
            v = self.item_tower(**feats)
        out = np.ascontiguousarray(v.numpy(), dtype=np.float32)
        faiss.normalize_L2(out)
        return out

    def search(
        self, q: np.ndarray, k: int, breadth: SearchBreadth | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS top-``k`` for one query: (scores float32 [k'], rows int64 [k']) without padding."""
        k = min(int(k), self.n_items)
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        breadth = breadth or self.default_breadth
        if self._trees is None:  # the shared index itself is never modified; per-breadth trees are
            self._trees = ParameterTrees(self.index)
        params = self._trees.get(breadth.nprobe, breadth.ef_search, k)
        if params is None:
            scores, rows = self.index.search(q, k)
        else:
            scores, rows = self.index.search(q, k, params=params)
        s, r = scores[0], rows[0]
        ok = r >= 0
        if not ok.all():
            s, r = s[ok], r[ok]
        return s, r.astype(np.int64, copy=False)

    # -- lookups ------------------------------------------------------------------------------------------
    def category_codes(self, category: str) -> np.ndarray:
        """Path codes matching a ``category`` request filter (cached per value)."""
        key = category.strip().lower()
        hit = self._category_cache.get(key)
        if hit is None:
            hit = category_prefix_matches(self.paths, category)
            if len(self._category_cache) < 4096:
                self._category_cache[key] = hit
        return hit

    def rule_columns(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The :data:`RULE_RECORD` columns of bundle ``rows`` (views into one gathered block)."""
        rec = np.take(self._rule_records, rows, axis=0).view(RULE_RECORD).reshape(-1)
        return {name: rec[name] for name in RULE_RECORD.names}

    def hydrate(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """Metadata dicts for bundle rows (all < n_items), fresh per call."""
        return self.items.get(rows)

    # -- checks -------------------------------------------------------------------------------------------
    def smoke_test(self) -> None:
        """A real query through every part before this bundle may serve: user tower → search →
        hydration, and the item tower against the stored embeddings (same model, same space)."""
        if self.n_items == 0:
            raise BundleError(f"bundle {self.version}: no items")
        probe = self.popular_order[:3].tolist() or [0, 1, 2][: self.n_items]
        hist = [(self.item_ids[r], "view", 60.0 * (i + 1)) for i, r in enumerate(probe)]
        mine = self.encode_history(hist)
        ref = self.encoder.encode_histories([hist], self.history_length)
        if mine[0] is not None and not all(torch.equal(a, b) for a, b in zip(mine, ref, strict=True)):
            raise BundleError(f"bundle {self.version}: fast history encoding disagrees with FeatureEncoder")
        q = self.user_vector(hist)
        if q is None:
            # items in the index but not in the encoder's vocabulary would make every user anonymous
            raise BundleError(f"bundle {self.version}: smoke query: no probe item is known to the encoder")
        # requests run the ONNX encoder (when there is one) on the history without its padding: both
        # must give the user that user_tower.pt gives the padded history
        twin = self._torchscript_user_vector(*mine)
        gap = float(np.abs(q - twin).max())
        if not gap <= ONNX_TOLERANCE:
            served = (
                bundle_format.USER_ENCODER_ONNX if self.user_encoder is not None else "the unpadded history"
            )
            raise BundleError(
                f"bundle {self.version}: {served} disagrees with {bundle_format.USER_TOWER} (padded) by {gap:.3g}"
            )
        if q.shape != (1, self.dim) or not np.isfinite(q).all():
            raise BundleError(
                f"bundle {self.version}: user tower returned {q.shape}, expected (1, {self.dim})"
            )
        scores, rows = self.search(q, min(10, self.n_items))
        if len(rows) == 0 or not np.isfinite(scores).all() or rows.max() >= self.n_items:
            raise BundleError(f"bundle {self.version}: smoke search returned no valid rows")
        meta = self.hydrate(rows[:3])
        if len(meta) != len(rows[:3]):
            raise BundleError(f"bundle {self.version}: hydration failed")
        # the exported item tower must produce the vectors the index was built from
        described = [
            (r, m) for r, m in zip(probe, self.hydrate(np.asarray(probe)), strict=True) if m["item_id"]
        ]
        if not described:
            return
        check = [r for r, _ in described[:3]]
        live = self.embed_items([m for _, m in described[:3]])
        stored = np.asarray(self.embeddings[check], dtype=np.float32)
        norms = np.linalg.norm(stored, axis=1) * np.linalg.norm(live, axis=1)
        cos = (stored * live).sum(1) / np.maximum(norms, 1e-12)
        if not np.isfinite(live).all() or live.shape[1] != self.dim or float(cos.min()) < 0.9:
            raise BundleError(
                f"bundle {self.version}: item tower disagrees with embeddings.npy (cosine {cos.min():.3f})"
            )


# -- loading, one part of the bundle at a time -----------------------------------------------------------------
def _towers(path: Path, manifest: Manifest, runtime: str):
    """The user tower (frozen when no ONNX encoder replaces it), the ONNX encoder, the item tower."""
    user_tower = torch.jit.load(str(path / bundle_format.USER_TOWER), map_location="cpu").eval()
    user_encoder = _onnx_encoder(path, manifest, user_tower, runtime)
    if user_encoder is None:
        user_tower = _frozen(user_tower)
    item_tower = torch.jit.load(str(path / bundle_format.ITEM_TOWER), map_location="cpu").eval()
    return user_tower, user_encoder, item_tower


def _index_and_vectors(path: Path, manifest: Manifest):
    """The FAISS index, the row → item id array and the memory-mapped embeddings, checked against each
    other and the manifest."""
    index = faiss.read_index(str(path / bundle_format.INDEX), INDEX_READ_FLAGS)
    ids_arr = (
        pq.read_table(path / bundle_format.ITEM_IDS).column("item_id").combine_chunks().cast(pa.string())
    )
    n = len(ids_arr)
    if index.ntotal != n:
        raise BundleError(f"index has {index.ntotal} vectors but item_ids has {n} rows")
    if index.d != manifest.dim:
        raise BundleError(f"index dim {index.d} != manifest dim {manifest.dim}")
    # a plain ndarray view of the memory map: fancy indexing on np.memmap is several times slower
    embeddings = np.asarray(np.load(path / bundle_format.EMBEDDINGS, mmap_mode="r"))
    if embeddings.shape != (n, manifest.dim) or embeddings.dtype != np.float32:
        raise BundleError(
            f"embeddings.npy is {embeddings.dtype}{embeddings.shape}, expected float32[{n}, {manifest.dim}]"
        )
    return index, ids_arr, embeddings


def _hydration_items(path: Path, ids_arr: pa.Array) -> tuple[pa.Table, np.ndarray, list[str]]:
    """The hydration columns aligned to the index rows, which rows may be shown (available and
    described: an item we cannot describe is not shown), and the items file's column names."""
    schema_names = pq.read_schema(path / bundle_format.ITEMS).names
    cols = [c for c in HYDRATION_COLUMNS if c in schema_names]
    if "item_id" not in cols:
        raise BundleError("items.parquet has no item_id column")
    raw = _dedupe_last(pq.read_table(path / bundle_format.ITEMS, columns=cols))
    pos = pc.index_in(ids_arr, value_set=raw.column("item_id").combine_chunks().cast(pa.string()))
    items = raw.take(pos)
    n = len(ids_arr)
    for c in HYDRATION_COLUMNS:
        if c not in items.column_names:
            items = items.append_column(c, pa.nulls(n, type=pa.bool_() if c == "available" else pa.string()))
    items = items.select(list(HYDRATION_COLUMNS)).combine_chunks()
    has_meta = pos.is_valid().to_numpy(zero_copy_only=False)
    avail = items.column("available").fill_null(True).to_numpy(zero_copy_only=False).astype(bool)
    return items, avail & has_meta, schema_names


def _rule_codes(items: pa.Table, diversity_level: int) -> dict[str, Any]:
    """Integer codes the rules compare: category path, its diversity prefix, seller, location."""
    path_code, paths = _encode(items.column("category_path"), normalise=False)
    div_keys = [category_prefix(p, diversity_level) for p in paths]
    diversity_index: dict[str, int] = {}
    div_of_path = np.asarray(
        [diversity_index.setdefault(k, len(diversity_index)) for k in div_keys], dtype=np.int32
    )
    diversity_code = np.where(
        path_code >= 0, div_of_path[np.clip(path_code, 0, None)] if len(paths) else -1, -1
    )
    seller_code, sellers = _encode(items.column("seller_id"), normalise=False)
    location_code, locations = _encode(items.column("location"), normalise=True)
    return {
        "path_code": path_code,
        "paths": paths,
        "diversity_code": diversity_code.astype(np.int32),
        "diversity_index": diversity_index,
        "seller_code": seller_code,
        "sellers": sellers,
        "location_code": location_code,
        "locations": locations,
    }


def _popularity(path: Path, ids_arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the popularity score, its log scale in 0..1 (the rules' penalty), and the rows with a
    positive score, most popular first (the popular fallback)."""
    n = len(ids_arr)
    pop = pq.read_table(path / bundle_format.POPULARITY)
    pop_score = np.zeros(n, dtype=np.float32)
    if pop.num_rows:
        pop = _dedupe_last(pop.select(["item_id", "score"]))
        ppos = pc.index_in(pop.column("item_id").combine_chunks().cast(pa.string()), value_set=ids_arr)
        valid = ppos.is_valid().to_numpy(zero_copy_only=False)
        rows = ppos.fill_null(0).to_numpy(zero_copy_only=False)[valid]
        scores = (
            pc.cast(pop.column("score"), pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)[valid]
        )
        pop_score[rows] = np.maximum(scores, 0.0).astype(np.float32)
    top = float(pop_score.max()) if n else 0.0
    popularity = (
        (np.log1p(pop_score) / math.log1p(top)).astype(np.float32) if top > 0 else np.zeros(n, np.float32)
    )
    positive = np.flatnonzero(pop_score > 0)
    return pop_score, popularity, positive[np.argsort(-pop_score[positive], kind="stable")]


def _onnx_encoder(
    path: Path, manifest: Manifest, user_tower: torch.jit.ScriptModule, runtime: str
) -> OnnxUserEncoder | None:
    """The bundle's ONNX user encoder over the TorchScript tower's item table (shared, not copied), when
    ``runtime`` allows it, the bundle has one under its checksums and ONNX Runtime is installed."""
    name = bundle_format.USER_ENCODER_ONNX
    if runtime == "torchscript" or name not in manifest.checksums:
        return None
    if not onnx_runtime_available():
        log.info(
            "bundle %s has %s but onnxruntime is not installed: TorchScript serves", manifest.version, name
        )
        return None
    table = user_tower.item_table.detach().numpy()
    return OnnxUserEncoder(path / name, table)


def _frozen(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """``torch.jit.freeze`` (weights inlined as constants: ~10-20% less per-call overhead on a small
    tower), falling back to the module as loaded if freezing is not possible for this graph."""
    try:
        return torch.jit.freeze(module)
    except Exception as e:  # an unfreezable graph still serves, just a little slower
        log.warning("could not freeze the user tower (%s); serving it unfrozen", e)
        return module


def _dedupe_last(t: pa.Table) -> pa.Table:
    """Keep the last row per item_id (newest snapshot wins), cheaply when there are no duplicates."""
    ids = t.column("item_id")
    if pc.count_distinct(ids).as_py() == t.num_rows:
        return t
    idx = pa.array(np.arange(t.num_rows))
    last = pa.table({"item_id": ids, "i": idx}).group_by("item_id").aggregate([("i", "max")]).column("i_max")
    return t.take(pa.array(np.sort(last.to_numpy())))


def _encode(col: pa.ChunkedArray, *, normalise: bool) -> tuple[np.ndarray, list[str]]:
    """Dictionary-encode a string column: (int32 codes with -1 for null, values)."""
    arr = col.combine_chunks().cast(pa.string())
    if normalise:
        arr = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
        arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
    enc = arr.dictionary_encode()
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    values = enc.dictionary.to_pylist()
    return codes, values


def _boosts(
    promo: Promotions,
    n: int,
    row_of: dict[str, int],
    path_code: np.ndarray,
    paths: list[str],
    seller_code: np.ndarray,
    sellers: list[str],
) -> np.ndarray:
    boost = np.zeros(n, dtype=np.float32)
    if promo.empty:
        return boost
    if promo.categories and len(paths):
        per_path = boost_per_code(paths, promo.categories)
        has = path_code >= 0
        boost[has] += per_path[path_code[has]]
    if promo.sellers:
        seller_idx = {s: i for i, s in enumerate(sellers)}
        per_seller = np.zeros(len(sellers), dtype=np.float32)
        for s, v in promo.sellers.items():
            if s in seller_idx:
                per_seller[seller_idx[s]] = v
        has = seller_code >= 0
        boost[has] += per_seller[seller_code[has]]
    for iid, v in promo.items.items():
        r = row_of.get(iid)
        if r is not None:
            boost[r] += v
    return boost
