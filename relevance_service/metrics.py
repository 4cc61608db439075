"""Prometheus metrics of one app instance (``GET /metrics``).

Each app gets its own ``CollectorRegistry`` instead of the process-global default, so tests (and a bench
that starts several apps in one process) never collide on "duplicated timeseries". With several uvicorn
workers each worker exposes its own numbers; scrape them per worker or run one worker per replica.

Latency is recorded by a raw ASGI middleware keyed by the *route template*
(``/v1/users/{user_id}/recommendations``), never the concrete path: user ids must not become label
values (cardinality, and privacy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Buckets for a service whose target is p99 ≤ 10 ms.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "relevance_request_latency_seconds",
            "Request latency by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "relevance_requests_total",
            "Requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.filtered = Counter(
            "relevance_candidates_filtered_total",
            "Candidates removed by each business rule",
            ["rule"],
            registry=r,
        )
        self.recommendations = Counter(
            "relevance_recommendations_total", "Served slates by strategy", ["strategy"], registry=r
        )
        self.widened = Counter(
            "relevance_search_widened_total",
            "Searches widened because filters left a short page",
            ["stage"],
            registry=r,
        )
        self.bundle_info = Gauge(
            "relevance_bundle_info", "1 for the bundle version being served", ["version"], registry=r
        )
        self.bundle_loaded_at = Gauge(
            "relevance_bundle_loaded_timestamp_seconds", "When the serving bundle was swapped in", registry=r
        )
        self.bundle_items = Gauge("relevance_bundle_items", "Items in the serving bundle's index", registry=r)
        self.reloads = Counter("relevance_bundle_reloads_total", "Successful bundle swaps", registry=r)
        self.reload_failures = Counter(
            "relevance_bundle_reload_failures_total",
            "Bundles refused (corrupt, unloadable, failed smoke query)",
            registry=r,
        )
        self.store_failures = Counter(
            "relevance_store_poll_failures_total",
            "Polls of the artifact store (reading LATEST, downloading a bundle) that failed to reach it",
            registry=r,
        )
        self.store_reachable = Gauge(
            "relevance_store_reachable", "1 when the last poll of the artifact store reached it", registry=r
        )
        self.live_items = Gauge("relevance_live_items", "Listings in the live overlay", registry=r)
        self.connections_shed = Counter(
            "relevance_connections_shed_total",
            "Keep-alive connections this worker asked to reconnect (Connection: close) while it held more "
            "than its share (relevance serve --workers N)",
            registry=r,
        )
        self.events = Counter(
            "relevance_events_total", "Real-time events accepted", ["event_type"], registry=r
        )
        self.landing_records = Counter(
            "relevance_landing_records_total", "Records written to the landing zone", ["kind"], registry=r
        )
        self.landing_dropped = Counter(
            "relevance_landing_dropped_total",
            "Records dropped (queue full or write failed)",
            ["kind"],
            registry=r,
        )
        self.landing_write_failures = Counter(
            "relevance_landing_write_failures_total",
            "Landing-zone file writes that failed (their records are kept and retried)",
            ["kind"],
            registry=r,
        )
        self.landing_pending = Gauge(
            "relevance_landing_pending_records",
            "Records buffered for the landing zone (retries included)",
            registry=r,
        )
        self.users = Gauge("relevance_user_state_users", "Users with recent history held", registry=r)
        self.user_state_errors = Counter(
            "relevance_user_state_errors_total",
            "Shared user-state store calls that failed (reads answered without history)",
            ["op"],
            registry=r,
        )
        self._version: str | None = None
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric, *values: str):
        """``metric.labels(*values)``, remembered: prometheus_client validates and locks on every
        ``labels`` call (~8 µs), and a request touches four or five. Only for label sets that are never
        removed (not ``bundle_info``)."""
        key = (id(metric), values)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*values)
        return c

    def set_bundle(self, version: str, n_items: int) -> None:
        if self._version is not None and self._version != version:
            self.bundle_info.remove(self._version)
        self.bundle_info.labels(version=version).set(1)
        self._version = version
        self.bundle_loaded_at.set(time.time())
        self.bundle_items.set(n_items)

    def count_filtered(self, counts: dict[str, int]) -> None:
        for rule, n in counts.items():
            self.child(self.filtered, rule).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


access_log = logging.getLogger("relevance_service.access")


class MetricsMiddleware:
    """Raw ASGI middleware: latency + status per route template (cheaper than Litestar's hooks).

    With ``access_log`` it also writes one line per request to the ``relevance_service.access`` logger:
    method, route *template*, status, milliseconds and the pseudonymised ``user_id`` path parameter. Never
    the concrete path or query (they hold user ids), never headers (the token), never the client address.
    uvicorn's own access log stays off (``relevance serve``) because its request line is the raw path.
    """

    def __init__(
        self,
        app,
        metrics: ServiceMetrics,
        access_log: bool = False,
        pseudonymize: Callable[[str | None], str | None] | None = None,
    ):
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.pseudonymize = pseudonymize

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as e:
            # raised by an inner middleware (e.g. the rate limiter's 429); Litestar's outer exception
            # handler turns it into the response, so count the status it will send
            status = getattr(e, "status_code", 500)
            raise
        finally:
            route = scope.get("path_template") or "unmatched"
            method = scope.get("method", "")
            elapsed = time.perf_counter() - t0
            m = self.metrics
            m.child(m.latency, route, method).observe(elapsed)
            m.child(m.requests, route, method, str(status)).inc()
            if self.access_log:
                user = (scope.get("path_params") or {}).get("user_id")
                user = self.pseudonymize(str(user)) if user is not None and self.pseudonymize else None
                access_log.info(
                    "%s %s %d %.1fms%s",
                    method,
                    route,
                    status,
                    1000 * elapsed,
                    f" user={user}" if user else "",
                )
