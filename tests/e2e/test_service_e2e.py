"""End to end: ``relevance serve`` as a real uvicorn process on 127.0.0.1, real bundles published into a real
artifact store while it runs (hot reload under load, corrupt bundles), real-time behaviour over HTTP, and a
schemathesis run against the served OpenAPI schema."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from support.bundles import publish_bundle, publish_corrupt
from support.service_process import AUTH, Server, wait_for

from relevance_core.storage import LocalStore

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def store(tmp_path_factory, model) -> LocalStore:
    s = LocalStore(tmp_path_factory.mktemp("e2e") / "home")
    publish_bundle(s, 0)
    return s


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    srv = Server(store.root, tmp_path_factory.mktemp("logs") / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def history_of(model, n: int = 6) -> tuple[str, list[str]]:
    last = model.pairs.slice(model.pairs.num_rows - 1).to_pylist()[0]
    return last["user_id"], last["hist_item_ids"][-n:]


def test_realtime_events_sold_items_and_new_listings(http, model):
    user, items = history_of(model)
    assert http.get(f"/v1/users/{user}/recommendations").json()["strategy"] == "popular"
    events = {"events": [{"user_id": user, "item_id": i, "event_type": "view"} for i in items]}
    assert http.post("/v1/events", json=events, headers=AUTH).status_code == 202
    body = http.get(f"/v1/users/{user}/recommendations?k=10").json()
    assert body["strategy"] == "personalized" and len(body["items"]) == 10
    assert not {it["item_id"] for it in body["items"]} & set(items)
    top = body["items"][0]["item_id"]

    # sold: gone from the very next answer
    assert (
        http.post(f"/v1/items/{top}/availability", json={"available": False}, headers=AUTH).status_code == 200
    )
    again = http.get(f"/v1/users/{user}/recommendations?k=10").json()
    assert top not in [it["item_id"] for it in again["items"]] and len(again["items"]) == 10

    # a new listing, copied from what the user looks at, is recommended under a narrow filter
    src = model.items.set_index("item_id").loc[items[-1]]
    listing = {
        "title": f"{src['title']} mint",
        "category_path": src["category_path"],
        "price": float(src["price"]),
        "brand": src["brand"],
        "location": src["location"],
        "condition": src["condition"],
    }
    assert http.put("/v1/items/e2e-new", json=listing, headers=AUTH).status_code == 201
    narrow = http.get(
        f"/v1/users/{user}/recommendations",
        params={"category": src["category_path"], "location": src["location"], "k": 20},
    ).json()
    assert "e2e-new" in [it["item_id"] for it in narrow["items"]]


def test_hot_reload_under_load(http, server, store, model):
    """Two bundles are published while a bounded client loop runs: no failed request, versions only move
    forward, and every response is entirely from one version (same request → same answer per version)."""
    first = http.get("/v1/bundle").json()["version"]
    user, items = history_of(model)
    body = {"history": [{"item_id": i, "event_type": "view"} for i in items], "k": 10}
    # each new bundle pins a different item to the top (promotions.json): the versions answer differently
    popular = [i for i in model.popularity.sort_values("score", ascending=False)["item_id"] if i not in items]
    results: list[tuple[float, str, tuple, int]] = []
    errors: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            n = 0
            while not stop.is_set() and n < 20_000:
                n += 1
                try:
                    r = c.post("/v1/recommendations", json=body)
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                    continue
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                j = r.json()
                answer = tuple((it["item_id"], it["score"], it["title"]) for it in j["items"])
                assert r.headers["x-bundle-version"] == j["bundle_version"]
                results.append((time.monotonic(), j["bundle_version"], answer, threading.get_ident()))

    threads = [threading.Thread(target=client_loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        published = [first]
        for i, pinned in enumerate(popular[:2]):
            m = publish_bundle(store, 0, promotions={"items": {pinned: 1.0}})
            published.append(m.version)
            wait_for(lambda v=m.version: any(r[1] == v for r in results[-50:]), timeout=60)
            time.sleep(0.5 + i)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors[:5]
    assert len(results) > 50
    order = {v: i for i, v in enumerate(published)}
    assert {r[1] for r in results} == set(published)
    for tid in {r[3] for r in results}:
        seq = [order[r[1]] for r in results if r[3] == tid]
        assert seq == sorted(seq), "a client saw an older version after a newer one"
    answers = {}
    for _, version, answer, _ in results:
        answers.setdefault(version, set()).add(answer)
    assert all(len(a) == 1 for a in answers.values()), {v: len(a) for v, a in answers.items()}
    distinct = {next(iter(a)) for a in answers.values()}
    assert len(distinct) == len(published)
    for v, pinned in zip(published[1:], popular[:2], strict=True):
        assert next(iter(answers[v]))[0][0] == pinned


@pytest.mark.parametrize("how", ["truncated_index", "bad_checksum", "truncated_index_rehashed"])
def test_corrupt_bundle_is_refused_while_serving(http, store, how):
    def failures() -> float:
        for line in http.get("/metrics").text.splitlines():
            if line.startswith("relevance_bundle_reload_failures_total "):
                return float(line.split()[1])
        return 0.0

    before_failures = failures()
    serving = http.get("/v1/bundle").json()["version"]
    bad = publish_corrupt(store, 0, how=how)
    wait_for(lambda: failures() > before_failures, timeout=30)
    assert http.get("/v1/bundle").json()["version"] == serving != bad
    r = http.get("/v1/users/someone/recommendations")
    assert r.status_code == 200 and r.json()["bundle_version"] == serving
    assert http.get("/readyz").status_code == 200
    good = publish_bundle(store, 0)
    wait_for(lambda: http.get("/v1/bundle").json()["version"] == good.version, timeout=60)


# -- schemathesis against the served OpenAPI schema --------------------------------------------------------
def test_no_server_errors_schemathesis(server):
    """Schema-valid (positive) and schema-violating (negative) inputs generated from the served OpenAPI
    schema for every operation, with the token (so write routes are exercised beyond the 401) and
    without it (every write route must refuse, never fail): never a 5xx. Bounded: ``max_examples`` per
    operation, mode and token, derandomized."""
    schema = schemathesis.openapi.from_url(f"{server.url}/docs/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 11
    exercised = 0
    calls = {"with token": 0, "without token": 0}
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for who, headers, n in (("with token", AUTH, 20), ("without token", {}, 8)):

                @given(case=op.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=n,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    derandomize=True,
                    database=None,
                )
                def check(case):
                    calls[who] += 1  # noqa: B023 - check() runs inside this iteration
                    case.call_and_validate(headers=headers, checks=[not_a_server_error])  # noqa: B023

                try:
                    check()
                    exercised += 1
                except Unsatisfiable:  # e.g. no way to violate the schema of an operation without inputs
                    assert mode == GenerationMode.NEGATIVE, op.label
    assert exercised >= 2 * len(operations)
    assert calls["without token"] > 0
    print(f"schemathesis: {len(operations)} operations, inputs tried {calls}, server errors 0")
