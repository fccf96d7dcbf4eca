"""The duplicates view (/datasets/{id}/duplicates) and the dataset page's data-issues panel,
driven the way the page drives them: a group's card posts its hidden fields plus the pressed
button, and the card comes back. Every decision goes through the audited label service, is
refused whole when the group moved on since it was shown, and needs the CSRF token."""

from __future__ import annotations

import json
import re
from html import unescape

import numpy as np
import pytest
from sqlalchemy import select

from app.models import LabelEvent, Run, Sample
from tests.builders import add_samples, make_dataset, make_user
from tests.web.session import htmx, login

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
A, B, C = "a" * 64, "b" * 64, "c" * 64


def card_of(html: str, key: str) -> str:
    start = html.index(f'data-group="{key}"')
    start = html.rindex("<section", 0, start)
    return html[start: html.index("</section>", start)]


def fields(card: str) -> dict[str, str]:
    out = {k: unescape(v) for k, v in HIDDEN.findall(card)}
    out.pop("csrf_token", None)
    return out


def decide(client, csrf, ds, card: str, **pressed):
    return client.post(f"/datasets/{ds.id}/duplicates", data={**fields(card), **{k: str(v) for k, v in pressed.items()}},
                       headers=htmx(csrf))


def state(db, samples) -> list[tuple[str, str | None]]:
    db.expire_all()
    return [(db.get(Sample, s.id).split.value, db.get(Sample, s.id).label) for s in samples]


def events(db, ds) -> list[tuple]:
    db.expire_all()
    rows = db.scalars(select(LabelEvent).where(LabelEvent.dataset_id == ds.id).order_by(LabelEvent.id)).all()
    return [(e.sample_id, e.old_split, e.new_split, e.old_label, e.new_label, e.source, e.reason) for e in rows]


@pytest.fixture
def groups(db):
    """Group A: three copies, two in train and one in test (a leak); group B: two train copies
    labelled differently (a conflict); group C: two train copies that agree; one single sample."""
    ds = make_dataset(db, task="text", classes=["cat", "dog"])
    ss = add_samples(db, ds, [
        {"label": "cat", "text": "a cat", "content_hash": A, "external_id": "a1"},
        {"label": "cat", "text": "a cat", "content_hash": A, "external_id": "a2"},
        {"label": "cat", "text": "a cat", "content_hash": A, "external_id": "a3", "split": "test"},
        {"label": "cat", "text": "cat or dog", "content_hash": B, "external_id": "b1"},
        {"label": "dog", "text": "cat or dog", "content_hash": B, "external_id": "b2"},
        {"label": "dog", "text": "a dog", "content_hash": C, "external_id": "c1"},
        {"label": "dog", "text": "a dog", "content_hash": C, "external_id": "c2"},
        {"label": "dog", "text": "alone", "content_hash": "d" * 64, "external_id": "d1"},
    ])
    return ds, ss


def open_page(client, account, ds, **params):
    csrf = login(client, account.user.username)
    r = client.get(f"/datasets/{ds.id}/duplicates", params=params)
    assert r.status_code == 200, r.text
    return csrf, r.text


# --- the page ----------------------------------------------------------------------------------


def test_page_shows_each_group_side_by_side_with_splits_labels_and_what_is_wrong(client, db, annotator, groups):
    ds, ss = groups
    _, html = open_page(client, annotator, ds)
    assert [k for k in re.findall(r'data-group="(\w+)"', html)] == [A, B, C], "groups of two or more, in key order"
    a = card_of(html, A)
    assert re.findall(r'data-member="(\d+)" data-split="(\w+)"', a) == [
        (str(ss[0].id), "train"), (str(ss[1].id), "train"), (str(ss[2].id), "test")]
    assert "a3" in a and '<strong class="member-label">cat</strong>' in a and "a cat" in a
    assert "data-leak" in a and "data-disagree" not in a
    assert fields(a)["members"] == ",".join(f"{s.id}:1" for s in ss[:3])
    assert 'data-remove="train"' in a and 'data-remove="test"' in a and "data-relabel" in a
    b = card_of(html, B)
    assert "data-disagree" in b and "data-leak" not in b

    _, leak = open_page(client, annotator, ds, scope="leak")
    assert re.findall(r'data-group="(\w+)"', leak) == [A]
    conflict = client.get(f"/datasets/{ds.id}/duplicates", params={"scope": "conflict"}).text
    assert re.findall(r'data-group="(\w+)"', conflict) == [B]
    # Pages of groups walk them all once.
    from app.web import duplicates as page_module

    page_module.PAGE, old = 2, page_module.PAGE
    try:
        first = client.get(f"/datasets/{ds.id}/duplicates").text
        assert re.findall(r'data-group="(\w+)"', first) == [A, B]
        nxt = re.search(r'<a href="([^"]+)">Next page</a>', first).group(1)
        assert re.findall(r'data-group="(\w+)"', client.get(unescape(nxt)).text) == [C]
    finally:
        page_module.PAGE = old
    assert "No near duplicate groups here" in client.get(f"/datasets/{ds.id}/duplicates?kind=near").text
    assert client.get(f"/datasets/{ds.id}/duplicates?kind=other").status_code == 422
    assert client.get(f"/datasets/{ds.id}/duplicates?cursor=nothex").status_code == 400


# --- decisions ---------------------------------------------------------------------------------


def test_keep_one_excludes_the_others_audited_and_undone_as_a_whole(client, db, annotator, groups):
    ds, ss = groups
    csrf, html = open_page(client, annotator, ds)
    r = decide(client, csrf, ds, card_of(html, A), keep=ss[1].id)
    assert r.status_code == 200, r.text
    assert r.text.lstrip().startswith("<section"), "HTMX gets the group's card"
    assert "data-resolved" in r.text and "one copy left in use" in r.text
    assert f"Kept #{ss[1].id}: #{ss[0].id}, #{ss[2].id} moved to excluded." in r.text
    assert state(db, ss[:3]) == [("excluded", "cat"), ("train", "cat"), ("excluded", "cat")]
    assert events(db, ds) == [
        (ss[0].id, "train", "excluded", "cat", "cat", "annotator", f"duplicate group: kept #{ss[1].id}"),
        (ss[2].id, "test", "excluded", "cat", "cat", "annotator", f"duplicate group: kept #{ss[1].id}"),
    ]
    assert db.get(Sample, ss[0].id).version == 2
    # The card's undo takes the whole decision back.
    r = decide(client, csrf, ds, r.text, action="undo")
    assert r.status_code == 200, r.text
    assert "Undone: 2 changes taken back." in r.text and "data-resolved" not in r.text
    assert state(db, ss[:3]) == [("train", "cat"), ("train", "cat"), ("test", "cat")]
    assert [e[6] for e in events(db, ds)][-2:] == ["undo", "undo"]


def test_remove_from_a_split_and_relabel_the_group(client, db, annotator, groups):
    ds, ss = groups
    csrf, html = open_page(client, annotator, ds)
    # The test copy of a leaking group goes; the train copies stay.
    r = decide(client, csrf, ds, card_of(html, A), split="test")
    assert r.status_code == 200, r.text
    assert f"Removed the test copies: #{ss[2].id} moved to excluded." in r.text and "data-leak" not in r.text
    assert state(db, ss[:3]) == [("train", "cat"), ("train", "cat"), ("excluded", "cat")]
    # Removing a group's only split keeps its lowest copy, so it is never lost altogether.
    r = decide(client, csrf, ds, card_of(html, C), split="train")
    assert r.status_code == 200, r.text
    assert state(db, ss[5:7]) == [("train", "dog"), ("excluded", "dog")] and "data-resolved" in r.text
    # Relabel: every labelled member gets the class, as a reviewed label.
    r = decide(client, csrf, ds, card_of(html, B), action="relabel", label="cat")
    assert r.status_code == 200, r.text
    assert "Relabelled the group cat: 1 label changed." in r.text and "data-disagree" not in r.text
    assert state(db, ss[3:5]) == [("train", "cat"), ("train", "cat")]
    assert all(db.get(Sample, s.id).reviewed for s in ss[3:5])
    assert events(db, ds)[-1] == (ss[4].id, "train", "train", "dog", "cat", "annotator", "duplicate group relabelled")
    # Choices that are missing come back as a note, nothing written.
    before = events(db, ds)
    fresh = card_of(client.get(f"/datasets/{ds.id}/duplicates").text, B)
    r = decide(client, csrf, ds, fresh, action="relabel", label="")
    assert r.status_code == 200 and "Choose the class to give the group." in r.text
    assert events(db, ds) == before
    r = decide(client, csrf, ds, fresh, action="relabel", label="bird")
    assert r.status_code == 422 and events(db, ds) == before


def test_a_stale_card_is_a_visible_conflict_and_nothing_is_overwritten(client, db, annotator, engineer, groups):
    ds, ss = groups
    csrf, html = open_page(client, annotator, ds)
    a = card_of(html, A)
    # Someone else relabels a member of the group after the card was shown.
    r = client.patch(f"/api/v1/samples/{ss[2].id}", json={"label": "dog"}, headers={**engineer.headers, "If-Match": "1"})
    assert r.status_code == 200, r.text
    before = events(db, ds)
    r = decide(client, csrf, ds, a, keep=ss[0].id)
    assert r.status_code == 409, r.text
    assert f"Sample #{ss[2].id} changed since this group was shown" in r.text
    assert f"{engineer.user.username} set it cat → dog" in r.text and "Nothing was changed" in r.text
    assert state(db, ss[:3]) == [("train", "cat"), ("train", "cat"), ("test", "dog")], "no member moved"
    assert events(db, ds) == before
    # The card that came back shows the group as it is now; deciding again from it works.
    assert f"{ss[2].id}:2" in fields(r.text)["members"]
    r = decide(client, csrf, ds, r.text, keep=ss[0].id)
    assert r.status_code == 200, r.text
    assert state(db, ss[:3]) == [("train", "cat"), ("excluded", "cat"), ("excluded", "dog")]

    # A sample that joined the group since is a conflict too.
    csrf_html = client.get(f"/datasets/{ds.id}/duplicates").text
    b = card_of(csrf_html, B)
    joined = add_samples(db, ds, [{"label": "cat", "text": "cat or dog", "content_hash": B, "external_id": "b3"}])[0]
    r = decide(client, csrf, ds, b, action="relabel", label="dog")
    assert r.status_code == 409 and f"joined: #{joined.id}" in r.text
    assert state(db, ss[3:5]) == [("train", "cat"), ("train", "dog")]


def test_writes_need_the_csrf_token_a_user_and_a_group_of_this_dataset(client, db, annotator, groups):
    ds, ss = groups
    csrf, html = open_page(client, annotator, ds)
    a = card_of(html, A)
    r = client.post(f"/datasets/{ds.id}/duplicates", data={**fields(a), "keep": ss[0].id},
                    headers={"HX-Request": "true"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post(f"/datasets/{ds.id}/duplicates", data={**fields(a), "keep": ss[0].id, "csrf_token": "forged"})
    assert r.status_code == 403
    assert state(db, ss[:3]) == [("train", "cat"), ("train", "cat"), ("test", "cat")] and events(db, ds) == []
    # A plain form post (no JavaScript) with the token works: the page again, the card saying what was done.
    r = client.post(f"/datasets/{ds.id}/duplicates", data={**fields(a), "keep": ss[0].id, "csrf_token": csrf},
                    follow_redirects=False)
    assert r.status_code == 200 and r.text.lstrip().startswith("<!doctype html>")
    assert f"Kept #{ss[0].id}" in card_of(r.text, A) and re.findall(r'data-group="(\w+)"', r.text) == [A, B, C]
    assert state(db, ss[:3]) == [("train", "cat"), ("excluded", "cat"), ("excluded", "cat")]
    # Another dataset's group, a member that is not one, a malformed key: refused.
    other = make_dataset(db, task="text", classes=["cat", "dog"])
    assert client.post(f"/datasets/{other.id}/duplicates", data={**fields(a), "keep": ss[0].id},
                       headers=htmx(csrf)).status_code == 404
    b = card_of(client.get(f"/datasets/{ds.id}/duplicates").text, B)
    assert decide(client, csrf, ds, b, keep=ss[0].id).status_code == 422
    assert decide(client, csrf, ds, b.replace(B, "zz"), keep=ss[3].id).status_code == 400

    # No credentials: the page sends the browser to the login page, a post is refused.
    client.cookies.clear()
    r = client.get(f"/datasets/{ds.id}/duplicates", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.post(f"/datasets/{ds.id}/duplicates", data=fields(b), follow_redirects=False).status_code in (303, 401)


@pytest.mark.parametrize("role", ["annotator", "engineer", "admin"])
def test_whoever_relabels_in_the_queue_decides_groups(client, db, groups, role):
    ds, ss = groups
    account = make_user(db, role)
    csrf, html = open_page(client, account, ds)
    r = decide(client, csrf, ds, card_of(html, B), action="relabel", label="dog")
    assert r.status_code == 200, r.text
    assert state(db, ss[3:5]) == [("train", "dog"), ("train", "dog")]
    assert events(db, ds)[-1][:5] == (ss[3].id, "train", "train", "cat", "dog")
    # A bearer token works as for the REST routes (no CSRF token needed without a cookie).
    client.cookies.clear()
    b = card_of(client.get(f"/datasets/{ds.id}/duplicates", headers=account.headers).text, B)
    r = client.post(f"/datasets/{ds.id}/duplicates", data={**fields(b), "action": "relabel", "label": "cat"},
                    headers={**account.headers, "HX-Request": "true"})
    assert r.status_code == 200, r.text


# --- near duplicates and the dataset page's panel, from an external run with embeddings --------


CLASSES = ["cat", "dog"]


def _upload_run(client, ds, engineer, samples, embeddings):
    lines = []
    for s, e in zip(samples, embeddings):
        p = [0.9, 0.1] if s.label == "cat" else [0.1, 0.9]
        if s.external_id == "v1":
            p = [0.9, 0.1]  # one valid sample the model gets wrong
        lines.append(json.dumps({"external_id": s.external_id, "cat": p[0], "dog": p[1], "embedding": e}))
    r = client.post(f"/api/v1/datasets/{ds.id}/runs", headers=engineer.headers,
                    files={"file": ("p.jsonl", "\n".join(lines).encode(), "application/json")},
                    data={"name": "embedded", "out_of_fold": "true", "normalize": "none"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
def embedded(client, db, engineer):
    """40 train and 10 valid samples spread in 4 dimensions; train t0 and valid v0 sit on one
    point (a near pair leaking into valid), train t1 and t2 too with different labels (a
    conflicting pair), and train t3 far from everything (an outlier)."""
    ds = make_dataset(db, task="text", classes=CLASSES)
    rng = np.random.default_rng(0)
    rows = [{"label": CLASSES[i % 2], "text": f"train {i}", "external_id": f"t{i}"} for i in range(40)]
    rows += [{"label": CLASSES[i % 2], "text": f"valid {i}", "external_id": f"v{i}", "split": "valid"} for i in range(10)]
    rows[1]["label"], rows[2]["label"] = "cat", "dog"
    samples = add_samples(db, ds, rows)
    emb = rng.normal(size=(50, 4)).round(4)
    emb[40] = emb[0]
    emb[2] = emb[1]
    emb[3] = [60.0, 60.0, 60.0, 60.0]
    run_id = _upload_run(client, ds, engineer, samples, emb.tolist())
    return ds, samples, run_id


def test_near_groups_and_the_issues_panel(client, db, annotator, embedded):
    ds, ss, run_id = embedded
    run = db.get(Run, run_id)
    issues = run.info["data_issues"]
    assert issues["embedding"] and issues["groups"] == 2 and issues["leak_groups"] == 1 and issues["conflict_groups"] == 1
    assert issues["outliers"] >= 1
    csrf = login(client, annotator.user.username)

    page = client.get(f"/datasets/{ds.id}").text
    panel = page[page.index("data-issues"): page.index("</section>", page.index("data-issues"))]
    assert re.search(r'data-issue="near".*?<td class="num">2</td>', panel, re.S)
    assert re.search(r'data-issue="leak".*?<td class="num">1</td>', panel, re.S)
    assert re.search(r'data-issue="conflict".*?<td class="num">1</td>', panel, re.S)
    assert re.search(r'data-issue="exact".*?<td class="num">0</td>', panel, re.S)
    assert f'href="/datasets/{ds.id}/duplicates?kind=near&amp;scope=leak"' in panel
    assert f'href="/datasets/{ds.id}/review?order=outlier&amp;split=train"' in panel
    leak_url = re.search(r'hx-get="([^"]+)" hx-trigger="load"', panel).group(1)
    effect = client.get(leak_url, headers=htmx()).text
    assert "<strong>1</strong> of 10 labelled samples leaked (0 exact, 1 near)" in effect
    assert "accuracy 90.0% with them, <strong>88.9%</strong> without" in effect

    html = client.get(f"/datasets/{ds.id}/duplicates", params={"kind": "near", "scope": "leak"}).text
    assert re.findall(r'data-group="(\d+)"', html) == [str(ss[0].id)]
    card = card_of(html, str(ss[0].id))
    assert fields(card)["run"] == str(run_id) and "model: cat" in card
    r = decide(client, csrf, ds, card, split="valid")
    assert r.status_code == 200, r.text
    assert state(db, [ss[0], ss[40]]) == [("train", "cat"), ("excluded", "cat")]
    # The conflicting pair: relabel it whole.
    html = client.get(f"/datasets/{ds.id}/duplicates", params={"kind": "near", "scope": "conflict"}).text
    r = decide(client, csrf, ds, card_of(html, str(ss[1].id)), action="relabel", label="dog")
    assert r.status_code == 200 and state(db, ss[1:3]) == [("train", "dog"), ("train", "dog")]
    assert client.get(f"/datasets/{ds.id}/duplicates", params={"kind": "near", "run": 999999}).status_code == 404
