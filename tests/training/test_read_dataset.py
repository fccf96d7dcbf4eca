"""A train run's read holds every sample of the dataset up to the highest id it holds, even
while an import into the dataset is under way (its ids are above every committed one), so
the run's `covers_through` is true and the listings can rely on it."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from app.datasets.importers.pipeline import lock_dataset_imports
from app.db import session_scope
from app.models import Sample
from app.training.data import read_dataset
from tests.builders import add_samples, make_dataset


def test_the_read_holds_every_sample_up_to_its_highest_id_while_an_import_is_under_way(engine, db):
    ds, other = make_dataset(db), make_dataset(db)
    add_samples(db, ds, [{"label": "a"}] * 3)
    inserted, release = threading.Event(), threading.Event()

    def import_in_flight() -> None:
        # An import: it takes the dataset's import lock (Postgres) or the write lock (SQLite),
        # writes a sample, and commits only later.
        with session_scope(engine) as session:
            lock_dataset_imports(session, ds.id)
            session.add(Sample(dataset_id=ds.id, external_id="late", split="train", label="b"))
            session.flush()
            inserted.set()
            release.wait(10)

    importer = threading.Thread(target=import_in_flight)
    importer.start()
    assert inserted.wait(10)
    if engine.dialect.name == "postgresql":
        # Meanwhile a sample of another dataset commits with a higher id. (SQLite has one
        # writer at a time: there nothing commits while the import is under way.)
        add_samples(db, other, [{"label": "a"}])
    result: dict = {}
    reader = threading.Thread(target=lambda: result.update(rows=read_dataset(engine, ds.id)[1]))
    reader.start()
    time.sleep(1.0)
    release.set()
    importer.join(10)
    reader.join(30)
    read = {r.id for r in result["rows"]}
    highest = max(read)
    db.expire_all()
    stored = set(db.scalars(select(Sample.id).where(Sample.dataset_id == ds.id, Sample.id <= highest)))
    assert stored == read, "a sample at or below the read's highest id was not read"
    assert len(set(db.scalars(select(Sample.id).where(Sample.dataset_id == ds.id)))) == 4
