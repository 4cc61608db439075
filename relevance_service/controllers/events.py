"""``POST /v1/events``: batched real-time interactions that update users' recent history at once."""

from __future__ import annotations

import time
from collections import defaultdict

from litestar import Controller, post
from litestar.exceptions import ServiceUnavailableException

from relevance_service.controllers._common import field_error
from relevance_service.schemas import EventsRequest, EventsResponse
from relevance_service.security import require_token
from relevance_service.service import Service
from relevance_service.user_state import HistoryEntry, UserStateUnavailable


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]
    security = [{"bearer": []}]
    guards = [require_token]

    @post("/", summary="Record real-time events", status_code=202)
    async def record(self, svc: Service, data: EventsRequest) -> EventsResponse:
        """Appends each event to its user's stored history before answering, so the very next
        recommendation request reflects it; also writes the events to the landing zone (pseudonymised)
        so the next bundle is trained on them."""
        limit = svc.settings.max_events_per_batch
        if len(data.events) > limit:
            raise field_error("events", f"at most {limit} events per batch")
        now = time.time()
        per_user: dict[str, list[HistoryEntry]] = defaultdict(list)
        rows = []
        for ev in data.events:
            ts = ev.timestamp.timestamp() if ev.timestamp is not None else now
            if ev.user_id is not None:
                per_user[ev.user_id].append(HistoryEntry(ev.item_id, str(ev.event_type), ts))
            rows.append(
                {
                    "user_id": svc.pseudonymize(ev.user_id),
                    "session_id": ev.session_id,
                    "item_id": ev.item_id,
                    "event_type": str(ev.event_type),
                    "timestamp": ts,
                    "device_type": ev.device_type,
                }
            )
            svc.metrics.child(svc.metrics.events, str(ev.event_type)).inc()
        # landing first: if the user state is unreachable the events are still kept for training
        svc.writer.log_events(rows)
        try:
            for user_id, entries in per_user.items():
                await svc.user_state.append_async(user_id, entries, now=max(now, max(e.ts for e in entries)))
        except UserStateUnavailable as e:
            svc.metrics.user_state_errors.labels(op="write").inc()
            raise ServiceUnavailableException(
                f"{e}; the events were recorded for training but recommendations do not reflect them yet"
            ) from e
        return EventsResponse(accepted=len(rows), users_updated=len(per_user))
