"""The LightningModule: the towers, the loss, and validation recall against the whole catalog.

Per training step the item tower runs once over the *unique* rows of the batch (history items, targets and
any uniform negatives), and the vectors are gathered back; a batch of 512 × 20 history slots usually holds
a few thousand distinct items, so this is much cheaper than embedding every slot.

Validation recall@K is exact: every validation user is scored against every catalog row (row 0 excluded),
which is what FAISS-Flat would return at serving time. It drives early stopping and checkpointing.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from relevance_core.model.config import TwoTowerConfig
from relevance_core.model.loss import Temperature, full_softmax_loss, sampled_softmax_loss
from relevance_core.model.towers import TwoTower

VAL_KS = (10, 20)


def recall_name(k: int) -> str:
    return f"val_recall_at_{k}"


class TwoTowerModule(pl.LightningModule):
    def __init__(
        self,
        config: dict[str, Any],
        sizes: dict[str, int],
        catalog: dict[str, Tensor] | None = None,
        id_known: Tensor | None = None,
        target_counts: Tensor | None = None,
    ):
        """``config``: ``TwoTowerConfig.to_dict()``; ``sizes``: ``FeatureEncoder.sizes()``; ``catalog``:
        ``FeatureEncoder.encode_catalog(items)``; ``target_counts`` [n_rows]: training targets per row,
        the sampling distribution the logQ correction needs. The tensors are stored as buffers, so a
        checkpoint is self-contained (``load_from_checkpoint`` only needs config and sizes)."""
        super().__init__()
        self.save_hyperparameters({"config": config, "sizes": sizes})
        self.cfg = TwoTowerConfig.from_dict(config)
        self.model = TwoTower(self.cfg, sizes)
        n = self.model.n_rows
        if catalog is not None:
            self.model.set_catalog(
                catalog, id_known if id_known is not None else torch.ones(n, dtype=torch.bool)
            )
        counts = target_counts.double() if target_counts is not None else torch.ones(n, dtype=torch.float64)
        counts = counts.clone()
        counts[0] = 0
        p = counts / counts.sum().clamp(min=1.0)
        # rows never sampled as targets never occur as in-batch candidates; give them the rarest value
        floor = (
            p[p > 0].min() if bool((p > 0).any()) else torch.tensor(1.0 / max(n - 1, 1), dtype=torch.float64)
        )
        self.register_buffer("log_p", torch.log(torch.where(p > 0, p, floor)).float())
        self.temperature = Temperature(self.cfg.temperature, self.cfg.learn_temperature)
        n_items = n - 1
        self.full_softmax = self.cfg.softmax == "full" or (
            self.cfg.softmax == "auto" and n_items <= self.cfg.full_softmax_max_items
        )
        if self.cfg.softmax not in ("sampled", "full", "auto"):
            raise ValueError(f"softmax must be sampled/full/auto, not {self.cfg.softmax!r}")
        self.ks = tuple(sorted(set(VAL_KS) | {self.cfg.recall_k}))
        self.val_recall = torch.nn.ModuleDict({str(k): MeanMetric() for k in self.ks})
        self._val_items: Tensor | None = None
        self.samples_seen = 0

    # -- training ----------------------------------------------------------------------------------------
    def _loss(self, batch: tuple[Tensor, ...]) -> Tensor:
        hist_rows, hist_events, hist_age, target, weights = batch
        B, L = hist_rows.shape
        inv_t = self.temperature.inverse()
        w = weights if self.cfg.use_event_weights else None
        if self.full_softmax:
            all_items = self.model.item_vectors(
                torch.arange(self.model.n_rows, device=target.device), id_dropout=self.cfg.id_dropout
            )
            user = self.model.user_from_item_vectors(all_items, hist_rows, hist_events, hist_age)
            return full_softmax_loss(user, all_items, target, inv_temperature=inv_t, weights=w)
        parts = [hist_rows.reshape(-1), target]
        M = self.cfg.uniform_negatives
        if M > 0:
            neg_rows = torch.randint(1, self.model.n_rows, (M,), device=target.device)
            parts.append(neg_rows)
        uniq, inv = torch.unique(torch.cat(parts), return_inverse=True)
        vecs = self.model.item_vectors(uniq, id_dropout=self.cfg.id_dropout)[inv]
        hist_vecs = vecs[: B * L].view(B, L, -1)
        pos = vecs[B * L : B * L + B]
        user = self.model.user_tower(hist_vecs, hist_rows > 0, hist_events, hist_age)
        cand, cand_ids, offset = pos, target, 0
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            # DDP: score against every rank's targets (with gradients), so the softmax sees the same
            # world · B negatives a single process with the global batch would; ranks have equal B
            cand = self.all_gather(pos, sync_grads=True).reshape(-1, pos.shape[-1])
            cand_ids = self.all_gather(target).reshape(-1)
            offset = self.global_rank * B
        log_q = neg_log_q = None
        if self.cfg.logq_correction:
            log_q = self.log_p[cand_ids] + math.log(cand_ids.shape[0])
            if M > 0:
                neg_log_q = torch.full((M,), math.log(M / (self.model.n_rows - 1)), device=target.device)
        return sampled_softmax_loss(
            user,
            cand,
            cand_ids,
            inv_temperature=inv_t,
            log_q=log_q,
            weights=w,
            remove_accidental_hits=self.cfg.remove_accidental_hits,
            neg_items=vecs[B * L + B :] if M > 0 else None,
            neg_ids=parts[2] if M > 0 else None,
            neg_log_q=neg_log_q,
            row_offset=offset,
        )

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        B = batch[3].shape[0]
        self.samples_seen += B
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=B)
        return loss

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    # -- validation: exact recall@K over the whole catalog ------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_items = self.model.all_item_vectors()

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        hist_rows, hist_events, hist_age, target, _w = batch
        assert self._val_items is not None
        user = self.model.user_from_item_vectors(self._val_items, hist_rows, hist_events, hist_age)
        hits = recall_hits(user, self._val_items, target, self.ks)
        for k in self.ks:
            metric = self.val_recall[str(k)]
            metric.update(hits[k])
            self.log(recall_name(k), metric, on_step=False, on_epoch=True, prog_bar=k == self.cfg.recall_k)

    def on_validation_epoch_end(self) -> None:
        self._val_items = None


@torch.no_grad()
def recall_hits(user: Tensor, items: Tensor, target: Tensor, ks: tuple[int, ...]) -> dict[int, Tensor]:
    """Per example, 1.0 if the target row is among the top-k catalog rows (row 0 excluded)."""
    scores = (user @ items.T).float()
    scores[:, 0] = float("-inf")
    kmax = min(max(ks), scores.shape[1] - 1)
    top = scores.topk(kmax, dim=1).indices
    hit = top == target.unsqueeze(1)
    return {k: hit[:, :k].any(dim=1).float() for k in ks}
