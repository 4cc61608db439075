"""The entry point the device scripts share: parse, run, print one JSON line and also leave it in
``$OUT/<name>.json``, the folder the lent GPU machine copies back (stdout is cut to its tail there)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def device_main(
    name: str,
    doc: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], dict[str, Any]],
    argv: list[str] | None = None,
    *,
    gate: bool = True,
) -> int:
    """Exit status 1 when ``gate`` and the result is not ``ok`` (the script's own checks failed)."""
    p = argparse.ArgumentParser(prog=f"bench/{name}.py", description=(doc or "").split("\n")[0])
    add_arguments(p)
    result = run(p.parse_args(argv))
    line = json.dumps(result, default=str)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / f"{name}.json").write_text(line + "\n")
    print(line)
    return 0 if not gate or result.get("ok") else 1
