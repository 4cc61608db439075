"""``training_pairs``: sessions → (history → target) examples for the two-tower model, on Spark.

Schema of ``lake/training_pairs/date=D/`` (``PAIRS_ARROW_SCHEMA``; D is the day that owns the target's
session, see ``sessionize``):

=====================  ================  ==========================================================
column                 type              meaning
=====================  ================  ==========================================================
``user_id``            string, nullable  null for anonymous sessions
``session_key``        string            the target's session (``lake/sessions``)
``hist_item_ids``      list<string>      the history, oldest first, most recent last, 1..L entries
``hist_event_types``   list<string>      event type of each history entry
``hist_age_s``         list<double>      seconds between each history entry and the target (>= 0)
``target_item_id``     string            the item the user interacted with next
``target_event_type``  string            its event type (never ``impression``)
``target_weight``      double            its event weight (``SessionConfig.event_weights``)
``target_ts``          timestamp[us,UTC] when
``split``              string            ``train`` / ``validation`` / ``test`` by the target's UTC day
=====================  ================  ==========================================================

Why these rules (``PairsConfig`` holds the knobs):

* The user tower reads the recent history, not a user id, so a pair is "these L interactions → that
  one". Impressions are neither history nor targets: nobody acted on them.
* A known user's history continues across sessions, but only from sessions that *ended before* the
  target's session began (interleaved sessions, e.g. two tabs, do not leak into each other), and only
  within ``horizon_days`` of the target. Anonymous sessions only see themselves. A target with an
  empty history is not a pair (nothing to learn the user tower from).
* Split by time, not at random: the last day(s) are test, the ones before validation, so the model is
  judged on the future it did not see. The cut-offs are fixed when a partition is written; the defaults
  derive them from the newest raw_events partition, so re-materialise recent partitions after new days
  arrive (or pass explicit ``test_start`` / ``validation_start``).

How (throughput): the per-session arrays stay arrays. A window over each user's sessions (range frame
on the start time) gathers the tails of earlier sessions once per session, and one ``transform`` over
the session's interactions emits every pair, so there is a single shuffle (by user) and no Python UDF.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from relevance_core.pipeline.config import PairsConfig, SessionConfig, day_range, shift_day
from relevance_core.pipeline.io import (
    available_days,
    cleanup,
    existing_partition_dirs,
    new_staging_dir,
    publish_partitions,
    read_partitions,
)
from relevance_core.pipeline.sessionize import US_PER_DAY, rank_sql, set_parquet_conf
from relevance_core.schemas import TS
from relevance_core.settings import LAYOUT
from relevance_core.storage import ArtifactStore

PAIRS_TABLE = "training_pairs"
SPLITS = ("train", "validation", "test")

PAIRS_ARROW_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("session_key", pa.string()),
        pa.field("hist_item_ids", pa.list_(pa.field("element", pa.string()))),
        pa.field("hist_event_types", pa.list_(pa.field("element", pa.string()))),
        pa.field("hist_age_s", pa.list_(pa.field("element", pa.float64()))),
        pa.field("target_item_id", pa.string()),
        pa.field("target_event_type", pa.string()),
        pa.field("target_weight", pa.float64()),
        pa.field("target_ts", TS),
        pa.field("split", pa.string()),
    ]
)


@dataclass
class PairsResult:
    days: list[str]
    pairs: int = 0
    pairs_per_split: dict[str, int] = field(default_factory=dict)
    mean_history_length: float = 0.0
    validation_start: str = ""
    test_start: str = ""
    input_days: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def history_days_needed(pcfg: PairsConfig, scfg: SessionConfig) -> int:
    """Session partitions before D that can hold history for D's targets: the horizon plus the longest
    session (the look-back window) plus the closing gap."""
    return math.ceil(pcfg.horizon_days) + scfg.lookback_days + 1


def make_pairs(
    sessions, start: str, end: str, pcfg: PairsConfig, scfg: SessionConfig, validation_start, test_start
):
    """Pairs for the sessions owned by ``start..end`` (``sessions`` has ``date`` and the contract columns,
    and includes the earlier partitions within the horizon)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    L = int(pcfg.history_length)
    horizon = pcfg.horizon_us
    span = (scfg.lookback_days + 1) * US_PER_DAY + scfg.gap_us
    # Interactions of a session as structs ordered like the reference: (ts, funnel rank, item, key, pos).
    # A session's interactions, slim (ts, item, type, weight): these arrays are copied into every pair.
    inter = (
        "filter(transform(arrays_zip(item_ids, event_types, timestamps, weights), x -> named_struct("
        "'ts', unix_micros(x.timestamps), 'item', x.item_ids, 'type', x.event_types, 'w', x.weights)), "
        "y -> y.type <> 'impression')"
    )
    s = sessions.select(
        "user_id",
        "session_key",
        "date",
        F.expr("unix_micros(start_ts)").alias("start_us"),
        F.expr("unix_micros(end_ts)").alias("end_us"),
        F.expr(inter).alias("inter"),
    ).where("size(inter) > 0")
    # For known users: the last L interactions of each earlier session (ended before this one started),
    # with the sort key the reference uses across sessions (ts, funnel rank, item, session, position).
    tail = (
        f"transform(slice(inter, greatest(size(inter) - {L} + 1, 1), {L}), (y, k) -> named_struct("
        f"'ts', y.ts, 'rk', {rank_sql('y.type')}, 'item', y.item, 'sk', session_key, 'k', k, "
        "'type', y.type, 'w', y.w))"
    )
    w = Window.partitionBy("user_id").orderBy("start_us").rangeBetween(-(horizon + span), 0)
    known = s.where("user_id IS NOT NULL").withColumn(
        "prev", F.collect_list(F.struct(F.col("end_us"), F.expr(tail).alias("tail"))).over(w)
    )
    known = known.withColumn(
        "prefix",
        F.expr(
            "transform(array_sort(flatten(transform(filter(prev, p -> p.end_us < start_us), p -> p.tail))), "
            "y -> named_struct('ts', y.ts, 'item', y.item, 'type', y.type, 'w', y.w))"
        ),
    ).drop("prev")
    anon = s.where("user_id IS NULL").withColumn("prefix", F.expr("slice(inter, 1, 0)"))
    start_d, end_d = str(start), str(end)
    both = known.unionByName(anon).where(f"date BETWEEN '{start_d}' AND '{end_d}'")
    both = both.withColumn("prefix", F.expr(f"slice(prefix, greatest(size(prefix) - {L} + 1, 1), {L})"))
    min_w = float(pcfg.min_target_weight)
    pair = (
        "transform(inter, (t, j) -> named_struct("
        "'t', t, "
        "'hist', filter("
        f"  slice(concat(prefix, slice(inter, greatest(j - {L} + 1, 1), least(j, {L}))), "
        f"        greatest(size(prefix) + least(j, {L}) - {L} + 1, 1), {L}), "
        f"  h -> t.ts - h.ts <= {horizon})))"
    )
    exploded = both.select(
        "user_id",
        "session_key",
        "date",
        F.expr(f"inline(filter({pair}, p -> size(p.hist) > 0 AND p.t.w >= {min_w!r} AND p.t.w > 0))"),
    )
    day = f"date_from_unix_date(CAST(floor(t.ts / {US_PER_DAY}) AS INT))"
    return exploded.select(
        "user_id",
        "session_key",
        F.expr("transform(hist, h -> h.item)").alias("hist_item_ids"),
        F.expr("transform(hist, h -> h.type)").alias("hist_event_types"),
        F.expr("transform(hist, h -> CAST(t.ts - h.ts AS DOUBLE) / 1e6)").alias("hist_age_s"),
        F.expr("t.item").alias("target_item_id"),
        F.expr("t.type").alias("target_event_type"),
        F.expr("CAST(t.w AS DOUBLE)").alias("target_weight"),
        F.expr("timestamp_micros(t.ts)").alias("target_ts"),
        F.expr(
            f"CASE WHEN {day} >= DATE'{test_start}' THEN 'test' "
            f"WHEN {day} >= DATE'{validation_start}' THEN 'validation' ELSE 'train' END"
        ).alias("split"),
        "date",
    )


def build_training_pairs(
    spark,
    store: ArtifactStore,
    start: str | date,
    end: str | date | None = None,
    pcfg: PairsConfig | None = None,
    scfg: SessionConfig | None = None,
    last_event_day: str | None = None,
) -> PairsResult:
    """Materialise ``lake/training_pairs/date=D`` for every day ``start..end`` from ``lake/sessions``.

    ``last_event_day`` (for the default split) defaults to the newest ``lake/raw_events`` partition.
    """
    pcfg = pcfg or PairsConfig()
    scfg = scfg or SessionConfig()
    start = str(start)
    end = str(end or start)
    t0 = time.perf_counter()
    days = day_range(start, end)
    if last_event_day is None and pcfg.test_start is None:
        raw_days = available_days(store, "raw_events")
        last_event_day = raw_days[-1] if raw_days else end
    val, test = pcfg.split_dates(last_event_day)
    input_days = day_range(shift_day(start, -history_days_needed(pcfg, scfg)), end)
    dirs = existing_partition_dirs(store, "sessions", input_days)
    result = PairsResult(
        days=days,
        validation_start=val.isoformat(),
        test_start=test.isoformat(),
        input_days=[d.name.removeprefix("date=") for d in dirs],
    )
    staging = new_staging_dir("pairs")
    try:
        if dirs:
            set_parquet_conf(spark)
            sessions = read_partitions(spark, dirs)
            pairs = make_pairs(sessions, start, end, pcfg, scfg, val.isoformat(), test.isoformat())
            pairs.write.mode("overwrite").partitionBy("date").parquet(str(staging / "out"))
        _summarise(staging / "out", result)
        publish_partitions(store, staging / "out", PAIRS_TABLE, days, PAIRS_ARROW_SCHEMA)
    finally:
        cleanup(staging)
    result.seconds = time.perf_counter() - t0
    return result


def _summarise(out, result: PairsResult) -> None:
    result.pairs_per_split = dict.fromkeys(SPLITS, 0)
    if not out.exists() or not any(out.rglob("*.parquet")):
        return
    t = pads.dataset(str(out), format="parquet", partitioning="hive").to_table(
        columns=["split", "hist_age_s"]
    )
    result.pairs = t.num_rows
    for row in t.group_by("split").aggregate([("split", "count")]).to_pylist():
        result.pairs_per_split[row["split"]] = int(row["split_count"])
    if t.num_rows:
        result.mean_history_length = float(pc.mean(pc.list_value_length(t.column("hist_age_s"))).as_py())


def read_training_pairs(
    store: ArtifactStore, split: str | None = None, days: list[str] | None = None
) -> pads.Dataset:
    """The training pairs as a ``pyarrow.dataset.Dataset`` (schema in this module's docstring).

    ``split`` keeps one of ``train`` / ``validation`` / ``test`` (a filtered dataset: scanning stays
    lazy); ``days`` limits the partitions. Works for S3 stores too (partitions are downloaded). Use
    ``.to_table()``, ``.to_batches()`` or ``.files`` depending on how the consumer streams.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    all_days = available_days(store, PAIRS_TABLE)
    wanted = [d for d in all_days if days is None or d in set(days)]
    files: list[str] = []
    for d in wanted:
        local = store.local_dir(LAYOUT.partition(PAIRS_TABLE, d))
        files.extend(str(p) for p in sorted(local.glob("*.parquet")))
    ds = pads.dataset(files, schema=PAIRS_ARROW_SCHEMA, format="parquet")
    if split is not None:
        ds = ds.filter(pads.field("split") == split)
    return ds
