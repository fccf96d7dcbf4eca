"""Grid mode on a multi-label dataset: add a tag to, or remove one from, the selected
samples, each sample's change its own audited label event, conflicts left as they are,
undone as a whole."""

from __future__ import annotations

import re

from app.models import Sample
from tests.builders import add_samples, make_dataset, make_user
from tests.web.multilabel_builders import multilabel_dataset
from tests.web.review_builders import events_of
from tests.web.session import htmx, login
from tests.web.test_review import form_of


def sample(db, sample_id: int) -> Sample:
    db.expire_all()
    return db.get(Sample, sample_id)


def post(client, csrf, ds, html, **data):
    return client.post(f"/datasets/{ds.id}/review/grid", data={**form_of(html, "grid-form"), **data}, headers=htmx(csrf))


def test_add_and_remove_a_tag_on_the_selection_each_audited_and_undone(client, db, annotator):
    ds, ss = multilabel_dataset(db, [
        {"label": "cat", "text": "a"},
        {"label": "cat|dog", "text": "b"},
        {"label": "", "text": "c"},
        {"label": "bird", "text": "d"},
        {"label": None, "text": "e", "split": "train"},
    ])
    db.execute(Sample.__table__.update().where(Sample.id == ss[4].id).values(split="unlabelled"))
    other = make_user(db, "annotator")
    csrf = login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}/review/grid", params={"split": "all", "order": "id"}).text
    assert '<button type="submit" name="action" value="add_tag"' in html and '<option value="fish">fish</option>' in html
    # Someone changes d after the page was drawn.
    client.patch(f"/api/v1/samples/{ss[3].id}", json={"labels": ["fish"]}, headers={**other.headers, "If-Match": "1"})
    picked = [f"{s.id}:1" for s in ss]
    r = post(client, csrf, ds, html, action="add_tag", tag="dog", ids=picked)
    assert r.status_code == 200
    assert "Added tag <strong>dog</strong>:" in r.text
    assert "3 changed, 1 already right and marked reviewed, 1 not changed because someone else changed them first" in r.text
    assert [sample(db, s.id).label for s in ss] == ["cat|dog", "cat|dog", "dog", "fish", "dog"]
    me = annotator.user.id
    assert events_of(db, ds)[1:] == [
        (ss[0].id, "cat", "cat|dog", "annotator", me, None),
        (ss[2].id, "", "dog", "annotator", me, None),
        (ss[4].id, None, "dog", "annotator", me, None),
    ]
    undo = re.search(r'name="undo" value="([^"]+)"', r.text).group(1)
    r = post(client, csrf, ds, r.text, action="undo", undo=undo)
    assert "Undone: 4 samples back as they were" in r.text
    assert [(sample(db, s.id).label, sample(db, s.id).reviewed) for s in ss] == [
        ("cat", False), ("cat|dog", False), ("", False), ("fish", True), (None, False)]

    html = client.get(f"/datasets/{ds.id}/review/grid", params={"split": "all", "order": "id"}).text
    versions = dict(re.findall(r'name="ids" value="(\d+):(\d+)"', html))
    picked = [f"{s.id}:{versions[str(s.id)]}" for s in (ss[0], ss[1], ss[4])]
    r = post(client, csrf, ds, html, action="remove_tag", tag="cat", ids=picked)
    assert "Removed tag <strong>cat</strong>:" in r.text and "2 changed" in r.text and "1 skipped" in r.text
    assert "is unlabelled: it has no tag to remove" in r.text
    assert [sample(db, s.id).label for s in (ss[0], ss[1], ss[4])] == ["", "dog", None]


def test_tag_actions_need_a_tag_of_the_dataset_and_a_multi_label_dataset(client, db, annotator):
    ds, ss = multilabel_dataset(db, [{"label": "cat", "text": "a"}])
    csrf = login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}/review/grid").text
    r = post(client, csrf, ds, html, action="add_tag", ids=[f"{ss[0].id}:1"])
    assert "Choose the tag first." in r.text
    r = post(client, csrf, ds, html, action="add_tag", tag="whale", ids=[f"{ss[0].id}:1"])
    assert r.status_code == 422 and "whale" in r.text
    single = make_dataset(db, task="text", classes=["a", "b"])
    s = add_samples(db, single, [{"label": "a", "text": "x"}])[0]
    html = client.get(f"/datasets/{single.id}/review/grid").text
    assert 'value="add_tag"' not in html
    r = post(client, csrf, single, html, action="add_tag", tag="b", ids=[f"{s.id}:1"])
    assert r.status_code == 422 and "single-label" in r.text
    assert events_of(db, ds) == [] and events_of(db, single) == []
