"""Every score order, both ways, with every filter, paged with cursors: the listing gives the
samples that have the score by it (ties by id), then those without it by id, each sample
exactly once, whatever the page size."""

from __future__ import annotations

import random

import pytest

from app.labels.queries import SCORES
from app.models import Prediction, Run, utcnow
from tests.builders import add_samples, make_dataset

CLASSES = ["a", "b", "c"]


@pytest.fixture(params=["covers_through", "no record"])
def listed(request, db):
    """24 train samples scored by a run (scores drawn from few values, so ties are common),
    four unlabelled ones (scored, but without the scores that need a label), and three
    samples the run did not score (added after it: no prediction at all). Runs record the
    sample id up to which they scored every sample, and the listings read the samples without
    a score by it; a run without the record (one from before it) is listed too."""
    rnd = random.Random(7)
    ds = make_dataset(db, classes=CLASSES)
    rows = [{"label": rnd.choice(CLASSES), "split": "valid" if i % 4 == 0 else "train"} for i in range(24)]
    rows += [{"label": None}] * 4
    samples = add_samples(db, ds, rows + [{"label": "a"}, {"label": None}, {"label": "b"}])
    train, pool = samples[:24], samples[24:28]
    info = {"covers_through": pool[-1].id} if request.param == "covers_through" else {}
    run = Run(dataset_id=ds.id, status="succeeded", params={}, label_version=0, history=[], info=info,
              finished_at=utcnow())
    db.add(run)
    db.flush()
    def value() -> float:
        return rnd.choice([0.1, 0.25, 0.5, 0.75, 2.0])

    for s in train + pool:
        labelled = s.label is not None
        db.add(Prediction(
            run_id=run.id, sample_id=s.id, given_label=s.label, label=rnd.choice(CLASSES), probs={},
            loss=value() if labelled else None, self_confidence=value() if labelled else None,
            normalized_margin=value() if labelled else None, confusion_margin=value(), confusion_a="a",
            confusion_b="b", entropy=value(), aum=value() if labelled and rnd.random() < 0.8 else None,
            combined=value() if labelled else None, priority=value() if labelled else None,
            flagged=labelled and rnd.random() < 0.3, out_of_fold=True,
        ))
    db.commit()
    for s in train[:6]:
        s.reviewed = True
    db.commit()
    # Changed after the run scored them: the listings filter on the labels as they are now.
    for s in train[6:10]:
        s.label = CLASSES[(CLASSES.index(s.label) + 1) % len(CLASSES)]
        s.reviewed = True
    train[10].label = None
    db.commit()
    return ds, run


def _expected(db, ds, run, order: str, reverse: bool, filters: dict) -> list[int]:
    from sqlalchemy import select

    from app.models import Sample

    preds = {p.sample_id: p for p in db.scalars(select(Prediction).where(Prediction.run_id == run.id))}
    rows = []
    for s in db.scalars(select(Sample).where(Sample.dataset_id == ds.id)):
        p = preds.get(s.id)
        if "split" in filters and s.split != filters["split"]:
            continue
        if "label" in filters and s.label != filters["label"]:
            continue
        if "reviewed" in filters and s.reviewed != (filters["reviewed"] == "true"):
            continue
        if "predicted" in filters and (p is None or p.label != filters["predicted"]):
            continue
        if "flagged" in filters and (p is None or p.flagged != (filters["flagged"] == "true")):
            continue
        rows.append((s.id, getattr(p, order) if p is not None else None))
    high_first = SCORES[order][1]
    descending = high_first != reverse
    scored = sorted((r for r in rows if r[1] is not None), key=lambda r: (-r[1] if descending else r[1], r[0]))
    missing = sorted(r[0] for r in rows if r[1] is None)
    return [r[0] for r in scored] + missing


def _walk(client, headers, ds, params: dict, limit: int) -> list[int]:
    got, cursor = [], None
    for _ in range(100):
        r = client.get(f"/api/v1/datasets/{ds.id}/samples",
                       params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})}, headers=headers)
        assert r.status_code == 200, r.text
        got += [item["id"] for item in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return got
    raise AssertionError("the listing did not end")


FILTERS = [{}, {"label": "a"}, {"predicted": "b"}, {"reviewed": "false"}, {"flagged": "true"},
           {"label": "b", "predicted": "c", "reviewed": "false"}, {"split": "valid"},
           {"split": "train", "label": "c", "reviewed": "true"}, {"predicted": "a", "flagged": "false"}]


@pytest.mark.parametrize("order", list(SCORES))
def test_each_score_order_pages_through_every_sample_once_in_order(client, db, annotator, listed, order):
    ds, run = listed
    for reverse in (False, True):
        for filters in FILTERS:
            expected = _expected(db, ds, run, order, reverse, filters)
            for limit in (1, 4, 50):
                params = {"order": order, "reverse": str(reverse).lower(), **filters}
                got = _walk(client, annotator.headers, ds, params, limit)
                assert got == expected, (order, reverse, filters, limit)


@pytest.mark.parametrize("order", ["loss", "aum", "priority"])
def test_a_class_filter_over_more_ranges_than_merged_checks_rows_instead(client, db, annotator, listed, order,
                                                                          monkeypatch):
    """Past MAX_RANGES index ranges a class filter is checked row by row on the walk: the same listing."""
    from app.labels import ranges

    monkeypatch.setattr(ranges, "MAX_RANGES", 2)
    ds, run = listed
    for reverse in (False, True):
        for filters in FILTERS:
            expected = _expected(db, ds, run, order, reverse, filters)
            params = {"order": order, "reverse": str(reverse).lower(), **filters}
            assert _walk(client, annotator.headers, ds, params, 3) == expected, (order, reverse, filters)


def _expected_by(db, ds, run, order: str, reverse: bool, filters: dict) -> list[int]:
    """The ids _expected keeps for these filters, by id or in the fixed shuffle
    ((id * 2654435761) mod 4294967311, then id), highest first with reverse."""
    kept = _expected(db, ds, run, "loss", False, filters)
    if order == "id":
        return sorted(kept, reverse=reverse)
    return sorted(kept, key=lambda i: (-(i * 2654435761 % 4294967311) if reverse else i * 2654435761 % 4294967311, i))


@pytest.mark.parametrize("order", ["id", "random"])
def test_a_listing_by_id_or_at_random_pages_through_every_sample_once_with_every_filter(client, db, annotator,
                                                                                         listed, order):
    """By id and at random, both ways: with a filter on the run's predictions (flagged,
    predicted class) the listing walks the predictions' ranges (app.labels.ranges), else the
    samples; the same samples and order either way, each once, from any cursor."""
    ds, run = listed
    for reverse in (False, True):
        for filters in FILTERS + [{"flagged": "true", "reviewed": "true"}, {"predicted": "c", "split": "valid"}]:
            expected = _expected_by(db, ds, run, order, reverse, filters)
            for limit in (1, 3, 50):
                params = {"order": order, "reverse": str(reverse).lower(), **filters}
                got = _walk(client, annotator.headers, ds, params, limit)
                assert got == expected, (order, reverse, filters, limit)


@pytest.mark.parametrize("order", ["id", "random"])
def test_a_listing_walks_the_predictions_only_when_a_filter_needs_them(db, listed, order):
    """By id or at random with a flagged or predicted filter: one merged statement over the
    run's predictions' ranges (only samples the run scored can match); with filters on the
    samples alone it reads the samples, so that those added after the run are listed too."""
    from app.labels import queries
    from app.labels.prepared import BoundStatement

    ds, _ = listed
    for filters in ({"predicted": "b", "label": "a"}, {"flagged": True}, {"predicted": "c", "reviewed": False}):
        statements, _ = queries.listing_statements(db, ds, queries.SampleQuery(order=order, **filters), 6)
        assert len(statements) == 1 and isinstance(statements[0], BoundStatement), filters
    statements, _ = queries.listing_statements(db, ds, queries.SampleQuery(order=order, label="a"), 6)
    assert not isinstance(statements[0], BoundStatement)


@pytest.mark.parametrize("filters", [{}, {"flagged": "true"}, {"predicted": "b"}])
@pytest.mark.parametrize("values", [["x", 1], [1.5, 2], [True, 1], [1, "y"], [1, 2, 3], [2**53, 1]])
def test_a_crafted_cursor_of_the_random_order_is_a_422_or_a_page(client, annotator, listed, filters, values):
    """A cursor made by hand, not given out: refused with the field named, or (a value of the
    right kinds) a page; never a database error, on either walk of the random order."""
    import base64
    import json

    ds, _ = listed
    cursor = base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")
    r = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": "random", "cursor": cursor, **filters},
                   headers=annotator.headers)
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert r.json()["errors"][0]["field"] == "cursor"
    else:
        assert isinstance(values[0], int) and not isinstance(values[0], bool) and isinstance(values[1], int)


def test_a_cursor_of_another_order_is_refused(client, annotator, listed):
    ds, _ = listed
    url = f"/api/v1/datasets/{ds.id}/samples"
    cursor = client.get(url, params={"order": "id", "limit": 1}, headers=annotator.headers).json()["next_cursor"]
    r = client.get(url, params={"order": "loss", "cursor": cursor}, headers=annotator.headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("mode", ["autocommit", "transaction"])
def test_a_merged_listing_runs_with_a_generic_plan_and_leaves_the_session_as_it_was(db, engine, listed, backend,
                                                                                    mode):
    """On Postgres the merged statement is prepared at its first run and planned generically
    (no planning for each run's values), in a transaction (a request's session) or outside
    one; the connection's prepare threshold is as before it, and so is the session's plan mode
    once the transaction ends (outside one, at once). A run without covers_through is listed by plain statements,
    left to the defaults. SQLite runs them plainly."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from app.labels import queries

    ds, run = listed
    q = queries.SampleQuery(order="loss", label="a", limit=5)
    expected = [s.id for s in queries.list_samples(db, ds, q)[0]]
    assert expected
    session = db if mode == "autocommit" else Session(bind=engine)
    try:
        conn = session.connection()
        conn.exec_driver_sql("SELECT 1")
        driver = conn.connection.driver_connection
        threshold = getattr(driver, "prepare_threshold", None)
        known = _prepared_merged(conn) if backend == "postgres" else {}
        for _ in range(2):
            assert [s.id for s in queries.list_samples(session, ds, q)[0]] == expected
        if backend != "postgres":
            return
        assert driver.prepare_threshold == threshold
        new = {name: plans for name, plans in _prepared_merged(conn).items() if plans != known.get(name)}
        if run.info.get("covers_through"):
            # Two runs, each with the generic plan (a connection that ran it before counts on).
            assert [(g - known.get(n, (0, 0))[0], c - known.get(n, (0, 0))[1]) for n, (g, c) in new.items()] == [(2, 0)]
        else:
            assert new == {}
        plan_mode = text("SELECT current_setting('plan_cache_mode')")
        if mode == "transaction" and run.info.get("covers_through"):
            assert conn.execute(plan_mode).scalar() == "force_generic_plan"  # the transaction's
            session.commit()
            conn = session.connection()
        assert conn.execute(plan_mode).scalar() == "auto"
    finally:
        if session is not db:
            session.rollback()
            session.close()


def _prepared_merged(conn) -> dict:
    """The connection's prepared merged listings: name -> (generic plans, custom plans)."""
    from sqlalchemy import text

    rows = conn.execute(text(
        "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
        " WHERE statement LIKE '%UNION ALL%' AND statement NOT LIKE '%pg_prepared_statements%'"
    )).all()
    return {name: (g, c) for name, g, c in rows}
