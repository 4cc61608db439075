"""GPU check: train on the GPU in bf16 on generated data, report samples/s, compare quality with CPU.

Meant for a lent GPU machine that has torch, pytorch-lightning and torchmetrics but not this project's
other dependencies, so it imports only ``relevance_core.model`` / ``relevance_core.features`` (which need
numpy, pandas, pyarrow and msgspec besides torch; ``bench/gpu_device_run.sh`` installs carried wheels when
they are missing) and never Spark, Dagster or FAISS. Run from the repository root::

    PYTHONPATH=. python bench/gpu_check.py                 # on the GPU machine
    PYTHONPATH=. python bench/gpu_check.py --dry-run       # here: CPU stands in for the GPU, tiny data

Both runs use the same data, config and seed; the GPU one gets ``accelerator="gpu"`` and the default
precision there (``bf16-mixed``). "ok" means: the GPU run is on CUDA (unless --dry-run), its validation
HR@20 is within ``--tolerance`` of the CPU run's, and at least twice the popularity baseline's. The JSON
object on the last line is also written to ``$OUT/gpu_check.json`` when ``$OUT`` is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", help="synthetic marketplace: tiny / small / medium")
    p.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    p.add_argument("--batch-size", type=int, default=512, help="training batch size (default 512)")
    p.add_argument("--tolerance", type=float, default=0.05, help="max |HR@20 gpu - cpu|")
    p.add_argument("--skip-cpu", action="store_true", help="GPU run only (no quality comparison)")
    p.add_argument("--dry-run", action="store_true", help="no GPU needed: tiny preset, CPU for both runs")


def _train(pairs, items, accelerator: str, args, workdir: Path) -> dict[str, Any]:
    from relevance_core.model.config import TwoTowerConfig
    from relevance_core.model.train import train_two_tower

    cfg = TwoTowerConfig(
        accelerator=accelerator,
        devices=1,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        patience=args.epochs,
        progress_bar=False,
        deterministic=True,
    )
    t0 = time.perf_counter()
    result = train_two_tower(pairs, items, cfg, work_dir=workdir)
    m = dict(result.metrics)
    m["wall_s"] = round(time.perf_counter() - t0, 1)
    keep = (
        "hr_at_10",
        "hr_at_20",
        "popularity_hr_at_20",
        "hr_ratio_vs_popularity_at_20",
        "samples_per_s",
        "train_seconds",
        "epochs",
        "steps",
        "precision",
        "accelerator",
        "device_name",
        "wall_s",
    )
    return {k: m.get(k) for k in keep}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    import torch

    from relevance_core.model.synthetic import make_marketplace

    if args.dry_run:
        args.preset, args.epochs, args.batch_size = "tiny", min(args.epochs, 2), min(args.batch_size, 256)
    cuda = torch.cuda.is_available()
    out: dict[str, Any] = {
        "benchmark": "gpu_check",
        "dry_run": bool(args.dry_run),
        "cuda_available": cuda,
        "torch": torch.__version__,
        "preset": args.preset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
    }
    if not cuda and not args.dry_run:
        out.update(ok=False, error="no CUDA device visible; use --dry-run to exercise the script on CPU")
        return out
    out["bf16_supported"] = bool(cuda and torch.cuda.is_bf16_supported())
    pairs, items = make_marketplace(args.preset)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        gpu = _train(pairs, items, "cpu" if args.dry_run else "gpu", args, Path(tmp) / "gpu")
        out["gpu"] = gpu
        if not args.skip_cpu:
            torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
            cpu = _train(pairs, items, "cpu", args, Path(tmp) / "cpu")
            out["cpu"] = cpu
    out["samples_per_s"] = gpu["samples_per_s"]
    checks = {
        "on_cuda": args.dry_run or gpu["accelerator"] == "gpu",
        "bf16": args.dry_run or gpu["precision"] == "bf16-mixed",
        "beats_popularity_2x": (gpu["hr_at_20"] or 0) >= 2 * (gpu["popularity_hr_at_20"] or 0),
    }
    if "cpu" in out:
        out["hr_at_20_diff_vs_cpu"] = round(gpu["hr_at_20"] - out["cpu"]["hr_at_20"], 4)
        out["speedup_vs_cpu"] = round(gpu["samples_per_s"] / out["cpu"]["samples_per_s"], 2)
        checks["matches_cpu_quality"] = abs(out["hr_at_20_diff_vs_cpu"]) <= args.tolerance
    out["checks"] = checks
    out["ok"] = all(checks.values())
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.device_main import device_main  # after __main__ put the repository root on the path

    return device_main("gpu_check", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
