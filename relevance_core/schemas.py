"""Canonical records shared by every part of relevance.

The msgspec Structs are the wire/validation form (API, landing JSONL); the Arrow schemas are the lake form.
Both are declared here, side by side, so a field cannot be added to one and forgotten in the other
(``tests/unit/test_schemas.py`` checks that they agree).
"""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec
import pyarrow as pa


class EventType(enum.StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_FAVORITES = "add_to_favorites"
    ADD_TO_CART = "add_to_cart"
    CONTACT_SELLER = "contact_seller"
    PURCHASE = "purchase"
    IMPRESSION = "impression"


#: Default weight per event type: how much an interaction says about intent. Flows into training labels,
#: evaluation gains and serving. ``impression`` is 0: an item shown and not acted on is a real negative.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    EventType.VIEW: 1.0,
    EventType.CLICK: 2.0,
    EventType.ADD_TO_FAVORITES: 4.0,
    EventType.ADD_TO_CART: 4.0,
    EventType.CONTACT_SELLER: 8.0,
    EventType.PURCHASE: 10.0,
    EventType.IMPRESSION: 0.0,
}

EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)
#: Stable small integer code per event type (0 is reserved for padding in model inputs).
EVENT_TYPE_CODES: dict[str, int] = {name: i + 1 for i, name in enumerate(EVENT_TYPES)}


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One interaction. ``user_id`` may be None (anonymous); ``session_id`` may be None (then sessions are
    cut by an inactivity gap per user)."""

    item_id: str
    event_type: EventType
    timestamp: datetime
    user_id: str | None = None
    session_id: str | None = None
    device_type: str | None = None


class Item(msgspec.Struct, frozen=True, kw_only=True):
    """One catalog listing."""

    item_id: str
    title: str
    description: str = ""
    category_path: str = ""
    price: float | None = None
    brand: str | None = None
    location: str | None = None
    condition: str | None = None
    image_url: str | None = None
    seller_id: str | None = None
    available: bool = True
    created_at: datetime | None = None


EVENT_COLUMNS: tuple[str, ...] = (
    "user_id",
    "session_id",
    "item_id",
    "event_type",
    "timestamp",
    "device_type",
)
ITEM_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "description",
    "category_path",
    "price",
    "brand",
    "location",
    "condition",
    "image_url",
    "seller_id",
    "available",
    "created_at",
)

TS = pa.timestamp("us", tz="UTC")

EVENT_ARROW_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=True),
        pa.field("session_id", pa.string(), nullable=True),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("timestamp", TS, nullable=False),
        pa.field("device_type", pa.string(), nullable=True),
    ]
)

ITEM_ARROW_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("category_path", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("brand", pa.string()),
        pa.field("location", pa.string()),
        pa.field("condition", pa.string()),
        pa.field("image_url", pa.string()),
        pa.field("seller_id", pa.string()),
        pa.field("available", pa.bool_()),
        pa.field("created_at", TS),
    ]
)

#: Quarantined rows keep the raw line/record as text plus why it was refused.
QUARANTINE_ARROW_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("reason", pa.string()),
    ]
)
