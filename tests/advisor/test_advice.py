"""Advice from a hand-made run: each kind for the class built to trigger it, and for no other."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import select

from app.models import Job
from tests.advisor.builders import make_run, metrics_from, predict, two_way
from tests.builders import add_samples, make_dataset
from tests.web.session import login

CLASSES = ["a", "b", "c", "d", "e", "f"]
# Valid split, 10 per class; rows: true class, columns: predicted.
#  a: recall 0.5, its misses spread one to each other class (no pair reaches 2);
#  b: precision 10/13 (a, d and f each predicted b once);
#  c: F1 0.95 with the most train samples;
#  d <-> e: confused once each way, the only pair with 2.
MATRIX = [
    [5, 1, 1, 1, 1, 1],
    [0, 10, 0, 0, 0, 0],
    [0, 0, 10, 0, 0, 0],
    [0, 1, 0, 8, 1, 0],
    [0, 0, 0, 1, 9, 0],
    [0, 1, 0, 0, 0, 9],
]
TRAIN = {"a": 10, "b": 40, "c": 60, "d": 40, "e": 40, "f": 30}


@pytest.fixture
def scene(db):
    ds = make_dataset(db, classes=CLASSES)
    rows = [{"label": c, "split": "train"} for c, n in TRAIN.items() for _ in range(n)]
    rows += [{"label": None, "split": "unlabelled"} for _ in range(20)]
    samples = add_samples(db, ds, rows)
    run = make_run(db, ds, metrics_from(MATRIX, CLASSES))
    train = [s for s in samples if s.split == "train"]
    pool = [s for s in samples if s.split == "unlabelled"]
    # 12 unlabelled samples predicted a, with rising probability; 4 torn between d and e; 4 others.
    for i, s in enumerate(pool[:12]):
        predict(db, run, s, two_way(CLASSES, "a", "b", 0.40 + 0.05 * i))
    torn = [(pool[12], "d", "e", 0.50), (pool[13], "e", "d", 0.45), (pool[14], "d", "e", 0.60), (pool[15], "e", "d", 0.70)]
    for s, top, second, p in torn:
        predict(db, run, s, two_way(CLASSES, top, second, p))
    for s in pool[16:]:
        predict(db, run, s, two_way(CLASSES, "d", "b", 0.5))  # torn, but not between d and e
    # Two train samples labelled b that the model reads as d: relabel suspects.
    b_train = [s for s in train if s.label == "b"]
    for s in b_train[:2]:
        predict(db, run, s, two_way(CLASSES, "d", "b", 0.7))
    for s in b_train[2:4]:
        predict(db, run, s, two_way(CLASSES, "b", "d", 0.9))
    return ds, run, pool


def _advice(client, ds, headers):
    r = client.get(f"/api/v1/datasets/{ds.id}/advice", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _query(url):
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def test_each_kind_appears_for_its_class_only(client, scene, annotator):
    ds, run, pool = scene
    body = _advice(client, ds, annotator.headers)
    assert body["run_id"] == run.id and body["split"] == "valid"
    kinds = {}
    for item in body["items"]:
        kinds.setdefault(item["kind"], []).append(item["class"])
    assert kinds == {"collect": ["a"], "relabel": ["b"], "prune": ["c"], "confused_pair": ["d"]}


def test_collect_lists_the_unlabelled_samples_most_likely_of_the_class(client, scene, annotator):
    ds, run, pool = scene
    item = next(i for i in _advice(client, ds, annotator.headers)["items"] if i["kind"] == "collect")
    assert "recall 0.50" in item["reason"] and "10 train samples" in item["reason"] and "median class: 40" in item["reason"]
    # Highest probability first, the top 10 of the 12.
    assert [s["id"] for s in item["samples"]] == [s.id for s in reversed(pool[2:12])]
    assert item["samples"][0]["probability"] == pytest.approx(0.95)
    assert item["numbers"]["unlabelled_predicted"] == 12
    assert _query(item["links"][0]["url"]) == {"split": "unlabelled", "predicted": "a"}


def test_relabel_names_the_classes_predicted_into_it(client, scene, annotator):
    ds, run, pool = scene
    item = next(i for i in _advice(client, ds, annotator.headers)["items"] if i["kind"] == "relabel")
    assert "precision 0.77" in item["reason"] and "will not fix its precision" in item["reason"]
    assert [(p["given"], p["count"]) for p in item["pairs"]] == [("a", 1), ("d", 1), ("f", 1)]
    suspects = {p["given"]: p["train_suspects"] for p in item["pairs"]}
    assert suspects == {"a": 0, "d": 2, "f": 0}
    queries = [_query(link["url"]) for link in item["links"]]
    assert {"split": "train", "label": "b", "predicted": "d"} in queries
    assert {"split": "valid", "label": "d", "predicted": "b"} in queries


def test_prune_offers_the_experiment(client, scene, annotator):
    ds, run, pool = scene
    item = next(i for i in _advice(client, ds, annotator.headers)["items"] if i["kind"] == "prune")
    assert item["class"] == "c" and "60 train samples" in item["reason"]
    assert item["action"] == {"method": "POST", "url": f"/api/v1/datasets/{ds.id}/jobs",
                              "json": {"kind": "prune", "params": {"class": "c"}}}


def test_confused_pair_lists_the_unlabelled_samples_torn_between_them(client, scene, annotator):
    ds, run, pool = scene
    item = next(i for i in _advice(client, ds, annotator.headers)["items"] if i["kind"] == "confused_pair")
    assert item["pairs"] == [{"a": "d", "b": "e", "a_as_b": 1, "b_as_a": 1}]
    # Most torn first (smallest confusion margin); the d/b samples are not in it.
    assert [s["id"] for s in item["samples"]] == [pool[13].id, pool[12].id, pool[14].id, pool[15].id]
    assert item["numbers"]["unlabelled_torn"] == 4
    queries = [_query(link["url"]) for link in item["links"]]
    assert {"split": "unlabelled", "predicted": "d", "order": "confusion_margin"} in queries
    assert {"split": "unlabelled", "predicted": "e", "order": "confusion_margin"} in queries


def test_a_sample_labelled_since_the_run_is_no_longer_suggested(client, db, scene, annotator):
    ds, run, pool = scene
    pool[11].label, pool[11].split = "a", "train"
    db.commit()
    item = next(i for i in _advice(client, ds, annotator.headers)["items"] if i["kind"] == "collect")
    assert pool[11].id not in [s["id"] for s in item["samples"]]


def test_a_gap_of_one_sample_is_named_as_the_place_to_start_not_as_a_finding(client, db, engineer):
    ds = make_dataset(db, classes=["x", "y", "z"])
    add_samples(db, ds, [{"label": c} for c in "xyz" for _ in range(20)])
    make_run(db, ds, metrics_from([[10, 0, 0], [0, 10, 0], [0, 1, 9]], ["x", "y", "z"]))
    body = _advice(client, ds, engineer.headers)
    # z's recall 0.9 and y's precision 0.91 are one sample from the others: y gets no relabel
    # advice, z is named as the lowest-recall class and the reason says it is no finding;
    # x, perfect and as well stocked as any, is worth a prune experiment.
    assert [(i["kind"], i["class"]) for i in body["items"]] == [("collect", "z"), ("prune", "x")]
    collect = body["items"][0]
    assert collect["numbers"]["basis"] == "lowest"
    assert "the lowest of 3 classes" in collect["reason"] and "not a finding" in collect["reason"]


def test_the_clear_gap_is_a_finding(client, scene, annotator):
    ds, run, pool = scene
    item = next(i for i in _advice(client, ds, annotator.headers)["items"] if i["kind"] == "collect")
    assert item["numbers"]["basis"] == "gap" and "for want of examples" in item["reason"]


def test_a_well_stocked_lowest_class_is_not_told_to_collect(client, db, engineer):
    ds = make_dataset(db, classes=["x", "y", "z"])
    add_samples(db, ds, [{"label": c} for c, n in (("x", 20), ("y", 20), ("z", 40)) for _ in range(n)])
    make_run(db, ds, metrics_from([[10, 0, 0], [0, 10, 0], [0, 1, 9]], ["x", "y", "z"]))
    assert "collect" not in [i["kind"] for i in _advice(client, ds, engineer.headers)["items"]]


def test_no_run_yet_is_an_empty_answer_with_a_message(client, db, annotator):
    ds = make_dataset(db)
    body = _advice(client, ds, annotator.headers)
    assert body["items"] == [] and body["run_id"] is None and "train a model" in body["message"]


def test_test_metrics_stand_in_without_a_valid_split(client, db, annotator):
    ds = make_dataset(db, classes=CLASSES)
    add_samples(db, ds, [{"label": c} for c, n in TRAIN.items() for _ in range(n)])
    make_run(db, ds, None, metrics_from(MATRIX, CLASSES))
    body = _advice(client, ds, annotator.headers)
    assert body["split"] == "test" and {i["kind"] for i in body["items"]} == {"collect", "relabel", "prune", "confused_pair"}


def test_unknown_dataset_is_404(client, annotator):
    assert client.get("/api/v1/datasets/999/advice", headers=annotator.headers).status_code == 404


def test_the_page_shows_advice_to_annotators_without_the_prune_button(client, scene, annotator):
    ds, run, pool = scene
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert 'id="advice"' in html
    for kind, cls in (("collect", "a"), ("relabel", "b"), ("prune", "c"), ("confused_pair", "d")):
        assert f'data-kind="{kind}" data-class="{cls}"' in html
    assert f'href="/datasets/{ds.id}/review?split=unlabelled&amp;predicted=a"' in html
    assert "/advice/prune" not in html
    assert 'id="validation-health"' not in html, "validation health is for engineers"


def test_engineers_start_the_prune_experiment_from_the_page(client, db, scene, engineer):
    ds, run, pool = scene
    csrf = login(client, engineer.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert f'action="/datasets/{ds.id}/advice/prune"' in html and 'name="class" value="c"' in html
    r = client.post(f"/datasets/{ds.id}/advice/prune", data={"class": "c", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    job = db.scalar(select(Job).where(Job.kind == "prune"))
    assert r.headers["location"] == f"/jobs/{job.id}"
    assert job.params == {"class": "c"} and job.dataset_id == ds.id and job.status == "queued"
    r = client.post(f"/datasets/{ds.id}/advice/prune", data={"class": "nope", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 422 and "class" in r.json()["detail"]


def test_annotators_cannot_start_experiments(client, scene, annotator):
    ds, run, pool = scene
    csrf = login(client, annotator.user.username)
    r = client.post(f"/datasets/{ds.id}/advice/prune", data={"class": "c", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 403


def test_train_suspects_come_from_the_runs_record_when_it_has_one(client, db, scene, annotator):
    """A run that recorded its train confusion (every run since the record) gives the counts
    as it read the labels, without counting predictions on the page view."""
    ds, run, pool = scene
    run.info = {**(run.info or {}), "train_confusion": {"b": {"d": 7, "a": 1}, "a": {"b": 3}}}
    db.commit()
    item = next(i for i in _advice(client, ds, annotator.headers)["items"] if i["kind"] == "relabel")
    assert {p["given"]: p["train_suspects"] for p in item["pairs"]} == {"a": 1, "d": 7, "f": 0}


def test_train_confusion_counts_given_against_predicted_over_labelled_rows():
    from app.advisor.advice import train_confusion

    got = train_confusion([0, 0, 1, -1, 2, 0], [0, 1, 1, 2, 0, 1], ["a", "b", "c"])
    assert got == {"a": {"a": 1, "b": 2}, "b": {"b": 1}, "c": {"a": 1}}
