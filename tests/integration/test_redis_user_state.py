"""The user-state contract on both stores — in-process and a real Redis server — and what only the shared
store adds: several workers see one history, and every worker seeding from the same lake stores it once."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from relevance_service.user_state import HistoryEntry, InMemoryUserState, RedisUserState

NOW = 1_800_000_000.0


def e(item: str, ts: float, ev: str = "view") -> HistoryEntry:
    return HistoryEntry(item, ev, ts)


@pytest.fixture(params=["memory", "redis"])
def make_store(request, redis_url):
    """``make_store(max_len=..., ttl_s=...)`` → a fresh, empty store of the parametrised kind."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    def make(**kwargs):
        if request.param == "memory":
            return InMemoryUserState(**kwargs)
        return RedisUserState.from_url(redis_url, prefix=prefix, **kwargs)

    return make


def test_keeps_the_newest_in_time_order_across_out_of_order_batches(make_store):
    s = make_store(max_len=3, ttl_s=1e9)
    s.append("u", [e("new", NOW - 1)], now=NOW)
    s.append("u", [e("old", NOW - 10), e("mid", NOW - 5), e("older", NOW - 20)], now=NOW)
    # by time, not by arrival: "older" arrived last but is the one beyond max_len
    assert [x.item_id for x in s.get("u", now=NOW)] == ["old", "mid", "new"]
    s.append("u", [e("newest", NOW)], now=NOW)
    assert [x.item_id for x in s.get("u", now=NOW)] == ["mid", "new", "newest"]


def test_the_same_event_twice_is_held_once(make_store):
    s = make_store(max_len=10, ttl_s=1e9)
    batch = [e("a", NOW - 2), e("b", NOW - 1, "purchase")]
    assert s.append("u", batch, now=NOW) == 2
    assert s.append("u", batch, now=NOW) == 0  # a client's retry, or a second worker seeding
    assert s.append("u", [e("a", NOW - 1.5, "click")], now=NOW) == 1  # another event on the same item
    assert [(x.item_id, x.event_type) for x in s.get("u", now=NOW)] == [
        ("a", "view"),
        ("a", "click"),
        ("b", "purchase"),
    ]


def test_the_request_handlers_async_entry_points_keep_the_contract(make_store):
    s = make_store(max_len=2, ttl_s=100)

    async def scenario() -> None:
        assert (
            await s.append_async("u", [e("a", NOW - 3), e("b", NOW - 2), e("old", NOW - 500)], now=NOW) == 2
        )
        assert await s.append_async("u", [e("b", NOW - 2)], now=NOW) == 0
        assert await s.append_async("u", [e("c", NOW - 1)], now=NOW) == 1
        got = await s.get_async("u", now=NOW)
        assert [x.item_id for x in got] == ["b", "c"] == [x.item_id for x in s.get("u", now=NOW)]
        assert await s.delete_async("u") is True and await s.delete_async("u") is False
        assert await s.get_async("u", now=NOW) == []

    asyncio.run(scenario())


def test_entries_expire_and_old_ones_are_never_stored(make_store):
    s = make_store(max_len=10, ttl_s=100)
    assert s.append("u", [e("old", NOW - 150), e("fresh", NOW - 50)], now=NOW) == 1
    assert [x.item_id for x in s.get("u", now=NOW)] == ["fresh"]
    assert [x.item_id for x in s.get("u", now=NOW + 40)] == ["fresh"]
    assert s.get("u", now=NOW + 60) == []


def test_unknown_users_and_erasure(make_store):
    s = make_store()
    assert s.get("nobody") == []
    s.append("u", [e("a", NOW)], now=NOW)
    s.append("v", [e("b", NOW)], now=NOW)
    assert len(s) == 2
    assert s.delete("u") is True and s.delete("u") is False
    assert s.get("u", now=NOW) == [] and [x.item_id for x in s.get("v", now=NOW)] == ["b"]


def test_concurrent_appends_lose_nothing(make_store):
    s = make_store(max_len=10_000, ttl_s=1e9)

    def worker(w: int) -> None:
        for i in range(200):
            s.append("u", [e(f"{w}-{i}", NOW + w * 1000 + i)], now=NOW + 10_000)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = s.get("u", now=NOW + 10_000)
    assert len(got) == 800 and [x.ts for x in got] == sorted(x.ts for x in got)


def test_two_workers_share_one_history_and_the_key_expires(redis_url):
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a = RedisUserState.from_url(redis_url, prefix=prefix, ttl_s=3600)
    b = RedisUserState.from_url(redis_url, prefix=prefix, ttl_s=3600)
    now = NOW
    a.append("u", [e("x", now - 2)], now=now)
    b.append("u", [e("y", now - 1)], now=now)
    assert [x.item_id for x in a.get("u", now=now)] == ["x", "y"] == [x.item_id for x in b.get("u", now=now)]
    # a user nobody touches for the TTL disappears from Redis by itself, not only on read
    assert 0 < a.client.ttl(prefix + "u") <= 3600


def test_every_worker_seeding_from_the_same_lake_stores_it_once(redis_url, store):
    from datetime import UTC, datetime, timedelta

    from lake_sessions import write_sessions

    from relevance_service.user_state import seed_from_lake

    t = datetime.now(UTC) - timedelta(hours=1)
    write_sessions(store, "2026-01-01", [("u1", ["a", "b"], ["view", "click"], [t, t])])
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    workers = [RedisUserState.from_url(redis_url, prefix=prefix) for _ in range(2)]
    assert [seed_from_lake(w, store) for w in workers] == [1, 0]  # the second found it all there
    assert [(x.item_id, x.event_type) for x in workers[1].get("u1")] == [("a", "view"), ("b", "click")]


def test_one_process_claims_a_lake_window_the_others_wait_or_skip(redis_url):
    import time

    from relevance_service.user_state import SEED_DONE, SEED_MINE, SEED_RUNNING

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a, b = (RedisUserState.from_url(redis_url, prefix=prefix) for _ in range(2))
    week = "date=2026-01-01..date=2026-01-07"
    assert a.claim_seeding(week, 60) == SEED_MINE
    assert b.claim_seeding(week, 60) == SEED_RUNNING
    a.release_seeding(week, done=True)
    assert b.claim_seeding(week, 60) == SEED_DONE
    # a new day's partition is a new window
    assert b.claim_seeding("date=2026-01-02..date=2026-01-08", 60) == SEED_MINE
    # a failed seed frees the window at once, a claimer that died when its lease runs out
    failed, died = "date=2026-02-01..date=2026-02-07", "date=2026-03-01..date=2026-03-07"
    assert a.claim_seeding(failed, 60) == SEED_MINE
    a.release_seeding(failed, done=False)
    assert b.claim_seeding(failed, 60) == SEED_MINE
    assert a.claim_seeding(died, 1) == SEED_MINE
    assert b.claim_seeding(died, 60) == SEED_RUNNING
    time.sleep(1.5)
    assert b.claim_seeding(died, 60) == SEED_MINE
    # the marks are not users; a store no other process reads always seeds
    assert len(a) == 0
    assert InMemoryUserState().claim_seeding(week, 60) == SEED_MINE
