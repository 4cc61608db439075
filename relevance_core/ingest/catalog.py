"""Validate the catalog snapshots in ``landing/catalog/`` and publish one row per item to ``lake/items/``.

Why pyarrow + DuckDB and not Spark: a catalog is small next to the event stream (a million listings is a
few hundred MB of text and fits one machine many times over), the ``items`` asset should not pay a JVM
start, and a catalog has free text (titles, descriptions) where a quoted CSV field may span lines, which
only a real CSV parser reads correctly (pyarrow's, with ``newlines_in_values``). Parsing is vectorised
(pyarrow); the per-row rules and the "latest snapshot wins" dedupe are one DuckDB query over the Arrow
table, so 1M items take seconds. Only JSON Lines are split in Python (one ``msgspec`` decode per line), to
refuse a bad line instead of failing the file.

Rules (one reason per refused row, the first that applies): ``invalid_utf8``, ``malformed_csv`` /
``wrong_column_count`` (the CSV parser's refused rows, with their original text), ``malformed_json``,
``missing_item_id``, ``missing_title``, ``non_numeric_price``, ``negative_price``, ``invalid_available``,
``unparseable_created_at``. A missing price / availability / creation time is allowed (the listing is
still recommendable; ``available`` defaults to true as in ``schemas.Item``).

"Newest snapshot wins": files are taken in key order (snapshot files are named so that key order is time
order, e.g. ``items-2026-01-05.parquet``) and rows in file order; the last valid version of an item_id is
kept and the earlier ones are counted as ``duplicates_removed``.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from relevance_core.ingest.landing import LandingFile, LandingFileError, landing_files
from relevance_core.ingest.report import IngestReport
from relevance_core.schemas import ITEM_ARROW_SCHEMA, ITEM_COLUMNS, QUARANTINE_ARROW_SCHEMA
from relevance_core.settings import LAYOUT, LakeLayout
from relevance_core.storage import ArtifactStore

DATASET = "items"

REASONS: tuple[str, ...] = (
    "invalid_utf8",
    "malformed_csv",
    "wrong_column_count",
    "malformed_json",
    "missing_item_id",
    "missing_title",
    "non_numeric_price",
    "negative_price",
    "invalid_available",
    "unparseable_created_at",
)

_STAGE_SCHEMA = pa.schema(
    [pa.field(c, pa.string()) for c in ITEM_COLUMNS]
    + [
        pa.field("_source", pa.string()),
        pa.field("_raw", pa.string()),
        pa.field("_pre_reason", pa.string()),
        pa.field("_file_idx", pa.int64()),
        pa.field("_row_idx", pa.int64()),
    ]
)


@dataclass(frozen=True)
class CatalogIngestConfig:
    layout: LakeLayout = field(default_factory=lambda: LAYOUT)

    @property
    def output_key(self) -> str:
        return self.layout.table(DATASET)

    @property
    def quarantine_key(self) -> str:
        return f"{self.layout.lake}/quarantine/{DATASET}"


def _stage_table(
    cols: dict[str, list | pa.Array], n: int, source: str, file_idx: int, raw=None, pre=None
) -> pa.Table:
    arrays = []
    for c in ITEM_COLUMNS:
        v = cols.get(c)
        arrays.append(pa.nulls(n, pa.string()) if v is None else pa.array(v, pa.string()))
    arrays += [
        pa.array([source] * n, pa.string()),
        pa.array(raw if raw is not None else [None] * n, pa.string()),
        pa.array(pre if pre is not None else [None] * n, pa.string()),
        pa.array([file_idx] * n, pa.int64()),
        pa.array(range(n), pa.int64()),
    ]
    return pa.Table.from_arrays(arrays, schema=_STAGE_SCHEMA)


def _decode_binary(arr: pa.Array) -> tuple[pa.Array, list[bool]]:
    """Binary → string, and which rows held bytes that are not UTF-8 (those get the replacement char)."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    try:
        return arr.cast(pa.string()), [False] * len(arr)
    except pa.ArrowInvalid:
        values, bad = [], []
        for v in arr.to_pylist():
            if v is None:
                values.append(None)
                bad.append(False)
                continue
            try:
                values.append(v.decode("utf-8"))
                bad.append(False)
            except UnicodeDecodeError:
                values.append(v.decode("utf-8", errors="replace"))
                bad.append(True)
        return pa.array(values, pa.string()), bad


def _read_csv(f: LandingFile, file_idx: int) -> list[pa.Table]:
    data = _read_bytes(f.path)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # pyarrow cannot hand a refused row with non-UTF-8 bytes to a handler; the exact path can.
        return _read_csv_python(f, file_idx, data)
    header = data.split(b"\n", 1)[0].rstrip(b"\r").removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    names = next(csv.reader([header]), [])
    if not names:  # an empty file: no header, no records
        return []
    refused: list[tuple[str, str]] = []

    def on_invalid(row) -> str:
        text = row.text or ""
        reason = "malformed_csv" if text.count('"') % 2 else "wrong_column_count"
        refused.append((text, reason))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(use_threads=False, skip_rows=1, column_names=names),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.binary() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return _read_csv_python(f, file_idx, data)
    lower = {n.strip().lower(): n for n in names}
    cols: dict[str, pa.Array] = {}
    bad_utf8 = [False] * table.num_rows
    for c in ITEM_COLUMNS:
        if c in lower:
            values, bad = _decode_binary(table.column(lower[c]))
            cols[c] = values
            bad_utf8 = [a or b for a, b in zip(bad_utf8, bad, strict=True)]
    pre = ["invalid_utf8" if b else None for b in bad_utf8] if any(bad_utf8) else None
    out = [_stage_table(cols, table.num_rows, f.key, file_idx, pre=pre)]
    if refused:
        out.append(
            _stage_table(
                {},
                len(refused),
                f.key,
                file_idx,
                raw=[t for t, _ in refused],
                pre=[r for _, r in refused],
            )
        )
    return out


def _read_bytes(path: Path) -> bytes:
    if path.name.lower().endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    return path.read_bytes()


def _read_csv_python(f: LandingFile, file_idx: int, data: bytes) -> list[pa.Table]:
    """Python's csv module over the file decoded with ``surrogateescape``, so each row's bad bytes are
    found exactly. Used only for files the fast path cannot take (non-UTF-8 bytes)."""
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")
    lines = text.split("\n")
    # strict: a quote left open (or a stray quote after a closing one) raises instead of being guessed at
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    names = [n.strip().lower() for n in next(reader, [])]
    rows: dict[str, list] = {c: [] for c in ITEM_COLUMNS}
    raw: list[str | None] = []
    pre: list[str | None] = []

    def fix(v: str) -> str:
        return v.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")

    consumed = reader.line_num
    while True:
        try:
            row: list[str] | None = next(reader)
        except StopIteration:
            break
        except csv.Error:
            row = None
        line_text = "\n".join(lines[consumed : reader.line_num])
        consumed = reader.line_num
        if row is not None and not "".join(row).strip():
            continue  # a blank line holds no record
        if row is None:
            reason = "malformed_csv"
        elif _SURROGATE.search(line_text):
            reason = "invalid_utf8"
        elif len(row) != len(names):
            reason = "wrong_column_count"
        else:
            reason = None
        values = dict(zip(names, row, strict=True)) if reason is None else {}
        for c in ITEM_COLUMNS:
            rows[c].append(values.get(c))
        raw.append(fix(line_text) if reason else None)
        pre.append(reason)
    return [_stage_table(rows, len(raw), f.key, file_idx, raw=raw, pre=pre)]


_SURROGATE = re.compile("[\udc80-\udcff]")


def _scalar_text(v) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return msgspec.json.encode(v).decode()


def _read_jsonl(f: LandingFile, file_idx: int) -> tuple[pa.Table, int]:
    rows: dict[str, list] = {c: [] for c in ITEM_COLUMNS}
    raw: list[str | None] = []
    pre: list[str | None] = []
    blank = 0
    with io.BytesIO(_read_bytes(f.path)) as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if not line.strip():
                blank += 1
                continue
            obj, reason = None, None
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                text, reason = line.decode("utf-8", errors="replace"), "invalid_utf8"
            if reason is None:
                try:
                    obj = msgspec.json.decode(text)
                except msgspec.DecodeError:
                    reason = "malformed_json"
                if reason is None and not isinstance(obj, dict):
                    obj, reason = None, "malformed_json"
            lowered = {str(k).lower(): v for k, v in obj.items()} if obj else {}
            for c in ITEM_COLUMNS:
                rows[c].append(_scalar_text(lowered.get(c)))
            raw.append(text)
            pre.append(reason)
    return _stage_table(rows, len(raw), f.key, file_idx, raw=raw, pre=pre), blank


def _read_parquet(f: LandingFile, file_idx: int) -> pa.Table:
    try:
        table = pq.read_table(f.path)
    except Exception as e:  # noqa: BLE001 - any read error means the file is unreadable as a whole
        raise LandingFileError(f"cannot read Parquet landing file {f.key}: {e}") from e
    lower = {n.lower(): n for n in table.column_names}
    cols = {}
    for c in ITEM_COLUMNS:
        if c in lower:
            col = table.column(lower[c])
            if pa.types.is_timestamp(col.type) and col.type.tz is None:
                # Text with an explicit zone; a naive Parquet timestamp is UTC by the landing contract.
                col = col.cast(pa.timestamp(col.type.unit, tz="UTC"))
            cols[c] = col.cast(pa.string())
    return _stage_table(cols, table.num_rows, f.key, file_idx)


_CLASSIFY_SQL = """
WITH n AS (
    SELECT *,
        nullif(trim(item_id), '') AS item_id_n,
        nullif(trim(title), '') AS title_n,
        nullif(trim(price), '') AS price_s,
        TRY_CAST(nullif(trim(price), '') AS DOUBLE) AS price_d,
        lower(nullif(trim(available), '')) AS avail_s,
        nullif(trim(created_at), '') AS created_s,
        TRY_CAST(nullif(trim(created_at), '') AS TIMESTAMPTZ) AS created_ts
    FROM staged
), c AS (
    SELECT *, CASE
        WHEN _pre_reason IS NOT NULL THEN _pre_reason
        WHEN item_id_n IS NULL THEN 'missing_item_id'
        WHEN title_n IS NULL THEN 'missing_title'
        WHEN price_s IS NOT NULL AND (price_d IS NULL OR isnan(price_d) OR isinf(price_d)) THEN 'non_numeric_price'
        WHEN price_d < 0 THEN 'negative_price'
        WHEN avail_s IS NOT NULL AND avail_s NOT IN ('true', 'false', 't', 'f', '1', '0', 'yes', 'no')
            THEN 'invalid_available'
        WHEN created_s IS NOT NULL AND created_ts IS NULL THEN 'unparseable_created_at'
    END AS reason
    FROM n
)
"""

_STR = "nullif(trim({c}), '')"


def _accepted_sql() -> str:
    return (
        _CLASSIFY_SQL
        + f"""
SELECT item_id_n AS item_id, title_n AS title,
    coalesce({_STR.format(c="description")}, '') AS description,
    coalesce({_STR.format(c="category_path")}, '') AS category_path,
    price_d AS price,
    {_STR.format(c="brand")} AS brand, {_STR.format(c="location")} AS location,
    {_STR.format(c="condition")} AS condition, {_STR.format(c="image_url")} AS image_url,
    {_STR.format(c="seller_id")} AS seller_id,
    coalesce(avail_s IN ('true', 't', '1', 'yes'), true) AS available,
    created_ts AS created_at
FROM c WHERE reason IS NULL
QUALIFY row_number() OVER (PARTITION BY item_id_n ORDER BY _file_idx DESC, _row_idx DESC) = 1
ORDER BY item_id
"""
    )


def _quarantine_sql() -> str:
    record = ", ".join(f"{c} := {c}" for c in ITEM_COLUMNS)
    return (
        _CLASSIFY_SQL
        + f"""
SELECT _source AS source_file, coalesce(_raw, CAST(to_json(struct_pack({record})) AS VARCHAR)) AS raw, reason
FROM c WHERE reason IS NOT NULL ORDER BY _file_idx, _row_idx
"""
    )


def _fetch(con, sql: str) -> pa.Table:
    rel = con.sql(sql)
    # duckdb >= 1.4 names it to_arrow_table; older releases (pyproject admits 1.3) call it arrow().
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fetch()


def ingest_catalog(store: ArtifactStore, *, config: CatalogIngestConfig | None = None) -> IngestReport:
    """Ingest every snapshot file under ``landing/catalog/`` into ``lake/items/`` (replacing it).

    Raises ``LandingMissingError`` when ``landing/catalog/`` does not exist; an existing one without records
    publishes an empty items table.
    """
    import duckdb

    config = config or CatalogIngestConfig()
    t0 = time.perf_counter()
    prefix = config.layout.catalog_landing
    files, skipped = landing_files(store, prefix)
    report = IngestReport(
        dataset=DATASET,
        partition=None,
        source_prefix=prefix,
        output_key=config.output_key,
        quarantine_key=config.quarantine_key,
        files=[f.key for f in files],
        skipped_files=skipped,
    )
    tables = [_STAGE_SCHEMA.empty_table()]
    for i, f in enumerate(files):
        if f.format == "csv":
            tables += _read_csv(f, i)
            report.header_lines += 1
        elif f.format == "jsonl":
            table, blank = _read_jsonl(f, i)
            tables.append(table)
            report.blank_lines += blank
        else:
            tables.append(_read_parquet(f, i))
    staged = pa.concat_tables(tables)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("staged", staged)
        accepted = _fetch(con, _accepted_sql()).cast(ITEM_ARROW_SCHEMA)
        quarantine = _fetch(con, _quarantine_sql()).cast(QUARANTINE_ARROW_SCHEMA)
    finally:
        con.close()
    report.rows_in = staged.num_rows
    report.accepted = accepted.num_rows
    report.quarantined = quarantine.num_rows
    counts = pc.value_counts(quarantine.column("reason")).to_pylist() if quarantine.num_rows else []
    report.reasons = dict(sorted((d["values"], d["counts"]) for d in counts))
    report.duplicates_removed = report.rows_in - report.accepted - report.quarantined
    report.check()
    staging = Path(tempfile.mkdtemp(prefix="relevance-ingest-items-"))
    try:
        (staging / "items").mkdir()
        (staging / "quarantine").mkdir()
        pq.write_table(accepted, staging / "items" / "items.parquet")
        pq.write_table(quarantine, staging / "quarantine" / "items.parquet")
        store.replace_dir(staging / "quarantine", config.quarantine_key)
        store.replace_dir(staging / "items", config.output_key)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
