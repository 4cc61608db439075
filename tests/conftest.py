"""Shared fixtures: one SparkSession, one Redis server and one S3-compatible server (moto's) for the whole
test session (a JVM start costs ~30 s here), a fresh local store per test, the tiny trained model the
service tests publish bundles from, and the path to the real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RELEVANCE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def spark():
    from relevance_core.spark import get_spark

    session = get_spark({"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """The tiny trained two-tower model the service tests publish bundles from (trained once per process
    by ``support.bundles.trained_model``)."""
    from support.bundles import trained_model

    return trained_model(0, root=tmp_path_factory.mktemp("models"))


@pytest.fixture()
def store(tmp_path):
    from relevance_core.storage import LocalStore

    return LocalStore(tmp_path / "home")


@pytest.fixture(scope="session")
def diginetica_dir() -> Path:
    d = SHARED_DATA / "diginetica"
    if not d.exists():
        pytest.fail(f"shared data not found at {d}; set RELEVANCE_SHARED_DATA")
    return d


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis server on 127.0.0.1 for the session (``make test`` installs ``redis-server``)."""
    from support.service_process import start_redis

    try:
        proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    except RuntimeError as e:
        pytest.fail(str(e))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3-compatible server on 127.0.0.1 for the session; tests create their own buckets."""
    from moto.server import ThreadedMotoServer

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(k, v)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
