"""The recommendation API in-process (Litestar ``TestClient`` as a context manager runs the lifespan), with
a real bundle (tests/support/bundles.py: real training, export, FAISS, publishing)."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest
from litestar.testing import TestClient
from support.bundles import publish_bundle, publish_corrupt
from support.service_process import wait_for

from relevance_core.storage import LocalStore
from relevance_service.app import create_app
from relevance_service.settings import ServiceSettings, SettingsError

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def home(tmp_path, model) -> LocalStore:
    store = LocalStore(tmp_path / "home")
    publish_bundle(store, 0)
    return store


def settings_for(store: LocalStore, **over) -> ServiceSettings:
    base = dict(
        home=str(store.root),
        api_token=TOKEN,
        poll_interval_s=3600,  # tests reload explicitly
        landing_flush_s=0.1,
        state_ttl_s=1e10,
        seed_from_lake=False,
        pseudonym_key="test-key",
        bundle_cache_dir=str(Path(store.root).parent / "bundle-cache"),
    )
    base.update(over)
    return ServiceSettings(**base)


@pytest.fixture()
def client(home):
    with TestClient(app=create_app(settings_for(home))) as c:
        yield c


def item_row(model, item_id: str) -> dict:
    return model.items.set_index("item_id").loc[item_id].to_dict()


def a_user_history(model, n: int = 6) -> tuple[str, list[str]]:
    """A real user's last items from the training data (so the model knows them)."""
    pairs = model.pairs.to_pylist()
    last = pairs[-1]
    return last["user_id"], last["hist_item_ids"][-n:]


def post_events(client, user: str, items: list[str], ev: str = "view"):
    r = client.post(
        "/v1/events",
        json={"events": [{"user_id": user, "item_id": i, "event_type": ev} for i in items]},
        headers=AUTH,
    )
    assert r.status_code == 202, r.text
    return r.json()


# -- health, bundle, docs -------------------------------------------------------------------------------------
def test_not_ready_until_user_state_is_seeded(home, monkeypatch):
    """A replica that would answer a returning user with "popular" is not ready: /readyz waits for the
    lake seeding (held open here), then says ready; past ``seed_ready_timeout_s`` it stops waiting."""
    import threading

    import relevance_service.service as service_module

    release = threading.Event()

    def slow_seed(state, store, **kwargs):
        assert release.wait(30), "the test never released the seeding"
        return 3

    monkeypatch.setattr(service_module, "seed_from_lake", slow_seed)
    with TestClient(app=create_app(settings_for(home, seed_from_lake=True))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "seeding user state" in r.json()["detail"], r.text
        assert r.json()["bundle_version"]  # the bundle is loaded; only the state is missing
        # during a store outage seeding cannot finish: serve the bundle rather than wait for it
        health = c.app.state["service"].reloader.store_health
        health.reachable = False
        assert c.get("/readyz").status_code == 200
        health.reachable = True
        assert c.get("/readyz").status_code == 503
        release.set()
        deadline = time.monotonic() + 10
        while (r := c.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 200 and r.json()["detail"] is None, r.text
        assert c.app.state["service"].seeded_users == 3
    release.clear()
    with TestClient(app=create_app(settings_for(home, seed_from_lake=True, seed_ready_timeout_s=0))) as c:
        r = c.get("/readyz")
        assert r.status_code == 200 and "still seeding" in r.json()["detail"], r.text
        release.set()


def test_serving_bundle_is_out_of_the_cyclic_gcs_reach(home):
    # a full collection used to walk every object of the loaded bundle (~210 ms stalls at 1M items);
    # after the swap the bundle's objects are frozen, and garbage cycles from before the swap are gone
    import gc
    import weakref

    class Node:
        pass

    gc.unfreeze()
    cycle = Node()
    cycle.self = cycle
    dead = weakref.ref(cycle)
    del cycle
    gc.disable()  # only the swap may collect it
    try:
        with TestClient(app=create_app(settings_for(home))) as c:
            assert c.get("/readyz").status_code == 200
            state = c.app.state["service"].serving
            assert dead() is None
            assert gc.get_freeze_count() > 0
            # the serving state is in the permanent generation: no collection will traverse it
            assert id(state) not in {id(o) for o in gc.get_objects()}
    finally:
        gc.enable()
        gc.unfreeze()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc/self/maps")
def test_index_is_mapped_from_the_bundle_file_not_copied(home, model):
    """Workers share one page-cache copy of index.faiss; after the reload to the next bundle the old
    mapping is released (a process holding every old version's index would grow with each publish)."""

    def mapped_indexes() -> set[str]:
        return {
            line.split(maxsplit=5)[5]
            for line in Path("/proc/self/maps").read_text().splitlines()
            if line.endswith("/index.faiss")
        }

    before = mapped_indexes()
    with TestClient(app=create_app(settings_for(home))) as c:
        first = c.app.state["service"].serving.bundle
        first_file = str((first.path / "index.faiss").resolve())
        assert first_file in mapped_indexes() - before
        _, items = a_user_history(model)
        r = c.post("/v1/recommendations", json={"k": 10, "history": [{"item_id": i} for i in items]})
        assert r.status_code == 200 and r.json()["strategy"] == "personalized", r.text

        new = publish_bundle(home, 1)
        r = c.post("/v1/admin/reload", headers=AUTH)
        assert r.json()["reloaded"] is True and r.json()["version"] == new.version
        second = c.app.state["service"].serving.bundle
        del first
        import gc

        gc.collect()
        now = mapped_indexes()
        assert str((second.path / "index.faiss").resolve()) in now
        assert first_file not in now


def test_health_ready_bundle_and_openapi(client, home, model):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    latest = home.read_text("artifacts/LATEST").strip()
    assert ready.status_code == 200 and ready.json()["bundle_version"] == latest
    b = client.get("/v1/bundle").json()
    assert b["version"] == latest and b["n_items"] == len(model.items) and b["manifest"]["checksums"]
    assert b["user_tower_runtime"] == "onnxruntime" and "user_encoder.onnx" in b["manifest"]["checksums"]
    assert b["ranking"] == {"ranker": False, "in_use": False, "covisit_edges": 0, "features": []}  # no stage
    spec = client.get("/docs/openapi.json").json()
    for path in (
        "/v1/users/{user_id}/recommendations",
        "/v1/recommendations",
        "/v1/items/{item_id}/similar",
        "/v1/events",
        "/v1/items/{item_id}",
        "/v1/items/{item_id}/availability",
        "/v1/bundle",
        "/v1/admin/reload",
        "/v1/admin/erase-users",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    page = client.get("/docs")  # the docs UI page, with its Swagger files served by the service
    assert page.status_code == 200
    scripts = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
    assert len(scripts) >= 3 and all(u.startswith("/docs/assets/") for u in scripts), scripts
    for url in scripts:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 10_000, url


def test_not_ready_without_a_bundle(tmp_path):
    store = LocalStore(tmp_path / "empty")
    with TestClient(app=create_app(settings_for(store))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
        assert c.get("/v1/users/u1/recommendations").status_code == 503
        assert c.get("/healthz").status_code == 200


# -- recommendations -----------------------------------------------------------------------------------------
def test_unknown_user_gets_popular_with_metadata_and_reasons(client, home):
    r = client.get("/v1/users/nobody-knows-me/recommendations?k=10")
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "popular" and len(body["items"]) == 10
    assert body["bundle_version"] == home.read_text("artifacts/LATEST").strip()
    assert r.headers["x-bundle-version"] == body["bundle_version"]
    first = body["items"][0]
    for field in ("item_id", "score", "title", "price", "brand", "category_path", "location", "condition"):
        assert first[field] is not None, field
    assert "image_url" in first
    assert all(it["reason"].startswith("popular in ") for it in body["items"])
    assert [it["position"] for it in body["items"]] == list(range(10))


def test_events_make_recommendations_personal_and_remove_seen(client, model):
    user, items = a_user_history(model)
    assert client.get(f"/v1/users/{user}/recommendations").json()["strategy"] == "popular"
    assert post_events(client, user, items) == {"accepted": len(items), "users_updated": 1}
    body = client.get(f"/v1/users/{user}/recommendations?k=15").json()
    assert body["strategy"] == "personalized" and len(body["items"]) == 15
    got = [it["item_id"] for it in body["items"]]
    assert not set(got) & set(items)  # already seen
    titles = {item_row(model, i)["title"] for i in items}
    assert all(
        it["reason"].startswith("similar to ") and it["reason"].endswith(" you viewed")
        for it in body["items"]
    )
    assert any(t in it["reason"] for it in body["items"] for t in titles)
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_new_events_change_the_next_recommendation(client, model):
    items = model.items
    l1 = items["category_path"].str.split(" > ").str[0]
    cats = sorted(l1.unique())
    a_items = items[l1 == cats[0]]["item_id"].tolist()[:8]
    b_items = items[l1 == cats[1]]["item_id"].tolist()[:8]
    post_events(client, "switcher", a_items)
    before = client.get("/v1/users/switcher/recommendations?k=10").json()
    assert before["strategy"] == "personalized"
    post_events(client, "switcher", b_items, ev="add_to_cart")
    after = client.get("/v1/users/switcher/recommendations?k=10").json()
    # the very next request reads the new history: a different slate, explained by the new events,
    # and the items just put in the cart are not recommended back
    assert [i["item_id"] for i in before["items"]] != [i["item_id"] for i in after["items"]]
    assert not any(r["reason"].endswith("you added to your cart") for r in before["items"])
    assert any(r["reason"].endswith("you added to your cart") for r in after["items"])
    assert not {i["item_id"] for i in after["items"]} & set(a_items + b_items)


def test_onnx_and_torchscript_user_towers_serve_the_same_slate(home, model):
    """The bundle's ONNX encoder (the default runtime) and ``user_tower.pt`` rank the same items."""
    _, items = a_user_history(model)
    history = [{"item_id": i, "timestamp": f"2026-01-01T00:0{j}:00Z"} for j, i in enumerate(items)]
    slates = {}
    for runtime, expected in (("auto", "onnxruntime"), ("torchscript", "torchscript")):
        with TestClient(app=create_app(settings_for(home, user_tower_runtime=runtime))) as c:
            assert c.get("/v1/bundle").json()["user_tower_runtime"] == expected
            r = c.post("/v1/recommendations", json={"k": 20, "history": history})
            assert r.status_code == 200 and r.json()["strategy"] == "personalized", r.text
            slates[runtime] = {it["item_id"]: it["score"] for it in r.json()["items"]}
    onnx, script = slates["auto"], slates["torchscript"]
    shared = onnx.keys() & script.keys()
    assert len(shared) >= 18  # the request time moves every age a little; near-ties may trade places
    assert max(abs(onnx[i] - script[i]) for i in shared) < 1e-3


@pytest.mark.parametrize("runtime", ["auto", "torchscript"])
def test_requests_encode_histories_without_padding_and_get_the_padded_users_vector(home, model, runtime):
    """Requests feed the tower only the known part of a history (no left padding, no unknown items
    before the first known one): the vector must be the one the padded history gives."""
    import numpy as np

    _, items = a_user_history(model, n=30)
    with TestClient(app=create_app(settings_for(home, user_tower_runtime=runtime))) as c:
        b = c.app.state["service"].serving.bundle
        L = b.history_length
        histories = [
            [(items[0], "view", 60.0)],  # one item: L - 1 positions of padding
            [("never-seen", "view", 120.0), ("also-unknown", "cart", 90.0)]
            + [(i, "view", 60.0 * k) for k, i in enumerate(items[:4])],
            [(i, "purchase" if k % 5 == 0 else "view", 30.0 * k) for k, i in enumerate(items[: L + 5])],
            [(items[1], "view", 60.0), ("unknown-in-between", "view", 50.0), (items[2], "cart", 40.0)],
        ]
        for h in histories:
            rows, _, _ = b.encode_history(h, padded=False)
            padded = b.encode_history(h)
            assert rows.shape[1] < padded[0].shape[1] or len(h) >= L
            got, ref = b.user_vector(h), b._torchscript_user_vector(*padded)
            assert np.abs(got - ref).max() < 1e-5, h
        assert b.user_vector([("never-seen", "view", 1.0)]) is None


def test_guest_history_post_and_filters(client, model):
    user, items = a_user_history(model)
    row = item_row(model, items[-1])
    category = row["category_path"].split(" > ")[0]
    body = {
        "history": [{"item_id": i, "event_type": "click"} for i in items],
        "k": 8,
        "category": category,
        "max_price": float(model.items["price"].median()),
    }
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["strategy"] == "personalized" and len(out["items"]) == 8
    for it in out["items"]:
        assert it["category_path"].startswith(category)
        assert it["price"] <= body["max_price"]
        assert it["item_id"] not in items
    # a very narrow filter: the search widens instead of returning a short page
    loc = row["location"]
    narrow = client.post("/v1/recommendations", json={**body, "location": loc, "k": 5}).json()
    pool = model.items[
        model.items["category_path"].str.startswith(category)
        & (model.items["price"] <= body["max_price"])
        & (model.items["location"] == loc)
        & ~model.items["item_id"].isin(items)
    ]
    assert len(narrow["items"]) == min(5, len(pool))
    assert all(it["location"] == loc for it in narrow["items"])


def test_similar_items(client, model):
    iid = model.items["item_id"].iloc[3]
    r = client.get(f"/v1/items/{iid}/similar?k=7")
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "similar" and len(body["items"]) == 7
    assert iid not in [it["item_id"] for it in body["items"]]
    assert all(it["reason"] == f"similar to {item_row(model, iid)['title']}" for it in body["items"])
    assert client.get("/v1/items/does-not-exist/similar").status_code == 404


def test_diversity_caps_per_seller_and_category(home, model):
    with TestClient(app=create_app(settings_for(home, max_per_seller=1, max_per_category=2))) as c:
        body = c.get("/v1/users/anyone/recommendations?k=12").json()
        sellers = [it["seller_id"] for it in body["items"]]
        assert len(set(sellers)) == len(sellers)


# -- live catalog -----------------------------------------------------------------------------------------------
def test_sold_item_disappears_at_once_and_comes_back(client, model):
    user, items = a_user_history(model)
    post_events(client, user, items)
    top = client.get(f"/v1/users/{user}/recommendations?k=5").json()["items"][0]["item_id"]
    r = client.post(f"/v1/items/{top}/availability", json={"available": False}, headers=AUTH)
    assert r.status_code == 200 and r.json()["available"] is False
    after = client.get(f"/v1/users/{user}/recommendations?k=50").json()
    assert top not in [it["item_id"] for it in after["items"]]
    popular = client.get("/v1/users/stranger/recommendations?k=100").json()
    assert top not in [it["item_id"] for it in popular["items"]]
    client.post(f"/v1/items/{top}/availability", json={"available": True}, headers=AUTH)
    again = client.get(f"/v1/users/{user}/recommendations?k=5").json()
    assert again["items"][0]["item_id"] == top
    assert (
        client.post("/v1/items/nope/availability", json={"available": False}, headers=AUTH).status_code == 404
    )


def test_new_listing_is_embedded_and_can_be_recommended(client, model, home):
    user, items = a_user_history(model)
    src = item_row(model, items[-1])
    listing = {
        k: src[k] for k in ("title", "category_path", "price", "brand", "location", "condition", "seller_id")
    }
    listing["title"] = src["title"] + " (new)"
    listing["price"] = float(src["price"])
    r = client.put("/v1/items/brand-new-1", json=listing, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["created"] is True
    post_events(client, user, items)
    # the new listing competes in the live index: narrow to its category + location and it must appear
    q = {"category": src["category_path"], "location": src["location"], "k": 20}
    body = client.get(f"/v1/users/{user}/recommendations", params=q).json()
    got = {it["item_id"]: it for it in body["items"]}
    assert "brand-new-1" in got
    assert got["brand-new-1"]["title"] == listing["title"] and got["brand-new-1"]["price"] == listing["price"]
    # and as a similar item of the listing it was copied from
    sim = client.get(f"/v1/items/{items[-1]}/similar?k=10").json()
    assert "brand-new-1" in [it["item_id"] for it in sim["items"]]
    # it is persisted to the landing zone for the next pipeline run
    deadline = time.time() + 5
    while time.time() < deadline and not home.list("landing/catalog"):
        time.sleep(0.05)
    files = home.list("landing/catalog")
    assert files and b"brand-new-1" in home.read_bytes(files[0])
    # changing it updates in place (200, not created)
    r = client.put("/v1/items/brand-new-1", json={**listing, "price": 1.0}, headers=AUTH)
    assert r.status_code == 200 and r.json()["created"] is False


def test_live_listing_survives_a_reload(client, home, model):
    src = item_row(model, model.items["item_id"].iloc[0])
    listing = {"title": src["title"], "category_path": src["category_path"], "price": float(src["price"])}
    assert client.put("/v1/items/live-only", json=listing, headers=AUTH).status_code == 201
    new = publish_bundle(home, 0, promotions={"items": {}})
    r = client.post("/v1/admin/reload", headers=AUTH)
    assert r.json()["reloaded"] is True and r.json()["version"] == new.version
    sim = client.get("/v1/items/live-only/similar?k=3")
    assert sim.status_code == 200 and sim.json()["bundle_version"] == new.version


# -- reload and corrupt bundles --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "how", ["truncated_index", "truncated_index_rehashed", "bad_checksum", "foreign_user_encoder"]
)
def test_corrupt_bundle_is_refused_and_old_keeps_serving(client, home, how):
    old = client.get("/v1/bundle").json()["version"]
    bad = publish_corrupt(home, 0, how=how)
    r = client.post("/v1/admin/reload", headers=AUTH).json()
    assert r["reloaded"] is False and r["version"] == old and r["error"]
    if how == "foreign_user_encoder":
        assert "user_encoder.onnx disagrees with user_tower.pt" in r["error"]
    assert client.get("/readyz").json()["bundle_version"] == old
    rec = client.get("/v1/users/x/recommendations")
    assert rec.status_code == 200 and rec.json()["bundle_version"] == old
    metrics = client.get("/metrics").text
    assert "relevance_bundle_reload_failures_total 1.0" in metrics
    assert bad != old
    # the next good bundle is picked up
    good = publish_bundle(home, 0, promotions={"items": {}})
    assert client.post("/v1/admin/reload", headers=AUTH).json()["version"] == good.version


def test_poller_picks_up_new_bundles(home):
    with TestClient(app=create_app(settings_for(home, poll_interval_s=0.1))) as c:
        first = c.get("/v1/bundle").json()["version"]
        new = publish_bundle(home, 0, promotions={"items": {}})
        deadline = time.time() + 20
        while time.time() < deadline and c.get("/v1/bundle").json()["version"] == first:
            time.sleep(0.1)
        assert c.get("/v1/bundle").json()["version"] == new.version


# -- input validation and security -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("get", "/v1/users/u/recommendations?k=0", None, "k"),
        ("get", "/v1/users/u/recommendations?k=abc", None, "k"),
        ("get", "/v1/users/u/recommendations?k=101", None, "k"),  # over the configured max_k
        ("get", "/v1/users/u/recommendations?max_price=-1", None, "max_price"),
        ("post", "/v1/recommendations", {"history": [{"item_id": "x", "event_type": "stare"}]}, "event_type"),
        ("post", "/v1/recommendations", {"k": "many"}, "k"),
        ("post", "/v1/recommendations", {"histroy": []}, "histroy"),
        ("post", "/v1/recommendations", {"history": [{"item_id": ""}]}, "item_id"),
    ],
)
def test_invalid_input_is_a_400_naming_the_field(client, method, url, body, field):
    r = getattr(client, method)(url, json=body) if body is not None else getattr(client, method)(url)
    assert r.status_code == 400, r.text
    assert field in r.text


def test_request_size_limit(home):
    with TestClient(app=create_app(settings_for(home, max_body_bytes=2000))) as c:
        big = {"history": [{"item_id": f"item-{i}"} for i in range(200)]}
        assert c.post("/v1/recommendations", json=big).status_code == 413


def test_write_endpoints_need_the_token(client):
    ev = {"events": [{"user_id": "u", "item_id": "i00001", "event_type": "view"}]}
    assert client.post("/v1/events", json=ev).status_code == 401
    assert client.post("/v1/events", json=ev, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/v1/events", json=ev, headers={"X-API-Token": TOKEN}).status_code == 202
    assert client.put("/v1/items/x", json={"title": "t"}).status_code == 401
    assert client.post("/v1/admin/reload").status_code == 401
    assert client.post("/v1/items/i00001/availability", json={"available": False}).status_code == 401


def test_refuses_to_start_write_endpoints_without_a_token(home):
    with pytest.raises(SettingsError):
        create_app(settings_for(home, api_token=None))
    # a read-only replica needs no token and has no write routes
    with TestClient(app=create_app(settings_for(home, api_token=None, write_endpoints=False))) as c:
        assert c.get("/v1/users/u/recommendations").status_code == 200
        assert c.post("/v1/events", json={"events": []}).status_code in (404, 405)
    # dev mode: open
    with TestClient(app=create_app(settings_for(home, api_token=None, dev_mode=True))) as c:
        ev = {"events": [{"user_id": "u", "item_id": "i00001", "event_type": "view"}]}
        assert c.post("/v1/events", json=ev).status_code == 202


# -- erasure -----------------------------------------------------------------------------------------------------
@pytest.fixture()
def slow_flush_client(home):
    """Landing rows stay buffered (no flush during the test) so erasure of pending rows is observable."""
    with TestClient(app=create_app(settings_for(home, landing_flush_s=3600))) as c:
        yield c


def test_erase_users_forgets_history_and_pending_rows(slow_flush_client, model, caplog):

    from relevance_core.pseudonyms import pseudonyms

    client = slow_flush_client
    user, items = a_user_history(model)
    post_events(client, user, items)
    assert client.get(f"/v1/users/{user}/recommendations").json()["strategy"] == "personalized"
    svc = client.app.state.service
    pseudo = pseudonyms([user], "test-key")[0]  # erasure's alias == the service's pseudonym
    assert pseudo == svc.pseudonymize(user)
    svc.user_state.append(pseudo, svc.user_state.get(user))  # as if seeded from pseudonymised live events
    svc.writer.log_events([{"user_id": pseudo, "item_id": items[0], "event_type": "view", "timestamp": 1.0}])
    svc.writer.log_events(
        [{"user_id": "u_other", "item_id": items[0], "event_type": "view", "timestamp": 1.0}]
    )
    caplog.clear()  # earlier lines (the test client's GET of /v1/users/<id>/...) are not the service's
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/admin/erase-users", json={"user_ids": [user, user, "never-seen"]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"requested": 2, "forgotten": 1}
    assert "erasure:" in caplog.text  # it logged, and never an id (raw or pseudonymised)
    assert user not in caplog.text and pseudo not in caplog.text and "never-seen" not in caplog.text
    assert svc.user_state.get(user) == [] and svc.user_state.get(pseudo) == []
    # only the other user's event is left to write: the user's slates and events are gone
    assert svc.writer.buffered_users() == {"u_other"} and svc.writer.pending == 1
    # a second request finds nothing left (the next GET logs a new slate, under the pseudonym)
    again = client.post("/v1/admin/erase-users", json={"user_ids": [user]}, headers=AUTH)
    assert again.json() == {"requested": 1, "forgotten": 0}
    assert client.get(f"/v1/users/{user}/recommendations").json()["strategy"] == "popular"


def test_erase_users_needs_the_token_and_a_valid_body(client):
    body = {"user_ids": ["u"]}
    assert client.post("/v1/admin/erase-users", json=body).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert client.post("/v1/admin/erase-users", json=body, headers=wrong).status_code == 401
    for bad in (
        {},
        {"user_ids": []},
        {"user_ids": [""]},
        {"user_ids": [f"u{i}" for i in range(1001)]},
        {"user_ids": "u"},
        {"user_ids": ["u"], "extra": 1},
    ):
        r = client.post("/v1/admin/erase-users", json=bad, headers=AUTH)
        assert r.status_code == 400, (bad, r.text)
        assert ("user_ids" in r.text) or ("extra" in r.text), r.text
    ok = client.post("/v1/admin/erase-users", json={"user_ids": [f"u{i}" for i in range(1000)]}, headers=AUTH)
    assert ok.status_code == 200 and ok.json() == {"requested": 1000, "forgotten": 0}


def test_erase_in_service_client_matches_the_endpoint(client, monkeypatch):
    import httpx

    from relevance_core import erasure_requests as erase_user

    def fake_post(url, json, headers, timeout):
        assert url.endswith(erase_user.SERVICE_ERASE_PATH)
        return client.post(erase_user.SERVICE_ERASE_PATH, json=json, headers=headers)

    monkeypatch.setattr(httpx, "post", fake_post)
    out = erase_user.erase_in_service("http://svc", TOKEN, ["a", "b"])
    assert out["status"] == "ok" and out["http_status"] == 200 and out["requested"] == 2
    assert erase_user.erase_in_service("http://svc", None, ["a"])["status"] == "error"


# -- observability and impressions ------------------------------------------------------------------------------
def test_metrics(client, model):
    user, items = a_user_history(model)
    post_events(client, user, items)
    client.get(f"/v1/users/{user}/recommendations")
    text = client.get("/metrics").text
    assert (
        'relevance_request_latency_seconds_bucket{le="0.01",method="GET",route="/v1/users/{user_id}/recommendations"}'
        in text
    )
    assert user not in text  # route templates, never raw paths
    version = client.get("/v1/bundle").json()["version"]
    assert f'relevance_bundle_info{{version="{version}"}} 1.0' in text
    assert 'relevance_candidates_filtered_total{rule="seen"}' in text
    assert 'relevance_recommendations_total{strategy="personalized"} 1.0' in text


def test_impressions_are_logged_pseudonymised(client, home, model):
    user, items = a_user_history(model)
    post_events(client, user, items)
    resp = client.get(f"/v1/users/{user}/recommendations?k=4").json()
    deadline = time.time() + 5
    files: list[str] = []
    live: list[str] = []
    while time.time() < deadline:  # one flush writes both files, one after the other: wait for both
        keys = home.list("landing/events")
        files = [k for k in keys if "/impressions-" in k]
        live = [k for k in keys if "/live-events-" in k]
        if files and live:
            break
        time.sleep(0.05)
    assert files and all(Path(k).parent.name.startswith("date=") for k in files)
    rows = [json.loads(line) for k in files for line in home.read_text(k).splitlines()]
    mine = [r for r in rows if r["request_id"] == resp["request_id"]]
    assert [r["item_id"] for r in mine] == [it["item_id"] for it in resp["items"]]
    assert [r["position"] for r in mine] == [0, 1, 2, 3]
    assert all(
        r["event_type"] == "impression" and r["bundle_version"] == resp["bundle_version"] for r in mine
    )
    assert all(r["user_id"] and r["user_id"] != user and r["user_id"].startswith("u_") for r in mine)
    assert all(r["timestamp"].endswith("Z") for r in mine)
    assert live and user not in home.read_text(live[0])


# -- S3 store ----------------------------------------------------------------------------------------------------
def test_serves_and_hot_reloads_from_s3(s3_endpoint, model, tmp_path):
    """The same load → verify → swap path on an S3-compatible server: bundles are downloaded, verified,
    served, and a replaced bundle's downloaded copy is cleaned up; impressions land in the bucket."""
    import boto3

    from relevance_core.storage import S3Store

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="serving")
    store = S3Store(client, "serving", "relevance", cache_dir=tmp_path / "cache")
    first = publish_bundle(store, 0)
    settings = settings_for(
        LocalStore(tmp_path / "unused"), home="s3://serving/relevance", s3_endpoint=s3_endpoint
    )
    with TestClient(app=create_app(settings, store=store)) as c:
        assert c.get("/readyz").json()["bundle_version"] == first.version
        assert c.get("/v1/users/u/recommendations?k=5").json()["bundle_version"] == first.version
        old_copy = c.app.state.service.serving.bundle.path
        second = publish_bundle(store, 0, promotions={"items": {}})
        r = c.post("/v1/admin/reload", headers=AUTH).json()
        assert r["reloaded"] and r["version"] == second.version
        assert c.get("/v1/users/u/recommendations?k=5").json()["bundle_version"] == second.version
        assert not old_copy.exists()  # the replaced download was removed
        corrupt = publish_corrupt(store, 0, how="bad_checksum")
        r = c.post("/v1/admin/reload", headers=AUTH).json()
        assert not r["reloaded"] and r["version"] == second.version and corrupt != second.version
    assert any("/impressions-" in k for k in store.list("landing/events"))


# -- faults: last good bundle, access: CORS and token comparison ------------------------------------------------
def test_restart_with_a_refused_latest_serves_the_last_good_bundle(home):
    """A restart while ``LATEST`` names a bundle that fails its checks comes back on the bundle that last
    served (recorded in the bundle cache), verified again, instead of answering 503 until someone fixes
    the store; the next good bundle replaces it."""
    with TestClient(app=create_app(settings_for(home))) as c:
        good = c.get("/v1/bundle").json()["version"]
    bad = publish_corrupt(home, 0, how="truncated_index")
    with TestClient(app=create_app(settings_for(home))) as c:
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["bundle_version"] == good != bad
        assert "serving the last good bundle" in r.json()["detail"] and bad in r.json()["detail"]
        rec = c.get("/v1/users/u/recommendations?k=3")
        assert rec.status_code == 200 and rec.json()["bundle_version"] == good
        assert "relevance_bundle_reload_failures_total 1.0" in c.get("/metrics").text
        new = publish_bundle(home, 0, promotions={"items": {}})
        assert c.post("/v1/admin/reload", headers=AUTH).json()["version"] == new.version
        r = c.get("/readyz").json()
        assert r["bundle_version"] == new.version and r["detail"] is None
    # without a last good bundle on disk the same start is not ready (nothing verified to serve)
    publish_corrupt(home, 0, how="bad_checksum")
    with TestClient(
        app=create_app(settings_for(home, bundle_cache_dir=str(home.root.parent / "empty")))
    ) as c:
        assert c.get("/readyz").status_code == 503


def test_cors_is_off_by_default(client):
    origin = {"Origin": "https://evil.example"}
    r = client.get("/v1/users/u/recommendations", headers=origin)
    assert r.status_code == 200
    assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers
    pre = client.options(
        "/v1/events",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert not [h for h in pre.headers if h.lower().startswith("access-control-")], pre.headers


def test_cors_allow_list(home):
    allowed = "https://shop.example"
    with TestClient(app=create_app(settings_for(home, cors_allow_origins=(allowed,)))) as c:
        r = c.get("/v1/users/u/recommendations", headers={"Origin": allowed})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == allowed
        assert "x-bundle-version" in r.headers["access-control-expose-headers"].lower()
        pre = c.options(
            "/v1/events",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert pre.status_code in (200, 204) and pre.headers["access-control-allow-origin"] == allowed
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in pre.headers
        other = c.get("/v1/users/u/recommendations", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        bad_pre = c.options(
            "/v1/events", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in bad_pre.headers


def test_token_is_compared_in_constant_time(client, monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    ev = {"events": [{"user_id": "u", "item_id": "i00001", "event_type": "view"}]}
    assert client.post("/v1/events", json=ev, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/v1/events", json=ev, headers=AUTH).status_code == 202
    assert calls == [(b"wrong", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


# -- hostile input: every answer a clear 4xx or a normal answer, never a 5xx, no file outside the store
HOSTILE_IDS = [
    "../../etc/passwd",
    "..%2F..%2Fsecrets",
    "a\x00b",
    "tab\tand\nnewline",
    "\u202eevil\u202c",
    "' OR 1=1 --",
    "'; DROP TABLE items; --",
    "${jndi:ldap://x}",
    "x" * 300,
    "ユーザー🙂",
    "\r\nSet-Cookie: a=b",
    "/absolute/path",
    "C:\\windows\\system32",
]


def _files_outside(root: Path, store: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and store not in p.parents and "bundle-cache" not in p.parts
    }


def test_hostile_input_is_answered_or_refused_never_a_server_error(home, model):
    from urllib.parse import quote

    root = Path(home.root).parent
    before = _files_outside(root, Path(home.root))
    item = model.items["item_id"].iloc[0]
    tried: list[tuple[str, int]] = []

    def record(label: str, r) -> None:
        tried.append((label, r.status_code))

    with TestClient(app=create_app(settings_for(home, max_body_bytes=64_000))) as c:
        for raw in HOSTILE_IDS:
            enc = quote(raw, safe="")
            record(f"user {raw!r}", c.get(f"/v1/users/{enc}/recommendations"))
            record(f"similar {raw!r}", c.get(f"/v1/items/{enc}/similar"))
            record(f"category {raw!r}", c.get("/v1/users/u/recommendations", params={"category": raw}))
            record(f"location {raw!r}", c.get("/v1/users/u/recommendations", params={"location": raw}))
            ev = {"events": [{"user_id": raw, "item_id": raw, "event_type": "view"}]}
            record(f"events {raw!r}", c.post("/v1/events", json=ev, headers=AUTH))
            body = {"history": [{"item_id": raw}, {"item_id": item}], "category": raw}
            record(f"guest {raw!r}", c.post("/v1/recommendations", json=body))
            listing = {"title": raw, "category_path": raw, "price": 10.0}
            record(f"put item {raw!r}", c.put(f"/v1/items/{enc}", json=listing, headers=AUTH))
        for k in ("-1", "0", "1000000000000", "1e3", "NaN", "twenty"):
            record(f"k={k}", c.get("/v1/users/u/recommendations", params={"k": k}))
        for price in ("-5", "inf", "NaN", "1e400", "abc"):
            record(f"max_price={price}", c.get("/v1/users/u/recommendations", params={"max_price": price}))
        deep = b'{"history": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
        record(
            "deep json",
            c.post("/v1/recommendations", content=deep, headers={"Content-Type": "application/json"}),
        )
        record("oversized", c.post("/v1/recommendations", json={"history": [{"item_id": "x" * 100}] * 2000}))
        record(
            "not json",
            c.post("/v1/recommendations", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}),
        )
        record("wrong type", c.post("/v1/recommendations", json=[1, 2, 3]))
        record("path traversal route", c.get("/v1/items/../../etc/passwd/similar"))
        time.sleep(0.3)  # let the landing writer flush what was accepted
        assert c.get("/healthz").status_code == 200

    mishandled = [(label, s) for label, s in tried if s >= 500]
    assert not mishandled, mishandled
    statuses = {s for _, s in tried}
    assert statuses <= {200, 201, 202, 204, 400, 404, 405, 413, 422}, statuses
    assert {"deep json", "oversized", "k=1000000000000", "k=-1"} <= {
        label for label, s in tried if 400 <= s < 500
    }
    # nothing was written outside the artifact store, whatever the ids looked like
    assert _files_outside(root, Path(home.root)) == before
    print(f"hostile API inputs tried: {len(tried)}, mishandled: {len(mishandled)}")


# -- shared user state (Redis) -------------------------------------------------------------------------------------
def test_redis_user_state_outage_degrades_reads_refuses_writes_and_recovers(home, model, redis_url):
    """Redis down: recommendations answer from popularity (logged, counted), events answer 503 but are
    still written to the landing zone, an erasure answers 503 instead of claiming success; Redis back: the
    history is there again. The outage is a real refused connection (a client for a port nobody serves)."""
    from bench.processes import free_port
    from relevance_service.user_state import RedisUserState

    state = RedisUserState.from_url(redis_url, prefix="outage:")
    live = state.client, state.aclient
    with TestClient(app=create_app(settings_for(home, landing_flush_s=3600), user_state=state)) as client:
        user, items = a_user_history(model)
        post_events(client, user, items)
        assert client.get(f"/v1/users/{user}/recommendations").json()["strategy"] == "personalized"
        svc = client.app.state.service
        pending = svc.writer.pending

        dead = RedisUserState.from_url(f"redis://127.0.0.1:{free_port()}/0")
        state.client, state.aclient = dead.client, dead.aclient
        r = client.get(f"/v1/users/{user}/recommendations")
        assert r.status_code == 200 and r.json()["strategy"] == "popular"
        ev = {"events": [{"user_id": user, "item_id": items[0], "event_type": "click"}]}
        r = client.post("/v1/events", json=ev, headers=AUTH)
        assert r.status_code == 503 and "recorded for training" in r.text, r.text
        assert svc.writer.pending > pending  # the event is kept for the next training run
        r = client.post("/v1/admin/erase-users", json={"user_ids": [user]}, headers=AUTH)
        assert r.status_code == 503 and "retry the erasure" in r.text, r.text
        metrics = client.get("/metrics").text
        for op in ("read", "write", "delete"):
            assert f'relevance_user_state_errors_total{{op="{op}"}} 1.0' in metrics, metrics

        state.client, state.aclient = live
        assert client.get(f"/v1/users/{user}/recommendations").json()["strategy"] == "personalized"


def test_workers_sharing_redis_seed_the_lake_once(home, model, redis_url, tmp_path):
    """Two services on one Redis (two workers or replicas) and a lake: one seeds it, the other waits for
    it and skips it; both then answer the lake's user from its history."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from lake_sessions import write_sessions

    from relevance_service.user_state import RedisUserState

    user, items = a_user_history(model)
    t = datetime.now(UTC) - timedelta(hours=1)
    write_sessions(home, "2026-01-01", [(user, items, ["view"] * len(items), [t] * len(items))])
    prefix = f"seed{uuid.uuid4().hex[:8]}:"
    apps = [
        create_app(
            settings_for(home, seed_from_lake=True, bundle_cache_dir=str(tmp_path / f"cache-{i}")),
            user_state=RedisUserState.from_url(redis_url, prefix=prefix),
        )
        for i in range(2)
    ]
    with TestClient(app=apps[0]) as first, TestClient(app=apps[1]) as second:
        for c in (first, second):
            wait_for(lambda c=c: c.get("/readyz").status_code == 200, timeout=60)
            r = c.get(f"/v1/users/{user}/recommendations")
            assert r.json()["strategy"] == "personalized", r.text
        services = sorted((c.app.state.service for c in (first, second)), key=lambda svc: svc.seeded_users)
    # one read the lake and wrote the history; the other found the window seeded and read nothing
    assert [(svc.seed_source, svc.seeded_users) for svc in services] == [("shared", 0), ("lake", 1)]
