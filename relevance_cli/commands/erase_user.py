"""``relevance erase-user ID... [--retrain] [--service-url URL --token T]``: the right to erasure, from a shell.

Removes the users' events from every store derived from them (landing files, raw_events, quarantine,
sessions, training_pairs, the warehouse, generator truth: ``relevance_core.erasure``), verifies, and
writes a receipt ``erasure/receipts/<timestamp>-<hash>.json`` that holds no personal data.

* ``--service-url``: first asks the running service to forget the users' recent history and drop their
  not-yet-flushed landing rows (``POST /v1/admin/erase-users``, token-guarded), so nothing of theirs is
  written back after the lake is cleaned. The token comes from ``--token`` or ``RELEVANCE_API_TOKEN``.
* ``--pseudonym-key`` (default ``RELEVANCE_PSEUDONYM_KEY``): the service lands its live events and
  impressions under keyed pseudonyms; with the key, those rows are erased too.
* ``--retrain``: the model has no per-user parameter, but it was fitted on the users' training pairs;
  this launches ``dagster asset materialize`` of the retrain selection (the dbt aggregates and
  ``two_tower_model`` with everything downstream), so the next published bundle never saw them.

The user ids are never printed or logged; the output names the receipt and the counts.
Exit status: 0 done, 1 erasure incomplete / service refused, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from relevance_core.erasure_requests import erase_in_service, retrain_selection
from relevance_core.pseudonyms import pseudonyms


def retrain_command() -> list[str]:
    """The documented retrain command (docs/reliability.md), with this interpreter's ``dagster``."""
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    if not os.path.exists(dagster):
        dagster = "dagster"
    return [
        dagster,
        "asset",
        "materialize",
        "-m",
        "relevance_assets.definitions",
        "--select",
        retrain_selection(),
    ]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "erase-user",
        help="erase users' events from every store (right to erasure) and write a receipt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("user_ids", nargs="*", metavar="ID", help="user id(s) to erase")
    p.add_argument("--ids-file", default=None, help="file with one user id per line (keeps ids out of `ps`)")
    p.add_argument("--home", default=None, help="store URI (default: RELEVANCE_HOME)")
    p.add_argument("--retrain", action="store_true", help="then retrain the model and republish the bundle")
    p.add_argument("--service-url", default=None, help="also erase the users' state in this running service")
    p.add_argument("--token", default=None, help="the service's API token (default: RELEVANCE_API_TOKEN)")
    p.add_argument(
        "--pseudonym-key",
        default=None,
        help="the service's RELEVANCE_PSEUDONYM_KEY, to erase its pseudonymised rows too (default: env)",
    )
    p.add_argument("--json", action="store_true", help="print the receipt as JSON")
    p.set_defaults(func=run)


def _ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.user_ids)
    if args.ids_file:
        with open(args.ids_file, encoding="utf-8") as f:
            ids += [line.strip() for line in f if line.strip()]
    return sorted({i.strip() for i in ids if i.strip()})


def run(args: argparse.Namespace) -> int:
    from relevance_core.erasure import ErasureIncompleteError, erase_users
    from relevance_core.settings import relevance_home
    from relevance_core.storage import store_from_uri

    ids = _ids(args)
    if not ids:
        print("nothing to do: give at least one user id (or --ids-file)")
        return 2
    store = store_from_uri(args.home or relevance_home())
    key = args.pseudonym_key if args.pseudonym_key is not None else os.environ.get("RELEVANCE_PSEUDONYM_KEY")
    aliases = pseudonyms(ids, key)
    extra: dict = {"retrain": "requested" if args.retrain else "not_requested", "via": "cli"}
    if args.service_url:
        token = args.token or os.environ.get("RELEVANCE_API_TOKEN")
        extra["service"] = erase_in_service(args.service_url, token, ids)
    else:
        extra["service"] = {"status": "not_requested"}
    rc = 0
    try:
        result = erase_users(store, ids, aliases=aliases, extra=extra)
    except ErasureIncompleteError as e:
        print(f"erasure incomplete: {e}")
        return 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(result.rows_removed.items()))
    if args.json:
        print(store.read_text(result.receipt_key))
    else:
        print(
            f"erased {len(ids)} user(s): {result.total_removed} rows removed ({summary}); "
            f"verified 0 remaining; receipt {result.receipt_key}"
        )
    service = extra["service"]
    if args.service_url and service.get("status") != "ok":
        print(
            f"service erasure NOT done ({json.dumps(service)}): the service may still hold the users' recent "
            f"history until it expires or restarts"
        )
        rc = 1
    if args.retrain:
        cmd = retrain_command()
        print("retraining: " + " ".join(cmd))
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            print(f"retrain failed (exit {done.returncode}); the erasure itself is complete")
            rc = rc or 1
    return rc
