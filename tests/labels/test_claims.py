"""Review-queue claims (docs/queries.md, Claims): a hand-out claims what it serves for the
caller, and no two annotators hold one sample, whatever the order, filters and timing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from app.labels import claims
from app.models import Claim, Run, Sample, utcnow
from tests.builders import add_samples, make_dataset, make_user
from tests.web.review_builders import confident, make_run

CLASSES = ["a", "b", "c"]
USERS = 20


def scored_dataset(db, n: int, *, record: bool = True):
    """n train samples of every class, scored by one run (with or without its covers_through
    record, so both ways of listing by a score are exercised), plus 10 unlabelled."""
    ds = make_dataset(db, classes=CLASSES)
    rows = [{"label": CLASSES[i % 3]} for i in range(n)] + [{"label": None} for _ in range(10)]
    samples = add_samples(db, ds, rows)
    probs = {s.id: confident(CLASSES[(i * 7) % 3], CLASSES, 0.5 + (i % 40) / 100) for i, s in enumerate(samples)}
    run = make_run(db, ds, probs)
    if record:
        db.execute(update(Run).where(Run.id == run.id).values(info={"covers_through": samples[-1].id}))
        db.commit()
    return ds, samples


def claim_rows(db, ds) -> dict[int, int]:
    db.expire_all()
    return dict(db.execute(select(Claim.sample_id, Claim.user_id).where(Claim.dataset_id == ds.id)).all())


QUEUES = [
    pytest.param({"order": "loss"}, True, id="loss"),
    pytest.param({"order": "priority", "label": "a"}, True, id="cell-given"),
    pytest.param({"order": "self_confidence", "predicted": "b"}, True, id="cell-predicted"),
    pytest.param({"order": "loss", "split": "train"}, False, id="loss-no-record"),
    pytest.param({"order": "id"}, True, id="id"),
    pytest.param({"order": "random", "label": "c"}, True, id="random-given"),
    # Walked along the run's predictions (app.labels.ranges), claims checked on each entry.
    pytest.param({"order": "id", "predicted": "b"}, True, id="id-predicted"),
    pytest.param({"order": "random", "predicted": "a", "reverse": "true"}, True, id="random-predicted"),
]


@pytest.mark.parametrize(("params", "record"), QUEUES)
def test_twenty_annotators_fetching_at_once_get_disjoint_samples(live_server, db, params, record):
    ds, _ = scored_dataset(db, 300, record=record)
    users = [make_user(db, "annotator") for _ in range(USERS)]
    barrier = threading.Barrier(USERS)

    def fetch(account):
        with httpx.Client(base_url=live_server, headers=account.headers, timeout=60) as http:
            barrier.wait()
            r = http.get(f"/api/v1/datasets/{ds.id}/queue", params={**params, "limit": 4})
            assert r.status_code == 200, r.text
            return account.user.id, r.json()

    with ThreadPoolExecutor(USERS) as pool:
        answers = list(pool.map(fetch, users))
    handed = {uid: [item["id"] for item in body["items"]] for uid, body in answers}
    every = [sid for ids in handed.values() for sid in ids]
    assert len(every) == len(set(every)), "a sample was handed to two annotators"
    assert all(len(ids) == 4 for ids in handed.values()), handed  # the queue has enough for everyone
    assert claim_rows(db, ds) == {sid: uid for uid, ids in handed.items() for sid in ids}
    for _, body in answers:
        assert all(not item["reviewed"] for item in body["items"])
        if "label" in params:
            assert {item["label"] for item in body["items"]} == {params["label"]}


def test_a_hand_out_is_the_queue_head_without_others_claims(client, db):
    ds, _ = scored_dataset(db, 30)
    ann1, ann2 = make_user(db, "annotator"), make_user(db, "annotator")
    listing = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": "priority", "reviewed": "false",
                                                                       "limit": 10}, headers=ann1.headers).json()
    head = [item["id"] for item in listing["items"]]
    first = client.get(f"/api/v1/datasets/{ds.id}/queue", params={"limit": 3}, headers=ann1.headers).json()
    assert [i["id"] for i in first["items"]] == head[:3], "the default order is the run's review order"
    assert first["run_id"] == listing["run_id"]
    second = client.get(f"/api/v1/datasets/{ds.id}/queue", params={"limit": 3}, headers=ann2.headers).json()
    assert [i["id"] for i in second["items"]] == head[3:6]
    # Asking again renews the same claims rather than taking more.
    again = client.get(f"/api/v1/datasets/{ds.id}/queue", params={"limit": 3}, headers=ann1.headers).json()
    assert [i["id"] for i in again["items"]] == head[:3]
    assert again["claimed_until"] >= first["claimed_until"]
    assert sorted(claim_rows(db, ds)) == sorted(head[:6])


def test_a_patch_ends_the_claim_and_the_next_hand_out_moves_on(client, db):
    ds, _ = scored_dataset(db, 30)
    ann1, ann2 = make_user(db, "annotator"), make_user(db, "annotator")
    url = f"/api/v1/datasets/{ds.id}/queue"
    items = client.get(url, params={"limit": 2}, headers=ann1.headers).json()["items"]
    done = items[0]
    r = client.patch(f"/api/v1/samples/{done['id']}", json={"label": "b"},
                     headers={**ann1.headers, "If-Match": str(done["version"])})
    assert r.status_code == 200
    assert done["id"] not in claim_rows(db, ds)
    nxt = client.get(url, params={"limit": 2}, headers=ann1.headers).json()["items"]
    assert nxt[0]["id"] == items[1]["id"] and done["id"] not in [i["id"] for i in nxt]
    # A PATCH by someone who does not hold the claim is not refused (the version decides), and
    # leaves the holder's claim as it was.
    other = nxt[1]
    r = client.patch(f"/api/v1/samples/{other['id']}", json={"label": "c"},
                     headers={**ann2.headers, "If-Match": str(other["version"])})
    assert r.status_code == 200
    assert claim_rows(db, ds)[other["id"]] == ann1.user.id


def test_release_hands_the_samples_to_the_next_annotator(client, db):
    ds, _ = scored_dataset(db, 30)
    ann1, ann2 = make_user(db, "annotator"), make_user(db, "annotator")
    url = f"/api/v1/datasets/{ds.id}/queue"
    mine = [i["id"] for i in client.get(url, params={"limit": 5}, headers=ann1.headers).json()["items"]]
    assert client.delete(url, headers=ann1.headers).status_code == 204
    assert claim_rows(db, ds) == {}
    theirs = [i["id"] for i in client.get(url, params={"limit": 5}, headers=ann2.headers).json()["items"]]
    assert theirs == mine


def test_a_rest_client_passes_over_samples_with_skip(client, db):
    """skip leaves samples out of a hand-out (else the head comes back each time), releases
    them for others, and is bounded."""
    ds, _ = scored_dataset(db, 30)
    ann1, ann2 = make_user(db, "annotator"), make_user(db, "annotator")
    url = f"/api/v1/datasets/{ds.id}/queue"
    head = [i["id"] for i in client.get(url, params={"limit": 2}, headers=ann1.headers).json()["items"]]
    again = client.get(url, params={"limit": 2, "skip": [head[0]]}, headers=ann1.headers).json()["items"]
    assert [i["id"] for i in again][0] == head[1] and head[0] not in [i["id"] for i in again]
    assert head[0] not in claim_rows(db, ds), "a sample passed over is free for the others"
    theirs = client.get(url, params={"limit": 1}, headers=ann2.headers).json()["items"]
    assert [i["id"] for i in theirs] == [head[0]]
    many = client.get(url, params={"skip": list(range(1, 102))}, headers=ann1.headers)
    assert many.status_code == 422 and "skip" in many.text
    bad = client.get(url, params={"skip": "x"}, headers=ann1.headers)
    assert bad.status_code == 422


def test_an_expired_claim_is_taken_over_and_a_live_one_renewed(client, db, session_factory_fixture):
    ds, _ = scored_dataset(db, 30)
    ann1, ann2 = make_user(db, "annotator"), make_user(db, "annotator")
    url = f"/api/v1/datasets/{ds.id}/queue"
    mine = [i["id"] for i in client.get(url, params={"limit": 3}, headers=ann1.headers).json()["items"]]
    # The first two lapse (the page was closed); the third is still live.
    past = utcnow() - timedelta(seconds=1)
    db.execute(update(Claim).where(Claim.sample_id.in_(mine[:2])).values(expires_at=past))
    db.commit()
    theirs = [i["id"] for i in client.get(url, params={"limit": 3}, headers=ann2.headers).json()["items"]]
    assert theirs[:2] == mine[:2] and mine[2] not in theirs
    rows = claim_rows(db, ds)
    assert [rows[s] for s in mine[:2]] == [ann2.user.id] * 2 and rows[mine[2]] == ann1.user.id
    # Renewing extends only what the user still holds.
    with session_factory_fixture() as s:
        until = claims.renew(s, ds.id, ann1.user.id, 600)
        s.commit()
    db.expire_all()
    held = db.scalars(select(Claim).where(Claim.user_id == ann1.user.id)).all()
    assert [c.sample_id for c in held] == [mine[2]]
    assert abs((held[0].expires_at - until).total_seconds()) < 1
    assert until - utcnow() > timedelta(seconds=590)
    with session_factory_fixture() as s:
        assert claims.renew(s, ds.id, make_user(db, "annotator").user.id, 600) is None


def test_a_reviewed_or_foreign_queue_is_refused_clearly(client, db):
    ds, samples = scored_dataset(db, 10)
    other_ds, _ = scored_dataset(db, 5)
    ann = make_user(db, "annotator")
    url = f"/api/v1/datasets/{ds.id}/queue"
    assert client.get(url, params={"limit": 0}, headers=ann.headers).status_code == 422
    assert client.get(url, params={"limit": 101}, headers=ann.headers).status_code == 422
    r = client.get(url, params={"order": "nonsense"}, headers=ann.headers)
    assert r.status_code == 422 and "order" in r.text
    other_run = db.scalar(select(Run.id).where(Run.dataset_id == other_ds.id))
    assert client.get(url, params={"run": other_run}, headers=ann.headers).status_code == 404
    assert client.get("/api/v1/datasets/999999/queue", headers=ann.headers).status_code == 404
    assert client.get(url).status_code == 401
    assert client.delete(url).status_code == 401
    assert claim_rows(db, ds) == {}
    # With every sample reviewed, the queue is empty and nothing is claimed.
    db.execute(update(Sample).where(Sample.dataset_id == ds.id).values(reviewed=True))
    db.commit()
    body = client.get(url, params={"split": "train"}, headers=ann.headers).json()
    assert body["items"] == [] and claim_rows(db, ds) == {}


def test_claims_go_with_their_user_and_dataset(client, db):
    ds, _ = scored_dataset(db, 10)
    ann = make_user(db, "annotator")
    client.get(f"/api/v1/datasets/{ds.id}/queue", params={"limit": 3}, headers=ann.headers)
    assert len(claim_rows(db, ds)) == 3
    db.delete(db.get(type(ann.user), ann.user.id))
    db.commit()
    assert claim_rows(db, ds) == {}


@pytest.fixture
def session_factory_fixture(engine):
    from app.db import session_factory

    return session_factory(engine)


def test_a_sample_submitted_while_the_hand_out_listed_is_not_handed_out(db, engine, monkeypatch):
    """A rival submits a listed sample (and so releases its claim) after the listing read it
    and before the take: the take finds the row free, but the hand-out must not give out a
    sample already done, at a version that can only conflict."""
    from app.db import session_factory
    from app.labels import queries, queue, service
    from app.labels.schemas import SampleUpdate
    from app.models import Dataset

    ds, _ = scored_dataset(db, 6)
    ann, rival = make_user(db, "annotator"), make_user(db, "annotator")
    original = queries.listed_rows
    submitted: list[int] = []

    def listed_then_rival_submits(session, ds_, q, n):
        rows, run_id = original(session, ds_, q, n)
        if not submitted:
            first = rows[0][0]
            with session_factory(engine)() as other:
                service.change_sample(other, first.id, first.version, SampleUpdate(label="b"), rival.user, "api")
                other.commit()
            submitted.append(first.id)
        return rows, run_id

    monkeypatch.setattr(queries, "listed_rows", listed_then_rival_submits)
    with session_factory(engine)() as session:
        out = queue.hand_out(session, session.get(Dataset, ds.id), queries.SampleQuery(order="loss", reviewed=False),
                             ann.user, 2, 300)
        handed = [(r[0].id, r[0].version, r[0].reviewed) for r in out.rows]
    assert len(handed) == 2 and submitted[0] not in [h[0] for h in handed]
    assert all(not reviewed for _, _, reviewed in handed)
    db.expire_all()
    assert sorted(claim_rows(db, ds)) == sorted(h[0] for h in handed)
    assert all(db.get(Sample, sid).version == version for sid, version, _ in handed)
