"""Real Chromium on a multi-label dataset: the class keys toggle tags in the pending set,
Enter saves the whole set, P accepts the model's set, U undoes the last change; the
database holds exactly those tag sets and label events."""

from __future__ import annotations

import pytest

from app.models import Sample
from tests.web.browser_support import SHOTS, sign_in
from tests.web.multilabel_builders import make_multilabel_run, multilabel_dataset
from tests.web.review_builders import events_of

pytestmark = pytest.mark.browser


def label_of(db, sample_id: int) -> str | None:
    db.expire_all()
    return db.get(Sample, sample_id).label


def test_keys_toggle_tags_enter_saves_p_accepts_and_undo_restores(live_server, browser, db, annotator, backend):
    ds, ss = multilabel_dataset(db, [
        {"label": "cat", "text": "a cat and a dog"},
        {"label": "cat|bird", "text": "a cat alone"},
        {"label": "dog", "text": "a dog"},
    ])
    make_multilabel_run(db, ds, {
        ss[0].id: ({"cat": 0.9, "dog": 0.85, "bird": 0.1, "fish": 0.05}, "cat|dog"),
        ss[1].id: ({"cat": 0.95, "dog": 0.1, "bird": 0.08, "fish": 0.02}, "cat"),
        ss[2].id: ({"cat": 0.05, "dog": 0.97, "bird": 0.2, "fish": 0.1}, None),
    })
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    SHOTS.mkdir(exist_ok=True)
    sign_in(page, live_server, annotator)
    page.goto(f"{live_server}/datasets/{ds.id}/review?order=id")

    def showing(sample: Sample) -> None:
        page.wait_for_selector(f'#review-panel [data-sample="{sample.id}"]')

    def ticked() -> list[str]:
        return page.locator(".tag-check:checked").evaluate_all("els => els.map(e => e.value)")

    showing(ss[0])
    page.evaluate("window.__same_page = true")
    assert ticked() == ["cat"]
    assert page.locator('.tag.tag-add[data-tag="dog"] .prob-value').inner_text() == "85%"
    # Toggle dog on and bird on, then bird off again: nothing is saved until Enter.
    page.keyboard.press("2")
    page.keyboard.press("3")
    page.keyboard.press("3")
    assert ticked() == ["cat", "dog"]
    assert page.locator("[data-pending]").inner_text() == "Enter saves: + dog"
    assert page.locator('.tag[data-tag="dog"]').evaluate("el => el.classList.contains('is-pending')")
    page.screenshot(path=str(SHOTS / f"review-multilabel-{backend}.png"))
    assert label_of(db, ss[0].id) == "cat"
    page.keyboard.press("Enter")
    showing(ss[1])
    assert label_of(db, ss[0].id) == "cat|dog"

    # P accepts the model's set: bird goes.
    assert ticked() == ["cat", "bird"]
    page.keyboard.press("p")
    showing(ss[2])
    assert label_of(db, ss[1].id) == "cat"

    # A mouse click on a tag, then the keys go on working: fish on, Enter saves.
    page.locator('.tag[data-tag="fish"]').click()
    page.keyboard.press("Enter")
    page.wait_for_selector("#review-panel .empty")
    assert label_of(db, ss[2].id) == "dog|fish"

    # U undoes the last change, then the one before.
    page.keyboard.press("u")
    showing(ss[2])
    page.wait_for_selector("text=Undone: sample")
    assert ticked() == ["dog"] and label_of(db, ss[2].id) == "dog"
    page.keyboard.press("u")
    showing(ss[1])
    assert ticked() == ["cat", "bird"] and label_of(db, ss[1].id) == "cat|bird"
    assert page.evaluate("window.__same_page") is True, "actions swap the panel, never reload the page"

    me = annotator.user.id
    assert events_of(db, ds) == [
        (ss[0].id, "cat", "cat|dog", "annotator", me, None),
        (ss[1].id, "cat|bird", "cat", "annotator", me, None),
        (ss[2].id, "dog", "dog|fish", "annotator", me, None),
        (ss[2].id, "dog|fish", "dog", "annotator", me, "undo"),
        (ss[1].id, "cat", "cat|bird", "annotator", me, "undo"),
    ]
    assert not problems, problems
