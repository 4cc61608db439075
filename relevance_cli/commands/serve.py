"""``relevance serve``: run the recommendation API under uvicorn.

Settings come from ``RELEVANCE_*`` environment variables (``relevance_service.settings``); the flags here
only set the few that differ per invocation. Each uvicorn worker is a separate process with its own
bundle copy, user state and metrics: with ``--workers`` > 1 use a shared user-state store, or route each
user to one worker. The access log is off because its request lines contain raw user ids; the service
logs pseudonymised ids itself.
"""

from __future__ import annotations

import os


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the recommendation API (Litestar under uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--home", default=None, help="artifact store (default RELEVANCE_HOME or ./.relevance)")
    p.add_argument("--dev", action="store_true", help="dev mode: write/admin endpoints open without a token")
    p.add_argument("--poll-interval", type=float, default=None, help="seconds between LATEST polls")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run)


def run(args) -> int:
    import uvicorn

    from relevance_service.settings import ServiceSettings

    if args.home:
        os.environ["RELEVANCE_HOME"] = args.home
    if args.dev:
        os.environ["RELEVANCE_DEV_MODE"] = "1"
    if args.poll_interval is not None:
        os.environ["RELEVANCE_POLL_INTERVAL_S"] = str(args.poll_interval)
    # fail here, with the reason, rather than in every worker
    ServiceSettings.from_env().check_startable()
    uvicorn.run(
        "relevance_service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level=args.log_level,
        loop="auto",
        http="auto",
        timeout_graceful_shutdown=10,
    )
    return 0
