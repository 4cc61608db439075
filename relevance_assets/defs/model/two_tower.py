"""``two_tower_model``: train the two-tower model on all ``training_pairs`` partitions and the catalog.

Thin on purpose: reading inputs, calling :func:`relevance_core.model.train.train_two_tower`, writing the
artifacts to the store and reporting metadata. The training itself, its export and its parity check live in
``relevance_core.model`` so the CLI, the benchmarks and the GPU check run exactly the same code.
"""

import tempfile
from pathlib import Path

import dagster as dg

from relevance_assets.config import build_config, core_fields, to_core
from relevance_assets.metadata import png_markdown
from relevance_assets.resources import StorageResource
from relevance_core.model.config import TwoTowerConfig
from relevance_core.settings import LAYOUT
from relevance_core.storage import ArtifactStore

#: Store prefix of trained models: ``artifacts/models/<model_version>/`` and the ``LATEST`` pointer.
MODELS_PREFIX = f"{LAYOUT.artifacts}/models"
MODEL_POINTER = f"{MODELS_PREFIX}/LATEST"


#: Run config of ``two_tower_model``: every ``TwoTowerConfig`` field with the core's default, except the
#: progress bar (a Dagster run's log is not a terminal)
TwoTowerModelConfig = build_config(
    "TwoTowerModelConfig",
    "Hyper-parameters (``relevance_core.model.config.TwoTowerConfig`` says what each one does).",
    core_fields(TwoTowerConfig, defaults={"progress_bar": False}),
)


def _pairs_source(store: ArtifactStore):
    """The training pairs as a lazily scanned dataset (never loaded whole)."""
    from relevance_core.pipeline.pairs import read_training_pairs

    return read_training_pairs(store)


def _catalog(store: ArtifactStore):
    """dbt's ``dim_items`` when the warehouse has it, else the ``items`` lake table (canonical columns; the
    encoder derives levels and buckets itself)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        from relevance_core.warehouse import read_table, warehouse_path

        return read_table(warehouse_path(store), "dim_items")
    except Exception:  # noqa: BLE001 - no warehouse / no dim_items yet: fall back to the lake
        pass
    d = store.local_dir(LAYOUT.table("items"))
    files = sorted(str(p) for p in d.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise dg.Failure(description="no catalog: materialize items (and dim_items) first")
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


@dg.asset(
    key="two_tower_model",
    group_name="model",
    deps=["training_pairs", "dim_items"],
    kinds={"pytorch"},
    tags={"compute": "gpu-optional"},
    # One training at a time on the machine's CPU/GPU (dagster.yaml: pools default_limit 1).
    pool="training",
)
def two_tower_model(
    context: dg.AssetExecutionContext, config: TwoTowerModelConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """The two-tower retrieval model, trained with Lightning on every ``training_pairs``
    partition (split column: train / validation) and the catalog (``dim_items``, else ``items``).

    Writes ``artifacts/models/<model_version>/``: ``model.ckpt``, the TorchScript ``user_tower.pt`` and
    ``item_tower.pt`` (parity-checked against the eager model), ``features.json``, ``config.json``,
    ``metrics.json``, ``history.json`` and ``training_curve.png``; then points ``artifacts/models/LATEST`` at
    it. Metadata: validation HR@10/20 against all items next to the popularity baseline on the same split,
    and the loss/recall curve."""
    from relevance_core.bundle import new_version
    from relevance_core.model.train import CURVE_FILE, save_artifacts, train_two_tower

    store = storage.get_store()
    cfg = to_core(config, TwoTowerConfig)
    pairs = _pairs_source(store)
    items = _catalog(store)
    version = new_version()
    with tempfile.TemporaryDirectory(prefix="relevance-model-") as tmp:
        result = train_two_tower(pairs, items, cfg, work_dir=Path(tmp) / "work")
        if result is None:  # only rank 0 of a re-launched DDP run gets here with a result
            raise dg.Failure(description="training ended without a result on rank 0")
        result.metrics["model_version"] = version
        out = Path(tmp) / "model"
        paths = save_artifacts(result, out)
        key = f"{MODELS_PREFIX}/{version}"
        store.replace_dir(out, key)
        store.write_text(MODEL_POINTER, version + "\n")
        curve_md = png_markdown(paths["curve"], "training curve")
    m = result.metrics
    context.log.info(
        f"model {version}: HR@20 {m['hr_at_20']:.4f} vs popularity {m['popularity_hr_at_20']:.4f} "
        f"({m['epochs']} epochs, {m['samples_per_s']} samples/s on {m['device_name']})"
    )
    scalars = {
        k: dg.MetadataValue.float(float(v))
        for k, v in m.items()
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and v == v
        and abs(float(v)) != float("inf")
    }
    return dg.MaterializeResult(
        metadata={
            "model_version": dg.MetadataValue.text(version),
            "path": dg.MetadataValue.text(f"{store.base_uri}/{key}"),
            "metrics": dg.MetadataValue.json(m),
            "history": dg.MetadataValue.json(result.history),
            "training_curve": curve_md,
            "curve_file": dg.MetadataValue.text(f"{store.base_uri}/{key}/{CURVE_FILE}"),
            **scalars,
        }
    )
