"""Service faults, on a real ``relevance serve`` process reading bundles from a real
S3-compatible server (moto's ``ThreadedMotoServer``) on 127.0.0.1:

* the service SIGKILLed in the middle of downloading a new bundle → restarted, it never serves the
  half-downloaded copy (nor a half-copied one planted where complete copies live): it serves the bundle
  ``LATEST`` names, downloaded again and verified;
* the artifact store stopped while the service polls it → no request fails, the outage is reported
  (``/readyz``, ``/metrics``), live events are kept and written once the store is back, polling recovers
  and picks up the next bundle; a restart while the store is still down comes back on the last good
  bundle from local disk.

The service reaches the S3 server through a small TCP relay in this process: it can slow the bytes down
(so a kill lands mid-download) and, when the S3 server is stopped, also drops the connections the
service's client keeps alive (a stopped in-process server would otherwise keep serving them).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from support.bundles import publish_bundle
from support.service_process import AUTH, Server, wait_for

from relevance_core import bundle as B
from relevance_core.storage import S3Store

pytestmark = pytest.mark.e2e

OUTAGE_S = 10.0  # the S3 server stays down at least this long

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    """moto's server, stoppable and restartable on the same port (its data lives in this process)."""

    def __init__(self) -> None:
        self.port = 0
        self._server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]

    def stop(self) -> None:
        self._server.stop()
        self._server._server.server_close()  # stop() leaves the listening socket open

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Relay:
    """A TCP relay 127.0.0.1:port → the S3 server. ``rate`` (bytes/s, None = unlimited) slows the answers;
    ``stop()`` closes the listener and every open connection (refused from then on); ``start()`` again
    listens on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = 0
        self.rate: float | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        ls.settimeout(0.1)
        self.port = ls.getsockname()[1]
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def stop(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            ls.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            _close(c)

    def _accept(self, ls: socket.socket) -> None:
        while self._listener is ls:
            try:
                client, _ = ls.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while True:
                rate = self.rate if answers else None
                data = src.recv(2048 if rate else 65536)
                if not data:
                    break
                if rate:
                    time.sleep(len(data) / rate)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


@pytest.fixture()
def s3(monkeypatch):
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    server = S3Server()
    server.start()
    relay = Relay(server.port)
    relay.start()
    yield server, relay
    relay.stop()
    try:
        server.stop()
    except Exception:
        pass


def bucket_store(s3_server: S3Server, bucket: str, cache: Path) -> S3Store:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return S3Store(client, bucket, "relevance", cache_dir=cache)


def server_env(relay: Relay, cache: Path) -> dict[str, str]:
    return {
        **AWS_ENV,
        "RELEVANCE_S3_ENDPOINT": relay.url,
        "RELEVANCE_BUNDLE_CACHE_DIR": str(cache),
        "RELEVANCE_S3_CONNECT_TIMEOUT_S": "2",
        "RELEVANCE_S3_MAX_ATTEMPTS": "2",
    }


class BucketServing(NamedTuple):
    store: S3Store
    v1: str
    home: str
    env: dict[str, str]
    cache_root: Path
    server: Server


def serve_bucket(s3, bucket: str, tmp_path: Path) -> BucketServing:
    """A new bucket with one published bundle (v1), and a server started on it that reaches the store
    through the relay (the tests cut or slow it)."""
    s3_server, relay = s3
    store = bucket_store(s3_server, bucket, tmp_path / "publisher-cache")
    v1 = publish_bundle(store, 0).version
    cache_root = tmp_path / "bundle-cache"
    env = server_env(relay, cache_root)
    home = f"s3://{bucket}/relevance"
    return BucketServing(store, v1, home, env, cache_root, Server(home, tmp_path / "server.log", env=env))


def ready(url: str) -> dict:
    return httpx.get(f"{url}/readyz", timeout=10).json()


def metric(url: str, name: str, missing: float | None = None) -> float:
    """A sample from ``/metrics``; ``missing`` for a labelled series never incremented (not exported)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    if missing is None:
        raise AssertionError(f"no metric {name}")
    return missing


def only_subdir(root: Path) -> Path:
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    assert len(subdirs) == 1, subdirs
    return subdirs[0]


def test_killed_mid_download_restarts_on_the_verified_latest_bundle(s3, model, tmp_path):
    _, relay = s3
    store, v1, home, env, cache_root, srv = serve_bucket(s3, "killed", tmp_path)
    try:
        srv.wait_ready()
        assert ready(srv.url)["bundle_version"] == v1
        cache = only_subdir(cache_root)
        assert (cache / "GOOD").read_text().strip() == v1 and (cache / v1).is_dir()

        relay.rate = 24_000  # bytes/s: the 1.5 MB bundle would take a minute to download
        v2 = publish_bundle(store, 0, promotions={"items": {}}).version
        # the poller (every 0.2 s) starts downloading v2 beside v1; kill it once bytes have landed
        wait_for(
            lambda: any(f.is_file() for p in cache.glob(".partial-*") if p.is_dir() for f in p.rglob("*")),
            timeout=60,
        )
        assert httpx.get(f"{srv.url}/v1/bundle", timeout=10).json()["version"] == v1  # still serving v1
    finally:
        srv.kill()
    relay.rate = None

    partials = [p for p in cache.glob(".partial-*") if p.is_dir()]
    assert len(partials) == 1, "the kill did not land mid-download"
    got = {f.name for f in partials[0].rglob("*") if f.is_file()}
    print(
        f"\nkilled mid-download: {sum(f.stat().st_size for f in partials[0].rglob('*') if f.is_file())} bytes in {sorted(got)}"
    )
    assert not {B.MANIFEST, *B.REQUIRED_FILES} <= got, f"download had finished: {got}"
    assert not (cache / v2).exists()
    assert (cache / "GOOD").read_text().strip() == v1
    # also plant what a non-atomic copier killed half-way would leave where complete copies live: the
    # real manifest beside the files (some cut short) that had arrived
    (cache / v2).mkdir()
    for f in partials[0].rglob("*"):
        if f.is_file():
            (cache / v2 / f.name).write_bytes(f.read_bytes())
    manifest_key = store.resolve_dir(B.bundle_key(v2)) + "/" + B.MANIFEST
    (cache / v2 / B.MANIFEST).write_bytes(store.read_bytes(manifest_key))

    srv2 = Server(home, tmp_path / "server.log", env=env, port=srv.port)
    try:
        srv2.wait_ready()
        served = httpx.get(f"{srv2.url}/v1/bundle", timeout=10).json()
        assert served["version"] == v2
        # what serves is the published bundle, byte for byte: its checksums, and a fresh copy that verifies
        assert served["manifest"]["checksums"] == B.read_manifest(store, v2).checksums
        assert B.verify_dir(cache / v2).version == v2
        assert not list(cache.glob(".partial-*")), "the interrupted download was not removed"
        assert (cache / "GOOD").read_text().strip() == v2
        assert not (cache / v1).exists()  # replaced copies are pruned
        r = httpx.get(f"{srv2.url}/v1/users/anyone/recommendations?k=5", timeout=10)
        assert r.status_code == 200 and r.headers["x-bundle-version"] == v2
    finally:
        srv2.stop()
    log = (tmp_path / "server.log").read_text()
    assert "removed 1 interrupted bundle download" in log
    assert f"cached copy of {v2} is damaged" in log


def test_store_unreachable_keeps_serving_reports_and_recovers(s3, model, tmp_path):
    s3_server, relay = s3
    store, v1, home, env, _, srv = serve_bucket(s3, "outage", tmp_path)
    srv.wait_ready()
    user, items = "outage-user", model.items["item_id"].tolist()[:50]

    sent = {"recs": 0, "events": 0}
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = c.get(f"/v1/users/{user}/recommendations?k=5")
                    sent["recs"] += 1
                    if r.status_code != 200:
                        failures.append(f"recs {r.status_code} {r.text[:200]}")
                    else:
                        versions.append(r.headers["x-bundle-version"])
                    ev = {
                        "events": [{"user_id": user, "item_id": items[i % len(items)], "event_type": "view"}]
                    }
                    r = c.post("/v1/events", json=ev, headers=AUTH)
                    sent["events"] += 1
                    if r.status_code != 202:
                        failures.append(f"events {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                time.sleep(0.01)

    loop = threading.Thread(target=client_loop)
    loop.start()
    try:
        wait_for(lambda: sent["recs"] > 20, timeout=30)
        # -- the S3 server goes away -----------------------------------------------------------------
        s3_server.stop()
        relay.stop()
        down_at, down_t = sent["recs"], time.monotonic()
        status = wait_for(
            lambda: (
                lambda r: (
                    r
                    if (r["store"]["consecutive_failures"] >= 10 and r["store"]["landing_retrying"] > 0)
                    else None
                )
            )(ready(srv.url)),
            timeout=60,
        )
        assert status["ready"] is True and status["bundle_version"] == v1
        assert status["store"]["reachable"] is False and "unreachable" in status["detail"]
        assert "LATEST" in status["store"]["last_error"]
        assert metric(srv.url, "relevance_store_poll_failures_total") >= 10
        assert metric(srv.url, "relevance_store_reachable") == 0
        wait_for(lambda: sent["recs"] > down_at + 100, timeout=60)  # served throughout the outage
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_t)))

        # -- it comes back: polling recovers, buffered events land, the next bundle is picked up -------
        s3_server.start()
        relay.start()
        outage_s, during = time.monotonic() - down_t, sent["recs"] - down_at
        wait_for(lambda: ready(srv.url)["store"]["reachable"] is True, timeout=60)
        failures_then = metric(srv.url, "relevance_store_poll_failures_total")
        v2 = publish_bundle(store, 0, promotions={"items": {}}).version
        wait_for(lambda: versions and versions[-1] == v2, timeout=60)
    finally:
        stop.set()
        loop.join(timeout=60)
    try:
        assert not failures, failures[:5]
        assert sent["recs"] > 100 and sent["events"] > 100
        assert set(versions) == {v1, v2} and versions == sorted(versions, key=[v1, v2].index)
        assert metric(srv.url, "relevance_store_poll_failures_total") == failures_then  # no new failures
        drained = wait_for(
            lambda: (lambda s: s if s["landing_pending"] == 0 and s["landing_retrying"] == 0 else None)(
                ready(srv.url)["store"]
            ),
            timeout=30,
        )
        assert drained["landing_last_error"] is None
        assert metric(srv.url, 'relevance_landing_dropped_total{kind="event"}', missing=0.0) == 0
        landed = sum(
            len(store.read_text(k).splitlines()) for k in store.list("landing/events") if "/live-events-" in k
        )
        assert landed == sent["events"], "live events lost or duplicated across the outage"
        print(
            f"\nstore outage of {outage_s:.1f}s ({during} recommendation requests during it): "
            f"{sent['recs']} recommendation + {sent['events']} event requests sent, "
            f"{len(failures)} failed; {int(failures_then)} failed polls reported; "
            f"{landed} of {sent['events']} live events landed; versions {v1} -> {v2}"
        )
    finally:
        srv.stop()

    # -- a restart while the store is down comes back on the last good bundle, from local disk ----------
    s3_server.stop()
    relay.stop()
    srv2 = Server(home, tmp_path / "server.log", env=env)
    try:
        srv2.wait_ready()
        status = ready(srv2.url)
        assert status["bundle_version"] == v2 and status["store"]["reachable"] is False
        assert "serving the last good bundle" in status["detail"] and "unreachable" in status["detail"]
        r = httpx.get(f"{srv2.url}/v1/users/{user}/recommendations?k=5", timeout=10)
        assert r.status_code == 200 and r.headers["x-bundle-version"] == v2
        s3_server.start()
        relay.start()
        status = wait_for(
            lambda: (lambda r: r if r["store"]["reachable"] else None)(ready(srv2.url)), timeout=60
        )
        assert status["bundle_version"] == v2 and status["detail"] is None
    finally:
        srv2.stop()
    assert "serving the last good bundle" in (tmp_path / "server.log").read_text()
