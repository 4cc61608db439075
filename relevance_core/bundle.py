"""The bundle: everything the service needs, versioned together.

Layout of ``artifacts/bundles/<version>/``:

=====================  =====================================================================================
``manifest.json``      :class:`Manifest` — version, lineage, dims, metric, index factory, checksums, metrics
``user_tower.pt``      TorchScript: ``forward(hist_rows: Long[B,L], hist_events: Long[B,L], hist_age_s: Float[B,L])
                       -> Float[B,D]`` (L2-normalised). ``hist_rows`` are model vocabulary rows from
                       ``features.json`` (0 = padding/unknown), ``hist_events`` are ``EVENT_TYPE_CODES``
                       (0 = padding), ``hist_age_s`` seconds between each interaction and the request.
``item_tower.pt``      TorchScript: ``forward(**FeatureEncoder.encode_items(items)) -> Float[B,D]``: embeds a
                       new or changed listing from its content (and its id row when known).
``features.json``      the fitted feature encoder (vocabularies, buckets, hashing sizes) that turns items and
                       histories into the towers' inputs (``relevance_core.features``).
``index.faiss``        FAISS index over the item embeddings; row i is ``item_ids.parquet`` row i.
``item_ids.parquet``   one column ``item_id``: FAISS row → item id.
``embeddings.npy``     float32 [N, D] item embeddings in the same row order ("similar items", re-adds).
``items.parquet``      hydration metadata: the canonical item columns.
``popularity.parquet`` ``item_id, score, category_l1`` (cold-start fallback, popularity penalty).
``user_encoder.onnx``  optional: the user tower's sequence encoder alone, for ONNX Runtime (about half the
                       tower's time per request); it reads ``user_tower.pt``'s item table. Without it, or
                       without ``onnxruntime``, the service runs ``user_tower.pt``
                       (``relevance_core.model.onnx_encoder``).
=====================  =====================================================================================

Publishing writes the whole directory, verifies every checksum, and only then replaces ``artifacts/LATEST``
(a one-line text object holding the version). ``load``/``verify`` refuse a bundle with a missing file or a
wrong checksum, so a broken artifact never reaches the service.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from relevance_core.settings import LAYOUT
from relevance_core.storage import ArtifactStore, StoreError

MANIFEST = "manifest.json"
USER_TOWER = "user_tower.pt"
ITEM_TOWER = "item_tower.pt"
FEATURES = "features.json"
INDEX = "index.faiss"
ITEM_IDS = "item_ids.parquet"
EMBEDDINGS = "embeddings.npy"
ITEMS = "items.parquet"
POPULARITY = "popularity.parquet"

USER_ENCODER_ONNX = "user_encoder.onnx"

REQUIRED_FILES = (USER_TOWER, ITEM_TOWER, FEATURES, INDEX, ITEM_IDS, EMBEDDINGS, ITEMS, POPULARITY)

log = logging.getLogger(__name__)


class BundleError(RuntimeError):
    """A bundle is incomplete, corrupt or unreadable; it must not be served."""


class Manifest(msgspec.Struct, kw_only=True):
    version: str
    created_at: str
    dim: int
    metric: str = "inner_product"
    index_factory: str = "Flat"
    n_items: int = 0
    history_length: int = 20
    checksums: dict[str, str] = {}
    model: dict[str, object] = {}
    data: dict[str, object] = {}
    metrics: dict[str, object] = {}
    extra: dict[str, object] = {}


def new_version(now: datetime | None = None) -> str:
    """Sortable by creation time to the microsecond (rollback and prune order by it) and unique across
    processes thanks to a random suffix: ``20261127T021500123456Z-ab12cd``."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def _safe_name(name: str) -> bool:
    """Manifest entries are plain file names: a crafted ``../x`` must not make verify read outside."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def finalize_manifest(local_dir: Path, manifest: Manifest) -> Manifest:
    """Fill in checksums of every required file (and any other file present) and write manifest.json."""
    missing = [f for f in REQUIRED_FILES if not (local_dir / f).is_file()]
    if missing:
        raise BundleError(f"bundle in {local_dir} is missing {missing}")
    manifest.checksums = {
        p.name: sha256_file(p) for p in sorted(local_dir.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    (local_dir / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2))
    return manifest


def verify_dir(local_dir: Path) -> Manifest:
    """Check a bundle directory against its manifest; raise :class:`BundleError` on any mismatch."""
    try:
        manifest = msgspec.json.decode((local_dir / MANIFEST).read_bytes(), type=Manifest)
    except FileNotFoundError as e:
        raise BundleError(f"{local_dir}: no {MANIFEST}") from e
    except msgspec.DecodeError as e:
        raise BundleError(f"{local_dir}: unreadable {MANIFEST}: {e}") from e
    for name in REQUIRED_FILES:
        if name not in manifest.checksums:
            raise BundleError(f"{local_dir}: manifest has no checksum for {name}")
    for name, digest in manifest.checksums.items():
        if not _safe_name(name):
            raise BundleError(f"{local_dir}: invalid file name in manifest: {name!r}")
        path = local_dir / name
        if not path.is_file():
            raise BundleError(f"{local_dir}: missing file {name}")
        if sha256_file(path) != digest:
            raise BundleError(f"{local_dir}: checksum mismatch for {name}")
    return manifest


def bundle_key(version: str) -> str:
    return f"{LAYOUT.bundles}/{version}"


def publish(store: ArtifactStore, local_dir: Path, *, keep: int = 5) -> Manifest:
    """Upload a finished bundle, verify what landed, then atomically point LATEST at it.

    If the uploaded copy does not verify, LATEST is not touched and the partial upload is removed (unless
    it is the live bundle), so the service keeps serving the previous version.
    """
    manifest = verify_dir(local_dir)
    if manifest.version == latest_version(store):
        raise BundleError(f"bundle {manifest.version} is already live; publish a new version instead")
    key = bundle_key(manifest.version)
    store.replace_dir(local_dir, key)
    try:
        verify_dir(store.local_dir(key))
    except BundleError:
        store.delete_prefix(key)
        raise
    store.write_text(LAYOUT.latest_pointer, manifest.version + "\n")
    prune(store, keep=keep)
    return manifest


def latest_version(store: ArtifactStore) -> str | None:
    try:
        return store.read_text(LAYOUT.latest_pointer).strip() or None
    except StoreError:
        return None


def list_versions(store: ArtifactStore) -> list[str]:
    return [v for v in store.list_dirs(LAYOUT.bundles) if not v.startswith(".")]


def read_manifest(store: ArtifactStore, version: str) -> Manifest:
    """Just the manifest of bundle ``version`` (no download of the big files; not verified)."""
    key = store.resolve_dir(bundle_key(version)) + "/" + MANIFEST
    try:
        return msgspec.json.decode(store.read_bytes(key), type=Manifest)
    except StoreError as e:
        raise BundleError(f"bundle {version}: no {MANIFEST}") from e
    except msgspec.DecodeError as e:
        raise BundleError(f"bundle {version}: unreadable {MANIFEST}: {e}") from e


def current_manifest(store: ArtifactStore) -> Manifest | None:
    """The live bundle's manifest, or None when nothing is published (or LATEST names a missing bundle)."""
    version = latest_version(store)
    if version is None:
        return None
    try:
        return read_manifest(store, version)
    except BundleError:
        return None


def prune(store: ArtifactStore, *, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` bundles, never the one LATEST names."""
    keep = max(1, int(keep))
    current = latest_version(store)
    versions = list_versions(store)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for v in doomed:
        store.delete_prefix(bundle_key(v))
    return doomed


def rollback(store: ArtifactStore, version: str | None = None) -> str:
    """Make an earlier bundle current: ``version``, or the newest *intact* bundle older than the current
    one (a corrupt one is skipped, never made current). Versions sort by creation time."""
    versions = list_versions(store)
    current = latest_version(store)
    if version is not None:
        if version not in versions:
            raise BundleError(f"no bundle {version!r}; have {versions}")
        verify_dir(store.local_dir(bundle_key(version)))
    else:
        older = [v for v in versions if current is None or v < current]
        if not older:
            raise BundleError("no earlier bundle to roll back to")
        problems = []
        for cand in reversed(older):
            try:
                verify_dir(store.local_dir(bundle_key(cand)))
            except BundleError as e:
                log.warning("skipping bundle %s: %s", cand, e)
                problems.append(str(e))
                continue
            version = cand
            break
        if version is None:
            raise BundleError(f"no intact earlier bundle to roll back to: {problems}")
    store.write_text(LAYOUT.latest_pointer, version + "\n")
    return version


def fetch(store: ArtifactStore, version: str, dest: Path | None = None) -> tuple[Path, Manifest]:
    """A verified local copy of bundle ``version`` (for a local store, the directory itself)."""
    src = store.local_dir(bundle_key(version))
    if dest is not None:
        shutil.copytree(src, dest, dirs_exist_ok=True)
        src = dest
    return src, verify_dir(src)
