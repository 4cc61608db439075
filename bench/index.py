"""FAISS index benchmark: exact vs the chosen ANN over the trained item tower's embeddings of a
1M-item generated catalog, queried with user-tower vectors of held-out histories.

Why these vectors: on i.i.d. random vectors no ANN beats exact search, and well-separated synthetic
clusters make every ANN look perfect. The real structure comes from a real (small, quickly trained) model:
generate a marketplace with the full catalog and a subset of the events, build sessions/pairs with the
DuckDB reference pipeline (no Spark JVM needed), train the two-tower model briefly on the train split,
embed *every* catalog item with the scripted item tower (most never interacted: content only, like cold
listings), and query with the scripted user tower on validation/test histories.

Reference in the same run: exact (Flat) single-query search over the same vectors, 1 thread per query
(the service's pattern), so ``speedup`` = ann_qps / flat_qps is a ratio on the same noisy machine.
Recall@100 is measured against exact search on queries *not* used to tune nprobe. ``--crossover`` also
measures, on subsets of the same vectors, the catalog size where the tuned ANN starts to pay off.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=1_000_000, help="catalog size")
    parser.add_argument(
        "--users", type=int, default=60_000, help="users in the generated marketplace (default 60k)"
    )
    parser.add_argument("--events", type=int, default=1_200_000, help="events generated (training subset)")
    parser.add_argument("--days", type=int, default=10, help="days of events (default 10)")
    parser.add_argument(
        "--train-batches",
        type=int,
        default=4000,
        help="optimizer steps of the tower behind the vectors (300 left them too unstructured: 2.6x)",
    )
    parser.add_argument(
        "--queries", type=int, default=1_000, help="held-out queries: half tune, half measure"
    )
    parser.add_argument("--k", type=int, default=100, help="neighbours per query (default 100)")
    parser.add_argument(
        "--factory", action="append", default=None, help="extra ANN factory strings to compare"
    )
    parser.add_argument("--crossover", action="store_true", help="also measure the Flat/ANN crossover size")
    parser.add_argument(
        "--readout",
        default=None,
        help="user tower readout of the model behind the vectors (default: the product's default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--cache", default=None, help="directory to cache embeddings + queries between runs")


def _log(t0: float, msg: str) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def make_vectors(args, t0: float):
    """(item_ids, item embeddings [N, D], query vectors [Q, D], info) from a freshly trained model."""
    import duckdb
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch

    from relevance_core.evaluation.retrieval import TowerRetriever
    from relevance_core.generator import generate_tables, preset
    from relevance_core.index import embed_items
    from relevance_core.model.config import TwoTowerConfig
    from relevance_core.model.export import script_towers
    from relevance_core.model.train import train_two_tower
    from relevance_core.pipeline.config import PairsConfig
    from relevance_core.pipeline.reference import reference_pipeline

    cfg = preset(
        "bench",
        n_items=args.items,
        n_users=args.users,
        n_events=args.events,
        n_days=args.days,
        seed=args.seed,
    )
    items, events, _truth = generate_tables(cfg)
    _log(t0, f"generated {items.num_rows:,} items, {events.num_rows:,} events")
    with tempfile.TemporaryDirectory(prefix="relevance-bench-index-") as tmp:
        ev_path = str(Path(tmp) / "events.parquet")
        pq.write_table(events, ev_path)
        con = duckdb.connect()
        _, pairs_rel = reference_pipeline(con, ev_path, pairs_cfg=PairsConfig(test_days=1, validation_days=1))
        fetch = getattr(pairs_rel, "to_arrow_table", None) or pairs_rel.arrow
        pairs = fetch()
        con.close()
    _log(t0, f"{pairs.num_rows:,} training pairs")
    # --train-batches counts optimizer steps over as many epochs as they take (Lightning caps
    # limit_train_batches per epoch)
    batch_size = 1024
    n_train = int(pc.sum(pc.equal(pairs.column("split"), "train")).as_py() or 0)
    per_epoch = max(1, -(-n_train // batch_size))
    mcfg = TwoTowerConfig(
        max_epochs=max(1, -(-args.train_batches // per_epoch)),
        n_layers=1,
        hidden=64,
        batch_size=batch_size,
        limit_train_batches=min(args.train_batches, per_epoch),
        max_val_examples=2_000,
        progress_bar=False,
        seed=args.seed,
        **({"readout": args.readout} if args.readout else {}),
    )
    # Train on a subset of the catalog (items with events + a sample): validation scores every known item
    # each epoch, which over 1M rows dominates a quick run. The other items are embedded afterwards from
    # content only, exactly like cold listings.
    import pyarrow as pa

    seen = pa.concat_arrays([c.combine_chunks() for c in (pairs.column("target_item_id"),)])
    rng = np.random.default_rng(args.seed)
    sample = items.take(rng.choice(items.num_rows, size=min(50_000, items.num_rows), replace=False))
    train_items = pa.concat_tables([items.filter(pc.is_in(items.column("item_id"), value_set=seen)), sample])
    with tempfile.TemporaryDirectory(prefix="relevance-bench-train-") as work:
        result = train_two_tower(pairs, train_items, mcfg, work_dir=work)
    _log(t0, f"trained: {json.dumps({k: v for k, v in result.metrics.items() if 'hr' in k})}")
    user_tower, item_tower = script_towers(result.module)
    torch.set_num_threads(2)
    ids, emb = embed_items(item_tower, result.encoder, items, batch_size=16_384)
    _log(t0, f"embedded {len(ids):,} items, dim {emb.shape[1]}")
    held = pairs.filter(pc.field("split").isin(["validation", "test"])).to_pandas()
    held = held[held["hist_item_ids"].map(len) > 0]
    held = held.sample(n=min(args.queries, len(held)), random_state=args.seed)
    retr = TowerRetriever(user_tower, result.encoder)
    q = retr.user_vectors(
        held["hist_item_ids"].tolist(), held["hist_event_types"].tolist(), held["hist_age_s"].tolist()
    )
    info = {
        "pairs": pairs.num_rows,
        "readout": mcfg.readout,
        "train_metrics": {k: v for k, v in result.metrics.items() if "hr" in k},
    }
    return ids, emb, np.asarray(q, dtype=np.float32), info


def _evaluate(factory: str | None, emb, ids, q_tune, q_test, k, flat_qps, crossover=None):
    from relevance_core.index import build_index, measure_recall, single_query_qps, tune_search

    kwargs = {"factory": factory} if factory else {"crossover": 0 if crossover is None else crossover}
    idx = build_index(emb, ids, **kwargs)
    tuned = tune_search(idx, emb, q_tune, k=k)
    recall = measure_recall(idx, emb, q_test, k=k)
    qps = single_query_qps(idx, q_test, k, min_seconds=2.0)
    return {
        "factory": idx.factory,
        "search_params": idx.search_params,
        "tuning_recall": round(tuned["recall"], 4),
        "recall_at_k": round(recall, 4),
        "qps": round(qps, 1),
        "speedup": round(qps / flat_qps, 2),
        "bytes_per_vector": round(idx.bytes_per_vector(), 2),
        "build_s": round(idx.build_s, 2),
    }


def measure_crossover(
    emb, ids, q_tune, q_test, k: int, sizes=(5_000, 20_000, 50_000, 100_000, 200_000, 400_000)
):
    """Per size: Flat QPS vs the size-rule IVF (tuned to recall ≥ 0.95) on a random subset of the catalog.
    The crossover is the smallest size where the ANN is ≥ 2× faster: below it the recall it gives up buys
    too little speed to be worth it."""
    import numpy as np

    from relevance_core.index import build_index, single_query_qps

    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        if n > len(ids):
            break
        sel = np.sort(rng.choice(len(ids), size=n, replace=False))
        e, i = emb[sel], ids[sel]
        flat = build_index(e, i, factory="Flat")
        fq = single_query_qps(flat, q_test, k, min_seconds=1.0)
        ann = _evaluate(None, e, i, q_tune, q_test, k, fq)
        rows.append({"items": n, "flat_qps": round(fq, 1)} | {f"ann_{a}": b for a, b in ann.items()})
        print(json.dumps(rows[-1]), flush=True)
    crossover = next(
        (r["items"] for r in rows if r["ann_speedup"] >= 2.0 and r["ann_recall_at_k"] >= 0.95), None
    )
    return crossover, rows


def run(args: argparse.Namespace) -> dict:
    import numpy as np

    from relevance_core.index import build_index, choose_factory, single_query_qps

    t0 = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    if cache and (cache / "emb.npy").exists():
        emb, q = np.load(cache / "emb.npy"), np.load(cache / "q.npy")
        ids = np.load(cache / "ids.npy", allow_pickle=True)
        info = json.loads((cache / "info.json").read_text())
        _log(t0, f"loaded cached vectors from {cache}")
    else:
        ids, emb, q, info = make_vectors(args, t0)
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            np.save(cache / "emb.npy", emb)
            np.save(cache / "q.npy", q)
            np.save(cache / "ids.npy", ids)
            (cache / "info.json").write_text(json.dumps(info, default=str))
    half = len(q) // 2
    q_tune, q_test = q[:half], q[half:]
    k = args.k
    flat = build_index(emb, ids, factory="Flat")
    flat_qps = single_query_qps(flat, q_test, k, min_seconds=3.0)
    _log(t0, f"flat: {flat_qps:.1f} qps")
    chosen_factory = choose_factory(len(ids), emb.shape[1])
    chosen = _evaluate(chosen_factory, emb, ids, q_tune, q_test, k, flat_qps)
    _log(t0, f"chosen {json.dumps(chosen)}")
    others = []
    for f in args.factory or []:
        others.append(_evaluate(f, emb, ids, q_tune, q_test, k, flat_qps))
        _log(t0, f"candidate {json.dumps(others[-1])}")
    out = {
        "items": int(len(ids)),
        "dim": int(emb.shape[1]),
        "queries_tune": int(len(q_tune)),
        "queries_measure": int(len(q_test)),
        "k": k,
        "flat_qps": round(flat_qps, 1),
        "ann_factory": chosen["factory"],
        "ann_search_params": chosen["search_params"],
        "ann_qps": chosen["qps"],
        "speedup": chosen["speedup"],
        f"recall_at_{k}": chosen["recall_at_k"],
        "bytes_per_vector": chosen["bytes_per_vector"],
        "flat_bytes_per_vector": round(flat.bytes_per_vector(), 2),
        "build_s": chosen["build_s"],
        "threads_per_query": 1,
        "candidates": others,
        "model": info.get("train_metrics"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.crossover:
        out["crossover_items"], out["crossover_rows"] = measure_crossover(emb, ids, q_tune, q_test, k)
    return out
