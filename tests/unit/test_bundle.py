"""The bundle contract: complete + verified or refused; LATEST moves only on a passing gate; keep-N; rollback."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pandas as pd
import pytest

from relevance_core import bundle as B
from relevance_core.evaluation.gates import GateResult
from relevance_core.index import build_index
from relevance_core.publishing import assemble_bundle, publish_if_passed

N, D = 60, 8


@pytest.fixture()
def model_dir(tmp_path):
    d = tmp_path / "models" / "m1"
    d.mkdir(parents=True)
    (d / B.USER_TOWER).write_bytes(b"user tower bytes")
    (d / B.ITEM_TOWER).write_bytes(b"item tower bytes")
    (d / B.FEATURES).write_text(json.dumps({"history_length": 12}))
    (d / "metrics.json").write_text(json.dumps({"val_recall_at_20": 0.3}))
    return d


def _items():
    return pd.DataFrame(
        {
            "item_id": [f"i{k:03d}" for k in range(N)],
            "title": [f"item {k}" for k in range(N)],
            "category_path": ["A > B" if k % 2 else "C > D" for k in range(N)],
            "price": np.arange(N, dtype=float),
            "available": [True] * N,
            "extra_column": 1,  # dropped: the bundle keeps the canonical columns
        }
    )


def _make(tmp_path, model_dir, name: str, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(N, D)).astype(np.float32)
    items = _items()
    index = build_index(emb, items["item_id"].to_numpy())
    pop = pd.DataFrame({"item_id": items["item_id"][:10], "popularity_score": np.arange(10.0)})
    staging = tmp_path / f"staging-{name}"
    manifest = assemble_bundle(
        staging,
        model_dir=model_dir,
        index=index,
        embeddings=index.index.reconstruct_n(0, N),
        items=items,
        popularity=pop,
        metrics={"ndcg@10": 0.2},
        data={"source": "test"},
    )
    return staging, manifest


PASS = [GateResult("beats_baselines", True, "ok")]
FAIL = [GateResult("beats_baselines", True, "ok"), GateResult("not_worse_than_published", False, "worse")]


def test_assembled_bundle_is_complete_and_verifies(tmp_path, model_dir):
    staging, manifest = _make(tmp_path, model_dir, "a")
    assert set(B.REQUIRED_FILES) <= set(manifest.checksums)
    again = B.verify_dir(staging)
    assert again.version == manifest.version and again.dim == D and again.n_items == N
    assert again.history_length == 12 and again.model["metrics"] == {"val_recall_at_20": 0.3}
    pop = pd.read_parquet(staging / B.POPULARITY)
    assert list(pop.columns[:3]) == ["item_id", "score", "category_l1"] and len(pop) == N
    assert (
        pop.set_index("item_id").loc["i009", "score"] == 9.0
        and pop.set_index("item_id").loc["i050", "score"] == 0.0
    )
    assert "extra_column" not in pd.read_parquet(staging / B.ITEMS).columns
    ids = pd.read_parquet(staging / B.ITEM_IDS)["item_id"].tolist()
    assert ids == _items()["item_id"].tolist()
    assert np.load(staging / B.EMBEDDINGS).shape == (N, D)


def test_wrong_checksum_is_refused(tmp_path, model_dir, store):
    staging, _ = _make(tmp_path, model_dir, "a")
    (staging / B.ITEMS).write_bytes((staging / B.ITEMS).read_bytes() + b"x")
    with pytest.raises(B.BundleError, match="checksum mismatch"):
        B.verify_dir(staging)
    with pytest.raises(B.BundleError):
        B.publish(store, staging)
    assert B.latest_version(store) is None and B.list_versions(store) == []


@pytest.mark.parametrize("victim", [B.INDEX, B.USER_TOWER, B.MANIFEST])
def test_missing_file_is_refused(tmp_path, model_dir, store, victim):
    staging, _ = _make(tmp_path, model_dir, "a")
    (staging / victim).unlink()
    with pytest.raises(B.BundleError, match="missing|no manifest"):
        B.verify_dir(staging)
    with pytest.raises(B.BundleError):
        publish_if_passed(store, staging, PASS)
    assert B.latest_version(store) is None


def test_manifest_without_checksum_or_with_path_escape_is_refused(tmp_path, model_dir):
    staging, manifest = _make(tmp_path, model_dir, "a")
    m = msgspec.structs.replace(
        manifest, checksums={k: v for k, v in manifest.checksums.items() if k != B.EMBEDDINGS}
    )
    (staging / B.MANIFEST).write_bytes(msgspec.json.encode(m))
    with pytest.raises(B.BundleError, match="no checksum"):
        B.verify_dir(staging)
    m = msgspec.structs.replace(manifest, checksums=manifest.checksums | {"../outside": "0" * 64})
    (staging / B.MANIFEST).write_bytes(msgspec.json.encode(m))
    with pytest.raises(B.BundleError, match="invalid file name"):
        B.verify_dir(staging)


def test_failing_gate_leaves_latest_and_passing_gate_moves_it(tmp_path, model_dir, store):
    first, m1 = _make(tmp_path, model_dir, "1")
    out = publish_if_passed(store, first, PASS)
    assert out.published and B.latest_version(store) == m1.version

    second, m2 = _make(tmp_path, model_dir, "2", seed=1)
    out = publish_if_passed(store, second, FAIL)
    assert not out.published and "not_worse_than_published" in out.reason
    assert B.latest_version(store) == m1.version  # the previous bundle is still the one served
    assert B.list_versions(store) == [m1.version]  # nothing of the refused bundle was uploaded
    path, live = B.fetch(store, B.latest_version(store))
    assert live.version == m1.version

    out = publish_if_passed(store, second, PASS)
    assert out.published and B.latest_version(store) == m2.version
    assert B.current_manifest(store).metrics == {"ndcg@10": 0.2}


def test_keep_last_n_and_rollback(tmp_path, model_dir, store):
    versions = []
    for i in range(4):
        staging, m = _make(tmp_path, model_dir, str(i), seed=i)
        B.publish(store, staging, keep=3)
        versions.append(m.version)
    assert versions == sorted(versions)
    assert B.list_versions(store) == versions[1:]  # the oldest was pruned
    assert B.latest_version(store) == versions[3]

    assert B.rollback(store) == versions[2]
    assert B.latest_version(store) == versions[2]
    # corrupt the next older one: a no-argument rollback skips it
    broken = store.local_dir(B.bundle_key(versions[1])) / B.INDEX
    broken.write_bytes(b"garbage")
    with pytest.raises(B.BundleError):
        B.rollback(store, versions[1])
    assert B.latest_version(store) == versions[2]
    with pytest.raises(B.BundleError, match="no intact"):
        B.rollback(store)
    assert B.rollback(store, versions[3]) == versions[3]
    with pytest.raises(B.BundleError, match="no bundle"):
        B.rollback(store, "19990101T000000Z-000000")
    # pruning never deletes the live bundle, even when it is the oldest
    B.rollback(store, versions[2])
    assert versions[2] in B.list_versions(store)
    assert B.prune(store, keep=1) == [versions[1]]
    assert B.list_versions(store) == [versions[2], versions[3]]


def test_republishing_the_live_version_is_refused(tmp_path, model_dir, store):
    staging, m = _make(tmp_path, model_dir, "a")
    B.publish(store, staging)
    with pytest.raises(B.BundleError, match="already live"):
        B.publish(store, staging)
    assert B.latest_version(store) == m.version
