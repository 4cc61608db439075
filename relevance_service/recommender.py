"""The request path: history → user tower → FAISS top-K (+ the other candidate sources) → hard filters →
ranker → boosts, penalty, diversity → top N.

Pure functions of one :class:`~relevance_service.live_items.ServingState` (the bundle + its live
overlay, read once per request) and a :class:`Query`; no HTTP here, so the benchmark's in-process "raw
path" and the handlers run the same code.

Strategies:

- ``personalized``: the user tower over the recent history (stored state, or the guest's posted one);
- ``popular``: popular/trending items (popularity from the bundle), for anonymous users, unknown users
  and histories whose items the model does not know;
- ``similar``: neighbours of one item's embedding ("find similar items").

When the bundle carries a learned ranker (``relevance_core.ranking``), a personalised request adds the
co-visitation, history and popular-in-category candidates to the ANN's, and the ranker's score replaces
the retrieval score for the survivors of the hard filters (the ANN's first ``ann_k`` and the other
sources' candidates; further ANN hits keep their order below them). Without one, nothing changes.

When the rules leave fewer than ``k`` items the search widens step by step (:data:`WIDEN_STAGES`):
a bigger FAISS K with a wider probe, then an exact scan over the items that pass the filters (cheap for
a selective filter, bounded by ``exact_scan_limit``), then popular items passing the filters.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from relevance_core.ranking.batch import history_of
from relevance_core.ranking.features import History
from relevance_core.ranking.rules import (
    Candidates,
    Filters,
    RerankConfig,
    RerankResult,
    Rescore,
    member,
    rerank,
)
from relevance_service.live_items import ServingState
from relevance_service.serving_bundle import top_level
from relevance_service.settings import ServiceSettings
from relevance_service.user_state import HistoryEntry

WIDEN_STAGES = ("index", "exact", "popular")

_VERBS = {
    "view": "viewed",
    "click": "clicked",
    "add_to_favorites": "saved",
    "add_to_cart": "added to your cart",
    "contact_seller": "asked about",
    "purchase": "bought",
    "impression": "saw",
}


@dataclass
class Query:
    k: int = 20
    category: str | None = None
    max_price: float | None = None
    location: str | None = None
    exclude_item_ids: list[str] = field(default_factory=list)


@dataclass
class Slate:
    strategy: str
    rows: np.ndarray
    scores: np.ndarray
    reasons: list[str]
    filtered: dict[str, int]
    widened: str | None = None


class Recommender:
    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        # the settings carry every rule knob under the rules' own names
        self.cfg = RerankConfig(
            **{f.name: getattr(settings, f.name) for f in dataclasses.fields(RerankConfig)}
        )
        # popular lists are already popularity-ordered: no popularity penalty there
        self.popular_cfg = dataclasses.replace(
            self.cfg, popularity_penalty=0.0, diversity="none" if settings.diversity == "none" else "caps"
        )
        self.exclude_types = frozenset(settings.exclude_seen_event_types)

    # -- entry points -----------------------------------------------------------------------------------
    def for_history(
        self, state: ServingState, history: list[HistoryEntry], query: Query, now: float | None = None
    ) -> Slate:
        """Personalised from a history (oldest first); popular when the model knows none of its items."""
        now = time.time() if now is None else now
        b = state.bundle
        recent = history[-b.history_length :]
        q = (
            b.user_vector([(e.item_id, e.event_type, max(0.0, now - e.ts)) for e in recent])
            if recent
            else None
        )
        seen = [e.item_id for e in history if e.event_type in self.exclude_types]
        exclude = state.rows_of(seen + list(query.exclude_item_ids))
        filters = self._filters(state, query, exclude)
        if q is None:
            return self._popular(state, query, filters)
        hist = None
        if b.ranked:
            hist = history_of(
                b.row_of,
                [e.item_id for e in recent],
                [e.event_type for e in recent],
                [max(0.0, now - e.ts) for e in recent],
            )
        res, widened = self._search(state, q, filters, query.k, hist=hist, now=now)
        slate = self._finish(state, "personalized", res, widened, query, filters)
        self._history_reasons(state, slate, history)
        return slate

    def popular(self, state: ServingState, query: Query) -> Slate:
        return self._popular(
            state, query, self._filters(state, query, state.rows_of(list(query.exclude_item_ids)))
        )

    def similar(self, state: ServingState, item_id: str, query: Query) -> Slate | None:
        """Items near ``item_id``'s embedding; None when the item is unknown (bundle and overlay)."""
        row = state.row_of(item_id)
        if row is None:
            return None
        q = state.embedding_rows(np.asarray([row]))
        filters = self._filters(state, query, state.rows_of(list(query.exclude_item_ids)), query_rows=[row])
        res, widened = self._search(state, q, filters, query.k)
        slate = self._finish(state, "similar", res, widened, query, filters)
        title = (state.hydrate(np.asarray([row]))[0] or {}).get("title") or item_id
        slate.reasons = [r or f"similar to {title}" for r in slate.reasons]
        return slate

    def raw_path(self, state: ServingState, history: list[tuple[str, str, float]], k: int | None = None):
        """User tower + FAISS search only (the benchmark's reference for the served path)."""
        q = state.bundle.user_vector(history)
        if q is None:
            return None
        return state.bundle.search(q, k or self.settings.candidates_k)

    # -- internals --------------------------------------------------------------------------------------------
    def _filters(
        self, state: ServingState, query: Query, exclude: np.ndarray, query_rows: list[int] | None = None
    ) -> Filters:
        return Filters(
            category_codes=state.category_codes(query.category) if query.category else None,
            max_price=query.max_price,
            location_code=state.location_code(query.location) if query.location else None,
            exclude_rows=exclude,
            query_rows=np.asarray(query_rows or [], dtype=np.int64),
        )

    def _rerank(
        self,
        state: ServingState,
        c: Candidates,
        filters: Filters,
        k: int,
        cfg: RerankConfig,
        rescore: Rescore | None = None,
    ) -> RerankResult:
        emb = state.embedding_rows(c.rows) if cfg.diversity == "mmr" else None
        return rerank(c, filters, k, cfg, embeddings=emb, rescore=rescore)

    def _ranked(
        self, state: ServingState, q: np.ndarray, c: Candidates, hist: History | None, now: float
    ) -> tuple[Candidates, Rescore | None]:
        """The ANN candidates ``c`` plus the other sources' candidates, and the ranker as a re-scoring
        step; ``c`` unchanged when the bundle has no ranker or the stage is switched off."""
        stage = state.bundle.ranking
        if hist is None or stage is None or stage.ranker is None or not self.settings.ranking_stage:
            return c, None
        ann = c.rows[np.argsort(-c.scores, kind="stable")]
        ctx = stage.context(hist)
        ranked = stage.candidates(hist, ann, ctx)
        extra = ranked[min(len(ann), stage.cfg.ann_k) :]
        extra = extra[~member(extra, ann)] if len(extra) else extra
        zeros = np.zeros(len(extra), np.float32)
        if c.distinct:
            # one FAISS search and no live listings (the common case): the union is bundle rows only and
            # distinct (``extra`` holds no ANN row), so its rule columns are one gather, not ten concats
            union = state.main_candidates(
                np.concatenate([c.rows, extra]), np.concatenate([c.scores, zeros]), distinct=True
            )
        else:
            union = Candidates.concat([c, state.main_candidates(extra, zeros)])

        def rescore(cands: Candidates, idx: np.ndarray) -> np.ndarray:
            out = np.full(len(cands), -np.inf, dtype=np.float32)
            inside = member(cands.rows[idx], ranked)
            sel = idx[inside]
            scores = stage.score(hist, cands.rows[sel], ann, q, state.embedding_rows, now, ctx)
            out[sel] = scores
            rest = idx[~inside]  # deeper ANN hits: below every ranked candidate, in retrieval order
            floor = float(scores.min()) if len(scores) else 0.0
            out[rest] = floor - 1.0 + cands.scores[rest] * 1e-3
            return out

        return union, rescore

    def _search(
        self,
        state: ServingState,
        q: np.ndarray,
        filters: Filters,
        k: int,
        *,
        hist: History | None = None,
        now: float = 0.0,
    ) -> tuple[RerankResult, str | None]:
        s = self.settings
        b = state.bundle

        def ranked(c: Candidates) -> RerankResult:
            union, rescore = self._ranked(state, q, c, hist, now)
            return self._rerank(state, union, filters, k, self.cfg, rescore)

        K = min(s.candidates_k, b.n_items)
        res = ranked(state.retrieve(q, K))
        widened = None
        if res.n < k and K < b.n_items:
            K2 = min(max(K * 8, s.candidates_k), s.max_candidates_k, b.n_items)
            if K2 > K:
                res = ranked(state.retrieve(q, K2, b.default_breadth.widened(4)))
                widened = "index"
        if res.n < k and filters.restrictive:
            main_rows, local = state.filtered_subset(
                filters.category_codes, filters.max_price, filters.location_code
            )
            if len(main_rows) <= s.exact_scan_limit:
                res = ranked(state.exact_candidates(q, main_rows, local, max(K, 4 * k)))
                widened = "exact"
        return res, widened

    def _popular(self, state: ServingState, query: Query, filters: Filters) -> Slate:
        b = state.bundle
        order = b.popular_order
        k = query.k
        chunk = max(8 * k, 1000)
        while True:
            rows = order[:chunk]
            res = self._rerank(
                state,
                state.main_candidates(rows, b.popularity[rows], distinct=True),
                filters,
                k,
                self.popular_cfg,
            )
            if res.n >= k or chunk >= len(order):
                break
            chunk *= 8
        widened = None
        if res.n < k and filters.restrictive:
            main_rows, local = state.filtered_subset(
                filters.category_codes, filters.max_price, filters.location_code
            )
            main_rows = main_rows[np.argsort(-b.pop_score[main_rows], kind="stable")[: max(8 * k, 1000)]]
            c = Candidates.concat(
                [
                    state.main_candidates(main_rows, b.popularity[main_rows]),
                    state.overlay_candidates(local, np.zeros(len(local), np.float32), state.overlay.data),
                ]
            )
            res = self._rerank(state, c, filters, k, self.popular_cfg)
            widened = "exact"
        slate = Slate("popular", res.chosen.rows, res.scores, [""] * res.n, res.filtered, widened)
        self._popular_reasons(state, slate)
        return slate

    def _finish(
        self,
        state: ServingState,
        strategy: str,
        res: RerankResult,
        widened: str | None,
        query: Query,
        filters: Filters,
    ) -> Slate:
        slate = Slate(strategy, res.chosen.rows, res.scores, [""] * res.n, res.filtered, widened)
        if res.n < query.k:
            # last resort: fill with popular items that pass the filters (a short page helps no one)
            fill = self._popular(
                state,
                Query(k=query.k, category=query.category, max_price=query.max_price, location=query.location),
                filters,
            )
            have = set(slate.rows.tolist())
            extra = [i for i, r in enumerate(fill.rows.tolist()) if r not in have][: query.k - res.n]
            if extra:
                idx = np.asarray(extra, dtype=np.int64)
                base = float(slate.scores.min()) if len(slate.scores) else 0.0
                slate.rows = np.concatenate([slate.rows, fill.rows[idx]])
                # popular fills rank below every retrieved item
                slate.scores = np.concatenate(
                    [slate.scores, np.float32(base - 1.0) + fill.scores[idx] * 1e-3]
                )
                slate.reasons = slate.reasons + [fill.reasons[i] for i in extra]
                slate.widened = "popular"
        return slate

    def _popular_reasons(self, state: ServingState, slate: Slate) -> None:
        metas = state.hydrate(slate.rows)
        out = []
        for m in metas:
            cat = top_level((m or {}).get("category_path"))
            out.append(f"popular in {cat}" if cat else "trending now")
        slate.reasons = out

    def _history_reasons(self, state: ServingState, slate: Slate, history: list[HistoryEntry]) -> None:
        """ "similar to <item> you viewed": of the 10 items most recently interacted with, the one whose
        embedding is closest to each result (with the latest event type on it)."""
        todo = [i for i, r in enumerate(slate.reasons) if not r]
        if not todo:
            return
        latest: dict[str, str] = {}
        for e in history:
            latest.pop(e.item_id, None)  # re-inserted: the order is that of each item's latest event
            latest[e.item_id] = e.event_type
        known, rows = [], []
        for iid in list(latest)[-10:]:
            r = state.row_of(iid)
            if r is not None:
                known.append(iid)
                rows.append(r)
        if not rows:
            for i in todo:
                slate.reasons[i] = "recommended for you"
            return
        # one embedding gather for both sides, and metadata only for the history items that are named
        emb = state.embedding_rows(np.concatenate([slate.rows[todo], np.asarray(rows, dtype=np.int64)]))
        best = (emb[: len(todo)] @ emb[len(todo) :].T).argmax(axis=1).tolist()
        named = sorted(set(best))
        metas = state.hydrate(np.asarray([rows[j] for j in named], dtype=np.int64))
        titles = {j: (m or {}).get("title") or known[j] for j, m in zip(named, metas, strict=True)}
        for i, j in zip(todo, best, strict=True):
            slate.reasons[i] = f"similar to {titles[j]} you {_VERBS.get(latest[known[j]], 'viewed')}"
