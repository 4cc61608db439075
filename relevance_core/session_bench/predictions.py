"""Answer a session benchmark's test rows the way the service does, and score them.

* **Serving path.** Each test prefix is encoded by the *exported* user tower the bundle would ship
  (``TowerRetriever``, the class the offline evaluation and the service path share), answered by the
  FAISS index the ``faiss_index`` asset built, then by the candidate sources and the learned ranker. The
  benchmark's protocol lets an item already in the prefix be the answer, so the seen-item filter is off.
* **Same features at train and serve time.** Prefix clicks get the event type and the ages the
  ``training_pairs`` asset computed for the converted sessions (``convert.history_ages``).

(The pipeline that produces the model version is the benchmark's own driver, ``bench/session_pipeline.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from relevance_core.session_bench.convert import history_ages
from relevance_core.storage import LocalStore


def serve_predictions(
    store: LocalStore, model_version: str, prefixes: Sequence[Sequence[str]], k: int, spacing_s: float
) -> dict[str, list[list[str]]]:
    """Top-``k`` per prefix through the serving path (user tower → FAISS → candidate sources → ranker;
    seen items allowed, as the protocol wants), with the same bundle's retrieval-only order and each
    candidate source alone beside it: ``{"served", "retrieval_only", "covisit", "history", "popular",
    "union"}`` ("union": every source's candidates in retrieval order, ANN first)."""
    from relevance_core import publishing as P
    from relevance_core.evaluation.retrieval import TowerRetriever
    from relevance_core.ranking.batch import orders_by_source
    from relevance_core.ranking.build import batch_inputs, load_ranking_stage

    index, _ = P.load_index(store, model_version)
    retriever = TowerRetriever.from_dir(store.local_dir(P.model_key(model_version)), index=index)
    retriever.batch_size = 2048
    _, emb, _ = P.read_embeddings(store, model_version)
    item_ids = [str(i) for i in index.item_ids.tolist()]
    stage = load_ranking_stage(store, model_version, item_ids)
    frame = pd.DataFrame(
        {
            "hist_item_ids": [list(p) for p in prefixes],
            "hist_event_types": [["view"] * len(p) for p in prefixes],
            "hist_age_s": [history_ages(len(p), spacing_s) for p in prefixes],
        }
    )
    inp = batch_inputs(frame, retriever, index, emb, max(stage.cfg.ann_k, k))
    ids = index.item_ids
    return {
        name: [[str(ids[r]) for r in top] for top in lists]
        for name, lists in orders_by_source(stage, inp, k).items()
    }


def hit_and_mrr(lists: Sequence[Sequence[str]], labels: Sequence[str], k: int) -> tuple[float, float]:
    """HR@k and MRR@k in % with the project's metric functions (one relevant item per row)."""
    from relevance_core.evaluation.metrics import hit_rate_at_k, mrr_at_k

    if not labels:
        return 0.0, 0.0
    hr = np.mean([hit_rate_at_k(r, {lab: 1.0}, k) for r, lab in zip(lists, labels, strict=True)])
    mrr = np.mean([mrr_at_k(r, {lab: 1.0}, k) for r, lab in zip(lists, labels, strict=True)])
    return round(float(hr) * 100, 2), round(float(mrr) * 100, 2)
