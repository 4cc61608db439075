"""Sensors that keep the graph fresh without a person watching it; all start RUNNING.

* ``landing_zone_sensor``: a landing day D whose files the lake does not reflect yet launches the
  ``ingest_day`` job for partition D (raw_events → sessions → training_pairs). "Reflects" is decided by the
  day's landing fingerprint (``relevance_core.ingest.fingerprint``): ingestion records it in the lake however
  it ran (this job, ``make demo`` in process, ``relevance ingest`` by hand), so a day already ingested
  launches nothing, and a new or changed file launches exactly its day, once (the run key carries the
  fingerprint). A tick lists the landing zone and reads no landing data, only the small lake record of a
  day whose fingerprint it has not seen yet.
* ``freshness_sensor``: reads the freshness state the daemon computed and asks for a run of each stale
  (WARN/FAIL) asset, at most once per state change.
* ``run_failure_alert``: logs and records every failed run as an alert object in the artifact store
  (``alerts/run_failures/<run_id>.json``) where the on-call dashboards read them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg

from relevance_assets.automation import FRESHNESS_POLICIES
from relevance_assets.freshness_state import read_freshness_states
from relevance_assets.partitions import daily_partitions
from relevance_assets.resources import StorageResource
from relevance_core.ingest.fingerprint import fingerprint, ingested_fingerprint, landing_entries_by_day
from relevance_core.storage import StoreEntry

ingest_day_job = dg.define_asset_job(
    "ingest_day",
    selection=dg.AssetSelection.assets("raw_events", "sessions", "training_pairs"),
    partitions_def=daily_partitions,
    description="Ingest one landing day and derive its sessions and training pairs.",
)


def _handled(cursor: str | None, by_day: dict[str, list[StoreEntry]]) -> dict[str, str]:
    """``{day: fingerprint}`` already requested or found ingested. The earlier cursor (a list of the landing
    keys already requested) still counts, so an upgrade does not re-ingest every day: a day whose files it
    all names was requested then."""
    if not cursor:
        return {}
    data = json.loads(cursor)
    if isinstance(data, dict):
        return {str(day): str(fp) for day, fp in data.items()}
    seen = set(data)
    return {day: fingerprint(es) for day, es in by_day.items() if {e.key for e in es} <= seen}


@dg.sensor(
    job=ingest_day_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New or changed landing files for day D → ingest partition D (and what depends on it).",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
    store = storage.get_store()
    by_day = landing_entries_by_day(store)
    handled = _handled(context.cursor, by_day)
    valid_days = set(daily_partitions.get_partition_keys(dynamic_partitions_store=None))
    requests, ingested, outside = [], [], []
    # Only days still in the landing zone: the cursor stays as small as the landing zone.
    cursor: dict[str, str] = {}
    for day, entries in by_day.items():
        fp = cursor[day] = fingerprint(entries)
        if handled.get(day) == fp:
            continue
        if day not in valid_days:
            outside.append(day)
        elif ingested_fingerprint(store, day) == fp:
            ingested.append(day)
        else:
            requests.append(
                dg.RunRequest(
                    # the fingerprint, not a tick or a count: a lost cursor asks again with the same key,
                    # which Dagster drops; each change of the day's files asks exactly once
                    run_key=f"landing:{day}:{fp}",
                    partition_key=day,
                    tags={
                        "relevance/trigger": "landing",
                        "relevance/landing_fingerprint": fp,
                        "relevance/landing_files": str(len(entries)),
                    },
                )
            )
    if outside:
        context.log.warning(f"landing days outside the partition range ignored: {outside}")
    if ingested:
        context.log.info(f"landing days the lake already reflects, not launched: {ingested}")
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    if not requests:
        return dg.SkipReason("no new or changed landing files")
    return requests


STALE_STATES = ("WARN", "FAIL")


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=dg.AssetSelection.assets(*FRESHNESS_POLICIES.keys()),
    description="Every 5 minutes: request a run of each asset whose freshness is WARN or FAIL.",
)
def freshness_sensor(context: dg.SensorEvaluationContext):
    keys = [dg.AssetKey.from_user_string(k) for k in FRESHNESS_POLICIES]
    if context.repository_def is not None:
        known = context.repository_def.asset_graph.get_all_asset_keys()
        keys = [k for k in keys if k in known]
    states = read_freshness_states(context.instance, keys)
    stale = sorted(k.to_user_string() for k, s in states.items() if s in STALE_STATES)
    if not stale:
        return dg.SkipReason("all assets fresh (or not yet evaluated)")
    # Partitioned assets are refreshed by the landing sensor; here we only rerun the unpartitioned ones.
    partitioned = {"raw_events", "sessions", "training_pairs"}
    targets = [k for k in stale if k not in partitioned]
    if not targets:
        return dg.SkipReason(f"stale partitioned assets wait for landing files: {stale}")
    bucket = datetime.now(UTC).strftime("%Y%m%dT%H")
    return dg.RunRequest(
        run_key=f"freshness:{bucket}:" + ",".join(targets),
        asset_selection=[dg.AssetKey.from_user_string(k) for k in targets],
        tags={"relevance/trigger": "freshness"},
    )


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=False)
def run_failure_alert(context: dg.RunFailureSensorContext, storage: StorageResource):
    run = context.dagster_run
    alert = {
        "run_id": run.run_id,
        "job": run.job_name,
        "tags": {
            k: v for k, v in run.tags.items() if not k.startswith("dagster/") or k == "dagster/partition"
        },
        "error": context.failure_event.message if context.failure_event else None,
        "recorded_at": datetime.now(UTC).isoformat(),
    }
    context.log.error(f"run {run.run_id} of {run.job_name} failed: {alert['error']}")
    storage.get_store().write_text(f"alerts/run_failures/{run.run_id}.json", json.dumps(alert, indent=2))
