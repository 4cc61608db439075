"""Finding the files of a landing prefix, the same way for the event days and the catalog.

A landing prefix that does not exist is an error (the caller named the wrong day or the shop never
delivered), while one that exists and holds no data is a valid, empty input. Object stores have no empty
directories, so on S3 "exists" means "at least one key under the prefix" (a ``.keep``/``_SUCCESS`` marker
makes an empty day).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from relevance_core.storage import ArtifactStore, LocalStore

#: suffix → format. ``.json`` is read as JSON Lines (one object per line) because that is what the landing
#: contract and the landing sensor call a JSON landing file. Gzip is decompressed transparently.
FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".ndjson.gz": "jsonl",
    ".json": "jsonl",
    ".json.gz": "jsonl",
    ".parquet": "parquet",
}


class LandingMissingError(FileNotFoundError):
    """The landing prefix does not exist in the store."""


class LandingFileError(ValueError):
    """A landing file cannot be read at all (e.g. a corrupt Parquet footer): no row of it is addressable,
    so it cannot be quarantined row by row; the run fails naming the file."""


@dataclass(frozen=True)
class LandingFile:
    key: str  # store key, e.g. landing/events/date=2026-01-01/part-0.csv (what quarantine rows name)
    path: Path  # local path of the file (the file itself, or a downloaded copy for S3)
    format: str


def file_format(name: str) -> str | None:
    lower = name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if lower.endswith(suffix):
            return FORMATS[suffix]
    return None


def _hidden(rel: str) -> bool:
    # Spark's own convention (and the landing sensor's): "_SUCCESS", ".part.tmp" are markers/temporaries.
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def landing_files(store: ArtifactStore, prefix: str) -> tuple[list[LandingFile], list[str]]:
    """The data files under ``prefix`` (sorted by key) and the keys skipped for an unknown format.

    Raises ``LandingMissingError`` naming the full location when the prefix does not exist.
    """
    keys = store.list(prefix)
    if not keys and not (isinstance(store, LocalStore) and store.path(prefix).is_dir()):
        raise LandingMissingError(
            f"landing data not found: {store.base_uri.rstrip('/')}/{prefix}/ does not exist"
        )
    local = store.local_dir(prefix)
    files: list[LandingFile] = []
    skipped: list[str] = []
    for key in keys:
        rel = key[len(prefix) + 1 :]
        if _hidden(rel):
            continue
        fmt = file_format(rel)
        if fmt is None:
            skipped.append(key)
            continue
        files.append(LandingFile(key=key, path=local / rel, format=fmt))
    return files, skipped


def read_first_line(path: Path, chunk: int = 64 * 1024) -> bytes:
    r"""The first line of a text file (decompressed), without its line break.

    A line ends at ``\r\n``, ``\n`` or a lone ``\r`` (old-Mac files), as Spark's text reader splits
    lines; reading stops at the first break, so a file without ``\n`` is not read whole.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    buf = bytearray()
    with opener(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            cut = min((i for i in (block.find(b"\n"), block.find(b"\r")) if i >= 0), default=-1)
            if cut >= 0:
                buf += block[:cut]
                break
            buf += block
    return bytes(buf)
