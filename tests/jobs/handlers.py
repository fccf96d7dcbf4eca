"""Job handlers for the queue and worker tests only, registered through CURATE_EXTRA_JOB_HANDLERS."""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.db import session_scope
from app.jobs.context import JobContext
from app.models import Run

KINDS = {
    "t_echo": "echo",
    "t_loop": "loop_until_cancelled",
    "t_flaky": "flaky",
    "t_fail": "always_fail",
    "t_hopeless": "hopeless",
    "t_chatty": "chatty",
    "t_record": "record",
    "t_barrier": "barrier",
    "t_slow": "slow",
    "t_run": "make_run",
}
EXTRA_JOB_HANDLERS = ",".join(
    [f"{kind}=tests.jobs.handlers:{func}" for kind, func in KINDS.items()] + ["t_slow_import=tests.jobs.slow_import:run"]
)


def _append(path: str, line: str) -> None:
    # One write on an O_APPEND file: lines from several processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _lines(path: str) -> list[str]:
    p = Path(path)
    return p.read_text().splitlines() if p.exists() else []


def echo(ctx: JobContext) -> dict:
    ctx.progress(0.5, "halfway")
    ctx.log("echoing the params")
    return {"echo": ctx.params, "dataset_id": ctx.dataset_id}


def loop_until_cancelled(ctx: JobContext) -> dict:
    """Works in small batches until cancelled (or a generous deadline passes)."""
    deadline = time.monotonic() + ctx.params.get("max_seconds", 120)
    step = 0
    while time.monotonic() < deadline:
        step += 1
        ctx.progress(min(step / 1000, 0.99), f"batch {step}")
        ctx.check_cancelled()
        time.sleep(0.02)
    raise RuntimeError("never cancelled")


def flaky(ctx: JobContext) -> dict:
    """Fails the first params['failures'] calls (counted in params['path']), then succeeds."""
    _append(ctx.params["path"], "call")
    calls = len(_lines(ctx.params["path"]))
    if calls <= ctx.params["failures"]:
        raise ValueError(f"flaky failure {calls}")
    return {"calls": calls}


def always_fail(ctx: JobContext) -> dict:
    ctx.log("about to fail")
    raise ValueError("boom")


class Hopeless(RuntimeError):
    retryable = False


def hopeless(ctx: JobContext) -> dict:
    raise Hopeless("the same input fails the same way")


def chatty(ctx: JobContext) -> dict:
    """Reports progress and logs every 'batch', far faster than the database should be written."""
    n = ctx.params["n"]
    for i in range(n):
        ctx.progress(i / n, f"batch {i}")
        ctx.log(f"line {i}")
        ctx.is_cancelled()
        time.sleep(ctx.params.get("sleep", 0))
    ctx.progress(0.75, "last batch done")
    return {"batches": n}


def record(ctx: JobContext) -> dict:
    """Appends 'job_id worker_id' to params['path']: a job that ran twice shows up twice."""
    time.sleep(ctx.params.get("sleep", 0))
    _append(ctx.params["path"], f"{ctx.job_id} {getattr(ctx, 'worker_id', '?')}")
    return {"ok": True}


def barrier(ctx: JobContext) -> dict:
    """Waits until params['n'] barrier jobs run at the same time: proof of that many workers."""
    _append(ctx.params["path"], str(ctx.job_id))
    deadline = time.monotonic() + ctx.params.get("timeout", 90)
    while len(_lines(ctx.params["path"])) < ctx.params["n"]:
        if time.monotonic() > deadline:
            raise TimeoutError("the other workers never took their barrier job")
        ctx.check_cancelled()
        time.sleep(0.05)
    return {"ok": True}


def slow(ctx: JobContext) -> dict:
    """A long job in params['steps'] batches of params['step_seconds'] each."""
    steps = ctx.params.get("steps", 40)
    for i in range(steps):
        ctx.check_cancelled()
        time.sleep(ctx.params.get("step_seconds", 0.1))
        ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
    return {"steps": steps, "worker": getattr(ctx, "worker_id", "?")}


def make_run(ctx: JobContext) -> dict:
    """Creates a run for the job's dataset and ties it to the job."""
    with session_scope(ctx.engine) as session:
        run = Run(dataset_id=ctx.dataset_id, job_id=ctx.job_id, params={}, label_version=0, status="succeeded")
        session.add(run)
        session.flush()
        run_id = run.id
    ctx.set_run(run_id)
    return {"run_id": run_id}

