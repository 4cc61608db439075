"""The DIGINETICA adapter on the real files in ../shared/data (never copied into the repository): the
canonical landing files it writes agree with the raw files, dates shift by whole weeks, and the result
ingests cleanly through the real validation."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from relevance_core.adapters.diginetica import (
    CATALOG_KEY,
    import_diginetica,
    load_events,
    raw_dir,
    shift_days_for,
)
from relevance_core.ingest import ingest_catalog, ingest_events_day
from relevance_core.schemas import EVENT_ARROW_SCHEMA


@pytest.fixture(scope="module")
def raw(diginetica_dir):
    return raw_dir(diginetica_dir)


@pytest.fixture(scope="module")
def raw_views(raw):
    with open(raw / "sample_train-item-views.csv", newline="") as f:
        return list(csv.DictReader(f, delimiter=";"))


def test_events_match_the_raw_files(raw, raw_views):
    events = load_events(raw, purchases="none")
    assert events.schema.equals(EVENT_ARROW_SCHEMA)
    assert events.num_rows == len(raw_views)
    # one row checked field by field against the raw line
    first = raw_views[0]
    expected_ts = datetime.fromisoformat(first["eventdate"]).replace(tzinfo=UTC) + timedelta(
        milliseconds=int(first["timeframe"])
    )
    rows = [
        r
        for r in events.to_pylist()
        if r["session_id"] == f"dg-s{first['session_id']}" and r["item_id"] == first["item_id"]
    ]
    assert expected_ts in [r["timestamp"] for r in rows]
    anonymous = sum(1 for v in raw_views if v["user_id"] == "NA")
    assert events.column("user_id").null_count == anonymous > 0
    assert set(events.column("event_type").to_pylist()) == {"view"}
    ts = events.column("timestamp").to_pylist()
    assert ts == sorted(ts)


def test_purchase_modes(raw, raw_views):
    sessions = {v["session_id"] for v in raw_views}
    with open(raw / "train-purchases.csv", newline="") as f:
        purchases = list(csv.DictReader(f, delimiter=";"))
    in_sample = sum(1 for p in purchases if p["sessionId"] in sessions)
    counts = Counter(load_events(raw).column("event_type").to_pylist())
    assert counts == {"view": len(raw_views), "purchase": in_sample}
    assert Counter(load_events(raw, purchases="all").column("event_type").to_pylist())["purchase"] == len(
        purchases
    )


def test_shift_is_whole_weeks_and_keeps_weekday():
    first = date(2016, 1, 3)  # a Sunday
    shift = shift_days_for(first, "2026-01-01")
    assert shift % 7 == 0
    landed = first + timedelta(days=shift)
    assert landed.weekday() == first.weekday()
    assert date(2026, 1, 1) <= landed < date(2026, 1, 8)
    assert shift_days_for(first, None) == 0
    assert shift_days_for(first, first) == 0


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_import_writes_landing_days_and_catalog(raw, raw_views, store, fmt):
    result = import_diginetica(raw.parent, store, shift_to="2026-01-01", fmt=fmt)
    assert result.shift_days % 7 == 0
    assert date.fromisoformat(result.first_day) >= date(2026, 1, 1)
    assert result.views == len(raw_views)
    assert store.list_dirs("landing/events") == [f"date={d}" for d in result.days]
    assert result.days[0] == result.first_day and result.days[-1] == result.last_day
    # order and gaps are preserved: the raw day histogram, moved by the shift
    raw_days = Counter(
        (datetime.fromisoformat(v["eventdate"]) + timedelta(milliseconds=int(v["timeframe"]))).date()
        + timedelta(days=result.shift_days)
        for v in raw_views
    )
    first_raw_day = min(raw_days)
    key = result.event_keys[first_raw_day.isoformat()]
    assert key.endswith(f"diginetica.{fmt}")
    catalog = pq.read_table(store.local_dir("landing/catalog") / CATALOG_KEY.rsplit("/", 1)[-1])
    assert catalog.num_rows == result.items
    assert set(load_events(raw).column("item_id").to_pylist()) <= set(catalog.column("item_id").to_pylist())
    row = catalog.slice(0, 1).to_pylist()[0]
    assert row["title"] == f"Item {row['item_id']}" and row["category_path"].startswith("Category ")


def test_imported_days_ingest_cleanly(raw, raw_views, store, spark):
    result = import_diginetica(raw, store, shift_to="2026-01-01", fmt="csv")
    busiest = max(result.days, key=lambda d: len(store.read_bytes(result.event_keys[d])))
    report = ingest_events_day(spark, store, busiest)
    assert report.quarantined == 0 and report.accepted > 0
    assert report.rows_in == report.accepted + report.duplicates_removed
    lake = ds.dataset(store.local_dir(f"lake/raw_events/date={busiest}"), format="parquet").to_table()
    assert {t.date().isoformat() for t in lake.column("timestamp").to_pylist()} == {busiest}
    items = ingest_catalog(store)
    assert items.quarantined == 0 and items.accepted == result.items
