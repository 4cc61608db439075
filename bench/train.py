"""Training throughput: the Lightning path vs a plain PyTorch loop, same model, batches and data, one run.

Both paths train the same ``TwoTowerModule`` (same initial weights) with AdamW on the same pre-encoded
batches, so the ratio isolates what Lightning costs per step (Trainer loop, hooks, logging every
``log_every_n_steps``, the progress bar). The first ``--warmup`` batches of each run are not timed. The two
paths alternate ``--repeats`` times and the best run of each is kept, because the machine is shared.

Last line: ``{"samples_per_s", "raw_torch_samples_per_s", "ratio", ...}`` (goal: ratio ≥ 0.9).
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", help="synthetic marketplace: tiny / small / medium")
    p.add_argument("--batches", type=int, default=40, help="timed batches per run (+ warmup)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up steps before timing (default 5)")
    p.add_argument("--batch-size", type=int, default=512, help="training batch size (default 512)")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats; the median is reported (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--encoder",
        default="transformer",
        choices=["transformer", "mean"],
        help="user tower encoder (default transformer)",
    )


def _batches(preset: str, batch_size: int, n: int, encoder: str):
    import torch

    from relevance_core.features import FeatureEncoder
    from relevance_core.model.config import TwoTowerConfig
    from relevance_core.model.data import PairsIterable, open_pairs, scan_item_counts
    from relevance_core.model.module import TwoTowerModule
    from relevance_core.model.synthetic import make_marketplace
    from relevance_core.model.train import resolve_content

    pairs, items = make_marketplace(preset)
    cfg = TwoTowerConfig(batch_size=batch_size, encoder=encoder, progress_bar=True)
    cfg = resolve_content(cfg, items)
    _t, counts, _n = scan_item_counts(open_pairs(pairs), "train")
    enc = FeatureEncoder.fit(items, counts)
    data = PairsIterable(
        pairs,
        enc,
        split="train",
        batch_size=batch_size,
        history_length=cfg.history_length,
        shuffle=True,
        drop_last=True,
    )
    batches = []
    while len(batches) < n:
        before = len(batches)
        for b in data:
            batches.append(b)
            if len(batches) >= n:
                break
        if len(batches) == before:
            raise ValueError(f"preset {preset!r} has fewer than one batch of {batch_size}")
    torch.manual_seed(0)
    module = TwoTowerModule(
        cfg.to_dict(), enc.sizes(), catalog=enc.encode_catalog(items), id_known=enc.id_known_tensor()
    )
    return cfg, module, batches


def _raw(module, batches, lr: float, warmup: int) -> float:
    import torch

    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=lr)
    t0 = None
    for i, b in enumerate(batches):
        if i == warmup:
            t0 = time.perf_counter()
        loss = module._loss(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (len(batches) - warmup) * batches[0][3].shape[0] / (time.perf_counter() - t0)


def _lightning(module, batches, cfg, warmup: int, workdir: str) -> float:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    class Clock(pl.Callback):
        t0 = t1 = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.t1 = time.perf_counter()

    clock = Clock()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        precision="32-true",
        logger=pl.loggers.CSVLogger(workdir, name="bench"),
        log_every_n_steps=cfg.log_every_n_steps,
        enable_checkpointing=False,
        enable_progress_bar=True,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, shuffle=False))
    return (len(batches) - warmup) * batches[0][3].shape[0] / (clock.t1 - clock.t0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, module, batches = _batches(args.preset, args.batch_size, args.batches + args.warmup, args.encoder)
    raw_runs, pl_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            raw_runs.append(_raw(copy.deepcopy(module), batches, cfg.lr, args.warmup))
            pl_runs.append(_lightning(copy.deepcopy(module), batches, cfg, args.warmup, tmp))
    best_pl, best_raw = max(pl_runs), max(raw_runs)
    return {
        "benchmark": "train",
        "samples_per_s": round(best_pl, 1),
        "raw_torch_samples_per_s": round(best_raw, 1),
        "ratio": round(best_pl / best_raw, 3),
        "lightning_runs": [round(x, 1) for x in pl_runs],
        "raw_runs": [round(x, 1) for x in raw_runs],
        "preset": args.preset,
        "encoder": args.encoder,
        "batch_size": args.batch_size,
        "timed_batches": args.batches,
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }
