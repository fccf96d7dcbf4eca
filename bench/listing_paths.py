"""Listings by id and at random with a filter on the run's predictions, along the run's
predictions (index ranges merged, app.labels.ranges: what Curate does) against along the
samples with each one's prediction checked (what it did before migration 0018, and still does
for filters on the samples alone), side by side in one run on one database.

Runs in one process on a database that `bench/scale.py --keep` left (Postgres), with one
connection per way, taking turns on each run so that the machine's noise falls on both.
Writes bench/results/listing_paths.md (--out to write elsewhere).

    .venv/bin/python bench/listing_paths.py --database curate_scale
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import commit, machine, markdown_table, write_report  # noqa: E402
from generic_plans import _list  # noqa: E402

FILTERS = [  # (what, query parameters)
    ("flagged", {"flagged": "true"}),
    ("predicted class (common)", {"predicted": "class0"}),
    ("predicted class (rare)", {"predicted": "class9"}),
    ("confusion cell", {"label": "class5", "predicted": "class0"}),
    ("queue head: predicted, not reviewed", {"predicted": "class0", "reviewed": "false", "split": "train", "limit": 5}),
]
RUNS = 20


def listings() -> list[tuple[str, dict]]:
    out = []
    for order in ("id", "random"):
        for reverse in (False, True):
            for what, params in FILTERS:
                out.append((f"{order}{' reverse' if reverse else ''} · {what}",
                            {"order": order, **({"reverse": "true"} if reverse else {}), **params}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="curate_scale")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "listing_paths.md"))
    args = parser.parse_args()

    from sqlalchemy import func, select

    from app.db import get_engine, session_factory
    from app.labels import queries
    from app.models import Dataset, Prediction, Sample

    engine = get_engine(f"{args.postgres_url}/{args.database}")
    along = queries.by_predictions
    ways = {"predictions": along, "samples": lambda q: False}
    sessions = {way: session_factory(engine)() for way in ways}
    first = sessions["predictions"]
    ds_id = first.scalar(select(Dataset.id).order_by(Dataset.id.desc()).limit(1))
    n_samples = first.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == ds_id))
    n_predictions = first.scalar(select(func.count()).select_from(Prediction))
    times: dict[tuple[str, str], list[float]] = {}
    started = time.monotonic()
    try:
        for what, params in listings():
            for run in range(args.runs + 1):  # run 0 builds and plans the shape: not counted
                for way in sorted(ways, reverse=run % 2 == 1):
                    queries.by_predictions = ways[way]
                    try:
                        t = _list(sessions[way], queries, ds_id, params)
                    finally:
                        queries.by_predictions = along
                    if run:
                        times.setdefault((what, way), []).append(t)
    finally:
        for s in sessions.values():
            s.close()

    rows = []
    for what, params in listings():
        query = "&".join(f"{k}={v}" for k, v in params.items())
        new, old = times[(what, "predictions")], times[(what, "samples")]
        p50n, p50o = statistics.median(new), statistics.median(old)
        rows.append([what, f"`{query}`", f"{p50n:.1f}", f"{max(new):.1f}", f"{p50o:.1f}", f"{max(old):.1f}",
                     f"{p50o / p50n:.1f}x"])
    header = ["listing", "query", "along predictions p50 ms", "max ms", "along samples p50 ms", "max ms",
              "p50 samples / predictions"]
    text = "\n".join([
        "# Listings by id and at random with a predictions filter: along the predictions or along the samples",
        "",
        f"`.venv/bin/python bench/listing_paths.py --database {args.database}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit()}, "
        f"{time.monotonic() - started:.0f} s.",
        "",
        f"Machine: {machine()}. Database: {args.database}, dataset {ds_id} ({n_samples:,} samples; "
        f"{n_predictions:,} predictions in all). First page of each listing (limit 50 unless given), "
        f"{args.runs} runs per listing and way after one uncounted run that builds and plans it, in one process, "
        "the two connections taking turns. Times are app.labels.queries.list_samples (statement, execution, "
        "rows to objects), without HTTP.",
        "",
        "- along predictions: the run's predictions in the filters' index ranges, each walked in the order "
        "along ix_predictions_[cell_]by_id or ix_predictions_[cell_]random and limited to the page, merged "
        "(app.labels.ranges; prepared, generic plan).",
        "- along samples: the samples walked in the order (primary key or shuffle index), each one's prediction "
        "checked: what these listings did before migration 0018 (`by_predictions` patched to false).",
        "",
        markdown_table(header, rows),
        "",
    ])
    print(text)
    write_report(text, args.out)


if __name__ == "__main__":
    main()
