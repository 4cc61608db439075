"""``sessions``: validated events → one row per session, on Spark (no Python UDFs: SQL and window functions).

Rules (the DuckDB reference in ``reference.py`` implements the same ones; a parity test holds them equal):

* **Streams.** A known user's events with the same ``session_id`` form one stream; a known user's events
  without a session id form another. An anonymous user's events with a session id form a stream per id.
  An anonymous event without a session id is a session of its own: ``device_type`` is a category
  ("mobile"), not an identifier, so nothing else can group such events.
* **Cuts.** A stream is cut where the time since its previous event is *greater than* the gap (30 min by
  default); a gap of exactly the threshold keeps the session going. The gap also cuts explicit session
  ids, so that every session has a closing time (next rule).
* **Order.** Events are ordered by timestamp, then funnel rank of the event type, item_id, device_type
  (``config.EVENT_TYPE_ORDER``): a total order, so out-of-order input and ties give the same arrays.
* **Ownership (midnight).** A session belongs to the day on which it *closes*: ``end_ts + gap`` (a
  session whose last event is at 23:45 belongs to the next day). A session of day D has therefore closed
  by the end of D, so partition D is final once day D's events are in; it reads the previous
  ``lookback_days`` partitions so sessions that started before midnight are whole; and since ownership
  depends only on the session itself, it is written in exactly one partition whatever order the days
  run in. A session longer than the look-back (a day of events never 30 minutes apart) would be cut at
  the window edge; such sessions are counted as ``sessions_at_lookback_edge``.
* **Bots.** A known user's UTC day with more than ``max_events_per_day`` events, or more than
  ``max_events_per_minute`` events in one clock minute, is a bot day: those events are left out of the
  sessions, written to ``lake/quarantine/sessions/date=D/`` (``QUARANTINE_ARROW_SCHEMA``, the event as
  JSON in ``raw``) and counted; the rule is per day, so every run classifies a day the same way.
* **Key.** ``session_key`` = first 32 hex chars of SHA-256 over the stream and the start timestamp.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import date

import pyarrow as pa
import pyarrow.dataset as pads

from relevance_core.pipeline.config import (
    EVENT_TYPE_ORDER,
    UNKNOWN_EVENT_RANK,
    SessionConfig,
    day_range,
    shift_day,
)
from relevance_core.pipeline.io import (
    cleanup,
    existing_partition_dirs,
    new_staging_dir,
    publish_partitions,
    read_partitions,
)
from relevance_core.schemas import QUARANTINE_ARROW_SCHEMA, TS
from relevance_core.storage import ArtifactStore

SESSIONS_TABLE = "sessions"
US_PER_DAY = 86_400_000_000
US_PER_MIN = 60_000_000
SEP = "\x1f"

#: ``lake/sessions/date=D/`` (docs/contracts.md). List element fields are named ``element`` as Spark
#: writes them, so empty partitions written by pyarrow have the identical schema.
SESSIONS_ARROW_SCHEMA = pa.schema(
    [
        pa.field("session_key", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("start_ts", TS),
        pa.field("end_ts", TS),
        pa.field("item_ids", pa.list_(pa.field("element", pa.string()))),
        pa.field("event_types", pa.list_(pa.field("element", pa.string()))),
        pa.field("timestamps", pa.list_(pa.field("element", TS))),
        pa.field("weights", pa.list_(pa.field("element", pa.float64()))),
        pa.field("n_events", pa.int32()),
    ]
)


def sql_case(column: str, mapping: dict[str, float | int], default: float | int) -> str:
    """``CASE column WHEN 'k' THEN v ... END`` (valid in both Spark SQL and DuckDB)."""
    whens = " ".join(f"WHEN '{k.replace(chr(39), chr(39) * 2)}' THEN {v!r}" for k, v in mapping.items())
    return f"(CASE {column} {whens} ELSE {default!r} END)"


def weight_sql(column: str, cfg: SessionConfig) -> str:
    return f"CAST({sql_case(column, {k: float(v) for k, v in cfg.event_weights.items()}, 0.0)} AS DOUBLE)"


def rank_sql(column: str) -> str:
    return sql_case(column, EVENT_TYPE_ORDER, UNKNOWN_EVENT_RANK)


def stream_sql(ts_us: str = "ts_us") -> str:
    """The stream an event belongs to (see module docstring); the same text in Spark SQL and DuckDB."""
    s = f"'{SEP}'"
    # ``||`` rather than concat(): DuckDB's concat() skips NULLs where Spark's returns NULL.
    return (
        "(CASE WHEN user_id IS NOT NULL THEN "
        f"'u' || user_id || {s} || coalesce('s' || session_id, 'n') "
        f"WHEN session_id IS NOT NULL THEN 'a' || {s} || 's' || session_id "
        f"ELSE 'e' || item_id || {s} || CAST({ts_us} AS STRING) || {s} || event_type || {s} || "
        "coalesce(device_type, '') END)"
    )


@dataclass
class SessionsResult:
    """What a run wrote; becomes the asset's metadata."""

    days: list[str]
    sessions: int = 0
    events: int = 0
    bot_events: int = 0
    bot_user_days: int = 0
    mean_session_length: float = 0.0
    sessions_at_lookback_edge: int = 0
    input_days: list[str] = field(default_factory=list)
    sessions_per_day: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _prepared(events, cfg: SessionConfig):
    """Derived columns every later step uses; pure SQL expressions."""
    from pyspark.sql import functions as F

    return events.select(
        "user_id",
        "session_id",
        "item_id",
        "event_type",
        "device_type",
        F.expr("unix_micros(timestamp)").alias("ts_us"),
    ).select(
        "*",
        F.expr(weight_sql("event_type", cfg)).alias("weight"),
        F.expr(rank_sql("event_type")).alias("rk"),
        F.expr(f"CAST(floor(ts_us / {US_PER_DAY}) AS INT)").alias("dayn"),
    )


def bot_user_days(prepared, cfg: SessionConfig):
    """(user_id, dayn, n_day, max_per_minute) for every known user-day that breaks the rate rule."""
    from pyspark.sql import functions as F

    if cfg.max_events_per_day is None and cfg.max_events_per_minute is None:
        return None
    per_minute = (
        prepared.where("user_id IS NOT NULL")
        .groupBy("user_id", "dayn", F.expr(f"floor(ts_us / {US_PER_MIN})").alias("minute"))
        .agg(F.count(F.lit(1)).alias("c"))
    )
    per_day = per_minute.groupBy("user_id", "dayn").agg(
        F.sum("c").cast("long").alias("n_day"), F.max("c").cast("long").alias("max_per_minute")
    )
    cond = []
    if cfg.max_events_per_day is not None:
        cond.append(f"n_day > {int(cfg.max_events_per_day)}")
    if cfg.max_events_per_minute is not None:
        cond.append(f"max_per_minute > {int(cfg.max_events_per_minute)}")
    return per_day.where(" OR ".join(cond))


def sessionize(prepared, cfg: SessionConfig, start: str, end: str, bots=None):
    """Sessions owned by days ``start..end`` (inclusive) from events that include the look-back days.

    Returns the contract's columns plus ``date`` (the owning day, for ``partitionBy``). ``bots`` (from ``bot_user_days``) is small and
    broadcast.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ev = prepared
    if bots is not None:
        ev = ev.join(F.broadcast(bots.select("user_id", "dayn")), ["user_id", "dayn"], "left_anti")
    # A 64-bit hash leads the partition key: Spark's sort compares an 8-byte prefix first, and stream
    # strings share long prefixes ("uuser_00..."), so the hash settles most comparisons.
    ev = ev.withColumn("stream", F.expr(stream_sql())).withColumn("sh", F.xxhash64("stream"))
    order = [F.col("ts_us"), F.col("rk"), F.col("item_id"), F.coalesce(F.col("device_type"), F.lit(""))]
    w = Window.partitionBy("sh", "stream").orderBy(*order)
    gap = cfg.gap_us
    ev = ev.withColumn("prev_us", F.lag("ts_us").over(w)).withColumn(
        "is_new", F.expr(f"CASE WHEN prev_us IS NULL OR ts_us - prev_us > {gap} THEN 1 ELSE 0 END")
    )
    ev = ev.withColumn("sidx", F.sum("is_new").over(w.rowsBetween(Window.unboundedPreceding, 0)))
    sess = ev.groupBy("sh", "stream", "sidx").agg(
        F.first("user_id", ignorenulls=True).alias("user_id"),
        F.min("ts_us").alias("start_us"),
        F.max("ts_us").alias("end_us"),
        F.sort_array(
            F.collect_list(
                F.struct(
                    F.col("ts_us"),
                    F.col("rk"),
                    F.col("item_id"),
                    F.coalesce(F.col("device_type"), F.lit("")).alias("dev"),
                    F.col("event_type"),
                    F.col("weight"),
                )
            )
        ).alias("evs"),
    )
    start_n = date.fromisoformat(start).toordinal() - date(1970, 1, 1).toordinal()
    end_n = date.fromisoformat(end).toordinal() - date(1970, 1, 1).toordinal()
    sess = sess.withColumn("owner_n", F.expr(f"CAST(floor((end_us + {gap}) / {US_PER_DAY}) AS INT)")).where(
        f"owner_n BETWEEN {start_n} AND {end_n}"
    )
    return sess.select(
        F.expr(f"substr(sha2(concat(stream, '{SEP}', CAST(start_us AS STRING)), 256), 1, 32)").alias(
            "session_key"
        ),
        "user_id",
        F.expr("timestamp_micros(start_us)").alias("start_ts"),
        F.expr("timestamp_micros(end_us)").alias("end_ts"),
        F.expr("transform(evs, x -> x.item_id)").alias("item_ids"),
        F.expr("transform(evs, x -> x.event_type)").alias("event_types"),
        F.expr("transform(evs, x -> timestamp_micros(x.ts_us))").alias("timestamps"),
        F.expr("transform(evs, x -> x.weight)").alias("weights"),
        F.expr("CAST(size(evs) AS INT)").alias("n_events"),
        F.expr("CAST(date_from_unix_date(owner_n) AS STRING)").alias("date"),
    )


def quarantined_bot_events(prepared, bots, start: str, end: str):
    """Bot events of days ``start..end`` in ``QUARANTINE_ARROW_SCHEMA`` plus ``date``."""
    from pyspark.sql import functions as F

    start_n = date.fromisoformat(start).toordinal() - date(1970, 1, 1).toordinal()
    end_n = date.fromisoformat(end).toordinal() - date(1970, 1, 1).toordinal()
    b = bots.where(f"dayn BETWEEN {start_n} AND {end_n}")
    return prepared.join(F.broadcast(b), ["user_id", "dayn"], "inner").select(
        F.expr("concat('lake/raw_events/date=', CAST(date_from_unix_date(dayn) AS STRING))").alias(
            "source_file"
        ),
        F.to_json(
            F.struct(
                "user_id",
                "session_id",
                "item_id",
                "event_type",
                F.expr("timestamp_micros(ts_us)").alias("timestamp"),
                "device_type",
            )
        ).alias("raw"),
        F.expr(
            "concat('bot: ', CAST(n_day AS STRING), ' events that day, at most ', CAST(max_per_minute AS STRING),"
            " ' in one minute')"
        ).alias("reason"),
        F.expr("CAST(date_from_unix_date(dayn) AS STRING)").alias("date"),
    )


def set_parquet_conf(spark) -> None:
    """Timestamps as INT64 micros with UTC adjustment: readers (pyarrow, DuckDB) get ``timestamp[us, UTC]``."""
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")


def build_sessions(
    spark,
    store: ArtifactStore,
    start: str | date,
    end: str | date | None = None,
    cfg: SessionConfig | None = None,
) -> SessionsResult:
    """Materialise ``lake/sessions/date=D`` (and its quarantine) for every day ``start..end``.

    A range is one Spark job (a backfill runs as one run); each day is published atomically.
    """
    cfg = cfg or SessionConfig()
    start = str(start)
    end = str(end or start)
    t0 = time.perf_counter()
    days = day_range(start, end)
    input_days = day_range(shift_day(start, -cfg.lookback_days), end)
    dirs = existing_partition_dirs(store, "raw_events", input_days)
    result = SessionsResult(days=days, input_days=[d.name.removeprefix("date=") for d in dirs])
    staging = new_staging_dir("sessions")
    qstaging = new_staging_dir("sessions-quarantine")
    try:
        if dirs:
            set_parquet_conf(spark)
            prepared = _prepared(read_partitions(spark, dirs), cfg)
            bots = bot_user_days(prepared, cfg)
            bot_rows = []
            if bots is not None:
                bot_rows = [r.asDict() for r in bots.collect()]
            bots_df = None
            if bot_rows:
                bots_df = spark.createDataFrame(
                    bot_rows, "user_id string, dayn int, n_day long, max_per_minute long"
                )
            sessions = sessionize(prepared, cfg, start, end, bots_df)
            sessions.write.mode("overwrite").partitionBy("date").parquet(str(staging / "out"))
            start_n = date.fromisoformat(start).toordinal() - date(1970, 1, 1).toordinal()
            end_n = date.fromisoformat(end).toordinal() - date(1970, 1, 1).toordinal()
            in_range = [r for r in bot_rows if start_n <= r["dayn"] <= end_n]
            result.bot_user_days = len(in_range)
            result.bot_events = int(sum(r["n_day"] for r in in_range))
            if in_range:
                quarantined_bot_events(prepared, bots_df, start, end).write.mode("overwrite").partitionBy(
                    "date"
                ).parquet(str(qstaging / "out"))
        _summarise(staging / "out", result, cfg, input_days[0])
        publish_partitions(store, staging / "out", SESSIONS_TABLE, days, SESSIONS_ARROW_SCHEMA)
        if result.bot_events:
            publish_partitions(
                store, qstaging / "out", SESSIONS_TABLE, days, QUARANTINE_ARROW_SCHEMA, quarantine=True
            )
        else:
            for d in days:
                key = f"lake/quarantine/{SESSIONS_TABLE}/date={d}"
                if store.dir_exists(key):
                    store.delete_prefix(key)
    finally:
        cleanup(staging, qstaging)
    result.seconds = time.perf_counter() - t0
    return result


def _summarise(out, result: SessionsResult, cfg: SessionConfig, window_start_day: str) -> None:
    """Counts from the staged files (cheap columns only), before they are published."""
    if not out.exists() or not any(out.rglob("*.parquet")):
        return
    ds = pads.dataset(str(out), format="parquet", partitioning="hive")
    t = ds.to_table(columns=["n_events", "start_ts", "date"])
    n = t.column("n_events").to_numpy()
    result.sessions = len(n)
    result.events = int(n.sum())
    result.mean_session_length = float(n.mean()) if len(n) else 0.0
    window_start_us = (
        date.fromisoformat(window_start_day).toordinal() - date(1970, 1, 1).toordinal()
    ) * US_PER_DAY
    start_us = t.column("start_ts").cast(pa.int64()).to_numpy()
    result.sessions_at_lookback_edge = int((start_us - cfg.gap_us < window_start_us).sum())
    days = t.column("date").to_pylist()
    per = {}
    for d in days:
        per[str(d)] = per.get(str(d), 0) + 1
    result.sessions_per_day = dict(sorted(per.items()))
    if math.isnan(result.mean_session_length):
        result.mean_session_length = 0.0
