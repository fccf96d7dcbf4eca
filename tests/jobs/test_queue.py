"""The queue and the worker in this process: claim, complete, retry, lease expiry, cancel."""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import event, update

from app.db import session_scope
from app.errors import Invalid
from app.jobs import queue, service
from app.jobs.worker import FLUSH_SECONDS, Worker
from app.models import Job, Run, utcnow
from tests.builders import make_dataset
from tests.jobs.conftest import job_log, load_job, wait_for


def enqueue(db, kind: str, params: dict | None = None, dataset_id: int | None = None, max_attempts: int = 3) -> int:
    job = service.enqueue(db, kind, params or {}, dataset_id=dataset_id, max_attempts=max_attempts)
    db.commit()
    return job.id


def expire_lease(engine, job_id: int) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_enqueue_claim_complete(db, engine, settings):
    ds = make_dataset(db)
    job_id = enqueue(db, "t_echo", {"x": 1}, dataset_id=ds.id)
    queued = load_job(engine, job_id)
    assert (queued.status, queued.attempts, queued.progress) == ("queued", 0, 0.0)

    assert Worker(settings, engine, "w1").run_one() == job_id

    job = load_job(engine, job_id)
    assert job.status == "succeeded"
    assert job.result == {"echo": {"x": 1}, "dataset_id": ds.id}
    assert (job.progress, job.message, job.attempts, job.worker_id) == (1.0, "halfway", 1, "w1")
    assert job.error is None and job.lease_expires_at is None
    assert job.created_at <= job.started_at <= job.finished_at
    assert job.finished_at.tzinfo is not None
    log = job_log(engine, job_id)
    assert "echoing the params" in log and log[-1] == "succeeded"
    assert Worker(settings, engine, "w1").run_one() is None


def test_claim_takes_the_oldest_job_first(db, engine):
    ids = [enqueue(db, "t_echo") for _ in range(3)]
    claimed = [queue.claim(engine, "w", 30).job_id for _ in range(3)]
    assert claimed == ids
    assert queue.claim(engine, "w", 30) is None


def test_claim_sets_worker_attempt_and_lease(db, engine):
    job_id = enqueue(db, "t_echo", {"a": [1, 2]})
    before = utcnow()
    claim = queue.claim(engine, "host:123", 30)
    after = utcnow()
    assert (claim.job_id, claim.kind, claim.params, claim.attempt, claim.worker_id) == (
        job_id, "t_echo", {"a": [1, 2]}, 1, "host:123")
    job = load_job(engine, job_id)
    assert (job.status, job.attempts, job.worker_id) == ("running", 1, "host:123")
    assert before - timedelta(seconds=1) <= job.started_at <= after + timedelta(seconds=1)
    assert before + timedelta(seconds=29) <= job.lease_expires_at <= after + timedelta(seconds=31)


def test_a_live_lease_is_not_claimed_again(db, engine):
    enqueue(db, "t_echo")
    assert queue.claim(engine, "a", 30) is not None
    assert queue.claim(engine, "b", 30) is None


def test_an_expired_lease_is_claimed_again_and_the_old_owner_is_fenced_off(db, engine):
    job_id = enqueue(db, "t_echo")
    first = queue.claim(engine, "a", 30)
    expire_lease(engine, job_id)

    second = queue.claim(engine, "b", 30)
    assert (second.job_id, second.attempt, second.worker_id) == (job_id, 2, "b")
    # The first worker comes back to life: it may no longer touch the job.
    assert queue.heartbeat(engine, first, 30, progress=0.9, logs=[queue.log_line("stale")]) is None
    assert queue.set_run(engine, first, 1) is False
    assert queue.settle(engine, first, queue.Outcome.succeeded, result={"stale": True}) is None
    job = load_job(engine, job_id)
    assert (job.status, job.worker_id, job.attempts, job.result, job.progress) == ("running", "b", 2, None, 0.0)
    assert "stale" not in job_log(engine, job_id)

    assert queue.settle(engine, second, queue.Outcome.succeeded, result={"ok": 1}) == "succeeded"
    assert load_job(engine, job_id).result == {"ok": 1}


def test_expired_lease_with_attempts_used_up_fails_with_the_reason(db, engine):
    job_id = enqueue(db, "t_echo", max_attempts=2)
    for worker in ("a", "b"):
        assert queue.claim(engine, worker, 30).job_id == job_id
        expire_lease(engine, job_id)

    assert queue.claim(engine, "c", 30) is None
    job = load_job(engine, job_id)
    assert job.status == "failed" and job.finished_at is not None and job.lease_expires_at is None
    assert job.attempts == 2
    assert "gave up after 2 of 2 attempts" in job.error
    assert "worker was lost" in job.error and "last worker b" in job.error
    assert job.error in job_log(engine, job_id)


def test_expired_lease_of_a_cancelled_job_ends_cancelled(db, engine):
    job_id = enqueue(db, "t_echo")
    queue.claim(engine, "a", 30)
    with session_scope(engine) as session:
        service.cancel_job(session, job_id)
    expire_lease(engine, job_id)
    assert queue.claim(engine, "b", 30) is None
    assert load_job(engine, job_id).status == "cancelled"


def test_a_failing_handler_is_retried_until_it_succeeds(db, engine, settings, tmp_path):
    job_id = enqueue(db, "t_flaky", {"path": str(tmp_path / "calls"), "failures": 2})
    worker = Worker(settings, engine, "w")

    assert worker.run_one() == job_id
    job = load_job(engine, job_id)
    assert (job.status, job.attempts, job.error) == ("queued", 1, "ValueError: flaky failure 1")
    assert job.worker_id is None and job.lease_expires_at is None
    assert worker.run_one() == job_id
    assert (load_job(engine, job_id).status, load_job(engine, job_id).error) == ("queued", "ValueError: flaky failure 2")
    assert worker.run_one() == job_id

    job = load_job(engine, job_id)
    assert (job.status, job.attempts, job.result, job.error) == ("succeeded", 3, {"calls": 3}, None)
    log = "\n".join(job_log(engine, job_id))
    assert "attempt 1 of 3 failed: ValueError: flaky failure 1; requeued" in log
    assert log.count("Traceback (most recent call last)") == 2


def test_a_handler_failing_every_attempt_fails_with_the_last_line_and_full_traceback(db, engine, settings):
    job_id = enqueue(db, "t_fail", max_attempts=2)
    worker = Worker(settings, engine, "w")
    assert worker.run_one() == job_id
    assert worker.run_one() == job_id
    assert worker.run_one() is None

    job = load_job(engine, job_id)
    assert (job.status, job.attempts, job.error) == ("failed", 2, "ValueError: boom")
    assert job.finished_at is not None
    log = job_log(engine, job_id)
    tracebacks = [line for line in log if line.startswith("Traceback")]
    assert len(tracebacks) == 2 and 'raise ValueError("boom")' in tracebacks[-1]
    assert "about to fail" in log and log[-1].startswith("failed (attempt 2 of 2)")


def test_an_error_that_says_retrying_cannot_help_fails_at_the_first_attempt(db, engine, settings):
    job_id = enqueue(db, "t_hopeless", max_attempts=3)
    worker = Worker(settings, engine, "w")
    assert worker.run_one() == job_id
    assert worker.run_one() is None
    job = load_job(engine, job_id)
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.error.endswith("Hopeless: the same input fails the same way")


def test_an_unknown_kind_fails_at_once(db, engine, settings):
    with session_scope(engine) as session:
        job = Job(kind="nonexistent", params={}, status="queued", max_attempts=3)
        session.add(job)
    Worker(settings, engine, "w").run_one()
    job = load_job(engine, job.id)
    assert (job.status, job.attempts) == ("failed", 1)
    assert "unknown job kind 'nonexistent'" in job.error


def test_a_result_that_is_not_json_fails_the_attempt(db, engine, settings, monkeypatch):
    import tests.jobs.handlers as handlers

    monkeypatch.setattr(handlers, "echo", lambda ctx: {"when": object()})
    job_id = enqueue(db, "t_echo", max_attempts=1)
    Worker(settings, engine, "w").run_one()
    job = load_job(engine, job_id)
    assert job.status == "failed" and "result.when is of type object" in job.error


def test_progress_and_logs_are_batched_but_all_written(db, engine, settings):
    n = 300
    job_id = enqueue(db, "t_chatty", {"n": n, "sleep": 0.005})
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()[:3]).upper())

    event.listen(engine, "before_cursor_execute", count)
    started = time.monotonic()
    try:
        Worker(settings, engine, "w").run_one()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    seconds = time.monotonic() - started

    # 300 progress and 300 log calls over a second or more: one write per flush interval,
    # plus the claim and the end, however slow the machine.
    most = 3 + seconds / FLUSH_SECONDS
    job_updates = [s for s in statements if s.startswith("UPDATE JOBS")]
    log_inserts = [s for s in statements if s.startswith("INSERT INTO JOB_LOGS")]
    assert 2 <= len(job_updates) <= most, (seconds, job_updates)
    assert 2 <= len(log_inserts) <= most, (seconds, log_inserts)
    job = load_job(engine, job_id)
    assert (job.status, job.message, job.result) == ("succeeded", "last batch done", {"batches": n})
    log = job_log(engine, job_id)
    assert [line for line in log if line.startswith("line ")] == [f"line {i}" for i in range(n)]


def test_set_run_ties_the_run_to_the_job(db, engine, settings):
    ds = make_dataset(db)
    job_id = enqueue(db, "t_run", dataset_id=ds.id)
    Worker(settings, engine, "w").run_one()
    job = load_job(engine, job_id)
    assert job.status == "succeeded"
    with session_scope(engine, readonly=True) as session:
        run = session.get(Run, job.result["run_id"])
    assert job.run_id == run.id and run.job_id == job_id


def test_the_lease_is_renewed_while_the_handler_module_is_imported(db, engine, settings, database_url, monkeypatch):
    # Importing torch can outlast a lease; the heartbeat must already be running by then.
    monkeypatch.setenv("CURATE_TEST_SLOW_IMPORT_DB", database_url)
    monkeypatch.delitem(sys.modules, "tests.jobs.slow_import", raising=False)
    job_id = enqueue(db, "t_slow_import", max_attempts=1)
    Worker(settings, engine, "w").run_one()
    job = load_job(engine, job_id)
    assert (job.status, job.result) == ("succeeded", {"imported": True}), job.error


def test_cancel_a_queued_job_at_once(db, engine):
    job_id = enqueue(db, "t_echo")
    with session_scope(engine) as session:
        job = service.cancel_job(session, job_id)
        assert (job.status, job.cancel_requested) == ("cancelled", True)
    assert queue.claim(engine, "w", 30) is None
    job = load_job(engine, job_id)
    assert job.status == "cancelled" and job.finished_at is not None and job.attempts == 0


def test_cancel_a_running_job_stops_it_at_the_next_batch(db, engine, thread_worker):
    job_id = enqueue(db, "t_loop")
    thread_worker("w")
    wait_for(lambda: load_job(engine, job_id).progress > 0, "the loop job to report progress")

    with session_scope(engine) as session:
        job = service.cancel_job(session, job_id)
        assert (job.status, job.cancel_requested) == ("running", True)
    job = wait_for(lambda: (j := load_job(engine, job_id)).status == "cancelled" and j, "the job to stop")
    assert job.finished_at is not None and job.lease_expires_at is None and job.error is None
    assert 0 < job.progress < 1
    log = job_log(engine, job_id)
    assert "cancel requested by the system" in log and log[-1] == "cancelled"


def test_the_heartbeat_renews_the_lease_while_the_handler_runs(db, engine, thread_worker):
    job_id = enqueue(db, "t_loop")
    thread_worker("w", job_lease_seconds=3)
    first = wait_for(lambda: load_job(engine, job_id).lease_expires_at, "the job to be claimed")
    wait_for(lambda: load_job(engine, job_id).lease_expires_at > first, "the lease to be renewed")
    with session_scope(engine) as session:
        service.cancel_job(session, job_id)
    job = wait_for(lambda: (j := load_job(engine, job_id)).status == "cancelled" and j, "the job to stop")
    assert job.attempts == 1


def test_stop_requeues_the_running_job_without_counting_the_attempt(db, engine, thread_worker):
    job_id = enqueue(db, "t_loop")
    worker = thread_worker("w")
    wait_for(lambda: load_job(engine, job_id).progress > 0, "the loop job to report progress")
    worker.stop()
    job = wait_for(lambda: (j := load_job(engine, job_id)).status == "queued" and j, "the job to be requeued")
    assert (job.attempts, job.worker_id, job.lease_expires_at, job.finished_at) == (0, None, None, None)
    assert any("worker w shut down; requeued" in line for line in job_log(engine, job_id))


@pytest.mark.parametrize("outcome", [queue.Outcome.error, queue.Outcome.shutdown])
def test_a_cancel_request_wins_over_errors_and_shutdowns(db, engine, outcome):
    job_id = enqueue(db, "t_echo")
    claim = queue.claim(engine, "w", 30)
    with session_scope(engine) as session:
        service.cancel_job(session, job_id)
    assert queue.settle(engine, claim, outcome, error="RuntimeError: x") == "cancelled"
    assert load_job(engine, job_id).status == "cancelled"


def test_claim_skips_jobs_that_need_more_devices_than_the_worker_advertises(db, engine, settings):
    ds = make_dataset(db)
    big = enqueue(db, "t_echo", dataset_id=ds.id)
    small = enqueue(db, "t_echo", dataset_id=ds.id)
    everywhere = enqueue(db, "t_echo", dataset_id=ds.id)
    with session_scope(engine) as session:  # as a train job's `devices` sets it when queued
        session.execute(update(Job).where(Job.id == big).values(devices=2))
    assert load_job(engine, big).devices == 2 and load_job(engine, small).devices == 1
    one = Worker(settings.model_copy(update={"worker_devices": 1}), engine, "w1")
    assert one.devices == 1
    assert one.run_one() == small and one.run_one() == everywhere
    assert one.run_one() is None and load_job(engine, big).status == "queued"
    # The waiting job says why, once per worker, in its log.
    one.run_one()
    notes = [line for line in job_log(engine, big) if "needs 2 devices" in line]
    assert len(notes) == 1 and "advertises 1" in notes[0]
    two = Worker(settings.model_copy(update={"worker_devices": 2}), engine, "w2")
    assert two.run_one() == big and load_job(engine, big).status == "succeeded"


def test_enqueue_records_the_devices_a_train_job_asks_for(db, engine):
    ds = make_dataset(db, task="tabular")
    assert service.required_devices({"devices": 2}) == 2
    assert service.required_devices({"devices": "3"}) == 3
    assert service.required_devices({"devices": "all"}) == 1  # any worker: it uses what it has
    assert service.required_devices({}) == 1
    for kind in ("search", "seeds", "prune", "t_echo"):  # only a train job trains data-parallel
        assert service.required_devices({"devices": 2}, kind) == 1
    job = service.enqueue(db, "train", {"devices": 2, "epochs": 1}, dataset_id=ds.id)
    db.commit()
    assert load_job(engine, job.id).devices == 2
    with pytest.raises(Invalid) as err:
        service.enqueue(db, "train", {"devices": 0}, dataset_id=ds.id)
    assert "devices" in str(err.value)
