"""The Litestar application factory: ``create_app(settings)`` wires a
:class:`~relevance_service.service.Service` to its routes, middleware and OpenAPI docs.

Access: a per-client rate limit (``rate_limit``, Litestar's ``RateLimitMiddleware``; probes
and ``/metrics`` are exempt), CORS only for the origins in ``cors_allow_origins`` (none by default: no
``Access-Control-*`` header at all), and no token or raw user id in any log line (the optional access log
names route templates and pseudonyms, never paths).

Request handlers are ``async`` and compute inline on the event loop: the work per request is ~1 ms of
CPU that releases the GIL only partly, and a thread hop per request would cost more than it saves on a
2-core machine. Scale-out is more workers/replicas (state then belongs in a shared user-state store).
"""

from __future__ import annotations

import logging
from pathlib import Path

from litestar import Litestar, MediaType, Request, Response, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

from relevance_core.storage import ArtifactStore
from relevance_service import connection_balance
from relevance_service.connection_balance import ConnectionBalanceMiddleware
from relevance_service.metrics import MetricsMiddleware
from relevance_service.security import rate_limit_config
from relevance_service.service import Service
from relevance_service.settings import ServiceSettings, get_settings
from relevance_service.user_state import UserStateStore

log = logging.getLogger("relevance_service")

API_VERSION = "1.0.0"


def configure_logging(settings: ServiceSettings) -> None:
    if not log.handlers and not logging.getLogger().handlers:
        # under uvicorn only its own loggers are configured; make ours visible too
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # Litestar may configure the root logger later: print once, not twice
    if settings.log_level:
        log.setLevel(getattr(logging, settings.log_level.upper()))


#: where the docs UI's Swagger files are served from: the service ships them (``swagger-ui-bundle``), so
#: ``/docs`` works without internet access (Litestar's default loads them from a CDN)
DOCS_ASSETS = "/docs/assets"


def docs_assets_router() -> Router:
    from swagger_ui_bundle import swagger_ui_path

    return create_static_files_router(
        path=DOCS_ASSETS,
        directories=[Path(str(swagger_ui_path))],
        name="docs-assets",
        include_in_schema=False,
    )


def _service_dependency(state: State) -> Service:
    return state.service


def _too_deep(request: Request, exc: RecursionError) -> Response:
    """A JSON body nested deeper than the decoder's recursion limit (e.g. 20,000 ``[``) is the client's
    fault: a 400 that says so, not a 500."""
    return Response(
        {"status_code": 400, "detail": "request body is nested too deeply"},
        status_code=400,
        media_type=MediaType.JSON,
    )


def create_app(
    settings: ServiceSettings | None = None,
    *,
    store: ArtifactStore | None = None,
    user_state: UserStateStore | None = None,
) -> Litestar:
    """Build the app. Raises :class:`~relevance_service.settings.SettingsError` when write endpoints
    would start without a token outside dev mode."""
    settings = settings or get_settings()
    settings.check_startable()
    configure_logging(settings)
    if settings.dev_mode and settings.write_endpoints and not settings.api_token:
        log.warning("DEV MODE: write and admin endpoints are open to anyone (no RELEVANCE_API_TOKEN)")
    service = Service(settings, store=store, user_state=user_state)
    return Litestar(
        route_handlers=_route_handlers(settings),
        dependencies={"svc": Provide(_service_dependency, sync_to_thread=False)},
        lifespan=[service.lifespan],
        state=State({"service": service}),
        middleware=_middleware(service),
        cors_config=_cors(settings),
        openapi_config=_openapi(),
        request_max_body_size=settings.max_body_bytes,
        exception_handlers={RecursionError: _too_deep},
        debug=False,
    )


def _route_handlers(settings: ServiceSettings) -> list:
    """Reads always; the write and admin controllers only where writes are allowed (a read-only replica
    has no such routes at all, so no token mistake can open them)."""
    from relevance_service.controllers import admin, events, health, items, recommendations
    from relevance_service.explorer import explorer_router

    handlers: list = [
        health.HealthController,
        recommendations.RecommendationController,
        items.ItemReadController,
        admin.BundleController,
    ]
    if settings.writes_allowed:
        handlers += [events.EventController, items.ItemWriteController, admin.AdminController]
    return [*handlers, explorer_router(), docs_assets_router()]


def _middleware(service: Service) -> list:
    """Outermost first: metrics (and the access log) see every answer, 429s and shed connections included."""
    settings = service.settings
    middleware: list = [
        DefineMiddleware(
            MetricsMiddleware,
            metrics=service.metrics,
            access_log=settings.access_log,
            pseudonymize=service.pseudonymize,
        )
    ]
    if connection_balance.current is not None:  # one of several workers (relevance serve --workers N)
        middleware.append(
            DefineMiddleware(
                ConnectionBalanceMiddleware,
                share=connection_balance.current,
                shed=service.metrics.connections_shed.inc,
            )
        )
    limit = rate_limit_config(settings)
    if limit is not None:
        middleware.append(limit.middleware)
    return middleware


def _cors(settings: ServiceSettings) -> CORSConfig | None:
    """None (no ``Access-Control-*`` header at all) unless origins are configured."""
    if not settings.cors_allow_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_allow_origins),
        allow_methods=["GET", "POST", "PUT", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-API-Token"],
        allow_credentials=False,
        expose_headers=["X-Bundle-Version", "X-Request-Id", "Retry-After"],
        max_age=600,
    )


def _openapi() -> OpenAPIConfig:
    """Swagger UI from the files the service ships (:data:`DOCS_ASSETS`), so ``/docs`` works offline."""
    return OpenAPIConfig(
        title="relevance",
        version=API_VERSION,
        description="Personalised recommendations, similar items, real-time events and live listings.",
        path="/docs",
        render_plugins=[
            SwaggerRenderPlugin(
                path="/",
                js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
            ),
            JsonRenderPlugin(path="/openapi.json"),
        ],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="RELEVANCE_API_TOKEN")
            }
        ),
        use_handler_docstrings=True,
    )
