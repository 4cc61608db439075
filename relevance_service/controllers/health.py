"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from relevance_service.app import Service
from relevance_service.schemas import HealthResponse, ReadyResponse


class HealthController(Controller):
    path = "/"
    tags = ["health"]

    @get("/healthz", summary="Liveness")
    async def healthz(self) -> HealthResponse:
        """The process is up and answering (says nothing about the bundle)."""
        return HealthResponse(status="ok")

    @get("/readyz", summary="Readiness", responses=None)
    async def readyz(self, svc: Service) -> Response[ReadyResponse]:
        """200 only while a bundle is loaded; 503 otherwise (keep the replica out of the load balancer)."""
        state = svc.serving
        if state is None:
            return Response(
                ReadyResponse(ready=False, detail=svc.reloader.last_error or "no bundle loaded"),
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response(ReadyResponse(ready=True, bundle_version=state.version), status_code=HTTP_200_OK)

    @get("/metrics", summary="Prometheus metrics", include_in_schema=True, media_type="text/plain")
    async def metrics(self, svc: Service) -> Response[bytes]:
        """Prometheus text exposition of this process's metrics."""
        svc.metrics.users.set(len(svc.user_state))
        return Response(svc.metrics.render(), media_type=svc.metrics.content_type)
