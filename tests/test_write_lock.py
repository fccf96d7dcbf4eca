"""SQLite's single write lock is taken only by the statements that write.

A reader (a page, a listing, a token-authenticated GET) never queues behind a writer, an
import stages its rows without the lock, and an import that loses a race to another writer
fails whole with the reason instead of a 500 or a half-written file.
"""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.datasets import importers
from app.datasets.importers import pipeline, writing
from app.db import begin_write, make_engine, session_scope, takes_write_lock
from app.models import ApiToken, Sample, UserSession, utcnow
from tests.builders import add_samples, make_dataset
from tests.web.session import login


def _hold_write_lock(url: str, seconds: float) -> tuple[threading.Thread, threading.Event]:
    """Another connection takes the write lock and keeps it for `seconds`."""
    path = url.split("///", 1)[1]
    taken = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE datasets SET label_version = label_version")
        taken.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10)
    return thread, taken


# SQLite's database-wide write lock: these run on SQLite only (not skipped on Postgres).
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_statements_that_take_the_write_lock():
    assert takes_write_lock("INSERT INTO samples (x) VALUES (1)")
    assert takes_write_lock("  update jobs set x = 1")
    assert takes_write_lock("DELETE FROM samples")
    assert takes_write_lock("WITH t AS (SELECT 1) UPDATE jobs SET x = 1")
    assert takes_write_lock("SAVEPOINT sa_savepoint_1")
    assert not takes_write_lock("SELECT * FROM samples")
    assert not takes_write_lock("WITH t AS (SELECT 1) SELECT * FROM t")
    assert not takes_write_lock("PRAGMA busy_timeout=50")
    assert not takes_write_lock("CREATE TEMP TABLE stage AS SELECT 1")
    assert not takes_write_lock("INSERT INTO temp.stage (x) VALUES (?)")
    assert not takes_write_lock("DROP TABLE IF EXISTS temp.stage")


@sqlite_only
def test_reads_do_not_wait_for_a_held_write_lock(database_url, client, db, annotator):
    ds = make_dataset(db)
    add_samples(db, ds, [{"label": "a"}, {"label": "b"}])
    thread, _ = _hold_write_lock(database_url, 8)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(client.get, path, headers=annotator.headers)
                for path in (
                    "/api/v1/datasets",
                    f"/api/v1/datasets/{ds.id}",
                    f"/api/v1/datasets/{ds.id}/samples?limit=5",
                    "/api/v1/me",
                )
            ]
            responses = [f.result(timeout=6) for f in futures]
        elapsed = time.monotonic() - started
    finally:
        thread.join()
    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    assert elapsed < 6, "the reads waited for the write lock"


@sqlite_only
def test_a_stale_session_stamp_does_not_make_a_read_wait_for_the_write_lock(database_url, client, db, annotator):
    # last_seen_at a minute old: the stamp is written after the response, not by the request.
    login(client, annotator.user.username)
    two_minutes_ago = utcnow() - timedelta(minutes=2)
    db.execute(update(UserSession).values(last_seen_at=two_minutes_ago))
    thread, _ = _hold_write_lock(database_url, 8)
    started = time.monotonic()
    try:
        r = client.get("/api/v1/me")
        elapsed = time.monotonic() - started
    finally:
        thread.join()
    assert r.status_code == 200, r.text
    assert elapsed < 4, "the read waited for the write lock"
    # The stamp could not be written while the lock was held; the next request writes it.
    assert client.get("/api/v1/me").status_code == 200
    assert db.scalar(select(UserSession.last_seen_at)) > two_minutes_ago + timedelta(seconds=60)


def test_stamping_a_token_needs_no_second_connection(app, database_url, db, engineer):
    # Fifty clients with one token find its stamp a minute old at once. Each request holds a
    # connection; had the stamp needed another while it did, the pool would run dry.
    app.state.engine = make_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=2)
    try:
        with TestClient(app) as client:
            r = client.get("/api/v1/me", headers=engineer.headers)
        assert r.status_code == 200, r.text
        stamp = db.scalar(select(ApiToken.last_used_at).where(ApiToken.user_id == engineer.user.id))
        assert stamp is not None
    finally:
        app.state.engine.dispose()


@sqlite_only
def test_a_write_waits_for_the_lock_instead_of_failing(database_url, client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    thread, _ = _hold_write_lock(database_url, 1.5)
    try:
        r = client.patch(f"/api/v1/samples/{s.id}", json={"label": "b"}, headers={**annotator.headers, "If-Match": "1"})
    finally:
        thread.join()
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "b"


@sqlite_only
def test_import_rows_are_staged_without_the_write_lock(database_url, engine, db):
    ds = make_dataset(db, classes=["a", "b"])
    batch = next(writing._new_sample_batches(ds, _prepared(ds, 500), writing._timestamp(utcnow())))
    thread, _ = _hold_write_lock(database_url, 5)
    try:
        started = time.monotonic()
        with session_scope(engine) as session:
            assert writing._stage_sqlite(session, [batch]) == 500
            assert time.monotonic() - started < 3, "staging waited for the write lock"
            assert not session.connection().connection.driver_connection.in_transaction
    finally:
        thread.join()


def _prepared(ds, n: int) -> importers.Prepared:
    import pyarrow as pa

    return importers.Prepared(
        n=n,
        ids=pa.array([f"r{i}" for i in range(n)]),
        labels=pa.array(["a" if i % 2 else "b" for i in range(n)]),
        splits=pa.array(["train"] * n),
        feature_names=["x"],
        features={"x": pa.array([float(i) for i in range(n)], pa.float64())},
        existing_pos=np.empty(0, dtype=np.int64),
    )


def _csv(rows: list[tuple[str, str, float]]) -> bytes:
    return ("id,label,x\n" + "".join(f"{i},{label},{x}\n" for i, label, x in rows)).encode()


def test_an_id_added_while_the_file_was_checked_fails_the_import_whole(engine, db, monkeypatch, settings):
    ds = make_dataset(db, classes=["a", "b"], settings={})
    add_samples(db, ds, [{"label": "a", "external_id": "old", "features": {"x": 0.0}}])
    prepare = pipeline.prepare

    def prepare_then_race(session, ds_, *args, **kwargs):
        prepared = prepare(session, ds_, *args, **kwargs)
        # Another writer adds one of this file's ids after the checks ran.
        add_samples(db, ds, [{"label": "b", "external_id": "r3", "features": {"x": 1.0}}])
        return prepared

    monkeypatch.setattr(pipeline, "prepare", prepare_then_race)
    with pytest.raises(importers.ImportFailed) as failed, session_scope(engine) as session:
        importers.import_file(
            session, session.get(type(ds), ds.id), io.BytesIO(_csv([(f"r{i}", "a", i) for i in range(10)])), "f.csv",
            settings=settings,
        )
    assert "r3" in str(failed.value.errors)
    db.expire_all()
    ids = set(db.scalars(select(Sample.external_id).where(Sample.dataset_id == ds.id)))
    assert ids == {"old", "r3"}, "the import must write nothing"


def test_an_update_of_a_sample_relabelled_meanwhile_fails_whole(engine, db, monkeypatch, settings):
    ds = make_dataset(db, classes=["a", "b"], settings={})
    s1, s2 = add_samples(
        db, ds, [{"label": "a", "external_id": "p", "features": {"x": 0.0}}, {"label": "a", "external_id": "q", "features": {"x": 1.0}}]
    )
    prepare = pipeline.prepare

    def prepare_then_relabel(session, ds_, *args, **kwargs):
        prepared = prepare(session, ds_, *args, **kwargs)
        db.execute(Sample.__table__.update().where(Sample.id == s2.id).values(label="a", version=Sample.version + 1))
        return prepared

    monkeypatch.setattr(pipeline, "prepare", prepare_then_relabel)
    with pytest.raises(importers.ImportFailed, match="changed while the file was imported"), session_scope(engine) as session:
        importers.import_file(
            session, session.get(type(ds), ds.id), io.BytesIO(_csv([("p", "b", 0.0), ("q", "b", 1.0)])), "f.csv",
            on_conflict="update", settings=settings,
        )
    db.expire_all()
    assert [db.get(Sample, s.id).label for s in (s1, s2)] == ["a", "a"]


def test_an_import_writes_all_its_rows_through_the_stage(engine, db, settings):
    ds = make_dataset(db, classes=["a", "b"], settings={})
    with session_scope(engine) as session:
        result = importers.import_file(
            session, session.get(type(ds), ds.id), io.BytesIO(_csv([(f"r{i}", "ab"[i % 2], i / 3) for i in range(2500)])),
            "f.csv", settings=settings,
        )
    assert result.imported == 2500
    count = db.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == ds.id))
    assert count == 2500
    first = db.scalar(select(Sample).where(Sample.external_id == "r1"))
    assert first.label == "b" and first.features == {"x": 1 / 3} and first.version == 1


@sqlite_only
def test_a_writer_after_reads_takes_the_lock_before_it_reads_again(engine, db):
    ds = make_dataset(db)
    with session_scope(engine) as session:
        session.scalar(select(func.count()).select_from(Sample))
        dbapi = session.connection().connection.driver_connection
        assert not dbapi.in_transaction, "a read must not open a transaction"
        begin_write(session)
        assert dbapi.in_transaction
        session.execute(select(Sample.id).where(Sample.dataset_id == ds.id).with_for_update())
