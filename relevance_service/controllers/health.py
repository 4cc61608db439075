"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import contextlib
import os

from litestar import Controller, Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from relevance_service.schemas import HealthResponse, ReadyResponse, StoreStatus
from relevance_service.service import Service
from relevance_service.user_state import UserStateUnavailable


class HealthController(Controller):
    path = "/"
    tags = ["health"]

    @get("/healthz", summary="Liveness")
    async def healthz(self) -> HealthResponse:
        """The process is up and answering (says nothing about the bundle)."""
        return HealthResponse(status="ok")

    @get("/readyz", summary="Readiness", responses=None)
    async def readyz(self, svc: Service) -> Response[ReadyResponse]:
        """200 once a bundle is loaded and the user state is seeded from the lake (or seeding ran past
        ``seed_ready_timeout_s``); 503 before (keep the replica out of the load balancer)."""
        state = svc.serving
        store = store_status(svc)
        if state is None:
            return Response(
                ReadyResponse(ready=False, detail=svc.reloader.last_error or "no bundle loaded", store=store),
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
            )
        seeding = svc.seeding_for()
        if seeding is not None:
            detail = f"seeding user state from the lake ({seeding:.0f}s so far)"
            return Response(
                ReadyResponse(ready=False, bundle_version=state.version, detail=detail, store=store),
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
            )
        notes = [svc.reloader.fallback] if svc.reloader.fallback else []
        if svc.seed_running:
            notes.append("user state still seeding from the lake")
        if store.reachable is False:
            notes.append(f"artifact store unreachable, serving {state.version}: {store.last_error}")
        return Response(
            ReadyResponse(
                ready=True,
                bundle_version=state.version,
                detail="; ".join(notes) or None,
                store=store,
                worker=os.getpid(),
            ),
            status_code=HTTP_200_OK,
        )

    @get("/metrics", summary="Prometheus metrics", include_in_schema=True, media_type="text/plain")
    async def metrics(self, svc: Service) -> Response[bytes]:
        """Prometheus text exposition of this process's metrics."""
        with contextlib.suppress(UserStateUnavailable):  # the gauge keeps its last value
            svc.metrics.users.set(len(svc.user_state))
        svc.metrics.landing_pending.set(svc.writer.pending)
        return Response(svc.metrics.render(), media_type=svc.metrics.content_type)


def store_status(svc: Service) -> StoreStatus:
    h = svc.reloader.store_health
    return StoreStatus(
        reachable=h.reachable,
        consecutive_failures=h.consecutive_failures,
        poll_failures_total=h.failures_total,
        last_error=h.last_error,
        last_ok_at=h.last_ok_at,
        last_failure_at=h.last_failure_at,
        landing_pending=svc.writer.pending,
        landing_retrying=svc.writer.retrying,
        landing_last_error=svc.writer.last_error,
    )
