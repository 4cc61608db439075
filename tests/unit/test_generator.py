"""The synthetic marketplace: deterministic, canonical, and carrying the structure and noise it claims.

Structure tests compare against what chance would give, so a generator that ignored users' preferences,
popularity or sequence would fail them; noise tests recount from the written files, not from the report.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from relevance_core.generator import (
    PRESETS,
    TRUTH_PREFIX,
    MarketplaceConfig,
    generate_tables,
    preset,
    write_marketplace,
)
from relevance_core.generator import vocabulary as V
from relevance_core.schemas import (
    EVENT_ARROW_SCHEMA,
    EVENT_COLUMNS,
    EVENT_TYPES,
    ITEM_ARROW_SCHEMA,
    ITEM_COLUMNS,
)
from relevance_core.storage import LocalStore

ROOT = Path(__file__).resolve().parents[2]
TINY = preset("tiny")
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ACTIONS = set(EVENT_TYPES) - {"impression"}


@pytest.fixture(scope="module")
def tiny():
    items, events, truth = generate_tables(TINY)
    return items, events, truth


@pytest.fixture(scope="module")
def frame(tiny):
    """Events joined with their item's attributes, as plain numpy/python columns."""
    items, events, truth = tiny
    idx = pc.index_in(events["item_id"], items["item_id"]).to_numpy()
    cat_path = np.array(items["category_path"].to_pylist(), dtype=object)
    l2 = np.array([" > ".join(p.split(" > ")[:2]) for p in cat_path], dtype=object)
    bots = set(truth.users.filter(truth.users["is_bot"])["user_id"].to_pylist())
    users = np.array(events["user_id"].to_pylist(), dtype=object)
    return {
        "item_idx": idx,
        "l2": l2[idx],
        "brand": np.array(items["brand"].to_pylist(), dtype=object)[idx],
        "user": users,
        "session": np.array(events["session_id"].to_pylist(), dtype=object),
        "etype": np.array(events["event_type"].to_pylist(), dtype=object),
        "ts": events["timestamp"].cast(pa.int64()).to_numpy(),
        "human": np.array([u is not None and u not in bots for u in users]),
        "bot": np.array([u in bots for u in users]),
    }


# -- determinism and schema ------------------------------------------------------------------------------
def test_same_seed_gives_identical_tables_and_files(tiny, tmp_path):
    items, events, truth = tiny
    items2, events2, truth2 = generate_tables(TINY)
    assert items.equals(items2) and events.equals(events2) and truth.users.equals(truth2.users)

    small = TINY.replace(n_days=3, n_events=3_000)
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    write_marketplace(small, a)
    write_marketplace(small, b)
    keys = [k for k in a.list() if not k.endswith("report.json")]
    assert keys == [k for k in b.list() if not k.endswith("report.json")]
    assert len([k for k in keys if k.startswith("landing/events/")]) == 3
    for key in keys:
        assert a.read_bytes(key) == b.read_bytes(key), key


def test_different_seed_gives_different_data(tiny):
    items, events, _ = tiny
    items2, events2, _ = generate_tables(TINY.replace(seed=TINY.seed + 1))
    assert not events.equals(events2)
    assert items["title"].to_pylist() != items2["title"].to_pylist()


def test_tables_have_the_canonical_schemas(tiny):
    items, events, _ = tiny
    assert items.schema.equals(ITEM_ARROW_SCHEMA)
    assert events.schema.equals(EVENT_ARROW_SCHEMA)
    assert tuple(items.column_names) == ITEM_COLUMNS
    assert tuple(events.column_names) == EVENT_COLUMNS
    assert events.num_rows == TINY.n_events


def test_every_item_field_is_present_and_valid(tiny):
    items, _, truth = tiny
    assert items.num_rows == TINY.n_items
    for name in ITEM_COLUMNS:
        assert items[name].null_count == 0, name
    ids = items["item_id"].to_pylist()
    assert len(set(ids)) == len(ids)
    by_l2 = {(c.l1, c.l2): c for c in V.CATEGORIES}
    conditions = {c[0] for c in V.CONDITIONS}
    for row in items.slice(0, 500).to_pylist():
        l1, l2, l3 = row["category_path"].split(" > ")
        cat = by_l2[(l1, l2)]
        assert l3 in {name for name, _ in cat.l3}
        assert row["brand"] in cat.brands and row["brand"] in row["title"]
        assert row["title"] and len(row["description"]) > len(row["title"])
        assert row["price"] > 0
        assert row["condition"] in conditions
        assert row["location"] in V.CITIES
        assert row["image_url"].startswith("https://") and row["item_id"] in row["image_url"]
        assert row["seller_id"].startswith("seller")
    # Prices follow the category: phones cost more than phone accessories.
    path = items["category_path"]
    phones = pc.mean(items.filter(pc.starts_with(path, "Electronics > Phones >"))["price"]).as_py()
    cases = pc.mean(items.filter(pc.starts_with(path, "Electronics > Phone Accessories >"))["price"]).as_py()
    assert phones > 5 * cases


# -- events ----------------------------------------------------------------------------------------------
def test_events_are_valid_and_in_time_order(tiny, frame):
    items, events, _ = tiny
    assert set(frame["etype"]) <= ACTIONS
    assert (frame["item_idx"] >= 0).all(), "every event refers to a catalog item"
    ts = frame["ts"]
    assert (np.diff(ts) >= 0).all()
    start = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1e6)
    assert ts.min() >= start and ts.max() < start + TINY.n_days * 86_400 * 10**6
    created = items["created_at"].cast(pa.int64()).to_numpy()[frame["item_idx"]]
    assert (ts >= created).all(), "no listing is seen before it was created"
    anonymous = frame["user"] == None  # noqa: E711
    no_session = frame["session"] == None  # noqa: E711
    assert anonymous.sum() > 0 and no_session.sum() > 0
    assert not (anonymous & no_session).any(), "an anonymous event needs a session id to be sessionized"
    assert set(events["device_type"].drop_null().to_pylist()) <= set(V.DEVICE_TYPES)


def test_users_concentrate_on_their_preferred_categories(tiny, frame):
    _, _, truth = tiny
    prefs = {r["user_id"]: set(r["preferred_categories"]) for r in truth.users.to_pylist() if not r["is_bot"]}
    human = frame["human"]
    share_of = Counter(frame["l2"][human])
    total = human.sum()
    observed, chance = [], []
    for user in set(frame["user"][human]):
        mine = frame["user"] == user
        if mine.sum() < 10:
            continue
        observed.append(np.isin(frame["l2"][mine], list(prefs[user])).mean())
        chance.append(sum(share_of[c] for c in prefs[user]) / total)
    assert len(observed) > 100
    assert np.mean(observed) > 0.6
    assert np.mean(observed) > 3 * np.mean(chance)


def test_users_prefer_their_brands_and_price_band(tiny, frame):
    items, _, truth = tiny
    rows = {r["user_id"]: r for r in truth.users.to_pylist()}
    human = frame["human"]
    hit, base = [], []
    # Chance: the brand's share of the category's listings.
    paths = [" > ".join(p.split(" > ")[:2]) for p in items["category_path"].to_pylist()]
    brand_share = Counter(zip(paths, items["brand"].to_pylist(), strict=True))
    cat_total = Counter(paths)
    for i in np.flatnonzero(human):
        r = rows[frame["user"][i]]
        if frame["l2"][i] not in r["preferred_categories"]:
            continue
        brand = r["preferred_brands"][r["preferred_categories"].index(frame["l2"][i])]
        hit.append(frame["brand"][i] == brand)
        base.append(brand_share[(frame["l2"][i], brand)] / cat_total[frame["l2"][i]])
    assert np.mean(hit) > 1.5 * np.mean(base)

    # Price: users of the low band look at cheaper items (within a category) than users of the high band.
    price = items["price"].to_numpy()[frame["item_idx"]]
    l2 = frame["l2"]
    rel = np.empty(len(price))
    for c in set(l2):
        m = l2 == c
        rel[m] = price[m] / np.median(price[m])
    band = np.array([rows[u]["price_band"] if h else None for u, h in zip(frame["user"], human, strict=True)])
    assert np.median(rel[band == "low"]) < 0.8 * np.median(rel[band == "high"])


def test_popularity_is_heavy_tailed(tiny, frame):
    counts = np.bincount(frame["item_idx"][frame["human"]], minlength=TINY.n_items)
    top = np.sort(counts)[::-1][: TINY.n_items // 10]
    assert top.sum() / counts.sum() > 0.4


def test_new_listings_appear_every_day_and_get_traffic(tiny, frame):
    items, _, truth = tiny
    created = items["created_at"].cast(pa.int64()).to_numpy()
    start = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1e6)
    day = (created - start) // (86_400 * 10**6)
    per_day = np.bincount(day[day >= 0], minlength=TINY.n_days)
    assert (per_day > 0).all() and per_day.sum() == truth.stats["items_new_in_window"]
    new_items = np.flatnonzero(day >= 0)
    seen = np.isin(new_items, frame["item_idx"][frame["human"]])
    assert seen.mean() > 0.3, "cold-start listings get interactions after they appear"


def test_sold_unique_pieces_become_unavailable_and_disappear(tiny, frame):
    items, _, truth = tiny
    available = items["available"].to_numpy(zero_copy_only=False)
    sold = np.flatnonzero(~available)
    assert len(sold) == truth.stats["items_sold"] > 0
    is_purchase = frame["etype"] == "purchase"
    for i in sold:
        mine = frame["item_idx"] == i
        bought = frame["ts"][mine & is_purchase]
        assert len(bought) >= 1
        assert frame["ts"][mine].max() == bought.min(), "nothing happens to an item after it sold"
    # Items still available never lost a unique piece: unique pieces with a purchase are all sold.
    unique = truth.catalog.single_quantity
    purchased = np.zeros(TINY.n_items, dtype=bool)
    purchased[frame["item_idx"][is_purchase]] = True
    assert not (unique & purchased & available).any()


def test_funnel_rates_fall(frame):
    c = Counter(frame["etype"][frame["human"]])
    intent = c["add_to_favorites"] + c["add_to_cart"]
    final = c["contact_seller"] + c["purchase"]
    assert c["view"] > c["click"] > intent > final > 0
    assert c["click"] / c["view"] < 0.6 and final / intent < 0.8


def test_sessions_carry_sequential_signal(frame):
    views = frame["human"] & (frame["etype"] == "view") & (frame["session"] != None)  # noqa: E711
    idx = np.flatnonzero(views)
    order = idx[np.lexsort((frame["ts"][idx], frame["session"][idx].astype(str)))]
    same_session = frame["session"][order][1:] == frame["session"][order][:-1]
    a, b = order[:-1][same_session], order[1:][same_session]
    same_cat = (frame["l2"][a] == frame["l2"][b]).mean()
    same_brand = (frame["brand"][a] == frame["brand"][b]).mean()
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(b)
    assert same_cat > 0.6 and same_cat > 3 * (frame["l2"][a] == frame["l2"][shuffled]).mean()
    assert same_brand > 2 * (frame["brand"][a] == frame["brand"][shuffled]).mean()


def test_daily_seasonality(frame):
    hours = (frame["ts"][frame["human"]] // 3_600_000_000) % 24
    per_hour = np.bincount(hours, minlength=24)
    assert per_hour[19:22].mean() > 3 * per_hour[2:5].mean()


# -- noise -----------------------------------------------------------------------------------------------
def test_duplicates_and_bots_are_as_reported(tiny, frame):
    _, events, truth = tiny
    keys = Counter(zip(*(events[c].to_pylist() for c in EVENT_COLUMNS), strict=True))
    assert sum(n - 1 for n in keys.values()) == truth.stats["duplicates_injected"] > 0
    assert frame["bot"].sum() == truth.stats["bot_events"] > 0
    per_user = Counter(frame["user"][frame["human"]])
    bot_counts = Counter(frame["user"][frame["bot"]])
    assert min(bot_counts.values()) > 5 * np.median(list(per_user.values()))
    assert (frame["session"][frame["bot"]] == None).all()  # noqa: E711


def _valid_csv(line: bytes) -> bool:
    try:
        fields = line.decode("utf-8").split(",")
    except UnicodeDecodeError:
        return False
    return len(fields) == 6 and bool(fields[2]) and fields[3] in ACTIONS and bool(ISO_MS.match(fields[4]))


def _valid_jsonl(line: bytes) -> bool:
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (
        bool(obj.get("item_id")) and obj.get("event_type") in ACTIONS and bool(ISO_MS.match(obj["timestamp"]))
    )


def test_written_landing_zone_accounts_for_every_row(tiny, tmp_path):
    items, events, truth = tiny
    store = LocalStore(tmp_path / "home")
    report = write_marketplace(TINY, store, tables=tiny)
    assert {d.format for d in report.days} == {"csv", "jsonl", "parquet"}
    assert sum(d.events for d in report.days) == report.events == events.num_rows
    assert sum(d.duplicates for d in report.days) == report.duplicates_injected
    assert report.malformed_injected == sum(report.malformed_by_kind.values()) > 0
    assert set(report.malformed_by_kind) >= {
        "bad_timestamp",
        "unknown_event_type",
        "empty_item_id",
        "non_utf8",
    }
    offset = 0
    for day in report.days:
        data = store.read_bytes(day.key)
        expected = events.slice(offset, day.events)
        offset += day.events
        if day.format == "parquet":
            got = pq.read_table(store.local_dir(day.key.rsplit("/", 1)[0]) / "events.parquet")
            assert got.schema.equals(EVENT_ARROW_SCHEMA) and got.equals(expected)
            assert day.malformed == {} and day.rows_written == day.events
            continue
        lines = data.splitlines()
        if day.format == "csv":
            assert lines[0] == ",".join(EVENT_COLUMNS).encode()
            lines = lines[1:]
        valid = _valid_csv if day.format == "csv" else _valid_jsonl
        good = [ln for ln in lines if valid(ln)]
        assert len(lines) == day.rows_written
        assert len(lines) - len(good) == sum(day.malformed.values()) > 0
        assert len(good) == day.events
        # The valid lines are exactly the day's events, timestamps included.
        stamps = [
            json.loads(g)["timestamp"] if day.format == "jsonl" else g.decode().split(",")[4] for g in good
        ]
        want = pc.strftime(expected["timestamp"], format="%Y-%m-%dT%H:%M:%S").to_pylist()
        assert stamps == [w[:23] + "Z" for w in want]
    assert offset == events.num_rows

    cat = pq.read_table(store.local_dir("landing/catalog") / "items.parquet")
    assert cat.equals(items)
    users = pq.read_table(store.local_dir(TRUTH_PREFIX) / "users.parquet")
    assert users.num_rows == TINY.n_users + TINY.n_bots
    assert not any(k.startswith("landing/") and "truth" in k for k in store.list())
    saved = json.loads(store.read_text(f"{TRUTH_PREFIX}/report.json"))
    assert saved["malformed_injected"] == report.malformed_injected


def test_catalog_text_formats_round_trip(tiny, tmp_path):
    import pyarrow.csv as pacsv

    from relevance_core.generator.writer import catalog_bytes

    items = tiny[0].slice(0, 200)
    csv_table = pacsv.read_csv(pa.BufferReader(catalog_bytes(items, "csv")))
    assert csv_table.column_names == list(ITEM_COLUMNS)
    assert csv_table["title"].to_pylist() == items["title"].to_pylist()
    rows = [json.loads(line) for line in catalog_bytes(items, "jsonl").splitlines()]
    assert [r["item_id"] for r in rows] == items["item_id"].to_pylist()
    assert [r["price"] for r in rows] == items["price"].to_pylist()
    assert all(ISO_MS.match(r["created_at"]) for r in rows)


# -- configuration and CLI -------------------------------------------------------------------------------
def test_config_guards_and_presets():
    with pytest.raises(ValueError, match="2026-01-01"):
        MarketplaceConfig(start_date="2025-12-31")
    with pytest.raises(ValueError):
        preset("nope")
    assert PRESETS["bench"].n_items == 1_000_000 and PRESETS["bench"].n_events == 10_000_000
    assert preset("demo", seed=3).seed == 3 and preset("demo").seed == PRESETS["demo"].seed
    assert [TINY.replace(format="mixed").day_format(d) for d in range(4)] == [
        "csv",
        "jsonl",
        "parquet",
        "csv",
    ]
