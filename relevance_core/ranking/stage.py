"""The ranking stage: the union of the candidate sources, their features, and the learned ranker's order.

One object, loaded from a bundle (or a model version's ranking artifacts), called the same way by the
service for one request and by training / offline evaluation for many queries:

1. :meth:`RankingStage.candidates` — the ANN's first ``ann_k`` rows, then co-visitation, the history's
   own items and the popular items of its category, distinct;
2. (the caller applies the hard filters here: the service's rules, or nothing in the benchmark protocol);
3. :meth:`RankingStage.score` — what each source said of each surviving candidate, the features
   (:func:`~relevance_core.ranking.features.candidate_features`) and the ranker's score. Without a ranker
   (none trained, or it failed its gate) the score is the retrieval order: ANN cosine for ANN
   candidates, and the other sources' candidates after them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from relevance_core.compiled import kernel
from relevance_core.ranking.covisit import COVISIT_FILES, Covisitation
from relevance_core.ranking.features import ABSENT_RANK, Gathered, History, candidate_features
from relevance_core.ranking.ranker import RANKER_FILE, RANKER_META, Ranker
from relevance_core.ranking.rowtable import build, find, first_occurrences
from relevance_core.ranking.sources import ItemAttributes, PopularByCategory

ITEM_STATS_FILE = "item_stats.parquet"
STAGE_FILE = "ranking.json"
#: the files a bundle carries for this stage (all optional: a bundle without them serves retrieval-only)
STAGE_FILES = (*COVISIT_FILES, ITEM_STATS_FILE, STAGE_FILE, RANKER_FILE, RANKER_META)

#: score offset that puts a candidate the ranker did not score (retrieval-only: a non-ANN source's) below
#: every ANN candidate (cosines are in [-1, 1])
_BELOW = -4.0


@dataclass(frozen=True)
class StageConfig:
    #: ANN candidates the stage scores (the first ones by retrieval score)
    ann_k: int = 100
    #: co-visitation candidates added (best aggregated score first)
    covisit_k: int = 50
    #: popular candidates of the history's category added
    popular_k: int = 20
    #: history items added as candidates (most recent first)
    history_k: int = 20


_EMPTY_I = np.zeros(0, np.int64)
_EMPTY_F = np.zeros(0, np.float32)


@dataclass(frozen=True)
class QueryContext:
    """One query's non-ANN sources (:meth:`RankingStage.context`)."""

    hist: History
    cv_by_score: np.ndarray  # co-visitation neighbours of the history, best aggregated score first
    cv_scores: np.ndarray  # their aggregated scores (same order)
    last_rows: np.ndarray  # co-visitation neighbours of the most recent item alone ...
    last_scores: np.ndarray  # ... and their scores
    popular: np.ndarray  # popular in the history's category, best first
    history: np.ndarray  # the history's distinct known rows, most recent first


@dataclass
class RankingStage:
    attrs: ItemAttributes
    covisit: Covisitation
    popular: PopularByCategory
    ranker: Ranker | None = None
    cfg: StageConfig = StageConfig()

    @property
    def n_items(self) -> int:
        return len(self.attrs)

    # -- building and loading -------------------------------------------------------------------------
    @classmethod
    def retrieval_only(cls, item_ids: Sequence[str], items: pa.Table) -> RankingStage:
        attrs = ItemAttributes.from_tables(item_ids, items, None)
        return cls(attrs, Covisitation.empty(len(attrs)), PopularByCategory.build(attrs))

    @classmethod
    def load(cls, directory: str | Path, item_ids: Sequence[str], items: pa.Table) -> RankingStage:
        """From a directory holding :data:`STAGE_FILES` (a bundle or ``artifacts/ranking/<v>/``);
        missing files mean "no such source" / "no ranker", never an error."""
        d = Path(directory)
        n = len(item_ids)
        cfg = StageConfig()
        if (d / STAGE_FILE).is_file():
            cfg = StageConfig(**json.loads((d / STAGE_FILE).read_text()).get("config", {}))
        stats = pq.read_table(d / ITEM_STATS_FILE) if (d / ITEM_STATS_FILE).is_file() else None
        attrs = ItemAttributes.from_tables(item_ids, items, stats)
        covisit = Covisitation.load(d)
        if covisit is None:
            covisit = Covisitation.empty(n)
        elif covisit.n_items != n:
            raise ValueError(f"co-visitation table has {covisit.n_items} rows, the bundle {n} items")
        ranker = Ranker.load(d) if (d / RANKER_FILE).is_file() and (d / RANKER_META).is_file() else None
        stage = cls(attrs, covisit, PopularByCategory.build(attrs, cfg.popular_k), ranker, cfg)
        stage.warm()
        return stage

    def warm(self) -> None:
        """Run one made-up query through the compiled kernels, so they are compiled (or loaded from
        numba's on-disk cache) while the bundle loads rather than on its first request (the ranker's
        trees warm themselves when it is built)."""
        if self.n_items == 0:
            return
        hist = History(np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1))
        ann = np.arange(min(self.n_items, 2), dtype=np.int64)
        ctx = self.context(hist)
        rows = self.candidates(hist, ann, ctx)
        self.features(hist, rows, ann, np.zeros(len(rows), np.float32), 0.0, ctx)

    def save(self, directory: str | Path, stats: pa.Table) -> None:
        """Write the sources (and the ranker when there is one) to ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.covisit.save(d)
        pq.write_table(stats, d / ITEM_STATS_FILE)
        meta = {"config": asdict(self.cfg), "ranker": self.ranker is not None}
        if self.ranker is not None:
            self.ranker.save(d)
            meta["ranker_metrics"] = self.ranker.meta.get("metrics", {})
        (d / STAGE_FILE).write_text(json.dumps(meta, indent=2, default=float))

    # -- one query ------------------------------------------------------------------------------------
    def context(self, hist: History) -> QueryContext:
        """What the non-ANN sources say for ``hist``: computed once per query, read by
        :meth:`candidates` and :meth:`gather` (a request costs one co-visitation aggregation, not two)."""
        known = (hist.rows >= 0) & (hist.rows < self.n_items)
        if not known.any():
            return QueryContext(
                hist=hist,
                cv_by_score=_EMPTY_I,
                cv_scores=_EMPTY_F,
                last_rows=_EMPTY_I,
                last_scores=_EMPTY_F,
                popular=self.popular.overall[: self.cfg.popular_k],
                history=_EMPTY_I,
            )
        rows = hist.rows[known]
        cv_rows, cv_scores = self.covisit.aggregate(rows, hist.recency_weights()[known])
        last_rows, last_scores = _EMPTY_I, _EMPTY_F
        if known[-1]:
            last_rows, last_scores = self.covisit.row(int(hist.rows[-1]))
        # distinct, most recent first (a dict keeps the first occurrence; cheaper than np.unique at ~10)
        recent = np.fromiter(dict.fromkeys(rows[::-1].tolist()), np.int64)
        popular = self.popular.for_category(int(self.attrs.top_code[rows[-1]]))[: self.cfg.popular_k]
        return QueryContext(
            hist=hist,
            cv_by_score=cv_rows,
            cv_scores=cv_scores,
            last_rows=last_rows,
            last_scores=last_scores,
            popular=popular,
            history=recent[: self.cfg.history_k],
        )

    def candidates(self, hist: History, ann_rows: np.ndarray, ctx: QueryContext | None = None) -> np.ndarray:
        """ANN rows first (``ann_k``), then co-visitation, the history's items and popular ones, distinct."""
        ctx = ctx or self.context(hist)
        allrows = np.concatenate(
            [
                np.asarray(ann_rows[: self.cfg.ann_k], dtype=np.int64),
                ctx.cv_by_score[: self.cfg.covisit_k],
                ctx.history,
                ctx.popular,
            ]
        )
        if len(allrows) == 0:
            return allrows
        return first_occurrences(allrows)

    def gather(
        self, hist: History, rows: np.ndarray, ann_rows: np.ndarray, ctx: QueryContext | None = None
    ) -> Gathered:
        """What every source says of each of ``rows`` (which need not come from :meth:`candidates`)."""
        ctx = ctx or self.context(hist)
        rows = np.asarray(rows, dtype=np.int64)
        ann = np.asarray(ann_rows[: self.cfg.ann_k], dtype=np.int64)
        n = len(rows)
        if n == 0:
            return Gathered(rows, _EMPTY_F, _EMPTY_F, _EMPTY_F, _EMPTY_F, _EMPTY_F)
        ann_rank, cv_score, cv_last, cv_rank, popular_rank = _gather(
            *build(rows), n, ann, ctx.cv_by_score, ctx.cv_scores, ctx.last_rows, ctx.last_scores, ctx.popular
        )
        return Gathered(rows, ann_rank, cv_score, cv_last, cv_rank, popular_rank)

    def features(
        self,
        hist: History,
        rows: np.ndarray,
        ann_rows: np.ndarray,
        ann_score: np.ndarray,
        now_s: float,
        ctx: QueryContext | None = None,
    ) -> np.ndarray:
        g = self.gather(hist, rows, ann_rows, ctx)
        return candidate_features(hist, g, ann_score, self.attrs, now_s)

    def score(
        self,
        hist: History,
        rows: np.ndarray,
        ann_rows: np.ndarray,
        user_vec: np.ndarray,
        emb_of: Callable[[np.ndarray], np.ndarray],
        now_s: float,
        ctx: QueryContext | None = None,
    ) -> np.ndarray:
        """float32 scores of ``rows`` (higher first): the ranker's, or the retrieval order without one."""
        rows = np.asarray(rows, dtype=np.int64)
        ann_score = (emb_of(rows) @ np.asarray(user_vec, np.float32).reshape(-1)).astype(np.float32)
        if self.ranker is None:
            in_ann = np.isin(rows, np.asarray(ann_rows[: self.cfg.ann_k], np.int64))
            return np.where(in_ann, ann_score, ann_score + _BELOW).astype(np.float32)
        return self.ranker.predict(self.features(hist, rows, ann_rows, ann_score, now_s, ctx))


@kernel
def _gather(keys, pos, shift, n, ann, cv_rows, cv_scores, last_rows, last_scores, popular):
    """Per candidate (``keys, pos, shift``: the candidates' row table, :mod:`rowtable`): its rank in the
    ANN list, the co-visitation score and rank, the most recent item's co-visitation score, the popular
    rank."""
    absent = np.float32(ABSENT_RANK)
    ann_rank = np.full(n, absent, np.float32)
    cv_score = np.zeros(n, np.float32)
    cv_last = np.zeros(n, np.float32)
    cv_rank = np.full(n, absent, np.float32)
    popular_rank = np.full(n, absent, np.float32)
    for k in range(ann.shape[0]):
        p = find(keys, pos, shift, ann[k])
        if p >= 0:
            ann_rank[p] = k
    for k in range(cv_rows.shape[0]):
        p = find(keys, pos, shift, cv_rows[k])
        if p >= 0:
            cv_score[p] = cv_scores[k]
            cv_rank[p] = k if cv_scores[k] > 0 else absent
    for k in range(last_rows.shape[0]):
        p = find(keys, pos, shift, last_rows[k])
        if p >= 0:
            cv_last[p] = last_scores[k]
    for k in range(popular.shape[0]):
        p = find(keys, pos, shift, popular[k])
        if p >= 0:
            popular_rank[p] = k
    return ann_rank, cv_score, cv_last, cv_rank, popular_rank
