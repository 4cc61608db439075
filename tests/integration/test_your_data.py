"""``docs/your-data.md`` is the script of this test, so the page cannot drift from what works.

The walk test reads the page's marked blocks (``<!-- walk:run -->`` and friends) and does what a reader
does with them: runs the shell blocks in order (keeping their ``export`` lines, as one terminal would),
compares the output the page shows with the real output, starts the server with the page's command and
sends the page's two requests. Only what cannot be the same on a test machine is changed: the store is a
temporary folder instead of ``/tmp/relevance-shop``, ``.venv/bin/`` is the running interpreter's folder,
and the server gets a free port instead of 8000.

The cheap tests keep the rest honest: every ``relevance ...`` command line the page (and the README, which
points here) shows parses with the real CLI parser, and every ``RELEVANCE_*`` setting they name is read by
the code; every repository path and link the page names exists, and every snake_case name it puts in
backticks (checks, sensors, reasons, columns) occurs in the source. A placeholder (``relevance bench
<name>``, ``--workers N``) is a shape, not a command line, and is not parsed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "your-data.md"
DOC_PORT = "http://localhost:8000"
SOURCE_DIRS = ("relevance_core", "relevance_assets", "relevance_cli", "relevance_service", "bench")

_WALK = re.compile(r"<!-- walk:(\w+) -->\s*```[\w-]*\n(.*?)```", re.S)
_FENCE = re.compile(r"```[\w-]*\n(.*?)```", re.S)
_SPAN = re.compile(r"`([^`\n]+)`")


def walk_blocks(text: str) -> list[tuple[str, str]]:
    return [(kind, code) for kind, code in _WALK.findall(text)]


def _code_texts(text: str) -> list[str]:
    """Every fenced block's logical lines (backslash continuations joined) and every inline code span."""
    out = []
    for block in _FENCE.findall(text):
        out += block.replace("\\\n", " ").splitlines()
    out += _SPAN.findall(_FENCE.sub("", text))
    return out


def _relevance_commands(text: str) -> list[list[str]]:
    """The arguments of every ``relevance <sub> ...`` the page shows (``.venv/bin/relevance`` included)."""
    commands = []
    for line in _code_texts(text):
        for m in re.finditer(r"(?:^|[\s/])relevance\s+([a-z][^|;&#>`]*)", line):
            commands.append(shlex.split(m.group(1)))
    return commands


def _known_settings() -> set[str]:
    """Every ``RELEVANCE_*`` variable the code reads: the service's settings (one per field), the names
    read literally anywhere else (store, Spark, partitions, CLI) and dbt's ``env_var`` (the warehouse)."""
    import dataclasses

    from relevance_service.settings import ServiceSettings

    known = {f"RELEVANCE_{f.name.upper()}" for f in dataclasses.fields(ServiceSettings)}
    for d in SOURCE_DIRS:
        for p in (ROOT / d).rglob("*.py"):
            known |= set(re.findall(r"[\"'](RELEVANCE_[A-Z0-9_]+)[\"']", p.read_text()))
    for p in (ROOT / "dbt_project").glob("*.yml"):
        known |= set(re.findall(r"env_var\(\s*'(RELEVANCE_[A-Z0-9_]+)'", p.read_text()))
    return known


def _placeholder(argv: list[str]) -> bool:
    """``relevance bench <name>``, ``--workers N``: a shape, not a command line to parse."""
    return any("<" in a or re.fullmatch(r"[A-Z]", a) for a in argv)


def _assert_commands_and_settings_exist(text: str, where: str) -> list[list[str]]:
    """Every ``relevance ...`` line in ``text`` parses with the real CLI parser (an unknown command or flag
    is refused), and every ``RELEVANCE_*`` name is read by the code; returns the command lines."""
    from relevance_cli.main import build_parser

    parser = build_parser()
    commands = [c for c in _relevance_commands(text) if not _placeholder(c)]
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as e:  # argparse's way of refusing an unknown command or flag
            pytest.fail(f"{where} shows `relevance {shlex.join(argv)}`, which the CLI refuses ({e})")
    named = set(re.findall(r"RELEVANCE_[A-Z0-9_]+", text))
    unknown = sorted(named - _known_settings())
    assert not unknown, f"{where} names settings the code does not read: {unknown}"
    return commands


def _source_text() -> str:
    parts = []
    for d in (*SOURCE_DIRS, "dbt_project/models", "dbt_project/macros"):
        for p in sorted((ROOT / d).rglob("*")):
            if p.suffix in (".py", ".sql", ".yml"):
                parts.append(p.read_text())
    parts.append((ROOT / "dbt_project" / "dbt_project.yml").read_text())
    return "\n".join(parts)


def test_the_page_names_only_commands_settings_and_names_that_exist():
    text = DOC.read_text()
    commands = _assert_commands_and_settings_exist(text, "docs/your-data.md")
    assert {c[0] for c in commands} >= {"ingest", "demo", "serve"}, commands  # the patterns still find them
    assert "RELEVANCE_HOME" in text

    for span in _SPAN.findall(_FENCE.sub("", text)):
        if "/" in span and re.fullmatch(r"[\w./-]+\.(py|md|yml|yaml|csv|sql|toml)", span):
            assert (ROOT / span).exists(), f"docs/your-data.md names {span}, which does not exist"
    for link in re.findall(r"\]\(([^)#\s]+)", text):
        if "://" not in link:
            assert (DOC.parent / link).exists(), f"docs/your-data.md links {link}, which does not exist"

    source = _source_text()
    names = {
        s
        for s in _SPAN.findall(_FENCE.sub("", text))
        if re.fullmatch(r"[A-Za-z]\w*_\w*", s) and not s.startswith("RELEVANCE_")
    }
    missing = sorted(n for n in names if not re.search(rf"\b{re.escape(n)}\b", source))
    assert not missing, f"names in docs/your-data.md that occur nowhere in the source: {missing}"


def test_the_readme_names_only_commands_and_settings_that_exist():
    """The README's short version of the walk points at this page; a renamed flag must fail here too."""
    _assert_commands_and_settings_exist((ROOT / "README.md").read_text(), "README.md")


def test_the_example_files_are_what_make_examples_writes(tmp_path):
    """The committed files and their generator agree, so regenerating after a change shows the whole change
    (Parquet compared as a table: its bytes name the pyarrow version that wrote them)."""
    import importlib.util

    import pyarrow.parquet as pq

    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "examples" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(ROOT / "examples")
        for sub in ("catalog", "events")
        for p in (ROOT / "examples" / sub).rglob("*")
        if p.is_file()
    )
    assert fresh == committed
    for rel in fresh:
        if rel.suffix == ".parquet":
            assert pq.read_table(tmp_path / rel).equals(pq.read_table(ROOT / "examples" / rel)), rel
        else:
            assert (tmp_path / rel).read_bytes() == (ROOT / "examples" / rel).read_bytes(), rel


def _parse_curl(command: str, url: str) -> tuple[str, str, dict[str, str], str | None]:
    """(method, url, headers, body) of the page's ``curl`` line; only the flags the page uses."""
    argv = shlex.split(command.replace("\\\n", " ").replace(DOC_PORT, url))
    assert argv[0] == "curl", argv
    method, target, headers, body = "GET", None, {}, None
    it = iter(argv[1:])
    for a in it:
        if a == "-s":
            continue
        if a == "-X":
            method = next(it)
        elif a == "-H":
            k, _, v = next(it).partition(":")
            headers[k.strip()] = v.strip()
        elif a == "-d":
            body = next(it)
        elif a.startswith("http"):
            target = a
        else:
            raise AssertionError(f"curl flag {a!r} in docs/your-data.md is not understood by this test")
    assert target and target.startswith(url), (target, url)
    return method, target, headers, body


@pytest.mark.e2e
def test_the_your_data_walk_runs_as_documented(tmp_path):
    import httpx
    import pandas as pd
    from support.service_process import Server, free_port

    from relevance_core import bundle as B
    from relevance_core.storage import LocalStore

    blocks = walk_blocks(DOC.read_text())
    assert [k for k, _ in blocks] == "run output run output run serve request request".split(), blocks
    home = tmp_path / "relevance-shop"
    bindir = f"{Path(sys.executable).parent}/"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELEVANCE_", "DAGSTER_"))}
    env["PYTHONUNBUFFERED"] = "1"
    exports: list[str] = []

    def localise(code: str) -> str:
        code, n = re.subn(
            r"^export RELEVANCE_HOME=\S+", f"export RELEVANCE_HOME={shlex.quote(str(home))}", code, flags=re.M
        )
        assert n <= 1
        return code.replace(".venv/bin/", bindir)

    # -- the shell blocks, in order, each checked against the output the page shows after it ----------
    last_stdout = ""
    for kind, code in blocks:
        if kind == "run":
            code = localise(code)
            script = "\n".join(["set -euo pipefail", *exports, code])
            r = subprocess.run(
                ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=840
            )
            assert r.returncode == 0, f"{code}\nexit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            exports += [line for line in code.splitlines() if line.startswith("export ")]
            last_stdout = r.stdout
        elif kind == "output":
            got = [g.rstrip() for g in last_stdout.splitlines()]
            for line in filter(str.strip, code.splitlines()):
                assert line.rstrip() in got, (
                    f"the page shows\n  {line}\nbut the command printed\n{last_stdout}"
                )
    # what the reader's terminal holds after the blocks: the server below starts in it
    exported = dict(a.split("=", 1) for line in exports for a in shlex.split(line, comments=True)[1:])
    assert exported.get("RELEVANCE_HOME") == str(home), exports  # the walk ran in the temporary store
    store = LocalStore(home)
    live = B.latest_version(store)
    assert live is not None, "the walk's `relevance demo --skip-generate` published no bundle"

    # -- the page's serve command, on a free port ------------------------------------------------------
    (serve,) = [c for k, c in blocks if k == "serve"]
    argv = shlex.split(localise(serve).strip())
    assignments = {}
    while "=" in argv[0] and not argv[0].startswith("/"):
        k, _, v = argv.pop(0).partition("=")
        assignments[k] = v
    srv = Server.exact(argv, env | exported | assignments, tmp_path / "serve.log", free_port())
    url = srv.url
    try:
        srv.wait_ready()
        text = srv.log_path.read_text()
        assert "user state: seeded" in text and "older than the state TTL" not in text, text[-3000:]

        # -- the page's two requests: a known user and a guest, both served personally ------------------
        requests = [c for k, c in blocks if k == "request"]
        bodies = []
        for command in requests:
            method, target, headers, body = _parse_curl(command.strip(), url)
            resp = httpx.request(method, target, headers=headers, content=body, timeout=30)
            assert resp.status_code == 200, (command, resp.status_code, resp.text)
            bodies.append(resp.json())
        for command, body in zip(requests, bodies, strict=True):
            assert body["bundle_version"] == live, (command, body)
            assert body["strategy"] == "personalized", (command, body)
            assert len(body["items"]) == 5 and all(i["title"] and i["reason"] for i in body["items"]), body

        # the known user's recommendations leave out what they already interacted with (lake history)
        events = pd.read_parquet(home / "lake" / "raw_events")
        user = re.search(r"/v1/users/([^/]+)/", requests[0]).group(1)
        seen = set(events.loc[(events.user_id == user) & (events.event_type != "impression"), "item_id"])
        assert seen and not seen & {i["item_id"] for i in bodies[0]["items"]}, (seen, bodies[0])
        # the guest's posted history is left out too, and what comes back is about what they looked at
        import json

        posted = json.loads(_parse_curl(requests[1].strip(), url)[3])
        history = {h["item_id"] for h in posted["history"]}
        got = bodies[1]["items"]
        assert not history & {i["item_id"] for i in got}, got
        catalog = pd.read_parquet(home / "lake" / "items").set_index("item_id")
        wanted = set(catalog.loc[sorted(history), "category_path"])
        assert sum(i["category_path"] in wanted for i in got) >= 3, (wanted, got)
    finally:
        srv.stop()
