"""A handler module that is slow to import, as torch is: importing it takes until the worker's
heartbeat has renewed the lease of the job that asked for it, so a worker that only starts
its heartbeat after the import never gets past it."""

from __future__ import annotations

import os
import time

from sqlalchemy import select

from app.db import get_engine, session_scope
from app.models import Job

KIND = "t_slow_import"


def _wait_for_a_renewed_lease(timeout: float = 60) -> None:
    engine = get_engine(os.environ["CURATE_TEST_SLOW_IMPORT_DB"])
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(engine, readonly=True) as session:
            lease = session.scalar(select(Job.lease_expires_at).where(Job.kind == KIND, Job.status == "running"))
        if first is None:
            first = lease
        elif lease is not None and lease > first:
            return
        time.sleep(0.05)
    raise RuntimeError("the lease was not renewed while the handler module was being imported")


_wait_for_a_renewed_lease()


def run(ctx) -> dict:
    return {"imported": True}
