"""The whole asset graph, in process, on a small generated marketplace: every asset and every check,
then the gate's failure path (LATEST must not move), then what a new user does next: the README's
``relevance serve`` (no token, no flag) and the explorer in a browser, personalised for a lake user."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


def test_full_graph_publishes_a_verified_bundle_with_cold_items(tmp_path, monkeypatch):
    import dagster as dg

    from relevance_cli.commands.demo import run_pipeline
    from relevance_core import bundle as B
    from relevance_core.evaluation.runner import load_pairs
    from relevance_core.generator import ending_yesterday, preset, write_marketplace
    from relevance_core.storage import LocalStore

    home = tmp_path / "home"
    monkeypatch.setenv("RELEVANCE_HOME", str(home))
    store = LocalStore(home)
    # dated like the demo's: the window ends yesterday, so stored histories are within the state TTL
    tiny = preset("tiny")
    report = write_marketplace(tiny.replace(start_date=ending_yesterday(tiny.n_days)), store)
    days = [d.date for d in report.days]
    instance = dg.DagsterInstance.ephemeral()
    model_cfg = {"max_epochs": 3, "n_layers": 1, "hidden": 64, "batch_size": 256, "patience": 2}
    results = run_pipeline(str(home), days=days, model_config=model_cfg, instance=instance)
    assert results and all(results.values()), results

    # every asset materialized, every check ran and passed
    defs_keys = {
        "items",
        "raw_events",
        "sessions",
        "training_pairs",
        "dim_items",
        "item_popularity",
        "two_tower_model",
        "item_embeddings",
        "faiss_index",
        "learned_ranker",
        "offline_evaluation",
        "published_bundle",
    }
    for key in defs_keys:
        assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
    from relevance_assets.defs.serving import assets as S

    for asset, check in (
        ("faiss_index", S.CHECK_ANN_RECALL),
        ("offline_evaluation", S.CHECK_BEATS_BASELINES),
        ("offline_evaluation", S.CHECK_NOT_WORSE),
    ):
        rec = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(asset), check)]
        )[dg.AssetCheckKey(dg.AssetKey(asset), check)]
        assert rec.status.value == "SUCCEEDED", (asset, check, rec.status)

    # LATEST moved to a bundle that verifies
    live = B.latest_version(store)
    assert live is not None
    path, manifest = B.fetch(store, live)
    assert manifest.n_items == len(pd.read_parquet(path / B.ITEM_IDS))
    assert set(B.REQUIRED_FILES) <= set(manifest.checksums)
    assert manifest.metrics and "ndcg@10" in manifest.metrics
    # the ranking stage travels with the bundle: its sources always, the ranker only if it passed its gate
    ranker_md = instance.get_latest_materialization_event(dg.AssetKey("learned_ranker")).asset_materialization
    shipped = ranker_md.metadata["ranker_shipped"].value
    assert {"covisit_indptr.npy", "item_stats.parquet", "ranking.json"} <= set(manifest.checksums)
    assert ("ranker.txt" in manifest.checksums) == shipped
    assert ranker_md.metadata["covisit_edges"].value > 0
    evaluation = S.read_evaluation(store, manifest.model["version"])
    assert ("retrieval_only" in evaluation["report"]["results"]) == shipped

    # cold items (in the catalog, never interacted with in training) are in the index and searchable
    train = load_pairs(store, "train")
    warm = set(train["target_item_id"]) | {i for h in train["hist_item_ids"] for i in h}
    catalog = set(pd.read_parquet(path / B.ITEMS)["item_id"])
    indexed = pd.read_parquet(path / B.ITEM_IDS)["item_id"].tolist()
    cold = catalog - warm
    assert cold and cold <= set(indexed)
    from relevance_core.index import ItemIndex

    index = ItemIndex.load(path)
    emb = np.load(path / B.EMBEDDINGS)
    row = indexed.index(sorted(cold)[0])
    assert index.search(emb[row : row + 1], 1).item_ids[0, 0] == indexed[row]

    # a failing gate: require an impossible margin over the baselines -> no publish, LATEST unchanged
    job = None
    from relevance_assets.definitions import defs as load_defs

    job = load_defs().resolve_implicit_global_asset_job_def()
    r = job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("offline_evaluation"), dg.AssetKey("published_bundle")],
        run_config={"ops": {"offline_evaluation": {"config": {"baseline_margin": 10.0}}}},
        raise_on_error=False,
    )
    assert not r.success
    failed = {
        ev.event_specific_data.check_name
        for ev in r.all_events
        if ev.event_type_value == "ASSET_CHECK_EVALUATION" and not ev.event_specific_data.passed
    }
    assert S.CHECK_BEATS_BASELINES in failed
    assert B.latest_version(store) == live
    assert B.list_versions(store) == [live]

    # the bundle the pipeline published serves: the README's `relevance serve` (no token, no flag, default
    # settings: on loopback that is local dev mode, user state seeded from the lake's sessions, the
    # 30-day state TTL) answers a lake user personally with that version, and the explorer shows it
    import os
    import sys

    import httpx
    import pyarrow.parquet as pq
    from support.browser import chromium, screenshot
    from support.service_process import Server, free_port

    newest = sorted((home / "lake" / "sessions").glob("date=*"))[-1]
    sessions = pq.read_table(newest, columns=["user_id", "item_ids"]).to_pylist()
    user, seen = next((s["user_id"], set(s["item_ids"])) for s in sessions if s["user_id"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVANCE_")}
    srv = Server.exact(
        [sys.executable, "-m", "relevance_cli.main", "serve"],
        env | {"RELEVANCE_HOME": str(home), "PYTHONUNBUFFERED": "1"},
        tmp_path / "serve.log",
        free_port(),
    )
    url = srv.url
    try:
        srv.wait_ready()
        text = srv.log_path.read_text()
        assert "LOCAL DEV MODE" in text and "user state: seeded" in text, text[-3000:]
        assert "older than the state TTL" not in text
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("/v1/bundle").json()["version"] == live
            body = c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
            assert body["bundle_version"] == live and body["strategy"] == "personalized", body
            got = [i["item_id"] for i in body["items"]]
            assert len(got) == 10 and not set(got) & seen  # seen items are filtered by default
            assert all(i["title"] and i["reason"] for i in body["items"])
            stranger = c.get("/v1/users/nobody-here/recommendations", params={"k": 10}).json()
            assert stranger["strategy"] == "popular" and len(stranger["items"]) == 10
        with chromium() as browser:
            page = browser.new_page()
            resp = page.goto(f"{url}/explorer?user={user}")
            assert resp is not None and resp.status == 200
            page.wait_for_selector("body[data-ready='1']")
            page.wait_for_function("() => document.getElementById('recs').dataset.strategy")
            assert page.get_attribute("#recs", "data-strategy") == "personalized"
            assert len(page.query_selector_all("#recs .card")) > 0
            screenshot(page, "explorer-after-demo-graph", full_page=False)
            assert browser.console_errors == [], browser.console_errors
    finally:
        srv.stop()
