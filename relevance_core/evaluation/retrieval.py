"""The candidate path the service uses — history → user tower → FAISS top-K — as a library, so the
offline evaluation, the demo and the service measure and serve the very same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relevance_core.index import ItemIndex


class TowerRetriever:
    """``user_tower`` (TorchScript from the bundle or any callable module with the same signature),
    ``encoder`` (the fitted ``relevance_core.features.FeatureEncoder``) and the item ``index``."""

    def __init__(
        self, user_tower: Any, encoder: Any, index: ItemIndex | None = None, *, batch_size: int = 1024
    ):
        self.user_tower = user_tower
        self.encoder = encoder
        self.index = index
        self.batch_size = batch_size

    @classmethod
    def from_dir(
        cls, directory: str | Path, index: ItemIndex | None = None, *, load_index: bool = True
    ) -> TowerRetriever:
        """From a directory holding ``user_tower.pt`` and ``features.json`` (a bundle or model artifacts),
        with the index from the same directory unless given (or ``load_index=False``: user vectors only)."""
        import torch

        from relevance_core.features import FeatureEncoder

        d = Path(directory)
        tower = torch.jit.load(str(d / "user_tower.pt"), map_location="cpu")
        tower.eval()
        encoder = FeatureEncoder.from_json((d / "features.json").read_text())
        if index is None and load_index:
            index = ItemIndex.load(d)
        return cls(tower, encoder, index)

    def user_vectors(
        self,
        hist_item_ids: Sequence[Sequence[str]],
        hist_event_types: Sequence[Sequence[str]],
        hist_age_s: Sequence[Sequence[float]],
    ) -> np.ndarray:
        """float32 [B, D] user embeddings, batched, no autograd."""
        import torch

        out = []
        n = len(hist_item_ids)
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                hist = [
                    list(zip(hist_item_ids[i], hist_event_types[i], hist_age_s[i], strict=False))
                    for i in range(s, min(n, s + self.batch_size))
                ]
                rows, events, ages = self.encoder.encode_histories(hist)
                out.append(self.user_tower(rows, events, ages).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.index.dim if self.index is not None else 0), dtype=np.float32)
        return np.concatenate(out, axis=0)

    def recommend_lists(
        self,
        hist_item_ids: Sequence[Sequence[str]],
        hist_event_types: Sequence[Sequence[str]],
        hist_age_s: Sequence[Sequence[float]],
        k: int,
        *,
        exclude_seen: bool = True,
    ) -> list[list[str]]:
        """Top-``k`` item ids per history, seen items removed (asks FAISS for k + |history| so that
        removing seen items still leaves k)."""
        if self.index is None:
            raise ValueError("this retriever has no index")
        vecs = self.user_vectors(hist_item_ids, hist_event_types, hist_age_s)
        if len(vecs) == 0:
            return []
        extra = max((len(h) for h in hist_item_ids), default=0) if exclude_seen else 0
        res = self.index.search(vecs, k + extra)
        out = []
        for i, ids in enumerate(res.item_ids):
            seen = set(hist_item_ids[i]) if exclude_seen else set()
            out.append([x for x in ids if x is not None and x not in seen][:k])
        return out

    def __call__(self, queries: pd.DataFrame, k: int) -> list[list[str]]:
        """The ``RecommendFn`` form used by :func:`relevance_core.evaluation.offline.run_evaluation`."""
        return self.recommend_lists(
            queries["hist_item_ids"].tolist(),
            queries["hist_event_types"].tolist(),
            queries["hist_age_s"].tolist(),
            k,
        )
