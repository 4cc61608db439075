"""Business rules applied after retrieval and ranking: filter, adjust scores, diversify.

Everything here works on flat numpy arrays describing the candidates (one entry per FAISS hit), so the
rules cost microseconds for K≈500 and can be unit-tested without a model, an index or a server. The
service's bundle and live-overlay code is
what fills a :class:`Candidates` from item rows.

Order of operations, and why:

1. **Hard filters** (never shown, whatever the score): unavailable, already seen/purchased (per event
   type, configurable), request filters (category, max price, location), the query item itself. Each
   rule's removals are counted (Prometheus ``candidates_filtered_total{rule}``), so a rule that suddenly
   eats the whole candidate set is visible.
2. **Score adjustments**: promotions/boosts (additive, from config or a bundle file) and a popularity
   penalty ``strength · log1p(pop)/log1p(max pop)`` that nudges the long tail up without re-ordering
   clear wins (popular items are already over-represented by in-batch-trained retrieval).
3. **Diversity**: a greedy pass that caps items per category (at a configurable level of the path) and
   per seller; if caps leave the page short, the skipped items fill it in score order (a full page beats
   a perfectly diverse short one). ``mmr`` mode uses maximal marginal relevance on embeddings instead.

When the hard filters leave fewer than ``k`` items the caller widens retrieval (bigger K, then an exact
scan of the filtered subset, then popular items) instead of returning a short page; :class:`RerankResult`
says whether that is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import msgspec
import numpy as np

from relevance_core.ranking.rowtable import contains

#: Names of the filtering rules (metric label values).
RULE_UNAVAILABLE = "unavailable"
RULE_SEEN = "seen"
RULE_CATEGORY = "category"
RULE_MAX_PRICE = "max_price"
RULE_LOCATION = "location"
RULE_QUERY_ITEM = "query_item"
RULE_DUPLICATE = "duplicate"


@dataclass(frozen=True)
class RerankConfig:
    popularity_penalty: float = 0.05
    max_per_category: int = 6
    max_per_seller: int = 3
    diversity: str = "caps"  # "caps" | "mmr" | "none"
    mmr_lambda: float = 0.8


@dataclass
class Candidates:
    """Parallel arrays, one entry per candidate. ``rows`` are global rows (bundle rows, then live-overlay
    rows); the coded columns use the bundle's vocabularies (``-1`` = unknown)."""

    rows: np.ndarray  # int64
    scores: np.ndarray  # float32, retrieval similarity
    available: np.ndarray  # bool
    path_code: np.ndarray  # int32: full category path
    diversity_code: np.ndarray  # int32: category prefix used for the per-category cap
    seller_code: np.ndarray  # int32
    location_code: np.ndarray  # int32 (lower-cased location)
    price: np.ndarray  # float64, NaN = unknown
    popularity: np.ndarray  # float32 in [0, 1] (normalised log popularity)
    boost: np.ndarray  # float32 additive promotion boost
    #: True when ``rows`` are known to be distinct (one FAISS search), so the duplicate check is skipped
    distinct: bool = False

    def __len__(self) -> int:
        return len(self.rows)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.__dict__.items() if k != "distinct"}

    def take(self, idx: np.ndarray) -> Candidates:
        return Candidates(**{k: v[idx] for k, v in self._arrays().items()}, distinct=self.distinct)

    @staticmethod
    def concat(parts: list[Candidates]) -> Candidates:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Candidates.empty()
        if len(parts) == 1:
            return parts[0]
        return Candidates(**{k: np.concatenate([p.__dict__[k] for p in parts]) for k in parts[0]._arrays()})

    @staticmethod
    def empty() -> Candidates:
        i32 = np.zeros(0, dtype=np.int32)
        return Candidates(
            rows=np.zeros(0, dtype=np.int64),
            scores=np.zeros(0, dtype=np.float32),
            available=np.zeros(0, dtype=bool),
            path_code=i32,
            diversity_code=i32,
            seller_code=i32,
            location_code=i32,
            price=np.zeros(0, dtype=np.float64),
            popularity=np.zeros(0, dtype=np.float32),
            boost=np.zeros(0, dtype=np.float32),
        )


@dataclass(frozen=True)
class Filters:
    """Hard constraints of one request, already resolved to codes.

    ``category_codes`` None = no category filter; an empty array = a category nothing matches.
    ``location_code`` None = no filter; -2 = a location nothing has.
    """

    category_codes: np.ndarray | None = None
    max_price: float | None = None
    location_code: int | None = None
    exclude_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    query_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def restrictive(self) -> bool:
        """True when the request narrows the catalog (so widening the search can find more)."""
        return self.category_codes is not None or self.max_price is not None or self.location_code is not None


#: Up to this many values, :func:`member` compares directly instead of calling ``np.isin``.
SMALL_SET = 64


def member(values: np.ndarray, of: np.ndarray) -> np.ndarray:
    """``np.isin(values, of)``. For the sets a request brings (a history's seen items, a query item, a
    category's few path codes) a broadcast comparison costs ~5 µs against ``np.isin``'s ~35 µs (it sorts).
    For larger sets of item rows (the ranking stage's hundreds of candidates) a small hash table of them
    (:mod:`~relevance_core.ranking.rowtable`) answers in a few µs where ``np.isin`` took ~100-190 µs."""
    if len(of) <= SMALL_SET:
        return (values[:, None] == of[None, :]).any(axis=1)
    if values.dtype.kind not in "iu" or of.dtype.kind not in "iu" or not len(values):
        return np.isin(values, of)
    if min(int(values.min()), int(of.min())) < 0:
        return np.isin(values, of)
    return contains(values.astype(np.int64, copy=False), of.astype(np.int64, copy=False))


def apply_filters(c: Candidates, f: Filters) -> tuple[np.ndarray, dict[str, int]]:
    """Find candidates that must never be shown; return the survivors' indices and removals per rule.

    Rules are counted in a fixed order, each on what the previous ones left, so the counts add up to
    ``len(c) - len(survivors)``.
    """
    counts: dict[str, int] = {}
    keep = np.ones(len(c), dtype=bool)

    def rule(name: str, ok: np.ndarray) -> None:
        nonlocal keep
        removed = int(np.count_nonzero(keep & ~ok))
        if removed:
            counts[name] = counts.get(name, 0) + removed
        keep &= ok

    if len(c) == 0:
        return np.zeros(0, dtype=np.int64), counts
    if not c.distinct:
        # the same item can come from the index and the live overlay, or from two widened searches
        _, first = np.unique(c.rows, return_index=True)
        uniq = np.zeros(len(c), dtype=bool)
        uniq[first] = True
        rule(RULE_DUPLICATE, uniq)
    rule(RULE_UNAVAILABLE, c.available)
    if len(f.query_rows):
        rule(RULE_QUERY_ITEM, ~member(c.rows, f.query_rows))
    if len(f.exclude_rows):
        rule(RULE_SEEN, ~member(c.rows, f.exclude_rows))
    if f.category_codes is not None:
        rule(RULE_CATEGORY, member(c.path_code, f.category_codes))
    if f.max_price is not None:
        with np.errstate(invalid="ignore"):
            rule(RULE_MAX_PRICE, c.price <= f.max_price)  # unknown price (NaN) never passes
    if f.location_code is not None:
        rule(RULE_LOCATION, c.location_code == f.location_code)
    return np.flatnonzero(keep), counts


def adjusted_scores(c: Candidates, cfg: RerankConfig, base: np.ndarray | None = None) -> np.ndarray:
    """Base score (the retrieval score, or the ranker's) + promotion boost − popularity penalty (float32)."""
    s = (c.scores if base is None else base).astype(np.float32, copy=True)
    s += c.boost
    if cfg.popularity_penalty:
        s -= np.float32(cfg.popularity_penalty) * c.popularity
    return s


def diversify_caps(
    order: np.ndarray,
    category: np.ndarray,
    seller: np.ndarray,
    k: int,
    max_per_category: int,
    max_per_seller: int,
) -> np.ndarray:
    """Greedy: walk ``order`` (indices, best first), skip an item whose category or seller is at its cap;
    if that leaves fewer than ``k``, fill with the skipped items in order. Returns indices (≤ k).

    The walk reads the codes in chunks of ``4·k`` (a page is usually full long before the end of ~500
    candidates, and converting all of them to Python values was most of the cost)."""
    if max_per_category <= 0 and max_per_seller <= 0:
        return order[:k]
    chosen: list[int] = []
    skipped: list[int] = []
    per_cat: dict[int, int] = {}
    per_seller: dict[int, int] = {}
    step = max(4 * k, 32)
    for start in range(0, len(order), step):
        part = order[start : start + step]
        for i, cat, sel in zip(part.tolist(), category[part].tolist(), seller[part].tolist(), strict=True):
            if max_per_category > 0 and cat >= 0 and per_cat.get(cat, 0) >= max_per_category:
                skipped.append(i)
                continue
            if max_per_seller > 0 and sel >= 0 and per_seller.get(sel, 0) >= max_per_seller:
                skipped.append(i)
                continue
            chosen.append(i)
            per_cat[cat] = per_cat.get(cat, 0) + 1
            per_seller[sel] = per_seller.get(sel, 0) + 1
            if len(chosen) >= k:
                return np.asarray(chosen, dtype=np.int64)
    if skipped:
        chosen.extend(skipped[: k - len(chosen)])
        # keep score order among what was chosen: the page reads best-first
        rank = {idx: pos for pos, idx in enumerate(order.tolist())}
        chosen.sort(key=rank.__getitem__)
    return np.asarray(chosen, dtype=np.int64)


def diversify_mmr(scores: np.ndarray, emb: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Maximal marginal relevance: pick argmax ``lam·score − (1−lam)·max sim to picked`` k times."""
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(k, n)
    emb = np.asarray(emb, dtype=np.float32)
    sims = emb @ emb.T
    picked: list[int] = []
    max_sim = np.full(n, -np.inf, dtype=np.float32)
    avail = np.ones(n, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        val = lam * scores - (1.0 - lam) * penalty
        val[~avail] = -np.inf
        j = int(np.argmax(val))
        picked.append(j)
        avail[j] = False
        max_sim = np.maximum(max_sim, sims[j])
    return np.asarray(picked, dtype=np.int64)


@dataclass
class RerankResult:
    """The chosen candidates (best first), their final scores, and what the rules removed."""

    chosen: Candidates
    scores: np.ndarray
    filtered: dict[str, int]
    survivors: int

    @property
    def n(self) -> int:
        return len(self.chosen)


#: ``rescore(candidates, survivors) -> float32 [len(candidates)]``: new base scores, read at ``survivors``
Rescore = Callable[[Candidates, np.ndarray], np.ndarray]


def rerank(
    c: Candidates,
    f: Filters,
    k: int,
    cfg: RerankConfig,
    *,
    embeddings: np.ndarray | None = None,
    rescore: Rescore | None = None,
) -> RerankResult:
    """Filter, (re-score,) adjust and diversify ``c`` down to at most ``k`` items.

    ``embeddings`` (rows aligned with ``c``) is only needed for ``mmr`` diversity; without it ``mmr``
    falls back to caps. ``rescore`` is the ranking stage: it runs after the hard filters, on the
    survivors only, and its scores replace the retrieval scores before boosts, penalty and diversity.
    """
    idx, filtered = apply_filters(c, f)
    if len(idx) == 0:
        return RerankResult(Candidates.empty(), np.zeros(0, dtype=np.float32), filtered, 0)
    # scores of every candidate (vectorised, cheap), ranked among the survivors; indices stay into ``c``,
    # so only the chosen few are copied out
    scores = adjusted_scores(c, cfg, None if rescore is None else rescore(c, idx))
    order = idx[np.argsort(-scores[idx], kind="stable")]
    if cfg.diversity == "mmr" and embeddings is not None:
        top = order[: max(4 * k, 50)]
        sel = top[diversify_mmr(scores[top], np.asarray(embeddings)[top], k, cfg.mmr_lambda)]
    elif cfg.diversity == "none":
        sel = order[:k]
    else:
        sel = diversify_caps(
            order, c.diversity_code, c.seller_code, k, cfg.max_per_category, cfg.max_per_seller
        )
    return RerankResult(c.take(sel), scores[sel], filtered, len(idx))


# -- promotions -----------------------------------------------------------------------------------------
class Promotions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Additive boosts, from ``settings.promotions_file`` or a bundle's optional ``promotions.json``.

    ``items``: item id → boost. ``categories``: category path prefix (case-insensitive, ``"a > b"``) →
    boost, applied to every item under it. ``sellers``: seller id → boost. Boosts add to the cosine
    similarity (range −1..1), so 0.05 is a nudge and 1.0 pins an item to the top.
    """

    items: dict[str, float] = {}
    categories: dict[str, float] = {}
    sellers: dict[str, float] = {}

    @classmethod
    def load(cls, data: bytes) -> Promotions:
        return msgspec.json.decode(data, type=cls)

    def merged(self, other: Promotions | None) -> Promotions:
        """``other`` (the config file) wins over ``self`` (the bundle's file) per key."""
        if other is None:
            return self
        return Promotions(
            items={**self.items, **other.items},
            categories={**self.categories, **other.categories},
            sellers={**self.sellers, **other.sellers},
        )

    @property
    def empty(self) -> bool:
        return not (self.items or self.categories or self.sellers)


def category_prefix_matches(paths: list[str], prefix: str) -> np.ndarray:
    """Indices of ``paths`` equal to ``prefix`` or under it (level-wise, case/space-insensitive), or
    whose any level equals it (so ``category=Phones`` works without the full path)."""
    want = _norm_path(prefix)
    if not want:
        return np.zeros(0, dtype=np.int32)
    single = " > " not in want
    out = []
    for i, p in enumerate(paths):
        n = _norm_path(p)
        if n == want or n.startswith(want + " > ") or (single and want in n.split(" > ")):
            out.append(i)
    return np.asarray(out, dtype=np.int32)


def _norm_path(p: str | None) -> str:
    if not p:
        return ""
    return " > ".join(" ".join(x.split()).lower() for x in p.split(">") if x.strip())


def boost_per_code(paths: list[str], promos: Mapping[str, float]) -> np.ndarray:
    """Boost per category-path code (the most specific matching prefix wins)."""
    out = np.zeros(len(paths), dtype=np.float32)
    if not promos:
        return out
    norm = {_norm_path(k): float(v) for k, v in promos.items()}
    for i, p in enumerate(paths):
        parts = _norm_path(p).split(" > ")
        for depth in range(len(parts), 0, -1):
            key = " > ".join(parts[:depth])
            if key in norm:
                out[i] = norm[key]
                break
    return out
