"""The landing writer's accounting while a flush is writing: "nothing pending" must mean written; its
timestamp text."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import UTC, datetime

from relevance_core.storage import LocalStore
from relevance_service.impressions import LandingWriter, iso_utc
from relevance_service.settings import ServiceSettings


def test_timestamp_text_is_datetimes_to_the_millisecond():
    # the cached per-second prefix must give exactly what datetime gives, across second boundaries and
    # at fractions that round up into the next second
    rng = random.Random(0)
    stamps = [1.7e9 + s + f for s in range(3) for f in (0.0, 0.0004995, 0.9994999, 0.9999995, 0.9999999)]
    stamps += [rng.uniform(0, 4e9) for _ in range(20_000)]
    for ts in stamps:
        want = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        assert iso_utc(ts) == want, ts


class GatedStore(LocalStore):
    """A real local store whose writes wait for a gate and can be told to fail (an outage)."""

    def __init__(self, root):
        super().__init__(root)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.down = False

    def write_bytes(self, key, data):
        self.entered.set()
        assert self.gate.wait(10)
        if self.down:
            raise OSError("store unreachable")
        return super().write_bytes(key, data)


def test_records_in_flight_count_as_pending_and_retrying_until_written(tmp_path):
    store = GatedStore(tmp_path)
    writer = LandingWriter(store, settings=ServiceSettings(landing_flush_s=3600))
    rows = [{"user_id": "u1", "item_id": f"i{i}", "event_type": "view", "timestamp": 1.0} for i in range(3)]

    async def scenario():
        # an outage: the first write fails and its rows wait for a retry, with the error shown
        store.down, store.gate = True, threading.Event()
        store.gate.set()
        writer.log_events(rows)
        await writer.flush()
        assert (writer.pending, writer.retrying) == (3, 3) and writer.last_error
        # the store is back; while the retry is being written its rows are still not "drained"
        store.down, store.gate, store.entered = False, threading.Event(), threading.Event()
        flush = asyncio.create_task(writer.flush())
        await asyncio.to_thread(store.entered.wait, 10)
        assert (writer.pending, writer.retrying) == (3, 3)
        store.gate.set()
        assert await flush == 3
        # drained now means written, and the error is gone with it
        assert (writer.pending, writer.retrying, writer.last_error) == (0, 0, None)

    asyncio.run(scenario())
    written = list((tmp_path / "landing").rglob("*.jsonl"))
    assert len(written) == 1 and written[0].read_text().count("\n") == 3
