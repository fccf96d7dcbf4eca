"""The review queue and grid mode, driven the way the page drives them: every action posts
the panel's hidden fields plus the pressed button, and the next panel comes back."""

from __future__ import annotations

import io
import re
from html import unescape

import pytest
from PIL import Image
from sqlalchemy import select

from app.datasets.storage import BlobStore
from app.models import Dataset, Prediction, Sample
from app.web.review import class_keys
from tests.builders import add_samples, make_dataset, make_user
from tests.web.review_builders import confident, events_of, make_run
from tests.web.session import htmx, login

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S | re.I)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
INLINE_STYLE = re.compile(r"<[^>]+\sstyle\s*=", re.I)
XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]


def form_of(html: str, form_id: str = "review-form") -> dict[str, str]:
    start = html.index(f'<form id="{form_id}"')
    body = html[start: html.index("</form>", start)]
    fields = {k: unescape(v) for k, v in HIDDEN.findall(body)}
    fields.pop("csrf_token", None)
    return fields


def shown(html: str) -> int | None:
    m = re.search(r'data-sample="(\d+)"', html)
    return int(m.group(1)) if m else None


def press(client, csrf: str, ds: Dataset, html: str, **pressed):
    """Post the panel's form with the pressed button's name and value, as HTMX does."""
    data = {**form_of(html), **{k: str(v) for k, v in pressed.items()}}
    return client.post(f"/datasets/{ds.id}/review", data=data, headers=htmx(csrf))


def disabled(html: str, action: str) -> bool:
    button = re.search(rf'<button type="submit" name="action" value="{action}"[^>]*>', html).group(0)
    return re.search(r"\sdisabled[\s>]", button) is not None


def sample(db, sample_id: int) -> Sample:
    db.expire_all()
    return db.get(Sample, sample_id)


@pytest.fixture
def ranked(db):
    """Four train samples ranked by loss: s0 (a, model says b) most suspicious, then s1, s2, s3;
    plus a valid sample and an unlabelled one the default queue leaves out."""
    ds = make_dataset(db, task="text", classes=["a", "b", "c"])
    rows = [
        {"label": "a", "text": "first"},
        {"label": "a", "text": "second"},
        {"label": "b", "text": "third"},
        {"label": "c", "text": "fourth"},
        {"label": "a", "text": "valid one", "split": "valid"},
        {"label": None, "text": "pool one"},
    ]
    ss = add_samples(db, ds, rows)
    make_run(db, ds, {
        ss[0].id: confident("b", ds.classes, 0.95),
        ss[1].id: confident("c", ds.classes, 0.8),
        ss[2].id: confident("b", ds.classes, 0.6),
        ss[3].id: confident("c", ds.classes, 0.9),
        ss[4].id: confident("b", ds.classes, 0.99),
        ss[5].id: {"a": 0.4, "b": 0.35, "c": 0.25},
    })
    return ds, ss


def open_queue(client, annotator, ds, **params):
    csrf = login(client, annotator.user.username)
    r = client.get(f"/datasets/{ds.id}/review", params=params)
    assert r.status_code == 200, r.text
    return csrf, r.text


def progress(client, html: str) -> str:
    """The "n of m reviewed" line the page loads once it shows (its hx-get)."""
    match = re.search(r'class="review-progress" hx-get="([^"]+)"', html)
    assert match, "the page loads no progress"
    r = client.get(match.group(1).replace("&amp;", "&"))
    assert r.status_code == 200, r.text
    return r.text


# --- the page ----------------------------------------------------------------------------


def test_queue_shows_the_most_suspicious_train_sample_with_predictions_keys_and_progress(client, db, annotator, ranked):
    ds, ss = ranked
    _, html = open_queue(client, annotator, ds)
    assert shown(html) == ss[0].id
    assert '<div class="stage-text">first</div>' in html
    assert '<p class="given">a</p>' in html
    assert "<strong>0</strong> of 4 reviewed" in progress(client, html), "train only, by default"
    assert 'name="order" value="loss"' in html
    # The prediction's classes with bars, the most likely first.
    probs = re.findall(r'<span class="prob-class">(\w)</span>\s*<meter min="0" max="1" value="([\d.]+)">', html)
    assert probs == [("b", "0.9500"), ("a", "0.0250"), ("c", "0.0250")]
    # A button per class, its key on it; the predicted class stands out.
    keys = re.findall(r'name="set" value="(\w)" data-key="(\w)"', html)
    assert keys == [("a", "a"), ("b", "b"), ("c", "c")], "a class named by a key gets that key"
    assert re.search(r'data-key="b"\s+class="class-button is-predicted"', html)
    for key in ("enter", "p", "space", "u", "arrowleft", "arrowright"):
        assert f'data-key="{key}"' in html
    assert "Accept b<kbd>P</kbd>" in html


def test_pages_carry_no_inline_script_style_or_handler(client, db, annotator, ranked):
    ds, ss = ranked
    login(client, annotator.user.username)
    for path in (f"/datasets/{ds.id}/review", f"/datasets/{ds.id}/review/grid", f"/datasets/{ds.id}/history",
                 f"/samples/{ss[0].id}/history"):
        r = client.get(path)
        assert r.status_code == 200, path
        for attrs, body in SCRIPT.findall(r.text):
            assert 'src="/static/' in attrs and not body.strip(), f"inline script on {path}"
        assert not INLINE_HANDLER.search(r.text), path
        assert not INLINE_STYLE.search(r.text), path
        for asset in ("/static/css/review.css", "/static/js/review.js"):
            assert asset in r.text and client.get(asset).status_code == 200


def test_filters_by_split_given_predicted_and_pair(client, db, annotator, ranked):
    ds, ss = ranked
    _, html = open_queue(client, annotator, ds, split="valid")
    assert shown(html) == ss[4].id and "of 1 reviewed" in progress(client, html)
    _, html = open_queue(client, annotator, ds, label="c")
    assert shown(html) == ss[3].id and "of 1 reviewed" in progress(client, html)
    _, html = open_queue(client, annotator, ds, predicted="c")
    assert shown(html) == ss[1].id and "of 2 reviewed" in progress(client, html)
    _, html = open_queue(client, annotator, ds, label="a", predicted="b")
    assert shown(html) == ss[0].id and "of 1 reviewed" in progress(client, html)
    _, html = open_queue(client, annotator, ds, split="all", order="id")
    assert shown(html) == ss[0].id and "of 6 reviewed" in progress(client, html)
    # The unlabelled pool has no loss: it is ranked by the model's doubt instead.
    _, html = open_queue(client, annotator, ds, split="unlabelled")
    assert shown(html) == ss[5].id and 'name="order" value="confusion_margin"' in html
    assert '<p class="given">unlabelled</p>' in html and disabled(html, "keep")


def test_without_a_run_the_queue_is_in_import_order(client, db, annotator):
    ds = make_dataset(db, task="text")
    ss = add_samples(db, ds, [{"label": "b"}, {"label": "a"}])
    _, html = open_queue(client, annotator, ds)
    assert shown(html) == ss[0].id and 'name="order" value="id"' in html
    assert "No prediction yet" in html
    _, html = open_queue(client, annotator, ds, order="loss")
    assert shown(html) == ss[0].id and "No finished run yet" in html


# --- actions -----------------------------------------------------------------------------


def test_keep_marks_reviewed_writes_no_event_and_brings_the_next(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds)
    r = press(client, csrf, ds, html, action="keep")
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="review-panel"'), "only the panel comes back"
    assert shown(r.text) == ss[1].id
    assert "<strong>1</strong> of 4 reviewed" in progress(client, r.text)
    s = sample(db, ss[0].id)
    assert (s.label, s.reviewed, s.version) == ("a", True, 2)
    assert events_of(db, ds) == []
    assert form_of(r.text)["undo"] == f"k{ss[0].id}v2"


def test_accept_prediction_relabels_as_annotator(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds)
    r = press(client, csrf, ds, html, action="accept")
    assert r.status_code == 200 and shown(r.text) == ss[1].id
    s = sample(db, ss[0].id)
    assert (s.label, s.reviewed, s.version) == ("b", True, 2)
    assert events_of(db, ds) == [(ss[0].id, "a", "b", "annotator", annotator.user.id, None)]
    assert db.get(Dataset, ds.id).label_version == 1


def test_set_class_by_its_button(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds)
    r = press(client, csrf, ds, html, set="c")
    assert r.status_code == 200 and shown(r.text) == ss[1].id
    assert sample(db, ss[0].id).label == "c"
    assert events_of(db, ds) == [(ss[0].id, "a", "c", "annotator", annotator.user.id, None)]
    # The change shows in the sample's history on the page.
    r = client.get(f"/samples/{ss[0].id}/history")
    assert "a → <strong>c</strong>" in r.text


def test_a_class_outside_the_dataset_is_refused(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds)
    r = press(client, csrf, ds, html, set="zebra")
    assert r.status_code == 422
    assert sample(db, ss[0].id).version == 1


def test_an_unlabelled_sample_that_gets_a_label_joins_train(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds, split="unlabelled")
    r = press(client, csrf, ds, html, set="a")
    assert r.status_code == 200
    s = sample(db, ss[5].id)
    assert (s.label, s.split, s.reviewed) == ("a", "train", True)
    assert "Nothing left to review here." in r.text


def test_skip_moves_on_without_a_change_and_the_sample_stays_in_the_queue(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds)
    r = press(client, csrf, ds, html, action="skip")
    assert shown(r.text) == ss[1].id
    assert sample(db, ss[0].id).version == 1 and events_of(db, ds) == []
    # Acting on the rest never brings the skipped sample back in this session...
    html = r.text
    for expected in (ss[2].id, ss[3].id, None):
        html = press(client, csrf, ds, html, action="keep").text
        assert shown(html) == expected
    assert "The samples you skipped are still waiting." in html
    assert "<strong>3</strong> of 4 reviewed" in progress(client, html)
    # ...but it is still unreviewed, first in line for the next session.
    assert shown(client.get(f"/datasets/{ds.id}/review").text) == ss[0].id


def test_arrows_revisit_earlier_samples_and_come_back(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds)
    assert disabled(html, "prev")
    html = press(client, csrf, ds, html, action="keep").text     # s0 kept, s1 now
    html = press(client, csrf, ds, html, action="skip").text     # s1 skipped, s2 now
    assert shown(html) == ss[2].id
    html = press(client, csrf, ds, html, action="prev").text
    assert shown(html) == ss[1].id and "revisiting" in html
    html = press(client, csrf, ds, html, action="prev").text
    assert shown(html) == ss[0].id and "revisiting" in html and '<span class="badge">reviewed</span>' in html
    html = press(client, csrf, ds, html, action="next").text
    assert shown(html) == ss[1].id
    # Relabelling a revisited sample saves it and goes on to the next one.
    html = press(client, csrf, ds, html, set="b").text
    assert shown(html) == ss[2].id and "revisiting" not in html
    assert sample(db, ss[1].id).label == "b"


# --- undo --------------------------------------------------------------------------------


def test_undo_of_a_label_change_restores_it_as_a_new_change(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds)
    html = press(client, csrf, ds, html, set="c").text
    html = press(client, csrf, ds, html, action="keep").text
    assert shown(html) == ss[2].id
    r = press(client, csrf, ds, html, action="undo")      # undoes the keep of s1
    assert r.status_code == 200 and shown(r.text) == ss[1].id
    assert sample(db, ss[1].id).reviewed is False
    r = press(client, csrf, ds, r.text, action="undo")    # undoes s0's relabel
    assert shown(r.text) == ss[0].id
    assert f"Undone: sample #{ss[0].id} is back to a" in r.text
    s = sample(db, ss[0].id)
    assert (s.label, s.split, s.reviewed, s.version) == ("a", "train", False, 3)
    assert events_of(db, ds) == [
        (ss[0].id, "a", "c", "annotator", annotator.user.id, None),
        (ss[0].id, "c", "a", "annotator", annotator.user.id, "undo"),
    ]
    assert disabled(r.text, "undo"), "nothing left to undo"
    r = press(client, csrf, ds, r.text, action="undo")
    assert "Nothing to undo." in r.text


def test_undo_of_a_keep_clears_reviewed(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds)
    html = press(client, csrf, ds, html, action="keep").text
    r = press(client, csrf, ds, html, action="undo")
    assert shown(r.text) == ss[0].id and "<strong>0</strong> of 4 reviewed" in progress(client, r.text)
    s = sample(db, ss[0].id)
    assert (s.label, s.reviewed, s.version) == ("a", False, 3)
    assert events_of(db, ds) == []


def test_undo_of_a_relabelled_unlabelled_sample_sends_it_back_to_the_pool(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds, split="unlabelled")
    html = press(client, csrf, ds, html, set="b").text
    r = press(client, csrf, ds, html, action="undo")
    assert shown(r.text) == ss[5].id
    s = sample(db, ss[5].id)
    assert (s.label, s.split, s.reviewed) == (None, "unlabelled", False)
    assert [e[1:3] for e in events_of(db, ds)] == [(None, "b"), ("b", None)]


def test_undo_refuses_when_someone_changed_the_sample_since(client, db, annotator, ranked):
    ds, ss = ranked
    other = make_user(db, "annotator")
    csrf, html = open_queue(client, annotator, ds)
    html = press(client, csrf, ds, html, set="c").text
    r = client.patch(f"/api/v1/samples/{ss[0].id}", json={"label": "b"}, headers={**other.headers, "If-Match": "2"})
    assert r.status_code == 200
    r = press(client, csrf, ds, html, action="undo")
    assert r.status_code == 200
    assert "Could not undo: this sample has changed since." in r.text
    assert f"Latest: {other.user.username} set c → b" in r.text
    assert sample(db, ss[0].id).label == "b", "their change stands"
    assert [e[1:4] for e in events_of(db, ds)] == [("a", "c", "annotator"), ("c", "b", "api")]


# --- conflicts ---------------------------------------------------------------------------


def test_conflict_shows_their_change_and_keep_mine_resubmits(client, db, annotator, ranked):
    ds, ss = ranked
    other = make_user(db, "annotator")
    csrf, html = open_queue(client, annotator, ds)
    r = client.patch(f"/api/v1/samples/{ss[0].id}", json={"label": "c"}, headers={**other.headers, "If-Match": "1"})
    assert r.status_code == 200
    r = press(client, csrf, ds, html, set="b")
    assert r.status_code == 409
    assert "Someone else changed this sample while you were looking." in r.text
    assert f"{other.user.username} set it from a to <strong>c</strong>" in r.text
    assert "You chose <strong>b</strong>; nothing was overwritten." in r.text
    assert shown(r.text) == ss[0].id and form_of(r.text)["version"] == "2"
    assert sample(db, ss[0].id).label == "c"
    # Keep mine: the same choice against the version now shown.
    r = press(client, csrf, ds, r.text, set="b")
    assert r.status_code == 200 and shown(r.text) == ss[1].id
    assert sample(db, ss[0].id).label == "b"
    assert [e[1:4] for e in events_of(db, ds)] == [("a", "c", "api"), ("c", "b", "annotator")]


def test_conflict_on_keep_then_take_theirs_moves_on(client, db, annotator, ranked):
    ds, ss = ranked
    other = make_user(db, "annotator")
    csrf, html = open_queue(client, annotator, ds)
    client.patch(f"/api/v1/samples/{ss[0].id}", json={"label": "b"}, headers={**other.headers, "If-Match": "1"})
    r = press(client, csrf, ds, html, action="keep")
    assert r.status_code == 409
    assert "You chose <strong>a</strong>" in r.text
    assert 'name="set" value="a" class="button button-small button-primary">Keep mine: a' in r.text
    r = press(client, csrf, ds, r.text, action="skip")
    assert r.status_code == 200 and shown(r.text) == ss[1].id
    s = sample(db, ss[0].id)
    assert (s.label, s.version) == ("b", 2)
    assert [e[1:4] for e in events_of(db, ds)] == [("a", "b", "api")]


# --- many classes ------------------------------------------------------------------------


def test_class_keys_digits_keep_their_digit_and_names_take_free_keys():
    assert class_keys([str(d) for d in range(10)]) == [(str(d), str(d)) for d in range(10)]
    assert class_keys(["cat", "1", "dog", "B", "b"]) == [("2", "cat"), ("1", "1"), ("3", "dog"), ("b", "B"), ("4", "b")]
    assert class_keys(["p", "u", "x"]) == [("1", "p"), ("2", "u"), ("x", "x")], "p and u belong to accept and undo"


def test_more_classes_than_keys_get_a_filterable_list(client, db, annotator):
    classes = [f"k{i:02d}" for i in range(40)]
    ds = make_dataset(db, task="text", classes=classes)
    (s,) = add_samples(db, ds, [{"label": "k00"}])
    csrf, html = open_queue(client, annotator, ds)
    keys = re.findall(r'name="set" value="(k\d\d)" data-key="(.)"', html)
    assert len(keys) == 34
    assert [k for _, k in keys[:11]] == [*"1234567890", "a"]
    assert "p" not in [k for _, k in keys] and "u" not in [k for _, k in keys]
    assert keys[-1] == ("k33", "z")
    assert 'data-filter="#class-choice"' in html and '<option value="k39">k39</option>' in html
    r = press(client, csrf, ds, html, action="choice", choice="k39")
    assert r.status_code == 200
    assert sample(db, s.id).label == "k39"


# --- images ------------------------------------------------------------------------------


def test_a_tiny_image_is_shown_large_and_crisp(client, db, annotator, settings):
    png = io.BytesIO()
    Image.new("L", (8, 8), 200).save(png, format="PNG")
    digest = BlobStore(settings.blob_dir).put(png.getvalue())
    ds = make_dataset(db, task="image", classes=["0", "1"])
    (s,) = add_samples(db, ds, [{"label": "0", "image_blob": digest}])
    _, html = open_queue(client, annotator, ds)
    assert (f'<img class="stage-image is-tiny" src="/api/v1/samples/{s.id}/image" alt="Sample #{s.id}"'
            f' width="8" height="8">') in html
    assert client.get(f"/api/v1/samples/{s.id}/image").status_code == 200
    grid = client.get(f"/datasets/{ds.id}/review/grid").text
    assert f'class="tile-image is-tiny" src="/api/v1/samples/{s.id}/image"' in grid


def test_tabular_features_show_as_a_table(client, db, annotator):
    ds = make_dataset(db, task="tabular")
    add_samples(db, ds, [{"label": "a", "features": {"petal<width>": 1.5, "colour": None}}])
    _, html = open_queue(client, annotator, ds)
    assert '<tr><th scope="row">petal&lt;width&gt;</th><td>1.5</td></tr>' in html
    assert '<tr><th scope="row">colour</th><td>—</td></tr>' in html


# --- escaping ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", XSS)
def test_sample_text_is_escaped_everywhere(client, db, annotator, text):
    ds = make_dataset(db, task="text", classes=["a", "<b>bold</b>"])
    (s,) = add_samples(db, ds, [{"label": "a", "text": text}])
    csrf, html = open_queue(client, annotator, ds)
    escaped = text.replace("<", "&lt;").replace(">", "&gt;")
    assert f'<div class="stage-text">{escaped}</div>' in html
    assert text not in html and "<b>bold</b>" not in html
    r = client.get(f"/datasets/{ds.id}/review/grid")
    assert f'<span class="tile-text">{escaped}</span>' in r.text and text not in r.text
    r = press(client, csrf, ds, html, set="<b>bold</b>")
    assert r.status_code == 200 and "<b>bold</b>" not in r.text
    r = client.get(f"/samples/{s.id}/history")
    assert text not in r.text and escaped in r.text and "<b>bold</b>" not in r.text
    r = client.get(f"/datasets/{ds.id}/history")
    assert "<b>bold</b>" not in r.text and "&lt;b&gt;bold&lt;/b&gt;" in r.text


# --- roles -------------------------------------------------------------------------------


def test_signed_out_visitors_go_to_the_login_page(client, db, ranked):
    ds, ss = ranked
    for path in (f"/datasets/{ds.id}/review", f"/datasets/{ds.id}/review/grid",
                 f"/datasets/{ds.id}/history", f"/samples/{ss[0].id}/history"):
        r = client.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/"), path
    r = client.post(f"/datasets/{ds.id}/review", data={"action": "keep", "current": ss[0].id, "version": 1})
    assert r.status_code == 401
    assert sample(db, ss[0].id).version == 1


def test_writes_need_the_csrf_token(client, db, annotator, ranked):
    ds, ss = ranked
    _, html = open_queue(client, annotator, ds)
    r = client.post(f"/datasets/{ds.id}/review", data={**form_of(html), "action": "keep"}, headers={"HX-Request": "true"})
    assert r.status_code == 403
    assert sample(db, ss[0].id).version == 1


@pytest.mark.parametrize("role", ["annotator", "engineer", "admin"])
def test_every_role_reviews(client, db, role, ranked):
    ds, ss = ranked
    account = make_user(db, role)
    csrf, html = open_queue(client, account, ds)
    assert press(client, csrf, ds, html, action="accept").status_code == 200
    assert sample(db, ss[0].id).label == "b"


def test_a_form_post_without_htmx_gets_the_whole_page(client, db, annotator, ranked):
    ds, ss = ranked
    csrf, html = open_queue(client, annotator, ds)
    r = client.post(f"/datasets/{ds.id}/review", data={**form_of(html), "action": "keep", "csrf_token": csrf})
    assert r.status_code == 200 and "<html" in r.text and shown(r.text) == ss[1].id


# --- grid mode ---------------------------------------------------------------------------


@pytest.fixture
def pairs(db):
    """Six train samples given a; the model says b for four of them (the pair a→b), c for two."""
    ds = make_dataset(db, task="text", classes=["a", "b", "c"])
    ss = add_samples(db, ds, [{"label": "a", "text": f"t{i}"} for i in range(6)])
    make_run(db, ds, {s.id: confident("b" if i < 4 else "c", ds.classes, 0.7 + i / 100) for i, s in enumerate(ss)})
    return ds, ss


def grid(client, ds, **params):
    r = client.get(f"/datasets/{ds.id}/review/grid", params=params)
    assert r.status_code == 200, r.text
    return r.text


def tiles(html: str) -> list[str]:
    return re.findall(r'name="ids" value="(\d+:\d+)"', html)


def test_grid_shows_a_page_of_the_pair(client, db, annotator, pairs):
    ds, ss = pairs
    login(client, annotator.user.username)
    html = grid(client, ds, label="a", predicted="b")
    assert tiles(html) == [f"{s.id}:1" for s in ss[3::-1]], "ranked by loss, most suspicious first"
    assert "<strong>0</strong> of 4 reviewed" in progress(client, html)
    assert '<span class="tile-given">a</span> → <span class="tile-predicted">b</span> 73%' in html
    assert 'data-select="all"' in html and 'name="set_label"' in html


def test_grid_pages_48_at_a_time(client, db, annotator):
    ds = make_dataset(db, task="text")
    add_samples(db, ds, [{"label": "a"} for _ in range(50)])
    login(client, annotator.user.username)
    html = grid(client, ds)
    assert len(tiles(html)) == 48
    next_url = unescape(re.search(r'<a href="([^"]+)">Next page</a>', html).group(1))
    assert len(tiles(client.get(next_url).text)) == 2


def test_grid_accept_predicted_reports_a_conflict_and_overwrites_nothing(client, db, annotator, pairs):
    ds, ss = pairs
    other = make_user(db, "annotator")
    csrf = login(client, annotator.user.username)
    html = grid(client, ds, label="a", predicted="b")
    # Someone relabels one of them after the page was drawn.
    client.patch(f"/api/v1/samples/{ss[1].id}", json={"label": "c"}, headers={**other.headers, "If-Match": "1"})
    picked = [f"{ss[0].id}:1", f"{ss[1].id}:1", f"{ss[2].id}:1"]
    r = client.post(f"/datasets/{ds.id}/review/grid",
                    data={**form_of(html, "grid-form"), "action": "accept", "ids": picked}, headers=htmx(csrf))
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="grid-panel"')
    assert "2 changed, 0 already right and marked reviewed, 1 not changed because someone else changed them first" in r.text
    assert f"#{ss[1].id} is now <strong>c</strong>: {other.user.username} set it" in r.text
    assert [(sample(db, s.id).label, sample(db, s.id).reviewed) for s in ss[:4]] == [
        ("b", True), ("c", True), ("b", True), ("a", False)]
    assert events_of(db, ds) == [
        (ss[1].id, "a", "c", "api", other.user.id, None),
        (ss[0].id, "a", "b", "annotator", annotator.user.id, None),
        (ss[2].id, "a", "b", "annotator", annotator.user.id, None),
    ]
    # The changed ones left the queue; the page shows what is left of the pair.
    assert tiles(r.text) == [f"{ss[3].id}:1"]

    # Undo the bulk action: both reverted, the other annotator's change untouched.
    undo = re.search(r'name="undo" value="([^"]+)"', r.text).group(1)
    r = client.post(f"/datasets/{ds.id}/review/grid",
                    data={**form_of(r.text, "grid-form"), "action": "undo", "undo": undo}, headers=htmx(csrf))
    assert r.status_code == 200 and "Undone: 2 samples back as they were" in r.text
    assert [sample(db, s.id).label for s in ss[:3]] == ["a", "c", "a"]
    assert [e[1:6] for e in events_of(db, ds)[3:]] == [
        ("b", "a", "annotator", annotator.user.id, "undo"), ("b", "a", "annotator", annotator.user.id, "undo")]
    assert sorted(tiles(r.text)) == sorted([f"{ss[0].id}:3", f"{ss[2].id}:3", f"{ss[3].id}:1"])


def test_grid_set_class_marks_already_right_samples_reviewed(client, db, annotator, pairs):
    ds, ss = pairs
    db.execute(Sample.__table__.update().where(Sample.id == ss[0].id).values(label="c"))
    csrf = login(client, annotator.user.username)
    html = grid(client, ds, split="all", order="id")
    r = client.post(f"/datasets/{ds.id}/review/grid",
                    data={**form_of(html, "grid-form"), "action": "set", "set_label": "c",
                          "ids": [f"{ss[0].id}:1", f"{ss[4].id}:1"]}, headers=htmx(csrf))
    assert r.status_code == 200
    assert "Set <strong>c</strong>:" in r.text and "1 changed, 1 already right and marked reviewed" in r.text
    assert [(sample(db, s.id).label, sample(db, s.id).reviewed) for s in (ss[0], ss[4])] == [("c", True), ("c", True)]
    assert [e[:3] for e in events_of(db, ds)] == [(ss[4].id, "a", "c")]
    # Undo covers the keep too: both go back into the queue.
    undo = re.search(r'name="undo" value="([^"]+)"', r.text).group(1)
    client.post(f"/datasets/{ds.id}/review/grid", data={**form_of(r.text, "grid-form"), "action": "undo", "undo": undo},
                headers=htmx(csrf))
    assert [(sample(db, s.id).label, sample(db, s.id).reviewed) for s in (ss[0], ss[4])] == [("c", False), ("a", False)]


def test_grid_asks_for_a_selection_and_a_class(client, db, annotator, pairs):
    ds, ss = pairs
    csrf = login(client, annotator.user.username)
    html = grid(client, ds)
    r = client.post(f"/datasets/{ds.id}/review/grid", data={**form_of(html, "grid-form"), "action": "accept"},
                    headers=htmx(csrf))
    assert "Select some samples first." in r.text
    r = client.post(f"/datasets/{ds.id}/review/grid",
                    data={**form_of(html, "grid-form"), "action": "set", "ids": [f"{ss[0].id}:1"]}, headers=htmx(csrf))
    assert "Choose the class to set." in r.text
    assert events_of(db, ds) == [] and sample(db, ss[0].id).version == 1
    assert db.scalar(select(Sample.reviewed).where(Sample.id == ss[0].id)) is False


def test_a_flagged_sample_shows_the_verdict_and_its_suggested_label(client, db, annotator, ranked):
    ds, ss = ranked
    pred = db.scalars(select(Prediction).where(Prediction.sample_id == ss[0].id)).one()
    pred.flagged, pred.suggested_label = True, "b"
    db.commit()
    _, html = open_queue(client, annotator, ds)
    assert shown(html) == ss[0].id
    assert re.search(r'likely wrong</span> suggested: <strong>b</strong>', html)
    # "Flagged only" narrows the queue to the flagged set.
    _, only = open_queue(client, annotator, ds, flagged="1")
    assert shown(only) == ss[0].id and "<strong>0</strong> of 1 reviewed" in progress(client, only)
    # A sample outside the flagged set carries no verdict.
    pred.flagged, pred.suggested_label = False, None
    db.commit()
    _, html = open_queue(client, annotator, ds)
    assert shown(html) == ss[0].id and "likely wrong" not in html


def test_the_default_order_is_the_review_priority_then_combined_then_loss(client, db, annotator, ranked):
    """The default order is loss for a run without the combined score, combined once it has one,
    and the review priority once the run has that."""
    ds, ss = ranked
    _, html = open_queue(client, annotator, ds)
    assert 'name="order" value="loss"' in html and shown(html) == ss[0].id
    # Low combined = suspicious: s2 goes first, then s3, whatever their loss.
    preds = {p.sample_id: p for p in db.scalars(select(Prediction))}
    for rank, s in enumerate([ss[2], ss[3], ss[0], ss[1]]):
        preds[s.id].combined = 0.1 * (rank + 1)
    db.commit()
    _, html = open_queue(client, annotator, ds)
    assert 'name="order" value="combined"' in html and shown(html) == ss[2].id
    # Low priority = first: s1 now, whatever its combined score.
    for rank, s in enumerate([ss[1], ss[0], ss[2], ss[3]]):
        preds[s.id].priority = 0.1 * (rank + 1)
    db.commit()
    _, html = open_queue(client, annotator, ds)
    assert 'name="order" value="priority"' in html and shown(html) == ss[1].id
    _, pool = open_queue(client, annotator, ds, split="unlabelled")
    assert 'name="order" value="confusion_margin"' in pool


def test_the_panel_says_why_a_sample_is_early_in_the_queue(client, db, annotator, ranked):
    ds, ss = ranked
    pred = db.scalars(select(Prediction).where(Prediction.sample_id == ss[0].id)).one()
    pred.flagged, pred.suggested_label, pred.priority, pred.review_gain = True, "b", 0.01, 0.42
    db.commit()
    _, html = open_queue(client, annotator, ds)
    assert shown(html) == ss[0].id
    assert 'data-review-gain="0.42"' in html
    assert "Why here: flagged as a likely label error; expected gain of a review 0.42" in html
    # A run without the gain (no embeddings, an older run): the self-confidence behind the place.
    pred.review_gain = None
    db.commit()
    _, html = open_queue(client, annotator, ds)
    assert "Why here: flagged as a likely label error; self-confidence" in html
    # No position in the review order at all: nothing to explain.
    pred.priority = None
    db.commit()
    _, html = open_queue(client, annotator, ds)
    assert "Why here" not in html
