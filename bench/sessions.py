"""Session-based recommendation benchmark (DIGINETICA-style split) through the product's own pipeline.

``relevance bench sessions --train TRAIN.csv --test TEST.tsv --predictions OUT.tsv [--k 20] [--config F]``

1. the training sessions become canonical landing events and a catalog (``session_bench.convert``);
2. the code location's assets run on them in-process (``bench/session_pipeline.py``): items, raw_events,
   sessions, training_pairs, two_tower_model, item_embeddings, faiss_index, learned_ranker;
3. every test row, in order, is answered by the exported user tower, the FAISS index, the candidate
   sources and the ranker, exactly as the service would (``session_bench.predictions``; seen items
   allowed: the protocol's answer may be in the prefix); OUT.tsv gets one line
   per row, k ids best first;
4. the popularity and session-kNN baselines are scored in the same run by the project's evaluation code,
   so the model's number always comes with the references it has to beat on this machine.

``--validate`` answers a validation split carved from the END of the training sessions instead of the
test file: hyper-parameters are chosen with it, never with the test file. The last JSON line has HR@20,
MRR@20 (%), item/session/row counts, wall and training seconds, the hardware and the baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

#: The settings a run starts from; a ``--config`` file overrides them per section (see configs/).
DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "start_date": "2026-01-01",
        "sessions_per_day": 10_000,
        "event_spacing_s": 60.0,
        "catalog_title": "item",
        # last share of the training sessions the pipeline keeps as its validation split (early stopping)
        "pipeline_validation_fraction": 0.02,
    },
    "tuning": {"validation_fraction": 0.1},
    # session data: short prefixes (DIGINETICA's average ~3 clicks), so 10 covers almost all of them
    "pairs": {"history_length": 10},
    # what fits session data on a CPU, chosen on DIGINETICA's validation split (docs/session_benchmark.md);
    # the item tower goes ID-only by itself, as these files carry no item content
    "model": {
        "encoder": "transformer",
        "n_layers": 1,
        "temperature": 0.07,
        "batch_size": 2048,
        "lr": 0.005,
        "max_epochs": 10,
        "patience": 2,
        "max_val_examples": 10_000,
        "num_threads": 2,
        "progress_bar": False,
    },
    "index": {"factory": "Flat"},
    # the learned_ranker asset's run config (LearnedRankerConfig)
    "ranker": {},
    "knn": {},
    # no console progress bars: twenty backfill days of them bury the result in a log file
    "spark": {"spark.ui.showConsoleProgress": "false"},
}
METRIC_K = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="training sessions: one per line, comma-separated ids")
    parser.add_argument(
        "--test", help="test rows: TSV with header prefix<TAB>label (not needed with --validate)"
    )
    parser.add_argument("--predictions", required=True, help="output TSV: one line per test row, k ids")
    parser.add_argument("--k", type=int, default=20, help="ids written per row (default 20)")
    parser.add_argument("--config", help="TOML config (e.g. configs/diginetica.toml); defaults otherwise")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (JSON value), e.g. --set model.max_epochs=1",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="answer the validation split carved from the end of --train instead of --test",
    )
    parser.add_argument("--workdir", help="artifact store for the run (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Dagster run logs at DEBUG, and every library's output on the terminal (default: in the log file)",
    )
    parser.add_argument(
        "--log-file", help="where Spark, Dagster and Lightning output goes (default: .relevance/logs/)"
    )
    parser.add_argument("--skip-baselines", action="store_true", help="do not score popularity / session-kNN")


def load_config(path: str | None, overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """DEFAULTS, then the TOML file's sections, then ``--set`` overrides; unknown sections are errors."""
    cfg = {section: dict(values) for section, values in DEFAULTS.items()}
    if path:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        for section, values in data.items():
            if section not in cfg or not isinstance(values, dict):
                raise ValueError(f"{path}: unknown config section [{section}]")
            cfg[section].update(values)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in cfg:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION in {sorted(cfg)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        cfg[section][name] = value
    cfg["model"].setdefault("history_length", cfg["pairs"].get("history_length", 20))
    return cfg


def hardware() -> dict[str, Any]:
    """What the numbers were measured on (the machines are shared: say which)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict[str, Any] = {"cpu": cpu, "cpu_threads": os.cpu_count()}
    try:
        out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - hardware info is best effort
        out["gpu"] = None
    return out


def _write_predictions(path: str, lists: list[list[str]]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text("".join(",".join(row) + "\n" for row in lists), encoding="utf-8")
    os.replace(tmp, p)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark, with the pipeline's own output (Spark, Dagster, Lightning) in a log file."""
    from relevance_cli.console import console, default_log_path

    log_path = Path(args.log_file) if getattr(args, "log_file", None) else default_log_path("bench-sessions")
    if not getattr(args, "verbose", False):
        print(f"[bench sessions] details in {log_path}", file=sys.stderr, flush=True)
    with console(log_path, verbose=getattr(args, "verbose", False)) as out:
        return _run(args, out)


def _run(args: argparse.Namespace, out) -> dict[str, Any]:
    from bench.session_pipeline import run_pipeline
    from relevance_core.session_bench import convert, validation
    from relevance_core.session_bench.predictions import hit_and_mrr, serve_predictions

    t_start = time.perf_counter()
    cfg = load_config(args.config, args.set)
    data = cfg["data"]
    sessions = convert.read_sessions(args.train)
    if args.validate:
        train, prefixes, labels = validation.validation_split(
            sessions, float(cfg["tuning"]["validation_fraction"])
        )
        split = "validation"
    else:
        if not args.test:
            raise SystemExit("--test is required unless --validate")
        train = sessions
        prefixes, labels = convert.read_test(args.test)
        split = "test"
    k_out = max(int(args.k), 1)
    k_search = max(k_out, METRIC_K)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="relevance-session-bench-"))
    try:
        frac = float(data["pipeline_validation_fraction"])
        n_val = round(len(train) * frac) if frac > 0 else 0
        layout = convert.write_landing(
            _store(work),
            train,
            validation_sessions=n_val,
            start_date=str(data["start_date"]),
            sessions_per_day=int(data["sessions_per_day"]),
            event_spacing_s=float(data["event_spacing_s"]),
            catalog_title=str(data["catalog_title"]),
        )
        t_conv = time.perf_counter() - t_start
        pipe = run_pipeline(
            work,
            layout,
            pairs_config=cfg["pairs"],
            model_config=cfg["model"],
            index_config=cfg["index"],
            ranker_config=cfg["ranker"],
            spark_config={str(k): str(v) for k, v in cfg["spark"].items()},
            progress=out.step,
            log_level="DEBUG" if getattr(args, "verbose", False) else "WARNING",
        )
        t0 = time.perf_counter()
        orders = serve_predictions(pipe.store, pipe.model_version, prefixes, k_search, layout.event_spacing_s)
        serve_s = time.perf_counter() - t0
        lists = orders["served"]
        _write_predictions(args.predictions, [row[:k_out] for row in lists])
        hr, mrr = hit_and_mrr(lists, labels, METRIC_K)
        by_source = {}
        for name, source_lists in orders.items():
            s_hr, s_mrr = hit_and_mrr(source_lists, labels, METRIC_K)
            by_source[name] = {"HR@20": s_hr, "MRR@20": s_mrr}
        pipeline_s = time.perf_counter() - t_start

        baselines = {} if args.skip_baselines else _baselines(pipe.store, train, prefixes, labels, cfg["knn"])
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    items = len({i for s in train for i in s})
    result: dict[str, Any] = {
        "benchmark": "sessions",
        "split": split,
        "HR@20": hr,
        "MRR@20": mrr,
        "k": k_out,
        "items": items,
        "sessions": len(train),
        "test_rows": len(labels),
        # the same bundle without its ranking stage (the two-tower ANN order), and each source alone
        "retrieval_only": by_source["retrieval_only"],
        "sources": {name: v for name, v in by_source.items() if name not in ("served", "retrieval_only")},
        "ranker": {
            key: pipe.ranker.get(key)
            for key in ("ranker_shipped", "gate", "candidate_recall", "rounds", "feature_gain")
            if key in pipe.ranker
        },
        "pairs": pipe.pairs,
        "wall_s": round(pipeline_s, 1),
        "train_s": round(pipe.seconds.get("train", 0.0), 1),
        "seconds": {
            "convert": round(t_conv, 1),
            **{k: round(v, 1) for k, v in pipe.seconds.items()},
            "serve": round(serve_s, 1),
        },
        "serve_rows_per_s": round(len(labels) / serve_s, 1) if serve_s > 0 else None,
        "hardware": hardware(),
        "model": {
            "version": pipe.model_version,
            "epochs": pipe.model_metrics.get("epochs"),
            "samples_per_s": pipe.model_metrics.get("samples_per_s"),
            "pipeline_validation_hr_at_20": pipe.model_metrics.get("hr_at_20"),
            "softmax": pipe.model_metrics.get("softmax"),
            "encoder": pipe.model_metrics.get("encoder"),
        },
        "index": {"factory": pipe.index_meta.get("factory"), "recall": pipe.index_meta.get("recall")},
        "baselines": baselines,
        "config": cfg,
        "predictions": str(args.predictions),
    }
    if "session_knn" in baselines:
        ref = baselines["session_knn"]
        result["hr_ratio_vs_session_knn"] = round(hr / ref["HR@20"], 4) if ref["HR@20"] else None
        result["mrr_ratio_vs_session_knn"] = round(mrr / ref["MRR@20"], 4) if ref["MRR@20"] else None
        result["gate"] = gate({"HR@20": hr, "MRR@20": mrr}, baselines)
        if not result["gate"]["beats_session_knn"]:
            out.step(
                f"gate: the model ({hr} / {mrr}) does not beat session-kNN "
                f"({ref['HR@20']} / {ref['MRR@20']}) on HR@20 and MRR@20"
            )
    return result


def _baselines(store, train, prefixes, labels, knn_config) -> dict[str, dict[str, Any]]:
    """Popularity (from the pipeline's own train split) and session-kNN (from the training sessions),
    scored on the same rows with the same metric functions; each with its seconds."""
    from relevance_core.evaluation.baselines import PopularityRecommender
    from relevance_core.evaluation.runner import load_pairs
    from relevance_core.session_bench.knn import SessionKNN, default_knn_config
    from relevance_core.session_bench.predictions import hit_and_mrr

    def scored(lists, t0: float) -> dict[str, Any]:
        hr, mrr = hit_and_mrr(lists, labels, METRIC_K)
        return {"HR@20": hr, "MRR@20": mrr, "seconds": round(time.perf_counter() - t0, 1)}

    t0 = time.perf_counter()
    pop = PopularityRecommender.fit(load_pairs(store, "train", ["target_item_id", "target_weight"]))
    out = {"popularity": scored(pop.recommend(prefixes, METRIC_K, exclude_seen=False), t0)}
    t0 = time.perf_counter()
    knn = SessionKNN(train, default_knn_config(knn_config))
    out["session_knn"] = scored(knn.recommend(prefixes, METRIC_K), t0)
    return out


def gate(model: dict[str, float], baselines: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """The same rule the offline_evaluation gate applies to a bundle: the model must beat a baseline on
    HR@20 *and* MRR@20 (a tie is not a win); a neural model that does not beat the one-minute
    co-occurrence baseline is not worth shipping."""

    def beats(name: str) -> bool:
        ref = baselines.get(name)
        return bool(ref) and model["HR@20"] > ref["HR@20"] and model["MRR@20"] > ref["MRR@20"]

    return {"beats_session_knn": beats("session_knn"), "beats_popularity": beats("popularity")}


def _store(path: Path):
    from relevance_core.storage import LocalStore

    return LocalStore(path)
