"""The worker: claims jobs from the queue and runs their handlers, one at a time.

While a handler runs, a heartbeat thread renews the job's lease every lease/3 seconds,
writes the progress and log lines the handler reported (at most once a second, so a
handler may report every batch), and watches the job's cancel flag; the handler sees a
cancel through ``ctx.is_cancelled()``.

Stopping: on SIGTERM or SIGINT the worker claims nothing more and asks the running
handler to stop as if cancelled; the job then goes back to the queue without counting
the attempt, and the worker exits. Further signals change nothing: a handler that never
checks for cancel is stopped by SIGKILL, after which its lease expires and another
worker claims the job again (that attempt counts).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
import traceback
from typing import Any

from sqlalchemy import Engine

from app.config import Settings
from app.db import get_engine
from app.jobs import queue
from app.jobs.context import JobCancelled
from app.jobs.queue import Claim
from app.jobs.registry import job_kind
from app.jsonsafe import jsonable

logger = logging.getLogger("curate.worker")

# Progress and log lines reach the database at most this often (and always at the end).
FLUSH_SECONDS = 1.0
# Log lines kept in memory while the database cannot be written; older ones are dropped.
MAX_PENDING_LOGS = 10_000
# How often a worker started by `curate serve` checks that the server is still there.
PARENT_POLL_SECONDS = 1.0
# One entry per GPU the NVIDIA driver sees (Linux); without it there is no CUDA device.
NVIDIA_GPUS = "/proc/driver/nvidia/gpus"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def worker_devices(settings: Settings) -> int:
    """The devices this worker advertises (Settings.worker_devices; 0: its CUDA GPUs, else 1)."""
    if settings.worker_devices > 0:
        return settings.worker_devices
    if not os.path.isdir(NVIDIA_GPUS):
        # No NVIDIA driver, so no CUDA device: one, without importing torch (a worker that
        # only runs light jobs never loads it).
        return 1
    from app.training.ddp import advertised_devices  # torch: only where there may be GPUs to count

    return advertised_devices(0)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerJobContext:
    """The JobContext of a claimed job (app.jobs.context), with its heartbeat thread."""

    def __init__(self, claim: Claim, settings: Settings, engine: Engine) -> None:
        self.claim = claim
        self.job_id = claim.job_id
        self.dataset_id = claim.dataset_id
        self.params = dict(claim.params)
        self.settings = settings
        self.engine = engine
        self.attempt = claim.attempt
        self.worker_id = claim.worker_id
        self.lease_seconds = float(settings.job_lease_seconds)
        # Why the handler should stop: a cancel request, a worker shutdown, or a lost lease.
        self.cancel_requested = False
        self.shutdown = False
        self.lost = False
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._progress: float | None = None
        self._message: Any = queue.UNSET
        self._logs: list[dict[str, Any]] = []
        self._dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # The JobContext protocol.

    def progress(self, fraction: float, message: str | None = None) -> None:
        fraction = float(fraction)
        if not math.isfinite(fraction):
            return
        with self._lock:
            self._progress = min(max(fraction, 0.0), 1.0)
            if message is not None:
                self._message = str(message)

    def log(self, message: str, level: str = "info") -> None:
        level = level.lower() if level.lower() in LEVELS else "info"
        logger.log(LEVELS[level], "job %s: %s", self.job_id, message)
        with self._lock:
            self._logs.append(queue.log_line(str(message), level))
            if len(self._logs) > MAX_PENDING_LOGS:
                del self._logs[0]
                self._dropped += 1

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled()

    def set_run(self, run_id: int) -> None:
        if not queue.set_run(self.engine, self.claim, run_id):
            self._mark_lost()

    # Worker side.

    def request_shutdown(self) -> None:
        self.shutdown = True
        self._cancel.set()

    def _mark_lost(self) -> None:
        if not self.lost:
            logger.warning("job %s is no longer ours (lease lost); stopping its handler", self.job_id)
        self.lost = True
        self._cancel.set()

    def take_pending(self) -> tuple[float | None, Any, list[dict[str, Any]]]:
        """The progress, message and log lines not yet written, handed over once."""
        with self._lock:
            progress, message, logs = self._progress, self._message, self._logs
            self._progress, self._message, self._logs = None, queue.UNSET, []
            if self._dropped:
                dropped = f"{self._dropped} log lines dropped while the database was unreachable"
                logs.insert(0, queue.log_line(dropped, "warning"))
                self._dropped = 0
        return progress, message, logs

    def _put_back(self, progress: float | None, message: Any, logs: list[dict[str, Any]]) -> None:
        with self._lock:
            if self._progress is None:
                self._progress = progress
            if self._message is queue.UNSET:
                self._message = message
            self._logs[:0] = logs

    def _dirty(self) -> bool:
        with self._lock:
            return self._progress is not None or self._message is not queue.UNSET or bool(self._logs)

    def flush(self) -> None:
        """Renew the lease, write what is pending, and pick up a cancel request."""
        with self._flush_lock:
            progress, message, logs = self.take_pending()
            try:
                flag = queue.heartbeat(
                    self.engine, self.claim, self.lease_seconds, progress=progress, message=message, logs=logs
                )
            except Exception:
                self._put_back(progress, message, logs)
                raise
            self._see(flag)

    def _see(self, flag: bool | None) -> None:
        if flag is None:
            self._mark_lost()
        elif flag:
            self.cancel_requested = True
            self._cancel.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-job-{self.job_id}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        beat_every = self.lease_seconds / 3
        tick = min(FLUSH_SECONDS, beat_every)
        last_beat = time.monotonic()
        while not self._stop.wait(tick) and not self.lost:
            try:
                now = time.monotonic()
                if now - last_beat >= beat_every or self._dirty():
                    self.flush()
                    last_beat = now
                else:
                    self._see(queue.cancel_flag(self.engine, self.claim))
            except Exception:
                logger.warning("job %s: heartbeat failed; retrying", self.job_id, exc_info=True)


def _last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(exc)[-1].strip()


class Worker:
    """Claims and runs jobs one at a time until stopped."""

    def __init__(
        self, settings: Settings, engine: Engine | None = None, worker_id: str | None = None,
        parent_pid: int | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine or get_engine(settings.resolved_database_url)
        self.worker_id = worker_id or default_worker_id()
        # The `curate serve` process that started this worker: when it is gone, stop.
        self.parent_pid = parent_pid
        self._stop = threading.Event()
        self._current: WorkerJobContext | None = None
        self.devices = worker_devices(settings)
        self._noted: set[int] = set()  # queued jobs told that this worker has too few devices

    def stop(self) -> None:
        """Claim nothing more; the running job (if any) is asked to stop and goes back to the queue."""
        self._stop.set()
        ctx = self._current
        if ctx is not None:
            ctx.request_shutdown()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, once: bool = False, install_signals: bool = False) -> int:
        """Poll and run jobs until stop(); with once, run at most one waiting job. Returns jobs run."""
        if install_signals:
            self._install_signals()
        if self.parent_pid is not None:
            threading.Thread(target=self._watch_parent, name="parent-watch", daemon=True).start()
        poll = self.settings.worker_poll_seconds
        logger.info(
            "worker %s started (poll %ss, lease %ss, %d devices)", self.worker_id, poll, self.settings.job_lease_seconds,
            self.devices,
        )
        ran = 0
        while not self._stop.is_set():
            try:
                job_id = self.run_one()
            except Exception:
                if once:
                    raise
                # The database may be restarting or not migrated yet: keep trying, slowly.
                logger.exception("worker %s: cannot take a job from the queue", self.worker_id)
                self._stop.wait(max(poll, 5.0))
                continue
            if job_id is not None:
                ran += 1
            if once:
                break
            if job_id is None:
                self._stop.wait(poll)
        logger.info("worker %s stopped after %d jobs", self.worker_id, ran)
        return ran

    def run_one(self) -> int | None:
        """Claim one job and run it to the end of this attempt; its id, or None if none was waiting."""
        claim = queue.claim(self.engine, self.worker_id, self.settings.job_lease_seconds, self.devices)
        if claim is None:
            self._note_too_big()
            return None
        self._execute(claim)
        return claim.job_id

    def _note_too_big(self) -> None:
        """Say once, in the log of each queued job that needs more devices than this worker
        advertises, that it waits for a bigger worker (rather than wait without a word)."""
        for job_id, devices in queue.too_big(self.engine, self.devices):
            if job_id not in self._noted:
                self._noted.add(job_id)
                queue.note(self.engine, job_id, f"needs {devices} devices; worker {self.worker_id} advertises "
                           f"{self.devices} (CURATE_WORKER_DEVICES): waiting for a worker with more")

    def _execute(self, claim: Claim) -> None:
        ctx = WorkerJobContext(claim, self.settings, self.engine)
        self._current = ctx
        if self._stop.is_set():
            ctx.request_shutdown()
        logger.info(
            "worker %s: job %s (%s), attempt %s of %s",
            self.worker_id, claim.job_id, claim.kind, claim.attempt, claim.max_attempts,
        )
        outcome, result, error, lines = queue.Outcome.succeeded, None, None, []
        # The heartbeat starts before the handler is imported: importing torch can take longer than a lease.
        ctx.start()
        try:
            try:
                kind = job_kind(claim.kind, self.settings)
                handler = kind.handler_function()
            except Exception as exc:
                outcome = queue.Outcome.fatal
                reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else _last_line(exc)
                error = f"cannot load the handler of kind {claim.kind!r}: {reason}"
            else:
                try:
                    # The kind's shared setup (its dataset, its params validated, torch's threads) counts as the handler's.
                    value = handler(ctx, *kind.arguments(ctx))
                    if value is not None and not isinstance(value, dict):
                        raise TypeError(f"a job handler must return a dict, not {type(value).__name__}")
                    result = jsonable(value or {}, "result")
                except JobCancelled:
                    shutdown_only = ctx.shutdown and not ctx.cancel_requested
                    outcome = queue.Outcome.shutdown if shutdown_only else queue.Outcome.cancelled
                except Exception as exc:
                    # An error that says retrying cannot help (`retryable = False` on its class, as
                    # app.training.nan_guard.NonFiniteTraining) fails the job at once.
                    again = queue.Outcome.error if getattr(exc, "retryable", True) else queue.Outcome.fatal
                    outcome = queue.Outcome.shutdown if ctx.shutdown else again
                    error = _last_line(exc)
                    lines.append(queue.log_line(traceback.format_exc().rstrip(), "error"))
                    logger.warning("job %s raised %s", claim.job_id, error, exc_info=True)
        except BaseException:
            # KeyboardInterrupt or SystemExit inside the handler: give the job back, then leave.
            ctx.close()
            self._settle(ctx, queue.Outcome.shutdown, None, None, [])
            raise
        finally:
            ctx.close()
            self._current = None
        self._settle(ctx, outcome, result, error, lines)

    def _settle(self, ctx: WorkerJobContext, outcome: str, result, error, lines) -> None:
        progress, message, pending = ctx.take_pending()
        for delay in (1, 5, 0):
            try:
                status = queue.settle(
                    self.engine, ctx.claim, outcome, result=result, error=error,
                    progress=progress, message=message, logs=pending + lines,
                )
            except Exception:
                if not delay:
                    # The lease runs out and the job is claimed again.
                    logger.exception("job %s: cannot record its end", ctx.job_id)
                    return
                logger.warning("job %s: cannot record its end; retrying", ctx.job_id, exc_info=True)
                time.sleep(delay)
                continue
            if status is None:
                logger.warning("job %s: no longer ours (its lease expired); abandoning it", ctx.job_id)
            else:
                logger.info("job %s: %s", ctx.job_id, status)
            return

    def _watch_parent(self) -> None:
        """Stop, as on SIGTERM, once the parent process has gone (this worker was re-parented)."""
        while not self._stop.wait(PARENT_POLL_SECONDS):
            if os.getppid() != self.parent_pid:
                ctx = self._current
                then = f"asking job {ctx.job_id} to stop; it goes back to the queue" if ctx else "exiting"
                logger.warning("worker %s: its server (pid %s) is gone; %s", self.worker_id, self.parent_pid, then)
                self.stop()
                return

    def _install_signals(self) -> None:
        def on_signal(signum, _frame):
            if self._stop.is_set():
                return
            name = signal.Signals(signum).name
            ctx = self._current
            then = f"asking job {ctx.job_id} to stop; it goes back to the queue" if ctx else "exiting"
            logger.info("worker %s: %s received; %s", self.worker_id, name, then)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
