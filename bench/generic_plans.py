"""What a listing costs on each of its first runs on a database connection, with the merged
statement planned for its values (psycopg's and Postgres's defaults) against prepared and
planned generically from its first run (app.labels.prepared.run_generic).

Runs in one process on a database that `bench/scale.py --keep` left (Postgres), with two
connections side by side, one per way, taking turns on each run so that the machine's
noise falls on both. Every listing is a fresh shape for both connections. Writes
bench/results/generic_plans.md (--out to write elsewhere).

    .venv/bin/python bench/generic_plans.py --database curate_dev
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

LISTINGS = [  # (what, query parameters)
    ("class queue head", {"order": "loss", "label": "class0", "reviewed": "false", "split": "train", "limit": 5}),
    ("given class", {"order": "loss", "label": "class1"}),
    ("given class, reverse", {"order": "entropy", "label": "class2", "reverse": "true"}),
    ("predicted class", {"order": "self_confidence", "predicted": "class0"}),
    ("confusion cell", {"order": "combined", "label": "class5", "predicted": "class0"}),
    ("no filter", {"order": "priority"}),
    ("flagged", {"order": "aum", "flagged": "true"}),
]
RUNS = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="curate_dev")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "generic_plans.md"))
    args = parser.parse_args()

    from sqlalchemy import select

    from app.db import get_engine, session_factory
    from app.labels import queries
    from app.models import Dataset

    engine = get_engine(f"{args.postgres_url}/{args.database}")
    ways = {"generic": queries.run_generic, "default": lambda session, stmt: session.execute(stmt.stmt, stmt.params).all()}
    sessions = {way: session_factory(engine)() for way in ways}
    ds_id = sessions["generic"].scalar(select(Dataset.id).order_by(Dataset.id.desc()).limit(1))
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for what, params in LISTINGS:
            # Build (and compile) the shape once first, on a third connection, so that neither
            # way pays SQLAlchemy's part.
            warm = session_factory(engine)()
            _list(warm, queries, ds_id, params)
            warm.close()
            for run in range(args.runs):
                for way in sorted(ways, reverse=run % 2 == 1):
                    queries.run_generic = ways[way]
                    try:
                        times.setdefault((what, way), []).append(_list(sessions[way], queries, ds_id, params))
                    finally:
                        queries.run_generic = ways["generic"]
    finally:
        for s in sessions.values():
            s.close()

    rows = []
    for what, params in LISTINGS:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        row = [what, f"`{query}`"]
        for way in ("default", "generic"):
            t = times[(what, way)]
            row += [f"{t[0]:.1f}", f"{statistics.median(t[1:10]):.1f}", f"{statistics.median(t[10:]):.1f}"]
        rows.append(row)
    header = ["listing", "query", "default: run 1 ms", "default: runs 2-10 p50", "default: runs 11+ p50",
              "generic: run 1 ms", "generic: runs 2-10 p50", "generic: runs 11+ p50"]
    text = "\n".join([
        "# Listings on their first runs on a connection: planned per run, or generic from the first",
        "",
        f"`.venv/bin/python bench/generic_plans.py --database {args.database}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit()}.",
        "",
        f"Machine: {machine()}. Database: {args.database}, dataset {ds_id}. {args.runs} runs per listing and way, "
        "in one process, the two connections taking turns. Times are app.labels.queries.list_samples "
        "(statement, execution, rows to objects), without HTTP.",
        "",
        "- default: psycopg prepares a statement at its 6th run; Postgres plans the first 5 runs of a "
        "prepared statement for their values, then may keep a generic plan.",
        "- generic: prepared at the first run and planned generically (`run_generic`).",
        "",
        markdown_table(header, rows),
        "",
    ])
    print(text)
    write_report(text, args.out)


def _list(session, queries, ds_id: int, params: dict) -> float:
    from app.models import Dataset, Split

    ds = session.get(Dataset, ds_id)
    q = queries.SampleQuery(
        order=params["order"], reverse=params.get("reverse") == "true", limit=int(params.get("limit", 50)),
        label=params.get("label"), predicted=params.get("predicted"),
        split=Split(params["split"]) if "split" in params else None,
        reviewed={"true": True, "false": False}.get(params.get("reviewed", "")),
        flagged={"true": True, "false": False}.get(params.get("flagged", "")),
    )
    started = time.perf_counter()
    queries.list_samples(session, ds, q)
    return (time.perf_counter() - started) * 1000


if __name__ == "__main__":
    main()
