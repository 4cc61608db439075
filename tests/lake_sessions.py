"""Writes a ``lake/sessions`` partition the way the pipeline lays it out, for the user-state seeding tests."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

SESSIONS_SCHEMA = pa.schema(
    [
        ("session_key", pa.string()),
        ("user_id", pa.string()),
        ("item_ids", pa.list_(pa.string())),
        ("event_types", pa.list_(pa.string())),
        ("timestamps", pa.list_(pa.timestamp("us", tz="UTC"))),
    ]
)


def write_sessions(
    store, date: str, rows: list[tuple[str | None, list[str], list[str], list[datetime]]]
) -> None:
    """One ``date=`` partition of ``(user_id, item_ids, event_types, timestamps)`` sessions."""
    t = pa.Table.from_pylist(
        [
            {"session_key": f"{u}-{date}", "user_id": u, "item_ids": i, "event_types": e, "timestamps": ts}
            for u, i, e, ts in rows
        ],
        schema=SESSIONS_SCHEMA,
    )
    d = store.local_dir(f"lake/sessions/date={date}")
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, d / "part-0.parquet")
