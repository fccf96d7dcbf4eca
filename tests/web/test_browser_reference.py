"""Real Chromium: an engineer pins an older run as the dataset's reference from the overview,
sees it lead (badge, recipe, "newer" note), and unpins it."""

from __future__ import annotations

import pytest

from tests.builders import add_samples, make_dataset, make_user
from tests.web.browser_support import sign_in
from tests.web.review_builders import confident, make_run

pytestmark = pytest.mark.browser


def test_an_engineer_pins_and_unpins_the_reference_run(live_server, browser, db):
    ds = make_dataset(db, classes=["a", "b"])
    samples = add_samples(db, ds, [{"label": "ab"[i % 2]} for i in range(6)])
    older = make_run(db, ds, {s.id: confident("b", ["a", "b"], 0.8) for s in samples})
    newer = make_run(db, ds, {s.id: confident("a", ["a", "b"], 0.8) for s in samples})
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    sign_in(page, live_server, make_user(db, "engineer"))
    page.goto(f"{live_server}/datasets/{ds.id}")
    assert page.locator(".run-line").inner_text().startswith(f"Run #{newer.id}")
    page.select_option("[data-reference-form] select[name=run]", str(older.id))
    page.click("[data-reference-form] button")
    page.wait_for_selector("[data-reference]")
    line = page.locator(".run-line").inner_text()
    assert line.startswith(f"Run #{older.id} reference") and f"Run #{newer.id} is newer" in line
    page.click("summary:has-text('Recipe')")
    assert '"epochs": 1' in page.locator("[data-recipe]").inner_text()
    page.click(f"text=Unpin run #{older.id}")
    page.wait_for_selector(f".run-line:has-text('Run #{newer.id}')")
    assert page.locator(".run-line [data-reference]").count() == 0
    assert problems == []
