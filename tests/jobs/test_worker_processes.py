"""Worker processes (`python -m app.cli worker`) against the test database: concurrency, kill -9, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.jobs import service
from app.models import Job
from tests.jobs.conftest import ROOT, WAIT_SECONDS, job_log, load_job, wait_for

pytestmark = pytest.mark.slow

# Short, so that a killed worker's job is taken again within seconds.
KILL_TEST_LEASE_SECONDS = 3


def enqueue(db, kind: str, params: dict | None = None, dataset_id: int | None = None) -> int:
    job = service.enqueue(db, kind, params or {}, dataset_id=dataset_id, max_attempts=3)
    db.commit()
    return job.id


def long_running_job(db, tmp_path) -> tuple[str, dict, int | None]:
    """The (kind, params, dataset_id) of a job that runs for several seconds and reports progress.

    The kill test runs this job; to kill a worker in the middle of training instead, return
    ("train", tiny params, a dataset with samples) from here, e.g. a tests.training.factories
    tabular dataset with {"epochs": 3, "folds": 3}. The lease must outlast the longest pause
    between heartbeats, and a train job's large writes hold SQLite's write lock for a while:
    give it a few more seconds of KILL_TEST_LEASE_SECONDS.
    """
    return "t_slow", {"steps": 60, "step_seconds": 0.1}, None


def finished(engine, ids: list[int]) -> list[Job] | None:
    with session_scope(engine, readonly=True) as session:
        jobs = list(session.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)))
    return jobs if all(j.status in ("succeeded", "failed", "cancelled") for j in jobs) else None


def test_the_worker_command_does_not_import_torch(db, engine, database_url, settings):
    job_id = enqueue(db, "t_echo")
    code = (
        "import sys\n"
        "from app.cli import main\n"
        "sys.argv = ['curate', 'worker', '--once', '--id', 'light']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = sorted(m for m in ('torch', 'fastai', 'torchvision') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    from tests.jobs.handlers import EXTRA_JOB_HANDLERS

    env = {"CURATE_DATABASE_URL": database_url, "CURATE_DATA_DIR": str(settings.data_dir),
           "CURATE_EXTRA_JOB_HANDLERS": EXTRA_JOB_HANDLERS, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=WAIT_SECONDS)
    assert done.returncode == 0, done.stderr
    assert (load_job(engine, job_id).status, load_job(engine, job_id).worker_id) == ("succeeded", "light")


def test_once_runs_one_waiting_job_and_exits(db, engine, worker_process):
    first, second = enqueue(db, "t_echo"), enqueue(db, "t_echo")
    proc = worker_process("once", "--once")
    assert proc.popen.wait(timeout=WAIT_SECONDS) == 0, proc.output()
    assert load_job(engine, first).status == "succeeded"
    assert load_job(engine, second).status == "queued"


def test_once_fails_loudly_when_the_database_is_not_usable(tmp_path):
    env = {**os.environ, "CURATE_DATABASE_URL": f"sqlite:///{tmp_path / 'unmigrated.db'}",
           "CURATE_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "app.cli", "worker", "--once"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=WAIT_SECONDS)
    assert done.returncode != 0
    assert "no such table: jobs" in done.stderr


def test_two_worker_processes_run_every_job_exactly_once(db, engine, worker_process, tmp_path):
    barrier_file, record_file = tmp_path / "barrier", tmp_path / "record"
    # Each worker runs one job at a time, so two barrier jobs running together prove two busy workers.
    barriers = [enqueue(db, "t_barrier", {"path": str(barrier_file), "n": 2}) for _ in range(2)]
    records = [enqueue(db, "t_record", {"path": str(record_file), "sleep": 0.02}) for _ in range(30)]
    workers = [worker_process("a"), worker_process("b")]

    jobs = wait_for(lambda: finished(engine, barriers + records), "all 32 jobs to finish")
    outputs = "\n".join(w.output() for w in workers)
    assert all(j.status == "succeeded" and j.attempts == 1 for j in jobs), (
        [(j.id, j.status, j.attempts, j.error) for j in jobs], outputs)
    assert {j.worker_id for j in jobs if j.id in barriers} == {"a", "b"}

    lines = [line.split() for line in record_file.read_text().splitlines()]
    ran = [int(job_id) for job_id, _ in lines]
    assert len(ran) == 30 and sorted(ran) == records, "a job ran twice or never"
    by_job = {j.id: j.worker_id for j in jobs}
    assert all(by_job[int(job_id)] == worker for job_id, worker in lines)


def test_a_killed_worker_s_job_is_claimed_again_after_its_lease(db, engine, worker_process, tmp_path):
    workers = {name: worker_process(name, lease_seconds=KILL_TEST_LEASE_SECONDS) for name in ("a", "b")}
    for proc in workers.values():
        proc.wait_started()
    kind, params, dataset_id = long_running_job(db, tmp_path)
    job_id = enqueue(db, kind, params, dataset_id)
    running = wait_for(lambda: (j := load_job(engine, job_id)).progress > 0 and j,
                       "a worker to be in the middle of the job")

    # Kill whichever worker took it; the other one is polling all along.
    victim, survivor = running.worker_id, ({"a", "b"} - {running.worker_id}).pop()
    workers[victim].popen.kill()
    workers[victim].popen.wait(timeout=WAIT_SECONDS)
    orphan = load_job(engine, job_id)
    assert (orphan.status, orphan.worker_id, orphan.attempts) == ("running", victim, 1)

    job = wait_for(lambda: (j := load_job(engine, job_id)).status in ("succeeded", "failed") and j,
                   "the other worker to finish the job")
    assert (job.status, job.attempts, job.worker_id) == ("succeeded", 2, survivor), (
        job.error, workers[survivor].output())
    # Taken again only once the dead worker's lease had run out.
    assert job.started_at >= orphan.lease_expires_at
    log = job_log(engine, job_id)
    assert f"attempt 1 of 3 on worker {victim}" in log and f"attempt 2 of 3 on worker {survivor}" in log


def test_sigterm_requeues_the_running_job_and_exits(db, engine, worker_process):
    job_id = enqueue(db, "t_loop")
    proc = worker_process("term")
    wait_for(lambda: load_job(engine, job_id).progress > 0, "the worker to be in the middle of the job")

    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(timeout=WAIT_SECONDS) == 0, proc.output()
    job = load_job(engine, job_id)
    assert (job.status, job.attempts, job.worker_id, job.lease_expires_at) == ("queued", 0, None, None)
    assert "worker term shut down; requeued (attempt 1 of 3 not counted)" in job_log(engine, job_id)
    assert "SIGTERM received" in proc.output()

    # Another worker takes it from the start; cancelling it is what ends it.
    worker_process("next")
    wait_for(lambda: (j := load_job(engine, job_id)).worker_id == "next" and j.progress > 0, "the next worker to take it")
    with session_scope(engine) as session:
        service.cancel_job(session, job_id)
    job = wait_for(lambda: (j := load_job(engine, job_id)).status == "cancelled" and j, "the job to be cancelled")
    assert job.attempts == 1


def test_a_worker_killed_in_the_middle_of_training_leaves_a_job_that_another_finishes(
    db, engine, worker_process
):
    """kill -9 during a real fastai train job: the job is claimed again after its lease and finishes."""
    from app.models import Prediction, Run
    from tests.training.factories import tabular_dataset

    ds, samples = tabular_dataset(db, name="killed-training")
    workers = {name: worker_process(name, lease_seconds=8) for name in ("a", "b")}
    for proc in workers.values():
        proc.wait_started()
    job_id = enqueue(db, "train", {"epochs": 4, "folds": 2, "lr": 0.01, "batch_size": 16}, ds.id)

    def mid_training():
        job = load_job(engine, job_id)
        if job.run_id is None:
            return None
        with session_scope(engine, readonly=True) as session:
            run = session.get(Run, job.run_id)
            return job if run.history else None  # at least one epoch done, more to come

    running = wait_for(mid_training, "a worker to be in the middle of training")
    first_run_id = running.run_id
    victim, survivor = running.worker_id, ({"a", "b"} - {running.worker_id}).pop()
    workers[victim].popen.kill()
    workers[victim].popen.wait(timeout=WAIT_SECONDS)

    job = wait_for(lambda: (j := load_job(engine, job_id)).status in ("succeeded", "failed") and j,
                   "the other worker to finish the training job")
    assert (job.status, job.attempts, job.worker_id) == ("succeeded", 2, survivor), (
        job.error, workers[survivor].output())
    with session_scope(engine, readonly=True) as session:
        run = session.get(Run, job.run_id)
        assert run.status == "succeeded" and run.metrics["valid"]["accuracy"] > 0.5
        # The dead worker's run does not stay "running" for ever.
        assert run.id != first_run_id and session.get(Run, first_run_id).status == "failed"
        scored = session.scalars(select(Prediction.sample_id).where(Prediction.run_id == run.id)).all()
    assert sorted(scored) == sorted(s.id for s in samples)
