"""The multi-label demo's train job: how much of its injected tag noise the review queue finds.

    .venv/bin/python bench/demo_multilabel.py [--params '{"folds": 2}'] [--out bench/results/demo_multilabel.md]

Loads `digit-mosaics-demo` (app/datasets/demo_multilabel.py) into a fresh, migrated SQLite
database with `load_multilabel_demo`, as `curate demo --multilabel` does, and runs the train
job it queues (its params, merged with --params) in-process, as a worker would. Then, against
the noise `mosaic_records()` recorded:

  top-N    noisy train samples among the first N of the train queue (N = the number of noisy
           samples), by `priority` (the queue's default order) and by `self_confidence`; chance
           is N x noise share.
  flagged  the flagged set's size, precision and recall.
  test     exact-match and macro F1 of the final model on test; the job's wall seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, commit, machine, markdown_table, write_report  # noqa: E402

COMMAND = "python bench/demo_multilabel.py"


def run(params: dict) -> dict:
    from sqlalchemy import select

    from app.config import Settings
    from app.datasets import demo_multilabel as demo
    from app.db import get_engine, session_scope
    from app.jobs import registry
    from app.jobs.context import LocalJobContext
    from app.migrate import upgrade
    from app.models import Job, Prediction, Run, Sample

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        settings = Settings(database_url=url, data_dir=Path(tmp) / "data", _env_file=None)
        engine = get_engine(url)
        with session_scope(engine) as session:
            ds = demo.load_multilabel_demo(session, settings)
            job = demo.queue_multilabel_run(session, ds)
            ds_id, queued = ds.id, dict(job.params)
        full = {**queued, **params}
        ctx = LocalJobContext(engine=engine, settings=settings, params=full, dataset_id=ds_id)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = registry.run_job(ctx, "train")
        seconds = time.perf_counter() - t
        with session_scope(engine) as session:
            run_ = session.get(Run, result["run_id"])
            metrics = run_.metrics
            rows = session.execute(
                select(Sample.external_id, Prediction.priority, Prediction.self_confidence, Prediction.flagged)
                .join(Prediction, Prediction.sample_id == Sample.id)
                .where(Prediction.run_id == run_.id, Sample.split == "train")
            ).all()
            assert session.scalars(select(Job)).first() is not None
    noise = {r.external_id: r.noisy for r in demo.mosaic_records()}
    ids = [r[0] for r in rows]
    noisy = np.array([noise[i] for i in ids])
    priority = np.array([r[1] for r in rows], dtype=float)
    confidence = np.array([r[2] for r in rows], dtype=float)
    flagged = np.array([bool(r[3]) for r in rows])
    n = int(noisy.sum())

    def top(score: np.ndarray) -> int:
        return int(noisy[np.argsort(score, kind="stable")[:n]].sum())

    tp = int((flagged & noisy).sum())
    return {
        "params": full, "train": len(ids), "noisy": n, "chance": n * n / len(ids),
        "top_priority": top(priority), "top_self_confidence": top(confidence),
        "flagged": int(flagged.sum()), "precision": tp / max(int(flagged.sum()), 1), "recall": tp / max(n, 1),
        "exact_match": metrics["test"]["exact_match"], "macro_f1": metrics["test"]["macro_f1"], "seconds": seconds,
    }


def report(r: dict, command: str) -> str:
    from app.datasets import demo_multilabel as demo

    n = r["noisy"]
    rows = [[
        f"{r['train']} ({n} noisy)", f"{n * n / r['train']:.1f}",
        f"{r['top_priority']}/{n} ({r['top_priority'] / n:.0%})",
        f"{r['top_self_confidence']}/{n} ({r['top_self_confidence'] / n:.0%})",
        f"{r['flagged']} ({r['precision']:.2f} / {r['recall']:.2f})",
        f"{r['exact_match']:.3f}", f"{r['macro_f1']:.3f}", f"{r['seconds']:.0f}",
    ]]
    table = markdown_table(["train samples", "chance in top-N", "noisy in top-N by priority",
                            "by self_confidence", "flagged (precision / recall)", "test exact match",
                            "test macro F1", "job seconds"], rows)
    return "\n".join([
        "# The multi-label demo: injected tag noise the review queue finds", "",
        f"From `{command}` at {commit()} on {machine()} (CPU, shared with other work).", "",
        f"`digit-mosaics-demo`: {demo.GRID[0]}x{demo.GRID[1]} cells of scikit-learn 8x8 digits, splits "
        f"{demo.SIZES}, {demo.NOISE_FRACTION:.0%} of train with one tag missing or extra. The train job "
        f"`curate demo --multilabel` queues, params `{json.dumps(r['params'], sort_keys=True)}` (the rest: the "
        "image defaults of app/training/recipe.py), out-of-fold scores of every train sample.", "",
        table, "",
        "N is the number of noisy train samples; a column counts the noisy ones among the first N of the train "
        "queue by that order (ascending: most suspicious first). Chance is N times the noisy share of train. "
        "Test metrics are the final model's on the clean test split, at the thresholds chosen on valid.",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="{}", help="JSON merged over the params the demo queues")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "demo_multilabel.md"))
    args = p.parse_args()
    params = json.loads(args.params)
    command = COMMAND + (f" --params '{args.params}'" if params else "")
    r = run(params)
    print(json.dumps(r))
    write_report(report(r, command), args.out)


if __name__ == "__main__":
    main()
