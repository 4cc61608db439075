"""``relevance rollback [VERSION]``: make an earlier bundle current by rewriting ``artifacts/LATEST``.

Without VERSION it goes back to the newest intact bundle older than the live one (a corrupt one is
skipped). The bundle is verified (checksums) before LATEST moves, so a rollback cannot put a broken
artifact in front of users. Running services pick the change up on their next poll, no restart.
``--list`` shows the kept bundles and which one is live.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("rollback", help="make an earlier bundle current (LATEST)", description=__doc__)
    p.add_argument("version", nargs="?", default=None, help="bundle version (default: the previous one)")
    p.add_argument("--home", default=None, help="store URI (default: RELEVANCE_HOME)")
    p.add_argument("--list", action="store_true", help="list bundles and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from relevance_core import bundle as B
    from relevance_core.settings import relevance_home
    from relevance_core.storage import store_from_uri

    store = store_from_uri(args.home or relevance_home())
    live = B.latest_version(store)
    if args.list:
        versions = B.list_versions(store)
        if not versions:
            print(f"no bundles in {store.base_uri}")
        for v in versions:
            print(("* " if v == live else "  ") + v)
        return 0
    try:
        new = B.rollback(store, args.version)
    except B.BundleError as e:
        print(f"rollback refused: {e}")
        return 1
    print(f"LATEST: {live} -> {new}")
    return 0
