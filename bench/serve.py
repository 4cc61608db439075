"""Serving latency and throughput: ``relevance bench serve``.

What it does, in one run:

1. **Bundle.** A catalog of ``--items`` listings from the marketplace generator (default 1M), a feature
   encoder fitted on it, an (untrained: latency does not depend on the weights) two-tower model exported
   with the project's TorchScript export, item embeddings, a FAISS index built with ``relevance_core.index``
   (IVF for large catalogs) and tuned like the ``faiss_index`` asset (user-tower queries, recall@100 ≥ the
   target + margin), assembled and published with
   ``relevance_core.publishing`` / ``bundle.publish``. Cached under ``--work-dir`` per size, so reruns
   skip this (``--rebuild`` forces it).
2. **Server.** ``relevance serve`` in its own process on 127.0.0.1 (uvicorn, ``--workers``); user state
   is filled through ``POST /v1/events`` (``--users`` users with 10 interactions each); ``--redis`` keeps it
   in a local ``redis-server`` shared by the workers (``RELEVANCE_REDIS_URL``), so stored users' GETs are
   measured with several workers too.
3. **Load.** A second process drives ``GET /v1/users/{id}/recommendations?k=20`` (90% known users, 10%
   unknown → popular fallback) over ``--connections`` keep-alive HTTP/1.1 connections opened up front and
   used in turn (FIFO), so several workers share the load as they would many clients' traffic. A
   response with ``Connection: close`` (a worker over its share of connections,
   ``relevance_service.connection_balance``) retires its connection and a fresh one joins the pool
   (``reconnects``; ``connections_per_worker_at_start`` and ``connections_per_worker`` show the split):
   - *open loop* at ``--rate`` requests/s for ``--duration`` s: requests are sent on a fixed schedule
     whether or not earlier answers arrived, and latency counts from the scheduled send time (no
     coordinated omission). → ``p50_ms``, ``p99_ms``, ``errors``, ``open_loop_rps``;
   - *latency references*, same server, same minutes: ``GET /healthz`` at ``--rate`` (the floor the
     client, loopback and host add: ``floor_p99_ms``) and the measured request at a tenth of ``--rate``
     (no queueing: ``unloaded_p50_ms``, ``unloaded_p99_ms``). On this 2-core VM a request that follows a
     pause of even 2 ms runs 2-3x slower than back to back (caches shared with other tenants), so the
     unloaded latency is several times the in-process cost;
   - during every phase a third process only sleeps 2 ms at a time and notes how late it wakes
     (``host_hiccup_by_second_ms``, beside ``p99_by_second_ms``): a stall it shares is the host's; it
     also reads the CPU time the hypervisor took from the VM each second (``host_steal_by_second_pct``),
     the kernel's compaction / reclaim / major-fault counters (``host_vmstat_by_second``), and times a
     pass over 16 MB every 50 ms (``host_memory_probe_by_second_ms``: a neighbour saturating the host's
     memory slows it). The client notes how late it started each request
     (``client_send_lag_by_second_ms``: a stall of its own), and the workers' and Redis's CPU time per
     answered request is read from /proc (``server_cpu_ms_per_request``, ``redis_cpu_ms_per_request``);
   - *closed loop* at ``--concurrency`` outstanding requests for ``--duration`` s: the most the server
     answers per second. → ``rps``.
   The client's own CPU use is reported (``client_cpu_pct``): on a 2-core machine the load generator
   competes with the server, and a number without it is not interpretable.
4. **Reference.** In this process, with the server idle: the raw path (user tower + FAISS top-K with the
   same K and search breadth as the service, one query per call, one thread) → ``raw_path_rps``;
   ``ratio = rps / raw_path_rps`` is what HTTP, state, re-ranking, hydration, metrics and impressions cost.

Goals: ``p99_ms`` ≤ 10 at 500 req/s offered; ``ratio`` ≥ 0.6.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.load import client_process, get_request, post_request
from bench.processes import (
    TOKEN,
    drain,
    free_port,
    redis_latency_events,
    start_redis,
    start_server,
    stop_server,
    wait_ready,
)


def add_arguments(p) -> None:
    p.add_argument("--items", type=int, default=1_000_000, help="catalog size (default 1M)")
    p.add_argument("--rate", type=float, default=500.0, help="open-loop offered rate, requests/s")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per load phase")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    p.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="closed-loop outstanding requests (enough that every worker stays busy whichever worker "
        "accepted which connections)",
    )
    p.add_argument("--users", type=int, default=2000, help="users given a history before the run")
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers")
    p.add_argument(
        "--redis",
        action="store_true",
        help="user state in a local redis-server shared by the workers (then stored users' GETs work "
        "with several workers)",
    )
    p.add_argument(
        "--connections", type=int, default=32, help="keep-alive connections the client opens and rotates"
    )
    p.add_argument("--raw-seconds", type=float, default=5.0, help="seconds measuring the raw path")
    p.add_argument(
        "--reference-seconds",
        type=float,
        default=10.0,
        help="seconds of each latency reference: GET /healthz at --rate, the measured request at --rate/10",
    )
    p.add_argument(
        "--requests",
        choices=["auto", "user", "guest"],
        default="auto",
        help="user: GET a stored user's recommendations; guest: POST the history (auto: user with one "
        "worker, guest with several, whose in-process user states are not shared)",
    )
    p.add_argument(
        "--work-dir",
        default=os.environ.get("RELEVANCE_BENCH_DIR", str(Path(tempfile.gettempdir()) / "relevance-bench")),
        help="where the bench bundle is built and cached (default: RELEVANCE_BENCH_DIR or <tmp>/relevance-bench)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the bundle even if cached")
    p.add_argument(
        "--encoder",
        choices=["transformer", "mean"],
        default="transformer",
        help="the user tower's sequence encoder (transformer: the default model; mean: mean pooling, the "
        "light one — the price of the transformer on the request path)",
    )
    p.add_argument(
        "--user-tower-runtime",
        choices=["auto", "torchscript"],
        default="auto",
        help="RELEVANCE_USER_TOWER_RUNTIME for the server and the raw path (auto: ONNX Runtime when the "
        "bundle has user_encoder.onnx)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bundle and the request mix (default 0)")
    p.add_argument(
        "--compare-ranking",
        action="store_true",
        help="instead of the serve phases: what the ranking stage adds to p50, servers alternately with "
        "the stage on and off (RELEVANCE_RANKING_STAGE), same bundle, mix and rate",
    )
    p.add_argument(
        "--ab-repeats", type=int, default=3, help="servers per side with --compare-ranking (default 3)"
    )


# -- 1. the bundle ---------------------------------------------------------------------------------------------
def build_bundle(home: Path, n_items: int, seed: int = 0, encoder: str = "transformer") -> dict[str, Any]:
    """Generate, encode, export, index, assemble and publish a bundle of ``n_items`` into ``home``."""
    import pandas as pd
    import torch

    from relevance_core import bundle as B
    from relevance_core.features import FeatureEncoder
    from relevance_core.generator.catalog import build_catalog
    from relevance_core.generator.config import MarketplaceConfig
    from relevance_core.index import RECALL_TARGET, TUNING_MARGIN, build_index, tune_search
    from relevance_core.model.config import TwoTowerConfig
    from relevance_core.model.export import script_towers
    from relevance_core.model.onnx_encoder import export_user_encoder
    from relevance_core.model.towers import TwoTower
    from relevance_core.publishing import assemble_bundle
    from relevance_core.storage import LocalStore

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    cat = build_catalog(
        MarketplaceConfig(n_items=n_items, n_users=100, n_events=1000, seed=seed),
        np.random.default_rng(seed),
        0,
    )
    items = cat.to_table()
    timings = {"catalog_s": time.perf_counter() - t0}
    t = time.perf_counter()
    cfg = TwoTowerConfig(history_length=20, encoder=encoder)
    # every item counts as seen in training so the user tower knows every id (as it would after training)
    encoder = FeatureEncoder.fit(
        items, dict.fromkeys(items.column("item_id").to_pylist(), 1), history_length=20
    )
    model = TwoTower(cfg, encoder.sizes())
    model.set_catalog(encoder.encode_catalog(items), encoder.id_known_tensor())
    model.eval()
    timings["encode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model_dir = home.parent / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    user, item = script_towers(model)
    user.save(str(model_dir / B.USER_TOWER))
    item.save(str(model_dir / B.ITEM_TOWER))
    # what the service runs, as in a trained bundle
    export_user_encoder(model, model_dir, item_table=user.item_table)
    (model_dir / B.FEATURES).write_text(encoder.to_json())
    # the user tower's baked item table is the item tower over every vocabulary row (row 0 = padding)
    table = user.item_table.numpy()[1:]
    ids = encoder.item_ids
    timings["export_s"] = time.perf_counter() - t
    t = time.perf_counter()
    index = build_index(table, ids, seed=seed)
    # tuned like the faiss_index asset: on what the service searches with (user-tower vectors of
    # histories like the benchmark's users'), to the recall target plus the asset's margin
    rng = random.Random(seed + 1)
    histories = [
        [(i, "view", 60.0 * (10 - j)) for j, i in enumerate(rng.sample(ids, 10))] for _ in range(300)
    ]
    with torch.inference_mode():
        queries = user(*encoder.encode_histories(histories, 20)).numpy()
    tuned = tune_search(index, table, queries, k=100, target_recall=RECALL_TARGET + TUNING_MARGIN)
    timings["index_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ranking_dir = home.parent / "ranking"
    ranker_info = bench_ranking_stage(
        items, cat.pop_score, index, table, histories, queries, ranking_dir, seed
    )
    timings["ranking_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pop = pd.DataFrame(
        {"item_id": items.column("item_id").to_pylist(), "score": cat.pop_score.astype(float) * 100}
    )
    stage = Path(tempfile.mkdtemp(prefix="relevance-bench-bundle-", dir=home.parent)) / "bundle"
    manifest = assemble_bundle(
        stage,
        model_dir=model_dir,
        index=index,
        embeddings=table,
        items=items,
        popularity=pop,
        data={"source": "bench/serve.py", "n_items": n_items, "seed": seed},
        metrics={"recall_at_100_vs_exact": tuned["recall"]},
        ranking_dir=ranking_dir,
    )
    store = LocalStore(home)
    B.publish(store, stage, keep=1)
    shutil.rmtree(stage.parent, ignore_errors=True)
    timings["publish_s"] = time.perf_counter() - t
    return {
        "version": manifest.version,
        "index": index.describe(),
        "tuned": tuned.get("search_params"),
        "ranker": ranker_info,
        **timings,
    }


#: co-visitation neighbours per item in the bench bundle (the product keeps up to 50 per item that has any)
BENCH_COVISIT_M = 20


def bench_ranking_stage(items, pop_score, index, emb, histories, queries, dest: Path, seed: int) -> dict:
    """A ranking stage sized like a real one for the latency benchmark: a co-visitation table of
    ``BENCH_COVISIT_M`` neighbours per item (random items of the same top-level category: the generator
    has no sessions at this scale, and the cost depends on the table's shape, not on its content), item
    statistics from the generator's popularity, and a LightGBM ranker grown to the ranker's largest size
    (``RankerConfig.max_rounds`` trees of ``num_leaves`` leaves), so the measured cost is an upper bound."""
    import pyarrow as pa

    from relevance_core.ranking.batch import BatchInputs, history_of, query_blocks
    from relevance_core.ranking.covisit import Covisitation
    from relevance_core.ranking.ranker import RankerConfig
    from relevance_core.ranking.sources import ITEM_STATS_SCHEMA, ItemAttributes, PopularByCategory
    from relevance_core.ranking.stage import RankingStage, StageConfig

    rng = np.random.default_rng(seed)
    ids = [str(i) for i in index.item_ids.tolist()]
    stats = pa.table(
        {
            "item_id": ids,
            "interactions": (np.asarray(pop_score, np.float32) * 100),
            "recent_interactions": (np.asarray(pop_score, np.float32) * 10),
        },
        schema=ITEM_STATS_SCHEMA,
    )
    attrs = ItemAttributes.from_tables(ids, items, stats)
    n, m = len(ids), BENCH_COVISIT_M
    order = np.argsort(attrs.top_code, kind="stable")
    codes = attrs.top_code[order]
    start = np.searchsorted(codes, codes, side="left")
    size = np.searchsorted(codes, codes, side="right") - start
    pick = start[:, None] + (rng.random((n, m)) * size[:, None]).astype(np.int64)
    neighbors = np.empty((n, m), np.int32)
    neighbors[order] = order[pick].astype(np.int32)
    scores = np.sort(rng.random((n, m)).astype(np.float32), axis=1)[:, ::-1]
    covisit = Covisitation(
        np.arange(0, n * m + 1, m, dtype=np.int64), neighbors.ravel(), scores.ravel().copy()
    )
    cfg = StageConfig()
    stage = RankingStage(attrs, covisit, PopularByCategory.build(attrs, cfg.popular_k), None, cfg)
    row_of = {i: r for r, i in enumerate(ids)}
    hists = [
        history_of(row_of, [i for i, _, _ in h], [e for _, e, _ in h], [a for _, _, a in h])
        for h in histories
    ]
    ann = index.search(queries, cfg.ann_k).rows
    inp = BatchInputs(hists, queries, ann, emb, np.full(len(hists), time.time()))
    # the ranker's cost is trees x candidates, whatever it learnt: grow exactly RankerConfig.max_rounds
    # full trees (RankerConfig.num_leaves leaves) on graded random labels, so no early stop and no split
    # shortage makes the bench ranker smaller than the largest one training may ship
    import lightgbm as lgb

    from relevance_core.ranking.features import FEATURES
    from relevance_core.ranking.ranker import Ranker

    targets = np.asarray([ann[i][0] for i in range(len(hists))])
    blocks = query_blocks(stage, inp, targets, np.ones(len(hists)))
    rcfg = RankerConfig()
    X = np.concatenate([b.X for b in blocks])
    labels = rng.integers(0, 5, len(X))
    booster = lgb.train(
        {
            "objective": "lambdarank",
            "num_leaves": rcfg.num_leaves,
            "learning_rate": rcfg.learning_rate,
            "min_data_in_leaf": 5,
            "min_gain_to_split": 0.0,
            "num_threads": rcfg.num_threads,
            "seed": seed,
            "verbosity": -1,
        },
        lgb.Dataset(X, label=labels, group=[len(b.rows) for b in blocks], feature_name=list(FEATURES)),
        num_boost_round=rcfg.max_rounds,
    )
    stage.ranker = Ranker(booster, FEATURES)

    stage.save(dest, stats)
    return {"covisit_per_item": m, "ranker_trees": int(booster.num_trees()), "ranker_leaves": rcfg.num_leaves}


def ensure_bundle(
    work_dir: Path, n_items: int, rebuild: bool, seed: int, encoder: str = "transformer"
) -> tuple[Path, dict[str, Any]]:
    from relevance_core import bundle as B
    from relevance_core.storage import LocalStore

    home = (
        work_dir / (f"serve-{n_items}" if encoder == "transformer" else f"serve-{n_items}-{encoder}") / "home"
    )
    if not rebuild and home.exists():
        store = LocalStore(home)
        version = B.latest_version(store)
        if version:
            try:
                manifest = B.read_manifest(store, version)
                if manifest.n_items == n_items:
                    return home, {"version": version, "cached": True}
            except B.BundleError:
                pass
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    return home, {**build_bundle(home, n_items, seed, encoder), "cached": False}


def bundle_item_ids(home: Path) -> list[str]:
    """The item ids of the bundle ``LATEST`` names in the local store at ``home``."""
    import pyarrow.parquet as pq

    from relevance_core import bundle as B
    from relevance_core.storage import LocalStore

    store = LocalStore(home)
    bdir = store.local_dir(B.bundle_key(B.latest_version(store)))
    return pq.read_table(bdir / B.ITEM_IDS).column("item_id").to_pylist()


def user_histories(item_ids: list[str], n_users: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {f"bench-user-{u}": rng.sample(item_ids, 10) for u in range(n_users)}


def seed_users(url: str, histories: dict[str, list[str]]) -> None:
    import httpx

    events = [
        {"user_id": u, "item_id": i, "event_type": "view"} for u, items in histories.items() for i in items
    ]
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        for s in range(0, len(events), 1000):
            r = c.post("/v1/events", json={"events": events[s : s + 1000]})
            r.raise_for_status()


#: /proc/vmstat counters the meter reads each second: memory-management work that stops a process
#: without delaying an idle one (direct compaction for a huge page, direct reclaim, a page read from disk)
VMSTAT_COUNTERS = (
    "compact_stall",
    "allocstall_normal",
    "allocstall_movable",
    "pgmajfault",
    "thp_fault_alloc",
)


def _hiccup_process(q, seconds: float, nap: float = 0.002, watch: dict[str, list[int]] | None = None) -> None:
    """A process that only sleeps ``nap`` in a loop and notes each wake-up later than 1 ms: a stall the
    service, the client and this process share is the host's or the scheduler's, not the service's
    (the idea of jHiccup). Once a second it also reads the CPU time the hypervisor took from this VM
    (``steal`` in /proc/stat), which slows every process without delaying an idle one's wake-up much,
    and the kernel's memory-management counters (``VMSTAT_COUNTERS``), whose stalls hit only the
    process that allocates or faults; every 50 ms it times one pass over 16 MB (the memory probe).
    Puts ``(late, steal, vmstat, probe, cpu)``: lists of ``(perf_counter, seconds late)``,
    ``(perf_counter, steal share of CPU time)``, ``(perf_counter, {counter: increase})``,
    ``(perf_counter, seconds)``, and ``(perf_counter, {group: CPU seconds})`` for the ``watch`` groups of processes and the kernel's
    memory threads (``KERNEL_THREADS``): whether a slow second's workers were running (slowly) or
    waiting on something."""
    groups = {**(watch or {}), **_kernel_threads()}
    late: list[tuple[float, float]] = []
    steal: list[tuple[float, float]] = []
    vm: list[tuple[float, dict[str, int]]] = []
    # a memory probe: one pass over 16 MB (past this VM's 2 MB L2, half its 32 MB shared L3) every 50 ms.
    # It takes the same time whenever the host's memory system is as free as usual; when a neighbour
    # saturates it, this slows with the service's FAISS scans while the sleeps above stay on time
    probe = np.ones(4 << 20, dtype=np.float32)
    mem: list[tuple[float, float]] = []
    next_probe = 0.0
    end = time.perf_counter() + seconds
    last = (time.perf_counter(), _cpu_jiffies(), _vmstat(), _group_cpu(groups))
    cpu: list[tuple[float, dict[str, float]]] = []
    while (t := time.perf_counter()) < end:
        time.sleep(nap)
        woke = time.perf_counter()
        if woke - t - nap > 0.001:
            late.append((t, woke - t - nap))
        if woke >= next_probe:
            probe.sum()
            mem.append((woke, time.perf_counter() - woke))
            next_probe = woke + 0.05
        if woke - last[0] >= 1.0:
            now = (woke, _cpu_jiffies(), _vmstat(), _group_cpu(groups))
            if now[1] and last[1]:
                total = sum(now[1]) - sum(last[1])
                steal.append((last[0], (now[1][7] - last[1][7]) / total if total > 0 else 0.0))
            vm.append((last[0], {k: now[2][k] - last[2][k] for k in now[2] if k in last[2]}))
            cpu.append((last[0], {g: now[3][g] - last[3][g] for g in now[3] if g in last[3]}))
            last = now
    q.put((late, steal, vm, mem, cpu))


def _cpu_jiffies() -> list[int] | None:
    """The first line of /proc/stat (user nice system idle iowait irq softirq steal ...), None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


#: kernel threads whose CPU time the meter reads: reclaim, compaction, huge-page collapsing, and DAMON
#: (this VM's host runs a DAMON "pageout" scheme for cold page cache)
KERNEL_THREADS = ("kswapd", "kcompactd", "khugepaged", "kdamond")


def _kernel_threads() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            name = (d / "comm").read_text().strip()
        except OSError:
            continue
        for k in KERNEL_THREADS:
            if name.startswith(k):
                found.setdefault(k, []).append(int(d.name))
    return found


def _group_cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each group of processes."""
    return {g: cpu_seconds(pids) for g, pids in groups.items()}


def _vmstat() -> dict[str, int]:
    """The ``VMSTAT_COUNTERS`` this kernel has (empty off Linux)."""
    try:
        with open("/proc/vmstat") as f:
            pairs = (line.split() for line in f)
            return {k: int(v) for k, v in pairs if k in VMSTAT_COUNTERS}
    except (OSError, ValueError):
        return {}


def hiccups_by_second(late: list[tuple[float, float]], origin: float, seconds: int) -> list[float]:
    """The worst wake-up delay (ms) in each second from ``origin`` (aligned with ``p99_by_second_ms``)."""
    worst = [0.0] * seconds
    for t, d in late:
        s = int(t - origin)
        if 0 <= s < seconds:
            worst[s] = max(worst[s], round(d * 1000.0, 1))
    return worst


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (0 for one that is gone)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def server_pids(server_pid: int) -> list[int]:
    """The server's workers (and any other process it started)."""
    try:
        return [p.pid for p in _tree(server_pid)[1:]]
    except Exception:
        return []


def run_client(
    port: int,
    paths: list[bytes],
    mode: str,
    args,
    *,
    rate: float | None = None,
    duration: float | None = None,
    watch: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """One load phase in a fresh client process (``rate`` / ``duration`` override the arguments').
    ``watch``: named groups of processes whose CPU use over the phase is reported (``{name}_cpu_pct``,
    ``{name}_cpu_ms_per_request``)."""
    rate = args.rate if rate is None else rate
    duration = args.duration if duration is None else duration
    watched = {name: pids for name, pids in (watch or {}).items() if pids}
    cpu0 = {name: cpu_seconds(pids) for name, pids in watched.items()}
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(
        target=client_process,
        args=(
            q,
            port,
            paths,
            mode,
            rate,
            duration,
            args.warmup,
            args.concurrency,
            args.connections,
        ),
    )
    hq = ctx.Queue()
    meter = ctx.Process(target=_hiccup_process, args=(hq, args.warmup + duration + 5.0, 0.002, watched))
    meter.start()
    p.start()
    out = q.get(timeout=duration + args.warmup + 300)
    p.join(timeout=30)
    late, steal, vm, mem, cpu = hq.get(timeout=60)
    meter.join(timeout=30)
    wall = time.perf_counter() - t0
    for name, pids in watched.items():
        used = cpu_seconds(pids) - cpu0[name]
        # the phase's wall time includes the client's start and connection set-up: a slight undercount
        out[f"{name}_cpu_pct"] = round(100.0 * used / wall, 1)
        if out.get("answered_incl_warmup"):
            out[f"{name}_cpu_ms_per_request"] = round(1000.0 * used / out["answered_incl_warmup"], 3)
    if out.get("measured_from") is not None:
        origin, seconds = out["measured_from"], len(out["p99_by_second_ms"])
        out["host_hiccup_by_second_ms"] = hiccups_by_second(late, origin, seconds)
        out["host_hiccup_max_ms"] = max(out["host_hiccup_by_second_ms"], default=0.0)
        # the CPU share the hypervisor took, per second of the measured window (percent of both cores)
        by_second = [round(100.0 * share, 1) for t, share in steal if 0 <= t - origin < seconds]
        out["host_steal_by_second_pct"] = by_second
        out["host_steal_pct"] = round(sum(by_second) / len(by_second), 1) if by_second else None
        # the memory probe's median time per second (a whole-host memory slowdown shows in every process)
        out["host_memory_probe_by_second_ms"] = [
            round(1000.0 * float(np.median(x)), 2)
            if (x := [d for t, d in mem if int(t - origin) == s])
            else None
            for s in range(seconds)
        ]
        # CPU use per second (percent of one core) of the watched processes and the kernel's memory threads
        out["cpu_by_second_pct"] = {
            g: [round(100.0 * c.get(g, 0.0), 0) for t, c in cpu if 0 <= t - origin < seconds]
            for g in sorted({g for _, c in cpu for g in c})
            if any(c.get(g, 0.0) for _, c in cpu)
        }
        # memory-management events per second, only the counters that moved
        window = [counts for t, counts in vm if 0 <= t - origin < seconds]
        out["host_vmstat_by_second"] = {
            k: [c.get(k, 0) for c in window] for k in VMSTAT_COUNTERS if any(c.get(k, 0) for c in window)
        }
    return out


# -- 4. the in-process raw path ------------------------------------------------------------------------------------
def raw_path_rps(
    home: Path, histories: dict[str, list[str]], seconds: float, runtime: str = "auto"
) -> dict[str, Any]:
    import faiss
    import torch

    from relevance_core import bundle as B
    from relevance_core.storage import LocalStore
    from relevance_service.serving_bundle import ServingBundle
    from relevance_service.settings import ServiceSettings

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    store = LocalStore(home)
    path, manifest = B.fetch(store, B.latest_version(store))
    settings = ServiceSettings(user_tower_runtime=runtime)
    b = ServingBundle.load(path, manifest, settings=settings, verify=False)
    k = settings.candidates_k
    hists = [[(i, "view", 60.0 * (j + 1)) for j, i in enumerate(h)] for h in histories.values()]
    for h in hists[:20]:
        b.search(b.user_vector(h), k)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b.search(b.user_vector(hists[n % len(hists)]), k)
        n += 1
    elapsed = time.perf_counter() - t0
    return {
        "raw_path_rps": round(n / elapsed, 1),
        "raw_path_ms": round(1000 * elapsed / n, 3),
        **ranker_cost(b, hists, seconds),
        "k": k,
        "search": {"nprobe": b.default_breadth.nprobe},
        "user_tower_runtime": b.user_tower_runtime,
    }


def ranker_cost(b, hists: list, seconds: float) -> dict[str, Any]:
    """What the ranking stage adds to one personalised request, in process on one thread: the sources'
    candidates, their features and the ranker's scores for the ANN's top ``candidates_k`` (the
    ``Recommender`` does exactly this between the filters and the rules)."""

    from relevance_core.ranking.batch import history_of

    stage = b.ranking
    if stage is None or stage.ranker is None:
        return {"ranker_us_per_request": None}
    k = 500
    prepared = []
    for h in hists[: min(len(hists), 500)]:
        q = b.user_vector(h)
        ann = b.search(q, k)[1]
        hist = history_of(b.row_of, [i for i, _, _ in h], [e for _, e, _ in h], [a for _, _, a in h])
        prepared.append((hist, ann, q))
    now = time.time()

    def one(hist, ann, q) -> int:
        ctx = stage.context(hist)
        rows = stage.candidates(hist, ann, ctx)
        stage.score(hist, rows, ann, q, b.embeddings.__getitem__, now, ctx)
        return len(rows)

    for p in prepared[:20]:
        one(*p)
    n, cands, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        cands += one(*prepared[n % len(prepared)])
        n += 1
    elapsed = time.perf_counter() - t0
    return {
        "ranker_us_per_request": round(1e6 * elapsed / n, 1),
        "ranker_candidates_per_request": round(cands / n, 1),
        "ranker_trees": int(stage.ranker.booster.num_trees()),
    }


def request_paths(requests: str, histories: dict[str, list[str]]) -> list[bytes]:
    """The request mix: every seeded user (GET by id, or the history POSTed as a guest) plus one
    anonymous request per nine users."""
    users = list(histories)
    anon = [f"anon-{i}" for i in range(len(users) // 9)]
    if requests == "user":
        paths = [get_request(f"/v1/users/{u}/recommendations?k=20") for u in users + anon]
    else:  # guest: the history travels in the body, so any worker can answer it
        paths = [
            post_request("/v1/recommendations", {"k": 20, "history": [{"item_id": i} for i in histories[u]]})
            for u in users
        ] + [post_request("/v1/recommendations", {"k": 20, "history": []}) for _ in anon]
    return paths


def ranking_ab(args, home: Path, histories: dict[str, list[str]], work: Path) -> dict[str, Any]:
    """What the ranking stage adds to latency, A/B on one bundle: servers started alternately with the
    stage on and off (``RELEVANCE_RANKING_STAGE``), ``--ab-repeats`` times each, every one seeded with
    the same users and measured with the same request mix at the same offered rate (``--rate``) and at a
    tenth of it (nothing queues: the service time). Medians of the repeats, and the worst."""
    requests = args.requests if args.requests != "auto" else "user"
    paths = request_paths(requests, histories)
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for _ in range(args.ab_repeats):
        for stage in ("on", "off"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log_path = work / f"server-ranking-{stage}.log"
            env = {
                "RELEVANCE_USER_TOWER_RUNTIME": args.user_tower_runtime,
                "RELEVANCE_RANKING_STAGE": "1" if stage == "on" else "0",
            }
            proc = start_server(home, port, 1, log_path, env=env)
            try:
                wait_ready(url, proc, log_path)
                seed_users(url, histories)
                loaded = run_client(port, paths, "open", args, watch={"server": server_pids(proc.pid)})
                drain(url)
                unloaded = run_client(
                    port, paths, "open", args, rate=args.rate / 10, duration=args.reference_seconds
                )
            finally:
                stop_server(proc)
            runs[stage].append(
                {
                    "p50_ms": loaded["p50_ms"],
                    "p99_ms": loaded["p99_ms"],
                    "errors": loaded["errors"],
                    "personalized_share": loaded["personalized_share"],
                    "unloaded_p50_ms": unloaded["p50_ms"],
                    "server_cpu_ms_per_request": loaded.get("server_cpu_ms_per_request"),
                }
            )

    def summary(stage: str, key: str) -> dict[str, float]:
        values = [r[key] for r in runs[stage]]
        return {"median": round(statistics.median(values), 3), "worst": round(max(values), 3)}

    out: dict[str, Any] = {
        stage: {key: summary(stage, key) for key in ("p50_ms", "p99_ms", "unloaded_p50_ms")} for stage in runs
    }
    for key in ("p50_ms", "unloaded_p50_ms"):
        out[f"added_{key}"] = round(out["on"][key]["median"] - out["off"][key]["median"], 3)
    cpu = {stage: [r["server_cpu_ms_per_request"] for r in rs] for stage, rs in runs.items()}
    if all(v is not None for vs in cpu.values() for v in vs):
        out["added_server_cpu_ms_per_request"] = round(
            statistics.median(cpu["on"]) - statistics.median(cpu["off"]), 3
        )
    out["errors"] = sum(r["errors"] for rs in runs.values() for r in rs)
    out["personalized_share"] = min(r["personalized_share"] for rs in runs.values() for r in rs)
    out["runs"] = runs
    return out


# -- entry point -----------------------------------------------------------------------------------------------------
def run(args) -> dict[str, Any]:
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    home, build = ensure_bundle(work, args.items, args.rebuild, args.seed, args.encoder)
    print(f"bundle ready in {time.perf_counter() - t0:.1f}s: {build}", file=sys.stderr)
    ids = bundle_item_ids(home)
    histories = user_histories(ids, args.users, args.seed)
    del ids
    if args.compare_ranking:
        ab = ranking_ab(args, home, histories, work)
        raw = raw_path_rps(home, histories, args.raw_seconds, args.user_tower_runtime)
        return {
            "bench": "serve",
            "mode": "compare-ranking",
            "items": args.items,
            "offered_rps": args.rate,
            "repeats": args.ab_repeats,
            "ranker_added_p50_ms": ab["added_p50_ms"],
            "ranker_added_unloaded_p50_ms": ab["added_unloaded_p50_ms"],
            "ranker_us_per_request": raw.get("ranker_us_per_request"),
            "ranking_ab": ab,
            "raw_path": raw,
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "bundle": build,
            "goals": {"ranker_added_p50_ms_max": 1.0},
        }
    # user state lives in each worker's memory (a shared store such as Redis would serve several), so with
    # several workers stored-history requests would mostly land on a worker that never saw the user's
    # events and be answered by the cheap popular fallback: those runs post the history instead
    shared = args.workers == 1 or args.redis
    requests = args.requests if args.requests != "auto" else ("user" if shared else "guest")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work / "server.log"
    redis_proc, env = None, {"RELEVANCE_USER_TOWER_RUNTIME": args.user_tower_runtime}
    if args.redis:
        redis_proc, env["RELEVANCE_REDIS_URL"] = start_redis(work / "redis")
    proc = start_server(home, port, args.workers, log_path, env=env)
    try:
        t = time.perf_counter()
        wait_ready(url, proc, log_path, workers=args.workers)
        startup_s = time.perf_counter() - t
        seed_users(url, histories)
        paths = request_paths(requests, histories)
        # the CPU the workers and Redis spend per answered request (the client's own is client_cpu_pct)
        watch = {"server": server_pids(proc.pid), "redis": [redis_proc.pid] if redis_proc else []}
        open_loop = run_client(port, paths, "open", args, watch=watch)
        if redis_proc is not None:
            open_loop["redis_slow_events"] = redis_latency_events(env["RELEVANCE_REDIS_URL"])
        drain(url)
        # references for reading p99, same server, same minutes: the harness + host floor (a trivial route
        # at the offered rate) and the unloaded latency (the measured request at a tenth of the rate, so
        # nothing queues): what is left between those and p99 is queueing
        floor = run_client(port, [get_request("/healthz")], "open", args, duration=args.reference_seconds)
        drain(url)
        unloaded = run_client(port, paths, "open", args, rate=args.rate / 10, duration=args.reference_seconds)
        drain(url)
        closed_loop = run_client(port, paths, "closed", args, watch=watch)
        memory = _memory_mb(proc.pid)
    finally:
        stop_server(proc)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
    raw = raw_path_rps(home, histories, args.raw_seconds, args.user_tower_runtime)
    rps = closed_loop["rps"]
    return {
        "bench": "serve",
        "items": args.items,
        "p50_ms": open_loop["p50_ms"],
        "p99_ms": open_loop["p99_ms"],
        "rps": rps,
        "errors": open_loop["errors"] + closed_loop["errors"],
        "raw_path_rps": raw["raw_path_rps"],
        "ratio": round(rps / raw["raw_path_rps"], 3) if raw["raw_path_rps"] else None,
        "offered_rps": args.rate,
        "open_loop_rps": open_loop["rps"],
        "client_cpu_pct": open_loop["client_cpu_pct"],
        "server_cpu_ms_per_request": open_loop.get("server_cpu_ms_per_request"),
        "redis_cpu_ms_per_request": open_loop.get("redis_cpu_ms_per_request"),
        "floor_p99_ms": floor["p99_ms"],
        "host_hiccup_max_ms": open_loop.get("host_hiccup_max_ms"),
        "host_steal_pct": open_loop.get("host_steal_pct"),
        "unloaded_p50_ms": unloaded["p50_ms"],
        "unloaded_p99_ms": unloaded["p99_ms"],
        "open_loop": open_loop,
        "floor": {**floor, "path": "/healthz", "offered_rps": args.rate},
        "unloaded": {**unloaded, "offered_rps": args.rate / 10},
        "closed_loop": {**closed_loop, "concurrency": args.concurrency},
        "raw_path": raw,
        "workers": args.workers,
        "encoder": args.encoder,
        "user_tower_runtime": raw["user_tower_runtime"],
        "user_state": "redis" if args.redis else "in-process",
        "requests": requests,
        "personalized_share": open_loop["personalized_share"],
        "server_startup_s": round(startup_s, 2),
        **memory,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "bundle": build,
        "goals": {"p99_ms_max": 10.0, "ratio_min": 0.6},
    }


def _tree(pid: int) -> list:
    import psutil

    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


def _rss_mb(pid: int) -> float | None:
    """RSS of the server and its workers: pages they share (the memory-mapped index and embeddings)
    count once per worker."""
    try:
        return round(sum(p.memory_info().rss for p in _tree(pid)) / 2**20, 1)
    except Exception:
        return None


def _memory_mb(pid: int) -> dict[str, float | None]:
    """RSS and PSS of the server and its workers: PSS splits each shared page among the processes
    that map it, so its sum is what the service really holds."""
    try:
        pss = round(sum(p.memory_full_info().pss for p in _tree(pid)) / 2**20, 1)
    except Exception:
        pss = None
    return {"server_rss_mb": _rss_mb(pid), "server_pss_mb": pss}
