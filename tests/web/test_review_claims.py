"""The browser queue and grid hand samples out through claims: two annotators on one queue
see different samples, a skip or a change lets a sample go, an open page keeps its claims,
and a page whose samples are all with others says so."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.models import Claim, utcnow
from tests.builders import add_samples, make_dataset, make_user
from tests.web.review_builders import confident, make_run
from tests.web.session import htmx, login
from tests.web.test_review import press, shown


def queue_of(db, n: int):
    """n train samples ranked by loss: samples[0] the most suspicious."""
    ds = make_dataset(db, task="text", classes=["a", "b"])
    samples = add_samples(db, ds, [{"label": "a", "text": f"text {i}"} for i in range(n)])
    make_run(db, ds, {s.id: confident("b", ds.classes, 0.99 - i / 100) for i, s in enumerate(samples)})
    return ds, samples


def holders(db, ds) -> dict[int, int]:
    db.expire_all()
    return dict(db.execute(select(Claim.sample_id, Claim.user_id).where(Claim.dataset_id == ds.id)).all())


def signed_in(app, db):
    account = make_user(db, "annotator")
    client = TestClient(app)
    csrf = login(client, account.user.username)
    return account, client, csrf


def test_two_annotators_get_different_samples_and_a_skip_lets_one_go(app, db):
    ds, ss = queue_of(db, 6)
    (ann1, c1, csrf1), (ann2, c2, _) = signed_in(app, db), signed_in(app, db)
    page1 = c1.get(f"/datasets/{ds.id}/review").text
    page2 = c2.get(f"/datasets/{ds.id}/review").text
    # Each page holds what it shows and the sample it preloads.
    assert shown(page1) == ss[0].id and shown(page2) == ss[2].id
    assert holders(db, ds) == {ss[0].id: ann1.user.id, ss[1].id: ann1.user.id,
                               ss[2].id: ann2.user.id, ss[3].id: ann2.user.id}
    # A skip moves on and lets the skipped sample go; a fresh queue page offers it again.
    page1 = press(c1, csrf1, ds, page1, action="skip").text
    assert shown(page1) == ss[1].id
    assert ss[0].id not in holders(db, ds)
    assert shown(c2.get(f"/datasets/{ds.id}/review").text) == ss[0].id
    # A change ends the claim on the changed sample.
    page1 = press(c1, csrf1, ds, page1, action="keep").text
    assert ss[1].id not in holders(db, ds)
    assert shown(page1) not in (ss[0].id, ss[1].id) and holders(db, ds)[shown(page1)] == ann1.user.id


def test_an_open_page_renews_its_claims_and_a_closed_one_lapses(app, db):
    ds, ss = queue_of(db, 4)
    (_, c1, csrf1), (ann2, c2, _) = signed_in(app, db), signed_in(app, db)
    page = c1.get(f"/datasets/{ds.id}/review").text
    every = re.search(r'hx-post="/datasets/\d+/review/claims" hx-trigger="every (\d+)s"', page)
    assert every and int(every.group(1)) == app.state.settings.claim_seconds // 3
    soon = utcnow() + timedelta(seconds=5)
    db.execute(update(Claim).values(expires_at=soon))
    db.commit()
    assert c1.post(f"/datasets/{ds.id}/review/claims").status_code == 403, "a renewal needs the CSRF token"
    assert c1.post(f"/datasets/{ds.id}/review/claims", headers=htmx(csrf1)).status_code == 204
    db.expire_all()
    ends = db.scalars(select(Claim.expires_at)).all()
    assert len(ends) == 2 and all(e > utcnow() + timedelta(seconds=app.state.settings.claim_seconds - 10) for e in ends)
    # The page is closed: no more renewals, and once the claims lapse the samples go to others.
    db.execute(update(Claim).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.commit()
    assert shown(c2.get(f"/datasets/{ds.id}/review").text) == ss[0].id
    assert holders(db, ds) == {ss[0].id: ann2.user.id, ss[1].id: ann2.user.id}


def test_grids_are_disjoint_and_an_empty_one_says_who_has_the_rest(app, db):
    ds, ss = queue_of(db, 5)
    (ann1, c1, _), (_, c2, _), (_, c3, _) = signed_in(app, db), signed_in(app, db), signed_in(app, db)
    tiles = re.compile(r'name="ids" value="(\d+):\d+"')
    grid1 = [int(i) for i in tiles.findall(c1.get(f"/datasets/{ds.id}/review/grid").text)]
    assert grid1 == [s.id for s in ss]
    grid2 = c2.get(f"/datasets/{ds.id}/review/grid").text
    assert tiles.findall(grid2) == []
    assert re.search(r"data-held>5 samples are with other annotators", grid2)
    # The one-by-one queue says the same when nothing is free.
    page3 = c3.get(f"/datasets/{ds.id}/review").text
    assert shown(page3) is None and re.search(r"data-held>5 samples are with other annotators", page3)
    # Leaving the grid for the queue hands out two and lets the other three go.
    c1.get(f"/datasets/{ds.id}/review")
    assert holders(db, ds) == {ss[0].id: ann1.user.id, ss[1].id: ann1.user.id}
    assert [int(i) for i in tiles.findall(c2.get(f"/datasets/{ds.id}/review/grid").text)] == [s.id for s in ss[2:]]
