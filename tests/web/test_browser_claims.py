"""Real Chromium: two annotators, each in their own browser context, work one queue with the
keyboard at once and never see the same sample; an open page renews its claims by itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.models import Annotation, Claim, LabelEvent, Sample, SampleConsensus, utcnow
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


def test_a_third_annotator_with_overlap_two_gets_what_the_first_two_answered(live_server, browser, db):
    """Overlap 2: the first two annotators answer two samples each at once, never shown the
    same sample at the same moment; a third is handed first the samples that still need a
    second answer (answered by the first two), and no one answers a sample twice."""
    ds = make_dataset(db, task="text", classes=["a", "b"], settings={"unlabelled_joins_train": True, "overlap": 2})
    samples = add_samples(db, ds, [{"label": "a", "text": f"sentence {i}"} for i in range(8)])
    accounts = [make_user(db, "annotator") for _ in range(3)]
    pages = []
    for account in accounts:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        sign_in(page, live_server, account)
        pages.append(page)

    def showing(page) -> int | None:
        page.wait_for_selector("#review-panel [data-sample], #review-panel .empty")
        node = page.locator("#review-panel [data-sample]")
        return int(node.first.get_attribute("data-sample")) if node.count() else None

    def answer(page_indexes: list[int], most: int) -> list[list[int]]:
        seen: list[list[int]] = [[] for _ in page_indexes]
        current = {}
        for i in page_indexes:
            pages[i].goto(f"{live_server}/datasets/{ds.id}/review?order=id")
            current[i] = showing(pages[i])
        while any(c is not None for c in current.values()):
            live = [c for c in current.values() if c is not None]
            assert len(live) == len(set(live)), f"two annotators shown one sample at once: {current}"
            for n, i in enumerate(page_indexes):
                if current[i] is None:
                    continue
                if len(seen[n]) == most:
                    current[i] = None
                    continue
                assert current[i] not in seen[n], "a sample shown twice to one annotator"
                seen[n].append(current[i])
                pages[i].keyboard.press("b")
                pages[i].wait_for_function(
                    "old => { const n = document.querySelector('#review-panel [data-sample]');"
                    " return !n || n.dataset.sample !== String(old); }", arg=current[i])
                current[i] = showing(pages[i])
        return seen

    first, second = answer([0, 1], most=2)
    assert len(first) == len(second) == 2 and "data-blind" in pages[0].content()
    db.expire_all()
    counts: dict[int, int] = {}
    for (sid,) in db.execute(select(Annotation.sample_id)):
        counts[sid] = counts.get(sid, 0) + 1
    waiting = sorted(sid for sid, n in counts.items() if n == 1)
    assert waiting, "some samples wait for a second answer"
    # The first two leave: their pages close, and what they still held lapses.
    for page in pages[:2]:
        page.close()
    db.execute(update(Claim).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.commit()
    (third,) = answer([2], most=len(waiting))
    assert sorted(third) == waiting and set(third) <= set(first) | set(second), \
        "the third is handed first what the first two answered and still needs an answer"
    db.expire_all()
    by_sample: dict[int, set[int]] = {}
    for sid, uid in db.execute(select(Annotation.sample_id, Annotation.user_id)):
        by_sample.setdefault(sid, set()).add(uid)
    answered = sorted(set(first) | set(second))
    assert sorted(by_sample) == answered and all(len(by_sample[sid]) == 2 for sid in answered)
    states = dict(db.execute(select(SampleConsensus.sample_id, SampleConsensus.state)).all())
    assert sorted(states) == answered and set(states.values()) == {"decided"}
    labels = dict(db.execute(select(Sample.id, Sample.label).where(Sample.dataset_id == ds.id)).all())
    assert all(labels[sid] == "b" for sid in answered) and all(labels[s.id] == "a" for s in samples
                                                               if s.id not in answered)
