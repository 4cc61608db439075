"""``relevance bench sessions`` on a slice of the real DIGINETICA split, end to end through the product's
pipeline (ingestion → Spark sessions/pairs → Lightning → item embeddings → FAISS → exported user tower).

The slice is the LAST 3,000 training sessions (the ones closest in time to the test period, so the test
rows' items were mostly seen) and the first 500 test rows, written to temp files in the benchmark
format. Training is shrunk through the command's own ``--set`` overrides so the test stays well under two
minutes; the full run's configuration is ``configs/diginetica.toml``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "diginetica.toml"
N_SESSIONS = 3_000
N_ROWS = 500

#: Small but real training: ~500 steps of 64, what a model needs to learn the slice's co-visitation
#: structure (measured: it then beats popularity several times over; 80 bigger steps do not).
FAST = [
    "model.max_epochs=3",
    "model.batch_size=64",
    "model.lr=0.005",
    "model.dim=32",
    "model.hidden=32",
    "model.max_val_examples=1000",
    "data.pipeline_validation_fraction=0",  # one landing day: one raw_events run
]


@pytest.fixture(scope="module")
def bench_slice(tmp_path_factory, diginetica_dir):
    d = tmp_path_factory.mktemp("session-bench")
    lines = (diginetica_dir / "benchmark" / "train_sessions.csv").read_text().splitlines()
    (d / "train.csv").write_text("\n".join(lines[-N_SESSIONS:]) + "\n")
    test = (diginetica_dir / "benchmark" / "test.tsv").read_text().splitlines()
    (d / "test.tsv").write_text("\n".join(test[: N_ROWS + 1]) + "\n")
    return d


def _run(argv, capsys) -> dict:
    from relevance_cli.main import main

    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])  # the benchmark contract: one JSON object, last line


def test_bench_sessions_on_a_slice(spark, bench_slice, capsys, tmp_path):
    pred = tmp_path / "out.tsv"
    argv = [
        "bench",
        "sessions",
        "--train",
        str(bench_slice / "train.csv"),
        "--test",
        str(bench_slice / "test.tsv"),
    ]
    argv += ["--predictions", str(pred), "--k", "20", "--config", str(CONFIG)]
    argv += ["--log-file", str(tmp_path / "bench.log")]
    for s in FAST:
        argv += ["--set", s]
    result = _run(argv, capsys)
    # the pipeline's own output (Spark, Dagster, Lightning) went to the log file, step lines included
    assert "=== materializing" in (tmp_path / "bench.log").read_text()

    # the output file: one line per test row, in order, k distinct known ids best first
    rows = pred.read_text().splitlines()
    assert len(rows) == N_ROWS
    train_items = {i for line in (bench_slice / "train.csv").read_text().split() for i in line.split(",")}
    for row in rows:
        ids = row.split(",")
        assert len(ids) == 20 and len(set(ids)) == 20
        assert set(ids) <= train_items

    # the JSON contract
    for key in (
        "HR@20",
        "MRR@20",
        "items",
        "sessions",
        "test_rows",
        "wall_s",
        "train_s",
        "hardware",
        "baselines",
    ):
        assert key in result, key
    assert result["test_rows"] == N_ROWS and result["sessions"] == N_SESSIONS
    assert result["items"] == len(train_items)
    assert result["hardware"]["cpu_threads"] >= 1 and "gpu" in result["hardware"]
    assert 0.0 <= result["MRR@20"] <= result["HR@20"] <= 100.0
    assert result["split"] == "test" and result["index"]["factory"] == "Flat"

    # the metrics agree with the file (computed independently here)
    labels = [line.split("\t")[1] for line in (bench_slice / "test.tsv").read_text().splitlines()[1:]]
    hits = [
        row.split(",").index(lab) + 1 if lab in row.split(",") else 0
        for row, lab in zip(rows, labels, strict=True)
    ]
    assert result["HR@20"] == pytest.approx(100 * sum(h > 0 for h in hits) / N_ROWS, abs=0.01)
    assert result["MRR@20"] == pytest.approx(100 * sum(1 / h for h in hits if h) / N_ROWS, abs=0.01)

    # no validation day in this slice: no ranker is trained, so the served order is the retrieval order,
    # and each candidate source is scored alone beside it
    assert result["ranker"]["ranker_shipped"] is False
    assert result["retrieval_only"] == {"HR@20": result["HR@20"], "MRR@20": result["MRR@20"]}
    assert set(result["sources"]) == {"covisit", "history", "popular", "union"}
    assert result["sources"]["covisit"]["HR@20"] > 0 and result["sources"]["history"]["HR@20"] > 0

    # the model is worth something: it beats popularity, measured in the same run
    pop = result["baselines"]["popularity"]
    assert result["HR@20"] > pop["HR@20"] and result["MRR@20"] > pop["MRR@20"]
    assert result["baselines"]["session_knn"]["HR@20"] > pop["HR@20"]
    assert result["gate"]["beats_popularity"] is True
    assert set(result["gate"]) == {"beats_session_knn", "beats_popularity"}


def test_validation_split_comes_from_the_end_of_training(bench_slice):
    from relevance_core.session_bench import convert, validation

    sessions = convert.read_sessions(bench_slice / "train.csv")
    train, prefixes, labels = validation.validation_split(sessions, 0.1)
    assert train == sessions[: len(train)] and len(sessions) - len(train) == 300
    known = {i for s in train for i in s}
    assert prefixes and len(prefixes) == len(labels)
    assert all(lab in known and all(i in known for i in p) for p, lab in zip(prefixes, labels, strict=True))
    # every held-out session of length n (after dropping unknown items) gives n-1 rows, longest first
    held = [[i for i in s if i in known] for s in sessions[len(train) :]]
    assert len(labels) == sum(max(len(s) - 1, 0) for s in held)
    first = next(s for s in held if len(s) > 1)
    assert prefixes[0] == first[:-1] and labels[0] == first[-1]


def test_converted_events_keep_the_click_order(tmp_path):
    import pyarrow.parquet as pq

    from relevance_core.session_bench import convert
    from relevance_core.storage import LocalStore

    store = LocalStore(tmp_path)
    sessions = [["a", "b", "a"], ["c"], ["b", "c", "d", "e"]]
    layout = convert.write_landing(store, sessions, validation_sessions=1, sessions_per_day=2)
    assert layout.days == ["2026-01-01", "2026-01-02"] and layout.validation_start == "2026-01-02"
    assert layout.test_start == "2026-01-03" and layout.items == 5
    t = pq.read_table(store.path(layout.landing_keys[0])).to_pylist()
    by_session: dict[str, list] = {}
    for r in t:
        assert r["user_id"] is None and r["event_type"] == "view"
        by_session.setdefault(r["session_id"], []).append((r["timestamp"], r["item_id"]))
    assert [i for _, i in sorted(by_session["s0"])] == ["a", "b", "a"]
    ts = sorted(by_session["s0"])
    gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(ts, ts[1:], strict=False)]
    assert all(0 < g < 1800 for g in gaps)  # ordered and never cut by the 30-minute session gap
    assert convert.history_ages(3, layout.event_spacing_s) == [3 * gaps[0], 2 * gaps[0], gaps[0]]
