"""Second opinions through the REST API: overlap k sends each sample to exactly k distinct
annotators, blind; the k-th answer decides; ties wait for a reviewer; agreement and
annotator numbers; assignments; and the answers in the exports (docs/annotations.md)."""

from __future__ import annotations

import csv
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from statsmodels.stats.inter_rater import fleiss_kappa

from app.models import Annotation, LabelEvent, Sample, SampleConsensus
from tests.builders import add_samples, make_dataset, make_user
from tests.web.review_builders import confident, make_run

CLASSES = ["a", "b", "c"]


def dataset_with_overlap(client, db, engineer, n: int, k: int, run: bool = True):
    ds = make_dataset(db, classes=CLASSES)
    samples = add_samples(db, ds, [{"label": CLASSES[i % 3]} for i in range(n)])
    if run:
        make_run(db, ds, {s.id: confident(CLASSES[(i + 1) % 3], CLASSES, 0.6) for i, s in enumerate(samples)})
    r = client.patch(f"/api/v1/datasets/{ds.id}", json={"overlap": k}, headers=engineer.headers)
    assert r.status_code == 200 and r.json()["settings"]["overlap"] == k
    return ds, samples


def answers_by_sample(db, ds) -> dict[int, list[int]]:
    db.expire_all()
    out: dict[int, list[int]] = {}
    for sid, uid in db.execute(select(Annotation.sample_id, Annotation.user_id).where(Annotation.dataset_id == ds.id)):
        out.setdefault(sid, []).append(uid)
    return out


def work(http, ds_id: int, label_of) -> list[int]:
    """Answer the queue until it has handed out nothing for a while (what others hold comes
    back when they answer it): the sample ids answered."""
    done, empty = [], 0
    while True:
        r = http.get(f"/api/v1/datasets/{ds_id}/queue", params={"limit": 2, "order": "id"})
        assert r.status_code == 200, r.text
        body = r.json()
        if not body["items"]:
            empty += 1
            if empty == 10:
                return done
            time.sleep(0.2)
            continue
        empty = 0
        for item in body["items"]:
            assert item["id"] not in done, "a sample handed out twice to one annotator"
            a = http.post(f"/api/v1/samples/{item['id']}/annotations", json={"label": label_of(item), "seconds": 4.5})
            if a.status_code == 409:  # decided meanwhile by the others' answers
                continue
            assert a.status_code == 201, a.text
            assert a.json()["needed"] == body["needed"] == 2
            done.append(item["id"])


def test_overlap_two_sends_each_sample_to_exactly_two_distinct_annotators(live_server, db, engineer):
    with httpx.Client(base_url=live_server, timeout=60) as client:
        ds, samples = dataset_with_overlap(client, db, engineer, 24, 2)
    users = [make_user(db, "annotator") for _ in range(4)]
    barrier = threading.Barrier(len(users))

    def annotator(account):
        with httpx.Client(base_url=live_server, headers=account.headers, timeout=60) as http:
            barrier.wait()
            return work(http, ds.id, lambda item: item["label"])

    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(annotator, users))
    answered = answers_by_sample(db, ds)
    assert sorted(answered) == sorted(s.id for s in samples)
    odd = {sid: uids for sid, uids in answered.items() if len(uids) != 2 or len(set(uids)) != 2}
    assert not odd, odd
    # Both answers agree with the given label: every sample decided, kept, marked reviewed.
    states = dict(db.execute(select(SampleConsensus.sample_id, SampleConsensus.state)).all())
    assert set(states.values()) == {"decided"} and len(states) == len(samples)
    assert all(s.reviewed for s in db.scalars(select(Sample).where(Sample.dataset_id == ds.id)))
    assert db.scalar(select(LabelEvent.id).where(LabelEvent.dataset_id == ds.id)) is None, "no label changed"


def test_answers_stay_blind_until_the_kth_decides_and_ties_wait_for_a_reviewer(client, db, engineer):
    ds, samples = dataset_with_overlap(client, db, engineer, 3, 2, run=False)
    ann1, ann2, ann3 = (make_user(db, "annotator") for _ in range(3))
    s0, s1 = samples[0], samples[1]
    post = lambda acct, s, label: client.post(f"/api/v1/samples/{s.id}/annotations", json={"label": label},  # noqa: E731
                                              headers=acct.headers)
    first = post(ann1, s0, "b")
    assert first.status_code == 201 and first.json() == {"sample_id": s0.id, "answers": 1, "needed": 2, "consensus": None}
    db.expire_all()
    assert db.get(Sample, s0.id).label == "a" and not db.get(Sample, s0.id).reviewed, "one answer changes nothing"
    # The first annotator is not handed it again; the second is.
    mine = client.get(f"/api/v1/datasets/{ds.id}/queue", params={"order": "id"}, headers=ann1.headers).json()
    assert s0.id not in [i["id"] for i in mine["items"]]
    theirs = client.get(f"/api/v1/datasets/{ds.id}/queue", params={"order": "id"}, headers=ann2.headers).json()
    assert theirs["items"][0]["id"] == s0.id and theirs["needed"] == 2
    # A client that passes over a started sample is handed samples nobody started instead
    # (once the first annotator lets go of those it holds).
    assert client.delete(f"/api/v1/datasets/{ds.id}/queue", headers=ann1.headers).status_code == 204
    passed = client.get(f"/api/v1/datasets/{ds.id}/queue", params={"order": "id", "limit": 1, "skip": [s0.id]},
                        headers=ann2.headers).json()
    assert [i["id"] for i in passed["items"]] == [s1.id]
    second = post(ann2, s0, "b").json()
    assert second["consensus"]["state"] == "decided" and second["consensus"]["label"] == "b"
    db.expire_all()
    assert (db.get(Sample, s0.id).label, db.get(Sample, s0.id).reviewed) == ("b", True)
    event = db.scalar(select(LabelEvent).where(LabelEvent.sample_id == s0.id))
    assert (event.source, event.user_id) == ("consensus", None)
    # A third answer to a decided sample is refused; so is an answer outside the classes.
    assert post(ann3, s0, "c").status_code == 409
    assert post(ann3, s1, "zebra").status_code == 422
    # 1 against 1 with no model: a tie, left unreviewed, out of everyone's queue, first for a reviewer.
    post(ann1, s1, "a")
    tie = post(ann2, s1, "c").json()["consensus"]
    assert tie["state"] == "tie"
    assert s1.id not in [i["id"] for i in client.get(f"/api/v1/datasets/{ds.id}/queue", params={"order": "id"},
                                                     headers=ann3.headers).json()["items"]]
    assert client.get(f"/api/v1/datasets/{ds.id}/disagreements", headers=ann1.headers).status_code == 403
    page = client.get(f"/api/v1/datasets/{ds.id}/disagreements", headers=engineer.headers).json()
    assert [i["sample"]["id"] for i in page["items"]] == [s1.id]
    assert sorted((a["username"], a["label"]) for a in page["items"][0]["answers"]) == sorted(
        [(ann1.user.username, "a"), (ann2.user.username, "c")])
    version = page["items"][0]["sample"]["version"]
    r = client.post(f"/api/v1/samples/{s1.id}/resolution", json={"label": "c"},
                    headers={**engineer.headers, "If-Match": str(version)})
    assert r.status_code == 200 and r.json()["label"] == "c" and r.json()["reviewed"]
    db.expire_all()
    assert (db.get(SampleConsensus, s1.id).state, db.get(SampleConsensus, s1.id).rule) == ("resolved", "reviewer")
    assert client.get(f"/api/v1/datasets/{ds.id}/disagreements", headers=engineer.headers).json()["items"] == []
    # With overlap 1, answers are PATCHes.
    client.patch(f"/api/v1/datasets/{ds.id}", json={"overlap": 1}, headers=engineer.headers)
    assert post(ann3, samples[2], "a").status_code == 409


def test_agreement_is_fleiss_kappa_and_annotators_see_only_their_own(client, db, engineer):
    ds, samples = dataset_with_overlap(client, db, engineer, 6, 3, run=False)
    people = [make_user(db, "annotator") for _ in range(3)]
    plan = [("a", "a", "a"), ("b", "b", "c"), ("c", "c", "c"), ("a", "b", "a"), ("b", "b", "b"), ("a", "a", "c")]
    for s, labels in zip(samples, plan):
        for acct, label in zip(people, labels):
            assert client.post(f"/api/v1/samples/{s.id}/annotations", json={"label": label, "seconds": 3 + len(label)},
                               headers=acct.headers).status_code == 201
    table = np.array([[labels.count(c) for c in CLASSES] for labels in plan])
    body = client.get(f"/api/v1/datasets/{ds.id}/agreement", headers=engineer.headers).json()
    assert body["kappa"] == pytest.approx(fleiss_kappa(table))
    assert (body["raters"], body["kappa_samples"], body["annotations"], body["overlap"]) == (3, 6, 18, 3)
    per_class = {c["label"]: c["kappa"] for c in body["per_class"]}
    binary_a = np.stack([table[:, 0], 3 - table[:, 0]], axis=1)
    assert per_class["a"] == pytest.approx(fleiss_kappa(binary_a))
    assert len(body["annotators"]) == 3
    third = next(a for a in body["annotators"] if a["user_id"] == people[2].user.id)
    assert third["annotations"] == 6 and third["median_seconds"] == 4.0
    # The third disagreed with the consensus on "b" -> "c" and "a" -> "c".
    assert {(c["consensus"], c["answered"]) for c in third["confusions"]} == {("b", "c"), ("a", "c")}
    assert third["agreement"] == pytest.approx(4 / 6)
    assert third["estimated_accuracy"] < next(a for a in body["annotators"]
                                              if a["user_id"] == people[0].user.id)["estimated_accuracy"]
    own = client.get(f"/api/v1/datasets/{ds.id}/agreement", headers=people[2].headers).json()
    assert [a["user_id"] for a in own["annotators"]] == [people[2].user.id] and own["kappa"] == body["kappa"]


def test_assignments_give_their_filters_and_overlap_to_the_assigned_only(client, db, engineer):
    ds = make_dataset(db, classes=CLASSES)
    samples = add_samples(db, ds, [{"label": CLASSES[i % 3]} for i in range(9)])
    ann, other = make_user(db, "annotator"), make_user(db, "annotator")
    url = f"/api/v1/datasets/{ds.id}/assignments"
    bad = client.post(url, json={"name": "x", "users": ["nobody"]}, headers=engineer.headers)
    assert bad.status_code == 422 and "nobody" in bad.text
    assert client.post(url, json={"name": "x", "users": [ann.user.username], "filters": {"label": "zebra"}},
                       headers=engineer.headers).status_code == 422
    assert client.post(url, json={"name": "x", "users": [ann.user.username]}, headers=ann.headers).status_code == 403
    r = client.post(url, json={"name": "class b twice", "filters": {"label": "b"}, "overlap": 2,
                               "users": [ann.user.username]}, headers=engineer.headers)
    assert r.status_code == 201, r.text
    a = r.json()
    assert (a["overlap"], a["filters"]["label"], a["users"]) == (2, "b", [ann.user.username])
    mine = client.get("/api/v1/me/assignments", headers=ann.headers).json()
    assert [(m["id"], m["reviewed"], m["total"]) for m in mine] == [(a["id"], 0, 3)]
    assert mine[0]["queue_url"] == f"/datasets/{ds.id}/review?assignment={a['id']}"
    assert client.get("/api/v1/me/assignments", headers=other.headers).json() == []
    assert client.get(url, headers=other.headers).json() == []
    queue = client.get(f"/api/v1/datasets/{ds.id}/queue", params={"assignment": a["id"], "order": "id"},
                       headers=ann.headers).json()
    assert {i["label"] for i in queue["items"]} == {"b"} and queue["needed"] == 2
    assert client.get(f"/api/v1/datasets/{ds.id}/queue", params={"assignment": a["id"]},
                      headers=other.headers).status_code == 404
    first = queue["items"][0]["id"]
    answered = client.post(f"/api/v1/samples/{first}/annotations", json={"label": "b", "assignment": a["id"]},
                           headers=ann.headers)
    assert answered.status_code == 201 and answered.json()["needed"] == 2
    assert client.delete(f"{url}/{a['id']}", headers=engineer.headers).status_code == 204
    assert client.get("/api/v1/me/assignments", headers=ann.headers).json() == []
    assert samples


def test_exports_carry_the_consensus_and_the_raw_answers(client, db, engineer):
    ds, samples = dataset_with_overlap(client, db, engineer, 3, 2, run=False)
    ann1, ann2 = make_user(db, "annotator"), make_user(db, "annotator")
    for acct, label in ((ann1, "b"), (ann2, "b")):
        client.post(f"/api/v1/samples/{samples[0].id}/annotations", json={"label": label, "seconds": 2},
                    headers=acct.headers)
    client.post(f"/api/v1/samples/{samples[1].id}/annotations", json={"label": "c"}, headers=ann1.headers)
    # With one answer per sample, a reviewed change is the answer and the label.
    client.patch(f"/api/v1/datasets/{ds.id}", json={"overlap": 1}, headers=engineer.headers)
    client.patch(f"/api/v1/samples/{samples[2].id}", json={"label": "a"}, headers={**ann2.headers, "If-Match": "1"})
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/v1/datasets/{ds.id}/export",
                                                      headers=engineer.headers).text)))
    got = {r["id"]: (r["label"], r["consensus_label"], r["consensus_rule"], r["annotations"],
                     float(r["agreement"]) if r["agreement"] else "") for r in rows}
    assert got == {"s0": ("b", "b", "crowdlab", "2", 1.0), "s1": ("b", "", "pending", "1", ""),
                   "s2": ("a", "a", "annotation", "1", "")}
    raw = client.get(f"/api/v1/datasets/{ds.id}/annotations", headers=engineer.headers)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/csv")
    answers = list(csv.DictReader(io.StringIO(raw.text)))
    assert [(a["external_id"], a["username"], a["label"]) for a in answers] == [
        ("s0", ann1.user.username, "b"), ("s0", ann2.user.username, "b"), ("s1", ann1.user.username, "c"),
        ("s2", ann2.user.username, "a")]
    assert answers[0]["seconds"] == "2.0"
    assert client.get(f"/api/v1/datasets/{ds.id}/annotations", headers=ann1.headers).status_code == 403
    lines = client.get(f"/api/v1/datasets/{ds.id}/annotations", params={"format": "jsonl"},
                       headers=engineer.headers).text.splitlines()
    assert len(lines) == 4 and '"label": "c"' in lines[2]


def test_a_reviewed_change_keeps_the_annotators_answer_and_an_undo_takes_it_back(client, db, annotator):
    ds = make_dataset(db, classes=CLASSES)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    r = client.patch(f"/api/v1/samples/{s.id}", json={"label": "b"}, headers={**annotator.headers, "If-Match": "1"})
    assert r.status_code == 200
    db.expire_all()
    rows = db.execute(select(Annotation.user_id, Annotation.label)).all()
    assert rows == [(annotator.user.id, "b")]
    event = r.json()["history"][0]["id"]
    assert client.post(f"/api/v1/label-events/{event}/revert", json={}, headers=annotator.headers).status_code == 200
    db.expire_all()
    assert db.execute(select(Annotation.id)).all() == []


@pytest.mark.parametrize("body", [{"label": ""}, {"label": "a", "seconds": -1}, {"label": "a", "extra": 1},
                                  {"label": "a", "assignment": 0}])
def test_malformed_answers_are_refused(client, db, annotator, body):
    ds = make_dataset(db, classes=CLASSES, settings={"overlap": 2})
    (s,) = add_samples(db, ds, [{"label": "a"}])
    r = client.post(f"/api/v1/samples/{s.id}/annotations", json=body, headers=annotator.headers)
    assert r.status_code == 422


def test_answers_racing_on_one_sample_decide_it_exactly_once(live_server, db, engineer):
    """Six annotators answer one sample at once (no queue, no claims) under overlap 3: the
    first three answers are kept and the third decides; the others find it decided."""
    with httpx.Client(base_url=live_server, timeout=60) as client:
        ds, samples = dataset_with_overlap(client, db, engineer, 1, 3, run=False)
    users = [make_user(db, "annotator") for _ in range(6)]
    barrier = threading.Barrier(len(users))

    def answer(account):
        with httpx.Client(base_url=live_server, headers=account.headers, timeout=60) as http:
            barrier.wait()
            return http.post(f"/api/v1/samples/{samples[0].id}/annotations", json={"label": "b"}).status_code

    with ThreadPoolExecutor(len(users)) as pool:
        statuses = sorted(pool.map(answer, users))
    assert statuses == [201, 201, 201, 409, 409, 409]
    db.expire_all()
    assert len(answers_by_sample(db, ds)[samples[0].id]) == 3
    row = db.get(SampleConsensus, samples[0].id)
    assert (row.state, row.label, row.annotations) == ("decided", "b", 3)
    assert db.get(Sample, samples[0].id).label == "b"


def test_the_raw_answers_csv_is_safe_to_open_in_a_spreadsheet(client, db, engineer, annotator):
    ds = make_dataset(db, classes=["=1+1", "b"])
    (s,) = add_samples(db, ds, [{"label": "b", "external_id": "@SUM(A1)"}])
    r = client.patch(f"/api/v1/samples/{s.id}", json={"label": "=1+1"}, headers={**annotator.headers, "If-Match": "1"})
    assert r.status_code == 200
    (row,) = list(csv.DictReader(io.StringIO(client.get(f"/api/v1/datasets/{ds.id}/annotations",
                                                        headers=engineer.headers).text)))
    assert (row["external_id"], row["label"]) == ("'@SUM(A1)", "'=1+1")


def test_a_large_dataset_decides_with_the_last_fits_estimates_and_refits_as_answers_grow(db, monkeypatch):
    """Past FULL_FIT_BELOW answers, a completing sample is decided from its own answers with
    the last fit's estimates; the full fit runs again only once the answers grew by
    REFIT_GROWTH: a handful of fits for 40 decisions, each decision as the answers say."""
    from app.labels import annotations

    monkeypatch.setattr(annotations, "FULL_FIT_BELOW", 0)
    monkeypatch.setattr(annotations, "REFIT_GROWTH", 0.5)
    fits = []
    real_fit = annotations.fit_dataset
    monkeypatch.setattr(annotations, "fit_dataset", lambda session, ds: fits.append(1) or real_fit(session, ds))
    ds = make_dataset(db, classes=CLASSES, settings={"overlap": 2})
    samples = add_samples(db, ds, [{"label": "a"} for _ in range(40)])
    ann1, ann2 = make_user(db, "annotator"), make_user(db, "annotator")
    for i, s in enumerate(samples):
        label = CLASSES[i % 3]
        annotations.annotate(db, ds, s.id, ann1.user, label, 2)
        done = annotations.annotate(db, ds, s.id, ann2.user, label, 2)
        db.commit()
        assert done.consensus is not None and (done.consensus.state, done.consensus.label) == ("decided", label)
        assert (done.sample.label, done.sample.reviewed) == (label, True)
    assert 3 <= len(fits) <= 12, fits  # 2, 3, 5, 8, 12, 18, 27, 41, 62 answers: a fit at each


def test_the_agreement_report_is_reused_while_answers_are_unchanged_or_recent(db, monkeypatch):
    """On a dataset with many answers the report (a full fit) is served again while nothing
    changed, and for REFRESH_SECONDS while answers arrive; `as_of` says when it was made."""
    from app.labels import agreement, annotations

    fits = []
    real_fit = annotations.fit_dataset
    monkeypatch.setattr(annotations, "fit_dataset", lambda session, ds: fits.append(1) or real_fit(session, ds))
    monkeypatch.setattr(annotations, "FULL_FIT_BELOW", 0)
    monkeypatch.setattr(agreement, "REFRESH_SECONDS", 3600.0)
    ds = make_dataset(db, classes=CLASSES, settings={"overlap": 2})
    samples = add_samples(db, ds, [{"label": "a"} for _ in range(4)])
    ann1, ann2 = make_user(db, "annotator"), make_user(db, "annotator")
    annotations.annotate(db, ds, samples[0].id, ann1.user, "b", 2)
    db.commit()
    first = agreement.agreement(db, ds, ann1.user)
    assert (first.annotations, len(fits)) == (1, 1)
    assert [a.user_id for a in first.annotators] == [ann1.user.id]
    again = agreement.agreement(db, ds, ann1.user)
    assert (again.as_of, len(fits)) == (first.as_of, 1), "nothing changed: no fit"
    annotations.annotate(db, ds, samples[1].id, ann2.user, "c", 2)
    db.commit()
    recent = agreement.agreement(db, ds, ann2.user)
    assert (recent.annotations, recent.as_of, len(fits)) == (1, first.as_of, 1), "changed, but recent"
    assert recent.pending == 2 and [a.user_id for a in recent.annotators] == []
    monkeypatch.setattr(agreement, "REFRESH_SECONDS", 0.0)
    fresh = agreement.agreement(db, ds, ann2.user)
    assert (fresh.annotations, len(fits)) == (2, 2) and fresh.as_of > first.as_of
    assert [a.user_id for a in fresh.annotators] == [ann2.user.id]
    # A new run (the model the consensus weighs) makes the next view fit again, answers unchanged.
    agreement.agreement(db, ds, ann2.user)
    assert len(fits) == 2
    make_run(db, ds, {s.id: confident("a", CLASSES, 0.9) for s in samples})
    assert agreement.agreement(db, ds, ann2.user).model_accuracy is not None and len(fits) == 3
