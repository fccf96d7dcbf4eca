"""The review queue on a multi-label dataset, driven as the page drives it: the class keys
toggle the panel's tag checkboxes, Enter posts the whole pending set, P the model's set; each
a change through the same service as PATCH, undone per change, a conflict shown, not lost."""

from __future__ import annotations

import re
from html import unescape

import pytest

from app.models import Sample
from tests.builders import make_user
from tests.web.multilabel_builders import make_multilabel_run, multilabel_dataset
from tests.web.review_builders import events_of
from tests.web.session import htmx, login
from tests.web.test_review import INLINE_HANDLER, INLINE_STYLE, SCRIPT, form_of, shown

CHECKBOX = re.compile(r'<input type="checkbox" name="tags" value="([^"]+)"[^>]*>')


def checked(html: str) -> list[str]:
    """The tags whose checkboxes the panel shows ticked."""
    return [unescape(m.group(1)) for m in CHECKBOX.finditer(html) if re.search(r"\schecked[\s>]", m.group(0))]


def press(client, csrf, ds, html, tags=None, **pressed):
    """Post the panel's form: its hidden fields, the tags ticked (as shown, or as given), the button."""
    data = {**form_of(html), **{k: str(v) for k, v in pressed.items()}, "tags": checked(html) if tags is None else tags}
    return client.post(f"/datasets/{ds.id}/review", data=data, headers=htmx(csrf))


def sample(db, sample_id: int) -> Sample:
    db.expire_all()
    return db.get(Sample, sample_id)


@pytest.fixture
def tagged(db):
    """s0 given {cat}, the model adds dog; s1 given {cat, bird}, the model removes bird; s2
    given {dog}, not flagged (the model's set is its predicted one, {dog, fish})."""
    ds, ss = multilabel_dataset(db, [
        {"label": "cat", "text": "first"},
        {"label": "cat|bird", "text": "second"},
        {"label": "dog", "text": "third"},
    ])
    make_multilabel_run(db, ds, {
        ss[0].id: ({"cat": 0.9, "dog": 0.85, "bird": 0.1, "fish": 0.05}, "cat|dog"),
        ss[1].id: ({"cat": 0.95, "dog": 0.1, "bird": 0.08, "fish": 0.02}, "cat"),
        ss[2].id: ({"cat": 0.05, "dog": 0.97, "bird": 0.2, "fish": 0.6}, None),
    })
    return ds, ss


def open_queue(client, annotator, ds):
    csrf = login(client, annotator.user.username)
    r = client.get(f"/datasets/{ds.id}/review", params={"order": "id"})
    assert r.status_code == 200, r.text
    return csrf, r.text


def test_panel_shows_tags_with_keys_probabilities_and_the_model_s_changes(client, db, annotator, tagged):
    ds, ss = tagged
    _, html = open_queue(client, annotator, ds)
    assert shown(html) == ss[0].id
    assert checked(html) == ["cat"]
    keys = re.findall(r'value="(\w+)" class="tag-check" data-tag-key="(\w)"', html)
    assert keys == [("cat", "1"), ("dog", "2"), ("bird", "3"), ("fish", "4")]
    assert re.search(r'data-tag="dog">.*?data-p="0.8500".*?\+ add', html, re.S)
    assert 'class="tag is-model tag-add" data-tag="dog"' in html
    assert 'data-model-set="cat|dog"' in html and "adds dog" in html
    assert "Save the tags<kbd>Enter</kbd>" in html and "Accept cat, dog<kbd>P</kbd>" in html
    assert 'name="set" value=' not in html, "no single-label class buttons: a key toggles, it does not save"
    assert all("src=" in attrs and not body.strip() for attrs, body in SCRIPT.findall(html)), "no inline script (CSP)"
    assert not INLINE_HANDLER.search(html) and not INLINE_STYLE.search(html)


def test_enter_saves_the_pending_set_and_undo_restores_it(client, db, annotator, tagged):
    ds, ss = tagged
    csrf, html = open_queue(client, annotator, ds)
    r = press(client, csrf, ds, html, tags=["bird", "cat", "cat"], action="save")
    assert r.status_code == 200 and shown(r.text) == ss[1].id
    s = sample(db, ss[0].id)
    assert (s.label, s.reviewed, s.version) == ("cat|bird", True, 2)
    r = press(client, csrf, ds, r.text, action="undo")
    assert shown(r.text) == ss[0].id and checked(r.text) == ["cat"]
    s = sample(db, ss[0].id)
    assert (s.label, s.reviewed) == ("cat", False)
    me = annotator.user.id
    assert events_of(db, ds) == [(ss[0].id, "cat", "cat|bird", "annotator", me, None),
                                 (ss[0].id, "cat|bird", "cat", "annotator", me, "undo")]


def test_enter_on_an_unchanged_set_keeps_it_and_the_empty_set_is_a_label(client, db, annotator, tagged):
    ds, ss = tagged
    csrf, html = open_queue(client, annotator, ds)
    r = press(client, csrf, ds, html, action="save")  # the given {cat}, untouched
    assert (sample(db, ss[0].id).reviewed, events_of(db, ds)) == (True, [])
    r = press(client, csrf, ds, r.text, tags=[], action="save")
    assert sample(db, ss[1].id).label == ""
    r = press(client, csrf, ds, r.text, action="undo")
    assert sample(db, ss[1].id).label == "cat|bird"
    r = press(client, csrf, ds, r.text, action="undo")
    assert (sample(db, ss[0].id).reviewed, [e[1:3] for e in events_of(db, ds)]) == (False, [("cat|bird", ""), ("", "cat|bird")])


def test_p_accepts_the_flagged_suggestion_or_the_predicted_set(client, db, annotator, tagged):
    ds, ss = tagged
    csrf, html = open_queue(client, annotator, ds)
    html = press(client, csrf, ds, html, action="accept").text
    html = press(client, csrf, ds, html, action="accept").text
    assert "Accept dog, fish<kbd>P</kbd>" in html, "not flagged: the predicted set"
    press(client, csrf, ds, html, action="accept")
    assert [sample(db, s.id).label for s in ss] == ["cat|dog", "cat", "dog|fish"]


def test_an_unknown_tag_is_refused_and_nothing_changes(client, db, annotator, tagged):
    ds, ss = tagged
    csrf, html = open_queue(client, annotator, ds)
    r = press(client, csrf, ds, html, tags=["cat", "whale"], action="save")
    assert r.status_code == 422 and "whale" in r.text
    assert sample(db, ss[0].id).label == "cat" and events_of(db, ds) == []


def test_a_concurrent_change_conflicts_and_keep_mine_saves_the_set(client, db, annotator, tagged):
    ds, ss = tagged
    other = make_user(db, "annotator")
    csrf, html = open_queue(client, annotator, ds)
    r = client.patch(f"/api/v1/samples/{ss[0].id}", json={"labels": ["fish"]}, headers={**other.headers, "If-Match": "1"})
    assert r.status_code == 200
    r = press(client, csrf, ds, html, tags=["cat", "dog"], action="save")
    assert r.status_code == 409
    assert f"{other.user.username} set it from cat to <strong>fish</strong>" in r.text
    assert "You chose <strong>cat, dog</strong>; nothing was overwritten." in r.text
    assert sample(db, ss[0].id).label == "fish"
    assert checked(r.text) == ["fish"], "the panel shows the set as it is now"
    r = press(client, csrf, ds, r.text, action="mine")
    assert r.status_code == 200 and shown(r.text) == ss[1].id
    assert [e[1:4] for e in events_of(db, ds)] == [("cat", "fish", "api"), ("fish", "cat|dog", "annotator")]


def test_single_label_panel_keeps_its_class_buttons(client, db, annotator):
    from tests.builders import add_samples, make_dataset

    ds = make_dataset(db, task="text", classes=["a", "b"])
    add_samples(db, ds, [{"label": "a", "text": "x"}])
    _, html = open_queue(client, annotator, ds)
    assert re.search(r'<button type="submit" name="set" value="b" data-key="b"', html)
    assert 'class="tag-check"' not in html and "Keep a<kbd>Enter</kbd>" in html
