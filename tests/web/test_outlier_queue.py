"""The outlier queue: the review queue ranked by the run's outlier score, its "Remove from
training" button (the Delete key) moving the sample to the excluded split through the label
service, undone like any other change; and the sample panel's outlier score and duplicate
twins (why a conflicting twin was flagged)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from app.models import Prediction, Run
from tests.builders import add_samples, make_dataset, make_user
from tests.web.review_builders import confident, events_of, make_run
from tests.web.session import htmx
from tests.web.test_review import disabled, form_of, open_queue, press, sample, shown


@pytest.fixture
def unusual(db):
    """Four train samples with outlier scores 9, 1.2, 4 and 1 under the run (fence 3); s1 and
    s3 are near twins labelled differently, s1 flagged for it."""
    ds = make_dataset(db, task="text", classes=["cat", "dog"])
    ss = add_samples(db, ds, [
        {"label": "cat", "text": "a blank scan"},
        {"label": "cat", "text": "a cat"},
        {"label": "dog", "text": "a dark dog"},
        {"label": "dog", "text": "a cat, again"},
    ])
    run = make_run(db, ds, {s.id: confident(s.label, ds.classes) for s in ss})
    for s, score in zip(ss, (9.0, 1.2, 4.0, 1.0)):
        db.execute(update(Prediction).where(Prediction.run_id == run.id, Prediction.sample_id == s.id)
                   .values(outlier=score))
    db.execute(update(Prediction).where(Prediction.run_id == run.id, Prediction.sample_id.in_([ss[1].id, ss[3].id]))
               .values(duplicate_group=ss[1].id))
    db.execute(update(Prediction).where(Prediction.run_id == run.id, Prediction.sample_id == ss[1].id)
               .values(flagged=True, suggested_label="dog"))
    db.execute(update(Run).where(Run.id == run.id).values(info={
        "data_issues": {"embedding": True, "groups": 1, "grouped_samples": 2, "leak_groups": 0, "conflict_groups": 1,
                        "outliers": 2, "outlier_fence": 3.0},
        "flagged": {"twin_conflicts": 1}}))
    return ds, ss


def test_outlier_order_shows_the_score_and_remove_from_training_excludes_and_undoes(client, db, annotator, unusual):
    ds, ss = unusual
    csrf, html = open_queue(client, annotator, ds, order="outlier", split="train")
    assert shown(html) == ss[0].id, "the most unusual first"
    assert 'data-outlier="9"' in html and "Outlier score <strong>9.00</strong>" in html
    assert "above 3.00 is a likely outlier" in html and ">unusual</span>" in html
    assert 'value="exclude" data-key="delete"' in html and "Remove from training<kbd>Del</kbd>" in html
    assert "Delete removes from training" in html

    r = press(client, csrf, ds, html, action="exclude")
    assert r.status_code == 200, r.text
    assert shown(r.text) == ss[2].id, "on to the next most unusual"
    assert f"Sample #{ss[0].id} removed from training" in r.text
    s = sample(db, ss[0].id)
    assert s.split.value == "excluded" and s.label == "cat" and s.version == 2
    assert events_of(db, ds) == [(ss[0].id, "cat", "cat", "annotator", annotator.user.id, "removed from training")]
    # U undoes it like any other change: back in train, and in the queue again.
    assert not disabled(r.text, "undo")
    r = press(client, csrf, ds, r.text, action="undo")
    assert r.status_code == 200, r.text
    assert shown(r.text) == ss[0].id and "Undone" in r.text
    assert sample(db, ss[0].id).split.value == "train"


def test_a_stale_remove_is_a_conflict_that_overwrites_nothing(client, db, annotator, engineer, unusual):
    ds, ss = unusual
    csrf, html = open_queue(client, annotator, ds, order="outlier", split="train")
    r = client.patch(f"/api/v1/samples/{ss[0].id}", json={"label": "dog"}, headers={**engineer.headers, "If-Match": "1"})
    assert r.status_code == 200, r.text
    r = press(client, csrf, ds, html, action="exclude")
    assert r.status_code == 409, r.text
    assert "Someone else changed this sample" in r.text and "You chose to remove it from training" in r.text
    assert "Remove it from training anyway" in r.text
    s = sample(db, ss[0].id)
    assert s.split.value == "train" and s.label == "dog" and s.version == 2
    # From the conflict panel (it shows the current version), the choice can be made again.
    assert form_of(r.text)["version"] == "2"
    r = press(client, csrf, ds, r.text, action="exclude")
    assert r.status_code == 200, r.text
    assert sample(db, ss[0].id).split.value == "excluded"


def test_remove_needs_the_csrf_token_and_a_sample_of_this_dataset(client, db, annotator, unusual):
    ds, ss = unusual
    csrf, html = open_queue(client, annotator, ds, order="outlier", split="train")
    data = {**form_of(html), "action": "exclude"}
    r = client.post(f"/datasets/{ds.id}/review", data=data, headers={"HX-Request": "true"})
    assert r.status_code == 403
    assert sample(db, ss[0].id).split.value == "train" and events_of(db, ds) == []
    other = make_dataset(db, task="text", classes=["cat", "dog"])
    stranger = add_samples(db, other, [{"label": "cat", "text": "x"}])[0]
    r = client.post(f"/datasets/{ds.id}/review", data={**data, "current": str(stranger.id), "version": "1"},
                    headers=htmx(csrf))
    assert r.status_code == 404 and sample(db, stranger.id).split.value == "train"
    client.cookies.clear()
    assert client.post(f"/datasets/{ds.id}/review", data=data).status_code == 401


@pytest.mark.parametrize("role", ["engineer", "admin"])
def test_every_role_that_reviews_may_remove(client, db, unusual, role):
    ds, ss = unusual
    csrf, html = open_queue(client, make_user(db, role), ds, order="outlier", split="train")
    assert press(client, csrf, ds, html, action="exclude").status_code == 200
    assert sample(db, ss[0].id).split.value == "excluded"


def test_the_panel_names_a_samples_twins_and_their_labels(client, db, annotator, unusual):
    ds, ss = unusual
    csrf, html = open_queue(client, annotator, ds, order="id", split="train")
    assert shown(html) == ss[0].id and "data-twins" not in html, "no group, no twins"
    r = press(client, csrf, ds, html, action="skip")
    assert shown(r.text) == ss[1].id
    assert f'data-twins="{ss[1].id}"' in r.text
    assert f'data-twin="{ss[3].id}">near twin <a href="/samples/{ss[3].id}/history">#{ss[3].id}</a>' in r.text
    assert "labelled <strong>'dog'</strong>" in r.text and 'class="is-different"' in r.text
    assert "A twin carries another label: one of them is wrong." in r.text
    assert "likely wrong" in r.text and "suggested: <strong>dog</strong>" in r.text
    assert f'href="/datasets/{ds.id}/duplicates?kind=near&amp;scope=all&amp;cursor={ss[1].id - 1}"' in r.text


def test_the_issues_panel_links_to_the_outlier_queue(client, db, annotator, unusual):
    ds, _ = unusual
    csrf, _ = open_queue(client, annotator, ds)
    page = client.get(f"/datasets/{ds.id}").text
    assert 'data-issue="outliers"' in page
    assert f'<a href="/datasets/{ds.id}/review?order=outlier&amp;split=train">Likely outliers</a>' in page
    assert "above 3.00; 1 is typical" in page and "1 flagged for a twin's label" in page
    assert "data-leak-effect" not in page, "nothing leaks: no leakage report is read"
