"""Undo and revert: a revert is a new change through the same conditional update, refused when
the sample moved on since the event (409) unless forced; bulk changes never overwrite; the
queue's helpers (progress counts, the head of a queue at a cursor) and the event listing."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.labels import queries, queue, service
from app.labels.schemas import SampleUpdate
from app.models import Dataset, LabelEvent, Sample
from tests.builders import add_samples, make_dataset, make_user
from tests.web.review_builders import confident, events_of, make_run


def patch(client, account, sample_id: int, version: int, **body):
    return client.patch(f"/api/v1/samples/{sample_id}", json=body, headers={**account.headers, "If-Match": str(version)})


def revert(client, account, event_id: int, version: int | None = None, **body):
    headers = dict(account.headers)
    if version is not None:
        headers["If-Match"] = str(version)
    return client.post(f"/api/v1/label-events/{event_id}/revert", json=body or None, headers=headers)


def event_ids(db, sample_id: int) -> list[int]:
    db.expire_all()
    return list(db.scalars(select(LabelEvent.id).where(LabelEvent.sample_id == sample_id).order_by(LabelEvent.id)))


# --- REST ----------------------------------------------------------------------------------


def test_revert_restores_the_previous_label_as_a_new_event(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    assert patch(client, annotator, s.id, 1, label="b").status_code == 200
    (event_id,) = event_ids(db, s.id)
    r = revert(client, annotator, event_id)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["label"], body["split"], body["version"], body["reviewed"]) == ("a", "train", 3, False)
    assert r.headers["etag"] == '"3"'
    newest = body["history"][0]
    assert (newest["old_label"], newest["new_label"], newest["source"], newest["user"], newest["reason"]) == (
        "b", "a", "api", annotator.user.username, "revert")
    assert events_of(db, ds)[-1] == (s.id, "b", "a", "api", annotator.user.id, "revert")
    db.expire_all()
    assert db.get(Dataset, ds.id).label_version == 2


def test_revert_of_a_superseded_event_is_409_unless_forced(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    patch(client, annotator, s.id, 1, label="b")
    patch(client, annotator, s.id, 2, label="c")
    first, _ = event_ids(db, s.id)
    r = revert(client, annotator, first)
    assert r.status_code == 409
    assert "has changed since event" in r.json()["detail"]
    assert r.json()["current"]["label"] == "c" and r.json()["current"]["version"] == 3
    assert len(event_ids(db, s.id)) == 2, "nothing written"
    r = revert(client, annotator, first, force=True)
    assert r.status_code == 200
    assert r.json()["label"] == "a"
    assert events_of(db, ds)[-1][1:3] == ("c", "a")


def test_revert_with_a_stale_if_match_is_409(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    patch(client, annotator, s.id, 1, label="b")
    (event_id,) = event_ids(db, s.id)
    # A keep moves the version on without an event: the revert still sees the change.
    patch(client, annotator, s.id, 2, reviewed=True)
    r = revert(client, annotator, event_id, version=2)
    assert r.status_code == 409
    assert r.json()["current"]["version"] == 3
    assert revert(client, annotator, event_id, version=3).status_code == 200


def test_revert_of_a_first_label_returns_the_sample_to_the_pool(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": None}])
    r = patch(client, annotator, s.id, 1, label="c")
    assert r.json()["split"] == "train"
    (event_id,) = event_ids(db, s.id)
    r = revert(client, annotator, event_id)
    assert (r.json()["label"], r.json()["split"]) == (None, "unlabelled")
    assert events_of(db, ds)[-1][1:3] == ("c", None)


def test_revert_of_a_split_move_moves_it_back(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    patch(client, annotator, s.id, 1, split="valid")
    (event_id,) = event_ids(db, s.id)
    r = revert(client, annotator, event_id)
    assert (r.json()["label"], r.json()["split"]) == ("a", "train")


def test_revert_of_a_class_no_longer_in_the_dataset_is_422(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    patch(client, annotator, s.id, 1, label="b")
    db.execute(Dataset.__table__.update().where(Dataset.id == ds.id).values(classes=["b", "c"]))
    r = revert(client, annotator, event_ids(db, s.id)[0])
    assert r.status_code == 422 and "'a'" in r.json()["detail"]


def test_revert_of_an_unknown_event_is_404(client, annotator):
    assert revert(client, annotator, 999).status_code == 404


def test_revert_needs_a_user(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    patch(client, annotator, s.id, 1, label="b")
    r = client.post(f"/api/v1/label-events/{event_ids(db, s.id)[0]}/revert")
    assert r.status_code == 401


def test_label_events_newest_first_filtered_and_paged(client, db, annotator):
    other = make_user(db, "annotator")
    ds = make_dataset(db)
    ss = add_samples(db, ds, [{"label": "a"} for _ in range(3)])
    patch(client, annotator, ss[0].id, 1, label="b")
    patch(client, other, ss[1].id, 1, label="c")
    patch(client, annotator, ss[2].id, 1, label="b")
    patch(client, annotator, ss[0].id, 2, label="c")
    url = f"/api/v1/datasets/{ds.id}/label-events"
    page = client.get(url, params={"limit": 3}, headers=annotator.headers).json()
    assert [(e["sample_id"], e["new_label"], e["latest"]) for e in page["items"]] == [
        (ss[0].id, "c", True), (ss[2].id, "b", True), (ss[1].id, "c", True)]
    assert page["items"][0]["sample_version"] == 3
    rest = client.get(url, params={"limit": 3, "before": page["next_before"]}, headers=annotator.headers).json()
    assert [(e["sample_id"], e["new_label"], e["latest"]) for e in rest["items"]] == [(ss[0].id, "b", False)]
    assert rest["next_before"] is None
    mine = client.get(url, params={"user": other.user.username}, headers=annotator.headers).json()
    assert [e["sample_id"] for e in mine["items"]] == [ss[1].id]
    assert client.get(url, params={"source": "import"}, headers=annotator.headers).json()["items"] == []


def test_review_progress_counts_the_filter_whatever_is_reviewed(client, db, annotator):
    ds = make_dataset(db)
    ss = add_samples(db, ds, [{"label": "a"}, {"label": "a"}, {"label": "b"}, {"label": "a", "split": "valid"}])
    make_run(db, ds, {s.id: confident("b", ds.classes) for s in ss})
    patch(client, annotator, ss[0].id, 1, reviewed=True)
    url = f"/api/v1/datasets/{ds.id}/review-progress"
    assert client.get(url, headers=annotator.headers).json() == {"reviewed": 1, "total": 4}
    assert client.get(url, params={"split": "train", "label": "a"}, headers=annotator.headers).json() == {
        "reviewed": 1, "total": 2}
    assert client.get(url, params={"label": "a", "predicted": "b"}, headers=annotator.headers).json() == {
        "reviewed": 1, "total": 3}
    assert client.get(url, params={"predicted": "c"}, headers=annotator.headers).json() == {"reviewed": 0, "total": 0}


# --- services -------------------------------------------------------------------------------


@pytest.fixture
def session(engine):
    """A session that commits like a request does."""
    with Session(engine, expire_on_commit=False) as s:
        yield s


def test_undo_change_of_a_keep_clears_reviewed_and_writes_no_event(session, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    kept, _ = service.change_sample(session, s.id, 1, SampleUpdate(reviewed=True), annotator.user, "annotator")
    assert (kept.reviewed, kept.version) == (True, 2)
    undone = service.undo_change(session, annotator.user, ds, sample_id=s.id, version=2)
    session.commit()
    assert (undone.reviewed, undone.version, undone.label) == (False, 3, "a")
    assert events_of(db, ds) == []
    with pytest.raises(service.VersionConflict):
        service.undo_change(session, annotator.user, ds, sample_id=s.id, version=2)


def test_undo_change_of_a_label_change_reverts_with_reason_undo(session, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    changed, event = service.change_sample(session, s.id, 1, SampleUpdate(label="c"), annotator.user, "annotator")
    session.flush()
    service.undo_change(session, annotator.user, ds, event_id=event.id, version=changed.version)
    session.commit()
    assert events_of(db, ds) == [
        (s.id, "a", "c", "annotator", annotator.user.id, None),
        (s.id, "c", "a", "annotator", annotator.user.id, "undo"),
    ]
    with pytest.raises(service.EventSuperseded):
        service.undo_change(session, annotator.user, ds, event_id=event.id, version=3)


def test_bulk_relabel_reports_conflicts_and_never_overwrites(session, db, annotator):
    ds = make_dataset(db)
    other_ds = make_dataset(db)
    ss = add_samples(db, ds, [{"label": "a"}, {"label": "a"}, {"label": "b"}])
    (foreign,) = add_samples(db, other_ds, [{"label": "a"}])
    db.execute(Sample.__table__.update().where(Sample.id == ss[1].id).values(label="c", version=2))
    items = [(ss[0].id, 1), (ss[1].id, 1), (ss[2].id, 1), (foreign.id, 1)]
    result = service.bulk_relabel(session, ds, items, annotator.user, label="b")
    session.commit()
    assert [(s.id, e.old_label, e.new_label) for s, e in result.changed] == [(ss[0].id, "a", "b")]
    assert [s.id for s in result.kept] == [ss[2].id]
    assert [(c.current.id, c.current.label, c.current.version) for c in result.conflicts] == [(ss[1].id, "c", 2)]
    assert result.skipped == [(foreign.id, f"sample {foreign.id} is not in dataset {ds.id}")]
    db.expire_all()
    assert [db.get(Sample, s.id).label for s in ss] == ["b", "c", "b"]
    assert db.get(Sample, foreign.id).version == 1


def test_bulk_accept_predicted_needs_a_prediction(session, db, annotator):
    ds = make_dataset(db)
    ss = add_samples(db, ds, [{"label": "a"}, {"label": "a"}])
    make_run(db, ds, {ss[0].id: confident("c", ds.classes)})
    result = service.bulk_relabel(session, ds, [(ss[0].id, 1), (ss[1].id, 1)], annotator.user, accept_predicted=True)
    session.commit()
    assert [(s.id, e.new_label) for s, e in result.changed] == [(ss[0].id, "c")]
    assert result.skipped == [(ss[1].id, f"sample {ss[1].id} has no prediction")]


def test_bulk_relabel_wants_exactly_one_target(session, db, annotator):
    from app.errors import Conflict, Invalid

    ds = make_dataset(db)
    with pytest.raises(Invalid):
        service.bulk_relabel(session, ds, [], annotator.user)
    with pytest.raises(Invalid) as exc:
        service.bulk_relabel(session, ds, [], annotator.user, label="zebra")
    assert exc.value.errors[0]["field"] == "label"
    with pytest.raises(Conflict) as exc:
        service.bulk_relabel(session, ds, [], annotator.user, accept_predicted=True)
    assert exc.value.status_code == 409, "no run to take predictions from"


def test_queue_head_walks_the_ranking_by_cursor(session, db, annotator):
    ds = make_dataset(db)
    ss = add_samples(db, ds, [{"label": "a"} for _ in range(3)])
    make_run(db, ds, {ss[0].id: confident("a", ds.classes, 0.9), ss[1].id: confident("b", ds.classes, 0.9),
                      ss[2].id: confident("a", ds.classes, 0.5)})
    q = queries.SampleQuery(order="loss", reviewed=False)

    def head():
        return queue.claimed_head(session, ds, q, annotator.user, 300)

    first = head()
    assert (first.sample.id, first.upcoming.id) == (ss[1].id, ss[2].id)
    q.cursor = first.cursor_after
    second = head()
    assert (second.sample.id, second.upcoming.id) == (ss[2].id, ss[0].id)
    q.cursor = second.cursor_after
    q.cursor = head().cursor_after
    end = head()
    assert (end.sample, end.cursor_after, end.upcoming) == (None, None, None)
