"""Request and response bodies of the API, as msgspec Structs (validation, JSON and OpenAPI in one place).

Constraints live in the types (``Meta``) so that invalid input is refused by the framework with a 400
naming the field (``"Expected `int` >= 1 - at `$.k`"``) before any handler code runs, and so that the
OpenAPI schema (and anything generated from it, such as the schemathesis run in the tests) knows them.
Configurable limits (``max_k``, ``max_history``, batch size) are checked again in the handlers against the
settings; the ceilings here are the hard ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from relevance_core.schemas import EventType
from relevance_service.settings import HARD_MAX_HISTORY, HARD_MAX_K

ItemId = Annotated[str, Meta(min_length=1, max_length=256, description="catalog item id")]
UserId = Annotated[str, Meta(min_length=1, max_length=256, description="user id (pseudonymised in logs)")]
Text = Annotated[str, Meta(max_length=2000)]
ShortText = Annotated[str, Meta(max_length=512)]
K = Annotated[int, Meta(ge=1, le=HARD_MAX_K, description="number of items to return")]
Price = Annotated[float, Meta(ge=0, le=1e12)]
Strategy = Literal["personalized", "popular", "similar"]


# -- recommendations --------------------------------------------------------------------------------------
class RecommendedItem(msgspec.Struct, kw_only=True):
    """One recommended item with its hydrated metadata and a short human-readable reason."""

    item_id: str
    score: float
    position: int
    reason: str
    title: str | None = None
    price: float | None = None
    brand: str | None = None
    category_path: str | None = None
    location: str | None = None
    condition: str | None = None
    image_url: str | None = None
    seller_id: str | None = None


class RecommendationResponse(msgspec.Struct, kw_only=True):
    request_id: str
    bundle_version: str
    strategy: Strategy
    items: list[RecommendedItem]
    k: int
    widened: str | None = None


class HistoryEvent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One past interaction of a guest session. ``timestamp`` defaults to the time of the request."""

    item_id: ItemId
    event_type: EventType = EventType.VIEW
    timestamp: datetime | None = None


class RecommendRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/recommendations``: a history (oldest first) plus options, for guests and sessions."""

    history: Annotated[list[HistoryEvent], Meta(max_length=HARD_MAX_HISTORY)] = []
    k: K = 20
    category: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    max_price: Price | None = None
    location: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    exclude_item_ids: Annotated[list[ItemId], Meta(max_length=HARD_MAX_HISTORY)] = []
    user_id: UserId | None = None


# -- events -------------------------------------------------------------------------------------------------
class LiveEvent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A real-time interaction. Without ``user_id`` it is logged but updates no stored history."""

    item_id: ItemId
    event_type: EventType
    user_id: UserId | None = None
    session_id: Annotated[str, Meta(max_length=256)] | None = None
    timestamp: datetime | None = None
    device_type: Annotated[str, Meta(max_length=64)] | None = None


class EventsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    events: Annotated[list[LiveEvent], Meta(min_length=1, max_length=10_000)]


class EventsResponse(msgspec.Struct, kw_only=True):
    accepted: int
    users_updated: int


# -- items --------------------------------------------------------------------------------------------------
class ItemUpsert(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new or changed listing (the path's ``item_id`` is the id; a body ``item_id`` must match it)."""

    title: Annotated[str, Meta(min_length=1, max_length=512)]
    item_id: ItemId | None = None
    description: Text = ""
    category_path: ShortText = ""
    price: Price | None = None
    brand: Annotated[str, Meta(max_length=256)] | None = None
    location: Annotated[str, Meta(max_length=256)] | None = None
    condition: Annotated[str, Meta(max_length=64)] | None = None
    image_url: Annotated[str, Meta(max_length=2048)] | None = None
    seller_id: Annotated[str, Meta(max_length=256)] | None = None
    available: bool = True
    created_at: datetime | None = None


class ItemResponse(msgspec.Struct, kw_only=True):
    item_id: str
    bundle_version: str
    live: bool
    available: bool
    created: bool


class AvailabilityRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    available: bool


class AvailabilityResponse(msgspec.Struct, kw_only=True):
    item_id: str
    available: bool
    bundle_version: str


# -- bundle, admin, health ----------------------------------------------------------------------------------
class BundleResponse(msgspec.Struct, kw_only=True):
    version: str
    loaded_at: float
    n_items: int
    live_items: int
    dim: int
    search: dict[str, Any]
    #: what runs the user tower: ``onnxruntime`` (the bundle's ``user_encoder.onnx``) or ``torchscript``
    user_tower_runtime: str
    #: the ranking stage: ``{"ranker": bool, "covisit_edges": int, "features": [...]}``; ``ranker`` false
    #: means personalised answers follow the retrieval order (no ranker, or one that failed its gate)
    ranking: dict[str, Any]
    manifest: dict[str, Any]


class ReloadRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Load this version instead of whatever ``LATEST`` names (e.g. to pin during an incident)."""

    version: (
        Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")] | None
    ) = None


class ReloadResponse(msgspec.Struct, kw_only=True):
    reloaded: bool
    version: str | None
    previous_version: str | None
    error: str | None = None


MAX_ERASE_IDS = 1000


class EraseUsersRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Users to forget (right to erasure): their recent history and their not-yet-written landing rows."""

    user_ids: Annotated[list[UserId], Meta(min_length=1, max_length=MAX_ERASE_IDS)]


class EraseUsersResponse(msgspec.Struct, kw_only=True):
    requested: int  # distinct ids in the request
    forgotten: int  # of those, how many the service held anything for (history or pending rows)


class HealthResponse(msgspec.Struct, kw_only=True):
    status: str


class StoreStatus(msgspec.Struct, kw_only=True):
    """The artifact store as polling sees it, and what waits to be written back to it."""

    reachable: bool | None  # None: not polled yet
    consecutive_failures: int
    poll_failures_total: int
    last_error: str | None = None
    last_ok_at: float | None = None
    last_failure_at: float | None = None
    landing_pending: int = 0  # records buffered for the landing zone
    landing_retrying: int = 0  # of which: whose write failed and is retried
    landing_last_error: str | None = None


class ReadyResponse(msgspec.Struct, kw_only=True):
    """``ready`` says whether this replica can answer; a store outage does not make it unready (it keeps
    serving its bundle), it shows in ``store`` and ``detail``."""

    ready: bool
    bundle_version: str | None = None
    detail: str | None = None
    store: StoreStatus | None = None
    #: which worker process answered (``relevance serve --workers N`` runs N, each with its own bundle copy)
    worker: int | None = None
