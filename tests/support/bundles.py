"""Real serving bundles for the service tests, built through the project's own code.

``synthetic.make_marketplace`` (planted-structure marketplace) → ``train_two_tower`` (real Lightning
training, tiny config) → ``save_artifacts`` (TorchScript export with parity check) → item embeddings with
the exported item tower → ``build_index`` (real FAISS) → ``assemble_bundle`` → ``bundle.publish``.

It stops short of the Spark/dbt/Dagster part of the pipeline (landing → raw_events → sessions →
training_pairs): those are tested by their own suites, and the service only consumes the bundle
contract, which is exactly what this produces. Trained models are cached per seed for the test session
(training is the slow step); publishing another bundle from a cached model takes well under a second, and
different seeds give bundles whose answers differ (the hot-reload test relies on that).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from relevance_core import bundle as B
from relevance_core.storage import ArtifactStore

TINY_MODEL = dict(
    dim=32,
    emb_dim=16,
    hidden=32,
    n_layers=1,
    n_heads=2,
    max_epochs=1,
    patience=1,
    batch_size=128,
    progress_bar=False,
    deterministic=True,
    accelerator="cpu",
    devices=1,
    max_val_examples=2000,
    log_every_n_steps=10,
)


@dataclass
class TrainedModel:
    seed: int
    model_dir: Path
    items: pd.DataFrame
    pairs: pa.Table
    embeddings: np.ndarray
    popularity: pd.DataFrame


_CACHE: dict[int, TrainedModel] = {}


def trained_model(seed: int = 0, *, root: Path | None = None) -> TrainedModel:
    """Train (once per process and seed) a tiny two-tower model on the tiny synthetic marketplace."""
    if seed in _CACHE:
        return _CACHE[seed]
    import torch

    from relevance_core.model.config import TwoTowerConfig
    from relevance_core.model.synthetic import PRESETS, make_marketplace
    from relevance_core.model.train import save_artifacts, train_two_tower

    root = Path(root or tempfile.mkdtemp(prefix="relevance-test-models-"))
    cfg = PRESETS["tiny"]
    pairs, items = make_marketplace(type(cfg)(**{**cfg.__dict__, "seed": 0}))
    prev_threads = torch.get_num_threads()
    try:
        result = train_two_tower(
            pairs, items, TwoTowerConfig(**TINY_MODEL, seed=seed), work_dir=root / f"work-{seed}"
        )
        model_dir = root / f"model-{seed}"
        save_artifacts(result, model_dir)
    finally:
        torch.set_num_threads(prev_threads)
    item_tower = torch.jit.load(str(model_dir / B.ITEM_TOWER), map_location="cpu")
    with torch.inference_mode():
        emb = item_tower(**result.encoder.encode_items(items)).numpy().astype(np.float32)
    counts = Counter(pairs.column("target_item_id").to_pylist())
    popularity = pd.DataFrame({"item_id": list(counts), "score": [float(v) for v in counts.values()]})
    tm = TrainedModel(seed, model_dir, items, pairs, emb, popularity)
    _CACHE[seed] = tm
    return tm


def assemble(
    model: TrainedModel,
    dest: Path | None = None,
    *,
    version: str | None = None,
    promotions: dict | None = None,
    ranked: bool = False,
) -> tuple[Path, B.Manifest]:
    """A complete, finalised bundle directory from a trained model (not published).

    ``ranked`` adds the ranking stage (co-visitation, item statistics and a LightGBM ranker trained on
    the marketplace's validation pairs, through ``relevance_core.ranking.build.build_stage``), with the
    ranker included whether or not it passed its gate on this tiny data: the service tests need one.

    ``promotions`` adds the optional ``promotions.json`` (e.g. ``{"items": {"i00001": 1.0}}``): bundles
    from one trained model that still answer differently, which is what the hot-reload test needs to
    tell versions apart without training a model per version."""
    from relevance_core.index import build_index
    from relevance_core.publishing import assemble_bundle

    dest = Path(dest or tempfile.mkdtemp(prefix="relevance-test-bundle-")) / "bundle"
    index = build_index(model.embeddings, model.items["item_id"].tolist())
    ranking_dir = ranking_stage(model, index, dest.parent / "ranking") if ranked else None
    manifest = assemble_bundle(
        dest,
        model_dir=model.model_dir,
        index=index,
        embeddings=model.embeddings,
        items=model.items,
        popularity=model.popularity,
        version=version,
        data={"source": "tests/support/bundles.py", "seed": model.seed},
        ranking_dir=ranking_dir,
    )
    if promotions is not None:
        import json

        (dest / "promotions.json").write_text(json.dumps(promotions))
        manifest = B.finalize_manifest(dest, manifest)
    return dest, manifest


def ranking_stage(model: TrainedModel, index, dest: Path) -> Path:
    """The ranking stage's files for ``model`` in ``dest`` (see :func:`assemble`)."""
    import pyarrow.parquet as pq

    from relevance_core.evaluation.retrieval import TowerRetriever
    from relevance_core.ranking.build import build_stage
    from relevance_core.ranking.ranker import RankerConfig

    dest.mkdir(parents=True, exist_ok=True)
    pq.write_table(model.pairs, dest / "pairs.parquet")
    val = model.pairs.filter(pa.compute.equal(model.pairs.column("split"), "validation")).to_pandas()
    built = build_stage(
        [str(dest / "pairs.parquet")],
        val.sort_values("target_ts", kind="stable").reset_index(drop=True),
        index=index,
        embeddings=model.embeddings,
        catalog=pa.Table.from_pandas(model.items, preserve_index=False),
        retriever=TowerRetriever.from_dir(model.model_dir, load_index=False),
        ranker_cfg=RankerConfig(num_threads=1, max_rounds=60, min_data_in_leaf=10),
    )
    built.stage.ranker = built.fit.trained
    (dest / "pairs.parquet").unlink()
    built.stage.save(dest, built.stats)
    return dest


def publish_bundle(
    store: ArtifactStore,
    seed: int = 0,
    *,
    version: str | None = None,
    promotions: dict | None = None,
    ranked: bool = False,
) -> B.Manifest:
    """Assemble and publish (LATEST moves) a bundle from the cached model of ``seed``."""
    path, _ = assemble(trained_model(seed), version=version, promotions=promotions, ranked=ranked)
    try:
        return B.publish(store, path)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def publish_corrupt(store: ArtifactStore, seed: int = 0, *, how: str = "truncated_index") -> str:
    """Write a broken bundle into the store and point LATEST at it, bypassing ``publish``'s own checks
    (what a buggy or interrupted publisher, or a tampered store, would leave behind). Returns its version.

    ``truncated_index``: index.faiss cut in half (checksum no longer matches);
    ``truncated_index_rehashed``: cut in half *and* the manifest's checksum updated, so only loading the
    index can catch it; ``bad_checksum``: a manifest checksum that matches no file;
    ``foreign_user_encoder``: another model's ``user_encoder.onnx``, checksummed: every file is intact,
    only the load-time comparison with ``user_tower.pt`` can catch it.
    """
    path, manifest = assemble(trained_model(seed))
    try:
        idx = path / B.INDEX
        if how in ("truncated_index", "truncated_index_rehashed"):
            data = idx.read_bytes()
            idx.write_bytes(data[: len(data) // 2])
            if how == "truncated_index_rehashed":
                B.finalize_manifest(path, manifest)
        elif how == "foreign_user_encoder":
            shutil.copyfile(
                trained_model(seed + 1).model_dir / B.USER_ENCODER_ONNX, path / B.USER_ENCODER_ONNX
            )
            B.finalize_manifest(path, manifest)
        elif how == "bad_checksum":
            manifest.checksums[B.EMBEDDINGS] = "0" * 64
            import msgspec

            (path / B.MANIFEST).write_bytes(msgspec.json.encode(manifest))
        else:
            raise ValueError(how)
        store.replace_dir(path, B.bundle_key(manifest.version))
        store.write_text("artifacts/LATEST", manifest.version + "\n")
        return manifest.version
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
