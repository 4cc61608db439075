"""The artifact store's contract, run unchanged against LocalStore and against S3Store on a real
S3-compatible server (moto's, on 127.0.0.1, a free port): whatever passes here holds for both backends."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest

from relevance_core.storage import LocalStore, S3Store, StoreError, store_from_uri


def _s3_store(endpoint: str, tmp_path: Path) -> S3Store:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = f"relevance-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    return S3Store(client, bucket, "home/prefix", cache_dir=tmp_path / "cache")


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "home")
    return _s3_store(request.getfixturevalue("s3_endpoint"), tmp_path)


def _dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    d = tmp_path / f"src-{uuid.uuid4().hex[:6]}"
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d


def test_bytes_and_text_round_trip(any_store):
    any_store.write_bytes("a/b/c.bin", b"\x00\xff")
    any_store.write_text("a/t.txt", "héllo")
    assert any_store.read_bytes("a/b/c.bin") == b"\x00\xff"
    assert any_store.read_text("a/t.txt") == "héllo"
    assert any_store.exists("a/t.txt") and not any_store.exists("a/missing")


def test_overwrite_replaces_content(any_store):
    any_store.write_text("k", "one")
    any_store.write_text("k", "two")
    assert any_store.read_text("k") == "two"


def test_missing_key_is_a_store_error(any_store):
    with pytest.raises(StoreError, match="no such key"):
        any_store.read_bytes("nope/none")


def test_list_and_list_dirs(any_store):
    for key in ["t/date=2026-01-02/x.parquet", "t/date=2026-01-01/y.parquet", "t/top.txt", "other/z"]:
        any_store.write_text(key, key)
    assert any_store.list("t") == ["t/date=2026-01-01/y.parquet", "t/date=2026-01-02/x.parquet", "t/top.txt"]
    assert any_store.list_dirs("t") == ["date=2026-01-01", "date=2026-01-02"]
    assert any_store.dir_exists("t") and not any_store.dir_exists("empty")
    # "t" must not match a sibling whose name merely starts with "t"
    any_store.write_text("tt/q", "q")
    assert "tt/q" not in any_store.list("t")


def test_list_entries_are_the_listing_with_sizes_and_versions_that_change_on_rewrite(any_store):
    any_store.write_bytes("d/a.txt", b"one")
    any_store.write_bytes("d/sub/b.txt", b"three")
    entries = any_store.list_entries("d")
    assert [e.key for e in entries] == any_store.list("d") == ["d/a.txt", "d/sub/b.txt"]
    assert [e.size for e in entries] == [3, 5]
    assert any_store.list_entries("nothing-here") == []
    before = entries[0].version
    any_store.write_bytes("d/a.txt", b"uno")  # same size, new content
    after = any_store.list_entries("d")[0]
    assert after.size == 3 and after.version != before


def test_delete_and_delete_prefix(any_store):
    for key in ["d/1", "d/sub/2", "keep/3"]:
        any_store.write_text(key, "x")
    any_store.delete("d/1")
    assert not any_store.exists("d/1")
    assert any_store.delete_prefix("d") == 1
    assert any_store.list("d") == [] and any_store.exists("keep/3")


@pytest.mark.parametrize("bad", ["../escape", "a/../../b", "a/../..", "x/\x00y"])
def test_keys_cannot_climb_out(any_store, bad):
    with pytest.raises(StoreError):
        any_store.write_text(bad, "x")
    with pytest.raises(StoreError):
        any_store.read_bytes(bad)


def test_key_normalisation(any_store):
    any_store.write_text("/lead/./slash//k", "v")
    assert any_store.read_text("lead/slash/k") == "v"


def test_replace_dir_publishes_and_replaces_whole_directory(any_store, tmp_path):
    any_store.replace_dir(_dir(tmp_path, {"a.txt": b"1", "sub/b.txt": b"1"}), "lake/t/date=2026-01-01")
    local = any_store.local_dir("lake/t/date=2026-01-01")
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
        "a.txt",
        "sub/b.txt",
    ]
    # the second version drops b.txt: nothing of the first may survive
    any_store.replace_dir(_dir(tmp_path, {"a.txt": b"2", "c.txt": b"2"}), "lake/t/date=2026-01-01")
    local = any_store.local_dir("lake/t/date=2026-01-01")
    files = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    assert files == {"a.txt": b"2", "c.txt": b"2"}
    resolved = any_store.resolve_dir("lake/t/date=2026-01-01")
    assert any_store.read_bytes(f"{resolved}/a.txt") == b"2"
    assert any_store.list_dirs("lake/t") == ["date=2026-01-01"]


def test_replace_dir_readers_see_old_or_new_never_a_mix(any_store, tmp_path):
    """While a writer keeps replacing a directory, a reader resolving and listing it must always find one
    complete version: all files, all of the same version, never an empty or missing directory (the old
    two-rename publish had such a window). On S3 the reader also reads every file: the version it resolved
    stays readable for a whole replace cycle."""
    prefix = "lake/atomic"
    n_files = 4
    sources = [_dir(tmp_path, {f"f{i}-v{v}.txt": str(v).encode() for i in range(n_files)}) for v in range(10)]
    any_store.replace_dir(sources[0], prefix)
    read_contents = isinstance(any_store, S3Store)
    stop = threading.Event()
    errors: list[str] = []
    reads = 0

    def reader():
        nonlocal reads
        while not stop.is_set():
            resolved = any_store.resolve_dir(prefix)
            if read_contents:
                keys = [k for k in any_store.list(resolved) if "/_v=" not in k[len(resolved) :]]
                keys = [k for k in keys if k.endswith(".txt")]
            else:
                # one directory read: what a reader holding the directory open sees
                keys = [f"{resolved}/{n}" for n in os.listdir(any_store.local_dir(prefix))]
            versions = {k.rsplit("-v", 1)[-1].removesuffix(".txt") for k in keys}
            if len(keys) != n_files or len(versions) != 1:
                errors.append(f"torn listing: {len(keys)} files, versions {sorted(versions)}")
                continue
            if read_contents:
                try:
                    contents = {any_store.read_text(k) for k in keys}
                except StoreError as e:
                    errors.append(f"resolved version vanished: {e}")
                    continue
                if contents != versions:
                    errors.append(f"contents {contents} != listed version {versions}")
            reads += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        for src in sources[1:]:
            any_store.replace_dir(src, prefix)
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert reads > 0, "the reader never completed a read"


def test_local_dir_of_plain_prefix(any_store):
    any_store.write_text("landing/events/date=2026-01-01/a.csv", "h\n1\n")
    local = any_store.local_dir("landing/events/date=2026-01-01")
    assert (local / "a.csv").read_text() == "h\n1\n"


def test_local_store_hides_temporaries(tmp_path):
    store = LocalStore(tmp_path / "home")
    store.write_text("lake/t/date=2026-01-01/a", "x")
    # what replace_dir leaves around while it publishes: must never be listed as data
    (store.root / "lake/t/.date=2026-01-02.new-abcd").mkdir(parents=True)
    (store.root / "lake/t/.date=2026-01-02.new-abcd/part.parquet").write_text("half")
    assert store.list("lake/t") == ["lake/t/date=2026-01-01/a"]
    assert store.list_dirs("lake/t") == ["date=2026-01-01"]


def test_local_store_path_refuses_symlink_escape(tmp_path):
    store = LocalStore(tmp_path / "home")
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)
    with pytest.raises(StoreError):
        store.write_text("link/x", "no")


def test_store_from_uri(tmp_path, s3_endpoint):
    assert isinstance(store_from_uri(str(tmp_path / "a")), LocalStore)
    assert isinstance(store_from_uri(f"file://{tmp_path / 'b'}"), LocalStore)
    s3 = store_from_uri("s3://bucket-x/some/prefix", endpoint_url=s3_endpoint)
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.base_uri) == ("bucket-x", "some/prefix", "s3://bucket-x/some/prefix")


def test_s3_unreachable_is_a_store_error(tmp_path):
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    with pytest.raises(StoreError, match="unreachable"):
        S3Store(client, "b").read_bytes("k")


def test_s3_store_removes_only_the_cache_it_made(s3_endpoint, tmp_path):
    import gc

    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="cache-owner")
    client.put_object(Bucket="cache-owner", Key="home/t/f.txt", Body=b"x")
    made = S3Store(client, "cache-owner", "home")
    local = made.local_dir("t")
    assert (local / "f.txt").read_bytes() == b"x"
    own_dir = made.cache_dir
    given = S3Store(client, "cache-owner", "home", cache_dir=tmp_path / "given")
    given.local_dir("t")
    del made, given
    gc.collect()
    assert not own_dir.exists()  # made in the temp dir by the store: gone with it
    assert (tmp_path / "given" / "t" / "f.txt").exists()  # the caller's directory is the caller's


def test_s3_replace_dir_keeps_one_previous_version_only(s3_endpoint, tmp_path):
    store = _s3_store(s3_endpoint, tmp_path)
    for v in range(4):
        store.replace_dir(_dir(tmp_path, {"f.txt": str(v).encode()}), "p")
    versions = [d for d in store.list_dirs("p") if d.startswith("_v=")]
    assert len(versions) == 2  # current + the one a slow reader may still be reading
    assert store.read_text(f"{store.resolve_dir('p')}/f.txt") == "3"
