"""Hostile input for the landing parsers (item 4), as hypothesis properties.

Each example is a whole landing day: one CSV, one JSON Lines and one Parquet file made of valid events,
events whose ids look like paths (``../``), SQL, control characters, unicode tricks or megabyte-long
strings, broken quoting, broken JSON, random bytes, every line-break style. One Spark run per example
(the parsers are Catalyst expressions, so a batch costs about what one line does), few examples, large
batches. Properties, for every example:

* ingestion never raises;
* rows in = accepted + quarantined + duplicates, where "rows in" is counted here independently from the
  bytes (Spark's line rules: ``\\n`` / ``\\r\\n`` / ``\\r``; whitespace-only lines and CSV header lines are
  not records), and the lake and quarantine partitions hold exactly ``accepted`` / ``quarantined`` rows;
* every accepted row is valid (known type, an item id, a timestamp inside the day);
* nothing outside the store is touched, and inside it only ``landing/`` and ``lake/`` exist: an id like
  ``../../x`` is data, never a path.

The catalog parser (pyarrow + DuckDB, no JVM) gets more examples. The erasure line filter is fuzzed too:
whatever the bytes, the lines it keeps are byte-identical.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from relevance_core.erasure import filter_text_lines, mentions
from relevance_core.ingest import LandingFileError, ingest_catalog, ingest_events_day
from relevance_core.schemas import EVENT_COLUMNS, EVENT_TYPES, ITEM_COLUMNS
from relevance_core.storage import LocalStore

DAY = "2026-03-10"
DAY_START = datetime(2026, 3, 10, tzinfo=UTC)
HEADER = ",".join(EVENT_COLUMNS)

HOSTILE = [
    "../../etc/passwd",
    "..",
    "../",
    "/etc/shadow",
    "C:\\Windows\\..\\system32",
    "%2e%2e%2f%2e%2e%2f",
    "'; DROP TABLE raw_events; --",
    '" OR "1"="1',
    "1; SELECT * FROM read_parquet('/etc/*')",
    "${jndi:ldap://x/a}",
    "{{7*7}}",
    "\x00",
    "a\x00b",
    "\x1b[31mred",
    "\u202eevil",
    "\ufeffbom",
    "ｕｓｅｒ",
    "💥🔥",
    "e\u0301",
    "\ud7ff",
    "null",
    "NULL",
    "None",
    "",
    " ",
    "\t",
    "\\",
    '"',
    '""',
    ",",
    "a,b",
    "x" * 5000,
]

ident = st.one_of(
    st.sampled_from(HOSTILE), st.text(max_size=20), st.from_regex(r"[a-z]{1,3}[0-9]{1,3}", fullmatch=True)
)
in_day_ts = st.integers(0, 86_400_000 - 1).map(
    lambda ms: (DAY_START + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
)
ts_text = st.one_of(
    in_day_ts,
    in_day_ts,
    st.sampled_from(
        [
            "2026-03-10",
            "2026",
            "2026-03-10T25:00:00Z",
            "9999-99-99T00:00:00Z",
            "2026-03-11T00:00:00Z",
            "1e309",
        ]
    ),
    st.text(max_size=25),
)
etype = st.one_of(st.sampled_from([*EVENT_TYPES, "VIEW", " click ", "teleport", ""]), st.text(max_size=10))
event = st.fixed_dictionaries(
    {
        "user_id": st.one_of(st.none(), ident),
        "session_id": st.one_of(st.none(), ident),
        "item_id": st.one_of(st.none(), ident, st.from_regex(r"i[0-9]{1,3}", fullmatch=True)),
        "event_type": etype,
        "timestamp": ts_text,
        "device_type": st.one_of(st.none(), ident),
    }
)
line_break = st.sampled_from([b"\n", b"\r\n", b"\r"])


def _csv_record(e: dict, quote_all: bool) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator="")
    w.writerow(["" if e[c] is None else e[c] for c in EVENT_COLUMNS])
    return buf.getvalue().encode("utf-8", errors="surrogatepass")


csv_line = st.one_of(
    st.builds(_csv_record, event, st.booleans()),
    st.builds(_csv_record, event, st.booleans()),
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda s: s.encode("utf-8", errors="surrogatepass")),
    st.lists(ident, max_size=8).map(lambda xs: ",".join(xs).encode("utf-8", errors="surrogatepass")),
)
json_line = st.one_of(
    event.map(lambda e: json.dumps(e, ensure_ascii=False).encode("utf-8", errors="surrogatepass")),
    event.map(lambda e: json.dumps(e).encode()),
    st.dictionaries(
        st.text(max_size=12), st.one_of(st.none(), st.integers(), st.floats(), ident), max_size=6
    ).map(lambda d: json.dumps(d).encode()),
    event.map(lambda e: json.dumps(e).encode()[:-3]),  # truncated
    st.binary(max_size=60),
    st.sampled_from([b"[]", b"null", b"1", b'"x"', b"{}", b"{{}", b"[{" * 200]),
)


def _file(lines: list[bytes], breaks: list[bytes]) -> bytes:
    return b"".join(line + breaks[i % len(breaks)] for i, line in enumerate(lines))


def _split_lines(data: bytes) -> list[bytes]:
    """Spark's (Hadoop's) text lines: ``\\n``, ``\\r\\n`` and a lone ``\\r`` all end a line."""
    parts = re.split(rb"\r\n|\r|\n", data)
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def _blank(line: bytes) -> bool:
    return line.strip(b" \t\n\x0b\x0c\r") == b""


def _records(data: bytes, csv_header: bytes | None) -> int:
    n = 0
    for line in _split_lines(data):
        if csv_header is not None:  # the CSV reader drops a leading BOM from every line, as Spark does
            line = line.removeprefix(b"\xef\xbb\xbf")
        if _blank(line):
            continue
        if csv_header is not None and line == csv_header:
            continue
        n += 1
    return n


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def _parquet_table(rows: list[dict], extra: bool) -> pa.Table:
    cols = {c: pa.array([r[c] for r in rows], pa.string()) for c in EVENT_COLUMNS}
    for c in cols:  # strings with lone surrogates cannot be Parquet text: keep them as replaced text
        cols[c] = pa.array(
            [None if v is None else v.encode("utf-8", "replace").decode() for v in cols[c].to_pylist()],
            pa.string(),
        )
    if extra:
        cols["../../escape"] = pa.array(list(range(len(rows))), pa.int64())
    return pa.table(cols)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    # no shrinking: every step would be a Spark run; a failure still prints the whole example
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(
    csv_lines=st.lists(csv_line, min_size=60, max_size=200),
    json_lines=st.lists(json_line, min_size=60, max_size=200),
    parquet_rows=st.lists(event, min_size=20, max_size=80),
    breaks=st.lists(line_break, min_size=1, max_size=3),
    extra_col=st.booleans(),
    dup=st.booleans(),
)
def test_event_ingestion_accounts_for_every_hostile_row(
    spark, fuzz_root, csv_lines, json_lines, parquet_rows, breaks, extra_col, dup
):
    import uuid

    case = fuzz_root / uuid.uuid4().hex[:8]
    outside = case / "outside"
    outside.mkdir(parents=True)
    (outside / "sentinel.txt").write_text("do not touch")
    home = case / "home"
    store = LocalStore(home)
    if dup:  # exact duplicates of valid-looking rows
        csv_lines = csv_lines + csv_lines[:5]
        json_lines = json_lines + json_lines[:5]
    # The header's own line break is \n or \r\n here; a lone \r (old-Mac files) is covered by
    # test_csv_with_lone_cr_line_breaks_is_read below.
    csv_bytes = HEADER.encode() + (b"\r\n" if b"\r\n" in breaks else b"\n") + _file(csv_lines, breaks)
    json_bytes = _file(json_lines, breaks)
    prefix = f"landing/events/date={DAY}"
    store.write_bytes(f"{prefix}/shop.csv", csv_bytes)
    store.write_bytes(f"{prefix}/app.jsonl", json_bytes)
    buf = io.BytesIO()
    pq.write_table(_parquet_table(parquet_rows, extra_col), buf)
    store.write_bytes(f"{prefix}/feed.parquet", buf.getvalue())
    before_outside = _tree(case.parent)
    before_outside = {k: v for k, v in before_outside.items() if not k.startswith(f"{case.name}/home")}

    report = ingest_events_day(spark, store, DAY)

    expected_in = _records(csv_bytes, HEADER.encode()) + _records(json_bytes, None) + len(parquet_rows)
    assert report.rows_in == expected_in
    assert report.rows_in == report.accepted + report.quarantined + report.duplicates_removed
    lake = pq.read_table(home / "lake" / "raw_events" / f"date={DAY}")
    quarantine = pq.read_table(home / "lake" / "quarantine" / "raw_events" / f"date={DAY}")
    assert lake.num_rows == report.accepted and quarantine.num_rows == report.quarantined
    assert sum(report.reasons.values()) == report.quarantined
    for row in lake.to_pylist():
        assert row["event_type"] in EVENT_TYPES and row["item_id"]
        assert DAY_START <= row["timestamp"] < DAY_START + timedelta(days=1)
    assert all(q["reason"] and q["source_file"].startswith(prefix + "/") for q in quarantine.to_pylist())
    # nothing outside the store changed; inside it, only the landing zone and the lake
    after_outside = {k: v for k, v in _tree(case.parent).items() if not k.startswith(f"{case.name}/home")}
    assert after_outside == before_outside
    assert sorted(os.listdir(home)) == ["lake", "landing"]
    # (and the record of what was ingested, which the landing sensor compares against)
    assert sorted(p.name for p in (home / "lake").iterdir()) == ["_ingested", "quarantine", "raw_events"]
    FIGURES["event_rows_tried"] += report.rows_in
    FIGURES["event_examples"] += 1
    print(f"FUZZ events: {FIGURES}")


#: Running totals, printed (``pytest -s``) for the figures in docs/reliability.md.
FIGURES = {"event_rows_tried": 0, "event_examples": 0, "catalog_rows_tried": 0, "catalog_examples": 0}


def test_csv_with_lone_cr_line_breaks_is_read(spark, tmp_path):
    r"""Found by this fuzzing: the header used to be read up to the first \n only, so a file with old-Mac
    \r line breaks made csv.reader raise."""
    store = LocalStore(tmp_path / "home")
    rows = [HEADER, f"u1,,i1,view,{DAY}T10:00:00Z,", f"u2,,i2,click,{DAY}T11:00:00Z,"]
    store.write_bytes(f"landing/events/date={DAY}/mac.csv", "\r".join(rows).encode() + b"\r")
    report = ingest_events_day(spark, store, DAY)
    assert (report.rows_in, report.accepted) == (2, 2)


def test_csv_line_of_only_a_bom_is_blank(spark, tmp_path):
    """Found by this fuzzing: the CSV reader drops a leading BOM from every line (so the header of two
    concatenated files is still a header), so a line holding only a BOM is blank, not a record."""
    store = LocalStore(tmp_path / "home")
    data = HEADER.encode() + b"\n\xef\xbb\xbf\r" + f"u1,,i1,view,{DAY}T10:00:00Z,".encode() + b"\r"
    store.write_bytes(f"landing/events/date={DAY}/bom.csv", data)
    report = ingest_events_day(spark, store, DAY)
    assert (report.rows_in, report.blank_lines, report.accepted) == (1, 1, 1)
    assert report.rows_in == _records(data, HEADER.encode())


def test_corrupt_parquet_fails_cleanly_and_publishes_nothing(spark, tmp_path):
    """A Parquet file whose footer is garbage has no addressable rows: the run fails naming the file (a
    clear error, not a JVM trace) and nothing is published."""
    store = LocalStore(tmp_path / "home")
    store.write_bytes(f"landing/events/date={DAY}/bad.parquet", os.urandom(200) + b"PAR1")
    with pytest.raises(LandingFileError, match="bad.parquet"):
        ingest_events_day(spark, store, DAY)
    assert store.list("lake") == []


item_row = st.fixed_dictionaries(
    {
        "item_id": st.one_of(st.none(), ident),
        "title": st.one_of(st.none(), ident, st.text(max_size=40)),
        "description": st.one_of(st.none(), st.text(max_size=60)),
        "category_path": st.one_of(st.none(), ident, st.just("A > B > C")),
        "price": st.one_of(st.none(), ident, st.sampled_from(["1.5", "-3", "1e309", "NaN", "12,50"])),
        "available": st.one_of(st.none(), st.sampled_from(["true", "false", "yes", "2", ""])),
        "created_at": st.one_of(st.none(), ts_text),
    }
)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(item_row, max_size=40),
    garbage=st.lists(st.binary(max_size=60), max_size=10),
    fmt=st.sampled_from(["csv", "jsonl"]),
)
def test_catalog_ingestion_accounts_for_every_hostile_row(tmp_path_factory, rows, garbage, fmt):
    case = tmp_path_factory.mktemp("cat")
    store = LocalStore(case / "home")
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(ITEM_COLUMNS)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r[c] for c in ITEM_COLUMNS])
        data = buf.getvalue().encode("utf-8", "surrogatepass")
    else:
        data = b"".join(
            json.dumps({k: v for k, v in r.items() if v is not None}).encode() + b"\n" for r in rows
        )
    data += b"".join(g.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n" for g in garbage)
    store.write_bytes(f"landing/catalog/items.{fmt}", data)
    try:
        report = ingest_catalog(store)
    except LandingFileError:
        return  # a file unreadable as a whole is refused by name (clear error), never half-ingested
    assert report.rows_in == report.accepted + report.quarantined + report.duplicates_removed
    items = pq.read_table(case / "home" / "lake" / "items")
    assert items.num_rows == report.accepted
    assert sorted(os.listdir(case / "home")) == ["lake", "landing"]
    FIGURES["catalog_rows_tried"] += report.rows_in
    FIGURES["catalog_examples"] += 1
    print(f"FUZZ catalog: {FIGURES}")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    lines=st.lists(st.one_of(st.binary(max_size=40), csv_line, json_line), max_size=30),
    breaks=st.lists(line_break, min_size=1, max_size=3),
    target=ident.filter(lambda s: s.strip() != ""),
)
def test_erasure_line_filter_keeps_every_other_line_byte_for_byte(lines, breaks, target):
    data = _file(lines, breaks)
    ids = frozenset({target.strip()})
    out, removed, seen = filter_text_lines(data, ids)
    kept = [x for x in re.split(rb"(?<=\r\n)|(?<=\n)|(?<=\r)(?!\n)", data) if x]
    expect = [x for x in kept if not mentions(re.sub(rb"[\r\n]+$", b"", x).decode("utf-8", "replace"), ids)]
    assert out == b"".join(expect)
    assert seen == len(kept) and removed == len(kept) - len(expect)
