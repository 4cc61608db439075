"""Real Lightning training on small constructed data: overfitting, cold start, seeding, DDP, artifacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from relevance_core.model.config import TwoTowerConfig
from relevance_core.model.synthetic import make_marketplace, write_pairs
from relevance_core.model.train import save_artifacts, train_two_tower

ROOT = Path(__file__).resolve().parents[2]
# small enough to train in seconds on 2 busy cores, big enough to learn the planted structure
FAST = dict(
    dim=32,
    emb_dim=16,
    hidden=32,
    n_layers=1,
    title_buckets=1024,
    max_title_tokens=12,
    batch_size=128,
    lr=5e-3,
    progress_bar=False,
    num_threads=1,
    max_val_examples=2000,
)


@pytest.fixture(scope="module")
def marketplace():
    return make_marketplace("tiny")


@pytest.fixture(scope="module")
def trained(marketplace, tmp_path_factory):
    pairs, items = marketplace
    cfg = TwoTowerConfig(**FAST, max_epochs=4, patience=4)
    return train_two_tower(pairs, items, cfg, work_dir=tmp_path_factory.mktemp("train"))


def _ring_pairs(n: int = 30, copies: int = 4) -> tuple[pa.Table, pd.DataFrame]:
    """history [i] → target i+1 (mod n): a deterministic next-item map a model can memorise."""
    items = pd.DataFrame(
        {
            "item_id": [f"r{i}" for i in range(n)],
            "title": [f"thing {i}" for i in range(n)],
            "category_path": [f"C{i % 3} > S{i % 6}" for i in range(n)],
            "price": [float(10 + i) for i in range(n)],
            "brand": [f"b{i % 5}" for i in range(n)],
        }
    )
    rows = []
    for split, k in (("train", copies), ("validation", 1)):
        for _ in range(k):
            for i in range(n):
                rows.append(
                    {
                        "hist_item_ids": [f"r{i}"],
                        "hist_event_types": ["view"],
                        "hist_age_s": [60.0],
                        "target_item_id": f"r{(i + 1) % n}",
                        "target_weight": 1.0,
                        "split": split,
                    }
                )
    return pa.Table.from_pylist(rows), items


def test_overfits_a_tiny_dataset_to_recall_at_10_of_one(tmp_path):
    pairs, items = _ring_pairs()
    cfg = TwoTowerConfig(
        **{**FAST, "batch_size": 40, "lr": 1e-2},
        dropout=0.0,
        id_dropout=0.0,
        softmax="full",
        temperature=0.1,
        max_epochs=60,
        patience=8,
        recall_k=10,
    )
    result = train_two_tower(pairs, items, cfg, work_dir=tmp_path)
    assert result.metrics["softmax"] == "full"
    assert result.metrics["hr_at_10"] == 1.0, result.history[-3:]


def test_trains_beyond_popularity_and_exports(trained, tmp_path):
    m = trained.metrics
    assert m["eval_examples"] > 100
    assert m["hr_at_20"] > 1.5 * m["popularity_hr_at_20"], m
    assert len(trained.history) >= 1 and "val_recall_at_20" in trained.history[0]
    paths = save_artifacts(trained, tmp_path)
    for name in ("checkpoint", "user_tower", "item_tower", "features", "metrics", "curve"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name
    assert paths["curve"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["metrics"].read_text())["hr_at_20"] == m["hr_at_20"]
    from relevance_core.features import FeatureEncoder
    from relevance_core.model.export import load_towers
    from relevance_core.model.train import load_module

    module, encoder = load_module(tmp_path)
    assert encoder == trained.encoder
    user, item = load_towers(tmp_path)
    hist = encoder.encode_histories([[("i00001", "view", 30.0), ("i00002", "click", 5.0)]])
    assert torch.allclose(user(*hist), module.model.user_vectors(*hist), atol=1e-5)
    assert FeatureEncoder.from_json(paths["features"].read_text()) == encoder


def test_never_seen_item_lands_near_its_category_and_brand(trained, marketplace):
    """Cold start: an item nobody interacted with (and a brand-new id) is embedded from content only, and
    must sit closer to warm items of its own leaf category + brand than to random warm items."""
    _pairs, items = marketplace
    enc = trained.encoder
    tower = trained.module.model.item_tower.eval()
    known = np.asarray(enc.id_known, dtype=bool)
    rows = enc.rows_of(items["item_id"])
    cold = items[~known[rows]]
    warm = items[known[rows]]
    assert len(cold) >= 10
    brand_new = cold.assign(item_id=[f"new-{i}" for i in range(len(cold))])
    with torch.no_grad():
        warm_v = tower(**enc.encode_items(warm))
        for probe in (cold, brand_new):
            feats = enc.encode_items(probe)
            if probe is brand_new:
                assert (feats["item_row"] == 0).all()
            v = tower(**feats)
            sims = (v @ warm_v.T).numpy()
            same, rand = [], []
            rng = np.random.default_rng(0)
            for i, (_, it) in enumerate(probe.iterrows()):
                mask = (
                    (warm["category_path"] == it["category_path"]) & (warm["brand"] == it["brand"])
                ).to_numpy()
                if mask.any():
                    same.append(sims[i, mask].mean())
                    rand.append(sims[i, rng.choice(len(warm), 30)].mean())
            assert len(same) >= 5
            assert np.mean(same) > np.mean(rand) + 0.2, (np.mean(same), np.mean(rand))


def test_same_seed_same_weights(marketplace, tmp_path):
    pairs, items = marketplace
    cfg = TwoTowerConfig(**FAST, max_epochs=1, limit_train_batches=4, seed=7)
    a = train_two_tower(pairs, items, cfg, work_dir=tmp_path / "a").module.state_dict()
    b = train_two_tower(pairs, items, cfg, work_dir=tmp_path / "b").module.state_dict()
    c = train_two_tower(pairs, items, cfg.replace(seed=8), work_dir=tmp_path / "c").module.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _run_cli(pairs_dir: Path, items_file: Path, out: Path, sets: dict) -> dict:
    cmd = [sys.executable, "-m", "relevance_core.model.train", "--pairs", str(pairs_dir)]
    cmd += ["--items", str(items_file), "--out", str(out)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.e2e
def test_ddp_on_two_cpu_processes_matches_single_process_quality(marketplace, tmp_path):
    """``strategy="ddp"`` with 2 gloo processes (Lightning re-launches the CLI per rank) trains a model
    as good as one process with the same effective batch."""
    pairs, items = marketplace
    write_pairs(pairs, tmp_path / "pairs")
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), tmp_path / "items.parquet")
    base = {k: v for k, v in FAST.items() if k != "num_threads"} | {"max_epochs": 4, "patience": 4}
    single = _run_cli(tmp_path / "pairs", tmp_path / "items.parquet", tmp_path / "single", base)
    ddp = _run_cli(
        tmp_path / "pairs",
        tmp_path / "items.parquet",
        tmp_path / "ddp",
        base | {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "batch_size": FAST["batch_size"] // 2},
    )
    assert ddp["strategy"] == "ddp" and ddp["devices"] == 2
    assert single["devices"] == 1
    assert ddp["hr_at_20"] > 1.5 * ddp["popularity_hr_at_20"], ddp
    assert abs(ddp["hr_at_20"] - single["hr_at_20"]) < 0.06, (ddp["hr_at_20"], single["hr_at_20"])


def test_two_tower_model_asset_writes_artifacts_and_metadata(marketplace, store):
    """The asset reads ``lake/training_pairs`` and (no warehouse yet) ``lake/items``, and writes the model
    directory the serving steps read, with metrics and the curve as metadata."""
    import dagster as dg

    from relevance_assets.defs.model.two_tower import MODEL_POINTER, TwoTowerModelConfig, two_tower_model
    from relevance_assets.resources import StorageResource

    pairs, items = marketplace
    write_pairs(pairs, store.path("lake/training_pairs"))
    store.path("lake/items").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), store.path("lake/items/part-0.parquet"))
    small = {k: v for k, v in FAST.items() if k not in ("title_buckets", "max_title_tokens")}
    cfg = TwoTowerModelConfig(**small, max_epochs=1)
    res = dg.materialize(
        [two_tower_model],
        resources={"storage": StorageResource(base_uri=str(store.root))},
        run_config={"ops": {"two_tower_model": {"config": cfg.model_dump()}}},
    )
    assert res.success
    mat = res.asset_materializations_for_node("two_tower_model")[0]
    version = mat.metadata["model_version"].value
    assert store.read_text(MODEL_POINTER).strip() == version
    for name in (
        "user_tower.pt",
        "item_tower.pt",
        "features.json",
        "model.ckpt",
        "metrics.json",
        "training_curve.png",
    ):
        assert store.exists(f"artifacts/models/{version}/{name}"), name
    assert "data:image/png;base64," in mat.metadata["training_curve"].value
    assert mat.metadata["hr_at_20"].value > mat.metadata["popularity_hr_at_20"].value
