"""Spark ``sessions`` / ``training_pairs`` against the DuckDB reference, plus the rules the reference can't
check by itself (it shares them): gap at the threshold, midnight ownership, bots, idempotent re-runs."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relevance_core.pipeline.config import PairsConfig, SessionConfig, shift_day
from relevance_core.pipeline.pairs import build_training_pairs, read_training_pairs
from relevance_core.pipeline.reference import reference_bot_events_sql, reference_pipeline
from relevance_core.pipeline.sessionize import build_sessions
from relevance_core.schemas import EVENT_ARROW_SCHEMA, QUARANTINE_ARROW_SCHEMA
from relevance_core.storage import LocalStore

D0 = datetime(2026, 3, 10, tzinfo=UTC)
GAP = timedelta(minutes=30)
US = timedelta(microseconds=1)


def d(k: int) -> str:
    """The ISO day ``k`` days after D0."""
    return (D0 + timedelta(days=k)).date().isoformat()


def ev(user, item, etype, ts, sid=None, device=None):
    return {
        "user_id": user,
        "session_id": sid,
        "item_id": item,
        "event_type": etype,
        "timestamp": ts,
        "device_type": device,
    }


def write_raw_events(store: LocalStore, rows: list[dict], shuffle_seed: int = 0) -> list[str]:
    """Write rows as raw_events partitions by UTC day, deliberately out of time order, in two files a day."""
    by_day: dict[str, list[dict]] = {}
    for r in rows:
        by_day.setdefault(r["timestamp"].astimezone(UTC).date().isoformat(), []).append(r)
    rng = random.Random(shuffle_seed)
    for day, rs in by_day.items():
        rs = list(rs)
        rng.shuffle(rs)
        d = store.path(f"lake/raw_events/date={day}")
        d.mkdir(parents=True, exist_ok=True)
        half = len(rs) // 2
        for i, chunk in enumerate((rs[:half], rs[half:])):
            if chunk:
                pq.write_table(
                    pa.Table.from_pylist(chunk, schema=EVENT_ARROW_SCHEMA), d / f"part-{i}.parquet"
                )
    return sorted(by_day)


SESSION_COLS = (
    "session_key, user_id, epoch_us(start_ts) AS st, epoch_us(end_ts) AS et, item_ids, event_types, "
    "list_transform(timestamps, lambda x: epoch_us(x)) AS ts, weights, n_events, CAST(date AS VARCHAR) AS d"
)
PAIR_COLS = (
    "user_id, session_key, hist_item_ids, hist_event_types, hist_age_s, target_item_id, target_event_type, "
    "target_weight, epoch_us(target_ts) AS tt, split, CAST(date AS VARCHAR) AS d"
)


def assert_same(con, table: str, cols: str, spark_root, ref_rel) -> int:
    """Spark's partitions under ``spark_root`` == the reference relation, as multisets of rows."""
    con.register("ref_tbl", ref_rel.to_arrow_table())
    files = f"{spark_root}/lake/{table}/*/*.parquet"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW s_out AS SELECT {cols} FROM read_parquet('{files}', hive_partitioning=true)"
    ).fetchall()
    con.execute(f"CREATE OR REPLACE TEMP VIEW r_out AS SELECT {cols} FROM ref_tbl").fetchall()
    only_spark = con.sql("SELECT * FROM s_out EXCEPT ALL SELECT * FROM r_out").fetchall()
    only_ref = con.sql("SELECT * FROM r_out EXCEPT ALL SELECT * FROM s_out").fetchall()
    assert not only_spark and not only_ref, (
        f"{table}: only Spark {only_spark[:3]}; only reference {only_ref[:3]}"
    )
    n = con.sql("SELECT count(*) FROM s_out").fetchall()[0][0]
    con.unregister("ref_tbl")
    return n


def run_spark(spark, store, days, scfg=None, pcfg=None):
    """Sessions and pairs for every input day plus the day after the last (sessions closing after midnight)."""
    end = shift_day(days[-1], 1)
    s = build_sessions(spark, store, days[0], end, scfg)
    p = build_training_pairs(spark, store, days[0], end, pcfg, scfg, last_event_day=days[-1])
    return s, p


def reference(store, scfg=None, pcfg=None, last_day=None):
    con = duckdb.connect()
    files = [str(p) for p in sorted(store.path("lake/raw_events").rglob("*.parquet"))]
    sessions, pairs = reference_pipeline(con, files, scfg, pcfg, last_event_day=last_day)
    return con, sessions, pairs


def read_sessions(store) -> list[dict]:
    t = pads.dataset(str(store.path("lake/sessions")), format="parquet", partitioning="hive").to_table()
    return t.to_pylist()


# -- hand-written edge cases ----------------------------------------------------------------------------
def edge_case_events() -> list[dict]:
    t = D0.replace(hour=10)
    rows = [
        # gap exactly at the threshold keeps the session; one microsecond more splits it
        ev("u_gap", "i1", "view", t),
        ev("u_gap", "i2", "view", t + GAP),
        ev("u_gap", "i3", "click", t + 2 * GAP + US),
        # a session crossing midnight D0 → D1
        ev("u_mid", "i1", "view", D0.replace(hour=23, minute=50)),
        ev("u_mid", "i2", "add_to_cart", D0 + timedelta(days=1, minutes=10)),
        ev("u_mid", "i3", "purchase", D0 + timedelta(days=1, minutes=20)),
        # closing exactly at midnight (last event 23:30 sharp) belongs to the next day; a µs earlier does not
        ev("u_close1", "i1", "view", D0.replace(hour=23, minute=30)),
        ev("u_close2", "i1", "view", D0.replace(hour=23, minute=30) - US),
        # ties on the timestamp: funnel order then item id decide; written shuffled
        ev("u_tie", "i9", "click", t),
        ev("u_tie", "i1", "click", t),
        ev("u_tie", "i5", "view", t),
        ev("u_tie", "i5", "impression", t),
        # explicit session ids, interleaved, scoped per user (another user reuses "s1")
        ev("u_sid", "i1", "view", t, sid="s1"),
        ev("u_sid", "i2", "view", t + timedelta(minutes=1), sid="s2"),
        ev("u_sid", "i3", "click", t + timedelta(minutes=2), sid="s1"),
        ev("u_other", "i4", "view", t, sid="s1"),
        # anonymous without a session id: one session per event; with one: grouped
        ev(None, "i1", "view", t),
        ev(None, "i2", "view", t + timedelta(minutes=1)),
        ev(None, "i3", "view", t, sid="anon-s"),
        ev(None, "i4", "click", t + timedelta(minutes=3), sid="anon-s"),
        # repeated items and impressions (not targets, not history)
        ev("u_rep", "i7", "impression", t),
        ev("u_rep", "i7", "view", t + timedelta(minutes=1)),
        ev("u_rep", "i7", "view", t + timedelta(minutes=2)),
        ev("u_rep", "i7", "purchase", t + timedelta(minutes=3)),
        # one-event user
        ev("u_one", "i1", "view", t),
        # returning user: D0 morning, D2 (history crosses sessions), D0-8 (beyond the 7-day horizon)
        ev("u_ret", "i1", "view", D0 - timedelta(days=8)),
        ev("u_ret", "i2", "view", D0.replace(hour=8)),
        ev("u_ret", "i3", "click", D0.replace(hour=8, minute=5)),
        ev("u_ret", "i4", "view", D0 + timedelta(days=2, hours=9)),
        # last day, closing after its midnight: lands in the partition after the last input day
        ev("u_late", "i1", "view", D0 + timedelta(days=2, hours=23, minutes=45)),
        ev("u_late", "i2", "click", D0 + timedelta(days=2, hours=23, minutes=50)),
    ]
    # a bot: 80 events in one minute on D1
    rows += [
        ev("u_bot", f"i{k % 5}", "view", D0 + timedelta(days=1, hours=3, seconds=k * 0.5)) for k in range(80)
    ]
    return rows


def test_edge_cases_match_reference_and_rules(spark, store):
    rows = edge_case_events()
    days = write_raw_events(store, rows)
    s1, p1 = run_spark(spark, store, days)
    con, ref_s, ref_p = reference(store, last_day=days[-1])
    n_sessions = assert_same(con, "sessions", SESSION_COLS, store.root, ref_s)
    n_pairs = assert_same(con, "training_pairs", PAIR_COLS, store.root, ref_p)
    assert n_sessions == s1.sessions and n_pairs == p1.pairs > 0

    by_user: dict[str | None, list[dict]] = {}
    sessions = read_sessions(store)
    for s in sessions:
        by_user.setdefault(s["user_id"], []).append(s)
    assert [x["item_ids"] for x in sorted(by_user["u_gap"], key=lambda x: x["start_ts"])] == [
        ["i1", "i2"],
        ["i3"],
    ]
    (mid,) = by_user["u_mid"]
    assert mid["item_ids"] == ["i1", "i2", "i3"] and str(mid["date"]) == d(1)
    assert str(by_user["u_close1"][0]["date"]) == d(1)  # 23:30 + 30 min = midnight → the next day
    assert str(by_user["u_close2"][0]["date"]) == d(0)
    (tie,) = by_user["u_tie"]
    assert list(zip(tie["event_types"], tie["item_ids"], strict=True)) == [
        ("impression", "i5"),
        ("view", "i5"),
        ("click", "i1"),
        ("click", "i9"),
    ]
    assert sorted(x["item_ids"] for x in by_user["u_sid"]) == [["i1", "i3"], ["i2"]]
    assert len(by_user["u_other"]) == 1
    anon = sorted(x["item_ids"] for x in by_user[None])
    assert anon == [["i1"], ["i2"], ["i3", "i4"]]
    assert by_user["u_rep"][0]["weights"] == [0.0, 1.0, 1.0, 10.0]
    assert "u_bot" not in by_user and s1.bot_events == 80 and s1.bot_user_days == 1
    assert days[-1] == d(2) and [str(x["date"]) for x in by_user["u_late"]] == [d(3)]
    # every non-bot event is in exactly one session
    assert sum(s["n_events"] for s in sessions) == len(rows) - 80
    assert len({s["session_key"] for s in sessions}) == len(sessions)

    pairs = read_training_pairs(store).to_table().to_pylist()
    rep = [p for p in pairs if p["user_id"] == "u_rep"]
    # impressions are neither targets nor history; repeated items are kept
    assert [(p["hist_item_ids"], p["target_event_type"]) for p in rep] == [
        (["i7"], "view"),
        (["i7", "i7"], "purchase"),
    ]
    ret = sorted((p for p in pairs if p["user_id"] == "u_ret"), key=lambda p: p["target_ts"])
    # D0-8 is beyond the horizon; D0's session is history for D2's first event
    assert [p["hist_item_ids"] for p in ret] == [["i2"], ["i2", "i3"]]
    assert ret[1]["hist_age_s"] == [49 * 3600.0, 49 * 3600.0 - 300]
    splits = {(p["target_ts"].date().isoformat(), p["split"]) for p in pairs}
    assert splits == {(d(0), "train"), (d(1), "validation"), (d(2), "test")}
    assert not [p for p in pairs if p["target_event_type"] == "impression"]
    assert all(len(p["hist_item_ids"]) <= 20 for p in pairs)

    # Re-running single days, in any order, changes nothing: ownership doesn't depend on run order.
    before = sorted(json.dumps(s, default=str, sort_keys=True) for s in sessions)
    for day in (d(1), d(0)):
        build_sessions(spark, store, day)
    after = sorted(json.dumps(s, default=str, sort_keys=True) for s in read_sessions(store))
    assert after == before

    q = pads.dataset(
        str(store.path("lake/quarantine/sessions")), format="parquet", partitioning="hive"
    ).to_table()
    assert (
        q.num_rows == 80
        and q.select(QUARANTINE_ARROW_SCHEMA.names).schema.names == QUARANTINE_ARROW_SCHEMA.names
    )
    assert json.loads(q.column("raw")[0].as_py())["user_id"] == "u_bot"
    ref_bots = con.sql(reference_bot_events_sql("ref_events", SessionConfig())).fetchall()
    assert sum(r[2] for r in ref_bots) == 80


def test_history_length_and_min_weight_configurable(spark, store):
    t = D0.replace(hour=12)
    rows = [ev("u", f"i{k}", "view" if k % 3 else "add_to_cart", t + timedelta(minutes=k)) for k in range(12)]
    days = write_raw_events(store, rows)
    pcfg = PairsConfig(history_length=3, min_target_weight=4.0, test_start="2030-01-01")
    run_spark(spark, store, days, pcfg=pcfg)
    con, _, ref_p = reference(store, pcfg=pcfg)
    assert_same(con, "training_pairs", PAIR_COLS, store.root, ref_p)
    pairs = read_training_pairs(store, split="train").to_table().to_pylist()
    assert [p["target_item_id"] for p in sorted(pairs, key=lambda p: p["target_ts"])] == ["i3", "i6", "i9"]
    assert all(len(p["hist_item_ids"]) == 3 for p in pairs)
    assert read_training_pairs(store, split="test").count_rows() == 0


# -- generated data -------------------------------------------------------------------------------------
_types = st.sampled_from(["view", "click", "add_to_cart", "purchase", "impression", "add_to_favorites"])
_event = st.tuples(
    st.sampled_from([None, "u1", "u2", "u3", "u4"]),
    st.sampled_from([None, None, "a", "b"]),
    st.sampled_from(["i1", "i2", "i3", "i4"]),
    _types,
    # minutes on a 3-day grid, often landing exactly on gap multiples and around midnight
    st.one_of(st.integers(0, 3 * 1440), st.sampled_from([1410, 1439, 1440, 1441, 1470, 2880 - 30, 2880])),
    st.sampled_from([0, 0, 1, 59]),
)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_event, min_size=1, max_size=80, unique_by=lambda e: e))
def test_generated_batches_match_reference(spark, tmp_path_factory, events):
    store = LocalStore(tmp_path_factory.mktemp("gen"))
    rows = [ev(u, i, et, D0 + timedelta(minutes=m, seconds=s), sid=sid) for (u, sid, i, et, m, s) in events]
    # exact duplicates are removed by raw_events; keep the input honest
    uniq = {tuple(sorted(r.items(), key=lambda kv: kv[0])): r for r in rows}
    rows = list(uniq.values())
    scfg = SessionConfig(max_events_per_minute=3)
    days = write_raw_events(store, rows, shuffle_seed=len(rows))
    s, _ = run_spark(spark, store, days, scfg=scfg)
    con, ref_s, ref_p = reference(store, scfg=scfg, last_day=days[-1])
    assert_same(con, "sessions", SESSION_COLS, store.root, ref_s)
    assert_same(con, "training_pairs", PAIR_COLS, store.root, ref_p)
    assert s.events + s.bot_events == len(rows)


def test_assets_materialize_with_metadata(spark, tmp_path):
    import dagster as dg
    from dagster_pyspark import LazyPySparkResource

    from relevance_assets.defs.pipeline.assets import sessions, training_pairs
    from relevance_assets.resources import StorageResource

    store = LocalStore(tmp_path / "home")
    rows = [ev("u1", f"i{k}", "view", D0 + timedelta(hours=1, minutes=k)) for k in range(5)]
    rows += [ev("u2", "i1", "click", D0 + timedelta(days=1, hours=2))]
    write_raw_events(store, rows)
    day = (D0 + timedelta(days=1)).date().isoformat()
    resources = {
        "storage": StorageResource(base_uri=str(store.root)),
        "spark": LazyPySparkResource(spark_config={"spark.master": spark.conf.get("spark.master")}),
    }
    res = dg.materialize([sessions, training_pairs], partition_key=D0.date().isoformat(), resources=resources)
    assert res.success
    md = {}
    for e in res.get_asset_materialization_events():
        m = e.event_specific_data.materialization
        md[m.asset_key.to_user_string()] = m.metadata
    assert md["sessions"]["sessions"].value == 1 and md["sessions"]["events"].value == 5
    assert md["sessions"]["bot_events_filtered"].value == 0
    # the newest raw_events day (D0+1) is test, the day before it validation
    assert md["training_pairs"]["pairs"].value == 4 == md["training_pairs"]["pairs_validation"].value
    assert md["training_pairs"]["pairs_train"].value == 0
    res2 = dg.materialize([sessions], partition_key=day, resources=resources)
    assert res2.success
    assert [s["user_id"] for s in read_sessions(store) if str(s["date"]) == day] == ["u2"]
