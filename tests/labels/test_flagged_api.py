"""The flagged set, the combined score and AUM through the sample list and the run."""

import re

import pytest
from sqlalchemy import text

from app.models import Prediction, Run
from tests.builders import add_samples, make_dataset


def _run(db, ds, info=None):
    run = Run(dataset_id=ds.id, status="succeeded", params={}, label_version=0, history=[], info=info or {})
    db.add(run)
    db.commit()
    return run


def _predict(db, run, sample, *, combined, aum=None, flagged=False, suggested=None, label="a", priority=None):
    db.add(
        Prediction(
            run_id=run.id, sample_id=sample.id, given_label=sample.label, label=label, probs={label: 0.9},
            loss=0.1, self_confidence=0.9, normalized_margin=0.8, confusion_margin=0.8, confusion_a=label,
            confusion_b="b", entropy=0.3, aum=aum, out_of_fold=True, fold=0, flagged=flagged,
            suggested_label=suggested, combined=combined, priority=priority,
        )
    )


@pytest.fixture
def scored(db):
    """Five train samples and one unlabelled; two of the train samples are flagged."""
    ds = make_dataset(db)
    samples = add_samples(db, ds, [{"label": "a"}, {"label": "a"}, {"label": "b"}, {"label": "c"}, {"label": "b"}, {"label": None}])
    run = _run(db, ds, {"flagged": {"count": 2, "pairs": [{"given": "a", "suggested": "b", "estimated": 1.5, "flagged": 1}]}})
    values = [  # combined, aum, flagged, suggested, priority (flagged first: 3 has the lower self-confidence)
        (0.9, 3.0, False, None, 0.9),
        (0.1, -1.0, True, "b", 0.3),
        (0.5, -2.5, False, None, 0.7),
        (0.3, 0.5, True, "a", 0.1),
        (0.7, None, False, None, 0.5),
    ]
    for s, (combined, aum, flagged, suggested, priority) in zip(samples, values):
        _predict(db, run, s, combined=combined, aum=aum, flagged=flagged, suggested=suggested, priority=priority)
    _predict(db, run, samples[5], combined=None)
    db.commit()
    return ds, samples, run


def _ids(r):
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


def test_flagged_filter_lists_only_the_flagged_samples_lowest_combined_first(client, annotator, scored):
    ds, samples, run = scored
    url = f"/api/v1/datasets/{ds.id}/samples"
    got = _ids(client.get(url, params={"flagged": "true", "order": "combined"}, headers=annotator.headers))
    assert got == [samples[1].id, samples[3].id]
    others = _ids(client.get(url, params={"flagged": "false", "order": "id"}, headers=annotator.headers))
    assert others == [samples[i].id for i in (0, 2, 4, 5)]
    progress = client.get(f"/api/v1/datasets/{ds.id}/review-progress", params={"flagged": "true"}, headers=annotator.headers)
    assert progress.json() == {"reviewed": 0, "total": 2}


def test_order_by_priority_lists_the_review_order_and_pages_through_it(client, annotator, scored):
    ds, samples, run = scored
    url = f"/api/v1/datasets/{ds.id}/samples"
    got = _ids(client.get(url, params={"order": "priority"}, headers=annotator.headers))
    assert got == [samples[i].id for i in (3, 1, 4, 2, 0, 5)]
    seen, cursor = [], None
    while True:
        params = {"order": "priority", "limit": 4, **({"cursor": cursor} if cursor else {})}
        page = client.get(url, params=params, headers=annotator.headers).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == got
    first = client.get(url, params={"order": "priority", "limit": 1}, headers=annotator.headers).json()["items"][0]
    assert first["prediction"]["priority"] == 0.1


def test_order_by_combined_and_by_aum_lists_low_first_and_missing_last(client, annotator, scored):
    ds, samples, run = scored
    url = f"/api/v1/datasets/{ds.id}/samples"
    by_combined = _ids(client.get(url, params={"order": "combined"}, headers=annotator.headers))
    assert by_combined == [samples[i].id for i in (1, 3, 2, 4, 0, 5)]
    by_aum = _ids(client.get(url, params={"order": "aum"}, headers=annotator.headers))
    assert by_aum == [samples[i].id for i in (2, 1, 3, 0, 4, 5)]
    reversed_ = _ids(client.get(url, params={"order": "combined", "reverse": "true"}, headers=annotator.headers))
    assert reversed_[:5] == [samples[i].id for i in (0, 4, 2, 3, 1)]
    # Keyset pages of two walk the same order.
    seen, cursor = [], None
    while True:
        params = {"order": "combined", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get(url, params=params, headers=annotator.headers).json()
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == by_combined


def test_prediction_items_carry_aum_combined_flagged_and_the_suggestion(client, annotator, scored):
    ds, samples, run = scored
    r = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": "combined", "limit": 1}, headers=annotator.headers)
    p = r.json()["items"][0]["prediction"]
    assert (p["combined"], p["aum"], p["flagged"], p["suggested_label"]) == (0.1, -1.0, True, "b")
    one = client.get(f"/api/v1/samples/{samples[0].id}", headers=annotator.headers).json()["prediction"]
    assert (one["combined"], one["aum"], one["flagged"], one["suggested_label"]) == (0.9, 3.0, False, None)


def test_the_run_reports_the_flagged_count_and_pairs(client, annotator, scored):
    ds, samples, run = scored
    body = client.get(f"/api/v1/runs/{run.id}", headers=annotator.headers).json()
    assert body["info"]["flagged"]["count"] == 2
    assert body["info"]["flagged"]["pairs"][0] == {"given": "a", "suggested": "b", "estimated": 1.5, "flagged": 1}


def test_flagged_filter_without_a_run_is_409(client, db, annotator):
    ds = make_dataset(db)
    add_samples(db, ds, [{"label": "a"}])
    r = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"flagged": "true"}, headers=annotator.headers)
    assert r.status_code == 409


def test_a_prediction_written_without_the_new_columns_is_not_flagged(db):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    run = _run(db, ds)
    # The way rows written before these columns existed look: the database's default fills them.
    db.execute(
        text(
            "INSERT INTO predictions (run_id, sample_id, given_label, label, probs, confusion_margin, confusion_a, "
            "confusion_b, entropy, out_of_fold) VALUES (:run, :sample, 'a', 'a', '{\"a\": 1.0}', 1.0, 'a', 'b', 0.0, false)"
        ),
        {"run": run.id, "sample": s.id},
    )
    db.commit()
    p = db.query(Prediction).filter_by(run_id=run.id).one()
    assert p.flagged is False and p.suggested_label is None and p.combined is None


def test_the_review_queue_ranks_by_combined_or_aum_and_keeps_to_the_flagged_set(client, annotator, scored):
    from tests.web.session import htmx, login
    from tests.web.test_review import form_of, press, shown

    ds, samples, run = scored
    csrf = login(client, annotator.user.username)
    page = client.get(f"/datasets/{ds.id}/review", params={"order": "aum"})
    assert page.status_code == 200
    assert '<option value="combined"' in page.text and '<option value="aum" selected' in page.text
    assert shown(page.text) == samples[2].id  # lowest AUM
    page = client.get(f"/datasets/{ds.id}/review", params={"order": "combined", "flagged": "1"})
    assert 'name="flagged" value="1" checked' in page.text
    assert shown(page.text) == samples[1].id
    assert form_of(page.text)["flagged"] == "1"
    # Keeping it brings the other flagged sample, not the next by combined score overall.
    nxt = press(client, csrf, ds, page.text, action="keep")
    assert nxt.status_code == 200, nxt.text
    assert shown(nxt.text) == samples[3].id
    grid = client.get(f"/datasets/{ds.id}/review/grid", params={"order": "combined", "flagged": "1"}, headers=htmx())
    tiles = [int(i) for i in re.findall(r'name="ids" value="(\d+):', grid.text)]
    assert tiles == [samples[3].id]  # sample 1 is reviewed now
