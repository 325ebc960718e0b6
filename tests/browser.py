"""Headless Chromium for the console tests: the Debian ``chromium`` driven by
Playwright (its wheel brings the driver; it never downloads a browser here).

Each test gets a fresh profile (no cookie or cache from another test). Screenshots
and measurements go to the test-artefact folder: ``$LPR_EDGE_TEST_ARTEFACTS``, else
``var/test-artefacts/`` in this clone (git-ignored).

A missing browser fails the tests that need it, saying how to install it: ``make
test`` installs the package when run as root, as it does Mosquitto.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The priority-1 alert sound plays without a click first, as on the car's terminal.
    "--autoplay-policy=no-user-gesture-required",
)


def find_chromium() -> str | None:
    for candidate in (os.environ.get("LPR_EDGE_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def artefact_dir() -> Path:
    folder = Path(os.environ.get("LPR_EDGE_TEST_ARTEFACTS") or PROJECT_ROOT / "var/test-artefacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def artefact_path(name: str) -> Path:
    """A file in the artefact folder, its name made safe."""
    return artefact_dir() / re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def screenshot(page, name: str) -> Path:
    path = artefact_path(f"{name}.png")
    page.screenshot(path=str(path), full_page=True)
    return path


def record_measurement(name: str, values: dict) -> Path:
    """Add ``values`` under ``name`` to ``measurements.json`` in the artefact folder."""
    path = artefact_path("measurements.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[name] = values
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


class BrowserPage:
    """A page of a fresh profile, with what went wrong on it (script errors, console
    errors, dialogs opened by a script) kept for the test to check."""

    def __init__(self, context, page):
        self.context = context
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: self.errors.append(msg.text) if msg.type == "error" else None,
        )

        def on_dialog(dialog) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)


@contextlib.contextmanager
def open_browser(profile_dir: Path) -> Iterator[BrowserPage]:
    """A headless Chromium with a fresh profile in ``profile_dir`` and one page. A test
    module makes its fixture of it::

        @pytest.fixture
        def browser(tmp_path):
            with open_browser(tmp_path / "profile") as opened:
                yield opened
    """
    chromium = find_chromium()
    if chromium is None:
        pytest.fail(
            "the console tests need Chromium, which is not installed: run `make test` as "
            "root (it installs the Debian package), or `sudo apt-get install chromium`",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=chromium,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            yield BrowserPage(context, page)
        finally:
            context.close()
