"""Right to erasure: remove a set of users' events from every store derived from them, and prove it.

What is scrubbed, and how (docs/contracts.md has the layout; docs/reliability.md lists the stores and the figures):

* **Landing event files** (``landing/events/date=*/``, CSV / JSON Lines / Parquet, gzip or not). Each
  affected file is rewritten *in its own format* without the user's rows and put back with the store's
  atomic ``write_bytes`` (temp file + rename locally, one PUT on S3). Text files are filtered line by line
  and every other line is kept byte for byte (same header, same line breaks, same invalid bytes), so a
  re-ingestion of the day gives exactly the erased lake. Files that mention nobody are not touched.
* **Every lake table** (``lake/<table>/date=*/`` and unpartitioned ``lake/<table>/``, quarantine
  included), discovered rather than listed, so a table added later is covered: a table with a
  ``user_id`` column loses the rows of those users; a quarantine table (``raw`` column) loses the rows
  whose raw text names an id as a field value. Each changed partition is rebuilt in a private staging
  directory and published with ``store.replace_dir`` (nothing half-written is ever visible), and the
  superseded copy the store keeps for in-flight readers is then purged (it still holds the user's rows).
* **The warehouse** (``warehouse.duckdb``): every *base table* with a ``user_id`` column is cleaned on a
  private copy, compacted into a fresh file (DuckDB's DELETE only marks rows; the bytes would stay in the
  file) and renamed over the published one. Today dbt keeps no user-level rows there: ``stg_events`` is a
  view over the lake (clean as soon as the lake is), and ``item_popularity`` / ``daily_event_stats`` are
  aggregates (counts of events and distinct users) that the next dbt build recomputes without the user;
  the receipt names them under ``pending_recompute``.
* **generator_truth/** (synthetic ground truth, when present): rows of those users.

Matching. Lake tables are matched on their ``user_id`` column (ingestion stores it trimmed). Landing rows
and quarantined raw text are matched when *any field value* equals an id after trimming (JSON-aware and
CSV-aware, with a token fallback for text neither parser reads): a quarantined line is by definition one
that did not parse, so its user id may sit anywhere, and erring towards removal is the safe side. Only
exact field values match: user "u1" never removes a row of "u10".

Proof. After the pass, a verification scan (the same code in count-only mode) re-reads every store; a
non-zero remainder (e.g. a writer raced the erasure) triggers another pass, and the receipt records the
scan. The receipt ``erasure/receipts/<timestamp>-<hash>.json`` holds *no personal data*: subjects as keyed
hashes (HMAC-SHA256 with a secret salt), store keys that would contain an id replaced by a hash, counts
per store and key, time, run id.

Run it while nothing else writes the same partitions (the Dagster op runs in the DuckDB writer pool; a
concurrent ingestion of a day could publish rows read before the landing file was rewritten, which the
verification scan would catch and erase).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from relevance_core.ingest.landing import file_format
from relevance_core.settings import LAYOUT, LakeLayout
from relevance_core.storage import ArtifactStore, LocalStore, S3Store, StoreError, _clean_key

RECEIPTS_PREFIX = "erasure/receipts"
#: Store key of the generated salt, used only when ``RELEVANCE_ERASURE_SALT`` is not set.
SALT_KEY = "erasure/salt"
SALT_ENV = "RELEVANCE_ERASURE_SALT"
TRUTH_PREFIX = "generator_truth"
WAREHOUSE_KEY = "warehouse.duckdb"
#: dbt models that aggregate over users: no user rows, but numbers that include them until rebuilt.
AGGREGATE_TABLES = ("item_popularity", "daily_event_stats")
MAX_PASSES = 3

_TOKEN_SPLIT = re.compile(r"[\s,;|\t\"'{}\[\]:=()]+")
_LINE_SPLIT = re.compile(rb"(\r\n|\r|\n)")


class ErasureError(RuntimeError):
    """Erasure could not complete; the receipt (if written) says what remained."""


class ErasureIncompleteError(ErasureError):
    """The verification scan still found rows of the subjects after every pass."""


@dataclass
class Removal:
    """One place rows were removed from (or, in the scan, found in)."""

    store: str  # landing | raw_events | quarantine/raw_events | sessions | ... | warehouse | generator_truth
    key: str  # store key of the file / partition / table (ids in it replaced by a hash)
    rows_removed: int
    rows_before: int


@dataclass
class ErasureResult:
    run_id: str
    receipt_key: str | None = None
    subjects: list[str] = field(default_factory=list)  # keyed hashes, never raw ids
    ids_matched: int = 0  # subject ids plus aliases (e.g. the service's pseudonyms)
    removals: list[Removal] = field(default_factory=list)
    stores_checked: dict[str, int] = field(default_factory=dict)  # store → units examined
    rows_removed: dict[str, int] = field(default_factory=dict)  # store → rows removed
    pending_recompute: list[str] = field(default_factory=list)
    passes: int = 0
    remaining_after: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def total_removed(self) -> int:
        return sum(self.rows_removed.values())

    def as_dict(self) -> dict:
        d = asdict(self)
        d["total_removed"] = self.total_removed
        return d


# -- matching ----------------------------------------------------------------------------------------------


def _values(obj) -> Iterable[str]:
    """Every scalar value of a decoded JSON document, as text."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _values(v)
    elif obj is not None and not isinstance(obj, bool):
        yield str(obj)


def mentions(text: str, ids: frozenset[str]) -> bool:
    """True when ``text`` (one landing line, one quarantined ``raw``) holds an id as a field value.

    JSON first (any value, nested too), then CSV fields, then a token split for text neither reads (an
    unbalanced quote, a truncated object). A cheap substring test rejects almost every line first.
    """
    if not text or not any(i in text for i in ids):
        return False
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            doc = json.loads(stripped)
        except ValueError:
            doc = None
        if doc is not None:
            return any(v.strip() in ids for v in _values(doc))
    try:
        fields = next(csv.reader([stripped]), [])
    except csv.Error:
        fields = []
    if any(f.strip() in ids for f in fields):
        return True
    if any(f'"{i}"' in text for i in ids):
        return True
    return any(t in ids for t in _TOKEN_SPLIT.split(text))


# -- landing files -----------------------------------------------------------------------------------------


def filter_text_lines(data: bytes, ids: frozenset[str]) -> tuple[bytes, int, int]:
    """Drop the lines of a CSV / JSON Lines file that mention an id; keep every other byte as it was.

    A line is what ingestion reads as a record (Spark's text source splits on ``\\n``, ``\\r\\n``, ``\\r``).
    The header of a CSV file never holds a user id value, so the same rule covers it. Returns
    (new bytes, lines removed, lines seen).
    """
    parts = _LINE_SPLIT.split(data)
    # parts = [line, sep, line, sep, ..., last line]; a line owns the separator after it
    out = []
    removed = seen = 0
    for i in range(0, len(parts), 2):
        line = parts[i]
        sep = parts[i + 1] if i + 1 < len(parts) else b""
        if not line and not sep:
            continue
        seen += 1
        if line and mentions(line.decode("utf-8", errors="replace"), ids):
            removed += 1
            continue
        out.append(line + sep)
    return b"".join(out), removed, seen


def _string_columns_match(table: pa.Table, ids: frozenset[str], columns: Iterable[str]) -> pa.Array:
    id_array = pa.array(sorted(ids), pa.string())
    mask = pa.array([False] * table.num_rows, pa.bool_())
    for name in columns:
        col = table.column(name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            try:
                col = col.cast(pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
        trimmed = pc.utf8_trim_whitespace(col)
        hit = pc.fill_null(pc.is_in(trimmed, value_set=id_array), False)
        mask = pc.or_(mask, hit)
    return mask


def filter_parquet(data: bytes, ids: frozenset[str]) -> tuple[bytes | None, int, int]:
    """A landing Parquet file without the rows where any string column equals an id (trimmed).

    Returns (new bytes or None when nothing matched, rows removed, rows seen); schema and metadata kept.
    """
    table = pq.read_table(pa.BufferReader(data))
    cols = [
        f.name
        for f in table.schema
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_dictionary(f.type)
    ]
    mask = _string_columns_match(table, ids, cols)
    removed = pc.sum(mask).as_py() or 0
    if not removed:
        return None, 0, table.num_rows
    kept = table.filter(pc.invert(mask))
    buf = io.BytesIO()
    pq.write_table(kept, buf)
    return buf.getvalue(), removed, table.num_rows


def _erase_landing_file(store: ArtifactStore, key: str, ids: frozenset[str], dry_run: bool) -> Removal | None:
    fmt = file_format(key)
    if fmt is None:
        return None
    data = store.read_bytes(key)
    gz = key.lower().endswith(".gz")
    if gz:
        data = gzip.decompress(data)
    if fmt == "parquet":
        new, removed, seen = filter_parquet(data, ids)
    else:
        new, removed, seen = filter_text_lines(data, ids)
    if not removed:
        return Removal("landing", key, 0, seen)
    if not dry_run:
        if gz:
            # mtime=0: the rewritten file does not depend on the clock (re-runs give identical bytes)
            new = gzip.compress(new, mtime=0)
        store.write_bytes(key, new)
    return Removal("landing", key, removed, seen)


def _landing_keys(store: ArtifactStore, layout: LakeLayout) -> list[str]:
    out = []
    for key in store.list(layout.events_landing):
        rel = key[len(layout.events_landing) + 1 :]
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        if file_format(key) is not None:
            out.append(key)
    return out


# -- lake tables -------------------------------------------------------------------------------------------


def _table_units(store: ArtifactStore, prefix: str) -> list[str]:
    parts = [d for d in store.list_dirs(prefix) if d.startswith("date=")]
    if parts:
        return [f"{prefix}/{d}" for d in parts]
    return [prefix] if store.list(prefix) else []


def lake_units(store: ArtifactStore, layout: LakeLayout = LAYOUT) -> list[tuple[str, str]]:
    """(store name, key prefix) of every published directory of the lake, quarantine included.

    The catalog (``items``) holds no user data and is skipped (on S3 it would be downloaded for nothing).
    """
    units = []
    for table in store.list_dirs(layout.lake):
        if table == "items" or table.startswith(("_", ".")):
            continue
        if table == "quarantine":
            for qt in store.list_dirs(f"{layout.lake}/quarantine"):
                if qt == "items":
                    continue
                for u in _table_units(store, f"{layout.lake}/quarantine/{qt}"):
                    units.append((f"quarantine/{qt}", u))
            continue
        for u in _table_units(store, f"{layout.lake}/{table}"):
            units.append((table, u))
    return units


def _raw_mask(col: pa.ChunkedArray, ids: frozenset[str]) -> pa.Array:
    values = col.to_pylist()
    return pa.array([bool(v) and mentions(v, ids) for v in values], pa.bool_())


def _unit_mask(table: pa.Table, ids: frozenset[str]) -> pa.Array | None:
    names = table.schema.names
    if "user_id" in names:
        return _string_columns_match(table, ids, ["user_id"])
    if "raw" in names:
        return _raw_mask(table.column("raw"), ids)
    return None


def purge_superseded(store: ArtifactStore, prefix: str) -> None:
    """Delete the copies of ``prefix`` that ``replace_dir`` keeps for in-flight readers (and leftovers of
    crashed publishes): after an erasure they are exactly where the user's rows still are."""
    prefix = _clean_key(prefix)
    if isinstance(store, LocalStore):
        target = store.path(prefix)
        for p in target.parent.glob(f".{target.name}.*"):
            if p.name.startswith(
                (f".{target.name}.previous", f".{target.name}.old-", f".{target.name}.new-")
            ):
                shutil.rmtree(p, ignore_errors=True)
    elif isinstance(store, S3Store):
        current = store.resolve_dir(prefix)
        for name in store.list_dirs(prefix):
            if name.startswith("_v=") and f"{prefix}/{name}" != current:
                store.delete_prefix(f"{prefix}/{name}")


def _stale_copies_with_subjects(store: ArtifactStore, prefix: str, ids: frozenset[str]) -> list[Path]:
    """Hidden copies of a local partition (the superseded version ``replace_dir`` keeps, leftovers of a
    crashed publish) that still hold rows of the subjects. On S3 superseded versions are purged with
    every rewrite (``purge_superseded``); listing them here would mean downloading each."""
    if not isinstance(store, LocalStore):
        return []
    target = store.path(prefix)
    out = []
    for p in sorted(target.parent.glob(f".{target.name}.*")):
        if not p.is_dir():
            continue
        for f in sorted(p.glob("*.parquet")):
            try:
                t = pq.read_table(f)
            except (OSError, pa.ArrowException):
                # a half-copied file (a publish killed mid-way): unreadable, may hold anyone's rows
                out.append(p)
                break
            mask = _unit_mask(t, ids)
            if mask is not None and pc.any(mask).as_py():
                out.append(p)
                break
    return out


def _erase_unit(
    store: ArtifactStore, name: str, prefix: str, ids: frozenset[str], dry_run: bool
) -> Removal | None:
    stale = _stale_copies_with_subjects(store, prefix, ids)
    if not dry_run:
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
    r = _erase_current(store, name, prefix, ids, dry_run)
    if stale and dry_run:  # the scan reports them: they are where the subjects' rows still are
        r = r or Removal(name, prefix, 0, 0)
        r.rows_removed += len(stale)
    return r


def _erase_current(
    store: ArtifactStore, name: str, prefix: str, ids: frozenset[str], dry_run: bool
) -> Removal | None:
    local = store.local_dir(prefix)
    files = sorted(p for p in local.iterdir() if p.is_file()) if local.exists() else []
    parquet = [p for p in files if p.suffix == ".parquet" and not p.name.startswith((".", "_"))]
    if not parquet:
        return None
    tables: dict[Path, tuple[pa.Table, pa.Array | None]] = {}
    removed = before = 0
    for p in parquet:
        t = pq.read_table(p)
        mask = _unit_mask(t, ids)
        if mask is None:
            return None  # a table without user data (checked by schema)
        n = pc.sum(mask).as_py() or 0
        tables[p] = (t, mask if n else None)
        removed += n
        before += t.num_rows
    if removed and not dry_run:
        staging = Path(tempfile.mkdtemp(prefix="relevance-erasure-"))
        try:
            out = staging / "dir"
            out.mkdir()
            for p in files:
                if p in tables and tables[p][1] is not None:
                    t, mask = tables[p]
                    pq.write_table(t.filter(pc.invert(mask)), out / p.name)
                elif not p.name.startswith((".", "_")):
                    shutil.copy2(p, out / p.name)
            store.replace_dir(out, prefix)
            purge_superseded(store, prefix)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Removal(name, prefix, removed, before)


# -- generator truth ---------------------------------------------------------------------------------------


def _erase_truth(store: ArtifactStore, ids: frozenset[str], dry_run: bool) -> list[Removal]:
    out = []
    for key in store.list(TRUTH_PREFIX):
        if not key.endswith(".parquet"):
            continue
        t = pq.read_table(pa.BufferReader(store.read_bytes(key)))
        if "user_id" not in t.schema.names:
            continue
        mask = _string_columns_match(t, ids, ["user_id"])
        n = pc.sum(mask).as_py() or 0
        if n and not dry_run:
            buf = io.BytesIO()
            pq.write_table(t.filter(pc.invert(mask)), buf)
            store.write_bytes(key, buf.getvalue())
        out.append(Removal("generator_truth", key, n, t.num_rows))
    return out


# -- warehouse ---------------------------------------------------------------------------------------------


def _user_tables(con) -> tuple[list[str], list[str]]:
    """(base tables with a user_id column, views with one) in the main schema."""
    rows = con.execute(
        "select t.table_name, t.table_type from information_schema.tables t "
        "join information_schema.columns c on c.table_name = t.table_name and c.table_schema = t.table_schema "
        "where c.column_name = 'user_id' and t.table_schema = 'main' order by 1"
    ).fetchall()
    base = [r[0] for r in rows if r[1] == "BASE TABLE"]
    views = [r[0] for r in rows if r[1] == "VIEW"]
    return base, views


def _count_in(con, table: str, ids: list[str]) -> tuple[int, int]:
    total = con.execute(f'select count(*) from "{table}"').fetchone()[0]
    hit = con.execute(
        f'select count(*) from "{table}" where trim(cast(user_id as varchar)) in (select unnest(?))', [ids]
    ).fetchone()[0]
    return hit, total


def _erase_warehouse(store: ArtifactStore, ids: frozenset[str], dry_run: bool) -> tuple[list[Removal], bool]:
    """Returns (per-table results, whether a warehouse exists)."""
    import duckdb

    from relevance_core.warehouse import warehouse_path

    if isinstance(store, LocalStore):
        path = store.path(WAREHOUSE_KEY)
        if not path.exists():
            return [], False
    else:
        if not store.exists(WAREHOUSE_KEY):
            return [], False
        path = warehouse_path(store)
    id_list = sorted(ids)
    con = duckdb.connect(str(path), read_only=True)
    results: list[Removal] = []
    try:
        base, views = _user_tables(con)
        for t in base:
            hit, total = _count_in(con, t, id_list)
            results.append(Removal("warehouse", f"{WAREHOUSE_KEY}#{t}", hit, total))
        for v in views:
            # a view over the lake: checked (the lake is already clean), never written
            try:
                hit, total = _count_in(con, v, id_list)
            except duckdb.Error:
                continue  # a view whose lake is not on this machine (S3 staged copy gone)
            results.append(Removal("warehouse", f"{WAREHOUSE_KEY}#{v}", hit, total))
    finally:
        con.close()
    to_clean = [r for r in results if r.rows_removed and r.key.split("#", 1)[1] in base]
    if dry_run or not to_clean:
        return results, True
    work = Path(tempfile.mkdtemp(prefix="relevance-erasure-wh-", dir=path.parent))
    try:
        edited = work / "edited.duckdb"
        fresh = work / "fresh.duckdb"
        shutil.copy2(path, edited)
        con = duckdb.connect(str(edited))
        try:
            for r in to_clean:
                t = r.key.split("#", 1)[1]
                con.execute(
                    f'delete from "{t}" where trim(cast(user_id as varchar)) in (select unnest(?))', [id_list]
                )
            con.execute("checkpoint")
        finally:
            con.close()
        # DELETE only marks rows; copying into a fresh file leaves the erased bytes behind.
        con = duckdb.connect()
        try:
            con.execute(f"attach '{edited}' as src (read_only)")
            con.execute(f"attach '{fresh}' as dst")
            con.execute("copy from database src to dst")
            con.execute("detach dst")
        except duckdb.Error:
            fresh = edited  # an object the copy cannot reproduce: publish the edited file
        finally:
            con.close()
        if isinstance(store, LocalStore):
            os.replace(fresh, path)
        else:
            store.write_bytes(WAREHOUSE_KEY, fresh.read_bytes())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results, True


# -- the receipt -------------------------------------------------------------------------------------------


def _salt(store: ArtifactStore) -> bytes:
    """The HMAC key of the receipts' subject hashes: ``RELEVANCE_ERASURE_SALT`` (keep it in a secret
    manager), else a random one generated once per store. Keyed, so a receipt cannot be reversed by
    hashing every plausible id (``user_00001`` ...) without the salt."""
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode()
    try:
        return store.read_text(SALT_KEY).strip().encode()
    except StoreError:
        salt = secrets.token_hex(32)
        store.write_text(SALT_KEY, salt)
        return salt.encode()


def subject_hash(user_id: str, salt: bytes) -> str:
    """How a receipt names a subject: HMAC-SHA256(salt, user_id), hex. Given the salt and a user id, an
    auditor can find the user's receipt; given a receipt alone, nobody can recover the id."""
    return hmac.new(salt, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def _scrub_key(key: str, ids: frozenset[str], salt: bytes) -> str:
    """A store key is not personal data unless a file was named after a user: then hash that part."""
    for i in sorted(ids, key=len, reverse=True):
        if i and i in key:
            key = key.replace(i, "<id:" + subject_hash(i, salt)[:12] + ">")
    return key


# -- the whole erasure -------------------------------------------------------------------------------------


def _one_pass(
    store: ArtifactStore,
    ids: frozenset[str],
    layout: LakeLayout,
    dry_run: bool,
    checked: dict[str, int],
) -> tuple[list[Removal], bool]:
    removals: list[Removal] = []
    for key in _landing_keys(store, layout):
        r = _erase_landing_file(store, key, ids, dry_run)
        if r is not None:
            checked["landing"] = checked.get("landing", 0) + 1
            removals.append(r)
    for name, prefix in lake_units(store, layout):
        r = _erase_unit(store, name, prefix, ids, dry_run)
        if r is not None:
            checked[name] = checked.get(name, 0) + 1
            removals.append(r)
    truth = _erase_truth(store, ids, dry_run)
    if truth:
        checked["generator_truth"] = len(truth)
    removals += truth
    wh, has_wh = _erase_warehouse(store, ids, dry_run)
    if has_wh:
        checked["warehouse"] = len(wh)
    removals += wh
    return removals, has_wh


def scan(store: ArtifactStore, user_ids: Iterable[str], layout: LakeLayout = LAYOUT) -> list[Removal]:
    """Count (without changing anything) the rows of these users in every store; empty list of hits after
    a successful erasure. ``rows_removed`` here means "rows found"."""
    ids = frozenset(u.strip() for u in user_ids if u and u.strip())
    removals, _ = _one_pass(store, ids, layout, True, {})
    return [r for r in removals if r.rows_removed]


def erase_users(
    store: ArtifactStore,
    user_ids: Iterable[str],
    *,
    aliases: Iterable[str] = (),
    run_id: str | None = None,
    layout: LakeLayout = LAYOUT,
    extra: dict | None = None,
    write_receipt: bool = True,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ErasureResult:
    """Erase ``user_ids`` (and ``aliases``: other ids of the same people, e.g. the service's pseudonyms)
    from every store, verify, and write the receipt. Raises ``ErasureIncompleteError`` (after writing a
    receipt that says so) when rows remain after ``MAX_PASSES`` passes."""
    t0 = time.perf_counter()
    subjects = sorted({u.strip() for u in user_ids if u and u.strip()})
    if not subjects:
        raise ErasureError("no user id given")
    ids = frozenset(subjects) | frozenset(a.strip() for a in aliases if a and a.strip())
    salt = _salt(store)
    result = ErasureResult(
        run_id=run_id or uuid.uuid4().hex,
        subjects=sorted(subject_hash(u, salt) for u in subjects),
        ids_matched=len(ids),
        extra=dict(extra or {}),
    )
    checked: dict[str, int] = {}
    all_removals: list[Removal] = []
    has_wh = False
    remaining: list[Removal] = []
    for _ in range(MAX_PASSES):
        result.passes += 1
        removals, has_wh = _one_pass(store, ids, layout, False, checked if result.passes == 1 else {})
        all_removals += [r for r in removals if r.rows_removed]
        remaining = scan(store, ids, layout)
        if not remaining:
            break
    result.stores_checked = checked
    result.removals = [
        Removal(r.store, _scrub_key(r.key, ids, salt), r.rows_removed, r.rows_before) for r in all_removals
    ]
    for r in all_removals:
        result.rows_removed[r.store] = result.rows_removed.get(r.store, 0) + r.rows_removed
    for name in checked:
        result.rows_removed.setdefault(name, 0)
    result.remaining_after = sum(r.rows_removed for r in remaining)
    if has_wh and result.total_removed:
        result.pending_recompute = list(AGGREGATE_TABLES)
    result.seconds = round(time.perf_counter() - t0, 3)
    if write_receipt:
        result.receipt_key = write_receipt_for(store, result, now())
    if remaining:
        raise ErasureIncompleteError(
            f"{result.remaining_after} rows of the subjects remain after {result.passes} passes "
            f"(receipt {result.receipt_key})"
        )
    return result


def write_receipt_for(store: ArtifactStore, result: ErasureResult, when: datetime) -> str:
    """``erasure/receipts/<UTC timestamp>-<hash>.json``; the hash covers the subjects and the run id, so
    two erasures in the same second get two receipts."""
    digest = hashlib.sha256((",".join(result.subjects) + "|" + result.run_id).encode()).hexdigest()[:16]
    key = f"{RECEIPTS_PREFIX}/{when.strftime('%Y%m%dT%H%M%S%fZ')}-{digest}.json"
    body = {
        "receipt": key,
        "kind": "erasure",
        "created_at": when.isoformat(),
        "run_id": result.run_id,
        "subject_hash": "hmac-sha256",
        "salt_id": hashlib.sha256(_salt(store)).hexdigest()[:8],
        "status": "complete" if result.remaining_after == 0 else "incomplete",
        **{k: v for k, v in result.as_dict().items() if k not in ("receipt_key", "run_id")},
    }
    result.receipt_key = key
    store.write_text(key, json.dumps(body, indent=2, sort_keys=True, default=str))
    return key


def read_receipt(store: ArtifactStore, key: str) -> dict:
    return json.loads(store.read_text(key))
