"""Retrieval losses for the two towers.

Sampled softmax with in-batch negatives: every other example's target in the batch is a negative. Popular
items appear as in-batch negatives far more often than rare ones, so without a correction the model learns
to push popular items down (and, as positives, they are "easy"). The logQ correction (Yi et al., RecSys
2019) subtracts the log of each candidate's expected count in the sample from its logit, which makes the
sampled softmax an unbiased estimate of the full one:

    logit(u, j) = <u, v_j> / T - log E[count_j]      with E[count_j] = B · p_j for in-batch candidates,
                                                             E[count_j] = M / N for M uniform negatives.

Using expected counts (not bare probabilities) keeps the two sources on one scale when they are mixed
(mixed negative sampling, Yang et al., WWW 2020). The correction *lowers* a popular item's logit; the unit
test constructs exactly that case.

Accidental hits: when the same item is the target of several examples in a batch, it is that row's positive
and must not also be its negative; those cells are masked to -inf. Each example is weighted by its target
event's weight (purchase 10 … view 1), normalised by the batch's total weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Temperature(nn.Module):
    """Fixed or learnable softmax temperature; learnable as log(1/T), clamped to T ≥ 0.01 so logits of
    unit vectors cannot blow up."""

    def __init__(self, init: float = 0.05, learnable: bool = False, min_temperature: float = 0.01):
        super().__init__()
        self.max_log_inv = math.log(1.0 / min_temperature)
        value = torch.tensor(math.log(1.0 / init))
        if learnable:
            self.log_inv = nn.Parameter(value)
        else:
            self.register_buffer("log_inv", value)

    def inverse(self) -> Tensor:
        return self.log_inv.clamp(max=self.max_log_inv).exp()

    def forward(self) -> Tensor:
        return 1.0 / self.inverse()


def _weighted_mean(losses: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return losses.mean()
    w = weights.to(losses.dtype)
    return (losses * w).sum() / w.sum().clamp(min=1e-12)


def sampled_logits(
    user: Tensor,
    pos_items: Tensor,
    target_ids: Tensor,
    *,
    inv_temperature: Tensor | float,
    log_q: Tensor | None = None,
    remove_accidental_hits: bool = True,
    neg_items: Tensor | None = None,
    neg_ids: Tensor | None = None,
    neg_log_q: Tensor | None = None,
    row_offset: int = 0,
) -> Tensor:
    """Logits [B, C (+M)]; column ``row_offset + i`` is example i's positive.

    ``pos_items`` [C, D] / ``target_ids`` [C] are the in-batch candidates: the batch's own targets (C = B),
    or under DDP the targets gathered from every rank (C = world · B, this rank's at ``row_offset``).
    ``log_q`` [C]: log expected count of each in-batch candidate (C · p_j); subtracted from its column.
    ``neg_*``: M extra negatives (vectors [M, D], ids [M], log expected counts [M])."""
    B = user.shape[0]
    # scaling the [B, D] user side instead of the [B, C] logits: the same numbers for less work
    logits = ((user * inv_temperature) @ pos_items.T).float()
    if log_q is not None:
        logits = logits - log_q.float().unsqueeze(0)
    rows = torch.arange(B, device=user.device)
    own = target_ids[row_offset : row_offset + B]
    if remove_accidental_hits:
        same = own.unsqueeze(1) == target_ids.unsqueeze(0)
        same[rows, rows + row_offset] = False
        logits = logits.masked_fill(same, float("-inf"))
    if neg_items is not None:
        neg = ((user * inv_temperature) @ neg_items.T).float()
        if neg_log_q is not None:
            neg = neg - neg_log_q.float().unsqueeze(0)
        if remove_accidental_hits and neg_ids is not None:
            neg = neg.masked_fill(neg_ids.unsqueeze(0) == own.unsqueeze(1), float("-inf"))
        logits = torch.cat([logits, neg], dim=1)
    return logits


def sampled_softmax_loss(
    user: Tensor,
    pos_items: Tensor,
    target_ids: Tensor,
    *,
    inv_temperature: Tensor | float,
    log_q: Tensor | None = None,
    weights: Tensor | None = None,
    remove_accidental_hits: bool = True,
    neg_items: Tensor | None = None,
    neg_ids: Tensor | None = None,
    neg_log_q: Tensor | None = None,
    row_offset: int = 0,
) -> Tensor:
    """In-batch (+ optional uniform) sampled softmax with logQ correction and accidental-hit masking."""
    logits = sampled_logits(
        user,
        pos_items,
        target_ids,
        inv_temperature=inv_temperature,
        log_q=log_q,
        remove_accidental_hits=remove_accidental_hits,
        neg_items=neg_items,
        neg_ids=neg_ids,
        neg_log_q=neg_log_q,
        row_offset=row_offset,
    )
    labels = torch.arange(user.shape[0], device=user.device) + row_offset
    return _weighted_mean(F.cross_entropy(logits, labels, reduction="none"), weights)


def full_softmax_loss(
    user: Tensor,
    all_items: Tensor,
    target_rows: Tensor,
    *,
    inv_temperature: Tensor | float,
    weights: Tensor | None = None,
    ignore_row0: bool = True,
) -> Tensor:
    """Exact softmax over every catalog row (no sampling, so no correction); row 0 (padding) excluded.

    With tens of thousands of rows the [B, N] logits dominate a CPU step, so the temperature scales the
    user side and row 0 is sliced off rather than masked (no extra passes over the logits). A target
    of row 0 (an unknown item) contributes 0."""
    if ignore_row0:
        logits = ((user * inv_temperature) @ all_items[1:].T).float()
        losses = F.cross_entropy(logits, target_rows - 1, reduction="none", ignore_index=-1)
    else:
        logits = ((user * inv_temperature) @ all_items.T).float()
        losses = F.cross_entropy(logits, target_rows, reduction="none")
    return _weighted_mean(losses, weights)
