"""Write/admin authorisation, pseudonymisation of user ids, and input limits.

- Write and admin endpoints carry a guard that compares the presented token with the configured one in
  constant time (``hmac.compare_digest``): a plain ``==`` leaks the matching prefix length through
  timing. The token is read from ``Authorization: Bearer <token>`` or ``X-API-Token``.
- Outside dev mode the app refuses to start write endpoints without a token
  (:meth:`~relevance_service.settings.ServiceSettings.check_startable`); in dev mode they are open and
  the app logs that loudly.
- User ids never appear in logs or in the landing zone as given:
  :class:`~relevance_core.pseudonyms.Pseudonymizer` maps them to a
  keyed HMAC (stable for one key, so impressions and live events of one user still join up; not
  reversible without the key).
- A per-client rate limit (``RELEVANCE_RATE_LIMIT``, e.g. ``100/second``; off by default) is Litestar's
  ``RateLimitMiddleware`` keyed by the client address, with the 429 made explicit: a detail naming the
  limit and a ``Retry-After`` header (Litestar sends only the ``RateLimit-*`` draft headers). Behind a
  proxy the client address is the one uvicorn derives from ``X-Forwarded-For`` for the proxies listed in
  ``FORWARDED_ALLOW_IPS`` (default 127.0.0.1); without that every client would share the proxy's budget.
  Litestar's limiter is a fixed window that keeps one timestamp per request in the window, so keep the
  count per window modest (per-second limits rather than large per-minute ones).
"""

from __future__ import annotations

import hmac
import logging
import time

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware

from relevance_service.settings import ServiceSettings

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-api-token"


def presented_token(connection: ASGIConnection) -> str | None:
    auth = connection.headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return connection.headers.get(TOKEN_HEADER)


def require_token(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard of every write/admin route: the presented token must equal the app's, in constant time."""
    settings: ServiceSettings = connection.app.state.service.settings
    expected = (settings.api_token or "").encode()
    if not expected:  # dev mode without a token: open (create_app refuses this outside dev mode)
        return
    got = (presented_token(connection) or "").encode()
    if not hmac.compare_digest(got, expected):
        raise NotAuthorizedException("a valid API token is required (Authorization: Bearer <token>)")


#: Never rate limited: liveness/readiness probes and the metrics scraper must see an overloaded replica.
RATE_LIMIT_EXEMPT = ["^/healthz$", "^/readyz$", "^/metrics$"]
SWEEP_EVERY_S = 60.0


class ClientRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's limiter with a clear 429 (detail + ``Retry-After``) and a periodic sweep of expired
    per-client entries (the memory store only drops an entry when that client comes back)."""

    _next_sweep = 0.0

    async def __call__(self, scope, receive, send) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_S
            store = self.config.get_store_from_app(scope["litestar_app"])
            sweep = getattr(store, "delete_expired", None)
            if sweep is not None:
                await sweep()
        try:
            await super().__call__(scope, receive, send)
        except TooManyRequestsException as e:
            headers = dict(e.headers or {})
            if str(e.detail) != "Too Many Requests" or "Retry-After" in headers:
                raise  # not the limiter's own (a handler's): leave it alone
            reset = headers.get(self.config.rate_limit_reset_header_key, "1")
            retry_after = str(max(1, int(reset))) if str(reset).lstrip("-").isdigit() else "1"
            raise TooManyRequestsException(
                detail=(
                    f"rate limit exceeded: at most {self.max_requests} requests per {self.unit} per client; "
                    f"retry after {retry_after} s"
                ),
                headers={**headers, "Retry-After": retry_after},
            ) from None


def rate_limit_config(settings: ServiceSettings) -> RateLimitConfig | None:
    rule = settings.rate_limit_rule
    if rule is None:
        return None
    return RateLimitConfig(
        rate_limit=rule,  # type: ignore[arg-type]
        exclude=RATE_LIMIT_EXEMPT,
        middleware_class=ClientRateLimitMiddleware,
    )
