"""The retrieval loss: logQ correction sign, accidental-hit masking, weights, full softmax, temperature."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from relevance_core.model.loss import (
    Temperature,
    full_softmax_loss,
    sampled_logits,
    sampled_softmax_loss,
)


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_logq_correction_lowers_the_popular_items_logit():
    # Two examples; their targets are a popular item (id 1, 90% of training targets) and a rare one (id 2).
    # The first user is equally similar to both, so only the correction can tell them apart.
    user = _unit([1.0, 1.0], [1.0, 0.0])
    items = _unit([1.0, 0.0], [0.0, 1.0])
    ids = torch.tensor([1, 2])
    B = 2
    log_q = torch.log(torch.tensor([0.9, 0.1]) * B)
    raw = sampled_logits(user, items, ids, inv_temperature=1.0)
    corrected = sampled_logits(user, items, ids, inv_temperature=1.0, log_q=log_q)
    assert raw[0, 0] == pytest.approx(raw[0, 1].item())
    assert corrected[0, 0] < corrected[0, 1], "the popular item's logit must go down relative to the rare one"
    assert corrected[0, 0] - raw[0, 0] == pytest.approx(-math.log(0.9 * B), abs=1e-5)
    # The popular item as a *negative* for a user whose positive is rare: the correction removes the
    # over-penalty, so that example's loss is lower with the correction than without.
    user2 = _unit([0.2, 1.0], [1.0, 0.0])
    ids2 = torch.tensor([2, 1])
    items2 = _unit([0.0, 1.0], [1.0, 0.0])
    lq2 = torch.log(torch.tensor([0.1, 0.9]) * B)
    w_first = torch.tensor([1.0, 0.0])
    with_c = sampled_softmax_loss(user2, items2, ids2, inv_temperature=5.0, log_q=lq2, weights=w_first)
    without = sampled_softmax_loss(user2, items2, ids2, inv_temperature=5.0, weights=w_first)
    assert with_c < without


def test_accidental_hits_are_masked():
    user = torch.randn(4, 8)
    items = torch.randn(4, 8)
    ids = torch.tensor([7, 3, 7, 5])  # examples 0 and 2 share their target
    logits = sampled_logits(user, items, ids, inv_temperature=1.0)
    assert torch.isneginf(logits[0, 2]) and torch.isneginf(logits[2, 0])
    assert torch.isfinite(logits.diagonal()).all()
    assert torch.isfinite(logits[1]).all() and torch.isfinite(logits[3]).all()
    # the loss equals a softmax over the remaining columns only
    loss = sampled_softmax_loss(user, items, ids, inv_temperature=1.0)
    raw = user @ items.T
    expected = []
    for i in range(4):
        keep = [j for j in range(4) if j == i or ids[j] != ids[i]]
        expected.append(-torch.log_softmax(raw[i, keep], 0)[keep.index(i)])
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    # unmasked, the duplicate counts as a negative and the loss is different
    unmasked = sampled_softmax_loss(user, items, ids, inv_temperature=1.0, remove_accidental_hits=False)
    assert unmasked.item() != pytest.approx(loss.item(), rel=1e-4)


def test_extra_uniform_negatives_mask_the_target_and_use_their_own_correction():
    user = torch.randn(3, 8)
    items = torch.randn(3, 8)
    ids = torch.tensor([1, 2, 3])
    neg = torch.randn(5, 8)
    neg_ids = torch.tensor([9, 2, 8, 1, 7])
    neg_lq = torch.full((5,), math.log(5 / 100))
    logits = sampled_logits(
        user, items, ids, inv_temperature=2.0, neg_items=neg, neg_ids=neg_ids, neg_log_q=neg_lq
    )
    assert logits.shape == (3, 8)
    assert torch.isneginf(logits[0, 3 + 3]) and torch.isneginf(logits[1, 3 + 1])
    expected = (user[2] @ neg[0]) * 2.0 - neg_lq[0]
    assert logits[2, 3].item() == pytest.approx(expected.item(), rel=1e-5)


def test_event_weights_weight_the_examples():
    user = torch.randn(3, 8)
    items = torch.randn(3, 8)
    ids = torch.tensor([1, 2, 3])
    logits = sampled_logits(user, items, ids, inv_temperature=1.0)
    per = F.cross_entropy(logits, torch.arange(3), reduction="none")
    w = torch.tensor([10.0, 1.0, 0.0])
    loss = sampled_softmax_loss(user, items, ids, inv_temperature=1.0, weights=w)
    assert loss.item() == pytest.approx(((per * w).sum() / w.sum()).item(), rel=1e-5)


def test_full_softmax_excludes_the_padding_row():
    user = torch.randn(2, 4)
    all_items = torch.randn(6, 4)
    target = torch.tensor([3, 5])
    loss = full_softmax_loss(user, all_items, target, inv_temperature=1.0)
    logits = user @ all_items[1:].T
    expected = F.cross_entropy(logits, target - 1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_temperature_fixed_or_learnable():
    fixed = Temperature(0.05, learnable=False)
    assert not list(fixed.parameters())
    assert fixed().item() == pytest.approx(0.05, rel=1e-5)
    learn = Temperature(0.05, learnable=True)
    assert len(list(learn.parameters())) == 1
    with torch.no_grad():
        learn.log_inv.fill_(50.0)
    assert learn().item() == pytest.approx(0.01, rel=1e-5), "clamped at the minimum temperature"


def test_gathered_candidates_under_ddp_put_the_positive_at_the_ranks_offset():
    """Rank 1 of 2 (B=2) scores its users against both ranks' targets: its positives are columns 2 and 3,
    and rank 0's copy of the same target item is an accidental hit, not a negative."""
    user = torch.randn(2, 8)
    cand = torch.randn(4, 8)
    ids = torch.tensor([5, 6, 6, 9])  # rank 0's targets 5, 6; this rank's 6, 9
    logits = sampled_logits(user, cand, ids, inv_temperature=1.0, row_offset=2)
    assert torch.isneginf(logits[0, 1]) and torch.isfinite(logits[0, 2])
    assert torch.isfinite(logits[1]).all()
    loss = sampled_softmax_loss(user, cand, ids, inv_temperature=1.0, row_offset=2)
    expected = F.cross_entropy(logits, torch.tensor([2, 3]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
