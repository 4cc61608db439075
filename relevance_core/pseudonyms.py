"""Keyed, stable pseudonyms for user ids.

The service writes pseudonyms, never the ids it was given, to logs, impressions and the landing zone
(an HMAC: stable for one key, so a user's impressions and live events still join up; not reversible
without the key). Erasure needs the same mapping to find those rows, so both use this one class.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

log = logging.getLogger(__name__)


class Pseudonymizer:
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


def pseudonyms(user_ids: list[str], key: str | None) -> list[str]:
    """The ids the service wrote for these users with ``key`` (empty without a key: a random key's
    pseudonyms cannot be reproduced)."""
    if not key:
        return []
    p = Pseudonymizer(key)
    return [p(u) for u in user_ids]
