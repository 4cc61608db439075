"""Live catalog changes on top of the immutable bundle: new/changed listings and availability toggles.

Two layers, because the bundle changes under them:

- :class:`LiveCatalog` is what the API was told (``PUT /v1/items/{id}``, ``POST .../availability``),
  independent of any bundle. It survives hot reloads.
- :class:`LiveOverlay` is that state *applied to one bundle*: new/changed listings embedded with that
  bundle's exported item tower (vectors from two models live in different spaces, so a reload
  re-embeds them all), an exact-search matrix over them, and an availability mask over the bundle's
  rows. Readers take an immutable :class:`OverlayData` snapshot; a write builds the next snapshot and
  swaps one reference, so a request never sees half an update.

:class:`ServingState` pairs a bundle with its overlay; the app holds exactly one reference to the
current pair, which is what a request reads once and what a reload swaps.

Rows: the bundle's FAISS rows are ``0..N-1``; overlay entry ``j`` is global row ``N + j``. A changed
listing that already exists in the bundle hides its bundle row ("superseded") and lives in the overlay.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from relevance_core.ranking.rules import Candidates, category_prefix_matches
from relevance_service.serving_bundle import HYDRATION_COLUMNS, ServingBundle, category_prefix

log = logging.getLogger(__name__)


class OverlayFull(RuntimeError):
    """The live overlay reached ``max_items``; the next bundle will absorb the listings."""


class LiveCatalog:
    """Listings and availability overrides received through the API (bundle-independent)."""

    def __init__(self, *, max_items: int = 50_000):
        self.max_items = max_items
        self.items: dict[str, dict[str, Any]] = {}
        self.availability: dict[str, bool] = {}
        self.revision = 0
        self.changed_at: dict[str, int] = {}
        self._lock = threading.Lock()

    def put(self, item: dict[str, Any]) -> int:
        with self._lock:
            iid = item["item_id"]
            if iid not in self.items and len(self.items) >= self.max_items:
                raise OverlayFull(f"live overlay holds {self.max_items} listings already")
            self.items[iid] = item
            self.availability.pop(iid, None)  # the listing's own ``available`` is the newest word
            self.revision += 1
            self.changed_at[iid] = self.revision
            return self.revision

    def set_available(self, item_id: str, available: bool) -> int:
        with self._lock:
            if item_id in self.items:
                self.items[item_id] = {**self.items[item_id], "available": available}
            else:
                self.availability[item_id] = available
            self.revision += 1
            self.changed_at[item_id] = self.revision
            return self.revision

    def changed_since(self, revision: int) -> list[str]:
        with self._lock:
            return [iid for iid, rev in self.changed_at.items() if rev > revision]


@dataclass(frozen=True)
class OverlayData:
    """One immutable snapshot of the overlay (copy-on-write)."""

    ids: tuple[str, ...] = ()
    index: dict[str, int] = field(default_factory=dict)
    items: tuple[dict[str, Any], ...] = ()
    emb: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    available: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    path_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    diversity_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    seller_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    location_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    price: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    # values the bundle's vocabularies do not have: code = len(bundle vocab) + position
    ext_paths: tuple[str, ...] = ()
    ext_diversity: dict[str, int] = field(default_factory=dict)
    ext_sellers: dict[str, int] = field(default_factory=dict)
    ext_locations: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


_ATTRS = {
    "available": bool,
    "path_code": np.int32,
    "diversity_code": np.int32,
    "seller_code": np.int32,
    "location_code": np.int32,
    "price": np.float64,
}


class LiveOverlay:
    """A :class:`LiveCatalog` applied to one bundle (see the module docstring)."""

    def __init__(self, bundle: ServingBundle):
        self.bundle = bundle
        self.data = OverlayData(emb=np.zeros((0, bundle.dim), np.float32))
        # bundle rows' effective availability: the bundle's flag, overridden by the API, False if superseded
        self.main_available = bundle.available.copy()
        self.superseded: set[int] = set()
        self.revision = 0
        self._lock = threading.Lock()

    # -- building ------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, bundle: ServingBundle, catalog: LiveCatalog, *, batch: int = 512) -> LiveOverlay:
        """Apply everything in ``catalog`` to ``bundle`` (re-embedding every live listing)."""
        ov = cls(bundle)
        with catalog._lock:
            revision = catalog.revision
            items = list(catalog.items.values())
            overrides = dict(catalog.availability)
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            ov.upsert_many(chunk, bundle.embed_items(chunk))
        for iid, avail in overrides.items():
            ov.set_available(iid, avail)
        ov.revision = revision
        return ov

    def catch_up(self, catalog: LiveCatalog) -> int:
        """Apply changes made to ``catalog`` since this overlay was built; returns how many."""
        changed = catalog.changed_since(self.revision)
        if not changed:
            return 0
        with catalog._lock:
            revision = catalog.revision
            items = [catalog.items[i] for i in changed if i in catalog.items]
            overrides = {i: catalog.availability[i] for i in changed if i in catalog.availability}
        if items:
            self.upsert_many(items, self.bundle.embed_items(items))
        for iid, avail in overrides.items():
            self.set_available(iid, avail)
        self.revision = revision
        return len(changed)

    # -- writes ----------------------------------------------------------------------------------------------
    def upsert_many(self, items: list[dict[str, Any]], emb: np.ndarray) -> None:
        """Add or replace live listings (``emb``: their vectors from this bundle's item tower)."""
        b = self.bundle
        with self._lock:
            d = self.data
            ids = list(d.ids)
            index = dict(d.index)
            rows_items = list(d.items)
            ext_paths = list(d.ext_paths)
            ext_div = dict(d.ext_diversity)
            ext_sel = dict(d.ext_sellers)
            ext_loc = dict(d.ext_locations)
            cols = {k: getattr(d, k).tolist() for k in _ATTRS}
            appends: list[np.ndarray] = []
            updates: dict[int, np.ndarray] = {}
            for item, vec in zip(items, emb, strict=True):
                iid = item["item_id"]
                meta = {c: item.get(c) for c in HYDRATION_COLUMNS}
                meta["available"] = bool(item.get("available", True))
                path = item.get("category_path") or None
                pcode = b.path_index.get(path, -1) if path else -1
                if path and pcode < 0:
                    if path not in ext_paths:
                        ext_paths.append(path)
                    pcode = len(b.paths) + ext_paths.index(path)
                dkey = category_prefix(path, b.diversity_level)
                dcode = b.diversity_index.get(dkey, -1) if path else -1
                if path and dcode < 0:
                    dcode = ext_div.setdefault(dkey, len(b.diversity_index) + len(ext_div))
                seller = item.get("seller_id")
                scode = b.seller_index.get(seller, -1) if seller else -1
                if seller and scode < 0:
                    scode = ext_sel.setdefault(seller, len(b.seller_index) + len(ext_sel))
                loc = " ".join(str(item.get("location") or "").split()).lower()
                lcode = b.location_index.get(loc, -1) if loc else -1
                if loc and lcode < 0:
                    lcode = ext_loc.setdefault(loc, len(b.location_index) + len(ext_loc))
                price = item.get("price")
                values = {
                    "available": meta["available"],
                    "path_code": pcode,
                    "diversity_code": dcode,
                    "seller_code": scode,
                    "location_code": lcode,
                    "price": float(price) if price is not None else math.nan,
                }
                j = index.get(iid)
                if j is None:
                    index[iid] = len(ids)
                    ids.append(iid)
                    rows_items.append(meta)
                    appends.append(np.asarray(vec, dtype=np.float32))
                    for k, v in values.items():
                        cols[k].append(v)
                else:
                    rows_items[j] = meta
                    updates[j] = np.asarray(vec, dtype=np.float32)
                    for k, v in values.items():
                        cols[k][j] = v
                main_row = b.row_of.get(iid)
                if main_row is not None:
                    self.superseded.add(main_row)
                    self.main_available[main_row] = False
            emb_all = np.concatenate([d.emb, np.stack(appends)]) if appends else d.emb.copy()
            for j, vec in updates.items():
                emb_all[j] = vec
            self.data = OverlayData(
                ids=tuple(ids),
                index=index,
                items=tuple(rows_items),
                emb=np.ascontiguousarray(emb_all, dtype=np.float32),
                ext_paths=tuple(ext_paths),
                ext_diversity=ext_div,
                ext_sellers=ext_sel,
                ext_locations=ext_loc,
                **{k: np.asarray(v, dtype=_ATTRS[k]) for k, v in cols.items()},
            )

    def set_available(self, item_id: str, available: bool) -> bool:
        """Show/hide an item at once; False when neither the bundle nor the overlay has it."""
        with self._lock:
            d = self.data
            j = d.index.get(item_id)
            if j is not None:
                avail = d.available.copy()
                avail[j] = available
                items = list(d.items)
                items[j] = {**items[j], "available": available}
                self.data = replace(d, available=avail, items=tuple(items))
                return True
            row = self.bundle.row_of.get(item_id)
            if row is None:
                return False
            if row not in self.superseded:
                self.main_available[row] = available
            return True


@dataclass(frozen=True, eq=False)
class ServingState:
    """The bundle and its live overlay: the single reference a request reads (see module docstring)."""

    bundle: ServingBundle
    overlay: LiveOverlay

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def n_main(self) -> int:
        return self.bundle.n_items

    # -- lookups ----------------------------------------------------------------------------------------------
    def row_of(self, item_id: str) -> int | None:
        """Global row of an item id (the overlay's entry wins over a superseded bundle row)."""
        j = self.overlay.data.index.get(item_id)
        if j is not None:
            return self.n_main + j
        return self.bundle.row_of.get(item_id)

    def rows_of(self, item_ids: list[str]) -> np.ndarray:
        """Global rows of the known ids among ``item_ids`` (unknown ones are left out)."""
        lookup = self.row_of if self.overlay.data.index else self.bundle.row_of.get
        rows = [r for r in map(lookup, item_ids) if r is not None]
        return np.asarray(rows, dtype=np.int64)

    def embedding_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.bundle.dim), dtype=np.float32)
        main = rows < self.n_main
        if main.any():
            idx = rows[main]
            order = np.argsort(idx)  # sorted reads are kinder to the memory map
            got = np.empty((len(idx), self.bundle.dim), dtype=np.float32)
            got[order] = self.bundle.embeddings[idx[order]]
            out[main] = got
        if (~main).any():
            out[~main] = self.overlay.data.emb[rows[~main] - self.n_main]
        return out

    def item_ids_of(self, rows: np.ndarray) -> list[str]:
        d = self.overlay.data
        n = self.n_main
        return [self.bundle.item_ids[r] if r < n else d.ids[r - n] for r in rows.tolist()]

    def hydrate(self, rows: np.ndarray) -> list[dict[str, Any]]:
        rows = np.asarray(rows, dtype=np.int64)
        n = self.n_main
        main = rows < n
        if main.all():
            return self.bundle.hydrate(rows)
        d = self.overlay.data
        main_meta = iter(self.bundle.hydrate(rows[main]))
        return [next(main_meta) if r < n else d.items[r - n] for r in rows.tolist()]

    def category_codes(self, category: str) -> np.ndarray:
        base = self.bundle.category_codes(category)
        ext = self.overlay.data.ext_paths
        if not ext:
            return base
        extra = category_prefix_matches(list(ext), category) + len(self.bundle.paths)
        return np.concatenate([base, extra.astype(np.int32)])

    def location_code(self, location: str) -> int:
        loc = " ".join(location.split()).lower()
        code = self.bundle.location_index.get(loc)
        if code is None:
            code = self.overlay.data.ext_locations.get(loc, -2)
        return code

    # -- candidates -------------------------------------------------------------------------------------------
    def main_candidates(self, rows: np.ndarray, scores: np.ndarray, *, distinct: bool = False) -> Candidates:
        return Candidates(
            rows=rows,
            scores=scores.astype(np.float32, copy=False),
            available=self.overlay.main_available[rows],
            **self.bundle.rule_columns(rows),
            distinct=distinct,
        )

    def overlay_candidates(self, local: np.ndarray, scores: np.ndarray, data: OverlayData) -> Candidates:
        m = len(local)
        return Candidates(
            rows=local.astype(np.int64) + self.n_main,
            scores=scores.astype(np.float32, copy=False),
            available=data.available[local],
            path_code=data.path_code[local],
            diversity_code=data.diversity_code[local],
            seller_code=data.seller_code[local],
            location_code=data.location_code[local],
            price=data.price[local],
            popularity=np.zeros(m, np.float32),
            boost=np.asarray(
                [self.bundle.promotions.items.get(data.ids[j], 0.0) for j in local.tolist()], dtype=np.float32
            ).reshape(m),
        )

    def overlay_top(self, q: np.ndarray, k: int) -> Candidates:
        """Exact search over the live listings (few: a matrix product beats an index)."""
        d = self.overlay.data
        if len(d) == 0:
            return Candidates.empty()
        s = d.emb @ q[0]
        k = min(k, len(s))
        local = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
        return self.overlay_candidates(local, s[local], d)

    def retrieve(self, q: np.ndarray, k: int, breadth=None) -> Candidates:
        """FAISS top-k over the bundle plus exact top-k over the live overlay."""
        scores, rows = self.bundle.search(q, k, breadth)
        # one FAISS search returns each row once; only mixing in the overlay can duplicate an item
        return Candidates.concat([self.main_candidates(rows, scores, distinct=True), self.overlay_top(q, k)])

    def filtered_subset(self, category_codes, max_price, location_code) -> tuple[np.ndarray, np.ndarray]:
        """All bundle rows and overlay entries that pass the request filters and are available
        (a vectorised scan of the whole catalog; used when widening the FAISS search is not enough)."""
        b = self.bundle
        mask = self.overlay.main_available.copy()
        if category_codes is not None:
            mask &= np.isin(b.path_code, category_codes)
        if max_price is not None:
            with np.errstate(invalid="ignore"):
                mask &= b.price <= max_price
        if location_code is not None:
            mask &= b.location_code == location_code
        d = self.overlay.data
        om = d.available.copy()
        if len(d):
            if category_codes is not None:
                om &= np.isin(d.path_code, category_codes)
            if max_price is not None:
                with np.errstate(invalid="ignore"):
                    om &= d.price <= max_price
            if location_code is not None:
                om &= d.location_code == location_code
        return np.flatnonzero(mask), np.flatnonzero(om)

    def exact_candidates(self, q: np.ndarray, main_rows: np.ndarray, local: np.ndarray, k: int) -> Candidates:
        """Exact scores of ``q`` against given rows (bundle rows + overlay entries), top ``k``."""
        parts = []
        if len(main_rows):
            s = np.asarray(self.bundle.embeddings[main_rows], dtype=np.float32) @ q[0]
            if len(s) > k:
                top = np.argpartition(-s, k - 1)[:k]
                main_rows, s = main_rows[top], s[top]
            parts.append(self.main_candidates(main_rows.astype(np.int64), s))
        if len(local):
            d = self.overlay.data
            s = d.emb[local] @ q[0]
            parts.append(self.overlay_candidates(local, s, d))
        return Candidates.concat(parts)
