"""TorchScript export of both towers, with a parity check (bundle.py's calling convention).

- ``item_tower.pt``: the :class:`~relevance_core.model.towers.ItemTower` itself, scripted:
  ``forward(**FeatureEncoder.encode_items(items)) -> Float[B, D]``.
- ``user_tower.pt``: :class:`ExportedUserTower`: ``forward(hist_rows, hist_events, hist_age_s) ->
  Float[B, D]``. The catalog's item vectors are computed once at export and baked in as a buffer
  ``item_table`` [n_rows, D] (row 0 = padding), so serving a request is a lookup plus the sequence encoder:
  no item-tower work per request, and no training code or catalog features needed by the service.

TorchScript (not ``torch.export``) because the service loads it with ``torch.jit.load`` and no model code,
it handles the data-dependent shapes here (batch, L), and it is what torch 2.x CPU wheels run everywhere.
``check_parity`` compares the loaded files against the eager model on random inputs (default 1e-5).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from relevance_core.features import ITEM_FEATURES
from relevance_core.model.towers import TwoTower, UserTower

USER_TOWER_FILE = "user_tower.pt"
ITEM_TOWER_FILE = "item_tower.pt"


log = logging.getLogger(__name__)


class ExportParityError(RuntimeError):
    """An exported tower disagrees with the eager model: it must not be shipped."""


class ExportedUserTower(nn.Module):
    def __init__(self, item_table: Tensor, user_tower: UserTower):
        super().__init__()
        self.register_buffer("item_table", item_table.detach().clone())
        self.user_tower = user_tower

    def forward(self, hist_rows: Tensor, hist_events: Tensor, hist_age_s: Tensor) -> Tensor:
        rows = hist_rows.clamp(0, self.item_table.shape[0] - 1)
        return self.user_tower(self.item_table[rows], rows > 0, hist_events, hist_age_s)


def _eager(model: nn.Module) -> TwoTower:
    inner = getattr(model, "model", model)  # a TwoTowerModule or a TwoTower
    if not isinstance(inner, TwoTower):
        raise TypeError(f"expected a TwoTower or TwoTowerModule, got {type(model).__name__}")
    return inner


@torch.no_grad()
def script_towers(model: nn.Module) -> tuple[torch.jit.ScriptModule, torch.jit.ScriptModule]:
    """(user tower, item tower) as ScriptModules on CPU, float32, eval mode. Copies: ``model`` is untouched."""
    import copy

    tt = copy.deepcopy(_eager(model)).float().cpu().eval()
    table = tt.all_item_vectors()
    user = torch.jit.script(ExportedUserTower(table, tt.user_tower).eval())
    item = torch.jit.script(tt.item_tower.eval())
    return user, item


def export_towers(
    model: nn.Module, out_dir: str | Path, *, atol: float = 1e-5, onnx: bool = True
) -> dict[str, Path]:
    """Write ``user_tower.pt`` and ``item_tower.pt`` into ``out_dir``, reload them and check parity; with
    ``onnx`` also the user encoder's ONNX twin (``user_encoder``, optional: a failed ONNX export is logged
    and the bundle serves with TorchScript)."""
    from relevance_core.model.onnx_encoder import export_user_encoder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    user, item = script_towers(model)
    paths = {"user_tower": out / USER_TOWER_FILE, "item_tower": out / ITEM_TOWER_FILE}
    user.save(str(paths["user_tower"]))
    item.save(str(paths["item_tower"]))
    check_parity(model, paths["user_tower"], paths["item_tower"], atol=atol)
    if onnx:
        try:
            paths["user_encoder"] = export_user_encoder(model, out, item_table=user.item_table, atol=atol)
        except Exception as e:  # ImportError (no onnx/onnxscript), an op the exporter lacks, parity
            log.warning(
                "user encoder not exported to ONNX (%s: %s); TorchScript will serve", type(e).__name__, e
            )
    return paths


def load_towers(directory: str | Path) -> tuple[torch.jit.ScriptModule, torch.jit.ScriptModule]:
    d = Path(directory)
    return (
        torch.jit.load(str(d / USER_TOWER_FILE), map_location="cpu"),
        torch.jit.load(str(d / ITEM_TOWER_FILE), map_location="cpu"),
    )


def random_inputs(model: nn.Module, batch: int = 64, L: int | None = None, seed: int = 0):
    """Random but valid tower inputs: (history tensors, item feature dict)."""
    tt = _eager(model)
    g = torch.Generator().manual_seed(seed)
    L = L or tt.user_tower.max_len
    n = tt.n_rows
    hist_rows = torch.randint(0, n, (batch, L), generator=g)
    hist_rows[: batch // 4, : L // 2] = 0  # some padded histories
    hist_rows[0] = 0  # and one empty history
    hist_events = torch.randint(1, 8, (batch, L), generator=g) * (hist_rows > 0)
    hist_age = torch.rand((batch, L), generator=g) * 1e6
    rows = torch.randint(0, n, (batch,), generator=g)
    items = {name: getattr(tt, f"cat_{name}")[rows].clone() for name in ITEM_FEATURES}
    items["item_row"][: batch // 3] = 0  # content-only items
    for name in ("category_l1", "brand", "price_bucket"):  # and random content
        size = getattr(tt.item_tower, name).num_embeddings
        items[name][batch // 2 :] = torch.randint(0, size, (batch - batch // 2,), generator=g)
    return (hist_rows, hist_events, hist_age), items


@torch.no_grad()
def check_parity(
    model: nn.Module, user_path: str | Path, item_path: str | Path, *, atol: float = 1e-5, batch: int = 64
) -> float:
    """Max |exported - eager| over random inputs; raises :class:`ExportParityError` above ``atol``."""
    import copy

    tt = copy.deepcopy(_eager(model)).float().cpu().eval()
    user = torch.jit.load(str(user_path), map_location="cpu")
    item = torch.jit.load(str(item_path), map_location="cpu")
    worst = 0.0
    for seed in (0, 1):
        hist, feats = random_inputs(tt, batch=batch, seed=seed)
        d_user = (user(*hist) - tt.user_vectors(*hist)).abs().max().item()
        d_item = (item(**feats) - tt.item_tower(**feats)).abs().max().item()
        worst = max(worst, d_user, d_item)
    if not worst <= atol:
        raise ExportParityError(f"exported towers differ from eager by {worst:.3g} (> {atol})")
    return worst
