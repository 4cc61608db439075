"""The S3 path end to end on a real S3-compatible server (moto's, on 127.0.0.1): the Dagster storage
resource builds an S3Store through dagster-aws, and both ingestions run against it exactly as locally."""

from __future__ import annotations

import uuid

import pyarrow.dataset as ds
import pytest

from relevance_core.ingest import LandingMissingError, ingest_catalog, ingest_events_day
from relevance_core.storage import S3Store

DAY = "2026-01-10"


@pytest.fixture()
def s3_resource(s3_endpoint):
    import boto3

    from relevance_assets.resources import StorageResource

    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return StorageResource(
        base_uri=f"s3://{bucket}/relevance", s3_endpoint_url=s3_endpoint, s3_region_name="us-east-1"
    )


def test_storage_resource_builds_an_s3_store(s3_resource):
    store = s3_resource.get_store()
    assert isinstance(store, S3Store)
    assert store.base_uri.endswith("/relevance") and store.prefix == "relevance"
    store.write_text("probe/x.txt", "hello")
    assert store.read_text("probe/x.txt") == "hello"
    assert s3_resource.get_store() is store  # one client per resource instance
    # the object really is in the bucket under the prefix (not on local disk)
    keys = [o["Key"] for o in store.client.list_objects_v2(Bucket=store.bucket)["Contents"]]
    assert keys == ["relevance/probe/x.txt"]


def test_event_and_catalog_ingestion_on_s3(spark, s3_resource):
    store = s3_resource.get_store()
    prefix = f"landing/events/date={DAY}"
    store.write_text(
        f"{prefix}/a.csv",
        "user_id,session_id,item_id,event_type,timestamp,device_type\n"
        f"u1,s1,i1,view,{DAY}T10:00:00Z,web\n"
        f"u1,s1,i1,view,{DAY}T10:00:00Z,web\n"
        f"u1,s1,i2,fly,{DAY}T10:00:00Z,web\n",
    )
    store.write_text(
        f"{prefix}/b.jsonl",
        '{"item_id": "i3", "event_type": "click", "timestamp": "' + DAY + 'T11:00:00Z"}\n',
    )
    report = ingest_events_day(spark, store, DAY)
    assert (report.rows_in, report.accepted, report.quarantined, report.duplicates_removed) == (4, 2, 1, 1)
    part = f"lake/raw_events/date={DAY}"
    assert store.resolve_dir(part) != part  # published as a version behind the _CURRENT pointer
    table = ds.dataset(store.local_dir(part), format="parquet").to_table()
    assert sorted(table.column("item_id").to_pylist()) == ["i1", "i3"]
    assert store.list_dirs("lake/raw_events") == [f"date={DAY}"]
    # idempotent on S3 too: the re-run replaces the version, nothing accumulates beyond one previous one
    ingest_events_day(spark, store, DAY)
    assert ds.dataset(store.local_dir(part), format="parquet").to_table().num_rows == 2
    assert len([d for d in store.list_dirs(part) if d.startswith("_v=")]) == 2

    store.write_text("landing/catalog/items.csv", "item_id,title,price\ni1,One,1\ni2,Two,-2\n")
    items = ingest_catalog(store)
    assert (items.accepted, items.reasons) == (1, {"negative_price": 1})
    assert ds.dataset(store.local_dir("lake/items"), format="parquet").to_table().num_rows == 1


def test_missing_landing_day_on_s3_names_the_uri(spark, s3_resource):
    store = s3_resource.get_store()
    with pytest.raises(LandingMissingError, match=r"s3://lake-.*/relevance/landing/events/date=2026-01-11/"):
        ingest_events_day(spark, store, "2026-01-11")
