"""``GET /v1/users/{user_id}/recommendations`` (stored history) and ``POST /v1/recommendations`` (guests)."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.params import Parameter

from relevance_service.controllers._common import (
    build_response,
    check_k,
    field_error,
    headers_for,
    serving_state,
)
from relevance_service.recommender import Query
from relevance_service.schemas import RecommendationResponse, RecommendRequest
from relevance_service.service import Service
from relevance_service.settings import HARD_MAX_K
from relevance_service.user_state import HistoryEntry, UserStateUnavailable

log = logging.getLogger(__name__)

KParam = Annotated[int | None, Parameter(ge=1, le=HARD_MAX_K, description="number of items (default 20)")]
CategoryParam = Annotated[
    str | None, Parameter(min_length=1, max_length=256, description="category path prefix or level name")
]
PriceParam = Annotated[float | None, Parameter(ge=0, le=1e12, description="maximum price")]
LocationParam = Annotated[str | None, Parameter(min_length=1, max_length=256, description="exact location")]


class RecommendationController(Controller):
    path = "/v1"
    tags = ["recommendations"]

    @get("/users/{user_id:str}/recommendations", summary="Recommendations for a user")
    async def for_user(
        self,
        svc: Service,
        user_id: Annotated[str, Parameter(min_length=1, max_length=256)],
        k: KParam = None,
        category: CategoryParam = None,
        max_price: PriceParam = None,
        location: LocationParam = None,
    ) -> Response[RecommendationResponse]:
        """Personalised from the user's recent history (updated at once by ``POST /v1/events``).

        Unknown users, and users whose history the model does not know, get popular/trending items;
        ``strategy`` in the response says which served the request."""
        k = check_k(svc, k)
        state = serving_state(svc)
        try:
            history = await svc.user_state.get_async(user_id)
        except UserStateUnavailable as e:  # degrade to the popular fallback; say so in the log and metrics
            log.warning("%s; answering without the user's history", e)
            svc.metrics.user_state_errors.labels(op="read").inc()
            history = []
        query = Query(k=k, category=category, max_price=max_price, location=location)
        rec = svc.recommender
        slate = rec.for_history(state, history, query) if history else rec.popular(state, query)
        resp = build_response(svc, state, slate, k, user_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "recs user=%s strategy=%s n=%d", svc.pseudonymize(user_id), slate.strategy, len(resp.items)
            )
        return Response(resp, headers=headers_for(resp))

    @post(
        "/recommendations", summary="Recommendations for a posted history (guests, sessions)", status_code=200
    )
    async def for_history(self, svc: Service, data: RecommendRequest) -> Response[RecommendationResponse]:
        """Recommendations from the history in the body (oldest first); nothing is stored."""
        k = check_k(svc, data.k)
        if len(data.history) > svc.settings.max_history:
            raise field_error("history", f"at most {svc.settings.max_history} events")
        state = serving_state(svc)
        now = time.time()
        history = [
            HistoryEntry(h.item_id, str(h.event_type), h.timestamp.timestamp() if h.timestamp else now)
            for h in data.history
        ]
        history.sort(key=lambda e: e.ts)
        query = Query(
            k=k,
            category=data.category,
            max_price=data.max_price,
            location=data.location,
            exclude_item_ids=list(data.exclude_item_ids),
        )
        rec = svc.recommender
        slate = rec.for_history(state, history, query, now) if history else rec.popular(state, query)
        resp = build_response(svc, state, slate, k, data.user_id)
        return Response(resp, headers=headers_for(resp))
