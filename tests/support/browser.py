"""Headless Chromium for the browser tests: Debian's ``/usr/bin/chromium`` driven by Playwright's sync API.

Playwright's own browser download does not work on these machines (no internet), so the tests use the
system browser (``apt-get install chromium``; the Makefile's test set-up installs it where missing) through
``executable_path``. The flags are the ones known to work here: ``--no-sandbox`` because tests run as
root, and the background-networking flags because, without them, Chromium's calls home are refused by
the closed network many times a second and slow everything down. Every launch gets a fresh, empty
profile (``user_data_dir``), so no localStorage or cache leaks from one test run into the next.

Screenshots go to ``test-artifacts/screenshots/`` (ignored by git, kept by CI as artifacts).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("RELEVANCE_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("RELEVANCE_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots"))

#: ``--headless`` and the user data dir are passed by Playwright itself (``headless=True``,
#: ``launch_persistent_context(user_data_dir=...)``); it refuses ``--user-data-dir`` in ``args``.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


class BrowserMissing(RuntimeError):
    """Chromium or Playwright is not installed: the message says how to install them."""


@dataclass
class Browser:
    """One launched browser: its context, plus every console error and page error seen so far.

    Console errors are collected because they are how a broken page shows itself in a headless run: a
    Content-Security-Policy violation, an exception in the page's script, a failed request."""

    context: object
    console_errors: list[str] = field(default_factory=list)

    def new_page(self):
        page = self.context.new_page()
        page.on(
            "console",
            lambda msg: (
                self.console_errors.append(f"{page.url}: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda exc: self.console_errors.append(f"{page.url}: {exc}"))
        return page


def check_installed() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        raise BrowserMissing("Playwright is not installed: .venv/bin/pip install playwright") from e
    if not CHROMIUM.exists():
        raise BrowserMissing(
            f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver "
            "(or set RELEVANCE_CHROMIUM to a Chromium binary)"
        )


@contextmanager
def chromium(*, width: int = 1280, height: int = 900) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile; closed (and its profile deleted) on exit."""
    check_installed()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="relevance-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height},
                timeout=60_000,
            )
            context.set_default_timeout(30_000)
            try:
                yield Browser(context)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of ``page`` as ``test-artifacts/screenshots/<name>.png`` and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    page.screenshot(path=str(path), full_page=full_page)
    return path
