"""Where the service keeps the bundles it serves, and which one was last good (faults).

A local store serves the published directory itself. A remote store (S3) is downloaded into a cache
directory that outlives the process, so a restart does not depend on the store being reachable:

``<bundle_cache_dir>/<hash of the store URI>/``

==========================================  ====================================================================
``<version>/``                              a complete copy, verified against its manifest before it was
                                            renamed into place (one ``rename``: never half there)
``.partial-<version>-<token>/`` + ``.lock``  a download in progress; the downloader holds an ``flock`` on the
                                            lock file, so a copy whose lock can be taken was left by a process
                                            that died (SIGKILL during a reload) and is deleted, never read
``GOOD``                                    the version that last passed the whole load check (checksums, load,
                                            smoke query) and served
==========================================  ====================================================================

On start the service loads what ``LATEST`` names; when that fails (store unreachable, bundle refused) it
falls back to ``GOOD`` — from the cached copy for S3, from the store for a local one — after verifying it
again, so a restart during an incident comes back on the last bundle that served.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from relevance_core import bundle as bundle_format
from relevance_core.bundle import BundleError, Manifest
from relevance_core.storage import ArtifactStore, LocalStore, S3Store

log = logging.getLogger(__name__)

GOOD = "GOOD"
PARTIAL = ".partial-"


def _safe_version(v: str) -> bool:
    return bool(v) and "/" not in v and "\\" not in v and not v.startswith(".")


def default_cache_root() -> Path:
    return Path(tempfile.gettempdir()) / "relevance-bundle-cache"


class BundleCache:
    def __init__(self, root: str | Path | None, home: str):
        base = Path(root) if root else default_cache_root()
        self.dir = base / hashlib.sha256(home.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- the last good version ---------------------------------------------------------------------------
    def good_version(self) -> str | None:
        try:
            v = (self.dir / GOOD).read_text().strip()
        except OSError:
            return None
        return v if _safe_version(v) else None

    def mark_good(self, version: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".good-")
        with os.fdopen(fd, "w") as f:
            f.write(version + "\n")
        os.replace(tmp, self.dir / GOOD)

    # -- copies --------------------------------------------------------------------------------------------
    def remove_stale_partials(self) -> list[str]:
        """Delete downloads left by dead processes (their lock is free); returns their names."""
        removed = []
        for lock in self.dir.glob(f"{PARTIAL}*.lock"):
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process is downloading into it
                partial = lock.with_suffix("")
                shutil.rmtree(partial, ignore_errors=True)
                lock.unlink(missing_ok=True)
                removed.append(partial.name)
            finally:
                os.close(fd)
        if removed:
            log.warning("removed %d interrupted bundle download(s): %s", len(removed), removed)
        return removed

    def fetch(self, store: ArtifactStore, version: str) -> tuple[Path, Manifest]:
        """A verified local copy of bundle ``version`` (raises :class:`BundleError` or ``StoreError``)."""
        if isinstance(store, LocalStore) or not isinstance(store, S3Store):
            return bundle_format.fetch(store, version)
        if not _safe_version(version):
            raise BundleError(f"invalid bundle version {version!r}")
        final = self.dir / version
        if final.is_dir():
            try:
                return final, bundle_format.verify_dir(final)
            except BundleError as e:
                log.warning("cached copy of %s is damaged (%s); downloading it again", version, e)
                shutil.rmtree(final, ignore_errors=True)
        partial = self.dir / f"{PARTIAL}{version}-{secrets.token_hex(4)}"
        lock = partial.with_name(partial.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            # a store of its own whose cache is the partial directory: same download code as local_dir
            sub = S3Store(store.client, store.bucket, store.prefix, cache_dir=partial)
            path = sub.local_dir(bundle_format.bundle_key(version))
            manifest = bundle_format.verify_dir(path)
            try:
                os.rename(path, final)
            except OSError:
                if not final.is_dir():  # not "another worker got there first"
                    raise
                return final, bundle_format.verify_dir(final)
            return final, manifest
        finally:
            shutil.rmtree(partial, ignore_errors=True)
            lock.unlink(missing_ok=True)
            os.close(fd)

    def local_good(self, store: ArtifactStore) -> tuple[Path, Manifest] | None:
        """The last good bundle without touching a remote store: the cached copy (S3) or the store's
        directory (local), verified; None when there is none or it no longer verifies."""
        version = self.good_version()
        if version is None:
            return None
        path = (
            self.dir / version
            if not isinstance(store, LocalStore)
            else store.local_dir(bundle_format.bundle_key(version))
        )
        if not path.is_dir():
            return None
        try:
            return path, bundle_format.verify_dir(path)
        except BundleError as e:
            log.warning("last good bundle %s no longer verifies: %s", version, e)
            return None

    def prune(self, keep: str) -> None:
        """Remove the cached copies other than ``keep`` (open memory maps of a removed copy stay valid)."""
        for p in self.dir.iterdir():
            if p.is_dir() and not p.name.startswith(".") and p.name != keep:
                shutil.rmtree(p, ignore_errors=True)
