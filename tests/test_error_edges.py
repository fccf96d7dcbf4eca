"""Inputs that once reached the database unchecked and came back as a 500."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from app.db import begin_write, make_engine
from tests.builders import make_dataset, make_user


@pytest.mark.parametrize("source", ["bogus", "null", "IMPORT"])
def test_label_events_of_an_unknown_source_are_422(client, db, source):
    ds = make_dataset(db)
    annotator = make_user(db, "annotator")
    r = client.get(f"/api/v1/datasets/{ds.id}/label-events", params={"source": source}, headers=annotator.headers)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"][-1] == "source"


def test_the_history_page_refuses_an_unknown_source_with_422(client, db):
    from tests.web.session import login

    ds = make_dataset(db)
    make_user(db, "annotator", username="ann")
    login(client, "ann")
    r = client.get(f"/datasets/{ds.id}/history", params={"source": "bogus"})
    assert r.status_code == 422, r.text
    assert client.get(f"/datasets/{ds.id}/history", params={"source": "import"}).status_code == 200


def test_begin_write_past_the_busy_timeout_is_sqlalchemy_s_operational_error(tmp_path):
    """The handlers turn SQLAlchemy's OperationalError into a 503; the driver's own was a 500."""
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:  # the file in WAL mode, as Curate's connections make it
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    holder = create_engine(url).raw_connection()
    holder.isolation_level = None
    holder.execute("BEGIN IMMEDIATE")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout=50")
            from sqlalchemy.orm import Session

            with Session(bind=conn) as session, pytest.raises(OperationalError):
                begin_write(session)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()
