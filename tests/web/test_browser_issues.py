"""Real Chromium: an annotator resolves duplicate groups on the duplicates view (a click, then
the keyboard), then removes the most unusual sample from training in the outlier queue with
the Delete key, and the database holds exactly that."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from app.models import Prediction, Run, Sample
from tests.builders import add_samples, make_dataset
from tests.web.browser_support import SHOTS, shoot, sign_in
from tests.web.review_builders import confident, events_of, make_run

pytestmark = pytest.mark.browser

A, B = "a" * 64, "b" * 64


@pytest.fixture
def issues(db):
    ds = make_dataset(db, task="text", classes=["cat", "dog"], name="issues")
    ss = add_samples(db, ds, [
        {"label": "cat", "text": "a cat on a mat", "content_hash": A, "external_id": "a1"},
        {"label": "cat", "text": "a cat on a mat", "content_hash": A, "external_id": "a2"},
        {"label": "cat", "text": "a cat on a mat", "content_hash": A, "external_id": "a3", "split": "test"},
        {"label": "cat", "text": "cat or dog?", "content_hash": B, "external_id": "b1"},
        {"label": "dog", "text": "cat or dog?", "content_hash": B, "external_id": "b2"},
        {"label": "dog", "text": "a blank scan", "external_id": "odd"},
        {"label": "dog", "text": "a dog", "external_id": "plain"},
    ])
    run = make_run(db, ds, {s.id: confident(s.label, ds.classes) for s in ss})
    for s, score in zip(ss, (1.0, 1.0, 1.1, 1.2, 1.3, 12.0, 0.9)):
        db.execute(update(Prediction).where(Prediction.run_id == run.id, Prediction.sample_id == s.id)
                   .values(outlier=score))
    db.execute(update(Run).where(Run.id == run.id).values(info={"data_issues": {
        "embedding": True, "groups": 2, "grouped_samples": 5, "leak_groups": 1, "conflict_groups": 1, "outliers": 1,
        "outlier_fence": 3.0}}))
    return ds, ss


def split_of(db, s) -> str:
    db.expire_all()
    return db.get(Sample, s.id).split.value


def test_resolve_duplicates_and_remove_an_outlier_from_training(live_server, browser, db, annotator, issues, backend):
    ds, ss = issues
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    SHOTS.mkdir(exist_ok=True)
    sign_in(page, live_server, annotator)

    # The dataset page's panel links to both views.
    page.goto(f"{live_server}/datasets/{ds.id}")
    panel = page.locator("[data-issues]")
    assert panel.locator('[data-issue="exact"] td.num').inner_text() == "2"
    page.wait_for_selector("[data-leak-effect] .leak-effect")
    assert "Test: 1 of 1 labelled samples leaked" in page.locator("[data-leak-effect]").inner_text()
    panel.get_by_role("link", name="Exact duplicate groups").click()
    page.wait_for_url(f"{live_server}/datasets/{ds.id}/duplicates?kind=exact&scope=all")

    card_a = page.locator(f"#group-exact-{A}")
    assert card_a.locator("[data-member]").count() == 3 and card_a.locator("[data-leak]").count() == 1
    shoot(page, str(SHOTS / f"duplicates-{backend}.png"), full_page=True)
    # Keep the second copy: the others leave training, and the card says the group is resolved.
    card_a.locator('button[data-keep="2"]').click()
    page.wait_for_selector(f"#group-exact-{A}[data-resolved]")
    assert "one copy left in use" in page.locator(f"#group-exact-{A}").inner_text()
    assert page.locator(f"#group-exact-{A} [data-leak]").count() == 0
    assert [split_of(db, s) for s in ss[:3]] == ["excluded", "train", "excluded"]

    # The keyboard: J moves to the next group, 1 keeps its first member.
    page.locator("h1").click()
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.id") == f"group-exact-{B}"
    page.keyboard.press("1")
    page.wait_for_selector(f"#group-exact-{B}[data-resolved]")
    assert [split_of(db, s) for s in ss[3:5]] == ["train", "excluded"]
    assert page.evaluate("document.activeElement.id") == f"group-exact-{B}", "the swapped card keeps the focus"

    # The outlier queue: the most unusual train sample first, Delete removes it from training.
    page.goto(f"{live_server}/datasets/{ds.id}/review?order=outlier&split=train")
    page.wait_for_selector(f'#review-panel [data-sample="{ss[5].id}"]')
    assert "Outlier score 12.00" in page.locator(".outlier-note").inner_text()
    shoot(page, str(SHOTS / f"outlier-queue-{backend}.png"))
    page.keyboard.press("Delete")
    page.wait_for_selector(f'#review-panel [data-sample="{ss[3].id}"]')  # then the next most unusual in train
    assert split_of(db, ss[5]) == "excluded"
    assert events_of(db, ds)[-1] == (ss[5].id, "dog", "dog", "annotator", annotator.user.id, "removed from training")
    assert problems == []
