"""The scale bench's build and train parts: the import and the export through the REST API
against COPY (Postgres) or a plain executemany / SELECT (SQLite), with the server's peak
memory, and train jobs run by the real worker.

On Postgres the floors are bench/import_export.py's arms, each in a process of its own:
COPY of the same CSV into a plain table with the same columns, COPY of the rows the importer
prepares straight into the samples table (rolled back), and COPY of the plain table out.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import import_export
from scale_env import CLASSES, FEATURES, WORK, PeakRSS, tree_rss_mib

TERMINAL = ("succeeded", "failed", "cancelled")
TRAIN_PARAMS = {"scoring": "in_sample", "epochs": 2}


# --------------------------------------------------------------------------- import and export


def create_dataset(http, name: str) -> int:
    r = http.post("/api/v1/datasets", json={"name": name, "task": "tabular", "classes": CLASSES})
    r.raise_for_status()
    return r.json()["id"]


def import_csv(http, ds_id: int, path: Path, server_pid: int) -> tuple[float, float, dict]:
    """POST the CSV to the import route; (seconds, the server's peak RSS in MiB, the answer)."""
    with PeakRSS(server_pid) as mem, open(path, "rb") as fh:
        t = time.perf_counter()
        r = http.post(f"/api/v1/datasets/{ds_id}/imports", files={"file": (path.name, fh, "text/csv")}, timeout=None)
        seconds = time.perf_counter() - t
    if r.status_code != 201:
        raise RuntimeError(f"import failed: {r.status_code} {r.text[:500]}")
    return seconds, mem.peak_mib, r.json()


def export_csv(http, ds_id: int, out: Path, server_pid: int) -> tuple[float, float, int]:
    """Stream GET .../export?format=csv to a file; (seconds, server peak RSS MiB, bytes)."""
    size = 0
    with PeakRSS(server_pid) as mem, open(out, "wb") as fh:
        t = time.perf_counter()
        with http.stream("GET", f"/api/v1/datasets/{ds_id}/export", params={"format": "csv"}, timeout=None) as r:
            if r.status_code != 200:
                raise RuntimeError(f"export failed: {r.status_code} {r.read()[:500]!r}")
            for chunk in r.iter_bytes(1 << 20):
                fh.write(chunk)
                size += len(chunk)
        seconds = time.perf_counter() - t
    return seconds, mem.peak_mib, size


@dataclass
class Floors:
    """The baselines of the import and the export, seconds (None: not measured on this database)."""

    copy_in: float
    copy_samples: float | None
    copy_out: float | None = None
    # COPY of the importer's rows into a table like samples without its indexes (Postgres).
    copy_bare: float | None = None
    # COPY out of a plain table holding the export's own rows and columns (Postgres).
    copy_out_same: float | None = None
    peak_mib: dict[str, float] = field(default_factory=dict)
    how: str = ""


def _plain_table_sql() -> str:
    types = ", ".join(f"{f} double precision" for f in FEATURES)
    return f"CREATE TABLE {import_export.PLAIN_TABLE} (id text, split text, label text, {types})"


def import_floors(db, csv_path: Path) -> Floors:
    """Postgres: COPY the CSV into a plain table, and the importer's rows into samples (rolled back).
    SQLite: executemany of the same rows into a plain table, in one transaction."""
    if db.sqlite:
        return Floors(copy_in=_sqlite_insert(db.url, csv_path), copy_samples=None, how="executemany INSERT")
    import_export.sql(db.url, f"DROP TABLE IF EXISTS {import_export.PLAIN_TABLE}", _plain_table_sql())
    seconds, peak = import_export.run_arm("copy-in", db.url, str(csv_path))
    prepared = str(WORK / "prepared.copy")
    import_export.run_arm("prepare", db.url, str(csv_path), prepared)
    samples_s, samples_peak = import_export.run_arm("copy-samples", db.url, prepared)
    # The same rows into a table with the columns of samples but none of its indexes and
    # constraints: what the table's six indexes cost, apart from its column types.
    import_export.sql(db.url, f"DROP TABLE IF EXISTS {BARE_TABLE}", f"CREATE TABLE {BARE_TABLE} (LIKE samples INCLUDING DEFAULTS)")
    try:
        bare_s, _ = import_export.run_arm("copy-samples", db.url, prepared, BARE_TABLE)
    finally:
        import_export.sql(db.url, f"DROP TABLE IF EXISTS {BARE_TABLE}")
    import_export.sql(db.url, "DELETE FROM datasets WHERE name = 'prepared'")
    for leftover in (prepared, prepared + ".columns"):
        Path(leftover).unlink(missing_ok=True)
    return Floors(seconds, samples_s, peak_mib={"copy-in": peak, "copy-samples": samples_peak}, how="COPY",
                  copy_bare=bare_s)


def export_floor(db, floors: Floors, out: Path, ds_id: int | None = None) -> None:
    """COPY the plain table out (Postgres), or SELECT it into csv.writer (SQLite).

    On Postgres, with ds_id, also COPY out a plain table that holds exactly what the export
    writes (the export's own SELECT, materialised untimed): the same rows and the same
    columns, the run's scores included, which the import's plain table does not have."""
    if db.sqlite:
        floors.copy_out = _sqlite_select(db.url, out)
        return
    floors.copy_out, floors.peak_mib["copy-out"] = import_export.run_arm("copy-out", db.url, str(out))
    if ds_id is None:
        return
    import_export.sql(db.url, f"DROP TABLE IF EXISTS {SAME_ROWS_TABLE}", f"CREATE TABLE {SAME_ROWS_TABLE} AS {export_select(db.url, ds_id)}")
    try:
        floors.copy_out_same, floors.peak_mib["copy-out-same"] = import_export.run_arm(
            "copy-out", db.url, str(out), SAME_ROWS_TABLE)
    finally:
        import_export.sql(db.url, f"DROP TABLE IF EXISTS {SAME_ROWS_TABLE}")


SAME_ROWS_TABLE = "bench_export_rows"
BARE_TABLE = "bench_samples_bare"


def export_select(url: str, ds_id: int) -> str:
    """The SELECT a CSV export of the dataset runs inside COPY, with its parameters bound."""
    from psycopg import ClientCursor

    from app.datasets import exporters
    from app.db import get_engine, session_scope
    from app.models import Dataset

    with session_scope(get_engine(url), readonly=True) as session:
        plan = exporters.plan_export(session, session.get(Dataset, ds_id))
        copy_sql, params = exporters._copy_sql(session.connection(), plan, True)
    select = copy_sql[len("COPY ("):copy_sql.rindex(") TO STDOUT")]
    with import_export._psycopg(url) as conn:
        return ClientCursor(conn).mogrify(select, params)


def _sqlite_insert(url: str, csv_path: Path) -> float:
    path = url.split("///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {import_export.PLAIN_TABLE}")
        conn.execute(_plain_table_sql().replace("double precision", "real"))
    t = time.perf_counter()
    with sqlite3.connect(path) as conn, open(csv_path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        marks = ", ".join("?" * (3 + len(FEATURES)))
        conn.executemany(f"INSERT INTO {import_export.PLAIN_TABLE} VALUES ({marks})", reader)
    return time.perf_counter() - t


def _sqlite_select(url: str, out: Path) -> float:
    t = time.perf_counter()
    with sqlite3.connect(url.split("///", 1)[1]) as conn, open(out, "w", newline="") as fh:
        cur = conn.execute(f"SELECT * FROM {import_export.PLAIN_TABLE}")
        writer = csv.writer(fh)
        writer.writerow([d[0] for d in cur.description])
        while rows := cur.fetchmany(10_000):
            writer.writerows(rows)
    return time.perf_counter() - t


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    job_id: int
    run_id: int | None
    status: str
    wall_s: float
    job_s: float | None
    idle_mib: float
    peak_mib: float
    timings: dict
    error: str | None = None
    # (seconds, rows, by COPY) of predictions_floor: the same rows written the plainest way.
    floor: tuple[float, int, bool] | None = None


def train_once(http, ds_id: int, worker_pid: int, params: dict | None = None, timeout_s: float = 24 * 3600) -> TrainResult:
    """Queue a train job through the API and wait for the worker to finish it."""
    params = TRAIN_PARAMS if params is None else params
    with PeakRSS(worker_pid, every=0.2) as mem:
        t = time.perf_counter()
        r = http.post(f"/api/v1/datasets/{ds_id}/jobs", json={"kind": "train", "params": params})
        if r.status_code != 202:
            raise RuntimeError(f"enqueue failed: {r.status_code} {r.text[:500]}")
        job = r.json()
        while job["status"] not in TERMINAL:
            if time.perf_counter() - t > timeout_s:
                raise RuntimeError(f"train job {job['id']} still {job['status']} after {timeout_s:.0f} s")
            time.sleep(0.5)
            job = http.get(f"/api/v1/jobs/{job['id']}").json()
        wall = time.perf_counter() - t
    timings, run_id = {}, job.get("run_id")
    if run_id is not None:
        timings = http.get(f"/api/v1/runs/{run_id}").json().get("info", {}).get("timings", {})
    return TrainResult(job["id"], run_id, job["status"], wall, (job.get("result") or {}).get("seconds"),
                       mem.start_mib, mem.peak_mib, timings, job.get("error"))


def predictions_floor(url: str, run_id: int) -> tuple[float, int]:
    """(seconds, rows) to put the run's predictions into `predictions` again the plainest way:
    COPY on Postgres, one executemany on SQLite, under a scratch run, in one transaction that
    is rolled back. The same rows, into the same table and its indexes, as the job's write."""
    from app.db import get_engine
    from app.training.records import PREDICTION_COLUMNS

    engine = get_engine(url)
    cols = ", ".join(PREDICTION_COLUMNS)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        if engine.dialect.name == "postgresql":
            with raw.cursor() as cur:
                buf = io.BytesIO()
                with cur.copy(f"COPY (SELECT {cols} FROM predictions WHERE run_id = {int(run_id)}) TO STDOUT") as out:
                    for chunk in out:
                        buf.write(chunk)
                cur.execute("INSERT INTO runs (dataset_id, status, params, label_version, history, info, created_at) "
                            "SELECT dataset_id, 'failed', '{}', 0, '[]', '{}', now() FROM runs WHERE id = %s "
                            "RETURNING id", (run_id,))
                scratch = cur.fetchone()[0]
                # run_id is each line's first field: the scratch run's id in its place.
                prefix, lines = f"{run_id}\t".encode(), buf.getvalue().splitlines()
                assert all(line.startswith(prefix) for line in lines)
                data = b"".join(f"{scratch}\t".encode() + line[len(prefix):] + b"\n" for line in lines)
                rows = len(lines)
                t = time.perf_counter()
                with cur.copy(f"COPY predictions ({cols}) FROM STDIN") as into:
                    into.write(data)
                seconds = time.perf_counter() - t
            raw.rollback()
            return seconds, rows
        cur = raw.execute(f"SELECT {cols} FROM predictions WHERE run_id = ?", (run_id,))
        rows = cur.fetchall()
        raw.execute("BEGIN IMMEDIATE")
        scratch = raw.execute("INSERT INTO runs (dataset_id, status, params, label_version, history, info, created_at) "
                              "SELECT dataset_id, 'failed', '{}', 0, '[]', '{}', datetime('now') FROM runs WHERE id = ? "
                              "RETURNING id", (run_id,)).fetchone()[0]
        t = time.perf_counter()
        raw.executemany(f"INSERT INTO predictions ({cols}) VALUES ({', '.join('?' * len(PREDICTION_COLUMNS))})",
                        [(scratch, *r[1:]) for r in rows])
        seconds = time.perf_counter() - t
        raw.execute("ROLLBACK")
        return seconds, len(rows)


def worker_idle_mib(worker_pid: int, settle_s: float = 3.0) -> float:
    """The worker's memory once it is up and waiting for a job: the baseline of its peak."""
    time.sleep(settle_s)
    return tree_rss_mib(worker_pid)
