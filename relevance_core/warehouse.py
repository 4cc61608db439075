"""The DuckDB warehouse that dbt builds (``<RELEVANCE_HOME>/warehouse.duckdb``, docs/contracts.md).

Why this module exists:

* Readers (the model's feature encoder, the service, the CLI) only ever open the warehouse read-only, through
  ``read_table``: DuckDB allows one writer per file, and a reader must never take the writer's place.
* The writer (the dbt assets) never writes the published file in place. It builds into a private copy and
  renames it over the published one when dbt is done (``staged_warehouse``). Readers that already hold the old
  file keep reading a consistent snapshot, new readers see the new one, and nobody meets a lock held by dbt.
  Starting from a copy of the published file keeps the last good version of any model dbt skips
  (e.g. after a failed test), exactly as an in-place ``dbt build`` would.
* DuckDB and dbt need files on a local disk. For a local store the lake and the warehouse are used where they
  lie; for S3 the lake is staged into a temporary directory (``local_lake``) and the built warehouse is
  uploaded as the ``warehouse.duckdb`` object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from relevance_core.settings import LAYOUT
from relevance_core.storage import ArtifactStore, LocalStore

#: Store key of the warehouse file.
WAREHOUSE_KEY = "warehouse.duckdb"
#: Tables dbt publishes for other parts to read (docs/contracts.md).
CATALOG_TABLES: tuple[str, ...] = ("stg_items", "dim_items", "item_popularity", "daily_event_stats")
#: Lake tables the dbt sources read.
LAKE_ITEMS = "items"
LAKE_EVENTS = "raw_events"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WarehouseError(RuntimeError):
    """The warehouse or the lake it is built from is missing or unreadable."""


def warehouse_path(store: ArtifactStore) -> Path:
    """Where the published warehouse file lies on this machine.

    Local store: ``<root>/warehouse.duckdb`` (it may not exist yet). S3 store: a fresh local download of the
    ``warehouse.duckdb`` object (raises ``WarehouseError`` when there is none), so read-only readers work the
    same against both.
    """
    if isinstance(store, LocalStore):
        return store.path(WAREHOUSE_KEY)
    if not store.exists(WAREHOUSE_KEY):
        raise WarehouseError(f"no {WAREHOUSE_KEY} in {store.base_uri}: materialize the catalog assets first")
    dest = Path(tempfile.mkdtemp(prefix="relevance-warehouse-")) / WAREHOUSE_KEY
    dest.write_bytes(store.read_bytes(WAREHOUSE_KEY))
    return dest


def connect_read_only(db_path: str | Path):
    """A read-only DuckDB connection in UTC (so TIMESTAMPTZ columns come back as ``timestamp[us, tz=UTC]``,
    like the lake's Arrow schemas). Read-only is what lets several readers share the file."""
    import duckdb

    path = Path(db_path)
    if not path.exists():
        raise WarehouseError(f"warehouse not found at {path}: materialize the catalog assets first")
    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    return con


def read_table(db_path: str | Path, name: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole table ``name`` (e.g. ``"dim_items"``) of the warehouse at ``db_path`` as an Arrow table.

    Opens the file read-only and closes it before returning, so a long-lived reader never pins the file.
    ``columns`` selects and orders columns. Names are checked as plain identifiers (no SQL is accepted).
    """
    for ident in (name, *(columns or ())):
        if not _IDENT.match(ident):
            raise ValueError(f"not a plain identifier: {ident!r}")
    cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    con = connect_read_only(db_path)
    try:
        exists = con.execute(
            "select count(*) from information_schema.tables where table_name = ?", [name]
        ).fetchall()[0][0]
        if not exists:
            raise WarehouseError(f"no table {name!r} in {db_path}")
        rel = con.sql(f'select {cols} from "{name}"')
        # duckdb >= 1.4 names it to_arrow_table; older releases (pyproject admits 1.3) call it arrow.
        fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
        return fetch()
    finally:
        con.close()


def event_partitions(store: ArtifactStore) -> list[str]:
    """The ``date=YYYY-MM-DD`` directory names of the lake's raw_events table."""
    return [d for d in store.list_dirs(LAYOUT.table(LAKE_EVENTS)) if d.startswith("date=")]


def check_lake(store: ArtifactStore) -> list[str]:
    """Fail early, with a message a person can act on, when the lake lacks what the dbt sources read
    (DuckDB's own error for an empty glob names no asset). Returns the event partitions."""
    if not store.list(LAYOUT.table(LAKE_ITEMS)):
        raise WarehouseError(
            f"the lake in {store.base_uri} has no items: materialize the `items` asset first"
        )
    partitions = event_partitions(store)
    if not partitions:
        raise WarehouseError(
            f"the lake in {store.base_uri} has no raw_events partitions: materialize `raw_events` first"
        )
    return partitions


@contextlib.contextmanager
def local_lake(store: ArtifactStore) -> Iterator[Path]:
    """A local directory laid out like the lake's ``items`` and ``raw_events`` tables, for DuckDB.

    Local store: the lake itself. S3 store: a temporary copy of the current version of each table / partition
    (via ``store.local_dir``, which follows the ``_CURRENT`` pointers), removed on exit.
    """
    partitions = check_lake(store)
    if isinstance(store, LocalStore):
        yield store.path(LAYOUT.lake)
        return
    root = _scratch_dir(store, "lake")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        lake = root / LAYOUT.lake
        units = [LAYOUT.table(LAKE_ITEMS)] + [f"{LAYOUT.table(LAKE_EVENTS)}/{p}" for p in partitions]
        for prefix in units:
            dest = root / prefix
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(store.local_dir(prefix)), dest)
        yield lake
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def staged_warehouse(store: ArtifactStore) -> Iterator[Path]:
    """A private copy of the published warehouse to build into; published atomically on exit.

    The copy is published even when the body raises (a dbt build whose tests fail still materialized the
    models before them, and Dagster has recorded those materializations), unless the staged file was never
    created. Local store: renamed over ``warehouse.duckdb``. S3 store: uploaded as the ``warehouse.duckdb``
    object (one PUT, atomic per object).
    """
    if isinstance(store, LocalStore):
        published = store.path(WAREHOUSE_KEY)
        published.parent.mkdir(parents=True, exist_ok=True)
        staged = published.parent / f".{WAREHOUSE_KEY}.building"
    else:
        workdir = _scratch_dir(store, "warehouse")
        workdir.mkdir(parents=True, exist_ok=True)
        staged = workdir / WAREHOUSE_KEY
    wal = staged.with_name(staged.name + ".wal")
    # leftovers of a crashed build are discarded; the build starts from the published file
    staged.unlink(missing_ok=True)
    wal.unlink(missing_ok=True)
    if isinstance(store, LocalStore):
        if published.exists():
            shutil.copy2(published, staged)
    elif store.exists(WAREHOUSE_KEY):
        staged.write_bytes(store.read_bytes(WAREHOUSE_KEY))
    try:
        yield staged
    finally:
        try:
            if staged.exists():
                _checkpoint(staged)
                if isinstance(store, LocalStore):
                    os.replace(staged, published)
                else:
                    store.write_bytes(WAREHOUSE_KEY, staged.read_bytes())
        finally:
            staged.unlink(missing_ok=True)
            wal.unlink(missing_ok=True)


def _scratch_dir(store: ArtifactStore, what: str) -> Path:
    """A local working directory that is the same for every build of one store.

    Stable paths matter: dbt keeps its partial-parse cache only while the vars and the profile (which hold
    these paths) are unchanged, and a full parse costs seconds on every run. Two builds of one store never
    overlap (the ``duckdb_writer`` pool), so one directory per store is enough.
    """
    digest = hashlib.sha1(store.base_uri.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"relevance-{what}-{digest}"


def _checkpoint(db_path: Path) -> None:
    """Fold any write-ahead log into the file so the single file we publish is complete."""
    if not db_path.with_name(db_path.name + ".wal").exists():
        return
    import duckdb

    con = duckdb.connect(str(db_path))
    try:
        con.execute("CHECKPOINT")
    finally:
        con.close()
