"""GPU FAISS check: build the item index on the GPU over a trained model's embeddings of a large catalog.

For a lent GPU machine (``bench/gpu_device_run.sh`` runs it after ``gpu_check.py``). It trains the two
towers briefly on the GPU (bf16) on a synthetic marketplace with ``--items`` listings, embeds *every*
listing with the item tower (most never interacted: content only, like cold listings), takes user-tower
vectors of held-out histories as queries, and then, in the same run:

* exact top-100 by a GPU matrix product (the ground truth for recall);
* ``relevance_core.index.build_index`` with ``use_gpu=True`` and with ``use_gpu=False`` on the same IVF
  factory: the build the ``faiss_index`` asset does, on each device (build seconds, recall@100 after the
  same nprobe tuning);
* search throughput of ``GpuIndexFlatIP`` and of the GPU IVF index on the query batch, against CPU Flat with
  every core.

Prints one JSON object last (also ``$OUT/gpu_index.json``). ``--dry-run`` exercises it on CPU with a small
catalog and no GPU index (CPU FAISS stands in), so the script can be checked before device time is spent.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", type=int, default=1_000_000, help="catalog size (default 1M)")
    p.add_argument("--users", type=int, default=20_000, help="query users (default 20k)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    p.add_argument("--queries", type=int, default=2_000, help="half tune nprobe, half measure recall")
    p.add_argument("--factory", default=None, help="IVF factory (default: relevance_core.index's choice)")
    p.add_argument("--k", type=int, default=100, help="neighbours per query (default 100)")
    p.add_argument("--dry-run", action="store_true", help="CPU only, 20k items: check the script")


def _timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def make_vectors(args, workdir: Path, accelerator: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    import numpy as np
    import torch

    from relevance_core.index import embed_items
    from relevance_core.model.config import TwoTowerConfig
    from relevance_core.model.synthetic import SyntheticConfig, make_marketplace
    from relevance_core.model.train import train_two_tower

    info: dict[str, Any] = {}
    syn = SyntheticConfig(
        n_items=args.items, n_users=args.users, n_l1=12, n_l2=6, n_l3=5, brands_per_l1=10, seed=1
    )
    (pairs, items), info["generate_s"] = _timed(make_marketplace, syn)
    cfg = TwoTowerConfig(
        accelerator=accelerator,
        devices=1,
        batch_size=1024,
        max_epochs=args.epochs,
        patience=args.epochs,
        progress_bar=False,
        max_val_examples=5_000,
    )
    result, info["train_s"] = _timed(train_two_tower, pairs, items, cfg, work_dir=workdir / "train")
    info.update(
        {k: result.metrics.get(k) for k in ("hr_at_20", "popularity_hr_at_20", "samples_per_s", "precision")}
    )
    # embedding and query encoding run on the CPU copy train_two_tower returns (the encoder's tensors are
    # CPU tensors; this is also where the faiss_index asset embeds)
    dev = "cpu"
    model = result.module.model.to(dev).eval()
    (ids, emb), info["embed_s"] = _timed(
        embed_items, model.item_tower, result.encoder, items, batch_size=65_536
    )
    val = pairs.filter(pairs["split"].to_numpy(zero_copy_only=False) == "validation")
    val = val.slice(0, args.queries)
    hist = [
        list(zip(i, e, a, strict=True))
        for i, e, a in zip(
            val["hist_item_ids"].to_pylist(),
            val["hist_event_types"].to_pylist(),
            val["hist_age_s"].to_pylist(),
            strict=True,
        )
    ]
    with torch.inference_mode():
        rows, events, ages = (t.to(dev) for t in result.encoder.encode_histories(hist))
        queries = model.user_vectors(rows, events, ages).float().cpu().numpy()
    info.update(items=len(ids), dim=int(emb.shape[1]), queries=len(queries))
    return (
        ids,
        np.ascontiguousarray(emb, dtype="float32"),
        np.ascontiguousarray(queries, dtype="float32"),
        info,
    )


def exact_truth(emb, queries, k: int, device: str):
    import torch

    e = torch.from_numpy(emb).to(device)
    q = torch.from_numpy(queries).to(device)
    t0 = time.perf_counter()
    top = (q @ e.T).topk(k, dim=1).indices
    if device == "cuda":
        torch.cuda.synchronize()
    return top.cpu().numpy(), time.perf_counter() - t0


def run(args) -> dict[str, Any]:
    import faiss
    import torch

    from relevance_core.index import build_index, gpu_available, recall_at_k, tune_search

    if args.dry_run:
        args.items, args.users, args.epochs, args.queries = 20_000, 2_000, 1, 400
    gpu = (not args.dry_run) and torch.cuda.is_available() and gpu_available()
    out: dict[str, Any] = {
        "benchmark": "gpu_index",
        "dry_run": bool(args.dry_run),
        "faiss": faiss.__version__,
        "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
        "torch_cuda": torch.cuda.is_available(),
    }
    if not args.dry_run and not gpu:
        out.update(ok=False, error="no GPU FAISS (faiss.get_num_gpus() == 0) or no CUDA device")
        return out
    with tempfile.TemporaryDirectory(prefix="gpu-index-") as tmp:
        ids, emb, queries, info = make_vectors(args, Path(tmp), "gpu" if gpu else "cpu")
    out["vectors"] = info
    k = args.k
    truth, out["exact_torch_s"] = exact_truth(emb, queries, k, "cuda" if gpu else "cpu")
    half = len(queries) // 2
    tune_q, test_q, test_truth = queries[:half], queries[half:], truth[half:]
    builds: dict[str, Any] = {}
    for device in ["gpu", "cpu"] if gpu else ["cpu"]:
        ix = build_index(emb, ids, factory=args.factory, use_gpu=device == "gpu")
        knob = tune_search(ix, emb, tune_q, k=k, target_recall=0.97)
        res = ix.search(test_q, k)
        builds[device] = {
            "factory": ix.factory,
            "built_on": ix.built_on,
            "build_s": round(ix.build_s, 2),
            "search_params": knob["search_params"],
            "recall_at_100": round(recall_at_k(res.rows, test_truth, k), 4),
        }
    out["builds"] = builds
    out["factory"] = builds["cpu"]["factory"]
    # batch search throughput: GPU Flat and GPU IVF vs CPU Flat on every core
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    cpu_flat = faiss.IndexFlatIP(emb.shape[1])
    cpu_flat.add(emb)
    _, t_cpu = _timed(cpu_flat.search, test_q, k)
    search = {"cpu_flat_qps": round(len(test_q) / t_cpu, 1), "cpu_threads": faiss.omp_get_max_threads()}
    if gpu:
        res = faiss.StandardGpuResources()
        gflat = faiss.GpuIndexFlatIP(res, emb.shape[1])
        _, search["gpu_flat_add_s"] = _timed(gflat.add, emb)
        gflat.search(test_q[:10], k)  # warm-up
        (_, got), t_gpu = _timed(gflat.search, test_q, k)
        search["gpu_flat_qps"] = round(len(test_q) / t_gpu, 1)
        search["gpu_flat_recall_at_100"] = round(recall_at_k(got, test_truth, k), 4)
        ivf_cpu = build_index(emb, ids, factory=out["factory"], use_gpu=False).index
        nprobe = builds["cpu"]["search_params"].get("nprobe")
        try:
            givf = faiss.index_cpu_to_gpu(res, 0, ivf_cpu)
            search["gpu_ivf_factory"] = out["factory"]
        except RuntimeError as e:
            # the product's CPU layout (fast-scan PQ + refinement) has no GPU kernels: measure the GPU's own
            # IVF-Flat with as many lists, trained and filled on the GPU
            nlist = int(getattr(faiss.extract_index_ivf(ivf_cpu), "nlist", 1024))
            search["gpu_ivf_note"] = (
                f"{out['factory']} cannot move to the GPU ({str(e).splitlines()[-1][:80]})"
            )
            givf = faiss.index_cpu_to_gpu(
                res, 0, faiss.index_factory(emb.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
            )
            _, search["gpu_ivf_train_add_s"] = _timed(lambda: (givf.train(emb), givf.add(emb)))
            search["gpu_ivf_factory"] = f"IVF{nlist},Flat"
        if nprobe:
            givf.nprobe = int(nprobe)
        givf.search(test_q[:10], k)
        (_, got), t_givf = _timed(givf.search, test_q, k)
        search.update(
            gpu_ivf_qps=round(len(test_q) / t_givf, 1),
            gpu_ivf_nprobe=int(givf.nprobe),
            gpu_ivf_recall_at_100=round(recall_at_k(got, test_truth, k), 4),
            gpu_name=torch.cuda.get_device_name(0),
        )
    out["search"] = search
    checks = {"ann_recall_ge_0_95": all(b["recall_at_100"] >= 0.95 for b in builds.values())}
    if gpu:
        checks["built_on_gpu"] = builds["gpu"]["built_on"] == "gpu"
        checks["gpu_flat_exact"] = search["gpu_flat_recall_at_100"] >= 0.99
    out["checks"] = checks
    out["ok"] = all(checks.values())
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.device_main import device_main  # after __main__ put the repository root on the path

    return device_main("gpu_index", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
