"""``relevance <command>``. Each module in ``relevance_cli.commands`` adds one sub-command; each module in
the top-level ``bench`` package adds one ``relevance bench <name>``. Modules are discovered, so adding a
command never means editing this file."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys


def _discover(package_name: str):
    pkg = importlib.import_module(package_name)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield info.name, importlib.import_module(f"{package_name}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relevance", description=__doc__)
    parser.add_argument("--version", action="version", version=f"relevance {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for _name, module in _discover("relevance_cli.commands"):
        module.register(sub)
    bench = sub.add_parser("bench", help="benchmarks: each prints one JSON object as its last line")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name, module in _discover("bench"):
        if not hasattr(module, "run"):
            continue
        p = bench_sub.add_parser(name.replace("_", "-"), help=(module.__doc__ or "").strip().split("\n")[0])
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
        p.set_defaults(func=_bench_runner(module))
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relevance")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _bench_runner(module):
    def run(args) -> int:
        result = module.run(args)
        print(json.dumps(result, default=str))
        return 0

    return run


def main(argv: list[str] | None = None) -> int:
    """Every failure exits non-zero: argparse's usage errors with 2, a command's own failure with its
    code, an exception with 1 (its traceback is the report), an interrupt with 130."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("relevance: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
