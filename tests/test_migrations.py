"""The same Alembic migrations bring SQLite and Postgres up to the models and back down."""

import os
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from app.migrate import downgrade, include_name, include_object, optuna_tables, upgrade
from app.models import Base
from app.db import create_postgres_database, drop_postgres_database

# The listings' expression indexes on predictions (migration 0018).
LISTING_EXPRESSION_INDEXES = {"ix_predictions_by_id", "ix_predictions_cell_by_id", "ix_predictions_random",
                              "ix_predictions_cell_random"}
BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("CURATE_TEST_POSTGRES_URL") else [])


@pytest.fixture(params=BACKENDS)
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        admin = os.environ["CURATE_TEST_POSTGRES_URL"]
        name = f"curate_mig_{uuid.uuid4().hex[:8]}"
        yield create_postgres_database(admin, name)
        drop_postgres_database(admin, name)


def test_upgrade_matches_models_then_downgrade_to_empty(fresh_url):
    upgrade(fresh_url)
    engine = create_engine(fresh_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False, "include_name": include_name,
                                                         "include_object": include_object})
            diff = compare_metadata(context, Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        tables = set(inspect(engine).get_table_names())
        # A search opens Optuna's storage without creating anything (see test_optuna_tables).
        assert optuna_tables() <= tables
        assert {"datasets", "samples", "label_events", "jobs", "runs", "predictions", "snapshots",
                "user_sessions", "login_failures"} <= tables
        indexes = {i["name"] for i in inspect(engine).get_indexes("predictions")}
        assert {"ix_predictions_loss", "ix_predictions_cell_loss"} <= indexes
        sample_indexes = {i["name"] for i in inspect(engine).get_indexes("samples")}
        assert "ix_samples_dataset_split_label" in sample_indexes
        # An expression index: SQLite's reflection (and so the comparison above) skips it.
        catalog = ("SELECT name FROM sqlite_master WHERE type = 'index'" if fresh_url.startswith("sqlite")
                   else "SELECT indexname FROM pg_indexes WHERE tablename = 'samples'")
        with engine.connect() as conn:
            assert "ix_samples_dataset_shuffle" in set(conn.execute(text(catalog)).scalars())
        assert LISTING_EXPRESSION_INDEXES <= _index_names(engine, fresh_url)
        downgrade(fresh_url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(fresh_url)
        assert "samples" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path):
    from app.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_0006_remakes_the_score_indexes_on_a_database_with_data(fresh_url):
    """An existing database, predictions and all, comes through 0006 with its data whole and
    each score index ending in the sample id; and back down."""
    upgrade(fresh_url, "0005")
    engine = create_engine(fresh_url)
    scores = ("loss", "self_confidence", "normalized_margin", "confusion_margin", "entropy", "aum", "combined",
              "priority")
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO datasets (id, name, task, classes, label_version, settings, created_at) "
                              "VALUES (1, 'd', 'tabular', '[\"a\", \"b\"]', 0, '{}', '2026-01-01')"))
            for i in range(1, 31):
                conn.execute(text("INSERT INTO samples (id, dataset_id, external_id, split, label, reviewed, version, "
                                  "created_at, updated_at) VALUES (:i, 1, :e, 'train', 'a', false, 1, "
                                  "'2026-01-01', '2026-01-01')"), {"i": i, "e": f"s{i}"})
            conn.execute(text("INSERT INTO runs (id, dataset_id, status, params, label_version, history, info, "
                              "created_at) VALUES (1, 1, 'succeeded', '{}', 0, '[]', '{}', '2026-01-01')"))
            for i in range(1, 31):
                conn.execute(text(
                    "INSERT INTO predictions (run_id, sample_id, given_label, label, probs, loss, self_confidence, "
                    "normalized_margin, confusion_margin, confusion_a, confusion_b, entropy, out_of_fold, flagged) "
                    "VALUES (1, :i, 'a', 'b', '{}', :v, :v, :v, :v, 'a', 'b', :v, true, false)"), {"i": i, "v": i / 7})
        upgrade(fresh_url, "0006")
        with engine.connect() as conn:
            count, total = conn.execute(text("SELECT count(*), sum(loss) FROM predictions")).one()
            assert count == 30 and abs(total - sum(i / 7 for i in range(1, 31))) < 1e-9
        indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("predictions")}
        for score in scores:
            assert indexes[f"ix_predictions_run_{score}"] == ["run_id", score, "sample_id"]
        downgrade(fresh_url, "0005")
        indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("predictions")}
        assert indexes["ix_predictions_run_loss"] == ["run_id", "loss"]
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar() == 30
    finally:
        engine.dispose()


def _seed_scored_dataset(conn, n: int) -> None:
    """A dataset of n samples (labels a/b alternating, every third reviewed) and one run's predictions."""
    conn.execute(text("INSERT INTO datasets (id, name, task, classes, label_version, settings, created_at) "
                      "VALUES (1, 'd', 'tabular', '[\"a\", \"b\"]', 0, '{}', '2026-01-01')"))
    for i in range(1, n + 1):
        conn.execute(text("INSERT INTO samples (id, dataset_id, external_id, split, label, reviewed, version, "
                          "created_at, updated_at) VALUES (:i, 1, :e, :split, :label, :rev, 1, "
                          "'2026-01-01', '2026-01-01')"),
                     {"i": i, "e": f"s{i}", "split": "train" if i % 5 else "valid", "label": "ab"[i % 2],
                      "rev": i % 3 == 0})
    conn.execute(text("INSERT INTO runs (id, dataset_id, status, params, label_version, history, info, "
                      "created_at) VALUES (1, 1, 'succeeded', '{}', 0, '[]', '{}', '2026-01-01')"))
    for i in range(1, n + 1):
        conn.execute(text(
            "INSERT INTO predictions (run_id, sample_id, given_label, label, probs, loss, self_confidence, "
            "normalized_margin, confusion_margin, confusion_a, confusion_b, entropy, out_of_fold, flagged) "
            "VALUES (1, :i, 'a', 'b', '{}', :v, :v, :v, :v, 'a', 'b', :v, true, false)"), {"i": i, "v": i / 7})


def _mirror(conn) -> dict[int, tuple]:
    rows = conn.execute(text("SELECT sample_id, sample_label, sample_reviewed, sample_split FROM predictions"))
    return {sid: (label, bool(rev), split) for sid, label, rev, split in rows}


def _samples(conn) -> dict[int, tuple]:
    rows = conn.execute(text("SELECT id, label, reviewed, split FROM samples"))
    return {sid: (label, bool(rev), split) for sid, label, rev, split in rows}


def test_0008_mirrors_each_sample_on_its_predictions_and_keeps_it(fresh_url):
    """0008 on a database with data fills the predictions' copy of their sample's label,
    reviewed flag and split; afterwards the triggers keep it through relabels, reviews,
    bulk updates and inserts that leave it out; and back down, the data whole."""
    upgrade(fresh_url, "0007")
    engine = create_engine(fresh_url)
    try:
        with engine.begin() as conn:
            _seed_scored_dataset(conn, 30)
        upgrade(fresh_url)
        with engine.connect() as conn:
            assert _mirror(conn) == _samples(conn)
            assert _mirror(conn)[5] == ("b", False, "valid")
        indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("predictions")}
        assert indexes["ix_predictions_loss"] == ["run_id", "sample_reviewed", "flagged", "loss", "sample_id",
                                                  "sample_split"]
        assert indexes["ix_predictions_cell_priority"] == ["run_id", "sample_label", "label", "sample_reviewed",
                                                           "flagged", "priority", "sample_id", "sample_split"]
        with engine.begin() as conn:
            conn.execute(text("UPDATE samples SET label = 'b', reviewed = true WHERE id = 2"))
            conn.execute(text("UPDATE samples SET label = NULL, split = 'test' WHERE id = 4"))
            conn.execute(text("UPDATE samples SET reviewed = true WHERE id > 20"))
            conn.execute(text("UPDATE samples SET version = 2 WHERE id = 7"))  # no mirrored column: no change
            conn.execute(text("INSERT INTO runs (id, dataset_id, status, params, label_version, history, info, "
                              "created_at) VALUES (2, 1, 'succeeded', '{}', 0, '[]', '{}', '2026-01-02')"))
            # Left out: filled from the sample. Given: kept as written.
            conn.execute(text(
                "INSERT INTO predictions (run_id, sample_id, given_label, label, probs, confusion_margin, confusion_a, "
                "confusion_b, entropy, out_of_fold, flagged) VALUES (2, 2, 'a', 'b', '{}', 0, 'a', 'b', 0, false, false)"))
            conn.execute(text(
                "INSERT INTO predictions (run_id, sample_id, given_label, label, probs, confusion_margin, confusion_a, "
                "confusion_b, entropy, out_of_fold, flagged, sample_label, sample_reviewed, sample_split) "
                "VALUES (2, 3, 'a', 'b', '{}', 0, 'a', 'b', 0, false, false, 'a', false, 'train')"))
        with engine.connect() as conn:
            samples = _samples(conn)
            assert samples[2] == ("b", True, "train") and samples[4] == (None, False, "test")
            by_run = {(r, sid): (label, bool(rev), split) for r, sid, label, rev, split in conn.execute(text(
                "SELECT run_id, sample_id, sample_label, sample_reviewed, sample_split FROM predictions"))}
            assert {sid: v for (r, sid), v in by_run.items() if r == 1} == samples
            assert by_run[(2, 2)] == samples[2]
            assert by_run[(2, 3)] == ("a", False, "train")
        downgrade(fresh_url, "0007")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar() == 32
            conn.execute(text("UPDATE samples SET label = 'a' WHERE id = 2"))  # no trigger left to fail
        columns = {c["name"] for c in inspect(engine).get_columns("predictions")}
        assert "sample_label" not in columns
    finally:
        engine.dispose()


def test_0010_adds_claims_that_go_with_their_sample_and_back_down(fresh_url):
    """0010 on a database with data: a claim per sample at most, gone with its sample; down
    again, the table is gone and the data whole."""
    upgrade(fresh_url, "0009")
    engine = create_engine(fresh_url)
    try:
        with engine.begin() as conn:
            _seed_scored_dataset(conn, 5)
            conn.execute(text("INSERT INTO users (id, username, password_hash, role, is_active, created_at) "
                              "VALUES (1, 'u', 'x', 'annotator', true, '2026-01-01')"))
        upgrade(fresh_url)
        if fresh_url.startswith("sqlite"):
            from app.db import make_engine

            engine.dispose()
            engine = make_engine(fresh_url)  # foreign keys on, as the app's connections have them
        insert = text("INSERT INTO claims (sample_id, dataset_id, user_id, claimed_at, expires_at) "
                      "VALUES (:s, 1, 1, '2026-01-01', '2026-01-01 00:05')")
        with engine.begin() as conn:
            conn.execute(insert, [{"s": 1}, {"s": 2}])
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            with engine.begin() as conn:
                conn.execute(insert, {"s": 1})
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM predictions WHERE sample_id = 2"))
            conn.execute(text("DELETE FROM samples WHERE id = 2"))
            assert conn.execute(text("SELECT sample_id FROM claims")).scalars().all() == [1]
        downgrade(fresh_url, "0009")
        assert "claims" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM samples")).scalar() == 4
    finally:
        engine.dispose()


def test_0011_adds_answers_consensus_and_assignments_and_back_down(fresh_url):
    upgrade(fresh_url, "0010")
    engine = create_engine(fresh_url)
    try:
        with engine.begin() as conn:
            _seed_scored_dataset(conn, 3)
            conn.execute(text("INSERT INTO users (id, username, password_hash, role, is_active, created_at) "
                              "VALUES (1, 'u', 'x', 'annotator', true, '2026-01-01')"))
        upgrade(fresh_url)
        answer = text("INSERT INTO annotations (dataset_id, sample_id, user_id, label, seconds, created_at) "
                      "VALUES (1, :s, 1, 'a', 2.5, '2026-01-01')")
        with engine.begin() as conn:
            conn.execute(answer, {"s": 1})
            conn.execute(text("INSERT INTO consensus (sample_id, dataset_id, state, label, rule, quality, agreement, "
                              "annotations, decided_at) VALUES (1, 1, 'decided', 'a', 'crowdlab', 0.9, 1.0, 1, "
                              "'2026-01-01')"))
            conn.execute(text("INSERT INTO assignments (id, dataset_id, name, filters, created_at) "
                              "VALUES (1, 1, 'x', '{}', '2026-01-01')"))
            conn.execute(text("INSERT INTO assignment_users (assignment_id, user_id) VALUES (1, 1)"))
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            with engine.begin() as conn:
                conn.execute(answer, {"s": 1})
        downgrade(fresh_url, "0010")
        tables = set(inspect(engine).get_table_names())
        assert not {"annotations", "consensus", "assignments", "assignment_users"} & tables and "claims" in tables
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM samples")).scalar() == 3
    finally:
        engine.dispose()


def test_0012_adds_the_reference_run_column_and_back_down(fresh_url):
    """0012 on a database with data: every dataset starts without a reference (the newest run
    leads, as before); down again, the column is gone and the data whole."""
    upgrade(fresh_url, "0011")
    engine = create_engine(fresh_url)
    try:
        with engine.begin() as conn:
            _seed_scored_dataset(conn, 3)
        upgrade(fresh_url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT reference_run_id FROM datasets")).scalars().all() == [None]
            conn.execute(text("UPDATE datasets SET reference_run_id = 1"))
        downgrade(fresh_url, "0011")
        assert "reference_run_id" not in {c["name"] for c in inspect(engine).get_columns("datasets")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM samples")).scalar() == 3
            assert conn.execute(text("SELECT count(*) FROM datasets")).scalar() == 1
    finally:
        engine.dispose()


def test_0013_keys_the_content_of_existing_samples_as_an_import_would(fresh_url):
    """0013 on a database with data: tabular rows equal as numbers (1 and 1.0, keys in any
    order), texts equal once normalised and images with the same blob share a key, the same
    key the import computes; down again, the column is gone and the data whole."""
    from app.datasets import content

    upgrade(fresh_url, "0012")
    engine = create_engine(fresh_url)
    sample = text("INSERT INTO samples (id, dataset_id, external_id, split, label, reviewed, version, text, "
                  "features, image_blob, created_at, updated_at) VALUES (:i, :ds, :e, 'train', 'a', false, 1, "
                  ":text, :features, :blob, '2026-01-01', '2026-01-01')")
    rows = [(1, 1, None, '{"x": 1, "y": 2.5}', None), (2, 1, None, '{"y": 2.5, "x": 1.0}', None),
            (3, 1, None, '{"x": 1.0, "y": null}', None), (4, 2, "Hello  World\n", None, None),
            (5, 2, "hello world", None, None), (6, 2, "hello, world", None, None),
            (7, 3, None, None, "ab" * 32), (8, 3, None, None, "ab" * 32)]
    try:
        with engine.begin() as conn:
            for ds, task, settings in ((1, "tabular", '{"features": ["x", "y"]}'), (2, "text", "{}"), (3, "image", "{}")):
                conn.execute(text("INSERT INTO datasets (id, name, task, classes, label_version, settings, created_at) "
                                  "VALUES (:id, :name, :task, '[\"a\", \"b\"]', 0, :settings, '2026-01-01')"),
                             {"id": ds, "name": f"d{ds}", "task": task, "settings": settings})
            for i, ds, body, features, blob in rows:
                conn.execute(sample, {"i": i, "ds": ds, "e": f"s{i}", "text": body, "features": features, "blob": blob})
        upgrade(fresh_url)
        with engine.connect() as conn:
            keys = dict(conn.execute(text("SELECT id, content_hash FROM samples")).all())
        assert keys[1] == keys[2] != keys[3] and None not in keys.values()
        assert keys[1] == content.feature_keys(["x", "y"], {"x": [1.0], "y": [2.5]})[0].as_py()
        assert keys[4] == keys[5] != keys[6] and keys[5] == content.text_key("hello world")
        assert keys[7] == keys[8] == "ab" * 32
        downgrade(fresh_url, "0012")
        assert "content_hash" not in {c["name"] for c in inspect(engine).get_columns("samples")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM samples")).scalar() == len(rows)
    finally:
        engine.dispose()


def test_0016_gives_every_existing_job_one_device_and_back_down(fresh_url):
    """0016 on a database with jobs and their logs: each job needs one device (as before);
    down again, the column is gone and the jobs and their log lines whole."""
    upgrade(fresh_url, "0015")
    engine = create_engine(fresh_url)
    try:
        with engine.begin() as conn:
            for i, status in ((1, "queued"), (2, "succeeded")):
                conn.execute(text("INSERT INTO jobs (id, kind, params, status, progress, attempts, max_attempts, "
                                  "cancel_requested, created_at) VALUES (:i, 'train', '{\"epochs\": 1}', :s, 0, 0, 3, "
                                  "false, '2026-01-01')"), {"i": i, "s": status})
                conn.execute(text("INSERT INTO job_logs (job_id, level, message, created_at) "
                                  "VALUES (:i, 'info', 'queued', '2026-01-01')"), {"i": i})
        upgrade(fresh_url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT id, devices FROM jobs ORDER BY id")).all() == [(1, 1), (2, 1)]
            conn.execute(text("UPDATE jobs SET devices = 4 WHERE id = 1"))
        downgrade(fresh_url, "0015")
        assert "devices" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 2
            assert conn.execute(text("SELECT count(*) FROM job_logs")).scalar() == 2
    finally:
        engine.dispose()


def test_0018_adds_the_listing_by_id_and_random_indexes_on_a_database_with_data(fresh_url):
    """0018 on a database with predictions: the four expression indexes come with the data
    whole; down again, gone."""
    upgrade(fresh_url, "0017")
    engine = create_engine(fresh_url)
    try:
        with engine.begin() as conn:
            _seed_scored_dataset(conn, 12)
        upgrade(fresh_url)
        assert LISTING_EXPRESSION_INDEXES <= _index_names(engine, fresh_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar() == 12
            ids = conn.execute(text("SELECT sample_id + 0 FROM predictions WHERE run_id = 1 AND label = 'b' "
                                    "AND sample_label = 'a' ORDER BY sample_id + 0")).scalars().all()
            assert ids == [i for i in range(1, 13) if i % 2 == 0]
        downgrade(fresh_url, "0017")
        assert not _index_names(engine, fresh_url) & LISTING_EXPRESSION_INDEXES
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar() == 12
    finally:
        engine.dispose()


def _index_names(engine, url: str) -> set[str]:
    """The predictions table's indexes from the catalog (reflection skips expression indexes)."""
    catalog = ("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'predictions'"
               if url.startswith("sqlite") else "SELECT indexname FROM pg_indexes WHERE tablename = 'predictions'")
    with engine.connect() as conn:
        return set(conn.execute(text(catalog)).scalars())
