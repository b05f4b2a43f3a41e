"""A real headless Chromium for the journeys staff and obligees click through (Playwright).

Debian's ``chromium`` is driven through Playwright's ``executable_path``; nothing is downloaded.
Tests that need it take the ``browser_page`` fixture (registered in ``tests/conftest.py``) and are
marked ``chromium``; they skip with a reason where Chromium is absent (CI installs it).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no network here: background fetches would only fail
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser_page() -> Iterator[object]:
    """A fresh page in a fresh profile; closed with its browser after the test."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            locale="ja-JP",
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        try:
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            context.close()
