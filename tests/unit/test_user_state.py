"""In-process user state: what only it does (LRU bound, forgetting expired users, untracked entries) and
seeding from the lake. The contract both stores keep (order, length, TTL, duplicates, erasure,
concurrency) is tested on both in tests/integration/test_redis_user_state.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lake_sessions import write_sessions

from relevance_service.user_state import HistoryEntry, InMemoryUserState, seed_from_lake

NOW = 1_800_000_000.0


def e(item: str, ts: float, ev: str = "view") -> HistoryEntry:
    return HistoryEntry(item, ev, ts)


def test_a_user_whose_entries_all_expired_is_forgotten():
    s = InMemoryUserState(max_len=10, ttl_s=100)
    s.append("u", [e("fresh", NOW - 50)], now=NOW)
    assert len(s) == 1
    assert s.get("u", now=NOW + 60) == [] and len(s) == 0


def test_lru_bound_on_number_of_users():
    s = InMemoryUserState(max_users=2, ttl_s=1e9)
    s.append("a", [e("x", NOW)], now=NOW)
    s.append("b", [e("x", NOW)], now=NOW)
    s.get("a", now=NOW)  # a is now most recently used
    s.append("c", [e("x", NOW)], now=NOW)
    assert len(s) == 2
    assert s.get("b", now=NOW) == [] and s.get("a", now=NOW) and s.get("c", now=NOW)


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError):
        InMemoryUserState(max_len=0)


def test_seed_from_lake_reads_newest_sessions_partitions(store):
    now = datetime.now(UTC).replace(microsecond=0)
    t1, t2 = now - timedelta(hours=2), now - timedelta(hours=1)
    write_sessions(
        store, "2026-01-01", [("old-user", ["z"], ["view"], [t1])]
    )  # outside the last `days` partitions
    write_sessions(
        store, "2026-01-02", [("u1", ["a", "b"], ["view", "purchase"], [t1, t1 + timedelta(seconds=5)])]
    )
    write_sessions(store, "2026-01-03", [("u1", ["c"], ["click"], [t2]), (None, ["anon"], ["view"], [t2])])
    s = InMemoryUserState(ttl_s=86400)
    n = seed_from_lake(s, store, days=2)
    assert n == 1
    assert [(x.item_id, x.event_type) for x in s.get("u1")] == [
        ("a", "view"),
        ("b", "purchase"),
        ("c", "click"),
    ]
    assert s.get("old-user") == []


def test_seed_skips_and_reports_histories_older_than_the_ttl(store, caplog):
    old = datetime.now(UTC) - timedelta(days=40)
    write_sessions(store, "2026-01-01", [("u-old", ["a"], ["view"], [old])])
    with caplog.at_level("WARNING", logger="relevance_service.user_state"):
        assert seed_from_lake(InMemoryUserState(ttl_s=30 * 86400), store) == 0
    assert "1 users' lake histories are all older than the state TTL" in caplog.text
    assert seed_from_lake(InMemoryUserState(ttl_s=60 * 86400), store) == 1


def test_seed_from_empty_lake_seeds_nothing(store):
    assert seed_from_lake(InMemoryUserState(), store) == 0


def test_history_entries_are_not_tracked_by_the_cyclic_gc():
    # a million users' histories must not be walked by every full collection
    import gc

    s = InMemoryUserState()
    s.append("u", [e("a", 1e12), e("b", 1e12 + 1)], now=1e12)
    assert [x.item_id for x in s.get("u", now=1e12)] == ["a", "b"]
    assert not any(gc.is_tracked(x) for x in s.get("u", now=1e12))
