"""Lake tables written and compared by content, for the tests that run the same Spark job two ways (a
local session and a local cluster, with or without a fault) and must get the same rows."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from relevance_core.schemas import EVENT_ARROW_SCHEMA


def write_raw_events(root: Path, rows: list[dict]) -> list[str]:
    """``lake/raw_events`` partitioned by day, one file each; the days written, sorted."""
    by_day: dict[str, list[dict]] = {}
    for r in rows:
        by_day.setdefault(r["timestamp"].date().isoformat(), []).append(r)
    for day, rs in by_day.items():
        d = root / "lake" / "raw_events" / f"date={day}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rs, schema=EVENT_ARROW_SCHEMA), d / "part-0.parquet")
    return sorted(by_day)


def table_diff(table: str, a: Path, b: Path) -> tuple[int, int, int]:
    """(rows only under ``a``, rows only under ``b``, rows under ``a``), as multisets: a duplicated or a
    lost row counts, whatever the file layout."""
    con = duckdb.connect()

    def q(root: Path) -> str:
        files = f"{root}/lake/{table}/*/*.parquet"
        return (
            "SELECT * EXCLUDE (date), CAST(date AS VARCHAR) AS d "
            f"FROM read_parquet('{files}', hive_partitioning=true)"
        )

    one, two = q(a), q(b)
    only_a = con.sql(f"SELECT count(*) FROM ({one} EXCEPT ALL {two})").fetchall()[0][0]
    only_b = con.sql(f"SELECT count(*) FROM ({two} EXCEPT ALL {one})").fetchall()[0][0]
    n = con.sql(f"SELECT count(*) FROM ({one})").fetchall()[0][0]
    return only_a, only_b, n
