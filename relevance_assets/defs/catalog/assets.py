"""dbt models on DuckDB as Dagster assets (group ``catalog``): stg_items, stg_events, dim_items,
item_popularity, daily_event_stats.

* Lineage: the dbt sources carry ``meta.dagster.asset_key`` = ``items`` / ``raw_events``, so these assets sit
  downstream of the ingestion assets in one graph.
* dbt tests are asset checks (dagster-dbt's default): a failing ``unique``/``not_null``/``relationships``/
  ``accepted_values`` test fails the check and the step; dbt itself skips the models below a failed test.
* One writer: the step runs in the ``duckdb_writer`` pool (limit 1 via dagster.yaml), and it builds into a
  private copy of the warehouse that is renamed over the published file at the end
  (``relevance_core.warehouse.staged_warehouse``), so readers never meet dbt's write lock.
"""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from relevance_assets.defs.catalog.project import (
    DUCKDB_WRITER_POOL,
    dbt_project,
    dbt_resource,
    ensure_manifest,
)
from relevance_assets.resources import StorageResource
from relevance_core.schemas import DEFAULT_EVENT_WEIGHTS
from relevance_core.warehouse import WarehouseError, check_lake, local_lake, staged_warehouse

CATALOG_GROUP = "catalog"

ensure_manifest(dbt_project)


class CatalogTranslator(DagsterDbtTranslator):
    """Every dbt model of this project belongs to the ``catalog`` group (docs/contracts.md).
    Kinds come from dagster-dbt itself: ``dbt`` and the adapter, ``duckdb``."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return CATALOG_GROUP


def dbt_vars(lake_root: str, warehouse_path: str, event_weights: Mapping[str, float] | None = None) -> str:
    """The ``--vars`` JSON: where the lake and the warehouse are, and the event weights (Python's
    ``DEFAULT_EVENT_WEIGHTS`` is the single source of truth; dbt_project.yml only mirrors it)."""
    weights = event_weights if event_weights is not None else DEFAULT_EVENT_WEIGHTS
    return json.dumps(
        {
            "lake_root": lake_root,
            "warehouse_path": warehouse_path,
            "event_weights": {str(k): float(v) for k, v in weights.items()},
        }
    )


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    name="catalog_dbt",
    dagster_dbt_translator=CatalogTranslator(),
    pool=DUCKDB_WRITER_POOL,
)
def catalog_dbt(
    context: AssetExecutionContext, dbt: DbtCliResource, storage: StorageResource
) -> Iterator[Any]:
    """``dbt build`` of the selected models and their tests against ``<RELEVANCE_HOME>/warehouse.duckdb``."""
    store = storage.get_store()
    try:
        check_lake(store)
    except WarehouseError as e:
        raise dg.Failure(str(e)) from e
    with local_lake(store) as lake_root, staged_warehouse(store) as db_path:
        args = ["build", "--vars", dbt_vars(str(lake_root), str(db_path))]
        yield from dbt.cli(args, context=context).stream()


defs = dg.Definitions(assets=[catalog_dbt], resources={"dbt": dbt_resource()})
