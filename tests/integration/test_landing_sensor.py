"""The landing sensor after ``make demo``: the days the demo ingested in process (the code location's own
job, on the same Dagster instance) launch nothing; a changed landing file launches exactly its day, once;
a day re-ingested by hand with ``relevance ingest`` launches nothing either. On S3 the same, from the
object listing.

One tiny generated marketplace is ingested once per module (Spark jobs cost seconds here); the tests then
change landing files and evaluate the real sensor against that instance.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from relevance_core.ingest.fingerprint import ingested_fingerprint
from relevance_core.settings import LAYOUT
from relevance_core.storage import LocalStore


@pytest.fixture(scope="module")
def demo(spark, tmp_path_factory):
    """``relevance demo``'s ingestion steps: the landing zone from the generator, then every day of
    ``raw_events`` through the code location's asset job, executed in process (LazyPySparkResource reuses
    the test session)."""
    from relevance_assets.definitions import defs as load_defs
    from relevance_core.generator import preset, write_marketplace

    home = tmp_path_factory.mktemp("landing-sensor") / "home"
    store = LocalStore(home)
    report = write_marketplace(preset("tiny", n_days=3, n_events=3_000), store)
    days = [d.date for d in report.days]
    mp = pytest.MonkeyPatch()
    mp.setenv("RELEVANCE_HOME", str(home))  # the code location's resources read it when loaded
    try:
        defs = load_defs()
        job = defs.resolve_implicit_global_asset_job_def()
        instance = dg.DagsterInstance.ephemeral()
        for day in days:
            result = job.execute_in_process(
                instance=instance, asset_selection=[dg.AssetKey("raw_events")], partition_key=day
            )
            assert result.success, day
        yield {"store": store, "days": days, "instance": instance, "defs": defs}
    finally:
        mp.undo()


def _evaluate(demo, cursor: str | None = None) -> tuple[list[dg.RunRequest], str | None]:
    from relevance_assets.resources import StorageResource

    sensor = demo["defs"].resolve_sensor_def("landing_zone_sensor")
    ctx = dg.build_sensor_context(
        instance=demo["instance"],
        cursor=cursor,
        repository_def=demo["defs"].get_repository_def(),
        resources={"storage": StorageResource(base_uri=str(demo["store"].root))},
    )
    result = sensor(ctx)
    return ([] if isinstance(result, dg.SkipReason) else list(result)), ctx.cursor


def _append_rows(store: LocalStore, day: str) -> None:
    """One new valid event in the day's text file (CSV or JSON Lines, whichever the generator wrote)."""
    key = next(k for k in store.list(LAYOUT.landing_day(day)) if k.endswith((".csv", ".jsonl")))
    path = store.path(key)
    data = path.read_bytes()  # bytes: the generator plants invalid UTF-8 lines
    values = {"user_id": "u-new", "item_id": "i-new", "event_type": "view", "timestamp": f"{day}T12:00:00Z"}
    if key.endswith(".csv"):
        columns = data.splitlines()[0].decode().split(",")
        line = ",".join(values.get(c.strip(), "") for c in columns)
    else:
        line = json.dumps(values)
    with path.open("ab") as f:
        f.write((b"" if data.endswith(b"\n") else b"\n") + line.encode() + b"\n")


def test_days_the_demo_ingested_launch_nothing(demo):
    requests, cursor = _evaluate(demo)
    assert requests == []
    assert set(json.loads(cursor)) == set(demo["days"])
    # The materialization shows the same fingerprint the lake records for the sensor.
    for day in demo["days"]:
        records = (
            demo["instance"]
            .fetch_materializations(
                dg.AssetRecordsFilter(dg.AssetKey("raw_events"), asset_partitions=[day]), limit=1
            )
            .records
        )
        recorded = records[0].asset_materialization.metadata["landing_fingerprint"].value
        assert recorded == ingested_fingerprint(demo["store"], day)


def test_changed_file_launches_its_day_once_and_manual_ingest_settles_it(demo):
    from relevance_cli.main import main as cli

    store, days = demo["store"], demo["days"]
    _, cursor = _evaluate(demo)
    day = days[1]
    _append_rows(store, day)

    requests, cursor = _evaluate(demo, cursor)
    assert [r.partition_key for r in requests] == [day]
    assert _evaluate(demo, cursor)[0] == []  # the next tick does not ask again

    # Ingested by hand instead of by the launched run: a sensor without a cursor finds nothing to do.
    assert cli(["ingest", "--date", day, "--home", str(store.root)]) == 0
    assert _evaluate(demo)[0] == []


def test_on_s3_the_fingerprint_comes_from_the_listing(s3_endpoint):
    """S3 (moto's server): sizes and ETags from one listing, under the store's key prefix; a rewritten
    object launches its day, the recorded state does not."""
    import uuid

    import boto3

    from relevance_assets.defs.operations.sensors import landing_zone_sensor
    from relevance_assets.resources import StorageResource
    from relevance_core.ingest.fingerprint import landing_entries, record_ingested

    endpoint = s3_endpoint
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    storage = StorageResource(
        base_uri=f"s3://{bucket}/relevance", s3_endpoint_url=endpoint, s3_region_name="us-east-1"
    )
    store = storage.get_store()
    day = "2026-01-10"
    line = json.dumps({"item_id": "i1", "event_type": "view", "timestamp": f"{day}T10:00:00Z"}) + "\n"
    key = f"{LAYOUT.landing_day(day)}/events.jsonl"
    store.write_text(key, line)
    entries = landing_entries(store, day)
    assert [(e.key, e.size) for e in entries] == [(key, len(line))] and entries[0].version
    record_ingested(store, day, entries)

    def evaluate():
        ctx = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={"storage": storage})
        result = landing_zone_sensor(ctx)
        return [] if isinstance(result, dg.SkipReason) else [r.partition_key for r in result]

    assert evaluate() == []
    store.write_text(key, line * 2)
    assert evaluate() == [day]


def test_a_gzipped_json_lines_file_launches_its_day_and_a_file_ingestion_skips_does_not(demo):
    """The sensor watches exactly the files ingestion reads (one list of formats): a ``.jsonl.gz``
    dropped into a day launches it; a ``.txt`` beside it does not."""
    import gzip

    store, day = demo["store"], demo["days"][2]
    _, cursor = _evaluate(demo)
    store.write_bytes(f"{LAYOUT.landing_day(day)}/notes.txt", b"not an event file\n")
    assert _evaluate(demo, cursor)[0] == []

    row = {"user_id": "u-gz", "item_id": "i-gz", "event_type": "view", "timestamp": f"{day}T13:00:00Z"}
    store.write_bytes(
        f"{LAYOUT.landing_day(day)}/late.jsonl.gz", gzip.compress(json.dumps(row).encode() + b"\n")
    )
    requests, _ = _evaluate(demo, cursor)
    assert [r.partition_key for r in requests] == [day]
