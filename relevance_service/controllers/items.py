"""Items: similar items (read), new/changed listings and availability (write, token-guarded)."""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec
from litestar import Controller, Response, get, post, put
from litestar.exceptions import NotFoundException
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from relevance_service.controllers._common import (
    build_response,
    check_k,
    field_error,
    headers_for,
    serving_state,
)
from relevance_service.controllers.recommendations import CategoryParam, KParam, LocationParam, PriceParam
from relevance_service.live_items import OverlayFull
from relevance_service.recommender import Query
from relevance_service.schemas import (
    AvailabilityRequest,
    AvailabilityResponse,
    ItemResponse,
    ItemUpsert,
    RecommendationResponse,
)
from relevance_service.security import require_token
from relevance_service.service import Service

log = logging.getLogger(__name__)

ItemIdParam = Annotated[str, Parameter(min_length=1, max_length=256)]


class ItemReadController(Controller):
    path = "/v1/items"
    tags = ["items"]

    @get("/{item_id:str}/similar", summary="Items similar to an item")
    async def similar(
        self,
        svc: Service,
        item_id: ItemIdParam,
        k: KParam = None,
        category: CategoryParam = None,
        max_price: PriceParam = None,
        location: LocationParam = None,
    ) -> Response[RecommendationResponse]:
        """Nearest neighbours of the item's embedding (live listings included), after the business rules."""
        k = check_k(svc, k)
        state = serving_state(svc)
        query = Query(k=k, category=category, max_price=max_price, location=location)
        slate = svc.recommender.similar(state, item_id, query)
        if slate is None:
            raise NotFoundException(f"item_id: unknown item {item_id!r}")
        resp = build_response(svc, state, slate, k, None)
        return Response(resp, headers=headers_for(resp))


class ItemWriteController(Controller):
    path = "/v1/items"
    tags = ["items"]
    security = [{"bearer": []}]
    guards = [require_token]

    @put("/{item_id:str}", summary="Create or change a listing", status_code=HTTP_200_OK)
    async def upsert(self, svc: Service, item_id: ItemIdParam, data: ItemUpsert) -> Response[ItemResponse]:
        """Embeds the listing with the serving bundle's item tower and adds it to the live index at once."""
        if data.item_id is not None and data.item_id != item_id:
            raise field_error("item_id", "must match the item id in the path")
        state = serving_state(svc)
        item = msgspec.structs.asdict(data)
        item["item_id"] = item_id
        created = state.row_of(item_id) is None
        vec = state.bundle.embed_items([item])  # before any change: an unembeddable listing changes nothing
        try:
            svc.catalog.put(item)
        except OverlayFull as e:
            raise field_error("item_id", str(e)) from e
        # no await since ``serving_state``: ``state`` is still the serving one, and a reload (which
        # catches up from the catalog on this same event loop) can neither miss nor duplicate this
        state.overlay.upsert_many([item], vec)
        svc.metrics.live_items.set(len(state.overlay.data))
        persisted = dict(item)
        if persisted.get("created_at") is not None:
            persisted["created_at"] = persisted["created_at"].isoformat()
        svc.writer.log_item(persisted)
        return Response(
            ItemResponse(
                item_id=item_id,
                bundle_version=state.version,
                live=True,
                available=data.available,
                created=created,
            ),
            status_code=HTTP_201_CREATED if created else HTTP_200_OK,
        )

    @post("/{item_id:str}/availability", summary="Show or hide an item", status_code=HTTP_200_OK)
    async def availability(
        self, svc: Service, item_id: ItemIdParam, data: AvailabilityRequest
    ) -> AvailabilityResponse:
        """A sold or hidden item disappears from every result at once (and reappears when shown again)."""
        state = serving_state(svc)
        if state.row_of(item_id) is None:
            raise NotFoundException(f"item_id: unknown item {item_id!r}")
        svc.catalog.set_available(item_id, data.available)
        state.overlay.set_available(item_id, data.available)
        return AvailabilityResponse(item_id=item_id, available=data.available, bundle_version=state.version)
