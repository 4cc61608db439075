"""Sensors that keep the graph fresh without a person watching it; all start RUNNING.

* ``landing_zone_sensor``: a new landing file for day D launches the ``ingest_day`` job for partition D
  (raw_events → sessions → training_pairs). The run key names the files, so a file is never ingested twice
  even if the cursor is lost; the cursor makes each tick cheap.
* ``freshness_sensor``: reads the freshness state the daemon computed and asks for a run of each stale
  (WARN/FAIL) asset, at most once per state change.
* ``run_failure_alert``: logs and records every failed run as an alert object in the artifact store
  (``alerts/run_failures/<run_id>.json``) where the on-call dashboards read them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import dagster as dg

from relevance_assets.automation import FRESHNESS_POLICIES
from relevance_assets.freshness_state import read_freshness_states
from relevance_assets.partitions import daily_partitions
from relevance_assets.resources import StorageResource
from relevance_core.settings import LAYOUT

_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
LANDING_FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")

ingest_day_job = dg.define_asset_job(
    "ingest_day",
    selection=dg.AssetSelection.assets("raw_events", "sessions", "training_pairs"),
    partitions_def=daily_partitions,
    description="Ingest one landing day and derive its sessions and training pairs.",
)


def landing_files_by_day(store) -> dict[str, list[str]]:
    """Landing event files grouped by day, ignoring hidden/temporary files."""
    out: dict[str, list[str]] = {}
    for day_dir in store.list_dirs(LAYOUT.events_landing):
        m = _DAY_DIR.match(day_dir)
        if not m:
            continue
        files = [
            k
            for k in store.list(f"{LAYOUT.events_landing}/{day_dir}")
            if k.endswith(LANDING_FILE_SUFFIXES) and not k.rsplit("/", 1)[-1].startswith((".", "_"))
        ]
        if files:
            out[m.group(1)] = sorted(files)
    return out


@dg.sensor(
    job=ingest_day_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New landing files for day D → ingest partition D (and what depends on it).",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
    seen: set[str] = set(json.loads(context.cursor)) if context.cursor else set()
    valid_days = set(daily_partitions.get_partition_keys(dynamic_partitions_store=None))
    requests = []
    skipped = []
    new_seen = set(seen)
    for day, files in landing_files_by_day(storage.get_store()).items():
        new = [f for f in files if f not in seen]
        if not new:
            continue
        new_seen.update(new)
        if day not in valid_days:
            skipped.append(day)
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"landing:{day}:" + ",".join(sorted(new)),
                partition_key=day,
                tags={"relevance/trigger": "landing", "relevance/new_files": str(len(new))},
            )
        )
    if skipped:
        context.log.warning(f"landing days outside the partition range ignored: {sorted(skipped)}")
    context.update_cursor(json.dumps(sorted(new_seen)))
    if not requests:
        return dg.SkipReason("no new landing files")
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
