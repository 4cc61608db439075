"""``train_two_tower``: the one training entry point (the Dagster asset, the CLI, the benchmarks and the GPU
check all call it), so every path trains the same way.

It makes one streaming pass over the training split to count items (vocabulary and the logQ sampling
distribution), fits the :class:`~relevance_core.features.FeatureEncoder`, and runs a configured — never
subclassed — Lightning ``Trainer``: ``accelerator="auto"``, bf16 mixed precision on CUDA and fp32
elsewhere, DDP when several devices, early stopping and checkpointing on exact validation recall@K,
CSV metrics, a progress bar, ``seed_everything`` + deterministic algorithms. After training it reloads the
best checkpoint and scores the validation split once more, next to the popularity baseline on the same
examples, so every model comes with "how much better than most-popular" attached.

Run as a module for multi-process training (``strategy="ddp"`` re-launches this command per rank)::

    python -m relevance_core.model.train --pairs lake/training_pairs --items items.parquet --out DIR \
        --set devices=2 --set accelerator=cpu --set strategy=ddp
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from relevance_core.features import FeatureEncoder, catalog_has_content
from relevance_core.model.config import TwoTowerConfig
from relevance_core.model.data import (
    PairsDataModule,
    PairsIterable,
    PairsSource,
    count_rows,
    open_pairs,
    scan_item_counts,
)
from relevance_core.model.module import TwoTowerModule, recall_hits, recall_name

CHECKPOINT_FILE = "model.ckpt"
FEATURES_FILE = "features.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
CURVE_FILE = "training_curve.png"


@dataclass
class TrainResult:
    """A trained model (best checkpoint's weights, CPU, eval mode) and what is known about it."""

    module: TwoTowerModule
    encoder: FeatureEncoder
    config: TwoTowerConfig
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    best_checkpoint: str | None = None
    work_dir: Path | None = None


def resolve_content(cfg: TwoTowerConfig, items_table: Any) -> TwoTowerConfig:
    """``item_content=None`` decided by the catalog: ID-only (and no ID dropout: there is no content to
    fall back on) when it has no content columns."""
    if cfg.item_content is not None:
        return cfg
    content = catalog_has_content(items_table)
    return cfg.replace(item_content=content, id_dropout=cfg.id_dropout if content else 0.0)


def resolve_runtime(cfg: TwoTowerConfig) -> dict[str, Any]:
    """Trainer accelerator/devices/strategy/precision/deterministic from the config's "auto" values."""
    cuda = torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda")
    accelerator = ("gpu" if cuda else "cpu") if cfg.accelerator == "auto" else cfg.accelerator
    if cfg.devices == "auto":
        devices: int | str = torch.cuda.device_count() if cuda else 1
    else:
        devices = int(cfg.devices)
    n_devices = devices if isinstance(devices, int) else 1
    strategy = cfg.strategy
    if strategy == "auto":
        # spawned DDP is safe inside any host process (Dagster run worker, pytest, notebooks); plain "ddp"
        # re-executes the command line per rank, which only the CLI entry point is written for
        strategy = "ddp_spawn" if n_devices > 1 else "auto"
    if cfg.item_content is False and strategy in ("ddp", "ddp_spawn"):
        # an ID-only item tower leaves the content layers out of every step; DDP must be told
        strategy = f"{strategy}_find_unused_parameters_true"
    precision = cfg.precision or ("bf16-mixed" if cuda else "32-true")
    deterministic: bool | str = cfg.deterministic
    if cuda and cfg.deterministic:
        deterministic = "warn"  # some CUDA kernels (index_add backward) have no deterministic variant
    return {
        "accelerator": accelerator,
        "devices": devices,
        "strategy": strategy,
        "precision": precision,
        "deterministic": deterministic,
    }


def _history_from_csv(log_dir: Path) -> tuple[list[dict[str, float]], int]:
    """Per-epoch train loss and validation recalls from the CSV logger, and the number of steps run."""
    import pandas as pd

    files = sorted(log_dir.rglob("metrics.csv"))
    if not files:
        return [], 0
    df = pd.read_csv(files[-1])
    steps = int(df["step"].max()) + 1 if "step" in df and len(df) else 0
    out = []
    for epoch, grp in df.groupby("epoch"):
        row: dict[str, float] = {"epoch": int(epoch)}
        for col in grp.columns:
            if col in ("epoch", "step") or col.endswith("_step"):
                continue
            vals = grp[col].dropna()
            if len(vals):
                row[col.removesuffix("_epoch")] = float(vals.iloc[-1])
        out.append(row)
    return out, steps


@torch.no_grad()
def evaluate(
    module: TwoTowerModule,
    pairs_source: PairsSource,
    encoder: FeatureEncoder,
    target_counts: torch.Tensor,
    *,
    split: str = "validation",
    ks: tuple[int, ...] = (10, 20),
    max_examples: int | None = None,
    batch_size: int = 2048,
) -> dict[str, float]:
    """Exact HR@K (= recall@K, one target per example) of the model and of the popularity baseline
    (top-K training targets) on the same examples of ``split``, streamed."""
    module = module.cpu().eval()
    items = module.model.all_item_vectors()
    pop_scores = target_counts.double().clone()
    pop_scores[0] = float("-inf")
    pop_top = pop_scores.topk(min(max(ks), len(pop_scores) - 1)).indices
    data = PairsIterable(
        pairs_source,
        encoder,
        split=split,
        batch_size=batch_size,
        history_length=module.cfg.history_length,
        shuffle=False,
        max_examples=max_examples,
    )
    sums = {f"hr_at_{k}": 0.0 for k in ks} | {f"popularity_hr_at_{k}": 0.0 for k in ks}
    n = 0
    for hist_rows, hist_events, hist_age, target, _w in data:
        user = module.model.user_from_item_vectors(items, hist_rows, hist_events, hist_age)
        hits = recall_hits(user, items, target, ks)
        pop_hit = pop_top.unsqueeze(0) == target.unsqueeze(1)
        for k in ks:
            sums[f"hr_at_{k}"] += float(hits[k].sum())
            sums[f"popularity_hr_at_{k}"] += float(pop_hit[:, :k].any(1).sum())
        n += int(target.shape[0])
    out = {k: (v / n if n else 0.0) for k, v in sums.items()}
    for k in ks:
        pop = out[f"popularity_hr_at_{k}"]
        out[f"hr_ratio_vs_popularity_at_{k}"] = out[f"hr_at_{k}"] / pop if pop > 0 else math.inf
    out["eval_examples"] = n
    return out


def train_two_tower(
    pairs_source: PairsSource,
    items_table: Any,
    config: TwoTowerConfig | dict[str, Any] | None = None,
    *,
    work_dir: str | Path | None = None,
    callbacks: list[pl.Callback] | None = None,
) -> TrainResult | None:
    """Train on ``pairs_source`` (``lake/training_pairs`` dir, Parquet files, Arrow table or dataset; its
    ``split`` column selects train/validation) with item content from ``items_table`` (dim_items-like;
    pandas or pyarrow; None = ids only). Returns None on non-zero ranks of a ``strategy="ddp"`` run."""
    cfg = config if isinstance(config, TwoTowerConfig) else TwoTowerConfig.from_dict(dict(config or {}))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="relevance-train-"))
    work.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    cfg = resolve_content(cfg, items_table)
    data = _Vocabulary.fit(cfg, pairs_source, items_table)
    module = TwoTowerModule(
        cfg.to_dict(),
        data.encoder.sizes(),
        catalog=data.catalog,
        id_known=data.encoder.id_known_tensor(),
        target_counts=data.target_counts,
    )
    datamodule = PairsDataModule(pairs_source, data.encoder, cfg, val_split=data.val_split)
    rt = resolve_runtime(cfg)
    trainer, checkpoint = _trainer(cfg, rt, work, callbacks)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    train_seconds = time.perf_counter() - t0
    if not trainer.is_global_zero:
        return None

    best = checkpoint.best_model_path or None
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    module = module.cpu().eval()
    history, steps = _history_from_csv(work / "logs")
    metrics: dict[str, Any] = evaluate(
        module,
        pairs_source,
        data.encoder,
        data.target_counts,
        split=data.val_split,
        max_examples=cfg.max_val_examples,
    )
    best_score = checkpoint.best_model_score
    world = rt["devices"] if isinstance(rt["devices"], int) and rt["strategy"] != "auto" else 1
    samples = steps * cfg.batch_size * world
    metrics.update(
        {
            "validation_split": data.val_split,
            f"best_{recall_name(cfg.recall_k)}": float(best_score) if best_score is not None else None,
            "epochs": len([h for h in history if "train_loss" in h]),
            "steps": steps,
            "train_examples": data.n_train,
            "n_items": data.encoder.n_rows - 1,
            "n_items_with_id": int(sum(data.encoder.id_known)),
            "train_seconds": round(train_seconds, 3),
            "samples_per_s": round(samples / train_seconds, 1) if train_seconds > 0 else None,
            **{key: rt[key] for key in ("accelerator", "devices", "strategy", "precision")},
            "encoder": cfg.encoder,
            "softmax": "full" if module.full_softmax else "sampled",
            "device_name": torch.cuda.get_device_name(0) if rt["accelerator"] in ("gpu", "cuda") else "cpu",
        }
    )
    return TrainResult(
        module=module,
        encoder=data.encoder,
        config=cfg,
        metrics=metrics,
        history=history,
        best_checkpoint=best,
        work_dir=work,
    )


@dataclass
class _Vocabulary:
    """What one pass over the pairs fixes before training: the item vocabulary and content encoding,
    the catalog tensors, and each item's count as a target (the sampled-softmax log-Q correction)."""

    encoder: FeatureEncoder
    catalog: Any
    target_counts: torch.Tensor
    n_train: int
    val_split: str

    @classmethod
    def fit(cls, cfg: TwoTowerConfig, pairs_source: PairsSource, items_table: Any) -> _Vocabulary:
        dataset = open_pairs(pairs_source)
        target_counter, all_counter, n_train = scan_item_counts(dataset, "train")
        if n_train == 0:
            raise ValueError("training_pairs has no rows with split='train'")
        # without validation rows (a tiny or single-day run) early stopping watches the training split
        val_split = "validation" if count_rows(dataset, "validation") > 0 else "train"
        if items_table is None:
            import pandas as pd

            items_table = pd.DataFrame({"item_id": sorted(all_counter)})
        encoder = FeatureEncoder.fit(
            items_table,
            all_counter,
            min_item_count=cfg.min_item_count,
            title_buckets=cfg.title_buckets,
            max_title_tokens=cfg.max_title_tokens,
            history_length=cfg.history_length,
        )
        rows = encoder.rows_of(target_counter.keys())
        counts = torch.zeros(encoder.n_rows, dtype=torch.float64)
        counts[torch.from_numpy(rows)] = torch.tensor(list(target_counter.values()), dtype=torch.float64)
        counts[0] = 0
        return cls(encoder, encoder.encode_catalog(items_table), counts, n_train, val_split)


def _trainer(
    cfg: TwoTowerConfig, rt: dict[str, Any], work: Path, callbacks: list[pl.Callback] | None
) -> tuple[pl.Trainer, pl.callbacks.ModelCheckpoint]:
    """The Lightning trainer: the best validation recall is kept (not the last epoch) and training stops
    once it has not improved for ``patience`` epochs."""
    monitor = recall_name(cfg.recall_k)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=work / "checkpoints", filename="best", monitor=monitor, mode="max", save_top_k=1
    )
    cbs: list[pl.Callback] = [
        checkpoint,
        pl.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=cfg.patience, min_delta=1e-4),
        *(callbacks or []),
    ]
    trainer = pl.Trainer(
        **rt,
        max_epochs=cfg.max_epochs,
        callbacks=cbs,
        logger=pl.loggers.CSVLogger(str(work), name="logs"),
        log_every_n_steps=cfg.log_every_n_steps,
        limit_train_batches=cfg.limit_train_batches,
        num_sanity_val_steps=0,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        default_root_dir=str(work),
    )
    return trainer, checkpoint


def plot_curve(history: list[dict[str, float]], path: str | Path, recall_k: int = 20) -> Path:
    """Train loss and validation recall per epoch, one PNG (shown as asset metadata in the Dagster UI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.2), dpi=100)
    loss = [h.get("train_loss", np.nan) for h in history]
    ax1.plot(epochs, loss, "o-", color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    for k, style in ((recall_k, "s-"), (10, "^--")):
        key = recall_name(k)
        if any(key in h for h in history):
            ax2.plot(epochs, [h.get(key, np.nan) for h in history], style, label=f"val recall@{k}")
    ax2.set_ylabel("validation recall (all items)")
    fig.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_artifacts(result: TrainResult, out_dir: str | Path) -> dict[str, Path]:
    """Everything a trained model is, in one directory: the Lightning checkpoint (``model.ckpt``, loadable
    with ``TwoTowerModule.load_from_checkpoint``), the exported towers (parity-checked), ``features.json``,
    ``config.json``, ``metrics.json``, ``history.json`` and the training curve PNG."""
    from relevance_core.model.export import export_towers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    ckpt = out / CHECKPOINT_FILE
    if result.best_checkpoint and Path(result.best_checkpoint).is_file():
        shutil.copyfile(result.best_checkpoint, ckpt)
    else:
        torch.save(
            {"state_dict": result.module.state_dict(), "hyper_parameters": dict(result.module.hparams)}, ckpt
        )
    paths["checkpoint"] = ckpt
    paths.update(export_towers(result.module, out))
    (out / FEATURES_FILE).write_text(result.encoder.to_json())
    (out / CONFIG_FILE).write_text(json.dumps(result.config.to_dict(), indent=2, default=str))
    (out / METRICS_FILE).write_text(json.dumps(result.metrics, indent=2, default=str))
    (out / HISTORY_FILE).write_text(json.dumps(result.history, indent=2))
    paths.update(features=out / FEATURES_FILE, config=out / CONFIG_FILE, metrics=out / METRICS_FILE)
    paths["history"] = out / HISTORY_FILE
    paths["curve"] = plot_curve(result.history, out / CURVE_FILE, result.config.recall_k)
    return paths


def load_module(model_dir: str | Path) -> tuple[TwoTowerModule, FeatureEncoder]:
    """The eager model and encoder back from a ``save_artifacts`` directory."""
    d = Path(model_dir)
    module = TwoTowerModule.load_from_checkpoint(
        str(d / CHECKPOINT_FILE), map_location="cpu", weights_only=False
    )
    return module.eval(), FeatureEncoder.from_json((d / FEATURES_FILE).read_text())


def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m relevance_core.model.train", description=__doc__)
    p.add_argument("--pairs", required=True, help="training_pairs directory or Parquet file")
    p.add_argument("--items", help="items Parquet (dim_items-like)")
    p.add_argument("--out", required=True, help="directory for the artifacts (rank 0 writes)")
    p.add_argument("--set", action="append", default=[], help="config override key=value (JSON value)")
    args = p.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    cfg = TwoTowerConfig.from_dict({k: _parse_value(v) for k, v in overrides.items()})
    items = None
    if args.items:
        import pyarrow.parquet as pq

        items = pq.read_table(args.items)
    out = Path(args.out)
    result = train_two_tower(args.pairs, items, cfg, work_dir=out / "work")
    if result is not None:
        save_artifacts(result, out)
        print(json.dumps(result.metrics, default=str))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
