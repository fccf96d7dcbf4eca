"""Second opinions in the browser: a blind queue with overlap 2, the team page (agreement, the
annotators' numbers, the disagreement queue and a reviewer's choice) and assignments on the
home page."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.models import Annotation, Dataset, Sample, SampleConsensus
from tests.builders import add_samples, make_dataset, make_user
from tests.web.session import htmx, login
from tests.web.test_review import press, shown


def blind_dataset(db, n: int, k: int = 2):
    ds = make_dataset(db, task="text", classes=["a", "b"], settings={"unlabelled_joins_train": True, "overlap": k})
    return ds, add_samples(db, ds, [{"label": "a", "text": f"text {i}"} for i in range(n)])


def signed_in(app, db, role: str = "annotator"):
    account = make_user(db, role)
    client = TestClient(app)
    return account, client, login(client, account.user.username)


def test_a_blind_queue_keeps_answers_and_decides_on_the_second(app, db):
    ds, ss = blind_dataset(db, 2)
    (ann1, c1, csrf1), (_, c2, csrf2) = signed_in(app, db), signed_in(app, db)
    page = c1.get(f"/datasets/{ds.id}/review").text
    assert shown(page) == ss[0].id and "data-blind" in page
    assert 'class="side-block history"' not in page, "earlier changes are not shown in a blind queue"
    assert 'name="shown_at"' in page
    page = press(c1, csrf1, ds, page, set="b").text
    assert "Answer kept for sample" in page and "(1 of 2)" in page
    db.expire_all()
    assert (db.get(Sample, ss[0].id).label, db.get(Sample, ss[0].id).reviewed) == ("a", False)
    answer = db.scalar(select(Annotation).where(Annotation.sample_id == ss[0].id))
    assert answer.user_id == ann1.user.id and answer.label == "b" and 0 <= answer.seconds < 60
    # Undo takes the answer back while the sample is undecided; answered again, it moves on.
    page = press(c1, csrf1, ds, page, action="undo").text
    assert shown(page) == ss[0].id and db.scalar(select(Annotation.id)) is None
    page = press(c1, csrf1, ds, page, set="b").text
    # The first annotator is not shown it again; the second is, and decides it.
    assert shown(page) == ss[1].id
    page2 = c2.get(f"/datasets/{ds.id}/review").text
    assert shown(page2) == ss[0].id
    press(c2, csrf2, ds, page2, set="b")
    db.expire_all()
    assert (db.get(Sample, ss[0].id).label, db.get(Sample, ss[0].id).reviewed) == ("b", True)
    assert db.get(SampleConsensus, ss[0].id).state == "decided"
    # The grid does not take bulk answers in a blind queue.
    grid = c1.get(f"/datasets/{ds.id}/review/grid").text
    assert "answer them one by one" in grid and 'name="ids"' not in grid


def test_team_page_shows_agreement_and_lets_a_reviewer_settle_a_tie(app, db):
    ds, ss = blind_dataset(db, 2)
    (ann1, c1, csrf1), (ann2, c2, csrf2) = signed_in(app, db), signed_in(app, db)
    for client, csrf, label in ((c1, csrf1, "a"), (c2, csrf2, "b")):
        page = client.get(f"/datasets/{ds.id}/review").text
        assert shown(page) == ss[0].id
        press(client, csrf, ds, page, set=label)
    db.expire_all()
    assert db.get(SampleConsensus, ss[0].id).state == "tie"
    # An annotator sees their own numbers and no disagreement queue.
    own = c1.get(f"/datasets/{ds.id}/team").text
    assert own.count('<td class="strong">') == 1 and ann1.user.username in own and ann2.user.username not in own
    assert "data-disagreements" not in own
    assert c1.post(f"/datasets/{ds.id}/team/resolve", data={"sample_id": ss[0].id, "version": 1, "label": "b"},
                   headers=htmx(csrf1)).status_code == 403
    eng, ce, csrfe = signed_in(app, db, "engineer")
    team = ce.get(f"/datasets/{ds.id}/team").text
    assert ann1.user.username in team and ann2.user.username in team
    item = re.search(rf'<li data-sample="{ss[0].id}">.*?</li>', team, re.S).group(0)
    assert "tie" in item and f"{ann1.user.username}: <strong>a</strong>" in item
    r = ce.post(f"/datasets/{ds.id}/team/resolve", data={"sample_id": ss[0].id, "version": 1, "label": "b"},
                headers=htmx(csrfe))
    assert r.status_code == 200 and f"Sample #{ss[0].id} is now b." in r.text
    db.expire_all()
    assert (db.get(Sample, ss[0].id).label, db.get(SampleConsensus, ss[0].id).state) == ("b", "resolved")
    stale = ce.post(f"/datasets/{ds.id}/team/resolve", data={"sample_id": ss[0].id, "version": 1, "label": "a"},
                    headers=htmx(csrfe))
    assert "changed meanwhile" in stale.text
    db.expire_all()
    assert db.get(Sample, ss[0].id).label == "b", "a stale choice overwrites nothing"


def test_an_assignment_shows_on_the_home_page_and_opens_its_queue(app, db):
    ds = make_dataset(db, task="text", classes=["a", "b"])
    ss = add_samples(db, ds, [{"label": "ab"[i % 2], "text": f"t{i}"} for i in range(6)])
    (ann, c, _), (_, co, _) = signed_in(app, db), signed_in(app, db)
    eng = make_user(db, "engineer")
    r = c.post(f"/api/v1/datasets/{ds.id}/assignments", headers=eng.headers,
               json={"name": "the b's", "filters": {"label": "b", "order": "id"}, "users": [ann.user.username]})
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    db.execute(update(Sample).where(Sample.id == ss[1].id).values(reviewed=True))
    db.commit()
    home = c.get("/datasets").text
    assert "Assigned to you" in home and f'href="/datasets/{ds.id}/review?assignment={aid}"' in home
    # The progress is counted after the page renders (a count per assignment), by its fragment.
    progress = f"/datasets/{ds.id}/assignments/{aid}/progress"
    assert f'hx-get="{progress}"' in home and "reviewed" not in home
    assert c.get(progress).text == "<span data-progress>1 of 3 reviewed</span>"
    assert co.get(progress).status_code == 404, "not assigned: not theirs to see"
    other = make_dataset(db, task="text", classes=["a", "b"])
    assert c.get(f"/datasets/{other.id}/assignments/{aid}/progress").status_code == 404, "checked against the path"
    assert "Assigned to you" not in co.get("/datasets").text
    page = c.get(f"/datasets/{ds.id}/review", params={"assignment": aid}).text
    assert "assignment: the b&#39;s" in page and shown(page) == ss[3].id
    assert 'name="assignment" value="%d"' % aid in page, "the queue's form keeps the assignment"
    assert co.get(f"/datasets/{ds.id}/review", params={"assignment": aid}).status_code == 404
    assert c.get(f"/datasets/{ds.id}/review", params={"assignment": "x"}).status_code == 422
    assert db.get(Dataset, ds.id) is not None
