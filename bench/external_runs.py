"""An external run (bring your own predictions) against importing the same number of samples.

    .venv/bin/python bench/external_runs.py [--rows 200000] [--postgres-url URL] [--sqlite] [--repeat 2]

Generates a tabular dataset (id, split 80/10/10, label of 10 classes, 20 numeric features)
and a predictions file for it (external_id and one probability column per class), imports
the dataset through Curate's import service, then times, each in a process of its own with
its peak resident memory (VmHWM), and alternating within each repetition:
  import    the dataset's CSV into an empty dataset of the same classes (the baseline: what a
            user already waits for once per dataset);
  external  `app.runs.external.create_external_run` on the predictions CSV (the code the
            REST route `POST /datasets/{id}/runs` runs): read and check the file, match the
            ids, score, flag, prioritise, write every prediction, finish the run.
Prints the table and writes bench/results/external_runs.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import commit, machine, markdown_table, write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "external_runs.md"
CLASSES = [f"class{k}" for k in range(10)]
FEATURES = [f"f{k}" for k in range(20)]


def generate(work: Path, rows: int) -> tuple[str, str]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    ids = pa.array([f"row{i}" for i in range(rows)])
    y = rng.integers(0, len(CLASSES), rows)
    data = {"id": ids, "split": np.array(["train", "valid", "test"])[rng.choice(3, rows, p=[0.8, 0.1, 0.1])],
            "label": np.array(CLASSES)[y], **{f: rng.normal(size=rows) for f in FEATURES}}
    dataset = str(work / "dataset.csv")
    pacsv.write_csv(pa.table(data), dataset, pacsv.WriteOptions(quoting_style="none"))
    logits = rng.normal(size=(rows, len(CLASSES)))
    logits[np.arange(rows), y] += 3.0
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    preds = str(work / "predictions.csv")
    pacsv.write_csv(pa.table({"external_id": ids, **{c: P[:, j] for j, c in enumerate(CLASSES)}}), preds,
                    pacsv.WriteOptions(quoting_style="none"))
    return dataset, preds


def _settings(url: str, work: Path):
    from app.config import Settings

    return Settings(database_url=url, data_dir=work / "data", _env_file=None, keep_runs=100)


def arm_import(url: str, work: Path, path: str, name: str) -> None:
    from app.datasets import importers
    from app.db import get_engine, session_scope
    from app.models import Dataset

    settings = _settings(url, work)
    with session_scope(get_engine(settings.resolved_database_url)) as session:
        ds = Dataset(name=name, task="tabular", classes=list(CLASSES), settings={}, label_version=0)
        session.add(ds)
        session.commit()
        with open(path, "rb") as fh:
            importers.import_file(session, ds, fh, Path(path).name, settings=settings)


def arm_external(url: str, work: Path, path: str, name: str) -> None:
    from sqlalchemy import select

    from app.db import get_engine, session_scope
    from app.models import Dataset
    from app.runs.external import create_external_run

    settings = _settings(url, work)
    with session_scope(get_engine(settings.resolved_database_url)) as session:
        ds = session.scalar(select(Dataset).where(Dataset.name == name))
        with open(path, "rb") as fh:
            run = create_external_run(session, ds, fh, Path(path).name, "bench", True, "none", settings)
        assert run.status == "succeeded", run.status


ARMS = {"import": arm_import, "external": arm_external}


def peak_rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_arm(arm: str, url: str, work: Path, path: str, name: str) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--arm", arm, "--url", url, "--work", str(work), "--path", path, "--name", name]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, cwd=ROOT, check=False)
    if proc.returncode:
        raise SystemExit(f"arm {arm} failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.splitlines()[-1])
    return result["seconds"], result["peak_mib"]


def measure(label: str, url: str, work: Path, dataset: str, preds: str, repeat: int) -> list[list[str]]:
    times: dict[str, list[float]] = {"import": [], "external": []}
    peaks: dict[str, list[float]] = {"import": [], "external": []}
    base = f"bench-{uuid.uuid4().hex[:6]}"
    seconds, peak = run_arm("import", url, work, dataset, base)
    print(f"  {label}: the dataset imported in {seconds:.1f} s")
    for rep in range(repeat):
        for arm, path, name in (("external", preds, base), ("import", dataset, f"{base}-{rep}")):
            seconds, peak = run_arm(arm, url, work, path, name)
            times[arm].append(seconds)
            peaks[arm].append(peak)
            print(f"  {label} {arm:<9} {seconds:7.2f} s {peak:7.0f} MiB")
    med = {k: statistics.median(v) for k, v in times.items()}
    return [[label, f"{med['import']:.1f}", f"{med['external']:.1f}", f"{med['external'] / med['import']:.2f}",
             f"{max(peaks['import']):.0f}", f"{max(peaks['external']):.0f}"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--postgres-url", default=os.environ.get("CURATE_TEST_POSTGRES_URL",
                                                            "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--sqlite", action="store_true", help="also measure on SQLite")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.arm:
        t = time.perf_counter()
        ARMS[args.arm](args.url, Path(args.work), args.path, args.name)
        print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": peak_rss_mib()}))
        return

    from app.db import create_postgres_database, drop_postgres_database
    from app.migrate import upgrade

    started = time.monotonic()
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="curate-external-"))
    print(f"generating {args.rows} rows in {work}")
    dataset, preds = generate(work, args.rows)
    rows: list[list[str]] = []
    if not args.no_postgres:
        name = f"curate_bench_{uuid.uuid4().hex[:8]}"
        url = create_postgres_database(args.postgres_url, name)
        try:
            upgrade(url)
            rows += measure("Postgres", url, work, dataset, preds, args.repeat)
        finally:
            drop_postgres_database(args.postgres_url, name)
    if args.sqlite:
        url = f"sqlite:///{work / 'bench.db'}"
        upgrade(url)
        rows += measure("SQLite", url, work, dataset, preds, args.repeat)
    table = markdown_table(["database", "import (s)", "external run (s)", "external / import", "import peak MiB",
                            "external peak MiB"], rows)
    text = (
        "# External runs against imports\n\n"
        f"`.venv/bin/python bench/external_runs.py {' '.join(sys.argv[1:])}` at commit {commit()}; {machine()}; "
        f"load average {load:.1f} at start; {(time.monotonic() - started) / 60:.1f} min in all.\n\n"
        f"{args.rows:,} samples (10 classes, 20 features, split 80/10/10). `import` imports the dataset's CSV into an "
        "empty dataset (the baseline); `external run` is `create_external_run` on a CSV of probabilities for every "
        "sample (the code of `POST /datasets/{id}/runs`): read and check, match the ids, score, flag, prioritise, "
        "write every prediction. Each arm runs in a process of its own (peak RSS = VmHWM); medians of "
        f"{args.repeat} repetitions, the arms alternating.\n\n{table}\n"
    )
    write_report(text, args.out)


if __name__ == "__main__":
    main()
