"""Real Chromium against a real server: the CSP lets the page work, HTMX sends the CSRF
header, fragments swap in place, and an expired session lands on the login page."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from tests.web.browser_support import SHOTS

pytestmark = pytest.mark.browser


@pytest.fixture
def server(app) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_sign_in_and_create_a_dataset_with_htmx(server, browser, engineer, backend):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto(server + "/datasets")
    assert page.url == server + "/login?next=/datasets"
    page.fill("input[name=username]", engineer.user.username)
    page.fill("input[name=password]", engineer.password)
    page.click("button[type=submit]")
    page.wait_for_url(server + "/datasets")
    assert page.evaluate("typeof htmx") == "object", "htmx did not load under the CSP"

    # A marker on window survives an HTMX swap but not a page load.
    page.evaluate("window.__same_page = true")
    meta_token = page.get_attribute('meta[name="csrf-token"]', "content")
    panel = page.locator("#dataset-panel")
    panel.locator("input[name=name]").fill("browser-made")
    panel.locator("select[name=task]").select_option("text")
    panel.locator("input[name=classes]").fill("yes, no")
    with page.expect_request(lambda r: r.method == "POST" and r.url == server + "/datasets") as sent:
        panel.locator("button[type=submit]").click()
    assert sent.value.headers.get("hx-request") == "true"
    assert sent.value.headers.get("x-csrf-token") == meta_token, "static/js/app.js did not add the CSRF header"
    page.wait_for_selector("text=Created dataset")
    assert page.locator("td", has_text="browser-made").count() == 1
    assert page.evaluate("window.__same_page") is True

    panel.locator("input[name=name]").fill("browser-made")
    panel.locator("button[type=submit]").click()
    page.wait_for_selector("#name-error")
    assert "already exists" in page.locator("#name-error").inner_text()
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"browser-datasets-{backend}.png"), full_page=True)

    # The session ends behind the page's back: the next HTMX request goes to the login page.
    page.context.clear_cookies()
    panel.locator("input[name=name]").fill("too-late")
    panel.locator("button[type=submit]").click()
    page.wait_for_url(server + "/login?next=/datasets")
    assert not problems, problems
