"""Validate one day of landing events on Spark: accepted rows to the lake, every refused row to quarantine.

Why it is built this way:

* **Text first, then parse.** CSV and JSON Lines files are read with Spark's ``text`` source (one row per
  line) and parsed with ``from_csv`` / ``from_json``. Reading them with the CSV/JSON sources directly would
  lose what quarantine needs: the original line for *every* refused row (not only the ones Spark calls
  corrupt), the exact token count of a line (the CSV source pads or truncates silently), and the raw bytes
  for the UTF-8 check (the text source keeps invalid bytes; ``is_valid_utf8`` finds them).
* **No Python UDFs, no collect of data.** Every step is a Catalyst expression, so a day of any size runs
  on any cluster unchanged; the driver only reads file headers and Parquet footers and collects per-reason
  counts. Files are read in one scan per distinct CSV header / Parquet schema, not one per file.
* **One reason per row**, the first that applies, in a fixed order (encoding, structure, ids, type,
  timestamp), so the counts per reason add up to the quarantined total.
* **Publish atomically.** Spark writes to a local staging directory; ``store.replace_dir`` then swaps it in
  as the partition. A failed run publishes nothing; a re-run replaces the partition (idempotent).
* **Record what was read.** The landing files' fingerprint (``fingerprint.py``), taken before reading, is
  written next to the lake once the partition is published, so the landing sensor does not ingest again
  a day the lake already reflects, whether the asset or ``relevance ingest`` ingested it.

Accounting (see ``report.IngestReport``): ``rows_in = accepted + quarantined + duplicates_removed``, where a
duplicate is a valid event equal to another valid event of the day in every canonical column after
normalisation (ids and device trimmed, event type lower-cased, timestamp parsed to UTC); one copy is kept.
"""

from __future__ import annotations

import contextlib
import csv
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from relevance_core.ingest.fingerprint import fingerprint, landing_entries, record_ingested
from relevance_core.ingest.landing import (
    LandingFile,
    LandingFileError,
    landing_files,
    read_first_line,
)
from relevance_core.ingest.report import IngestReport
from relevance_core.schemas import EVENT_ARROW_SCHEMA, EVENT_COLUMNS, EVENT_TYPES, QUARANTINE_ARROW_SCHEMA
from relevance_core.settings import LAYOUT, LakeLayout
from relevance_core.storage import ArtifactStore

DATASET = "raw_events"

#: Quarantine reasons, in the order they are tested (a row gets the first that applies).
REASONS: tuple[str, ...] = (
    "invalid_utf8",
    "missing_csv_header",
    "malformed_csv",
    "wrong_column_count",
    "malformed_json",
    "missing_item_id",
    "unknown_event_type",
    "missing_timestamp",
    "unparseable_timestamp",
    "timestamp_outside_day",
)

#: ISO-8601 date-time with a time part; zone ``Z``/``±hh:mm`` optional (none = UTC). Checked before the cast
#: because Spark's cast also accepts bare years ("2026") and dates, which are not event times.
_ISO_TS = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
#: One quoted CSV field (RFC 4180, "" escapes a quote), unrolled so Java's regex does not recurse per char.
_QUOTED_FIELD = r'"[^"]*(?:""[^"]*)*"'


@dataclass(frozen=True)
class EventIngestConfig:
    """``event_types``: the accepted types (a marketplace may add its own). ``staging_root``: where Spark
    writes before publishing (default: a fresh temp dir, removed afterwards)."""

    event_types: tuple[str, ...] = EVENT_TYPES
    staging_root: str | None = None
    layout: LakeLayout = field(default_factory=lambda: LAYOUT)


def _day_bounds(date: str) -> tuple[str, str]:
    try:
        d = Date.fromisoformat(date)
    except ValueError as e:
        raise ValueError(f"partition date must be YYYY-MM-DD, got {date!r}") from e
    if d.isoformat() != date:
        raise ValueError(f"partition date must be YYYY-MM-DD, got {date!r}")
    return f"{d.isoformat()} 00:00:00", f"{(d + timedelta(days=1)).isoformat()} 00:00:00"


@contextlib.contextmanager
def _session_conf(spark, conf: dict[str, str]) -> Iterator[None]:
    """Timestamps must be read and written in UTC with microsecond Parquet timestamps whatever the session
    was configured with; set that for the run and restore the caller's values."""
    old = {k: spark.conf.get(k, None) for k in conf}
    for k, v in conf.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def _spark_path(p: Path) -> str:
    # An explicit scheme, so a cluster whose fs.defaultFS is HDFS still reads the local staging copy.
    return "file://" + str(p.resolve())


def _source_label(F, date: str, prefix: str):
    """``landing/events/date=D/<file>``: the store key, stable across machines (not the local path)."""
    rel = F.regexp_extract(F.col("_metadata.file_path"), rf"date={date}/(.*)$", 1)
    return F.concat(F.lit(prefix + "/"), F.coalesce(F.try_url_decode(rel), rel))


def _norm(F, c):
    """Trimmed (any whitespace), empty → null: an id of only spaces is a missing id."""
    t = F.regexp_replace(c, r"^\s+|\s+$", "")
    return F.when(t == "", F.lit(None)).otherwise(t)


def _csv_frames(spark, F, files: list[LandingFile], label) -> list:
    """One scan per distinct header line; each line becomes a record, the header, or a blank line."""
    by_header: dict[bytes, list[LandingFile]] = {}
    for f in files:
        by_header.setdefault(read_first_line(f.path).removeprefix(b"\xef\xbb\xbf"), []).append(f)
    frames = []
    for header_bytes, group in by_header.items():
        header = header_bytes.decode("utf-8", errors="replace")
        # split again on any break (read_first_line stops at \r, \n and \r\n; this is belt and braces);
        # a line the csv module cannot parse is "no header": its rows are quarantined, not a crash
        header = re.split(r"\r\n|\r|\n", header, maxsplit=1)[0]
        try:
            names = [t.strip().lower() for t in next(csv.reader([header]), [])]
        except csv.Error:
            names = []
        has_header = bool(set(names) & set(EVENT_COLUMNS))
        width = len(names)
        line = F.regexp_replace(F.col("value"), "^\ufeff", "")
        df = spark.read.text([_spark_path(f.path) for f in group])
        unquoted = F.regexp_replace(line, _QUOTED_FIELD, "")
        ntok = F.size(F.split(unquoted, ",", -1))
        kind = (
            F.when(F.regexp_replace(line, r"\s", "") == "", F.lit("blank"))
            .when(F.lit(has_header) & (line == F.lit(header)), F.lit("header"))
            .otherwise(F.lit("record"))
        )
        parse_error = (
            F.when(~F.lit(has_header), F.lit("missing_csv_header"))
            .when(F.instr(unquoted, '"') > 0, F.lit("malformed_csv"))
            .when(ntok != F.lit(width), F.lit("wrong_column_count"))
        )
        ddl = ", ".join(f"_c{i} STRING" for i in range(max(width, 1)))
        parsed = F.from_csv(line, ddl, {"escape": '"', "mode": "PERMISSIVE"})
        cols = {
            c: (parsed[f"_c{names.index(c)}"] if has_header and c in names else F.lit(None))
            for c in EVENT_COLUMNS
        }
        frames.append(
            df.select(
                label.alias("source_file"),
                F.make_valid_utf8(F.col("value")).alias("raw"),
                F.is_valid_utf8(F.col("value")).alias("utf8_ok"),
                kind.alias("kind"),
                parse_error.alias("parse_error"),
                *[cols[c].cast("string").alias(c) for c in EVENT_COLUMNS],
            )
        )
    return frames


def _jsonl_frame(spark, F, files: list[LandingFile], label):
    from pyspark.sql import types as T

    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in EVENT_COLUMNS]
        + [T.StructField("_corrupt", T.StringType())]
    )
    df = spark.read.text([_spark_path(f.path) for f in files])
    parsed = F.from_json(
        F.col("value"), schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}
    )
    return df.select(
        label.alias("source_file"),
        F.make_valid_utf8(F.col("value")).alias("raw"),
        F.is_valid_utf8(F.col("value")).alias("utf8_ok"),
        F.when(F.regexp_replace(F.col("value"), r"\s", "") == "", F.lit("blank"))
        .otherwise(F.lit("record"))
        .alias("kind"),
        F.when(parsed.isNull() | parsed["_corrupt"].isNotNull(), F.lit("malformed_json")).alias(
            "parse_error"
        ),
        *[parsed[c].alias(c) for c in EVENT_COLUMNS],
    )


def _parquet_frames(spark, F, files: list[LandingFile], label) -> list:
    """One scan per distinct file schema (a typed and a string ``timestamp`` cannot share a scan)."""
    by_schema: dict[str, tuple[pa.Schema, list[LandingFile]]] = {}
    for f in files:
        try:
            schema = pq.read_schema(f.path)
        except Exception as e:  # noqa: BLE001 - any footer error means the file is unreadable
            raise LandingFileError(f"cannot read Parquet landing file {f.key}: {e}") from e
        by_schema.setdefault(str(schema), (schema, []))[1].append(f)
    frames = []
    for _schema, group in by_schema.values():
        df = spark.read.parquet(*[_spark_path(f.path) for f in group])
        lower = {name.lower(): name for name in df.columns}
        strings = [F.col(f"`{n}`") for n, t in df.dtypes if t == "string"]
        utf8_ok = F.is_valid_utf8(F.concat_ws("\u0001", *strings)) if strings else F.lit(True)
        raw = F.to_json(F.struct(*[F.col(f"`{n}`") for n in df.columns])) if df.columns else F.lit("{}")
        frames.append(
            df.select(
                label.alias("source_file"),
                F.make_valid_utf8(raw).alias("raw"),
                utf8_ok.alias("utf8_ok"),
                F.lit("record").alias("kind"),
                F.lit(None).cast("string").alias("parse_error"),
                *[
                    (
                        F.col(f"`{lower[c]}`").cast("string") if c in lower else F.lit(None).cast("string")
                    ).alias(c)
                    for c in EVENT_COLUMNS
                ],
            )
        )
    return frames


def _classify(F, frame, date: str, event_types: tuple[str, ...]):
    """Add the parsed, normalised event columns and the quarantine ``reason`` (null = valid)."""
    start, end = _day_bounds(date)
    ts_text = _norm(F, F.col("timestamp"))
    ts = F.when(ts_text.rlike(_ISO_TS), ts_text.try_cast("timestamp"))
    item_id = _norm(F, F.col("item_id"))
    event_type = F.lower(_norm(F, F.col("event_type")))
    reason = (
        F.when(~F.col("utf8_ok"), F.lit("invalid_utf8"))
        .when(F.col("parse_error").isNotNull(), F.col("parse_error"))
        .when(item_id.isNull(), F.lit("missing_item_id"))
        .when(event_type.isNull() | ~event_type.isin(*event_types), F.lit("unknown_event_type"))
        .when(ts_text.isNull(), F.lit("missing_timestamp"))
        .when(ts.isNull(), F.lit("unparseable_timestamp"))
        .when(
            (ts < F.lit(start).cast("timestamp")) | (ts >= F.lit(end).cast("timestamp")),
            F.lit("timestamp_outside_day"),
        )
    )
    return frame.select(
        "source_file",
        "raw",
        "kind",
        F.when(F.col("kind") == "record", reason).alias("reason"),
        _norm(F, F.col("user_id")).alias("user_id"),
        _norm(F, F.col("session_id")).alias("session_id"),
        item_id.alias("item_id"),
        event_type.alias("event_type"),
        ts.alias("timestamp"),
        _norm(F, F.col("device_type")).alias("device_type"),
    )


def _finish_dir(path: Path, schema: pa.Schema) -> int:
    """Drop Spark's markers/checksums (not data; would be uploaded to S3) and make sure the directory holds
    at least one Parquet file, so readers of an empty partition see the schema. Returns the row count."""
    path.mkdir(parents=True, exist_ok=True)
    for p in list(path.iterdir()):
        if p.name.startswith((".", "_")):
            p.unlink()
    parts = sorted(path.glob("*.parquet"))
    if not parts:
        pq.write_table(schema.empty_table(), path / "part-00000-empty.parquet")
        return 0
    return sum(pq.ParquetFile(p).metadata.num_rows for p in parts)


def ingest_events_day(
    spark, store: ArtifactStore, date: str, *, config: EventIngestConfig | None = None
) -> IngestReport:
    """Ingest ``landing/events/date=<date>/`` into ``lake/raw_events/date=<date>/`` (and its quarantine).

    Raises ``LandingMissingError`` when the landing day does not exist, ``LandingFileError`` when a file is
    unreadable as a whole; an existing day without records succeeds with an empty partition.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    config = config or EventIngestConfig()
    layout = config.layout
    _day_bounds(date)
    t0 = time.perf_counter()
    prefix = layout.landing_day(date)
    out_key = layout.partition(DATASET, date)
    q_key = layout.quarantine(DATASET, date)
    entries = landing_entries(store, date, layout)  # before reading: a later rewrite must not match it
    files, skipped = landing_files(store, prefix)
    report = IngestReport(
        dataset=DATASET,
        partition=date,
        source_prefix=prefix,
        output_key=out_key,
        quarantine_key=q_key,
        files=[f.key for f in files],
        skipped_files=skipped,
        landing_fingerprint=fingerprint(entries),
    )
    staging = Path(tempfile.mkdtemp(prefix=f"relevance-ingest-{date}-", dir=config.staging_root))
    events_dir, quarantine_dir = staging / "events", staging / "quarantine"
    try:
        if files:
            with _session_conf(
                spark,
                {
                    "spark.sql.session.timeZone": "UTC",
                    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
                },
            ):
                _run_spark(
                    spark, F, StorageLevel, files, date, prefix, config, report, events_dir, quarantine_dir
                )
        report.accepted = _finish_dir(events_dir, EVENT_ARROW_SCHEMA)
        _finish_dir(quarantine_dir, QUARANTINE_ARROW_SCHEMA)
        report.duplicates_removed = report.rows_in - report.quarantined - report.accepted
        report.check()
        store.replace_dir(quarantine_dir, q_key)
        store.replace_dir(events_dir, out_key)
        record_ingested(store, date, entries, layout)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _run_spark(
    spark, F, StorageLevel, files, date, prefix, config, report, events_dir, quarantine_dir
) -> None:
    label = _source_label(F, date, prefix)
    frames = []
    csv_files = [f for f in files if f.format == "csv"]
    json_files = [f for f in files if f.format == "jsonl"]
    parquet_files = [f for f in files if f.format == "parquet"]
    if csv_files:
        frames += _csv_frames(spark, F, csv_files, label)
    if json_files:
        frames.append(_jsonl_frame(spark, F, json_files, label))
    if parquet_files:
        frames += _parquet_frames(spark, F, parquet_files, label)
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other)
    classified = _classify(F, frame, date, config.event_types).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = classified.groupBy("kind", "reason").count().collect()
        for row in counts:
            if row["kind"] == "header":
                report.header_lines += row["count"]
            elif row["kind"] == "blank":
                report.blank_lines += row["count"]
            else:
                report.rows_in += row["count"]
                if row["reason"] is not None:
                    report.reasons[row["reason"]] = report.reasons.get(row["reason"], 0) + row["count"]
        report.reasons = dict(sorted(report.reasons.items()))
        report.quarantined = sum(report.reasons.values())
        records = classified.filter(F.col("kind") == "record")
        (
            records.filter(F.col("reason").isNotNull())
            # when() without otherwise() is nullable, as QUARANTINE_ARROW_SCHEMA declares every column
            .select(
                *[
                    F.when(F.col("reason").isNotNull(), F.col(c)).alias(c)
                    for c in QUARANTINE_ARROW_SCHEMA.names
                ]
            )
            .write.mode("overwrite")
            .parquet(_spark_path(quarantine_dir))
        )
        accepted = records.filter(F.col("reason").isNull()).select(*EVENT_COLUMNS).dropDuplicates()
        # coalesce with a literal makes Spark declare the column non-nullable, so the files carry exactly
        # EVENT_ARROW_SCHEMA (these columns are never null here: the filter above guarantees it).
        non_null = {"item_id": F.lit(""), "event_type": F.lit(""), "timestamp": F.lit(0).cast("timestamp")}
        (
            accepted.select(
                *[
                    (F.coalesce(F.col(c), non_null[c]) if c in non_null else F.col(c)).alias(c)
                    for c in EVENT_COLUMNS
                ]
            )
            .sortWithinPartitions("timestamp")
            .write.mode("overwrite")
            .parquet(_spark_path(events_dir))
        )
    finally:
        classified.unpersist()
