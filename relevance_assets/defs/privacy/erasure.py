"""``erase_users``: the Dagster job with the same effect as ``relevance erase-user`` (right to erasure).

* One op, ``erase_users``, calls ``relevance_core.erasure.erase_users`` with the run id, so the receipt
  (``erasure/receipts/...``) names the Dagster run that produced it. It runs in the DuckDB writer pool:
  the warehouse has one writer at a time, and a dbt build running beside the erasure could otherwise
  publish a warehouse copied before the erasure.
* Where the ids come from: ``user_ids`` in the run config is the simple way, but Dagster keeps run config
  in its run history for good, which would itself be a copy of the ids. For production, put them in a
  store object (``request_key``, e.g. ``erasure/requests/<ticket>.json`` = ``{"user_ids": [...]}``): the
  op reads it and deletes it after the erasure, so the run history holds only the ticket name.
* ``retrain: true`` asks for a retrain: when the erasure run succeeds, the ``erasure_retrain_sensor``
  requests the ``retrain_after_erasure`` job (the dbt aggregates that counted the users, and
  ``two_tower_model`` with everything downstream), so the next published bundle never saw them.
* ``service_url``: first asks the running service to forget the users' recent history
  (``POST /v1/admin/erase-users``); the token comes from the ``RELEVANCE_API_TOKEN`` env var, never the
  run config.
"""

import json
import os

import dagster as dg

from relevance_assets.defs.catalog.project import DUCKDB_WRITER_POOL
from relevance_assets.resources import StorageResource
from relevance_core.erasure_requests import RETRAIN_ASSETS, RETRAIN_ROOT, erase_in_service
from relevance_core.pseudonyms import pseudonyms

ERASE_OP = "erase_user_data"
RETRAIN_TAG = "relevance/erasure_retrain"


class EraseUsersConfig(dg.Config):
    """Run config of the ``erase_users`` op."""

    user_ids: list[str] = []
    request_key: str | None = None
    retrain: bool = False
    service_url: str | None = None


def _ids(config: EraseUsersConfig, store) -> list[str]:
    ids = list(config.user_ids)
    if config.request_key:
        doc = json.loads(store.read_text(config.request_key))
        ids += list(doc.get("user_ids", []))
    return sorted({i.strip() for i in ids if i and i.strip()})


@dg.op(name=ERASE_OP, pool=DUCKDB_WRITER_POOL)
def erase_users_op(
    context: dg.OpExecutionContext, config: EraseUsersConfig, storage: StorageResource
) -> dg.Output[dict]:
    """Erase the users from every store, verify, write the receipt. Logs counts, never ids."""
    from relevance_core.erasure import erase_users

    store = storage.get_store()
    ids = _ids(config, store)
    if not ids:
        raise dg.Failure("no user id given (user_ids or request_key)")
    extra: dict = {"retrain": "requested" if config.retrain else "not_requested", "via": "dagster"}
    if config.service_url:
        extra["service"] = erase_in_service(config.service_url, os.environ.get("RELEVANCE_API_TOKEN"), ids)
    else:
        extra["service"] = {"status": "not_requested"}
    result = erase_users(
        store,
        ids,
        aliases=pseudonyms(ids, os.environ.get("RELEVANCE_PSEUDONYM_KEY")),
        run_id=context.run_id,
        extra=extra,
    )
    if config.request_key:
        store.delete(config.request_key)
    context.log.info(
        f"erased {len(ids)} user(s): {result.total_removed} rows removed {result.rows_removed}; "
        f"receipt {result.receipt_key}"
    )
    if config.service_url and extra["service"].get("status") != "ok":
        raise dg.Failure(
            f"lake erasure done (receipt {result.receipt_key}) but the service did not confirm: "
            f"{extra['service']}"
        )
    return dg.Output(
        {"receipt_key": result.receipt_key, "rows_removed": result.rows_removed, "retrain": config.retrain},
        metadata={
            "receipt": dg.MetadataValue.text(result.receipt_key or ""),
            "rows_removed": dg.MetadataValue.int(result.total_removed),
            "rows_removed_by_store": dg.MetadataValue.json(result.rows_removed),
            "stores_checked": dg.MetadataValue.json(result.stores_checked),
            "pending_recompute": dg.MetadataValue.json(result.pending_recompute),
            "retrain": dg.MetadataValue.bool(config.retrain),
        },
    )


@dg.job(
    name="erase_users",
    description="Right to erasure: remove users' events from every store, verify, write a receipt.",
    tags={"relevance/kind": "privacy"},
)
def erase_users_job():
    erase_users_op()


retrain_after_erasure = dg.define_asset_job(
    "retrain_after_erasure",
    selection=dg.AssetSelection.assets(*RETRAIN_ASSETS) | dg.AssetSelection.assets(RETRAIN_ROOT).downstream(),
    description="Recompute the aggregates and retrain + republish the model without the erased users.",
)


def wants_retrain(run: dg.DagsterRun) -> bool:
    """Whether an ``erase_users`` run asked for a retrain (its op config's ``retrain``)."""
    ops = (run.run_config or {}).get("ops", {})
    return bool(ops.get(ERASE_OP, {}).get("config", {}).get("retrain", False))


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[erase_users_job],
    request_job=retrain_after_erasure,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A successful erase_users run with retrain=true → run retrain_after_erasure once.",
)
def erasure_retrain_sensor(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    if not wants_retrain(run):
        return dg.SkipReason(f"erasure run {run.run_id} did not ask for a retrain")
    return dg.RunRequest(run_key=f"erasure-retrain:{run.run_id}", tags={RETRAIN_TAG: run.run_id})
