"""Feature encoding: items and histories → the two towers' integer/float tensors.

The encoder is fitted once per model on the catalog (``dim_items``, or canonical item rows) plus the item
counts seen in training, and saved as the bundle's ``features.json``. Training, the exported towers and
the service all go through the same fitted object, so a listing is encoded identically everywhere.

Design choices (and why):

- **Item rows.** Row 0 is padding/unknown; rows 1..N are the catalog items known at fit time (the catalog
  plus any item seen in training), sorted by id so a refit on the same data gives the same rows. Every row
  has content features, so the exported user tower can embed any of them from ``hist_rows`` alone. Only
  rows with at least ``min_item_count`` training interactions get an ID embedding (``id_known``); the rest,
  and any id not in the vocabulary, are embedded from content only (cold start).
- **Category levels** are prefix paths ("electronics", "electronics > phones", ...) so a sub-category name
  shared by two parents ("Accessories") stays two different values. They are derived from
  ``category_path`` whenever it is there, and from ``category_l1..l3`` only when it is not, so dbt's derived
  columns and a raw listing from the service encode to the same thing.
- **Price bucket** is always derived from ``price`` with per-``category_l1`` deciles fitted here (not taken
  from dbt's ``price_bucket``): the service embeds new listings that arrive without derived columns, and
  one definition avoids train/serve skew. 0 = unknown price.
- **Title tokens** are lower-cased alphanumeric uni- and bi-grams hashed with CRC32 (stable across
  processes and machines, unlike Python's ``hash``) into ``title_buckets - 1`` buckets; 0 is padding.
- Strings (brand, location, condition, categories) are trimmed, lower-cased and whitespace-collapsed
  before lookup, matching dim_items' canonical brand.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from relevance_core.schemas import EVENT_TYPE_CODES

#: The item tower's forward keyword arguments, in order (``encode_items`` returns exactly these keys).
ITEM_FEATURES: tuple[str, ...] = (
    "item_row",
    "category_l1",
    "category_l2",
    "category_l3",
    "brand",
    "price_bucket",
    "condition",
    "location",
    "title_tokens",
)
#: Categorical item features with their own vocabulary (0 = unknown).
CATEGORICAL = ("category_l1", "category_l2", "category_l3", "brand", "condition", "location")
N_PRICE_BUCKETS = 10
FORMAT_VERSION = 1
_TOKEN_RE = re.compile(r"[0-9a-z]+")
_SPACE_RE = re.compile(r"\s+")


def _norm(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    s = _SPACE_RE.sub(" ", str(value).strip().lower())
    return s or None


def category_levels(path: Any) -> tuple[str | None, str | None, str | None]:
    """``"Electronics > Phones > Apple"`` → prefix keys of the first three levels."""
    p = _norm(path)
    if p is None:
        return (None, None, None)
    parts = [x.strip() for x in p.split(">") if x.strip()]
    out: list[str | None] = []
    for i in range(3):
        out.append(" > ".join(parts[: i + 1]) if i < len(parts) else None)
    return (out[0], out[1], out[2])


def title_token_ids(title: Any, buckets: int, max_tokens: int) -> list[int]:
    """Hashed uni+bi-grams of a title, unigrams first, de-duplicated, at most ``max_tokens`` (0 = pad)."""
    t = _norm(title)
    if t is None:
        return []
    toks = _TOKEN_RE.findall(t)
    grams = toks + [f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False)]
    out: list[int] = []
    seen: set[int] = set()
    for g in grams:
        h = zlib.crc32(g.encode("utf-8")) % (buckets - 1) + 1
        if h not in seen:
            seen.add(h)
            out.append(h)
            if len(out) >= max_tokens:
                break
    return out


def _to_frame(items: Any) -> pd.DataFrame:
    """pandas, pyarrow, a list of dicts or of msgspec ``Item`` structs → a DataFrame."""
    if isinstance(items, pd.DataFrame):
        return items
    if hasattr(items, "to_pandas"):  # pyarrow Table / RecordBatch
        return items.to_pandas()
    rows = list(items)
    if rows and not isinstance(rows[0], Mapping):
        import msgspec

        rows = [msgspec.structs.asdict(r) for r in rows]
    return pd.DataFrame(rows)


def _levels_frame(df: pd.DataFrame) -> pd.DataFrame:
    """category_l1..l3 prefix keys from ``category_path`` (or the derived columns when it is absent)."""
    if "category_path" in df.columns:
        lv = [category_levels(p) for p in df["category_path"].tolist()]
    elif "category_l1" in df.columns:
        cols = [
            df.get(c, pd.Series([None] * len(df))).tolist()
            for c in ("category_l1", "category_l2", "category_l3")
        ]
        lv = [
            category_levels(" > ".join(str(x) for x in parts if _norm(x)))
            for parts in zip(*cols, strict=True)
        ]
    else:
        lv = [(None, None, None)] * len(df)
    return pd.DataFrame(lv, columns=["category_l1", "category_l2", "category_l3"], index=df.index)


def _col(df: pd.DataFrame, name: str) -> list[Any]:
    return df[name].tolist() if name in df.columns else [None] * len(df)


#: item columns that make a catalog "have content" for the item tower (titles alone do not: public session
#: data often has none, or a placeholder per item)
CONTENT_COLUMNS = ("category_path", "brand", "price", "condition", "location")


def catalog_has_content(items: Any) -> bool:
    """True when any item has a category, brand, price, condition or location. A catalog without any of
    them (public session data: ids only) trains an ID-only item tower: a content MLP over constant inputs
    starts every item at the same vector and spends its first epochs escaping it."""
    if items is None:
        return False
    df = _to_frame(items)
    for col in CONTENT_COLUMNS:
        if col in df.columns:
            values = df[col].dropna()
            if col != "price":
                values = values.astype(str).str.strip()
                values = values[values != ""]
            if len(values):
                return True
    return False


class FeatureEncoder:
    """Fitted vocabularies, price buckets and hashing sizes; see the module docstring for the choices."""

    def __init__(
        self,
        *,
        item_ids: Sequence[str],
        id_known: Sequence[int],
        vocabs: Mapping[str, Sequence[str]],
        price_edges: Mapping[str, Sequence[float]],
        global_price_edges: Sequence[float],
        title_buckets: int = 1 << 14,
        max_title_tokens: int = 24,
        history_length: int = 20,
    ):
        self.item_ids = list(item_ids)
        self.id_known = [int(x) for x in id_known]
        if len(self.id_known) != len(self.item_ids) + 1:
            raise ValueError("id_known needs one flag per row, row 0 (padding) included")
        self.vocabs = {k: list(v) for k, v in vocabs.items()}
        self.price_edges = {k: [float(x) for x in v] for k, v in price_edges.items()}
        self.global_price_edges = [float(x) for x in global_price_edges]
        self.title_buckets = int(title_buckets)
        self.max_title_tokens = int(max_title_tokens)
        self.history_length = int(history_length)
        self.item_index: dict[str, int] = {iid: i + 1 for i, iid in enumerate(self.item_ids)}
        self._lookup = {k: {v: i + 1 for i, v in enumerate(vals)} for k, vals in self.vocabs.items()}
        self._arrow_vocab = None

    # -- fitting ---------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        items: Any,
        item_counts: Mapping[str, int] | None = None,
        *,
        min_item_count: int = 1,
        title_buckets: int = 1 << 14,
        max_title_tokens: int = 24,
        history_length: int = 20,
    ) -> FeatureEncoder:
        """Fit on a dim_items-like table; ``item_counts`` are training interactions per item id (history
        and targets), which decide which rows get an ID embedding. Items only seen in training (not in the
        catalog) still get a row, with unknown content."""
        df = _to_frame(items)
        if "item_id" not in df.columns:
            raise ValueError("items need an item_id column")
        df = df.drop_duplicates("item_id", keep="last")
        counts = dict(item_counts or {})
        ids = sorted(set(df["item_id"].astype(str)) | set(counts))
        known = [0] + [1 if counts.get(i, 0) >= min_item_count else 0 for i in ids]
        lv = _levels_frame(df)
        vocabs: dict[str, list[str]] = {}
        for name in ("category_l1", "category_l2", "category_l3"):
            vocabs[name] = sorted({v for v in lv[name].tolist() if v is not None})
        for name in ("brand", "condition", "location"):
            vocabs[name] = sorted({v for v in map(_norm, _col(df, name)) if v is not None})
        prices = pd.to_numeric(pd.Series(_col(df, "price"), index=df.index), errors="coerce")
        qs = np.linspace(0, 1, N_PRICE_BUCKETS + 1)[1:-1]
        valid = prices.notna() & np.isfinite(prices)
        global_edges = np.quantile(prices[valid], qs).tolist() if valid.any() else []
        edges: dict[str, list[float]] = {}
        for l1, grp in prices[valid].groupby(lv["category_l1"][valid]):
            if len(grp) >= N_PRICE_BUCKETS:
                edges[str(l1)] = np.quantile(grp.to_numpy(), qs).tolist()
        return cls(
            item_ids=ids,
            id_known=known,
            vocabs=vocabs,
            price_edges=edges,
            global_price_edges=global_edges,
            title_buckets=title_buckets,
            max_title_tokens=max_title_tokens,
            history_length=history_length,
        )

    # -- sizes the towers are built with ---------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        """Item rows including row 0 (padding/unknown)."""
        return len(self.item_ids) + 1

    def sizes(self) -> dict[str, int]:
        out = {name: len(self.vocabs[name]) + 1 for name in CATEGORICAL}
        out.update(
            n_rows=self.n_rows,
            price_bucket=N_PRICE_BUCKETS + 1,
            title_buckets=self.title_buckets,
            max_title_tokens=self.max_title_tokens,
        )
        return out

    def id_known_tensor(self) -> torch.Tensor:
        return torch.tensor(self.id_known, dtype=torch.bool)

    # -- encoding ----------------------------------------------------------------------------------------
    def rows_of(self, item_ids: Iterable[Any]) -> np.ndarray:
        """Model rows of item ids (0 for unknown ids)."""
        get = self.item_index.get
        return np.fromiter((get(str(i), 0) if i is not None else 0 for i in item_ids), dtype=np.int64)

    def arrow_rows(self, values: Any) -> np.ndarray:
        """Vectorised ``rows_of`` for a pyarrow string array (the training data path)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._arrow_vocab is None:
            self._arrow_vocab = pa.array(self.item_ids, type=pa.string())
        idx = pc.index_in(values.cast(pa.string()), value_set=self._arrow_vocab)
        return (idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)) + 1

    def _price_bucket(self, l1: str | None, price: Any) -> int:
        try:
            p = float(price)
        except (TypeError, ValueError):
            return 0
        if not math.isfinite(p):
            return 0
        edges = self.price_edges.get(l1 or "", self.global_price_edges)
        return int(np.searchsorted(edges, p, side="right")) + 1

    def encode_items(self, items: Any) -> dict[str, torch.Tensor]:
        """Items (pandas / pyarrow / dicts / ``Item`` structs) → the item tower's keyword arguments.

        ``item_row`` is the model row when the id is in the vocabulary (else 0: content only);
        ``title_tokens`` is Long[B, max_title_tokens], 0-padded."""
        df = _to_frame(items).reset_index(drop=True)
        n = len(df)
        lv = _levels_frame(df)
        out: dict[str, torch.Tensor] = {"item_row": torch.from_numpy(self.rows_of(_col(df, "item_id")))}
        for name in ("category_l1", "category_l2", "category_l3"):
            look = self._lookup[name]
            out[name] = torch.tensor([look.get(v, 0) for v in lv[name].tolist()], dtype=torch.long)
        for name in ("brand", "condition", "location"):
            look = self._lookup[name]
            out[name] = torch.tensor([look.get(_norm(v), 0) for v in _col(df, name)], dtype=torch.long)
        out["price_bucket"] = torch.tensor(
            [
                self._price_bucket(l1, p)
                for l1, p in zip(lv["category_l1"].tolist(), _col(df, "price"), strict=True)
            ],
            dtype=torch.long,
        )
        tokens = torch.zeros((n, self.max_title_tokens), dtype=torch.long)
        for i, title in enumerate(_col(df, "title")):
            ids = title_token_ids(title, self.title_buckets, self.max_title_tokens)
            if ids:
                tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        out["title_tokens"] = tokens
        return {k: out[k] for k in ITEM_FEATURES}

    def encode_catalog(self, items: Any) -> dict[str, torch.Tensor]:
        """Features of every vocabulary row, row-aligned (row 0 and items without content are all-zero
        but keep their ``item_row``). This is what the user tower bakes in, so ``hist_rows`` suffice."""
        df = _to_frame(items)
        df = df.assign(item_id=df["item_id"].astype(str)).drop_duplicates("item_id", keep="last")
        df = df.set_index("item_id").reindex(self.item_ids).reset_index()
        feats = self.encode_items(df)
        pad = {k: torch.zeros((1, *v.shape[1:]), dtype=v.dtype) for k, v in feats.items()}
        return {k: torch.cat([pad[k], feats[k]], dim=0) for k in ITEM_FEATURES}

    def encode_histories(
        self, histories: Sequence[Sequence[tuple[Any, Any, float]]], L: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[(item_id, event_type, age_s), ...]`` per user, oldest first → ``(hist_rows, hist_events,
        hist_age_s)`` of shape [B, L], left-padded so the most recent interaction is always in the last
        column (the user tower reads recency from the right)."""
        L = int(L or self.history_length)
        B = len(histories)
        rows = torch.zeros((B, L), dtype=torch.long)
        events = torch.zeros((B, L), dtype=torch.long)
        ages = torch.zeros((B, L), dtype=torch.float32)
        for b, hist in enumerate(histories):
            hist = list(hist)[-L:]
            off = L - len(hist)
            for j, (iid, ev, age) in enumerate(hist):
                rows[b, off + j] = self.item_index.get(str(iid), 0)
                events[b, off + j] = EVENT_TYPE_CODES.get(str(ev), 0)
                ages[b, off + j] = max(float(age or 0.0), 0.0)
        return rows, events, ages

    # -- persistence -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "item_ids": self.item_ids,
            "id_known": self.id_known,
            "vocabs": self.vocabs,
            "price_edges": self.price_edges,
            "global_price_edges": self.global_price_edges,
            "title_buckets": self.title_buckets,
            "max_title_tokens": self.max_title_tokens,
            "history_length": self.history_length,
            "event_type_codes": dict(EVENT_TYPE_CODES),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureEncoder:
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"features.json format {d.get('format_version')!r}, expected {FORMAT_VERSION}")
        if d.get("event_type_codes", dict(EVENT_TYPE_CODES)) != dict(EVENT_TYPE_CODES):
            raise ValueError("features.json was fitted with different event type codes")
        return cls(
            item_ids=d["item_ids"],
            id_known=d["id_known"],
            vocabs=d["vocabs"],
            price_edges=d["price_edges"],
            global_price_edges=d["global_price_edges"],
            title_buckets=d["title_buckets"],
            max_title_tokens=d["max_title_tokens"],
            history_length=d["history_length"],
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureEncoder:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureEncoder) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
