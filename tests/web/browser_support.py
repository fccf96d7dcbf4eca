"""What the Playwright tests share: Debian's Chromium, where screenshots go, signing in."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Ignored by git: screenshots of every page a browser test visits, to look at.
SHOTS = Path(__file__).resolve().parents[2] / "test-output"


def sign_in(page, server: str, account) -> None:
    """Sign in through the login form and land on the datasets page."""
    page.goto(server + "/login")
    page.fill("input[name=username]", account.user.username)
    page.fill("input[name=password]", account.password)
    page.click("button[type=submit]")
    page.wait_for_url(server + "/datasets")


def shoot(page, path: str, full_page: bool = False) -> None:
    """A screenshot; caret="initial": hiding the caret would write style="" on every input,
    which htmx then copies while settling a swap, and the CSP rightly refuses."""
    page.screenshot(path=path, full_page=full_page, caret="initial")
