"""History pages: per sample and per dataset, who changed what and when; every revert goes
through revert_event, and a revert that would undo later work asks first."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.models import LabelEvent, Sample
from tests.builders import add_samples, make_dataset, make_user
from tests.web.review_builders import events_of
from tests.web.session import htmx, login


def relabel(client, account, sample_id: int, version: int, label: str) -> None:
    r = client.patch(f"/api/v1/samples/{sample_id}", json={"label": label},
                     headers={**account.headers, "If-Match": str(version)})
    assert r.status_code == 200, r.text


def event_ids(db, sample_id: int) -> list[int]:
    db.expire_all()
    return list(db.scalars(select(LabelEvent.id).where(LabelEvent.sample_id == sample_id).order_by(LabelEvent.id)))


def rows(html: str) -> list[str]:
    table = html[html.index('class="table history-table"'):]
    body = table[table.index("<tbody>"): table.index("</tbody>")]
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r)).strip() for r in body.split("<tr>")[1:]]


def test_sample_history_shows_who_changed_what_and_when(client, db, annotator):
    other = make_user(db, "annotator")
    ds = make_dataset(db, task="text")
    (s,) = add_samples(db, ds, [{"label": "a", "text": "a sentence"}])
    relabel(client, annotator, s.id, 1, "b")
    relabel(client, other, s.id, 2, "c")
    login(client, annotator.user.username)
    r = client.get(f"/samples/{s.id}/history")
    assert r.status_code == 200
    assert f"History of sample #{s.id}" in r.text and "a sentence" in r.text
    lines = rows(r.text)
    assert len(lines) == 2
    assert re.match(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d UTC {other.user.username} through the API b → c train v2 Revert", lines[0])
    assert re.match(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d UTC {annotator.user.username} through the API a → b train v1 Revert", lines[1])
    assert r.text.count('action="/samples/%d/history/revert"' % s.id) == 2, "a revert button per event"


def test_a_sample_without_changes_says_so(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    login(client, annotator.user.username)
    assert "No changes yet." in client.get(f"/samples/{s.id}/history").text
    assert client.get("/samples/999/history").status_code == 404


def test_revert_the_latest_change_from_the_sample_page(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    relabel(client, annotator, s.id, 1, "b")
    csrf = login(client, annotator.user.username)
    (event_id,) = event_ids(db, s.id)
    r = client.post(f"/samples/{s.id}/history/revert", data={"event_id": event_id, "version": 2}, headers=htmx(csrf))
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="history-panel"')
    assert f"Reverted event #{event_id}: sample #{s.id} is a (train) again." in r.text
    assert events_of(db, ds)[-1] == (s.id, "b", "a", "annotator", annotator.user.id, "revert")
    assert len(rows(r.text)) == 2


def test_reverting_an_older_change_asks_first_then_forces(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    relabel(client, annotator, s.id, 1, "b")
    relabel(client, annotator, s.id, 2, "c")
    first, _ = event_ids(db, s.id)
    csrf = login(client, annotator.user.username)
    r = client.post(f"/samples/{s.id}/history/revert", data={"event_id": first, "version": 3}, headers=htmx(csrf))
    assert r.status_code == 409
    assert f"Sample #{s.id} has changed since event #{first}" in r.text
    assert f"Revert event #{first} anyway" in r.text and 'name="force" value="true"' in r.text
    assert len(event_ids(db, s.id)) == 2
    r = client.post(f"/samples/{s.id}/history/revert", data={"event_id": first, "version": 3, "force": "true"},
                    headers=htmx(csrf))
    assert r.status_code == 200
    db.expire_all()
    assert db.get(Sample, s.id).label == "a"
    assert events_of(db, ds)[-1][1:3] == ("c", "a")


def test_a_revert_from_a_stale_page_overwrites_nothing(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    relabel(client, annotator, s.id, 1, "b")
    csrf = login(client, annotator.user.username)
    (event_id,) = event_ids(db, s.id)
    # Marked reviewed by someone after the page was drawn: no new event, but a new version.
    client.patch(f"/api/v1/samples/{s.id}", json={"reviewed": True}, headers={**annotator.headers, "If-Match": "2"})
    r = client.post(f"/samples/{s.id}/history/revert", data={"event_id": event_id, "version": 2}, headers=htmx(csrf))
    assert r.status_code == 409
    assert "changed while you were looking" in r.text
    db.expire_all()
    assert db.get(Sample, s.id).label == "b" and len(event_ids(db, s.id)) == 1


def test_an_event_of_another_sample_is_404(client, db, annotator):
    ds = make_dataset(db)
    ss = add_samples(db, ds, [{"label": "a"}, {"label": "a"}])
    relabel(client, annotator, ss[0].id, 1, "b")
    csrf = login(client, annotator.user.username)
    r = client.post(f"/samples/{ss[1].id}/history/revert", data={"event_id": event_ids(db, ss[0].id)[0], "version": 1},
                    headers=htmx(csrf))
    assert r.status_code == 404
    other_ds = make_dataset(db)
    r = client.post(f"/datasets/{other_ds.id}/history/revert",
                    data={"event_id": event_ids(db, ss[0].id)[0], "version": 2}, headers=htmx(csrf))
    assert r.status_code == 404
    assert len(events_of(db, ds)) == 1


def test_dataset_history_pages_newest_first(client, db, annotator):
    ds = make_dataset(db)
    ss = add_samples(db, ds, [{"label": "a"} for _ in range(55)])
    for s in ss:
        relabel(client, annotator, s.id, 1, "b")
    login(client, annotator.user.username)
    r = client.get(f"/datasets/{ds.id}/history")
    assert r.status_code == 200
    lines = rows(r.text)
    assert len(lines) == 50
    assert f"#{ss[-1].id} s54 a → b" in lines[0]
    older = re.search(r'<a href="([^"]+)">Older changes</a>', r.text).group(1).replace("&amp;", "&")
    lines = rows(client.get(older).text)
    assert len(lines) == 5 and f"#{ss[0].id} s0 a → b" in lines[-1]


def test_dataset_history_filters_by_user_and_source(client, db, annotator):
    other = make_user(db, "annotator")
    ds = make_dataset(db)
    ss = add_samples(db, ds, [{"label": "a"}, {"label": "a"}])
    relabel(client, annotator, ss[0].id, 1, "b")
    relabel(client, other, ss[1].id, 1, "c")
    csrf = login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}/history").text
    assert f'<option value="{other.user.username}">' in html and f'<option value="{annotator.user.username}">' in html
    lines = rows(client.get(f"/datasets/{ds.id}/history", params={"user": other.user.username}).text)
    assert len(lines) == 1 and f"#{ss[1].id}" in lines[0]
    assert "No label changes for this filter." in client.get(f"/datasets/{ds.id}/history", params={"source": "model"}).text
    # A revert made on a page has source annotator.
    client.post(f"/samples/{ss[0].id}/history/revert", data={"event_id": event_ids(db, ss[0].id)[0], "version": 2},
                headers=htmx(csrf))
    lines = rows(client.get(f"/datasets/{ds.id}/history", params={"source": "annotator"}).text)
    assert len(lines) == 1 and "b → a" in lines[0] and "revert" in lines[0]


def test_revert_from_the_dataset_page_keeps_the_filter(client, db, annotator):
    other = make_user(db, "annotator")
    ds = make_dataset(db)
    ss = add_samples(db, ds, [{"label": "a"}, {"label": "a"}])
    relabel(client, annotator, ss[0].id, 1, "b")
    relabel(client, other, ss[1].id, 1, "c")
    csrf = login(client, annotator.user.username)
    event_id = event_ids(db, ss[1].id)[0]
    r = client.post(f"/datasets/{ds.id}/history/revert",
                    data={"event_id": event_id, "version": 2, "user": other.user.username}, headers=htmx(csrf))
    assert r.status_code == 200
    assert f"Reverted event #{event_id}: sample #{ss[1].id} is a (train) again." in r.text
    assert f'<option value="{other.user.username}" selected>' in r.text
    assert len(rows(r.text)) == 1, "still only their changes"
    assert events_of(db, ds)[-1] == (ss[1].id, "c", "a", "annotator", annotator.user.id, "revert")


def test_dataset_history_superseded_revert_asks_first(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    relabel(client, annotator, s.id, 1, "b")
    relabel(client, annotator, s.id, 2, "c")
    first, _ = event_ids(db, s.id)
    csrf = login(client, annotator.user.username)
    r = client.post(f"/datasets/{ds.id}/history/revert", data={"event_id": first, "version": 3}, headers=htmx(csrf))
    assert r.status_code == 409 and f"Revert event #{first} anyway" in r.text
    assert f'href="/samples/{s.id}/history"' in r.text
    assert len(event_ids(db, s.id)) == 2


def test_history_pages_need_a_user(client, db):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    r = client.post(f"/samples/{s.id}/history/revert", data={"event_id": 1, "version": 1})
    assert r.status_code == 401
    r = client.get(f"/datasets/{ds.id}/history", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=/datasets/{ds.id}/history"


def test_who_made_a_change_reads_as_words_not_a_role_badge(client, db, annotator):
    """The source beside the user says how the change was made ("in the browser", "through
    the API"), not as a tag that reads like the user's role."""
    ds = make_dataset(db)
    ss = add_samples(db, ds, [{"label": "a"}])
    relabel(client, annotator, ss[0].id, 1, "b")  # through the API
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}/history").text
    assert f"{annotator.user.username} through the API" in rows(html)[0]
    assert '<span class="muted" data-source="api">through the API</span>' in html and 'class="tag">api' not in html
