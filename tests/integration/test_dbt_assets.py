"""The dbt project on DuckDB inside the Dagster graph: real dbt, real DuckDB, real Parquet, in-process Dagster.

A small lake is built with the canonical Arrow schemas, the dbt assets are materialized with
``dg.materialize``, and the warehouse tables are read back with ``relevance_core.warehouse.read_table``
(the helper the model and the service use). The numbers asserted are worked out by hand in the comments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from relevance_assets.defs.catalog.assets import CATALOG_GROUP, catalog_dbt
from relevance_assets.defs.catalog.project import (
    DBT_PROJECT_DIR,
    DUCKDB_WRITER_POOL,
    dbt_project,
    dbt_resource,
    manifest_is_current,
)
from relevance_assets.resources import StorageResource
from relevance_core.schemas import DEFAULT_EVENT_WEIGHTS, EVENT_ARROW_SCHEMA, EVENT_TYPES, ITEM_ARROW_SCHEMA
from relevance_core.storage import LocalStore
from relevance_core.warehouse import WAREHOUSE_KEY, WarehouseError, read_table, warehouse_path

MODELS = ("stg_items", "stg_events", "dim_items", "item_popularity", "daily_event_stats")
AS_OF = datetime(2026, 3, 28, tzinfo=UTC)  # the newest event day of the constructed lake
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


# -- building a lake ---------------------------------------------------------------------------------------


def item(
    item_id: str, category_path: str | None, price: float | None, brand: str | None = None, **kw
) -> dict:
    row = {c: None for c in ITEM_ARROW_SCHEMA.names}
    row.update(
        item_id=item_id, title=f"Item {item_id}", category_path=category_path, price=price, brand=brand
    )
    row.update(created_at=CREATED, available=True)
    row.update(kw)
    return row


def event(
    item_id: str, event_type: str, ts: datetime, user_id: str | None = "u1", session_id: str | None = None
):
    return {
        "user_id": user_id,
        "session_id": session_id,
        "item_id": item_id,
        "event_type": event_type,
        "timestamp": ts,
        "device_type": None,
    }


def write_items(root: Path, rows: list[dict]) -> None:
    d = root / "lake" / "items"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ITEM_ARROW_SCHEMA), d / "part-0.parquet")


def write_events(root: Path, rows: list[dict]) -> None:
    """One ``date=D`` directory per UTC day of the events, as the raw_events asset writes them."""
    by_day: dict[str, list[dict]] = {}
    for r in rows:
        by_day.setdefault(r["timestamp"].astimezone(UTC).date().isoformat(), []).append(r)
    for day, day_rows in by_day.items():
        d = root / "lake" / "raw_events" / f"date={day}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(day_rows, schema=EVENT_ARROW_SCHEMA), d / "part-0.parquet")


def catalog_rows() -> list[dict]:
    rows = [
        # path normalisation and level split; brand canonicalisation; a missing `available` means listed
        item("a", " Electronics >Phones>  Apple > iPhone 15 ", 500.0, "  Apple   Inc ", available=None),
        item("b", "Books", 12.0, ""),
        item("c", None, None, "ACME", condition=" Like New "),
    ]
    # 20 Computers items with distinct prices -> each decile holds two. 10 Home items in two sub-categories
    # -> one per decile: buckets are per category_l1, not per full path.
    rows += [item(f"l{i:02d}", "Computers > Laptops", 1000.0 + i, "Dell") for i in range(20)]
    rows += [
        item(f"h{i}", "Home > Kitchen > Pans" if i % 2 else "Home > Garden", 10.0 * (i + 1))
        for i in range(10)
    ]
    # two Toys items at the same price must share a bucket; a Toys item without a price has none
    rows += [item("t1", "Toys", 5.0), item("t2", "Toys", 5.0), item("t3", "Toys", None)]
    return rows


def event_rows() -> list[dict]:
    day = timedelta(days=1)
    rows = [
        # item a: age 0: 2 views; age 3: 1 purchase; age 27: 1 click; age 28: 1 view (outside the 28-day window)
        event("a", "view", AS_OF + timedelta(hours=9), user_id="u1", session_id="s1"),
        event("a", "view", AS_OF + timedelta(hours=10), user_id="u2", session_id="s2"),
        event("a", "purchase", AS_OF - 3 * day, user_id="u1", session_id="s0"),
        event("a", "click", AS_OF - 27 * day + timedelta(hours=23, minutes=59), user_id="u3"),
        event("a", "view", AS_OF - 28 * day, user_id="u4"),
        # item l00: 5 impressions today (weight 0) from an anonymous visitor
        *[event("l00", "impression", AS_OF + timedelta(minutes=m), user_id=None) for m in range(5)],
        # an item the catalog does not know: kept out of item_popularity, counted in daily stats
        event("ghost", "add_to_cart", AS_OF + timedelta(hours=1), user_id="u9", session_id="s9"),
    ]
    return rows


def materialize(
    home: Path | str, *, raise_on_error: bool = True, selection: list[str] | None = None, **storage_kw
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [catalog_dbt],
        resources={"dbt": dbt_resource(), "storage": StorageResource(base_uri=str(home), **storage_kw)},
        raise_on_error=raise_on_error,
        selection=selection,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dg.ExecuteInProcessResult]:
    home = tmp_path_factory.mktemp("dbt") / "home"
    write_items(home, catalog_rows())
    write_events(home, event_rows())
    # a half-published partition (LocalStore.replace_dir's staging name) must never be read
    hidden = home / "lake" / "raw_events" / ".date=2026-03-28.new-deadbeef"
    hidden.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist([event("a", "purchase", AS_OF)] * 50, schema=EVENT_ARROW_SCHEMA),
        hidden / "part-0.parquet",
    )
    return home, materialize(home)


def rows_by_id(home: Path, table: str) -> dict[str, dict]:
    return {r["item_id"]: r for r in read_table(home / WAREHOUSE_KEY, table).to_pylist()}


# -- the graph ---------------------------------------------------------------------------------------------


def test_manifest_is_prepared_outside_dagster_dev():
    assert Path(dbt_project.manifest_path).exists()
    assert manifest_is_current(dbt_project)


def test_dbt_models_sit_downstream_of_the_ingestion_assets():
    from relevance_assets.definitions import defs

    graph = defs().resolve_asset_graph()
    key = dg.AssetKey
    assert key("items") in graph.get(key("stg_items")).parent_keys
    assert key("raw_events") in graph.get(key("stg_events")).parent_keys
    assert graph.get(key("dim_items")).parent_keys == {key("stg_items")}
    for mart in ("item_popularity", "daily_event_stats"):
        assert graph.get(key(mart)).parent_keys == {key("dim_items"), key("stg_events")}
    # the sources resolve to the real ingestion assets, not to stand-in external assets
    assert graph.get(key("items")).is_materializable and graph.get(key("raw_events")).is_materializable
    # transitively, every mart depends on both lake tables
    assert {key("items"), key("raw_events")} <= graph.get_ancestor_asset_keys(key("item_popularity"))
    for model in MODELS:
        node = graph.get(key(model))
        assert node.group_name == CATALOG_GROUP
        assert {"dbt", "duckdb"} <= set(node.kinds)
    # dbt tests are asset checks on the models
    checks = {c.name for c in graph.asset_check_keys if c.asset_key == key("stg_items")}
    assert "unique_stg_items_item_id" in checks
    assert catalog_dbt.op.pool == DUCKDB_WRITER_POOL


def test_python_weights_and_dbt_tests_agree_with_the_schemas():
    """dbt cannot import Python: the lists it repeats must stay equal to relevance_core.schemas."""
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert project["vars"]["event_weights"] == {str(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()}
    staging = yaml.safe_load((DBT_PROJECT_DIR / "models" / "staging" / "staging.yml").read_text())
    events = next(m for m in staging["models"] if m["name"] == "stg_events")
    event_type = next(c for c in events["columns"] if c["name"] == "event_type")
    accepted = next(t["accepted_values"] for t in event_type["data_tests"] if isinstance(t, dict))
    assert sorted(accepted["arguments"]["values"]) == sorted(EVENT_TYPES)


# -- the build ---------------------------------------------------------------------------------------------


def test_build_materializes_every_model_and_passes_every_check(built):
    home, result = built
    assert result.success
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == set(MODELS)
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(list(catalog_dbt.check_specs)) > 20
    failed = [e.check_name for e in evaluations if not e.passed]
    assert failed == []
    # the warehouse is published whole, with no build copy left beside it
    assert (home / WAREHOUSE_KEY).exists()
    assert not [p.name for p in home.iterdir() if ".building" in p.name]


def test_dim_items_splits_levels_and_canonicalises(built):
    home, _ = built
    items = rows_by_id(home, "dim_items")
    a, b, c = items["a"], items["b"], items["c"]
    assert a["category_path"] == "Electronics > Phones > Apple > iPhone 15"
    assert (a["category_l1"], a["category_l2"], a["category_l3"]) == ("Electronics", "Phones", "Apple")
    assert (b["category_l1"], b["category_l2"], b["category_l3"]) == ("Books", None, None)
    assert (c["category_path"], c["category_l1"]) == (None, None)
    assert a["brand"] == "apple inc" and b["brand"] is None and c["brand"] == "acme"
    assert c["condition"] == "like_new"
    assert a["available"] is True
    assert a["created_at"] == CREATED
    table = read_table(home / WAREHOUSE_KEY, "dim_items")
    assert table.column_names == [
        "item_id", "title", "description", "category_path", "category_l1", "category_l2", "category_l3",
        "price", "price_norm", "price_bucket", "brand", "location", "condition", "image_url", "seller_id",
        "available", "created_at",
    ]  # fmt: skip
    assert table.schema.field("price_bucket").type == pa.int32()
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")


def test_price_buckets_are_deciles_within_category_l1(built):
    home, _ = built
    items = rows_by_id(home, "dim_items")
    laptops = sorted((r["price"], r["price_bucket"]) for k, r in items.items() if k.startswith("l"))
    # 20 distinct prices: the two cheapest in bucket 0, ..., the two dearest in bucket 9
    assert [bucket for _, bucket in laptops] == [i // 2 for i in range(20)]
    pans = sorted((r["price"], r["price_bucket"]) for k, r in items.items() if k.startswith("h"))
    assert [bucket for _, bucket in pans] == list(range(10))
    assert items["t1"]["price_bucket"] == items["t2"]["price_bucket"] == 5  # ties share the middle
    assert items["t3"]["price_bucket"] is None and items["t3"]["price_norm"] is None
    assert items["a"]["price_bucket"] == items["b"]["price_bucket"] == 5  # alone in their category_l1
    norms = [r["price_norm"] for r in items.values() if r["price_norm"] is not None]
    assert all(0 < n < 1 for n in norms)
    assert items["h0"]["price_norm"] == pytest.approx(0.05) and items["h9"]["price_norm"] == pytest.approx(
        0.95
    )


def test_item_popularity_counts_windows_and_trending(built):
    home, _ = built
    pop = rows_by_id(home, "item_popularity")
    assert set(pop) == set(rows_by_id(home, "dim_items"))  # one row per catalog item, none for "ghost"
    a = pop["a"]
    assert str(a["as_of_date"]) == "2026-03-28"
    assert (a["events_1d"], a["events_7d"], a["events_28d"], a["events_all"]) == (2, 3, 4, 5)
    assert (a["view_1d"], a["purchase_7d"], a["click_7d"], a["click_28d"], a["view_28d"]) == (2, 1, 0, 1, 2)
    # weights: view 1, purchase 10, click 2 -> 2 | 12 | 14
    assert (a["score_1d"], a["score_7d"], a["score_28d"]) == (2.0, 12.0, 14.0)
    assert a["popularity_score"] == 14.0
    assert a["users_28d"] == 3  # u1, u2, u3 (u4's view is 28 days old)
    # (2/1 + 1) / (14/28 + 1) = 3 / 1.5
    assert a["trending_score"] == pytest.approx(2.0)
    l00 = pop["l00"]
    assert (l00["impression_1d"], l00["events_1d"], l00["score_1d"]) == (5, 5, 0.0)
    quiet = pop["h3"]
    assert (quiet["events_28d"], quiet["popularity_score"], quiet["trending_score"]) == (0, 0.0, 1.0)
    assert quiet["last_event_at"] is None


def test_daily_event_stats(built):
    home, _ = built
    days = {
        str(r["event_date"]): r for r in read_table(home / WAREHOUSE_KEY, "daily_event_stats").to_pylist()
    }
    assert set(days) == {"2026-02-28", "2026-03-01", "2026-03-25", "2026-03-28"}
    today = days["2026-03-28"]
    # 2 views of a + 5 impressions of l00 + 1 add_to_cart of ghost; the hidden staging partition is ignored
    assert (today["events"], today["view_events"], today["impression_events"], today["purchase_events"]) == (
        8,
        2,
        5,
        0,
    )
    assert today["add_to_cart_events"] == 1
    assert today["weighted_events"] == 2.0 + 4.0
    assert (today["users"], today["anonymous_events"], today["sessions"], today["items"]) == (3, 5, 3, 3)
    assert today["unknown_item_events"] == 1
    assert days["2026-03-25"]["purchase_events"] == 1


# -- failures ----------------------------------------------------------------------------------------------


def test_duplicate_item_fails_its_check_and_keeps_the_last_good_dim_items(tmp_path):
    home = tmp_path / "home"
    rows = [item("x", "A > B", 1.0), item("y", "A > B", 2.0)]
    write_items(home, rows)
    write_events(home, [event("x", "view", AS_OF)])
    catalog_only = ["stg_items", "dim_items"]  # a subset keeps the test fast; its checks come with it
    assert materialize(home, selection=catalog_only).success

    # y twice: a broken snapshot merge upstream
    write_items(home, [*rows, item("y", "A > C", 3.0), item("z", "A", 4.0)])
    result = materialize(home, raise_on_error=False, selection=catalog_only)
    assert not result.success
    by_name = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert by_name["unique_stg_items_item_id"].passed is False
    assert by_name["unique_stg_items_item_id"].asset_key == dg.AssetKey("stg_items")
    assert by_name["not_null_stg_items_item_id"].passed is True
    # dbt skipped everything below the failed test; readers still see the previous good catalog
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert "dim_items" not in materialized
    assert sorted(rows_by_id(home, "dim_items")) == ["x", "y"]
    assert len(read_table(home / WAREHOUSE_KEY, "stg_items")) == 4


def test_an_empty_lake_fails_with_a_message_naming_the_missing_asset(tmp_path):
    with pytest.raises(dg.Failure, match="materialize the `items` asset first"):
        materialize(tmp_path / "empty")


def test_read_table_is_read_only_and_refuses_sql_and_missing_tables(built, tmp_path):
    home, _ = built
    db = home / WAREHOUSE_KEY
    with pytest.raises(WarehouseError, match="warehouse not found"):
        read_table(tmp_path / "nope.duckdb", "dim_items")
    with pytest.raises(WarehouseError, match="no table"):
        read_table(db, "no_such_table")
    with pytest.raises(ValueError):
        read_table(db, "dim_items; drop table dim_items")
    assert read_table(db, "dim_items", columns=["price_bucket", "item_id"]).column_names == [
        "price_bucket",
        "item_id",
    ]
    assert warehouse_path(LocalStore(home)) == db


def test_s3_store_builds_from_a_staged_lake_and_uploads_the_warehouse(tmp_path, s3_endpoint):
    """The production layout: the lake on S3 (versioned prefixes behind _CURRENT pointers), staged locally for
    DuckDB; the warehouse uploaded as one object. A real S3-compatible server (moto's), not a mock."""
    import uuid

    import boto3

    from relevance_core.storage import S3Store

    endpoint = s3_endpoint
    client = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    store = S3Store(client, bucket, "home")
    local = tmp_path / "src"
    write_items(local, [item("x", "A > B", 1.0), item("y", "A > B", 2.0)])
    write_events(local, [event("x", "view", AS_OF), event("y", "click", AS_OF - timedelta(days=1))])
    store.replace_dir(local / "lake" / "items", "lake/items")
    for part in sorted((local / "lake" / "raw_events").iterdir()):
        store.replace_dir(part, f"lake/raw_events/{part.name}")

    result = materialize(f"s3://{bucket}/home", s3_endpoint_url=endpoint)
    assert result.success
    assert store.exists(WAREHOUSE_KEY)
    db = warehouse_path(store)  # a local download of the object
    assert sorted(rows_by_id(db.parent, "dim_items")) == ["x", "y"]
    scores = {r["item_id"]: r["score_28d"] for r in read_table(db, "item_popularity").to_pylist()}
    assert scores == {"x": 1.0, "y": 2.0}
