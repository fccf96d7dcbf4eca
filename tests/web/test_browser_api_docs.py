"""Real Chromium: the API docs render from the vendored viewers under the app's
Content-Security-Policy, with nothing fetched from elsewhere and no script refused."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def watch(page) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    # Any request that got an answer from elsewhere (one the policy refuses fails instead).
    page.on("requestfinished",
            lambda r: outside.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    return problems, outside


def test_swagger_ui_lists_every_operation_and_can_authorize(live_server, browser):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    problems, outside = watch(page)
    page.goto(f"{live_server}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "Curate" in page.locator(".swagger-ui .info .title").inner_text()
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() >= 40
    assert page.locator(".opblock-summary-operation-id", has_text="list_samples").count() == 1
    assert page.locator("button.authorize").count() == 1, "the bearer scheme gives the Authorize button"
    assert problems == [] and outside == []


def test_redoc_renders_the_schema(live_server, browser):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    problems, outside = watch(page)
    page.goto(f"{live_server}/redoc")
    page.wait_for_selector("h1", timeout=20_000)
    assert "Curate" in page.locator("h1").first.inner_text()
    page.wait_for_selector("[data-section-id^='operation/']")
    assert page.locator("[data-section-id^='operation/']").count() >= 40
    assert page.locator("[data-section-id='operation/list_samples']").count() == 1
    # ReDoc's footer logo points at its CDN: the policy refuses it, so nothing leaves the machine.
    refused_logo = [p for p in problems if "https://cdn.redoc.ly/" in p and "img-src" in p]
    assert [p for p in problems if p not in refused_logo] == [] and outside == []
