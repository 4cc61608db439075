"""The recommendation explorer: a static page at ``/explorer`` that talks to the service's public API only.

An engineer tuning a recommender wants to *see* a user's history next to what the system recommends and
why; the page is that view. It is plain HTML/CSS/JS served from this package's ``static/``
folder: no build step and no CDN, because the machines it runs on have no internet, and because a page
that only uses the public endpoints (``/v1/users/{id}/recommendations``, ``/v1/recommendations``,
``/v1/items/{id}/similar``, ``/v1/events``, ``/v1/bundle``) can never depend on internals that the API
does not promise.

The page is served with a strict Content-Security-Policy (same-origin scripts, styles and requests
only): the script already renders every piece of data with ``textContent``, and the policy makes an
injected ``<script>`` or inline handler inert even if a future edit slips.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response
from litestar.datastructures import CacheControlHeader
from litestar.router import Router
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent / "static"
PATH = "/explorer"

#: Everything the page needs comes from the service itself; ``data:`` is not needed (placeholders are
#: drawn with CSS), and framing is refused so the page cannot be click-jacked into sending events.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def explorer_router() -> Router:
    """The router that serves ``/explorer`` (``index.html``) and ``/explorer/<asset>``.

    ``no-cache`` makes browsers revalidate on every load, so a deploy of a new page version is picked up at
    once (the files are small and served with ETags). Excluded from the OpenAPI schema: it is a tool for
    people, not part of the API contract."""
    return create_static_files_router(
        path=PATH,
        directories=[STATIC_DIR],
        html_mode=True,
        name="explorer",
        include_in_schema=False,
        cache_control=CacheControlHeader(no_cache=True),
        after_request=_security_headers,
        tags=["explorer"],
    )


__all__ = ["CONTENT_SECURITY_POLICY", "PATH", "STATIC_DIR", "explorer_router"]
