"""The UIs in a real browser: the recommendation explorer (``/explorer``) against ``relevance serve`` running
as a real uvicorn process with a real bundle, and the Dagster webserver's asset graph.

Headless Debian Chromium driven by Playwright (``support/browser.py``). What the page shows is compared with
what the public API answers for the same request, so the tests check the page's wiring (filters, events,
guest history), not just that something rendered. Screenshots land in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support.browser import chromium, screenshot
from support.bundles import assemble
from support.service_process import Server, free_port

from relevance_core import bundle as B
from relevance_core.storage import LocalStore

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = "browser-e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
K = 12  # the page's default k


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process we started (by its PID), then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s: {log.read_text()[-3000:]}")


# -- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def metrics(model) -> dict[str, float]:
    """Evaluation metrics for the manifest: the model's own validation numbers from its training run, so
    that the page has real values to show (the offline evaluation asset is not run by these tests)."""
    raw = json.loads((model.model_dir / "metrics.json").read_text())
    flat = {
        re.sub(r"_at_(\d+)$", r"@\1", k): float(v)
        for k, v in raw.items()
        if re.search(r"_at_\d+$", k) and isinstance(v, int | float)
    }
    assert flat, raw
    return flat


@pytest.fixture(scope="module")
def store(tmp_path_factory, model, metrics) -> LocalStore:
    """A store with one published bundle whose manifest carries evaluation metrics."""
    import shutil

    s = LocalStore(tmp_path_factory.mktemp("browser") / "home")
    path, manifest = assemble(model)
    manifest.metrics = dict(metrics)
    B.finalize_manifest(path, manifest)
    try:
        B.publish(s, path)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    return s


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    srv = Server(
        store.root,
        tmp_path_factory.mktemp("logs") / "server.log",
        env={"RELEVANCE_API_TOKEN": TOKEN, "RELEVANCE_PSEUDONYM_KEY": "browser-e2e"},
    )
    try:
        srv.wait_ready(timeout=180)
        yield srv.url
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture()
def page(browser):
    """A fresh tab; the test fails if the page logged any console error (CSP violation, script error,
    failed request) that the test did not expect and clear."""
    browser.console_errors.clear()
    p = browser.new_page()
    yield p
    if p.url.startswith("http"):
        p.evaluate("() => localStorage.clear()")  # the saved token must not leak into the next test
    p.close()
    assert browser.console_errors == [], browser.console_errors


def known_user(http, model, index: int) -> tuple[str, list[str]]:
    """A user from the training data whose recent history the service has been sent (as the shop's
    frontend would), so it serves them personalised recommendations."""
    rows = model.pairs.slice(model.pairs.num_rows - 1 - index * 7, 1).to_pylist()[0]
    user, items = rows["user_id"], rows["hist_item_ids"][-6:]
    events = {"events": [{"user_id": user, "item_id": i, "event_type": "view"} for i in items]}
    assert http.post("/v1/events", json=events, headers=AUTH).status_code == 202
    return user, items


# -- page helpers -------------------------------------------------------------------------------------------
def open_explorer(page, server: str, query: str = ""):
    resp = page.goto(f"{server}/explorer{query}")
    assert resp is not None and resp.status == 200
    page.wait_for_selector("body[data-ready='1']")
    return resp


def request_id(page, panel: str = "recs") -> str:
    return page.get_attribute(f"#{panel}", "data-request-id") or ""


def wait_new_answer(page, previous: str, panel: str = "recs") -> str:
    page.wait_for_function(
        "([panel, prev]) => { const id = document.getElementById(panel).dataset.requestId;"
        " return id && id !== prev && document.body.dataset.busy !== '1'; }",
        arg=[panel, previous],
    )
    return request_id(page, panel)


def cards(page, panel: str = "recs") -> list[dict]:
    return page.eval_on_selector_all(
        f"#{panel} .card",
        """els => els.map(e => ({
            item_id: e.dataset.itemId,
            price: e.dataset.price === undefined ? null : Number(e.dataset.price),
            title: e.querySelector('.title').textContent,
            brand: e.querySelector('.brand').textContent,
            category_path: e.querySelector('.cat').textContent,
            location: e.querySelector('.location').textContent,
            condition: e.querySelector('.condition').textContent,
            score: e.querySelector('.score') ? e.querySelector('.score').textContent : null,
            reason: e.querySelector('.reason') ? e.querySelector('.reason').textContent : null,
            initials: e.querySelector('.initials').textContent,
        }))""",
    )


def ids(items: list[dict]) -> list[str]:
    return [it["item_id"] for it in items]


def assert_same_personal_slate(shown: list[str], api: list[str]) -> None:
    """Two personalised answers for one user a moment apart: the user tower sees each event's age,
    so near-tied items may trade places or one may slip past the k-th rank (CI once saw ranks 10
    and 11 swap), but the slate is the same: all but two of its items."""
    assert len(shown) == len(api), (shown, api)
    assert len(set(shown) & set(api)) >= len(api) - 2, (shown, api)


# -- the explorer ---------------------------------------------------------------------------------------------
def test_explorer_loads_with_bundle_and_metrics(page, server, http, metrics):
    resp = open_explorer(page, server)
    csp = resp.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    bundle = http.get("/v1/bundle").json()
    page.wait_for_function(
        "v => document.getElementById('bundle-version').textContent === v", arg=bundle["version"]
    )
    rows = page.eval_on_selector_all(
        "#bundle-metrics tbody tr", "rs => rs.map(r => [r.cells[0].textContent, r.cells[1].textContent])"
    )
    assert dict(rows) == {
        k: f"{v:.4f}" if not float(v).is_integer() else str(int(v)) for k, v in metrics.items()
    }
    assert page.is_visible("#bundle-metrics")
    facts = page.text_content("#bundle-facts")
    assert f"{bundle['n_items']:,} items" in facts and f"dim {bundle['dim']}" in facts
    screenshot(page, "explorer-empty")


def test_known_user_gets_the_apis_recommendations(page, server, http, model):
    user, _ = known_user(http, model, 0)
    open_explorer(page, server)
    page.fill("#user-id", user)
    page.click("[data-testid=load-user]")
    wait_new_answer(page, "")
    api = http.get(f"/v1/users/{user}/recommendations", params={"k": K}).json()
    assert api["strategy"] == "personalized"
    assert page.get_attribute("#recs", "data-strategy") == "personalized"
    shown = cards(page)
    assert len(shown) == K
    assert_same_personal_slate(ids(shown), ids(api["items"]))
    by_id = {item["item_id"]: item for item in api["items"]}
    for card in shown:
        if (item := by_id.get(card["item_id"])) is None:
            continue
        assert card["title"] == item["title"]
        assert card["brand"] == item["brand"] and card["category_path"] == item["category_path"]
        assert card["location"] == item["location"] and card["condition"] == item["condition"]
        assert card["price"] == pytest.approx(item["price"])
        assert card["reason"] == item["reason"] and card["score"] == f"{item['score']:.4f}"
        assert card["initials"] and card["initials"] != "?"
    assert any(c["reason"].startswith("similar to") for c in shown)
    assert "strategy personalized" in page.text_content("#recs-meta")
    assert page.url.endswith(f"/explorer?user={user}")
    screenshot(page, "explorer-known-user", full_page=False)


def test_clicking_an_item_sends_a_view_and_updates_live(page, browser, server, http, model):
    user, _ = known_user(http, model, 1)
    open_explorer(page, server, f"?user={user}")
    rid = wait_new_answer(page, "")
    before = ids(cards(page))

    # no token yet: the write is refused, the page says why, and nothing changes
    with page.expect_response(lambda r: r.url.endswith("/v1/events")) as refused:
        page.click("#recs .card >> nth=0")
    assert refused.value.status == 401
    page.wait_for_function("() => document.getElementById('status').textContent.includes('HTTP 401')")
    # Chromium logs the refused write as a failed resource load: expected, not a page bug
    browser.console_errors[:] = [e for e in browser.console_errors if "401" not in e]
    assert request_id(page) == rid and ids(cards(page)) == before
    assert page.query_selector_all("#history .card") == []

    page.click("details.token summary")
    page.fill("#token", TOKEN)
    page.click("[data-testid=token-save]")
    clicked = before[2]
    page.click(f"#recs .card[data-item-id='{clicked}']")
    wait_new_answer(page, rid)
    after = ids(cards(page))
    assert after != before and clicked not in after  # a viewed item is not recommended again
    assert ids(cards(page, "history")) == [clicked]
    # the view reached the service's stored history: any client now gets the page's answer
    api = http.get(f"/v1/users/{user}/recommendations", params={"k": K}).json()
    assert api["strategy"] == "personalized" and clicked not in ids(api["items"])
    assert_same_personal_slate(after, ids(api["items"]))
    screenshot(page, "explorer-after-click")  # the README picture (docs/explorer.png)


def test_guest_session_personalises_from_clicks(page, server):
    open_explorer(page, server)
    page.click("details.token summary")
    page.fill("#token", TOKEN)
    page.click("[data-testid=token-save]")
    page.click("[data-testid=guest]")
    rid = wait_new_answer(page, "")
    assert page.get_attribute("#recs", "data-strategy") == "popular"
    popular = ids(cards(page))
    assert len(popular) == K
    for n in (1, 2):
        # the view is also logged to the service as an anonymous event (no user id: no stored history)
        with page.expect_response(lambda r: r.url.endswith("/v1/events")) as logged:
            page.click("#recs .card >> nth=0")
        assert logged.value.status == 202
        rid = wait_new_answer(page, rid)
        assert len(page.query_selector_all("#history .card")) == n
    assert page.get_attribute("#recs", "data-strategy") == "personalized"
    shown = ids(cards(page))
    assert shown != popular
    assert not set(shown) & set(ids(cards(page, "history")))
    assert page.url.endswith("/explorer?guest=1")


def test_filters_hold_for_every_card(page, server, http):
    open_explorer(page, server, "?guest=1")
    rid = wait_new_answer(page, "")
    prices = sorted(c["price"] for c in cards(page))
    max_price = round(prices[len(prices) // 2], 2)

    page.fill("#f-max-price", str(max_price))
    page.click("[data-testid=apply-filters]")
    rid = wait_new_answer(page, rid)
    shown = cards(page)
    assert shown and all(c["price"] <= max_price for c in shown)
    api = http.post("/v1/recommendations", json={"k": K, "max_price": max_price}).json()
    assert ids(shown) == ids(api["items"])

    location = shown[0]["location"]
    page.fill("#f-location", location)
    page.click("[data-testid=apply-filters]")
    rid = wait_new_answer(page, rid)
    shown = cards(page)
    assert shown and all(c["location"] == location and c["price"] <= max_price for c in shown)

    top = shown[0]["category_path"].split(" > ")[0]
    page.fill("#f-category", top)
    page.click("[data-testid=apply-filters]")
    rid = wait_new_answer(page, rid)
    shown = cards(page)
    assert shown and all(
        c["category_path"].startswith(top + " >") and c["location"] == location and c["price"] <= max_price
        for c in shown
    )
    # suggestions for the filter inputs come from what was shown
    assert page.eval_on_selector_all("#categories option", "os => os.map(o => o.value)").count(top) == 1
    screenshot(page, "explorer-filters")

    page.click("[data-testid=clear-filters]")
    wait_new_answer(page, rid)
    assert len(cards(page)) == K and any(c["price"] > max_price for c in cards(page))


def test_similar_items_and_escaping(page, server, http, model):
    """ "Similar" shows the API's neighbours; a seller-written title full of markup is shown as text."""
    open_explorer(page, server, "?guest=1")
    wait_new_answer(page, "")
    first = cards(page)[0]
    page.click("#recs .card >> nth=0 >> [data-testid=similar-btn]")
    wait_new_answer(page, "", panel="similar")
    api = http.get(f"/v1/items/{first['item_id']}/similar", params={"k": K}).json()
    shown = cards(page, "similar")
    assert ids(shown) == ids(api["items"]) and first["item_id"] not in ids(shown)
    assert page.text_content("#similar-of") == first["title"]

    # a live listing copied from that item, with a hostile title, under filters that leave few others
    src = model.items.set_index("item_id").loc[first["item_id"]]
    hostile = f'{src["title"]} <img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    listing = {
        "title": hostile,
        "category_path": src["category_path"],
        "price": float(src["price"]),
        "brand": src["brand"],
        "location": src["location"],
        "condition": src["condition"],
    }
    assert http.put("/v1/items/browser-hostile", json=listing, headers=AUTH).status_code == 201
    page.fill("#f-category", src["category_path"])
    page.fill("#f-location", src["location"])
    rid = request_id(page, "similar")
    page.click("[data-testid=apply-filters]")
    wait_new_answer(page, rid, panel="similar")
    titles = {c["item_id"]: c["title"] for c in cards(page, "similar")}
    assert titles.get("browser-hostile") == hostile
    assert page.evaluate("() => window.__xss === undefined")
    assert page.query_selector("#similar img") is None and page.query_selector("#similar script") is None
    screenshot(page, "explorer-similar")


# -- the Dagster webserver ----------------------------------------------------------------------------------
#: The asset groups and keys of docs/contracts.md: the graph must show every one of them.
ASSET_GROUPS = {
    "ingestion": ["raw_events", "items"],
    "pipeline": ["sessions", "training_pairs"],
    "catalog": ["stg_items", "stg_events", "dim_items", "item_popularity", "daily_event_stats"],
    "model": ["two_tower_model", "item_embeddings", "faiss_index", "learned_ranker"],
    "serving": ["offline_evaluation", "published_bundle"],
}
LOCATION = "relevance"  # workspace.yaml's location_name


def _dismiss_onboarding(page) -> None:
    """A fresh DAGSTER_HOME shows a "join the community" dialog over the graph on first visit."""
    try:
        page.get_by_role("button", name="Skip").click(timeout=5_000)
    except Exception:  # noqa: BLE001 - absent in some versions / already dismissed: nothing to do
        pass


def test_dagster_asset_graph_renders_the_projects_assets(browser, tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        f"storage:\n  sqlite:\n    base_dir: {dagster_home}/storage\ntelemetry:\n  enabled: false\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "RELEVANCE_HOME": str(tmp_path / "relevance_home"),
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    log = tmp_path / "webserver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        page = None
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/server_info", proc, log, timeout=240)
            page = browser.new_page()
            # the global lineage: one node per asset group
            page.goto(f"{url}/asset-groups", timeout=120_000)
            _dismiss_onboarding(page)
            for group in ASSET_GROUPS:
                page.get_by_text(group, exact=True).first.wait_for(timeout=180_000)
            screenshot(page, "dagster-global-lineage", full_page=False)
            # each group's graph: one node per asset
            for group, assets in ASSET_GROUPS.items():
                page.goto(f"{url}/locations/{LOCATION}/asset-groups/{group}", timeout=120_000)
                for name in assets:
                    page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
                screenshot(page, f"dagster-asset-graph-{group}", full_page=False)
        except Exception as e:
            if page is not None:
                screenshot(page, "dagster-asset-graph-FAILED", full_page=False)
            raise AssertionError(
                f"asset graph not rendered ({e}); webserver log:\n{log.read_text()[-4000:]}"
            ) from e
        finally:
            if page is not None:
                page.close()
            stop_process(proc)
    # the Dagster UI's own console noise (websocket reconnects when the server stops) is not ours to judge
    browser.console_errors.clear()
