"""Sensors and declarative automation, evaluated against the real code location."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from relevance_assets.automation import FRESHNESS_POLICIES
from relevance_assets.definitions import defs as load_defs
from relevance_assets.defs.operations.sensors import freshness_sensor, landing_zone_sensor
from relevance_assets.resources import StorageResource
from relevance_core.ingest.fingerprint import fingerprint, landing_entries, record_ingested
from relevance_core.storage import LocalStore


@pytest.fixture(scope="module")
def defs():
    return load_defs()


def _drop_landing_file(store: LocalStore, day: str, name: str = "events.jsonl") -> str:
    key = f"landing/events/date={day}/{name}"
    store.write_text(
        key, json.dumps({"item_id": "i1", "event_type": "view", "timestamp": f"{day}T10:00:00Z"}) + "\n"
    )
    return key


def test_every_asset_has_a_freshness_policy(defs):
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    missing = sorted(k for k in keys if k not in FRESHNESS_POLICIES)
    assert not missing, f"assets without a freshness policy: {missing}"
    graph = defs.resolve_asset_graph()
    for key in keys:
        assert graph.get(dg.AssetKey.from_user_string(key)).freshness_policy is not None


def test_sensors_start_running(defs):
    names = {s.name: s for s in defs.sensors}
    for name in ("landing_zone_sensor", "freshness_sensor", "run_failure_alert", "relevance_automation"):
        assert names[name].default_status == dg.DefaultSensorStatus.RUNNING, name


def test_landing_sensor_requests_new_day_once(tmp_path):
    store = LocalStore(tmp_path)
    storage = StorageResource(base_uri=str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()

    ctx = dg.build_sensor_context(instance=instance, resources={"storage": storage})
    assert isinstance(landing_zone_sensor(ctx), dg.SkipReason)

    _drop_landing_file(store, "2026-02-03")
    ctx = dg.build_sensor_context(instance=instance, resources={"storage": storage})
    requests = landing_zone_sensor(ctx)
    assert [r.partition_key for r in requests] == ["2026-02-03"]
    cursor = ctx.cursor

    # Same file again (cursor kept) → nothing.
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage})
    assert isinstance(landing_zone_sensor(ctx), dg.SkipReason)

    # Cursor lost: the request comes back with the same run key, which Dagster de-duplicates.
    ctx = dg.build_sensor_context(instance=instance, resources={"storage": storage})
    again = landing_zone_sensor(ctx)
    assert again[0].run_key == requests[0].run_key

    # A second file for the same day → a new request with a new run key.
    _drop_landing_file(store, "2026-02-03", "more.jsonl")
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage})
    more = landing_zone_sensor(ctx)
    assert [r.partition_key for r in more] == ["2026-02-03"]
    assert more[0].run_key != requests[0].run_key
    assert more[0].tags["relevance/landing_files"] == "2"


def test_landing_sensor_ignores_temporary_files_and_days_outside_range(tmp_path):
    store = LocalStore(tmp_path)
    store.write_text("landing/events/date=2026-02-04/_tmp.jsonl", "{}")
    store.write_text("landing/events/date=1999-01-01/events.jsonl", "{}")
    store.write_text("landing/events/notadate/events.jsonl", "{}")
    ctx = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={"storage": StorageResource(base_uri=str(tmp_path))},
    )
    assert isinstance(landing_zone_sensor(ctx), dg.SkipReason)
    assert json.loads(ctx.cursor).keys() == {"1999-01-01"}  # seen (not asked again), not launched


def _evaluate(store: LocalStore, cursor: str | None = None) -> tuple[list[dg.RunRequest], str | None]:
    ctx = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={"storage": StorageResource(base_uri=str(store.root))},
    )
    result = landing_zone_sensor(ctx)
    return ([] if isinstance(result, dg.SkipReason) else list(result)), ctx.cursor


def test_landing_sensor_skips_days_the_lake_already_reflects(tmp_path):
    """The record ``ingest_events_day`` writes after publishing (written here directly: no Spark) is what
    the sensor compares with; the ingestion itself is exercised in tests/integration/test_landing_sensor.py."""
    store = LocalStore(tmp_path)
    for day in ("2026-02-03", "2026-02-04"):
        _drop_landing_file(store, day)
        record_ingested(store, day, landing_entries(store, day))
    requests, cursor = _evaluate(store)
    assert requests == []
    assert set(json.loads(cursor)) == {"2026-02-03", "2026-02-04"}

    # Rewriting a file (more rows) makes the record stale: exactly that day, once.
    key = "landing/events/date=2026-02-04/events.jsonl"
    store.write_text(key, store.read_text(key) * 2)
    requests, cursor2 = _evaluate(store, cursor)
    assert [r.partition_key for r in requests] == ["2026-02-04"]
    assert requests[0].run_key.endswith(fingerprint(landing_entries(store, "2026-02-04")))
    assert _evaluate(store, cursor2)[0] == []
    # A lost cursor asks again with the same run key (Dagster drops it) and nothing for the other day.
    assert [r.run_key for r in _evaluate(store)[0]] == [requests[0].run_key]

    # Once that run has ingested the change, a fresh sensor finds nothing to do.
    record_ingested(store, "2026-02-04", landing_entries(store, "2026-02-04"))
    assert _evaluate(store)[0] == []


def test_landing_sensor_fingerprint_covers_exactly_the_ingested_files(tmp_path):
    """Markers, temporaries and unknown formats are not ingested, so they change nothing; every format the
    ingestion reads (gzip included) does."""
    store = LocalStore(tmp_path)
    day = "2026-02-03"
    _drop_landing_file(store, day)
    record_ingested(store, day, landing_entries(store, day))
    for name in ("_SUCCESS", "_tmp.jsonl", "notes.txt", "sub/_hidden.csv"):
        store.write_text(f"landing/events/date={day}/{name}", "x")
    assert _evaluate(store)[0] == []
    store.write_bytes(f"landing/events/date={day}/late.csv.gz", b"\x1f\x8b")
    assert [r.partition_key for r in _evaluate(store)[0]] == [day]


def test_landing_sensor_accepts_the_earlier_cursor(tmp_path):
    """Before fingerprints the cursor listed the landing keys already requested; an upgrade must not launch
    those days again, only days with a file that list does not name."""
    store = LocalStore(tmp_path)
    old = [_drop_landing_file(store, "2026-02-03"), _drop_landing_file(store, "2026-02-04")]
    _drop_landing_file(store, "2026-02-04", "more.jsonl")
    requests, cursor = _evaluate(store, json.dumps(old))
    assert [r.partition_key for r in requests] == ["2026-02-04"]
    assert set(json.loads(cursor)) == {"2026-02-03", "2026-02-04"}


def _report_state(instance, key: str, state: FreshnessState):
    instance.report_runless_asset_event(
        FreshnessStateChange(
            key=dg.AssetKey(key),
            previous_state=FreshnessState.UNKNOWN,
            new_state=state,
            state_change_timestamp=datetime.now(UTC).timestamp(),
        )
    )


def test_freshness_sensor_requests_stale_assets_and_skips_fresh(defs):
    instance = dg.DagsterInstance.ephemeral()
    repo = defs.get_repository_def()
    for key in FRESHNESS_POLICIES:
        _report_state(instance, key, FreshnessState.PASS)
    ctx = dg.build_sensor_context(instance=instance, repository_def=repo)
    assert isinstance(freshness_sensor(ctx), dg.SkipReason)

    _report_state(instance, "two_tower_model", FreshnessState.FAIL)
    _report_state(instance, "raw_events", FreshnessState.WARN)
    ctx = dg.build_sensor_context(instance=instance, repository_def=repo)
    request = freshness_sensor(ctx)
    assert isinstance(request, dg.RunRequest)
    assert request.asset_selection == [dg.AssetKey("two_tower_model")]


def test_retrain_on_cron_tick_then_downstream_eager(defs):
    instance = dg.DagsterInstance.ephemeral()
    model = dg.AssetKey("two_tower_model")
    day = datetime(2026, 3, 10, tzinfo=UTC)

    before_tick = day + timedelta(hours=1)  # 01:00, retrain cron is 02:00
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=before_tick)
    assert result.get_num_requested(model) == 0

    # Steady state: the whole graph was materialized the day before; then new upstream data arrives.
    graph = defs.resolve_asset_graph()

    def materialize(key):
        pk = "2026-03-09" if graph.get(key).partitions_def is not None else None
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=pk))

    for key in graph.toposorted_asset_keys:
        materialize(key)
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=before_tick + timedelta(minutes=1), cursor=result.cursor
    )
    for parent in graph.get(model).parent_keys:
        materialize(parent)
    after_tick = day + timedelta(hours=2, minutes=5)
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=after_tick, cursor=result.cursor
    )
    # The cron tick retrains, and everything below the model follows eagerly in the same tick, so one run
    # republishes a bundle.
    assert result.get_num_requested(model) == 1
    downstream = [
        k
        for k in graph.toposorted_asset_keys
        if model in graph.get(k).parent_keys
        or k in {dg.AssetKey("offline_evaluation"), dg.AssetKey("published_bundle")}
    ]
    assert {k.to_user_string() for k in downstream} >= {"item_embeddings", "faiss_index", "published_bundle"}
    for key in downstream:
        assert result.get_num_requested(key) == 1, key

    # Once that run has materialized them, nothing is requested again until the next tick.
    for key in [model, *downstream]:
        materialize(key)
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=after_tick + timedelta(minutes=10), cursor=result.cursor
    )
    assert result.total_requested == 0

    # A new day of training pairs alone does not rebuild the index: that waits for the nightly retrain.
    materialize(dg.AssetKey("training_pairs"))
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=after_tick + timedelta(minutes=20), cursor=result.cursor
    )
    assert result.get_num_requested(dg.AssetKey("faiss_index")) == 0
    assert result.get_num_requested(model) == 0
