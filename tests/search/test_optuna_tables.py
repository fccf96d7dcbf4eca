"""Optuna's tables come with the migrations: opening a search's storage writes nothing.

Made lazily, Optuna created them the first time a search page or the search API opened the
storage, on SQLite under the write lock: behind a running import or training job the page
hung for a minute and failed.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import inspect

from app.migrate import optuna_tables
from app.search import storage as search_storage
from tests.builders import make_user
from tests.search.helpers import PRUNING_SEARCH, enqueue_search
from tests.test_write_lock import _hold_write_lock
from tests.training.factories import tabular_dataset


def test_the_migrated_database_has_optunas_tables(engine):
    assert optuna_tables() <= set(inspect(engine).get_table_names())


@pytest.fixture
def fresh_storages(monkeypatch):
    """Optuna storages opened anew within the test (none cached from another), closed after it."""
    monkeypatch.setattr(search_storage, "_storages", {})
    yield
    for storage in search_storage._storages.values():
        storage.engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_search_is_read_while_another_writer_holds_the_lock(database_url, client, db, settings, fresh_storages):
    ds, _ = tabular_dataset(db)
    job_id = enqueue_search(db, ds.id, PRUNING_SEARCH)
    engineer = make_user(db, "engineer")
    thread, _ = _hold_write_lock(database_url, 6)
    try:
        started = time.monotonic()
        r = client.get(f"/api/v1/jobs/{job_id}/search", headers=engineer.headers)
        elapsed = time.monotonic() - started
        # The worker's storage (read-write) also opens without writing.
        started = time.monotonic()
        search_storage.get_storage(settings)
        opened = time.monotonic() - started
    finally:
        thread.join()
    assert r.status_code == 200, r.text
    assert r.json()["trials"] == []
    assert elapsed < 4 and opened < 4, (elapsed, opened)
