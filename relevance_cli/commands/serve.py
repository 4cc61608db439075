"""``relevance serve``: run the recommendation API under uvicorn.

Settings come from ``RELEVANCE_*`` environment variables (``relevance_service.settings``); the flags here
only set the few that differ per invocation. Each worker is a separate process with its own bundle copy,
user state and metrics: with ``--workers`` > 1 use a shared user-state store, or route each user to one
worker. The access log is off because its request lines contain raw user ids; the service logs
pseudonymised ids itself.

Several workers each bind their own ``SO_REUSEPORT`` socket (Linux), so the kernel spreads new
connections over them at random. uvicorn's own ``--workers`` shares one listening socket, and whichever
process wakes first accepts: measured under ``relevance bench serve``, one of two workers held 34 of 42
keep-alive connections and queued while the other idled. A random hash is still uneven over a few dozen
keep-alive connections, so a worker holding more than its share sheds some
(``relevance_service.connection_balance``). A worker only listens once its bundle is loaded, so no
connection is pinned to a worker that cannot answer yet.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time

log = logging.getLogger("relevance.serve")


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the recommendation API (Litestar under uvicorn)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--home", default=None, help="artifact store (default RELEVANCE_HOME or ./.relevance)")
    p.add_argument(
        "--dev",
        action="store_true",
        help="dev mode: write/admin endpoints open without a token (the default when bound to loopback "
        "without RELEVANCE_API_TOKEN)",
    )
    p.add_argument("--poll-interval", type=float, default=None, help="seconds between LATEST polls")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (default info)",
    )
    p.set_defaults(func=run)


def serve_argv(
    port: int,
    *,
    host: str = "127.0.0.1",
    workers: int = 1,
    log_level: str = "warning",
    poll_interval: float | None = None,
) -> list[str]:
    """The command line that starts ``relevance serve`` in a child process (benchmarks, e2e tests)."""
    argv = [sys.executable, "-m", "relevance_cli.main", "serve", "--host", host, "--port", str(port)]
    argv += ["--workers", str(workers), "--log-level", log_level]
    if poll_interval is not None:
        argv += ["--poll-interval", str(poll_interval)]
    return argv


def _uvicorn_config(args) -> dict:
    return {
        "app": "relevance_service.app:create_app",
        "factory": True,
        "access_log": False,
        "log_level": args.log_level,
        "loop": "auto",
        "http": "auto",
        "timeout_graceful_shutdown": 10,
    }


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _banner(args, settings) -> str:
    where = f"http://{'localhost' if _is_loopback(args.host) else args.host}:{args.port}"
    if not settings.write_endpoints:
        mode = "read-only (write endpoints off)"
    elif settings.api_token:
        mode = "write/admin endpoints need the bearer token (RELEVANCE_API_TOKEN)"
    else:
        mode = "LOCAL DEV MODE: write/admin endpoints open without a token (set RELEVANCE_API_TOKEN for more)"
    return (
        f"relevance serve: {where}  (explorer {where}/explorer, API docs {where}/docs)\n"
        f"relevance serve: {mode}; store {settings.home}"
    )


def run(args) -> int:
    import uvicorn

    from relevance_service.settings import ServiceSettings, SettingsError

    if args.home:
        os.environ["RELEVANCE_HOME"] = args.home
    if args.dev:
        os.environ["RELEVANCE_DEV_MODE"] = "1"
    if args.poll_interval is not None:
        os.environ["RELEVANCE_POLL_INTERVAL_S"] = str(args.poll_interval)
    settings = ServiceSettings.from_env()
    if (
        settings.write_endpoints
        and not settings.api_token
        and "RELEVANCE_DEV_MODE" not in os.environ
        and _is_loopback(args.host)
    ):
        # only this machine can reach a loopback server: the first `relevance serve` after `make demo`
        # just works, and the banner says the endpoints are open; any other address still needs a token
        os.environ["RELEVANCE_DEV_MODE"] = "1"
        settings = ServiceSettings.from_env()
    try:
        # fail here, with the reason, rather than in every worker
        settings.check_startable()
    except SettingsError as e:
        print(f"relevance serve: {e}", file=sys.stderr)
        print(
            "relevance serve: e.g. RELEVANCE_API_TOKEN=$(openssl rand -hex 16) relevance serve --host "
            f"{args.host}, or relevance serve --dev to open them on purpose",
            file=sys.stderr,
        )
        return 2
    print(_banner(args, settings), flush=True)
    # Linux balances SO_REUSEPORT listeners; macOS/BSD hand every connection to one of them
    if args.workers > 1 and sys.platform.startswith("linux"):
        return _run_workers(args)
    uvicorn.run(host=args.host, port=args.port, workers=args.workers, **_uvicorn_config(args))
    return 0


def _reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(args, parent: int, counts, index: int) -> None:
    """One worker process: its own socket on the shared port; asyncio starts listening on it only
    after the app's lifespan (the bundle load) has finished. ``counts[index]`` is its slot in the
    workers' shared connection counts (``relevance_service.connection_balance``)."""
    import ctypes

    import uvicorn

    from relevance_service import connection_balance

    # die with the supervisor: a SIGKILLed supervisor must not leave workers serving on the port
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above took effect
        return
    sock = _reuseport_socket(args.host, args.port)
    server = uvicorn.Server(uvicorn.Config(**_uvicorn_config(args)))
    connection_balance.install(
        connection_balance.ConnectionShare(counts, index, lambda: len(server.server_state.connections))
    )
    server.run(sockets=[sock])


def _run_workers(args) -> int:
    """Start ``args.workers`` processes, restart any that dies, stop them all on SIGINT/SIGTERM."""
    import multiprocessing as mp

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    # bind once here so a port already in use fails at once, with the reason, instead of in every worker
    _reuseport_socket(args.host, args.port).close()
    ctx = mp.get_context("spawn")
    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # each worker's open connections, so one holding more than its share can shed some
    counts = ctx.Array("i", args.workers, lock=False)

    def start(i: int):
        counts[i] = 0  # a replaced worker's connections died with it
        p = ctx.Process(target=_worker, args=(args, os.getpid(), counts, i), daemon=False)
        p.start()
        return p

    procs = [start(i) for i in range(args.workers)]
    log.info("started %d workers on %s:%d (SO_REUSEPORT)", args.workers, args.host, args.port)
    restarts: list[float] = []
    while not stopping:
        time.sleep(0.5)
        for i, p in enumerate(procs):
            if stopping or p.is_alive():
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > 3 * args.workers:
                log.error("workers keep dying (exit code %s): giving up", p.exitcode)
                stopping = True
                break
            log.warning("worker %d exited with code %s; starting a new one", p.pid, p.exitcode)
            procs[i] = start(i)
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)  # uvicorn's graceful shutdown: in-flight requests finish
    deadline = time.monotonic() + 20
    for p in procs:
        p.join(timeout=max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    # uvicorn re-raises the SIGTERM it shut down on, so a clean worker ends with -SIGTERM
    return 0 if all(p.exitcode in (0, -signal.SIGTERM) for p in procs) else 1
