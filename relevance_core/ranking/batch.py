"""The ranking stage over many queries at once: training examples for the ranker, offline evaluation and
the session benchmark. Per query it calls exactly what the service calls for one request
(:meth:`RankingStage.candidates`, :meth:`RankingStage.features`); only the user tower, the ANN search and
the ranker's predictions are batched, which changes no number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from relevance_core.ranking.features import ABSENT_RANK, FEATURES, History
from relevance_core.ranking.ranker import QueryBlock, grade
from relevance_core.ranking.stage import RankingStage
from relevance_core.schemas import EVENT_TYPE_CODES


def history_of(
    row_of: Mapping[str, int], item_ids: Sequence[str], event_types: Sequence[str], ages_s: Sequence[float]
) -> History:
    """A :class:`History` from id lists (oldest first); unknown items get row -1."""
    return History(
        rows=np.fromiter((row_of.get(str(i), -1) for i in item_ids), np.int64, len(item_ids)),
        events=np.fromiter((EVENT_TYPE_CODES.get(str(e), 0) for e in event_types), np.int64, len(item_ids)),
        ages_s=np.asarray(list(ages_s), dtype=np.float64),
    )


@dataclass
class BatchInputs:
    """Queries as the stage needs them: histories, user vectors [Q, D], the ANN's rows [Q, >= ann_k]
    (-1 padded), item embeddings [N, D] (the index's row order) and each query's "now"."""

    histories: list[History]
    user_vecs: np.ndarray
    ann_rows: np.ndarray
    embeddings: np.ndarray
    now_s: np.ndarray

    def __len__(self) -> int:
        return len(self.histories)


def _features(stage: RankingStage, inp: BatchInputs, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ann = inp.ann_rows[i]
    ann = ann[ann >= 0]
    hist = inp.histories[i]
    ctx = stage.context(hist)
    rows = stage.candidates(hist, ann, ctx)
    ann_score = inp.embeddings[rows] @ inp.user_vecs[i]
    X = stage.features(hist, rows, ann, ann_score.astype(np.float32), float(inp.now_s[i]), ctx)
    return rows, X, ann


def query_blocks(
    stage: RankingStage, inp: BatchInputs, target_rows: np.ndarray, target_weights: np.ndarray
) -> list[QueryBlock]:
    """One :class:`QueryBlock` per query (the ranker's training and gating data)."""
    out = []
    ann_col = FEATURES.index("ann_rank")
    for i in range(len(inp)):
        rows, X, _ = _features(stage, inp, i)
        out.append(QueryBlock(X, rows, X[:, ann_col].copy(), int(target_rows[i]), grade(target_weights[i])))
    return out


def _scored(stage: RankingStage, inp: BatchInputs, chunk: int):
    """Per query: ``(i, rows, X, ann, scores)``, the ranker's scores predicted one chunk at a time
    (``scores`` None without a ranker)."""
    for start in range(0, len(inp), chunk):
        idx = range(start, min(len(inp), start + chunk))
        parts = [_features(stage, inp, i) for i in idx]
        if stage.ranker is not None and parts:
            scores = stage.ranker.predict(np.concatenate([p[1] for p in parts]))
            split = np.split(scores, np.cumsum([len(p[0]) for p in parts])[:-1])
        else:
            split = [None] * len(parts)
        for i, (rows, X, ann), s in zip(idx, parts, split, strict=True):
            yield i, rows, X, ann, s


def rank_batch(
    stage: RankingStage,
    inp: BatchInputs,
    k: int,
    *,
    exclude_seen: bool,
    use_ranker: bool = True,
    chunk: int = 4096,
) -> list[np.ndarray]:
    """Top-``k`` rows per query through the stage (``use_ranker=False``: the retrieval-only order, i.e.
    the ANN list as it is). ``exclude_seen`` drops the history's items, as the service's rule does."""
    if not use_ranker or stage.ranker is None:
        out = []
        for i in range(len(inp)):
            ann = inp.ann_rows[i]
            out.append(_top(ann[ann >= 0], None, inp.histories[i], k, exclude_seen))
        return out
    return [
        _top(rows, s, inp.histories[i], k, exclude_seen) for i, rows, _, _, s in _scored(stage, inp, chunk)
    ]


def _top(
    rows: np.ndarray, scores: np.ndarray | None, hist: History, k: int, exclude_seen: bool
) -> np.ndarray:
    order = rows if scores is None else rows[np.argsort(-scores, kind="stable")]
    if exclude_seen and len(hist):
        order = order[~np.isin(order, hist.rows)]
    return order[:k]


def orders_by_source(stage: RankingStage, inp: BatchInputs, k: int, chunk: int = 4096) -> dict[str, list]:
    """Top-``k`` rows per query (seen items allowed) of: the served path (``served``: sources + ranker),
    the retrieval-only order (``retrieval_only``: the ANN list), each non-ANN source alone (``covisit``,
    ``history``, ``popular``) and the union of every source's candidates in retrieval order (``union``:
    by the two-tower score of each). One feature pass per query serves all of them: what each source
    contributes, and what the ranker makes of it, on the same queries."""
    col = {
        name: FEATURES.index(name)
        for name in ("covisit_score", "history_recency", "popular_rank", "ann_score")
    }
    out: dict[str, list] = {
        n: [] for n in ("served", "retrieval_only", "covisit", "history", "popular", "union")
    }

    def by(rows: np.ndarray, key: np.ndarray, keep: np.ndarray) -> np.ndarray:
        has = np.flatnonzero(keep)
        return rows[has[np.argsort(key[has], kind="stable")]][:k]

    for _, rows, X, ann, s in _scored(stage, inp, chunk):
        out["served"].append(rows[np.argsort(-s, kind="stable")][:k] if s is not None else ann[:k])
        out["retrieval_only"].append(ann[:k])
        cv = X[:, col["covisit_score"]]
        out["covisit"].append(by(rows, -cv, cv > 0))
        rec = X[:, col["history_recency"]]
        out["history"].append(by(rows, rec, rec < ABSENT_RANK))
        pop = X[:, col["popular_rank"]]
        out["popular"].append(by(rows, pop, pop < ABSENT_RANK))
        out["union"].append(by(rows, -X[:, col["ann_score"]], np.ones(len(rows), bool)))
    return out
