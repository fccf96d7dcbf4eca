"""Out-of-fold passes: does averaging the held-out probabilities of several fold splits find label errors better?

    CURATE_TORCH_THREADS=1 .venv/bin/python bench/oof_passes.py [--passes 1,2,3] [--seeds 1] [--only TEXT] [--out PATH]

Same data, noise and train job as bench/label_errors.py (digits as a table and make_classification,
uniform and class-conditional noise at 10, 20 and 40% on train, valid and test clean). For each
setting the train job runs once per value of `oof_repeats` (1 pass, the default, is the baseline
in the same run), and on the probabilities it stores:

  Curate   the combined score's AUPRC and the flagged set's F1 (both as the job computes them);
  cleanlab the best of its quality scores' AUPRC and its default filter's F1 on the same
           averaged probabilities (more passes help it too);
  cost     the job's wall time, against one pass.

Prints the table and writes bench/results/oof_passes.md. Needs the `bench` extra (cleanlab).
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("CURATE_TORCH_THREADS", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import label_errors as le  # noqa: E402  (bench/ is the script's directory)

RESULTS = le.ROOT / "bench" / "results" / "oof_passes.md"
DATASETS = ("digits-tab", "classif")


def measure(P: np.ndarray, y: np.ndarray, is_err: np.ndarray, aum: np.ndarray | None) -> dict:
    """Curate's combined AUPRC and flagged F1, cleanlab's best quality-score AUPRC and default filter F1."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.metrics import average_precision_score, f1_score

    from app.scoring.combined import combined_score
    from app.scoring.flagged import flag_label_errors

    combined = combined_score(P, y, aum)
    flagged = flag_label_errors(P, y, score=combined).mask
    cl_best = max(
        (average_precision_score(is_err, -get_label_quality_scores(y, P, method=m)), m) for m in le.CLEANLAB_METHODS
    )
    cl_default = find_label_issues(y, P, n_jobs=1)
    return {
        "combined": float(average_precision_score(is_err, -combined)),
        "flagged_f1": float(f1_score(is_err, flagged)),
        "cl_best": float(cl_best[0]),
        "cl_best_method": cl_best[1],
        "cl_default_f1": float(f1_score(is_err, cl_default)),
    }


def run_setting(app: le.App, setting: le.Setting, passes: list[int]) -> dict:
    data = le.load_data(setting.dataset, setting.seed)
    given = le.add_noise(data.y_true, data.split, setting.noise, setting.rate, setting.seed)
    sample_ids = app.import_dataset(f"{setting}", data, given)
    row_of = pd.Series(np.arange(len(sample_ids)), index=sample_ids)
    out: dict = {"setting": setting, "passes": {}}
    for k in passes:
        run = le.curate_oof(app, app.dataset_id, {"seed": setting.seed, "oof_repeats": k})
        pos = row_of[run.train_ids].to_numpy()
        y = given[pos]
        is_err = y != data.y_true[pos]
        out["errors"] = int(is_err.sum())
        out["passes"][k] = {"seconds": run.seconds, **measure(run.P_oof, y, is_err, run.aum)}
    return out


def report(results: list[dict], passes: list[int], argv: list[str], minutes: float, load: tuple, code: str) -> str:
    import cleanlab
    import torch

    base = passes[0]
    lines = ["# Out-of-fold passes: averaging several fold splits", ""]
    lines.append(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} thread), "
        f"cleanlab {cleanlab.__version__}. Load average at start {load[0]:.1f}, at end {load[1]:.1f}; total wall time "
        f"{minutes:.1f} min. Code: Curate at commit {code}."
    )
    lines += ["", f"Command: `CURATE_TORCH_THREADS=1 .venv/bin/python bench/oof_passes.py {' '.join(argv)}`", ""]
    lines += [
        "Data, noise and recipe as in `bench/results/label_errors.md` (the default tabular recipe: MLP [200, 100], "
        "10 epochs, lr_find, 5 folds). For each setting the train job runs once per number of out-of-fold passes "
        "(`oof_repeats`; pass r splits train with seed + r, so the first pass is the one-pass run's). Curate = the "
        "combined score's AUPRC and the flagged set's F1 as the job computes them; cleanlab = the best of its "
        "quality scores (picked per row after the fact) and its default `find_label_issues` filter, on the same "
        f"averaged probabilities. Time = the job's wall time; {base} pass{'es' if base > 1 else ''} is the baseline.",
        "",
    ]
    lines += ["## Summary", "", f"Means over {len(results)} settings.", "",
              "| passes | job time (s) | time vs baseline | C combined AUPRC | cl best AUPRC | settings C >= cl | "
              "C flagged F1 | cl default F1 | settings C >= cl |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k in passes:
        rows = [r["passes"][k] for r in results]
        t = statistics.fmean(x["seconds"] for x in rows)
        t0 = statistics.fmean(r["passes"][base]["seconds"] for r in results)
        lines.append(
            f"| {k} | {t:.1f} | {t / t0:.2f}x | {statistics.fmean(x['combined'] for x in rows):.3f} | "
            f"{statistics.fmean(x['cl_best'] for x in rows):.3f} | {sum(x['combined'] >= x['cl_best'] for x in rows)}/{len(rows)} | "
            f"{statistics.fmean(x['flagged_f1'] for x in rows):.3f} | {statistics.fmean(x['cl_default_f1'] for x in rows):.3f} | "
            f"{sum(x['flagged_f1'] >= x['cl_default_f1'] for x in rows)}/{len(rows)} |"
        )
    if len(passes) > 1:
        last = passes[-1]
        gains = [r["passes"][last]["combined"] - r["passes"][base]["combined"] for r in results]
        lines += ["", f"Combined AUPRC, {last} passes against {base}: mean {statistics.fmean(gains):+.3f}, higher in "
                  f"{sum(g > 0 for g in gains)} of {len(gains)} settings, lowest {min(gains):+.3f}, highest {max(gains):+.3f}."]
    lines += ["", "## Per setting", "",
              "| setting | errors | passes | job (s) | C combined AUPRC | cl best AUPRC (method) | C flagged F1 | cl default F1 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for k in passes:
            x = r["passes"][k]
            lines.append(f"| {r['setting']} | {r['errors']} | {k} | {x['seconds']:.1f} | {x['combined']:.3f} | "
                         f"{x['cl_best']:.3f} ({x['cl_best_method']}) | {x['flagged_f1']:.3f} | {x['cl_default_f1']:.3f} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", default="1,2,3", help="comma-separated values of oof_repeats; the first is the baseline")
    parser.add_argument("--seeds", type=int, default=1, help="noise seeds per setting")
    parser.add_argument("--only", default=None, help="only settings whose description contains this text")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    passes = [int(p) for p in args.passes.split(",")]
    settings = [le.Setting(d, noise, rate, seed) for d in DATASETS for noise in le.NOISES for rate in le.RATES
                for seed in range(args.seeds)]
    if args.only:
        settings = [s for s in settings if args.only in str(s)]
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="curate-oof-passes-") as tmp:
        app = le.App(Path(tmp))
        for i, s in enumerate(settings):
            t = time.perf_counter()
            r = run_setting(app, s, passes)
            results.append(r)
            print(f"[{i + 1}/{len(settings)}] {s}: " + "; ".join(
                f"{k} pass(es) {x['seconds']:.0f}s combined {x['combined']:.3f} cl {x['cl_best']:.3f} F1 {x['flagged_f1']:.3f}"
                for k, x in r["passes"].items()) + f"; {time.perf_counter() - t:.0f}s", flush=True)
        app.client.close()
        app.engine.dispose()
    minutes = (time.perf_counter() - started) / 60
    le.write_report(report(results, passes, sys.argv[1:], minutes, (load0, os.getloadavg()[0]), le.commit()), args.out)


if __name__ == "__main__":
    main()
