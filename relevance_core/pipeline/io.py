"""Reading lake partitions into Spark and publishing Spark output partition by partition.

Spark writes into a private staging directory; each day is then published with ``store.replace_dir`` so a
reader sees either the old partition or the new one, never a half-written one, and a re-run replaces the
day (idempotent). A day that produced no rows is still published, as one empty Parquet file with the
table's schema: otherwise a re-run that empties a day would leave the stale files in place.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from relevance_core.settings import LAYOUT
from relevance_core.storage import ArtifactStore


def existing_partition_dirs(store: ArtifactStore, table: str, days: Iterable[str]) -> list[Path]:
    """Local directories (downloaded copies for S3) of the given days of ``table`` that exist and hold data.

    Missing days are simply absent: a quiet day (or the day after the last one) has no input.
    """
    out = []
    for day in days:
        key = LAYOUT.partition(table, day)
        if not store.dir_exists(key):
            continue
        d = store.local_dir(key)
        if any(p.suffix == ".parquet" for p in d.rglob("*.parquet")):
            out.append(d)
    return out


def available_days(store: ArtifactStore, table: str) -> list[str]:
    """Days for which ``lake/<table>/date=D`` exists, sorted."""
    days = []
    for name in store.list_dirs(LAYOUT.table(table)):
        if name.startswith("date="):
            days.append(name[5:])
    return sorted(days)


def read_partitions(spark, dirs: list[Path]):
    """One DataFrame over the given ``date=D`` directories, with ``date`` as a string column.

    ``basePath`` makes Spark take ``date`` from the directory name; it is the parent of the first
    directory, which holds for both the local store and the S3 download cache (same layout).
    """
    from pyspark.sql import functions as F

    base = str(dirs[0].parent)
    return (
        spark.read.option("basePath", base)
        .option("mergeSchema", "false")
        .parquet(*[str(d) for d in dirs])
        .withColumn("date", F.col("date").cast("string"))
    )


def new_staging_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"relevance-{prefix}-"))


def publish_partitions(
    store: ArtifactStore,
    staging: Path,
    table: str,
    days: Iterable[str],
    empty_schema: pa.Schema,
    quarantine: bool = False,
) -> dict[str, int]:
    """Publish ``staging/date=D`` as ``lake/<table>/date=D`` (or the quarantine table) for every day.

    Returns the number of Parquet files published per day. Spark's ``_SUCCESS``/``.crc`` files are
    dropped: readers glob ``*.parquet``.
    """
    counts = {}
    for day in days:
        src = staging / f"date={day}"
        clean = staging.parent / f"{staging.name}-publish" / f"date={day}"
        clean.mkdir(parents=True, exist_ok=True)
        files = sorted(src.glob("*.parquet")) if src.exists() else []
        for i, f in enumerate(files):
            f.rename(clean / f"part-{i:05d}.parquet")
        if not files:
            pq.write_table(empty_schema.empty_table(), clean / "part-00000.parquet")
        key = LAYOUT.quarantine(table, day) if quarantine else LAYOUT.partition(table, day)
        store.replace_dir(clean, key)
        counts[day] = len(files)
    return counts


def cleanup(*paths: Path) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
        shutil.rmtree(p.parent / f"{p.name}-publish", ignore_errors=True)
