"""Import and export speed against Postgres COPY, and export memory at two sizes.

    .venv/bin/python bench/import_export.py --rows 1000000 [--postgres-url URL] [--repeat 3]

Generates a tabular CSV (id, split, label and 20 numeric features f0..f19, 10 classes),
imports it into a fresh, migrated Postgres database through Curate's import service (the
code the REST route runs), exports it again to CSV through the export service, and times
the floor beside it: COPY of the same file into a plain table with the same columns, and
COPY of that table out again. A further arm COPYs the rows the importer prepared straight
into the samples table, to show what the table itself costs (JSONB features, foreign key,
three indexes). Every arm runs in a process of its own; its peak memory is that child's
peak resident set size (VmHWM). Arms alternate within each repetition, so a busy
machine slows both sides alike; the table reports the median of the repetitions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FEATURES = [f"f{k}" for k in range(20)]
PLAIN_TABLE = "bench_plain"
RESULTS = ROOT / "bench" / "results" / "import_export.md"


# --------------------------------------------------------------------------- arms (child processes)


def generate(path: str, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    splits = np.array(["train", "valid", "test"])[rng.choice(3, rows, p=[0.8, 0.1, 0.1])]
    classes = np.array([f"class{k}" for k in range(10)])[rng.integers(0, 10, rows)]
    columns = {"id": pa.array([f"row{i}" for i in range(rows)]), "split": splits, "label": classes}
    columns |= {f: rng.normal(size=rows) for f in FEATURES}
    pacsv.write_csv(pa.table(columns), path, pacsv.WriteOptions(quoting_style="none"))


def arm_import(url: str, path: str, dataset: str) -> None:
    from app.config import Settings
    from app.datasets import importers
    from app.db import get_engine, session_scope
    from app.models import Dataset

    settings = Settings(database_url=url, data_dir=Path(path).parent / "data", _env_file=None)
    with session_scope(get_engine(settings.resolved_database_url)) as session:
        ds = Dataset(name=dataset, task="tabular", classes=[], settings={}, label_version=0)
        session.add(ds)
        session.commit()
        with open(path, "rb") as fh:
            importers.import_file(session, ds, fh, Path(path).name, settings=settings)


def arm_export(url: str, path: str, dataset: str) -> None:
    from sqlalchemy import select

    from app.config import Settings
    from app.datasets import exporters
    from app.db import get_engine, session_scope
    from app.models import Dataset

    engine = get_engine(Settings(database_url=url, _env_file=None).resolved_database_url)
    with session_scope(engine, readonly=True) as session:
        ds = session.scalar(select(Dataset).where(Dataset.name == dataset))
        plan = exporters.plan_export(session, ds)
    with open(path, "wb") as out:
        exporters.write_export(engine, plan, "csv", out)


def _psycopg(url: str):
    import psycopg
    from sqlalchemy.engine import make_url

    return psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))


def arm_copy_in(url: str, path: str) -> None:
    with _psycopg(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {PLAIN_TABLE} FROM STDIN (FORMAT csv, HEADER true)") as copy, open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                copy.write(block)


def arm_copy_out(url: str, path: str, table: str = PLAIN_TABLE) -> None:
    with _psycopg(url) as conn, conn.cursor() as cur, open(path, "wb") as out:
        with cur.copy(f"COPY {table} TO STDOUT (FORMAT csv, HEADER true)") as copy:
            for block in copy:
                out.write(block)


def arm_prepare(url: str, path: str, target: str) -> None:
    """Write the COPY text the importer would send for this CSV (untimed); its dataset is kept."""
    from app.config import Settings
    from app.datasets import importers
    from app.datasets.importers import writing
    from app.db import get_engine, session_scope
    from app.models import Dataset

    def to_file(session, table, columns, batches, plain=()):
        n = 0
        with open(target, "wb") as fh:
            for batch in batches:
                fh.write(importers.copy_text(batch.select(list(columns)), plain))
                n += batch.num_rows
        return n

    writing.bulk_insert = to_file
    Path(target + ".columns").write_text(", ".join(importers.SAMPLE_COLUMNS))
    settings = Settings(database_url=url, data_dir=Path(path).parent / "data", _env_file=None)
    with session_scope(get_engine(settings.resolved_database_url)) as session:
        ds = Dataset(name="prepared", task="tabular", classes=[], settings={}, label_version=0)
        session.add(ds)
        session.commit()  # the rows below name this dataset
        with open(path, "rb") as fh:
            importers.import_file(session, ds, fh, Path(path).name, settings=settings)
        session.rollback()


def arm_copy_samples(url: str, path: str, table: str = "samples") -> None:
    """COPY the importer's prepared rows into samples (or a table like it), then roll back."""
    columns = Path(path + ".columns").read_text()
    with _psycopg(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy, open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                copy.write(block)
        conn.rollback()


ARMS = {
    "import": lambda a: arm_import(a.url, a.path, a.dataset),
    "export": lambda a: arm_export(a.url, a.path, a.dataset),
    "copy-in": lambda a: arm_copy_in(a.url, a.path),
    "copy-out": lambda a: arm_copy_out(a.url, a.path, a.dataset or PLAIN_TABLE),
    "copy-samples": lambda a: arm_copy_samples(a.url, a.path, a.dataset or "samples"),
    "prepare": lambda a: arm_prepare(a.url, a.path, a.dataset),
}


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM). Unlike ru_maxrss it starts afresh at exec,
    so it does not count the parent's memory that the child briefly shared before exec."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_main(args) -> None:
    t = time.perf_counter()
    ARMS[args.arm](args)
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": peak_rss_mib()}))


# --------------------------------------------------------------------------- driver


def run_arm(arm: str, url: str, path: str, dataset: str = "") -> tuple[float, float]:
    """Run one arm in a process of its own; (seconds, peak RSS in MiB) of that process."""
    cmd = [sys.executable, __file__, "--arm", arm, "--url", url, "--path", path, "--dataset", dataset]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, cwd=ROOT, check=False)
    if proc.returncode:
        raise SystemExit(f"arm {arm} failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.splitlines()[-1])
    return result["seconds"], result["peak_mib"]


def sql(url: str, *statements: str, autocommit: bool = True) -> None:
    with _psycopg(url) as conn:
        conn.autocommit = autocommit
        for s in statements:
            conn.execute(s)


def checkpoint(url: str) -> None:
    """Start each timed arm without the previous arm's dirty pages still being written."""
    try:
        sql(url, "CHECKPOINT")
    except Exception:  # needs superuser or pg_checkpoint; the bench runs without it too
        pass


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) // 1024 // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": mem, "load": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--small-rows", type=int, default=200_000, help="second size for the export memory check")
    p.add_argument("--postgres-url", default=os.environ.get("CURATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the database and the files")
    p.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--dataset", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.arm:
        return child_main(args)

    from rich.console import Console
    from rich.table import Table

    from app.db import create_postgres_database, drop_postgres_database
    from app.migrate import upgrade

    console = Console()
    started = dt.datetime.now(dt.UTC)
    box = machine()
    work = Path(tempfile.mkdtemp(prefix="curate-bench-"))
    big, small = str(work / "rows.csv"), str(work / "rows-small.csv")
    console.print(f"generating {args.rows} rows in {work}")
    generate(big, args.rows)
    with open(big, "rb") as src, open(small, "wb") as dst:
        for _ in range(args.small_rows + 1):
            dst.write(src.readline())

    name = f"curate_bench_{uuid.uuid4().hex[:8]}"
    url = create_postgres_database(args.postgres_url, name)
    try:
        upgrade(url)
        types = ", ".join(f"{f} double precision" for f in FEATURES)
        sql(url, f"CREATE TABLE {PLAIN_TABLE} (id text, split text, label text, {types})")
        with _psycopg(url) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]

        times: dict[str, list[float]] = {k: [] for k in ("import", "copy-in", "export", "copy-out", "copy-samples")}
        rss: dict[str, list[float]] = {k: [] for k in times}
        loads: list[float] = []
        prepared = str(work / "prepared.copy")
        run_arm("prepare", url, big, prepared)
        for rep in range(args.repeat):
            console.print(f"repetition {rep + 1} of {args.repeat}")
            sql(url, "TRUNCATE samples CASCADE", f"TRUNCATE {PLAIN_TABLE}")
            dataset = f"bench-{rep}"
            for arm, path in (("import", big), ("copy-in", big), ("export", str(work / "export.csv")),
                              ("copy-out", str(work / "copy-out.csv")), ("copy-samples", prepared)):
                checkpoint(url)
                loads.append(os.getloadavg()[0])
                seconds, peak = run_arm(arm, url, path, dataset)
                times[arm].append(seconds)
                rss[arm].append(peak)
                console.print(f"  {arm:<12} {seconds:7.2f} s  {peak:7.0f} MiB")

        # Export memory at two sizes: the small dataset next to the last big one.
        run_arm("import", url, small, "bench-small")
        small_export = [run_arm("export", url, str(work / "export-small.csv"), "bench-small") for _ in range(2)]
        big_export_rss = max(rss["export"])
        small_export_rss = max(m for _, m in small_export)
        exported_rows = sum(1 for _ in open(work / "export.csv", "rb")) - 1
    finally:
        if not args.keep:
            drop_postgres_database(args.postgres_url, name)

    med = {k: statistics.median(v) for k, v in times.items()}
    peak = {k: max(v) for k, v in rss.items()}

    def paired(a: str, b: str) -> float:
        """Median over repetitions of a / b: each pair ran back to back, under the same load."""
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    ratio_in, ratio_out = paired("import", "copy-in"), paired("export", "copy-out")
    rows = [
        ("import (Curate, CSV -> samples)", med["import"], peak["import"], f"{ratio_in:.2f}x COPY in", "<= 3x", ratio_in <= 3),
        ("COPY in (plain table, same file)", med["copy-in"], peak["copy-in"], "1.00x", "", None),
        ("COPY into samples (importer's prepared rows)", med["copy-samples"], peak["copy-samples"],
         f"{paired('copy-samples', 'copy-in'):.2f}x COPY in; import is {paired('import', 'copy-samples'):.2f}x this", "", None),
        ("export (Curate, samples -> CSV)", med["export"], peak["export"], f"{ratio_out:.2f}x COPY out", "<= 2x", ratio_out <= 2),
        ("COPY out (plain table)", med["copy-out"], peak["copy-out"], "1.00x", "", None),
    ]
    flat = big_export_rss / small_export_rss
    table = Table(title=f"Curate import/export, {args.rows:,} rows x {len(FEATURES)} features, Postgres {pg_version}")
    for col in ("arm", "median s", "peak RSS MiB", "ratio", "target", "met"):
        table.add_column(col)
    for arm, s, m, ratio, target, ok in rows:
        table.add_row(arm, f"{s:.2f}", f"{m:.0f}", ratio, target, "" if ok is None else ("yes" if ok else "no"))
    table.add_row(f"export peak RSS at {args.small_rows:,} rows", "", f"{small_export_rss:.0f}", f"{flat:.2f}x",
                  "flat", "yes" if flat <= 1.25 else "no")
    console.print(table)

    each = "\n".join(f"| {k} | " + " | ".join(f"{s:.2f}" for s in v) + " |" for k, v in times.items())
    md = [
        "# Import and export against Postgres COPY",
        "",
        f"`.venv/bin/python bench/import_export.py --rows {args.rows} --repeat {args.repeat}`, "
        f"run {started:%Y-%m-%d %H:%M} UTC.",
        "",
        f"Machine: {box['nproc']} CPUs ({box['cpu']}), {box['memory_gib']} GiB memory, Postgres {pg_version} on the "
        f"same machine, Python {platform.python_version()}. The 1-minute load average ran from {min(loads):.1f} to "
        f"{max(loads):.1f} while the arms ran: other work shared the {box['nproc']} CPUs, so the times carry noise; "
        "both arms of each ratio ran back to back under the same load.",
        "",
        f"Data: {args.rows:,} rows, id + split + label (10 classes) + {len(FEATURES)} float features, "
        f"{os.path.getsize(big) / 2**20:.0f} MiB of CSV; the export wrote {exported_rows:,} rows.",
        "",
        "Ratios are the median over repetitions of each pair's ratio (the two arms ran back to back).",
        "",
        "| arm | median s | peak RSS MiB | ratio | target | met |",
        "| --- | ---: | ---: | --- | --- | --- |",
        *(f"| {a} | {s:.2f} | {m:.0f} | {r} | {t} | {'' if ok is None else ('yes' if ok else 'no')} |" for a, s, m, r, t, ok in rows),
        f"| export peak RSS at {args.small_rows:,} rows | | {small_export_rss:.0f} | {flat:.2f}x the {args.rows:,}-row export's "
        f"{big_export_rss:.0f} MiB | flat | {'yes' if flat <= 1.25 else 'no'} |",
        "",
        "Every repetition, in seconds:",
        "",
        "| arm | " + " | ".join(f"run {i + 1}" for i in range(args.repeat)) + " |",
        "| --- |" + " ---: |" * args.repeat,
        each,
        "",
        "The samples table costs more per row than the plain one: the features are stored as JSONB (parsed by the server), and every row gets a foreign-key check and three index entries. The \"COPY into samples\" arm sends the importer's own prepared rows straight to that table, so it is the floor for this schema; the import's time on top of it is reading, checking and encoding the file.",
        "",
        "Peak RSS is each arm's own process (VmHWM), Python and its libraries included; the COPY arms "
        "stream through psycopg and hold next to nothing. The server's memory is not counted on either side.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(md))
    console.print(f"wrote {args.out}")
    if not args.keep:
        for f in work.rglob("*"):
            if f.is_file():
                f.unlink()


if __name__ == "__main__":
    main()
