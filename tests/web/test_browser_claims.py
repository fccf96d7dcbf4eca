"""Real Chromium: two annotators, each in their own browser context, work one queue with the
keyboard at once and never see the same sample; an open page renews its claims by itself."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Claim, LabelEvent, Sample
from tests.builders import add_samples, make_dataset, make_user
from tests.web.browser_support import SHOTS, sign_in
from tests.web.review_builders import confident, make_run

pytestmark = pytest.mark.browser

N = 8


@pytest.fixture
def settings(settings):
    # Short claims, so the page's renewal (every third of this) is seen within the test.
    return settings.model_copy(update={"claim_seconds": 12})


def test_two_annotators_in_two_contexts_never_share_a_sample(live_server, browser, db, backend):
    ds = make_dataset(db, task="text", classes=["a", "b"])
    samples = add_samples(db, ds, [{"label": "a", "text": f"sentence {i}"} for i in range(N)])
    make_run(db, ds, {s.id: confident("b", ds.classes, 0.99 - i / 100) for i, s in enumerate(samples)})
    accounts = [make_user(db, "annotator"), make_user(db, "annotator")]
    problems: list[str] = []
    pages = []
    for account in accounts:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        sign_in(page, live_server, account)
        page.goto(f"{live_server}/datasets/{ds.id}/review")
        pages.append(page)

    def showing(page) -> int | None:
        page.wait_for_selector("#review-panel [data-sample], #review-panel .empty")
        node = page.locator("#review-panel [data-sample]")
        return int(node.first.get_attribute("data-sample")) if node.count() else None

    # The first page renews its claims by itself while it is open.
    with pages[0].expect_response(lambda r: r.url.endswith(f"/datasets/{ds.id}/review/claims"), timeout=10_000) as renewal:
        pass
    assert renewal.value.status == 204

    seen: list[list[int]] = [[], []]
    current = [showing(p) for p in pages]
    while any(c is not None for c in current):
        assert current[0] is None or current[0] != current[1], f"both annotators shown sample {current[0]}"
        for i, page in enumerate(pages):
            if current[i] is None:
                continue
            seen[i].append(current[i])
            page.keyboard.press("b")
            page.wait_for_function(
                "old => { const n = document.querySelector('#review-panel [data-sample]');"
                " return !n || n.dataset.sample !== String(old); }", arg=current[i])
            current[i] = showing(page)
    SHOTS.mkdir(exist_ok=True)
    pages[1].screenshot(path=str(SHOTS / f"review-claims-done-{backend}.png"))
    assert set(seen[0]).isdisjoint(seen[1]), seen
    assert sorted(seen[0] + seen[1]) == sorted(s.id for s in samples), "every sample reviewed exactly once"
    assert seen[0] and seen[1], "both annotators had work"
    db.expire_all()
    events = db.execute(select(LabelEvent.sample_id, LabelEvent.user_id).where(LabelEvent.dataset_id == ds.id)).all()
    by_user = {a.user.id: {sid for sid, uid in events if uid == a.user.id} for a in accounts}
    assert [by_user[a.user.id] for a in accounts] == [set(seen[0]), set(seen[1])], "no one relabelled the other's sample"
    assert db.scalar(select(Claim.sample_id).where(Claim.dataset_id == ds.id)) is None
    assert all(s.label == "b" for s in db.scalars(select(Sample).where(Sample.dataset_id == ds.id)))
    assert problems == []
