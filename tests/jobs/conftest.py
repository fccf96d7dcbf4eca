"""Fixtures for the job tests: the test-only handlers, a worker in a thread, worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.config import get_settings
from app.db import session_scope
from app.jobs.worker import Worker
from app.models import Job, JobLog
from tests.jobs.handlers import EXTRA_JOB_HANDLERS

ROOT = Path(__file__).resolve().parents[2]
# Generous: a loaded two-core machine is slow, never wrong.
WAIT_SECONDS = 120


@pytest.fixture(autouse=True)
def _test_handlers(monkeypatch):
    """The test kinds, in the environment and so in every Settings read from it (get_settings too)."""
    monkeypatch.setenv("CURATE_EXTRA_JOB_HANDLERS", EXTRA_JOB_HANDLERS)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def wait_for(predicate: Callable[[], object], what: str, timeout: float = WAIT_SECONDS, interval: float = 0.1):
    """Poll until predicate() is truthy and return its value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def load_job(engine, job_id: int) -> Job:
    with session_scope(engine, readonly=True) as session:
        return session.get(Job, job_id)


def job_log(engine, job_id: int) -> list[str]:
    from sqlalchemy import select

    with session_scope(engine, readonly=True) as session:
        return list(session.scalars(select(JobLog.message).where(JobLog.job_id == job_id).order_by(JobLog.id)))


@pytest.fixture
def thread_worker(settings, engine) -> Iterator[Callable[..., Worker]]:
    """Start Worker.run() in a thread; every started worker is stopped and joined at the end."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(worker_id: str = "thread-worker", **overrides) -> Worker:
        worker = Worker(settings.model_copy(update=overrides), engine, worker_id)
        thread = threading.Thread(target=worker.run, name=worker_id, daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker

    yield start
    for worker, _ in started:
        worker.stop()
    for _, thread in started:
        thread.join(timeout=WAIT_SECONDS)
        assert not thread.is_alive(), "a worker thread did not stop"


class WorkerProcess:
    """A `python -m app.cli worker` process with its output in a file."""

    def __init__(self, popen: subprocess.Popen, log_path: Path, worker_id: str) -> None:
        self.popen = popen
        self.log_path = log_path
        self.worker_id = worker_id

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_started(self) -> None:
        wait_for(lambda: f"worker {self.worker_id} started" in self.output() or self.popen.poll() is not None,
                 f"worker {self.worker_id} to start")
        assert self.popen.poll() is None, f"worker {self.worker_id} exited:\n{self.output()}"


@pytest.fixture
def worker_process(database_url, settings, engine, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes on the test database; SIGTERM (then SIGKILL) the survivors at the end."""
    procs: list[WorkerProcess] = []

    def start(worker_id: str, *args: str, lease_seconds: float | None = None, poll_seconds: float = 0.1) -> WorkerProcess:
        env = {
            **os.environ,
            "CURATE_DATABASE_URL": database_url,
            "CURATE_DATA_DIR": str(settings.data_dir),
            "CURATE_EXTRA_JOB_HANDLERS": EXTRA_JOB_HANDLERS,
            "CURATE_JOB_LEASE_SECONDS": str(lease_seconds or settings.job_lease_seconds),
            "CURATE_WORKER_POLL_SECONDS": str(poll_seconds),
            "PYTHONPATH": str(ROOT),
        }
        log_path = tmp_path / f"worker-{worker_id}.log"
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--id", worker_id, *args],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        proc = WorkerProcess(popen, log_path, worker_id)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.popen.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
