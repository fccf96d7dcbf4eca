"""Fixtures of the browser tests."""

from __future__ import annotations

import shutil

import pytest

from tests.web.browser_support import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture
def browser():
    """Debian's Chromium, headless, driven by Playwright (`playwright install` is not used)."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), "the browser tests need Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
