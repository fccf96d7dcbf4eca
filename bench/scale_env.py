"""The scale bench's plumbing: the synthetic tabular dataset, a fresh database, the server
and worker processes (with the memory of their process trees), and timing helpers.

The dataset: N train samples plus N/20 valid and N/20 test, 10 classes from 30% down to
0.5% of the rows, 8 float features around a per-class centre (so a model can learn them),
and 10% of the train labels flipped to another class at random (real label errors).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import wait_for_health

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "scale"
CLASSES = [f"class{k}" for k in range(10)]
FREQUENCIES = [0.30, 0.20, 0.15, 0.11, 0.08, 0.06, 0.04, 0.03, 0.025, 0.005]
FEATURES = [f"f{k}" for k in range(8)]
FLIP = 0.10
ADMIN = "scale-admin"
PASSWORD = "scale-bench-password"


# --------------------------------------------------------------------------- the data


def generate_csv(path: Path, n_train: int, seed: int = 0) -> dict:
    """Write the dataset as CSV (id, split, label, f0..f7); returns its row counts and size."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    n_side = max(1, n_train // 20)
    split = np.array(["train"] * n_train + ["valid"] * n_side + ["test"] * n_side)
    n = len(split)
    truth = rng.choice(len(CLASSES), n, p=FREQUENCIES)
    centres = rng.normal(0.0, 1.5, (len(CLASSES), len(FEATURES)))
    x = np.round(centres[truth] + rng.normal(0.0, 1.0, (n, len(FEATURES))), 6)
    given = truth.copy()
    flip = (rng.random(n) < FLIP) & (split == "train")
    given[flip] = (truth[flip] + rng.integers(1, len(CLASSES), flip.sum())) % len(CLASSES)
    columns = {"id": pa.array([f"row{i}" for i in range(n)]), "split": split, "label": np.array(CLASSES)[given]}
    columns |= {f: x[:, k] for k, f in enumerate(FEATURES)}
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(pa.table(columns), path, pacsv.WriteOptions(quoting_style="none"))
    return {"rows": n, "train": n_train, "flipped": int(flip.sum()), "mib": path.stat().st_size / 2**20}


# --------------------------------------------------------------------------- the database


@dataclass
class Database:
    """Where the bench's data lives: a Postgres database next to admin_url, or a SQLite file."""

    url: str  # the app's URL (psycopg driver on Postgres)
    sqlite: bool
    admin_url: str = ""
    name: str = ""

    def drop(self) -> None:
        from app.db import dispose_engines, drop_postgres_database

        dispose_engines()
        if self.sqlite:
            for suffix in ("", "-wal", "-shm"):
                Path(self.url.split("///", 1)[1] + suffix).unlink(missing_ok=True)
        else:
            drop_postgres_database(self.admin_url, self.name)


def fresh_database(postgres_url: str, name: str, sqlite: bool) -> Database:
    """An empty database, migrated to head (an existing one of that name is dropped first)."""
    from app.db import create_postgres_database, dispose_engines
    from app.migrate import upgrade

    dispose_engines()
    if sqlite:
        path = WORK / f"{name}.db"
        db = Database(f"sqlite:///{path}", True)
        db.drop()
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        db = Database(create_postgres_database(postgres_url, name), False, postgres_url, name)
    upgrade(db.url)
    return db


def existing_database(postgres_url: str, name: str, sqlite: bool) -> Database:
    """The database a --keep run left behind, as it is."""
    from sqlalchemy.engine import make_url

    if sqlite:
        return Database(f"sqlite:///{WORK / f'{name}.db'}", True)
    url = make_url(postgres_url).set(drivername="postgresql+psycopg", database=name)
    return Database(url.render_as_string(hide_password=False), False, postgres_url, name)


def create_admin(url: str) -> str:
    """The admin account (password PASSWORD) and an API token of it; returns the token."""
    from sqlalchemy import select

    from app.auth.service import create_token, create_user
    from app.db import get_engine, session_scope
    from app.models import User

    with session_scope(get_engine(url)) as session:
        user = session.scalar(select(User).where(User.username == ADMIN))
        if user is None:
            user, _ = create_user(session, ADMIN, "admin", PASSWORD)
        return create_token(session, user, "scale bench")[1]


def create_annotators(url: str, n: int) -> list[str]:
    """n annotator accounts (made once, kept across phases) with a fresh API token each."""
    from sqlalchemy import select

    from app.auth.service import create_token, create_user
    from app.db import get_engine, session_scope
    from app.models import User

    tokens = []
    with session_scope(get_engine(url)) as session:
        for a in range(n):
            name = f"scale-annotator{a:02d}"
            user = session.scalar(select(User).where(User.username == name))
            if user is None:
                user, _ = create_user(session, name, "annotator", PASSWORD)
            tokens.append(create_token(session, user, "scale bench")[1])
    return tokens


# --------------------------------------------------------------------------- processes


SECRET = secrets.token_urlsafe(48)  # the server's and the worker's, for this run


def app_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "CURATE_DATABASE_URL": url,
        "CURATE_DATA_DIR": str(WORK / "data"),
        "CURATE_SECRET_KEY": SECRET,
        "PYTHONPATH": str(ROOT),
    }


def start_server(url: str, port: int, workers: int) -> subprocess.Popen:
    """uvicorn serving app.main:serving_app (no access log); returns once every worker answers."""
    cmd = [sys.executable, "-m", "uvicorn", "app.main:serving_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    proc = _spawn(cmd, url, "server.log")
    wait_for_health(proc, port, WORK / "server.log", 90, workers)
    return proc


def start_worker(url: str) -> subprocess.Popen:
    """`curate worker` (python -m app.cli worker) on the same database."""
    return _spawn([sys.executable, "-m", "app.cli", "worker", "--id", "scale-bench"], url, "worker.log")


def _spawn(cmd: list[str], url: str, log_name: str) -> subprocess.Popen:
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / log_name, "ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=app_env(url), stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- memory


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/<pid>/stat."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_rss_mib(pid: int) -> float:
    """VmRSS of a process and all its descendants, in MiB."""
    tree, todo, total = _children(), [pid], 0
    while todo:
        p = todo.pop()
        todo += tree.get(p, [])
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total / 1024


class PeakRSS:
    """Samples a process tree's resident memory every `every` seconds while the block runs."""

    def __init__(self, pid: int, every: float = 0.1):
        self.pid, self.every = pid, every
        self.start_mib = self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRSS:
        self.start_mib = self.peak_mib = tree_rss_mib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak_mib = max(self.peak_mib, tree_rss_mib(self.pid))


# --------------------------------------------------------------------------- timing


def pct(seconds: list[float], q: float) -> float:
    """The q-th percentile of durations, in milliseconds (nan when there are none)."""
    return float(np.percentile(np.array(seconds) * 1000.0, q)) if seconds else float("nan")


def repeat(call, reps: int, budget_s: float) -> list[float]:
    """Durations of up to `reps` calls of call(); stops early (after at least 3) once the
    calls have taken budget_s in all, so a query that takes seconds cannot stall the bench."""
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
        if len(times) >= 3 and time.perf_counter() - started > budget_s:
            break
    return times


def get_ok(client, url: str, **kwargs):
    """GET that raises with the body on an error status (a bench must not time error pages)."""
    r = client.get(url, **kwargs)
    if r.status_code >= 400:
        raise RuntimeError(f"GET {url} {kwargs.get('params', '')}: {r.status_code} {r.text[:300]}")
    return r
