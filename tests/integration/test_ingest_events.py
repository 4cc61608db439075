"""raw_events ingestion on real Spark: every bad-input class lands in quarantine with its reason, the
counts add up, re-runs replace, and the Dagster asset does the same through its resources.

One mixed-format landing day with every defect is ingested once per module (Spark jobs cost seconds
here); each test then asserts one property of that run.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from relevance_core.ingest import EventIngestConfig, LandingMissingError, ingest_events_day
from relevance_core.schemas import EVENT_ARROW_SCHEMA, QUARANTINE_ARROW_SCHEMA
from relevance_core.storage import LocalStore

DAY = "2026-01-05"
PREFIX = f"landing/events/date={DAY}"
HEADER = "user_id,session_id,item_id,event_type,timestamp,device_type"

# (line, expected reason or None for valid). Valid lines are distinct unless marked as duplicates below.
CSV_LINES: list[tuple[bytes, str | None]] = [
    (b"u1,s1,i1,view,2026-01-05T10:00:00Z,mobile", None),
    (b'u1,"s1,quoted",i2,click,2026-01-05T10:01:00.123+00:00,', None),
    (b"u2,,i3,purchase,2026-01-05 23:59:59.999999,web", None),
    (b"  ,s9,i4,VIEW ,2026-01-05T00:00:00Z,", None),  # blank user → anonymous; type normalised
    (b"u1,s1,i1,view,2026-01-05T10:00:00Z,mobile", "duplicate"),  # exact duplicate of line 1
    (b'u3,"unterminated,i5,view,2026-01-05T10:00:00Z,', "malformed_csv"),
    (b"u3,s3,i6,view", "wrong_column_count"),
    (b"u3,s3,i6,view,2026-01-05T10:00:00Z,web,extra", "wrong_column_count"),
    (b"u\xff\xfe,s3,i7,view,2026-01-05T10:00:00Z,", "invalid_utf8"),
    (b"u4,s4,i8,teleport,2026-01-05T10:00:00Z,", "unknown_event_type"),
    (b"u4,s4,i8,,2026-01-05T10:00:00Z,", "unknown_event_type"),
    (b"u4,s4,,view,2026-01-05T10:00:00Z,", "missing_item_id"),
    (b"u4,s4,   ,view,2026-01-05T10:00:00Z,", "missing_item_id"),
    (b"u4,s4,i9,view,yesterday,", "unparseable_timestamp"),
    (b"u4,s4,i9,view,2026-02-30T10:00:00Z,", "unparseable_timestamp"),
    (b"u4,s4,i9,view,2026,", "unparseable_timestamp"),
    (b"u4,s4,i9,view,,", "missing_timestamp"),
    (b"u4,s4,i9,view,2026-01-04T23:59:59Z,", "timestamp_outside_day"),
    (b"u4,s4,i9,view,2026-01-06T00:00:00Z,", "timestamp_outside_day"),
    (b"u4,s4,i9,view,2026-01-06T00:30:00+01:00,", None),  # = 23:30 UTC on the 5th: inside
]

JSONL_LINES: list[tuple[str, str | None]] = [
    (
        json.dumps(
            {
                "user_id": "u5",
                "item_id": "j1",
                "event_type": "add_to_cart",
                "timestamp": "2026-01-05T12:00:00Z",
            }
        ),
        None,
    ),
    (
        json.dumps(
            {"user_id": 77, "item_id": 123, "event_type": "view", "timestamp": "2026-01-05T12:00:01Z"}
        ),
        None,
    ),
    (
        json.dumps(
            {"item_id": "j2", "event_type": "impression", "timestamp": "2026-01-05T12:00:02Z", "x": 1}
        ),
        None,
    ),
    ("{not json", "malformed_json"),
    ("[1, 2, 3]", "malformed_json"),
    (
        json.dumps({"user_id": "u5", "event_type": "view", "timestamp": "2026-01-05T12:00:00Z"}),
        "missing_item_id",
    ),
    (
        json.dumps({"item_id": "j3", "event_type": "view", "timestamp": "2026-01-07T12:00:00Z"}),
        "timestamp_outside_day",
    ),
]


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


PARQUET_TYPED = pa.table(
    {
        "user_id": ["p1", "p1", None],
        "item_id": ["k1", "k1", "k2"],
        "event_type": ["contact_seller", "contact_seller", "add_to_favorites"],
        "timestamp": pa.array(
            [1767610800000000, 1767610800000000, 1767524400000000], pa.timestamp("us", tz="UTC")
        ),
    }
)  # row 2 duplicates row 1; row 3 is 2026-01-04T11:00Z (outside the day)
PARQUET_TEXT = pa.table(
    {
        "item_id": ["k3", ""],
        "event_type": ["view", "view"],
        "timestamp": ["2026-01-05T08:00:00Z", "2026-01-05T08:00:00Z"],
        "session_id": ["ps", "ps"],
    }
)  # a string timestamp column in another file: a different schema in the same day


def write_landing_day(store, *, day: str = DAY) -> dict[str, int]:
    """The day's files, and the expected counts derived from the table above (not from the code)."""
    prefix = f"landing/events/date={day}"
    csv_body = HEADER.encode() + b"\n" + b"\n".join(line for line, _ in CSV_LINES) + b"\n\n"
    store.write_bytes(f"{prefix}/part-0.csv", csv_body)
    store.write_bytes(f"{prefix}/part-1.jsonl", ("\n".join(line for line, _ in JSONL_LINES) + "\n").encode())
    store.write_bytes(f"{prefix}/part-2.parquet", _parquet_bytes(PARQUET_TYPED))
    store.write_bytes(f"{prefix}/part-3.parquet", _parquet_bytes(PARQUET_TEXT))
    store.write_bytes(f"{prefix}/README.txt", b"not data")
    store.write_bytes(f"{prefix}/_SUCCESS", b"")
    expected: dict[str, int] = {}
    for _, reason in [*CSV_LINES, *JSONL_LINES]:
        key = reason or "valid"
        expected[key] = expected.get(key, 0) + 1
    expected["duplicate"] += 1  # parquet row 2
    expected["valid"] += 2  # parquet k1, k3
    expected["timestamp_outside_day"] += 1  # parquet k2
    expected["missing_item_id"] += 1  # parquet ""
    expected["rows_in"] = len(CSV_LINES) + len(JSONL_LINES) + PARQUET_TYPED.num_rows + PARQUET_TEXT.num_rows
    return expected


def read_partition(store, key: str) -> pa.Table:
    return ds.dataset(store.local_dir(key), format="parquet").to_table()


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory):
    store = LocalStore(tmp_path_factory.mktemp("events") / "home")
    expected = write_landing_day(store)
    report = ingest_events_day(spark, store, DAY, config=EventIngestConfig())
    return store, report, expected


def test_accounting_identity_against_hand_counts(ingested):
    store, report, expected = ingested
    accepted = read_partition(store, f"lake/raw_events/date={DAY}")
    quarantine = read_partition(store, f"lake/quarantine/raw_events/date={DAY}")
    assert report.rows_in == expected["rows_in"]
    assert accepted.num_rows == report.accepted == expected["valid"]
    assert quarantine.num_rows == report.quarantined
    assert report.duplicates_removed == expected["duplicate"]
    # the identity, from what is on disk and what was written by hand
    assert expected["rows_in"] == accepted.num_rows + quarantine.num_rows + report.duplicates_removed
    assert report.header_lines == 1 and report.blank_lines == 1
    report.check()


@pytest.mark.parametrize(
    "reason",
    [
        "malformed_csv",
        "wrong_column_count",
        "invalid_utf8",
        "unknown_event_type",
        "missing_item_id",
        "unparseable_timestamp",
        "missing_timestamp",
        "timestamp_outside_day",
        "malformed_json",
    ],
)
def test_each_bad_input_class_is_quarantined_with_its_reason(ingested, reason):
    store, report, expected = ingested
    quarantine = read_partition(store, f"lake/quarantine/raw_events/date={DAY}").to_pylist()
    rows = [r for r in quarantine if r["reason"] == reason]
    assert len(rows) == expected[reason] == report.reasons[reason]
    assert all(r["source_file"].startswith(f"{PREFIX}/part-") for r in rows)
    assert all(r["raw"] for r in rows)


def test_quarantine_keeps_the_original_line(ingested):
    store, _, _ = ingested
    quarantine = read_partition(store, f"lake/quarantine/raw_events/date={DAY}").to_pylist()
    by_raw = {r["raw"]: r for r in quarantine}
    assert by_raw["u3,s3,i6,view"]["reason"] == "wrong_column_count"
    assert by_raw["u3,s3,i6,view"]["source_file"] == f"{PREFIX}/part-0.csv"
    assert by_raw["{not json"]["source_file"] == f"{PREFIX}/part-1.jsonl"
    bad = [r for r in quarantine if r["reason"] == "invalid_utf8"]
    assert bad[0]["raw"].startswith("u\ufffd")  # the bad bytes are shown, replaced, not lost
    parquet_rows = [r for r in quarantine if r["source_file"].endswith(".parquet")]
    assert {json.loads(r["raw"])["item_id"] for r in parquet_rows} == {"k2", ""}


def test_accepted_rows_are_canonical(ingested):
    store, _, _ = ingested
    part = f"lake/raw_events/date={DAY}"
    files = sorted(store.local_dir(part).glob("*.parquet"))
    assert files and all(pq.read_schema(f).equals(EVENT_ARROW_SCHEMA) for f in files)
    rows = read_partition(store, part).to_pylist()
    by_item = {r["item_id"]: r for r in rows}
    assert by_item["i2"]["session_id"] == "s1,quoted"
    assert by_item["i4"]["user_id"] is None and by_item["i4"]["event_type"] == "view"
    assert by_item["i4"]["device_type"] is None
    assert by_item["i3"]["timestamp"].isoformat() == "2026-01-05T23:59:59.999999+00:00"
    assert by_item["i9"]["timestamp"].isoformat() == "2026-01-05T23:30:00+00:00"
    assert by_item["123"]["user_id"] == "77"  # JSON numbers are ids too
    assert by_item["k3"]["session_id"] == "ps"
    assert len([r for r in rows if r["item_id"] == "i1"]) == 1
    assert len([r for r in rows if r["item_id"] == "k1"]) == 1


def test_unknown_files_are_reported_not_read(ingested):
    _, report, _ = ingested
    assert report.skipped_files == [f"{PREFIX}/README.txt"]
    assert len(report.files) == 4


def test_quarantine_schema(ingested):
    store, _, _ = ingested
    for f in store.local_dir(f"lake/quarantine/raw_events/date={DAY}").glob("*.parquet"):
        assert pq.read_schema(f).remove_metadata().equals(QUARANTINE_ARROW_SCHEMA)


def test_rerun_replaces_the_partition(spark, store):
    day = "2026-01-06"
    prefix = f"landing/events/date={day}"
    store.write_text(
        f"{prefix}/a.csv", f"{HEADER}\nu,s,x1,view,{day}T01:00:00Z,\nu,s,x2,view,{day}T02:00:00Z,\n"
    )
    first = ingest_events_day(spark, store, day)
    again = ingest_events_day(spark, store, day)
    assert (first.accepted, again.accepted) == (2, 2)
    assert read_partition(store, f"lake/raw_events/date={day}").num_rows == 2  # not 4: replaced, not appended
    # a corrected export replaces the landing file: the partition follows it, nothing of the old remains
    store.write_text(f"{prefix}/a.csv", f"{HEADER}\nu,s,x3,view,{day}T03:00:00Z,\nbad line\n")
    third = ingest_events_day(spark, store, day)
    assert read_partition(store, f"lake/raw_events/date={day}").column("item_id").to_pylist() == ["x3"]
    assert third.reasons == {"wrong_column_count": 1}
    assert read_partition(store, f"lake/quarantine/raw_events/date={day}").num_rows == 1
    assert not [k for k in store.list("lake") if "/." in k]  # no temporaries visible


def test_empty_landing_day_succeeds_with_zero_rows(spark, store):
    day = "2026-01-07"
    store.path(f"landing/events/date={day}").mkdir(parents=True)
    report = ingest_events_day(spark, store, day)
    assert (report.rows_in, report.accepted, report.quarantined, report.duplicates_removed) == (0, 0, 0, 0)
    assert report.empty and "no records" in report.summary()
    table = read_partition(store, f"lake/raw_events/date={day}")
    assert table.num_rows == 0 and table.schema.equals(EVENT_ARROW_SCHEMA)


def test_header_only_file_is_an_empty_day(spark, store):
    day = "2026-01-08"
    store.write_text(f"landing/events/date={day}/a.csv", HEADER + "\n")
    report = ingest_events_day(spark, store, day)
    assert report.empty and report.header_lines == 1
    assert read_partition(store, f"lake/raw_events/date={day}").num_rows == 0


def test_missing_landing_day_names_the_path(spark, store):
    with pytest.raises(LandingMissingError, match=r"landing/events/date=2026-01-09/ does not exist"):
        ingest_events_day(spark, store, "2026-01-09")
    assert not store.list("lake")


def test_bad_partition_key_is_refused(spark, store):
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        ingest_events_day(spark, store, "2026-1-5")


def test_raw_events_asset_materializes_with_metadata(spark, tmp_path):
    """The Dagster asset through its real resources (LazyPySparkResource reuses the test session)."""
    import dagster as dg
    from dagster_pyspark import LazyPySparkResource

    from relevance_assets.defs.ingestion.assets import raw_events
    from relevance_assets.defs.ingestion.checks import raw_events_quarantine_rate
    from relevance_assets.resources import StorageResource
    from relevance_core.spark import spark_conf

    home = tmp_path / "home"
    store = LocalStore(home)
    expected = write_landing_day(store)
    resources = {
        "storage": StorageResource(base_uri=str(home)),
        "spark": LazyPySparkResource(spark_config=spark_conf()),
    }
    result = dg.materialize(
        [raw_events, raw_events_quarantine_rate],
        partition_key=DAY,
        resources=resources,
        raise_on_error=False,
    )
    materialization = result.asset_materializations_for_node("raw_events")[0]
    meta = materialization.metadata
    assert meta["rows_in"].value == expected["rows_in"]
    assert meta["accepted"].value == expected["valid"]
    assert meta["duplicates_removed"].value == expected["duplicate"]
    assert meta["quarantined_invalid_utf8"].value == expected["invalid_utf8"]
    assert meta["quarantined_timestamp_outside_day"].value == expected["timestamp_outside_day"]
    assert meta["quarantine_rate"].value > 0.05
    # this day is far above the 5% default: the blocking check fails the run (materialization recorded)
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed
    assert not result.success
    # with the threshold raised by config, the same day passes
    ok = dg.materialize(
        [raw_events, raw_events_quarantine_rate],
        partition_key=DAY,
        resources=resources,
        run_config={
            "ops": {"raw_events_quarantine_rate_below_threshold": {"config": {"max_quarantine_rate": 0.9}}}
        },
    )
    assert ok.success and ok.get_asset_check_evaluations()[0].passed
