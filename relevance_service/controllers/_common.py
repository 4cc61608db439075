"""Shared helpers of the controllers: field-named 4xx errors, the serving state, slate → response."""

from __future__ import annotations

import uuid

import numpy as np
from litestar.exceptions import ServiceUnavailableException, ValidationException

from relevance_service.live_items import ServingState
from relevance_service.recommender import Slate
from relevance_service.schemas import RecommendationResponse, RecommendedItem


def field_error(key: str, message: str) -> ValidationException:
    """A 400 whose body names the offending field, like Litestar's own validation errors."""
    return ValidationException(
        detail=f"Validation failed: {key}: {message}", extra=[{"key": key, "message": message}]
    )


def serving_state(svc) -> ServingState:
    state = svc.serving
    if state is None:
        raise ServiceUnavailableException("no bundle loaded yet")
    return state


def check_k(svc, k: int | None) -> int:
    if k is None:
        return svc.settings.default_k
    if not 1 <= k <= svc.settings.max_k:
        raise field_error("k", f"must be between 1 and {svc.settings.max_k}")
    return k


def build_response(
    svc, state: ServingState, slate: Slate, k: int, user_id: str | None
) -> RecommendationResponse:
    """Hydrate the slate, log it as impressions (non-blocking) and count what the rules did."""
    request_id = uuid.uuid4().hex
    metas = state.hydrate(slate.rows)
    scores = slate.scores.astype(np.float64).tolist()
    items = []
    ids = []
    for pos, (meta, score, reason) in enumerate(zip(metas, scores, slate.reasons, strict=True)):
        m = meta or {}
        iid = m.get("item_id")
        if iid is None:  # defensive: an item without metadata is never shown
            continue
        ids.append(iid)
        items.append(
            RecommendedItem(
                item_id=iid,
                score=round(score, 6),
                position=pos,
                reason=reason,
                title=m.get("title"),
                price=m.get("price"),
                brand=m.get("brand"),
                category_path=m.get("category_path"),
                location=m.get("location"),
                condition=m.get("condition"),
                image_url=m.get("image_url"),
                seller_id=m.get("seller_id"),
            )
        )
    metrics = svc.metrics
    metrics.child(metrics.recommendations, slate.strategy).inc()
    if slate.filtered:
        metrics.count_filtered(slate.filtered)
    if slate.widened:
        metrics.child(metrics.widened, slate.widened).inc()
    svc.writer.log_slate(
        request_id, svc.pseudonymize(user_id), state.version, slate.strategy, ids, [i.score for i in items]
    )
    return RecommendationResponse(
        request_id=request_id,
        bundle_version=state.version,
        strategy=slate.strategy,
        items=items,
        k=k,
        widened=slate.widened,
    )


def headers_for(resp: RecommendationResponse) -> dict[str, str]:
    return {"X-Bundle-Version": resp.bundle_version, "X-Request-Id": resp.request_id}
