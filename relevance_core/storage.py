"""One artifact store for the lake and the bundles, local directory or S3.

Writers never expose half-written data:
- ``write_bytes`` on a local disk writes a temporary file and renames it; on S3 a PUT is atomic per object.
- ``replace_dir`` publishes a whole directory (a partition, a bundle). Locally the new directory is
  swapped with the old one in one ``renameat2(RENAME_EXCHANGE)`` (two renames where that is
  unavailable), so the path never goes missing. On S3, which has no rename, files go under a fresh
  versioned sub-prefix and a small ``_CURRENT`` pointer object is written last; ``resolve_dir`` follows it.
  Both keep the version just superseded (hidden) until the next replace, so a reader that opened/resolved
  it a moment ago can finish. Readers therefore always see either the old directory or the new one.

Engines that need files on disk (Spark without s3a jars, DuckDB, FAISS) call ``local_dir``, which is the
directory itself for a local store and a downloaded copy for S3.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

CURRENT_POINTER = "_CURRENT"


class StoreEntry(NamedTuple):
    """A listed key with what changes whenever its object is rewritten, so a caller can tell changed
    files from a listing alone (the landing sensor's fingerprint)."""

    key: str
    size: int
    #: ``mtime_ns`` on a local disk, the ETag on S3, a content hash where the store gives neither
    version: str


class StoreError(RuntimeError):
    """The artifact store could not be read or written (unreachable, missing key, bad key)."""


def _clean_key(key: str) -> str:
    """Keys are relative, '/'-separated and may not climb out of the store."""
    key = key.strip("/")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or any("\x00" in p for p in parts):
        raise StoreError(f"invalid store key {key!r}")
    return "/".join(parts)


class ArtifactStore(ABC):
    """The store's contract; both implementations pass the same test-suite."""

    base_uri: str

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (files only, sorted)."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int: ...

    @abstractmethod
    def replace_dir(self, local_dir: str | Path, prefix: str) -> None:
        """Publish the files of ``local_dir`` as ``prefix``, replacing what was there, all at once."""

    @abstractmethod
    def resolve_dir(self, prefix: str) -> str:
        """The key prefix that holds the current files of a directory published with ``replace_dir``."""

    @abstractmethod
    def local_dir(self, prefix: str) -> Path:
        """A local directory with the current files of ``prefix`` (the real one, or a downloaded copy)."""

    # -- conveniences shared by both ------------------------------------------------------------------
    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def list_entries(self, prefix: str = "") -> list[StoreEntry]:
        """``list`` with each key's size and version (sorted). This fallback reads every object; both
        stores take them from their listing instead."""
        import hashlib

        out = []
        for key in self.list(prefix):
            data = self.read_bytes(key)
            out.append(StoreEntry(key, len(data), hashlib.sha256(data).hexdigest()[:16]))
        return out

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def list_dirs(self, prefix: str) -> list[str]:
        """Immediate sub-directory names under ``prefix`` (e.g. the partitions of a table)."""
        prefix = _clean_key(prefix)
        names = set()
        for key in self.list(prefix):
            rest = key[len(prefix) + 1 :] if prefix else key
            if "/" in rest:
                names.add(rest.split("/", 1)[0])
        return sorted(names)

    def dir_exists(self, prefix: str) -> bool:
        return bool(self.list(prefix))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``), so a reader of ``b`` never
    finds it missing between "move the old one away" and "move the new one in". False where the call is
    unavailable (other OS, old glibc, a filesystem without support): the caller falls back to two renames.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


class LocalStore(ArtifactStore):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_uri = str(self.root)

    def path(self, key: str) -> Path:
        key = _clean_key(key)
        p = (self.root / key).resolve() if key else self.root
        if p != self.root and self.root not in p.parents:
            raise StoreError(f"key {key!r} resolves outside the store")
        return p

    def read_bytes(self, key: str) -> bytes:
        p = self.path(key)
        try:
            return p.read_bytes()
        except FileNotFoundError as e:
            raise StoreError(f"no such key {key!r} in {self.root}") from e

    def write_bytes(self, key: str, data: bytes) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        base = self.path(prefix)
        if not base.exists():
            return []
        if base.is_file():
            return [_clean_key(prefix)]
        out = []
        for p in base.rglob("*"):
            rel = p.relative_to(self.root)
            # Hidden components are temporaries: a write's temp file, or a directory being published or
            # retired by replace_dir; listing them would show a half-written partition as data.
            if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                out.append(rel.as_posix())
        return sorted(out)

    def list_entries(self, prefix: str = "") -> list[StoreEntry]:
        out = []
        for key in self.list(prefix):
            try:
                st = self.path(key).stat()
            except FileNotFoundError:  # renamed away between the listing and the stat: not there any more
                continue
            out.append(StoreEntry(key, st.st_size, str(st.st_mtime_ns)))
        return out

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        base = self.path(prefix)
        if not base.exists():
            return 0
        if base.is_file():
            base.unlink()
            return 1
        n = sum(1 for p in base.rglob("*") if p.is_file())
        shutil.rmtree(base)
        return n

    def replace_dir(self, local_dir: str | Path, prefix: str) -> None:
        target = self.path(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        staging = target.parent / f".{target.name}.new-{token}"
        shutil.copytree(local_dir, staging)
        if target.exists() and _exchange(staging, target):
            # staging now holds the previous version. Like S3, keep it (hidden) until the next replace: a
            # reader that opened the old directory a moment ago can finish listing and reading it.
            previous = target.parent / f".{target.name}.previous"
            if previous.exists():
                shutil.rmtree(previous, ignore_errors=True)
            os.rename(staging, previous)
            return
        old = target.parent / f".{target.name}.old-{token}"
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)

    def resolve_dir(self, prefix: str) -> str:
        return _clean_key(prefix)

    def local_dir(self, prefix: str) -> Path:
        return self.path(prefix)


class S3Store(ArtifactStore):
    """S3 (or any S3-compatible server). ``client`` is a boto3 S3 client, e.g. from dagster-aws
    ``S3Resource.get_client()``."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", cache_dir: str | Path | None = None):
        self.client = client
        self.bucket = bucket
        self.prefix = _clean_key(prefix)
        self.base_uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="relevance-s3-cache-"))
        if cache_dir is None:
            # a cache this store made is its own to remove, when the store is collected or the process
            # exits (each store used to leave one behind in the temp dir: hundreds over a test run)
            weakref.finalize(self, shutil.rmtree, str(self.cache_dir), True)

    def _k(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise StoreError(f"no such key in {self.base_uri}: {kwargs.get('Key')}") from e
            raise StoreError(f"S3 error on {self.base_uri}: {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"S3 unreachable at {self.base_uri}: {e}") from e

    def read_bytes(self, key: str) -> bytes:
        obj = self._call(self.client.get_object, Bucket=self.bucket, Key=self._k(key))
        return obj["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call(self.client.put_object, Bucket=self.bucket, Key=self._k(key), Body=data)

    def exists(self, key: str) -> bool:
        try:
            self._call(self.client.head_object, Bucket=self.bucket, Key=self._k(key))
            return True
        except StoreError as e:
            if "no such key" in str(e) or "Not Found" in str(e) or "404" in str(e):
                return False
            raise

    def list(self, prefix: str = "") -> list[str]:
        return [e.key for e in self.list_entries(prefix)]

    def list_entries(self, prefix: str = "") -> list[StoreEntry]:
        full = self._k(prefix) if prefix else self.prefix
        if full:
            full += "/"
        out = []
        token = None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": full}
            if token:
                kwargs["ContinuationToken"] = token
            resp = self._call(self.client.list_objects_v2, **kwargs)
            for obj in resp.get("Contents", []):
                key = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                out.append(StoreEntry(key, int(obj["Size"]), str(obj["ETag"]).strip('"')))
            if not resp.get("IsTruncated"):
                break
            token = resp["NextContinuationToken"]
        return sorted(out)

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=self._k(key))

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for i in range(0, len(keys), 1000):
            chunk = [{"Key": self._k(k)} for k in keys[i : i + 1000]]
            self._call(self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": chunk})
        return len(keys)

    def replace_dir(self, local_dir: str | Path, prefix: str) -> None:
        prefix = _clean_key(prefix)
        old = self._current_version(prefix)
        version = f"_v={uuid.uuid4().hex[:12]}"
        local_dir = Path(local_dir)
        for p in sorted(local_dir.rglob("*")):
            if p.is_file():
                rel = p.relative_to(local_dir).as_posix()
                self._call(self.client.upload_file, str(p), self.bucket, self._k(f"{prefix}/{version}/{rel}"))
        self.write_text(f"{prefix}/{CURRENT_POINTER}", version)
        # Keep the version just superseded: a reader that resolved the pointer a moment ago is still reading
        # it. Anything older has had a whole replace cycle to finish and goes.
        for name in self.list_dirs(prefix):
            if name.startswith("_v=") and name not in (version, old):
                self.delete_prefix(f"{prefix}/{name}")

    def _current_version(self, prefix: str) -> str | None:
        try:
            return self.read_text(f"{_clean_key(prefix)}/{CURRENT_POINTER}").strip()
        except StoreError:
            return None

    def resolve_dir(self, prefix: str) -> str:
        prefix = _clean_key(prefix)
        version = self._current_version(prefix)
        return f"{prefix}/{version}" if version else prefix

    def local_dir(self, prefix: str) -> Path:
        real = self.resolve_dir(prefix)
        dest = self.cache_dir / _clean_key(prefix)
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for key in self.list(real):
            rel = key[len(real) + 1 :]
            if rel.startswith("_v=") or rel == CURRENT_POINTER:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self._call(self.client.download_file, self.bucket, self._k(key), str(target))
        return dest


def store_from_uri(uri: str, *, s3_client: Any = None, endpoint_url: str | None = None) -> ArtifactStore:
    """``/path`` or ``file:///path`` → LocalStore; ``s3://bucket/prefix`` → S3Store."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
        if s3_client is None:
            import boto3

            from relevance_core.settings import s3_endpoint

            s3_client = boto3.client("s3", endpoint_url=endpoint_url or s3_endpoint())
        return S3Store(s3_client, bucket, prefix)
    if uri.startswith("file://"):
        uri = uri[7:]
    return LocalStore(uri)
