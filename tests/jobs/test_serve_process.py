"""`curate serve` and the worker it starts stop together, and the job in hand goes back to the queue.

Stopping the server used to leave its worker running, re-parented to PID 1, still holding
the job's lease.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from app.jobs import service
from tests.conftest import TEST_SECRET
from tests.jobs.conftest import ROOT, WAIT_SECONDS, job_log, load_job, wait_for
from tests.jobs.handlers import EXTRA_JOB_HANDLERS

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for this purpose (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _serve(database_url: str, settings, tmp_path, name: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {
        **os.environ,
        "CURATE_DATABASE_URL": database_url,
        "CURATE_DATA_DIR": str(settings.data_dir),
        "CURATE_SECRET_KEY": TEST_SECRET,
        "CURATE_EXTRA_JOB_HANDLERS": EXTRA_JOB_HANDLERS,
        "CURATE_JOB_LEASE_SECONDS": "30",
        "CURATE_WORKER_POLL_SECONDS": "0.1",
        "PYTHONPATH": str(ROOT),
    }
    out = open(tmp_path / f"serve-{name}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
    )
    out.close()

    def healthy() -> bool:
        assert proc.poll() is None, (tmp_path / f"serve-{name}.log").read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, "curate serve to answer")
    return proc, port


def _running_job(db, engine) -> tuple[int, int]:
    job = service.enqueue(db, "t_slow", {"steps": 3000, "step_seconds": 0.1}, max_attempts=3)
    db.commit()
    running = wait_for(lambda: (j := load_job(engine, job.id)).progress > 0 and j, "the server's worker to run the job")
    return job.id, int(running.worker_id.rsplit(":", 1)[1])


def test_sigterm_stops_server_and_worker_and_requeues_the_job(db, engine, database_url, settings, tmp_path):
    proc, _ = _serve(database_url, settings, tmp_path, "term")
    try:
        job_id, worker_pid = _running_job(db, engine)
        assert _alive(worker_pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_SECONDS) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not _alive(worker_pid), "the worker to exit with its server", timeout=10)
    job = load_job(engine, job_id)
    assert (job.status, job.attempts, job.lease_expires_at) == ("queued", 0, None)
    assert any("shut down; requeued" in line for line in job_log(engine, job_id))


def test_a_killed_server_s_worker_gives_its_job_back_and_exits(db, engine, database_url, settings, tmp_path):
    proc, _ = _serve(database_url, settings, tmp_path, "kill")
    try:
        job_id, worker_pid = _running_job(db, engine)
        proc.kill()
        proc.wait(timeout=WAIT_SECONDS)
        killed = time.monotonic()
        wait_for(lambda: not _alive(worker_pid), "the orphaned worker to stop", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if _alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)
    assert time.monotonic() - killed < 30
    job = load_job(engine, job_id)
    assert (job.status, job.attempts) == ("queued", 0), "the job must not wait for its lease to expire"
