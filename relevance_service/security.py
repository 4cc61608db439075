"""Write/admin authorisation, pseudonymisation of user ids, and input limits.

- Write and admin endpoints carry a guard that compares the presented token with the configured one in
  constant time (``hmac.compare_digest``): a plain ``==`` leaks the matching prefix length through
  timing. The token is read from ``Authorization: Bearer <token>`` or ``X-API-Token``.
- Outside dev mode the app refuses to start write endpoints without a token
  (:meth:`~relevance_service.settings.ServiceSettings.check_startable`); in dev mode they are open and
  the app logs that loudly.
- User ids never appear in logs or in the landing zone as given: :class:`Pseudonymizer` maps them to a
  keyed HMAC (stable for one key, so impressions and live events of one user still join up; not
  reversible without the key).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

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


class Pseudonymizer:
    """Keyed, stable pseudonyms for user ids (logs, impressions, landing events)."""

    def __init__(self, key: str | None):
        if not key:
            key = secrets.token_hex(16)
            log.warning(
                "RELEVANCE_PSEUDONYM_KEY is not set: user pseudonyms change on every restart "
                "(set it so impressions from different runs join up)"
            )
        self._key = key.encode()
        self._cache: dict[str, str] = {}

    def __call__(self, user_id: str | None) -> str | None:
        if user_id is None:
            return None
        p = self._cache.get(user_id)
        if p is None:
            p = "u_" + hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:20]
            if len(self._cache) < 100_000:
                self._cache[user_id] = p
        return p
