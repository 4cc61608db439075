"""Access on a real ``relevance serve`` process: the per-client rate limit (clients told apart by
their real source address on loopback: 127.0.0.1, 127.0.0.2, ...), and no token or raw user id in any line
the process logs at DEBUG, access log included."""

from __future__ import annotations

import re

import httpx
import pytest
from support.bundles import publish_bundle
from support.service_process import AUTH, TOKEN, Server

from relevance_core.storage import LocalStore

pytestmark = pytest.mark.e2e

LIMIT = 20  # per minute: a window no slow machine can straddle more than once in this test


@pytest.fixture(scope="module")
def home(tmp_path_factory, model) -> LocalStore:
    s = LocalStore(tmp_path_factory.mktemp("access") / "home")
    publish_bundle(s, 0)
    return s


def client_at(server: Server, address: str) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (any 127.x.y.z reaches loopback)."""
    return httpx.Client(base_url=server.url, timeout=30, transport=httpx.HTTPTransport(local_address=address))


def test_rate_limit_per_client(home, tmp_path):
    srv = Server(home.root, tmp_path / "server.log", env={"RELEVANCE_RATE_LIMIT": f"{LIMIT}/minute"})
    try:
        srv.wait_ready()
        with client_at(srv, "127.0.0.4") as greedy, client_at(srv, "127.0.0.2") as other:
            codes = [greedy.get("/v1/users/u1/recommendations?k=3").status_code for _ in range(LIMIT * 2 + 5)]
            # a fixed window: even if the minute turned during the burst, at most 2 * LIMIT got through
            assert codes.count(429) >= 5 and set(codes) == {200, 429}, codes
            print(
                f"\nrate limit {LIMIT}/minute: {len(codes)} requests from one client, {codes.count(429)} got 429"
            )
            assert codes[:LIMIT].count(200) >= 1
            r = greedy.post("/v1/recommendations", json={"history": []})
            assert r.status_code == 429
            assert re.fullmatch(r"\d+", r.headers["retry-after"]) and 1 <= int(r.headers["retry-after"]) <= 60
            assert r.headers["ratelimit-limit"] == str(LIMIT) and r.headers["ratelimit-remaining"] == "0"
            detail = r.json()["detail"]
            assert f"at most {LIMIT} requests per minute per client" in detail and "retry after" in detail
            # a forged X-Forwarded-For from an untrusted address does not buy a new budget
            assert greedy.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200
            forged = greedy.get("/v1/users/u1/recommendations", headers={"X-Forwarded-For": "203.0.113.9"})
            assert forged.status_code == 429
            # probes and the scraper are never limited
            for path in ("/healthz", "/readyz", "/metrics"):
                assert greedy.get(path).status_code == 200, path
            # another client is not affected
            for _ in range(5):
                r = other.get("/v1/users/u2/recommendations?k=3")
                assert r.status_code == 200 and int(r.headers["ratelimit-remaining"]) >= LIMIT - 5 - 1
            # and the 429s are visible to operators
            metrics = other.get("/metrics").text
            assert re.search(r'relevance_requests_total\{[^}]*status="429"[^}]*\} [1-9]', metrics)
    finally:
        srv.stop()


def test_no_token_or_raw_user_id_in_any_log_line(home, model, tmp_path):
    """Everything the process prints at DEBUG (service loggers, the access log, uvicorn) while it serves
    requests that carry the token and user ids in headers, paths, query strings and bodies."""
    log_path = tmp_path / "server.log"
    srv = Server(
        home.root,
        log_path,
        env={"RELEVANCE_LOG_LEVEL": "debug", "RELEVANCE_ACCESS_LOG": "1"},
        log_level="debug",
    )
    users = ["alice-7f3a9c2e", "bob.4d1e8b6a@example.com", "carol 5e0b"]
    wrong_token = "not-the-token-91c4d7"
    items = model.items["item_id"].tolist()[:8]
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for u in users:
                events = {"events": [{"user_id": u, "item_id": i, "event_type": "view"} for i in items[:4]]}
                assert c.post("/v1/events", json=events, headers=AUTH).status_code == 202
                assert c.get(f"/v1/users/{u}/recommendations", params={"k": 5}).status_code == 200
                assert c.get(f"/v1/users/{u}/recommendations", params={"k": 0}).status_code == 400
                assert c.get(f"/v1/users/{u}/nothing-here").status_code == 404
                body = {"user_id": u, "history": [{"item_id": items[5], "event_type": "view"}]}
                assert c.post("/v1/recommendations", json=body).status_code == 200
            assert (
                c.post("/v1/events", json={"events": []}, headers={"X-API-Token": wrong_token}).status_code
                == 401
            )
            r = c.post("/v1/admin/erase-users", json={"user_ids": users}, headers=AUTH)
            assert r.status_code == 200 and r.json()["forgotten"] == len(users)
            assert c.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        srv.stop()  # SIGTERM: shutdown and the last landing flush log too
    text = log_path.read_text()
    print(
        f"\nlogs: {len(text.splitlines())} lines at DEBUG after {len(users) * 5 + 3} requests with the token and 3 ids"
    )
    # the logging under test was on: DEBUG lines of the service, access lines, uvicorn's own
    assert re.search(r"DEBUG relevance_service\.controllers\.recommendations: recs user=u_[0-9a-f]{20}", text)
    assert "GET /v1/users/{user_id}/recommendations 200" in text and " user=u_" in text
    assert "POST /v1/admin/erase-users 200" in text and "erasure: 3 user(s) requested" in text
    assert "Application startup complete" in text
    for secret in (TOKEN, wrong_token, *users):
        for form in {secret, secret.replace(" ", "%20"), secret.replace("@", "%40")}:
            assert form not in text, f"{form!r} appears in the server log"
