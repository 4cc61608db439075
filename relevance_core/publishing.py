"""Assemble a bundle from the pipeline's outputs and publish it behind the gates.

``assemble_bundle`` writes every file ``relevance_core.bundle`` requires into a staging directory and
finalises the manifest (checksums of every file, lineage, metrics); ``publish_if_passed`` refuses to
publish unless every gate passed, and otherwise delegates to :func:`relevance_core.bundle.publish`, which
uploads, verifies the uploaded copy and only then replaces ``artifacts/LATEST``. A failed gate or a broken
bundle therefore never moves LATEST: the previous bundle keeps serving.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from relevance_core import bundle as B
from relevance_core.evaluation.gates import GateResult
from relevance_core.index import ItemIndex
from relevance_core.schemas import ITEM_ARROW_SCHEMA, ITEM_COLUMNS
from relevance_core.storage import ArtifactStore

#: Files a model directory (``artifacts/models/<model_version>/``) must provide to the bundle.
MODEL_FILES = (B.USER_TOWER, B.ITEM_TOWER, B.FEATURES)
#: Files a model directory may provide (copied, and checksummed like the rest, when present).
OPTIONAL_MODEL_FILES = (B.USER_ENCODER_ONNX,)
#: Optional JSON files of the model directory whose content goes into ``manifest.model``.
MODEL_JSON = ("config.json", "metrics.json")

POPULARITY_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("score", pa.float64()),
        pa.field("category_l1", pa.string()),
        pa.field("trending_score", pa.float64()),
    ]
)


def items_table(items: pa.Table | pd.DataFrame) -> pa.Table:
    """The canonical item columns (``ITEM_ARROW_SCHEMA``) from dim_items or the ``items`` lake table:
    exactly what the service hydrates with, whatever extra columns the source had."""
    df = items.to_pandas() if isinstance(items, pa.Table) else items.copy()
    for col in ITEM_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[list(ITEM_COLUMNS)].drop_duplicates("item_id", keep="last")
    df["item_id"] = df["item_id"].astype(str)
    df["available"] = df["available"].fillna(True).astype(bool)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
    return pa.Table.from_pandas(df, schema=ITEM_ARROW_SCHEMA, preserve_index=False)


def popularity_table(popularity: pa.Table | pd.DataFrame | None, items: pa.Table) -> pa.Table:
    """``item_id, score, category_l1, trending_score``, one row per item of ``items`` (0 when unknown).

    Accepts dbt's ``item_popularity`` (``popularity_score``) or anything with a ``score`` column."""
    ids = items.column("item_id").to_pylist()
    base = pd.DataFrame({"item_id": ids})
    if popularity is not None:
        pop = popularity.to_pandas() if isinstance(popularity, pa.Table) else popularity.copy()
        if "score" not in pop.columns:
            pop = pop.rename(columns={"popularity_score": "score"})
        keep = [c for c in ("item_id", "score", "category_l1", "trending_score") if c in pop.columns]
        pop = pop[keep].copy()
        pop["item_id"] = pop["item_id"].astype(str)
        base = base.merge(pop.drop_duplicates("item_id"), on="item_id", how="left")
    if "category_l1" not in base.columns or base["category_l1"].isna().all():
        from relevance_core.features import category_levels

        paths = dict(zip(ids, items.column("category_path").to_pylist(), strict=True))
        base["category_l1"] = [category_levels(paths.get(i))[0] for i in base["item_id"]]
    for col in ("score", "trending_score"):
        if col not in base.columns:
            base[col] = 0.0 if col == "score" else 1.0
    base["score"] = base["score"].fillna(0.0).astype(float)
    base["trending_score"] = base["trending_score"].fillna(1.0).astype(float)
    return pa.Table.from_pandas(
        base[[f.name for f in POPULARITY_SCHEMA]], schema=POPULARITY_SCHEMA, preserve_index=False
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def assemble_bundle(
    dest: str | Path,
    *,
    model_dir: str | Path,
    index: ItemIndex,
    embeddings: np.ndarray,
    items: pa.Table | pd.DataFrame,
    popularity: pa.Table | pd.DataFrame | None = None,
    version: str | None = None,
    model_version: str | None = None,
    data: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    ranking_dir: str | Path | None = None,
) -> B.Manifest:
    """Write a complete bundle into ``dest`` (created; must be empty) and return its finalised manifest.

    ``ranking_dir`` (``artifacts/ranking/<model_version>/``): the ranking stage's sources and ranker,
    copied when present; a bundle without them serves the retrieval order.

    ``embeddings`` row i must be ``index.item_ids[i]``'s vector (the index's row order); the id map and
    ``embeddings.npy`` are written from the same arrays so they cannot disagree.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise B.BundleError(f"staging directory {dest} is not empty")
    model_dir = Path(model_dir)
    missing = [f for f in MODEL_FILES if not (model_dir / f).is_file()]
    if missing:
        raise B.BundleError(f"model directory {model_dir} lacks {missing}")
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.shape != (len(index), index.dim):
        raise B.BundleError(f"embeddings {emb.shape} do not match the index ({len(index)}, {index.dim})")
    for name in MODEL_FILES + tuple(f for f in OPTIONAL_MODEL_FILES if (model_dir / f).is_file()):
        shutil.copyfile(model_dir / name, dest / name)
    if ranking_dir is not None:
        from relevance_core.ranking.stage import STAGE_FILES

        for name in STAGE_FILES:
            if (Path(ranking_dir) / name).is_file():
                shutil.copyfile(Path(ranking_dir) / name, dest / name)
    index.save(dest)  # index.faiss + item_ids.parquet
    np.save(dest / B.EMBEDDINGS, emb)
    items_t = items_table(items)
    pq.write_table(items_t, dest / B.ITEMS)
    pq.write_table(popularity_table(popularity, items_t), dest / B.POPULARITY)

    features = _read_json(dest / B.FEATURES) or {}
    model_info: dict[str, Any] = {"version": model_version or model_dir.name}
    for name in MODEL_JSON:
        content = _read_json(model_dir / name)
        if content is not None:
            model_info[name.removesuffix(".json")] = content
    manifest = B.Manifest(
        version=version or B.new_version(),
        created_at=datetime.now(UTC).isoformat(),
        dim=index.dim,
        metric="inner_product",
        index_factory=index.factory,
        n_items=len(index),
        history_length=int(features.get("history_length", 20)),
        model=model_info,
        data=dict(data or {}),
        metrics=dict(metrics or {}),
        extra={"index": index.describe(), "search_params": dict(index.search_params)} | dict(extra or {}),
    )
    return B.finalize_manifest(dest, manifest)


@dataclass
class PublishOutcome:
    published: bool
    version: str | None
    live_version: str | None
    reason: str


def publish_if_passed(
    store: ArtifactStore, local_dir: str | Path, gates: Iterable[GateResult], *, keep: int = 5
) -> PublishOutcome:
    """Publish ``local_dir`` only if every gate passed; otherwise leave LATEST exactly as it was."""
    gates = list(gates)
    failed = [g for g in gates if not g.passed]
    if failed:
        live = B.latest_version(store)
        reasons = "; ".join(f"{g.name}: {g.description}" for g in failed)
        return PublishOutcome(False, None, live, f"not published, gates failed: {reasons}")
    manifest = B.publish(store, Path(local_dir), keep=keep)
    return PublishOutcome(True, manifest.version, manifest.version, f"published {manifest.version}")


# -- where the model → bundle steps keep their outputs in the store ----------------------------------------
MODELS_PREFIX = f"{B.LAYOUT.artifacts}/models"
EMBEDDINGS_PREFIX = f"{B.LAYOUT.artifacts}/embeddings"
INDEX_PREFIX = f"{B.LAYOUT.artifacts}/index"
EVALUATION_PREFIX = f"{B.LAYOUT.artifacts}/evaluation"
#: Optional one-line pointer the model asset may write: the model version the steps below should use.
MODEL_POINTER = f"{MODELS_PREFIX}/LATEST"
EMBEDDING_META = "embeddings.json"
INDEX_META = "index.json"
REPORT_FILE = "report.json"


def model_key(version: str) -> str:
    return f"{MODELS_PREFIX}/{version}"


def embeddings_key(version: str) -> str:
    return f"{EMBEDDINGS_PREFIX}/{version}"


def index_key(version: str) -> str:
    return f"{INDEX_PREFIX}/{version}"


def evaluation_key(version: str) -> str:
    return f"{EVALUATION_PREFIX}/{version}"


def latest_model_version(store: ArtifactStore) -> str | None:
    """``artifacts/models/LATEST`` when the model step wrote it, else the newest model directory that has
    the exported towers (model versions sort by time)."""
    try:
        v = store.read_text(MODEL_POINTER).strip()
        if v:
            return v
    except Exception:  # noqa: BLE001 - StoreError or a missing pointer: fall back to listing
        pass
    for v in reversed(store.list_dirs(MODELS_PREFIX)):
        if not v.startswith(".") and store.exists(f"{store.resolve_dir(model_key(v))}/{B.USER_TOWER}"):
            return v
    return None


def write_embeddings(
    store: ArtifactStore, version: str, item_ids: np.ndarray, embeddings: np.ndarray, meta: Mapping[str, Any]
) -> None:
    """``embeddings.npy`` (float32 [N, D]), ``item_ids.parquet`` (row → item id), ``embeddings.parquet``
    (item_id + vector, for SQL/pandas consumers) and ``embeddings.json`` (model version, dims, counts),
    published together under ``artifacts/embeddings/<version>/``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="relevance-emb-") as tmp:
        d = Path(tmp)
        np.save(d / B.EMBEDDINGS, np.ascontiguousarray(embeddings, dtype=np.float32))
        ids = pa.array([str(i) for i in item_ids], type=pa.string())
        pq.write_table(pa.table({"item_id": ids}), d / B.ITEM_IDS)
        vec = pa.FixedSizeListArray.from_arrays(
            pa.array(np.asarray(embeddings, np.float32).ravel()), embeddings.shape[1]
        )
        pq.write_table(pa.table({"item_id": ids, "embedding": vec}), d / "embeddings.parquet")
        (d / EMBEDDING_META).write_text(json.dumps(dict(meta), indent=2, default=str))
        store.replace_dir(d, embeddings_key(version))


def read_embeddings(store: ArtifactStore, version: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    d = store.local_dir(embeddings_key(version))
    if not (d / B.EMBEDDINGS).is_file():
        raise B.BundleError(f"no item embeddings for model {version}: materialize item_embeddings first")
    emb = np.load(d / B.EMBEDDINGS)
    ids = np.asarray(pq.read_table(d / B.ITEM_IDS).column("item_id").to_pylist(), dtype=object)
    return ids, emb, json.loads((d / EMBEDDING_META).read_text())


def save_index(store: ArtifactStore, version: str, index: ItemIndex, meta: Mapping[str, Any]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="relevance-index-") as tmp:
        index.save(tmp)
        (Path(tmp) / INDEX_META).write_text(json.dumps(dict(meta), indent=2, default=str))
        store.replace_dir(tmp, index_key(version))


def load_index(store: ArtifactStore, version: str) -> tuple[ItemIndex, dict[str, Any]]:
    d = store.local_dir(index_key(version))
    if not (d / INDEX_META).is_file():
        raise B.BundleError(f"no FAISS index for model {version}: materialize faiss_index first")
    meta = json.loads((d / INDEX_META).read_text())
    return ItemIndex.load(d, factory=meta.get("factory"), search_params=meta.get("search_params") or {}), meta


def load_catalog(store: ArtifactStore) -> pa.Table:
    """The catalog as the encoder reads it: dbt's ``dim_items`` when the warehouse has it, else the
    ``items`` lake table (same canonical columns; the encoder derives the rest)."""
    from relevance_core.warehouse import WarehouseError, read_table, warehouse_path

    try:
        return read_table(warehouse_path(store), "dim_items")
    except (WarehouseError, Exception):  # noqa: BLE001 - no warehouse yet: fall back to the lake
        d = store.local_dir(B.LAYOUT.table("items"))
        files = sorted(str(p) for p in d.rglob("*.parquet") if not p.name.startswith((".", "_")))
        if not files:
            raise B.BundleError("no catalog: materialize items (and dim_items) first") from None
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def load_popularity(store: ArtifactStore) -> pa.Table | None:
    """dbt's ``item_popularity`` (None when the warehouse has not been built)."""
    from relevance_core.warehouse import read_table, warehouse_path

    try:
        return read_table(warehouse_path(store), "item_popularity")
    except Exception:  # noqa: BLE001 - missing warehouse/table: the bundle gets zero popularity
        return None
