"""The ``relevance`` command's conventions: help on every flag, ``--version``, clean failures."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relevance_cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _options(parser: argparse.ArgumentParser, name: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _options(p, f"{name} {sub}")
        elif action.dest != "help":
            yield name, action


def test_every_flag_and_argument_has_help():
    missing = [
        f"{cmd} {'/'.join(a.option_strings) or a.dest}"
        for cmd, a in _options(build_parser(), "relevance")
        if not a.help and not isinstance(a, argparse._VersionAction)
    ]
    assert missing == []


def test_version_is_the_installed_packages():
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--version"])
    assert e.value.code == 0
    out = subprocess.run(
        [sys.executable, "-m", "relevance_cli.main", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and out.stdout.strip() == f"relevance {version('relevance')}"


def _run(args: list[str], env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELEVANCE_")}
    clean["RELEVANCE_HOME"] = str(tmp_path / "home")
    return subprocess.run(
        [sys.executable, "-m", "relevance_cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean | env,
        timeout=120,
    )


def test_serve_on_a_public_address_without_a_token_says_why_and_exits_2(tmp_path):
    r = _run(["serve", "--host", "0.0.0.0", "--port", "1"], {}, tmp_path)
    assert r.returncode == 2, r.stderr
    assert "RELEVANCE_API_TOKEN" in r.stderr and "--dev" in r.stderr
    assert "Traceback" not in r.stderr


def test_explicitly_disabled_dev_mode_is_respected_on_loopback(tmp_path):
    r = _run(["serve", "--port", "1"], {"RELEVANCE_DEV_MODE": "0"}, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


def test_usage_errors_exit_non_zero(tmp_path):
    r = _run(["generate", "--preset", "no-such-preset"], {}, tmp_path)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_demo_on_landing_days_outside_the_partitions_names_them_and_exits_2(tmp_path):
    from relevance_cli.main import main

    day = tmp_path / "home" / "landing" / "events" / "date=2025-12-30"
    day.mkdir(parents=True)
    (day / "part-0.csv").write_text("user_id,item_id,event_type,timestamp\n")
    log = tmp_path / "demo.log"
    argv = ["demo", "--skip-generate", "--home", str(tmp_path / "home"), "--log-file", str(log)]
    assert main(argv) == 2
    assert "2025-12-30" in log.read_text() and "RELEVANCE_PARTITIONS_START" in log.read_text()


def test_cli_generate_writes_the_landing_zone(tmp_path):
    # A real process, as a user runs it (`python -m` also works before the console script is reinstalled).
    out = tmp_path / "home"
    args = ["generate", "--preset", "tiny", "--out", str(out), "--days", "2", "--events", "2000",
            "--format", "csv", "--catalog-format", "jsonl", "--json"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "relevance_cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["events"] == 2000 and [d["format"] for d in report["days"]] == ["csv", "csv"]
    assert (out / "landing/catalog/items.jsonl").exists()
    assert (out / "landing/events/date=2026-01-05/events.csv").exists()
    assert (out / "landing/events/date=2026-01-06/events.csv").exists()
    assert (out / "generator_truth/users.parquet").exists()
