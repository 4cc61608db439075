"""The ranking stage in the service: a bundle with sources and a ranker is served through them, the
service's order is the one the offline path computes for the same history, and the ranker runs after the
hard filters."""

from __future__ import annotations

import numpy as np
import pytest
from integration.test_service_app import AUTH, a_user_history, post_events, settings_for
from litestar.testing import TestClient
from support.bundles import assemble

from relevance_core.ranking.batch import BatchInputs, history_of, rank_batch
from relevance_core.storage import LocalStore
from relevance_service.app import create_app
from relevance_service.live_items import LiveCatalog, LiveOverlay, ServingState
from relevance_service.recommender import Query, Recommender
from relevance_service.serving_bundle import ServingBundle
from relevance_service.user_state import HistoryEntry

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def ranked_bundle(model, tmp_path_factory):
    path, _ = assemble(model, tmp_path_factory.mktemp("ranked"), ranked=True)
    return ServingBundle.load(path)


def _state(bundle: ServingBundle) -> ServingState:
    return ServingState(bundle, LiveOverlay.build(bundle, LiveCatalog()))


def _history(model, n: int = 6) -> list[HistoryEntry]:
    _, items = a_user_history(model, n)
    return [
        HistoryEntry(item_id=i, event_type="view", ts=NOW - 60.0 * (len(items) - j))
        for j, i in enumerate(items)
    ]


def test_ranked_bundle_loads_its_stage(ranked_bundle):
    assert ranked_bundle.ranked
    stage = ranked_bundle.ranking
    assert stage.covisit.n_items == ranked_bundle.n_items and stage.covisit.n_edges > 0
    assert stage.ranker is not None


def test_served_order_is_the_offline_order(model, ranked_bundle):
    """One history, two paths: the service's ``Recommender`` (rules neutral: no diversity, no penalty,
    no seen filter) and the offline batch path (``rank_batch``) return the same items in the same order."""
    settings = settings_for(
        LocalStore(ranked_bundle.path.parent),
        diversity="none",
        popularity_penalty=0.0,
        exclude_seen_event_types=(),
    )
    rec = Recommender(settings)
    hist = _history(model)
    slate = rec.for_history(_state(ranked_bundle), hist, Query(k=10), now=NOW)
    assert slate.strategy == "personalized"

    b = ranked_bundle
    q = b.user_vector([(e.item_id, e.event_type, NOW - e.ts) for e in hist])
    ann = b.search(q, settings.candidates_k)[1]
    inp = BatchInputs(
        histories=[
            history_of(b.row_of, [e.item_id for e in hist], ["view"] * len(hist), [NOW - e.ts for e in hist])
        ],
        user_vecs=q,
        ann_rows=ann[None, :],
        embeddings=np.asarray(b.embeddings),
        now_s=np.asarray([NOW]),
    )
    offline = rank_batch(b.ranking, inp, 10, exclude_seen=False)[0]
    assert slate.rows.tolist() == offline.tolist()
    # and the ranker changed something: the retrieval-only order of the same bundle differs
    retrieval = rank_batch(b.ranking, inp, 10, exclude_seen=False, use_ranker=False)[0]
    assert retrieval.tolist() != offline.tolist()


def test_switching_the_stage_off_serves_the_retrieval_order(model, ranked_bundle):
    """``RELEVANCE_RANKING_STAGE=0``: the same ranked bundle answers in the offline retrieval-only order."""
    settings = settings_for(
        LocalStore(ranked_bundle.path.parent),
        diversity="none",
        popularity_penalty=0.0,
        exclude_seen_event_types=(),
        ranking_stage=False,
    )
    hist = _history(model)
    slate = Recommender(settings).for_history(_state(ranked_bundle), hist, Query(k=10), now=NOW)
    b = ranked_bundle
    q = b.user_vector([(e.item_id, e.event_type, NOW - e.ts) for e in hist])
    inp = BatchInputs(
        histories=[
            history_of(b.row_of, [e.item_id for e in hist], ["view"] * len(hist), [NOW - e.ts for e in hist])
        ],
        user_vecs=q,
        ann_rows=b.search(q, settings.candidates_k)[1][None, :],
        embeddings=np.asarray(b.embeddings),
        now_s=np.asarray([NOW]),
    )
    retrieval = rank_batch(b.ranking, inp, 10, exclude_seen=False, use_ranker=False)[0]
    assert slate.rows.tolist() == retrieval.tolist()


def test_hard_filters_apply_before_the_ranker(model, ranked_bundle):
    """A history item the ranker would put first (a revisit) is never shown when the seen rule removes it,
    and a category filter keeps only that category whatever the ranker prefers."""
    settings = settings_for(LocalStore(ranked_bundle.path.parent))
    rec = Recommender(settings)
    hist = _history(model)
    state = _state(ranked_bundle)
    slate = rec.for_history(state, hist, Query(k=10), now=NOW)
    assert not {state.bundle.item_ids[r] for r in slate.rows.tolist()} & {e.item_id for e in hist}
    top = model.items.set_index("item_id").loc[hist[-1].item_id, "category_path"].split(">")[0].strip()
    filtered = rec.for_history(state, hist, Query(k=5, category=top), now=NOW)
    paths = [m["category_path"] for m in state.hydrate(filtered.rows)]
    assert paths and all(p.split(">")[0].strip() == top for p in paths)


def test_api_serves_the_ranked_bundle(model, tmp_path):
    """Over HTTP: a published ranked bundle answers a user with history personally, reasons included."""
    from relevance_core import bundle as B

    store = LocalStore(tmp_path / "home")
    path, _ = assemble(model, tmp_path / "b", ranked=True)
    B.publish(store, path)
    with TestClient(app=create_app(settings_for(store))) as client:
        ranking = client.get("/v1/bundle").json()["ranking"]
        assert (
            ranking["ranker"] is True and ranking["covisit_edges"] > 0 and "ann_score" in ranking["features"]
        )
        assert ranking["in_use"] is True
        user, items = a_user_history(model)
        post_events(client, user, items)
        body = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}, headers=AUTH).json()
        assert body["strategy"] == "personalized" and len(body["items"]) == 10, body
        assert not {i["item_id"] for i in body["items"]} & set(items)
        assert all(i["reason"] for i in body["items"])
