"""The session benchmark's model step on a GPU: what the same model code reaches when training is cheap.

``relevance bench sessions`` runs the whole product on the CPU (Spark, Dagster, FAISS). A lent GPU machine
has none of Spark, Dagster or FAISS, so this script takes the ``training_pairs`` the product's Spark
pipeline wrote for the benchmark (``--pairs``, copied from a ``bench sessions --keep`` work dir), trains
``train_two_tower`` on them on the GPU (bf16) for each ``--variant`` (JSON overrides of the ``[model]``
section of ``--config``), and answers the test rows the way the command does: the user tower over each
prefix (same event type, same ages) and exact top-k over every item vector, which is what the ``Flat``
FAISS index the configuration names returns. It reports HR@20 / MRR@20 per variant, the pipeline's
validation recall (the only number a choice may rest on) and the time.

    PYTHONPATH=. python bench/gpu_sessions.py --pairs DIR --test test.tsv --config configs/diginetica.toml \
        --variant '{"softmax": "full", "max_epochs": 20}'

Prints one JSON object last (also ``$OUT/gpu_sessions.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="lake/training_pairs directory of a bench sessions run")
    p.add_argument("--test", required=True, help="test rows (prefix<TAB>label TSV with header)")
    p.add_argument("--config", required=True, help="the TOML the command ran with")
    p.add_argument("--variant", action="append", default=[], help="JSON overrides of [model]; repeatable")
    p.add_argument(
        "--accelerator", default="auto", help="Lightning accelerator: auto, gpu or cpu (default auto)"
    )
    p.add_argument("--k", type=int, default=20, help="ids per test row (default 20)")
    p.add_argument(
        "--max-test-rows", type=int, default=None, help="score only the first N test rows (default: all)"
    )


def score(module, encoder, prefixes, labels, spacing_s: float, k: int, device: str) -> tuple[float, float]:
    import torch

    from relevance_core.session_bench.convert import history_ages
    from relevance_core.session_bench.predictions import hit_and_mrr

    model = module.model.to(device).eval()
    lists: list[list[str]] = []
    with torch.inference_mode():
        items = model.all_item_vectors()
        for s in range(0, len(prefixes), 4096):
            chunk = prefixes[s : s + 4096]
            hist = [
                list(zip(p, ["view"] * len(p), history_ages(len(p), spacing_s), strict=True)) for p in chunk
            ]
            rows, events, ages = (t.to(device) for t in encoder.encode_histories(hist))
            scores = model.user_vectors(rows, events, ages) @ items.T
            scores[:, 0] = float("-inf")
            top = scores.topk(k, dim=1).indices.cpu().numpy()
            lists += [[encoder.item_ids[r - 1] for r in row] for row in top]
    return hit_and_mrr(lists, labels, k)


def run(args) -> dict[str, Any]:
    import torch

    from relevance_core.model.config import TwoTowerConfig
    from relevance_core.model.train import train_two_tower
    from relevance_core.session_bench.convert import read_test

    with open(args.config, "rb") as f:
        conf = tomllib.load(f)
    base = dict(conf["model"])
    base.setdefault("history_length", conf.get("pairs", {}).get("history_length", 20))
    base.update(accelerator=args.accelerator, devices=1, num_threads=None, progress_bar=False)
    spacing = float(conf.get("data", {}).get("event_spacing_s", 60.0))
    prefixes, labels = read_test(args.test)
    if args.max_test_rows:
        prefixes, labels = prefixes[: args.max_test_rows], labels[: args.max_test_rows]
    cuda = torch.cuda.is_available()
    out: dict[str, Any] = {
        "benchmark": "gpu_sessions",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "test_rows": len(prefixes),
        "config": args.config,
        "runs": [],
    }
    for raw in args.variant or ["{}"]:
        over = json.loads(raw)
        cfg = TwoTowerConfig.from_dict(base | over)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="gpu-sessions-") as tmp:
            result = train_two_tower(args.pairs, None, cfg, work_dir=Path(tmp))
        train_s = time.perf_counter() - t0
        hr, mrr = score(
            result.module, result.encoder, prefixes, labels, spacing, args.k, "cuda" if cuda else "cpu"
        )
        m = result.metrics
        run = {
            "variant": over,
            "HR@20": hr,
            "MRR@20": mrr,
            "pipeline_validation_recall_at_20": m.get("best_val_recall_at_20"),
            "epochs": m.get("epochs"),
            "train_s": round(train_s, 1),
            "samples_per_s": m.get("samples_per_s"),
            "precision": m.get("precision"),
        }
        out["runs"].append(run)
        print(json.dumps(run), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.device_main import device_main  # after __main__ put the repository root on the path

    return device_main("gpu_sessions", __doc__, add_arguments, run, argv, gate=False)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
