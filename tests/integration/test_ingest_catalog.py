"""Catalog ingestion: every refused row is quarantined with its reason, the newest snapshot of an item
wins, counts add up, and the ``items`` asset publishes the same through Dagster."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from relevance_core.ingest import LandingMissingError, ingest_catalog
from relevance_core.schemas import ITEM_ARROW_SCHEMA, QUARANTINE_ARROW_SCHEMA
from relevance_core.storage import LocalStore

CSV_HEADER = b"item_id,title,description,category_path,price,brand,available,created_at\n"
CSV_ROWS: list[tuple[bytes, str | None]] = [
    (b'a1,Phone,"Two lines,\nwith a comma",Electronics > Phones,199.5,Acme,true,2026-01-01T00:00:00Z', None),
    (b"a2,Camera,,Electronics,0,,false,", None),
    (b"a3,Old Camera,,Electronics,10,,,", None),  # superseded by the JSONL snapshot
    (b"b1,Broken,,x,-5,,true,", "negative_price"),
    (b"b2,Broken,,x,12abc,,true,", "non_numeric_price"),
    (b"b3,Broken,,x,NaN,,true,", "non_numeric_price"),
    (b",No id,,x,1,,true,", "missing_item_id"),
    (b"   ,No id,,x,1,,true,", "missing_item_id"),
    (b"b4,,,x,1,,true,", "missing_title"),
    (b"b5,Bad avail,,x,1,,perhaps,", "invalid_available"),
    (b"b6,Bad date,,x,1,,true,last tuesday", "unparseable_created_at"),
    (b"b7,Too few", "wrong_column_count"),
    (b"b8,Too,many,x,1,,true,,extra", "wrong_column_count"),
]
JSONL_ROWS: list[tuple[str, str | None]] = [
    (json.dumps({"item_id": "a3", "title": "New Camera", "price": 12, "available": False}), None),
    (json.dumps({"item_id": "c1", "title": "Chair", "price": "3.5", "available": "yes"}), None),
    ("{oops", "malformed_json"),
    ('"just a string"', "malformed_json"),
    (json.dumps({"item_id": "c2", "title": "Neg", "price": -0.01}), "negative_price"),
]


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


PARQUET = pa.table(
    {
        "item_id": ["d1", "d2", "a2"],
        "title": ["Desk", "Lamp", "Camera v2"],
        "price": [50.0, -1.0, 1.0],
        "available": [True, True, True],
        "created_at": pa.array([1767225600000000, None, None], pa.timestamp("us")),
    }
)  # d2 negative; a2 here supersedes the CSV's a2 (later file in key order)


def write_catalog(store) -> dict[str, int]:
    store.write_bytes("landing/catalog/snap-1.csv", CSV_HEADER + b"\n".join(r for r, _ in CSV_ROWS) + b"\n")
    store.write_bytes("landing/catalog/snap-2.jsonl", ("\n".join(r for r, _ in JSONL_ROWS) + "\n\n").encode())
    store.write_bytes("landing/catalog/snap-3.parquet", _parquet(PARQUET))
    expected: dict[str, int] = {}
    for _, reason in [*CSV_ROWS, *JSONL_ROWS]:
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    expected["negative_price"] += 1  # parquet d2
    expected["rows_in"] = len(CSV_ROWS) + len(JSONL_ROWS) + PARQUET.num_rows
    expected["items"] = len({"a1", "a2", "a3", "c1", "d1"})
    expected["superseded"] = 2  # a3 (csv), a2 (csv)
    return expected


def test_catalog_quarantine_dedupe_and_accounting(store):
    expected = write_catalog(store)
    report = ingest_catalog(store)
    items = pq.read_table(store.local_dir("lake/items"))
    quarantine = pq.read_table(store.local_dir("lake/quarantine/items"))
    assert report.rows_in == expected["rows_in"]
    assert items.num_rows == report.accepted == expected["items"]
    assert report.duplicates_removed == expected["superseded"]
    assert expected["rows_in"] == items.num_rows + quarantine.num_rows + report.duplicates_removed
    reasons = {k: v for k, v in expected.items() if k not in ("rows_in", "items", "superseded")}
    assert report.reasons == reasons
    got = {}
    for r in quarantine.column("reason").to_pylist():
        got[r] = got.get(r, 0) + 1
    assert got == reasons
    assert items.schema.equals(ITEM_ARROW_SCHEMA)
    assert quarantine.schema.equals(QUARANTINE_ARROW_SCHEMA)

    by_id = {r["item_id"]: r for r in items.to_pylist()}
    assert by_id["a1"]["description"] == "Two lines,\nwith a comma"  # quoted newline read as one field
    assert by_id["a1"]["created_at"].isoformat() == "2026-01-01T00:00:00+00:00"
    assert by_id["a3"]["title"] == "New Camera" and by_id["a3"]["available"] is False
    assert by_id["a2"]["title"] == "Camera v2"  # newest snapshot (key order) wins
    assert by_id["c1"]["price"] == 3.5 and by_id["c1"]["available"] is True
    assert by_id["d1"]["created_at"].isoformat() == "2026-01-01T00:00:00+00:00"  # naive Parquet ts = UTC
    assert by_id["a2"]["price"] == 1.0

    q = quarantine.to_pylist()
    assert {"source_file": "landing/catalog/snap-2.jsonl", "raw": "{oops", "reason": "malformed_json"} in q
    too_few = next(r for r in q if r["raw"].startswith("b7"))
    assert too_few == {
        "source_file": "landing/catalog/snap-1.csv",
        "raw": "b7,Too few",
        "reason": "wrong_column_count",
    }
    negative = next(r for r in q if r["source_file"].endswith(".parquet"))
    assert json.loads(negative["raw"])["item_id"] == "d2"


def test_non_utf8_catalog_rows_are_quarantined(store):
    store.write_bytes(
        "landing/catalog/latin1.csv",
        CSV_HEADER + b'e1,Caf\xe9,,x,1,,true,\ne2,Cafe,,x,1,,true,\ne3,"unterminated,,x,1,,true,\n',
    )
    report = ingest_catalog(store)
    assert report.rows_in == 3
    assert report.reasons == {"invalid_utf8": 1, "malformed_csv": 1}
    assert pq.read_table(store.local_dir("lake/items")).column("item_id").to_pylist() == ["e2"]
    bad = pq.read_table(store.local_dir("lake/quarantine/items")).to_pylist()[0]
    assert bad["reason"] == "invalid_utf8" and "Caf\ufffd" in bad["raw"]


def test_rerun_replaces_items(store):
    store.write_text("landing/catalog/s.csv", "item_id,title\nx1,One\nx2,Two\n")
    ingest_catalog(store)
    store.write_text("landing/catalog/s.csv", "item_id,title\nx1,One again\n")
    report = ingest_catalog(store)
    assert report.accepted == 1
    assert pq.read_table(store.local_dir("lake/items")).column("title").to_pylist() == ["One again"]


def test_empty_and_missing_catalog(store):
    with pytest.raises(LandingMissingError, match="landing/catalog/ does not exist"):
        ingest_catalog(store)
    store.path("landing/catalog").mkdir(parents=True)
    report = ingest_catalog(store)
    assert report.empty and report.accepted == 0
    assert pq.read_table(store.local_dir("lake/items")).schema.equals(ITEM_ARROW_SCHEMA)


def test_items_asset_and_check(tmp_path):
    import dagster as dg

    from relevance_assets.defs.ingestion.assets import items
    from relevance_assets.defs.ingestion.checks import items_quarantine_rate
    from relevance_assets.resources import StorageResource

    home = tmp_path / "home"
    store = LocalStore(home)
    store.write_text("landing/catalog/s.csv", "item_id,title,price\nx1,One,1\nx2,Two,2\nx3,Three,-3\n")
    result = dg.materialize(
        [items, items_quarantine_rate],
        resources={"storage": StorageResource(base_uri=str(home))},
        raise_on_error=False,
    )
    meta = result.asset_materializations_for_node("items")[0].metadata
    assert meta["accepted"].value == 2 and meta["quarantined_negative_price"].value == 1
    assert not result.get_asset_check_evaluations()[0].passed  # 1/3 refused > 5%
    store.write_text("landing/catalog/s.csv", "item_id,title,price\nx1,One,1\nx2,Two,2\n")
    result = dg.materialize(
        [items, items_quarantine_rate], resources={"storage": StorageResource(base_uri=str(home))}
    )
    assert result.success and result.get_asset_check_evaluations()[0].passed
