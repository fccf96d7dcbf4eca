"""Real Chromium: the account page lists the browsers signed in and signs one out, a throttled
password change shows its message in place (HTMX swaps the 429), and an admin signs a user
out everywhere from the users page."""

from __future__ import annotations

import pytest

from app.main import create_app
from tests.web.browser_support import SHOTS, shoot, sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def app(settings, engine):
    # A low limit, so that the throttled password form is reached in a few tries.
    return create_app(settings.model_copy(update={"login_max_failures_per_account": 2}))


def _watch(page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def test_my_browsers_and_a_throttled_password_change(live_server, browser, engineer, backend):
    laptop = browser.new_context()
    sign_in(laptop.new_page(), live_server, engineer)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = _watch(page)
    sign_in(page, live_server, engineer)

    page.goto(live_server + "/account")
    rows = page.locator("#sessions-panel tbody tr")
    assert rows.count() == 2
    assert page.locator("#sessions-panel .badge", has_text="this browser").count() == 1
    page.evaluate("window.__same_page = true")
    page.locator("#sessions-panel button", has_text="Sign out").first.click()
    page.wait_for_selector("#sessions-panel >> text=1 session signed out.")
    assert page.locator("#sessions-panel tbody tr").count() == 1
    assert page.evaluate("window.__same_page") is True, "the panel swapped in place"

    other = laptop.new_page()
    other.goto(live_server + "/datasets")
    other.wait_for_url(live_server + "/login?next=/datasets")

    panel = page.locator("#password-panel")
    for _ in range(2):
        panel.locator("input[name=current_password]").fill("not-my-password")
        panel.locator("input[name=new_password]").fill("a-new-password")
        panel.locator("button[type=submit]").click()
        page.wait_for_selector("#password-panel >> text=The current password is not right.")
        page.evaluate("document.querySelector('#password-panel .alert').remove()")
    panel.locator("input[name=current_password]").fill(engineer.password)
    panel.locator("input[name=new_password]").fill("a-new-password")
    panel.locator("button[type=submit]").click()
    page.wait_for_selector("#password-panel >> text=Too many wrong current passwords")
    assert page.evaluate("window.__same_page") is True
    SHOTS.mkdir(exist_ok=True)
    shoot(page, str(SHOTS / f"browser-account-sessions-{backend}.png"), full_page=True)
    assert not problems, problems
    laptop.close()


def test_an_admin_signs_a_user_out_everywhere(live_server, browser, admin, annotator, backend):
    theirs = browser.new_context()
    sign_in(theirs.new_page(), live_server, annotator)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = _watch(page)
    page.on("dialog", lambda d: d.accept())
    sign_in(page, live_server, admin)

    page.goto(live_server + "/admin/users")
    row = page.locator("tr", has_text=annotator.user.username)
    row.locator("button", has_text="Sign out everywhere").click()
    page.wait_for_selector(f"text=Signed {annotator.user.username} out everywhere (1 session).")
    assert row.locator("button", has_text="Sign out everywhere").count() == 0
    SHOTS.mkdir(exist_ok=True)
    shoot(page, str(SHOTS / f"browser-admin-sign-out-{backend}.png"), full_page=True)

    other = theirs.new_page()
    other.goto(live_server + "/datasets")
    other.wait_for_url(live_server + "/login?next=/datasets")
    assert not problems, problems
    theirs.close()
