"""Section (e) of bench/training.py: data-parallel training, NaN recovery and the batch-size finder.

- DDP: the same train job with 1 process (1 and 2 torch threads) and with `devices: 2` (two
  gloo processes of 1 thread each), wall and CPU time (rank 0's plus its followers', which are
  its child processes), and the valid accuracy, so that "same results" is visible next to the
  times;
- NaN recovery: the same job with a NaN injected into the final model's loss on one batch
  (app.training.nan_guard.PoisonLossCallback), against the clean job: what the restore and the
  retry cost, one process and two;
- the batch-size finder: a job with `batch_size: "auto"` and the finder's own time;
- out-of-fold models on two processes: each fold model data-parallel on both
  (`fold_parallelism: data`) against one per process at once (`folds`), beside one process:
  the fold models' wall time and the whole job's.
"""

from __future__ import annotations

import resource
import time

from sqlalchemy.orm import Session

from app.models import Run


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_job(engine, settings, dataset_id: int, params: dict, poison=None) -> dict:
    """One train job: wall s, CPU s (this process and its reaped children), the run's info and metrics."""
    from app.jobs.context import LocalJobContext
    from app.jobs.registry import run_job
    from app.training.jobs import TrainRun

    original = TrainRun._callbacks
    if poison is not None:
        def callbacks(self, stage, label, model, fold):
            cbs = original(self, stage, label, model, fold)
            return cbs + [poison] if model == "final" else cbs

        TrainRun._callbacks = callbacks
    try:
        ctx = LocalJobContext(engine=engine, settings=settings, params=params, dataset_id=dataset_id)
        cpu, children, t = time.process_time(), _children_cpu(), time.perf_counter()
        result = run_job(ctx, "train")
        wall = time.perf_counter() - t
        cpu = time.process_time() - cpu + _children_cpu() - children
    finally:
        TrainRun._callbacks = original
    with Session(engine) as db:
        run = db.get(Run, result["run_id"])
        return {"wall": wall, "cpu": cpu, "info": run.info, "params": run.params,
                "valid_accuracy": run.metrics["valid"]["accuracy"]}


def section_parallel(engine, settings, demo_id: int, tabular_id: int, repeats: int) -> dict:
    """(e) rows: ddp, nan, finder."""
    from app.training.nan_guard import PoisonLossCallback

    out: dict = {"ddp": [], "nan": [], "finder": [], "oof": [], "repeats": repeats}
    jobs = (("tabular", tabular_id, {"epochs": 5, "lr": 3e-3, "scoring": "in_sample", "seed": 0}),
            ("image", demo_id, {"epochs": 2, "lr": 2e-3, "scoring": "in_sample", "seed": 0, "pretrained": False}))
    setups = (("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2), ("2 processes, 1 thread each", 2, 1))
    for task, ds_id, params in jobs:
        for label, devices, threads in setups:
            s = settings.model_copy(update={"torch_threads": threads, "worker_devices": 2})
            runs = [timed_job(engine, s, ds_id, {**params, "devices": devices}) for _ in range(repeats)]
            best = min(runs, key=lambda r: r["wall"])
            row = {"task": task, "setup": label, "wall": best["wall"], "cpu": min(r["cpu"] for r in runs),
                   "final": best["info"]["timings"]["final"], "valid_accuracy": best["valid_accuracy"],
                   "accuracies": [r["valid_accuracy"] for r in runs]}
            out["ddp"].append(row)
            print(f"(e) ddp {task}, {label}: {row}", flush=True)
    task, ds_id, params = jobs[0]
    for devices in (1, 2):
        s = settings.model_copy(update={"torch_threads": 1, "worker_devices": 2})
        clean = min((timed_job(engine, s, ds_id, {**params, "devices": devices}) for _ in range(repeats)),
                    key=lambda r: r["wall"])
        poisoned = min((timed_job(engine, s, ds_id, {**params, "devices": devices}, PoisonLossCallback(at=20))
                        for _ in range(repeats)), key=lambda r: r["wall"])
        attempts = poisoned["info"].get("nan_recovery", [{}])[0].get("attempts", [])
        row = {"task": task, "devices": devices, "clean_final": clean["info"]["timings"]["final"],
               "poisoned_final": poisoned["info"]["timings"]["final"], "clean_wall": clean["wall"],
               "poisoned_wall": poisoned["wall"], "retries": len(attempts),
               "valid_accuracy": (clean["valid_accuracy"], poisoned["valid_accuracy"])}
        out["nan"].append(row)
        print(f"(e) nan: {row}", flush=True)
    for task, ds_id, params in jobs:
        s = settings.model_copy(update={"torch_threads": 1})
        fixed = timed_job(engine, s, ds_id, params)
        auto = timed_job(engine, s, ds_id, {**params, "batch_size": "auto"})
        finder = auto["info"].get("batch_size_finder", {})
        row = {"task": task, "fixed_wall": fixed["wall"], "auto_wall": auto["wall"],
               "finder_s": auto["info"]["timings"].get("batch_size_finder"), "chosen": finder.get("chosen"),
               "fixed_bs": fixed["params"]["batch_size"], "valid_accuracy": (fixed["valid_accuracy"], auto["valid_accuracy"])}
        out["finder"].append(row)
        print(f"(e) finder: {row}", flush=True)
    out["oof"] = _fold_rows(engine, settings, jobs, repeats)
    return out


OOF_SETUPS = (("1 process", 1, "auto"), ("2 processes, each fold on both (data)", 2, "data"),
              ("2 processes, one fold on each (folds)", 2, "folds"))


def _fold_rows(engine, settings, jobs, repeats: int) -> list[dict]:
    """Out-of-fold scoring with 2 folds: fold models data-parallel vs one per process."""
    rows = []
    for task, ds_id, params in jobs:
        oof = {**params, "scoring": "out_of_fold", "folds": 2}
        for label, devices, mode in OOF_SETUPS:
            s = settings.model_copy(update={"torch_threads": 1, "worker_devices": 2})
            extra = {"devices": devices} if devices == 1 else {"devices": devices, "fold_parallelism": mode}
            runs = [timed_job(engine, s, ds_id, {**oof, **extra}) for _ in range(repeats)]
            best = min(runs, key=lambda r: r["wall"])
            row = {"task": task, "setup": label, "wall": best["wall"], "cpu": min(r["cpu"] for r in runs),
                   "folds": best["info"]["timings"]["fold_models"], "valid_accuracy": best["valid_accuracy"]}
            rows.append(row)
            print(f"(e) oof {task}, {label}: {row}", flush=True)
    return rows


def report_lines(r: dict, cpus: int, load: list) -> list[str]:
    import torch

    lines = ["## (e) data-parallel training, NaN recovery, batch-size finder", "",
             f"Command: `.venv/bin/python bench/training.py --sections parallel --repeats {r['repeats']}`; torch "
             f"{torch.__version__}, CUDA: {'yes' if torch.cuda.is_available() else 'no'}, load average {load[0]} at "
             f"the start and {load[1]} at the end (a shared machine: times are noisy).", "",
             f"On this {cpus}-core machine. Wall and CPU seconds of the whole job, best of the repeats; CPU time "
             "adds the follower processes' (children of the job). `final` is the final model's fit alone. "
             "Same recipe and global batch in every setup, so the accuracies should agree within noise. The image "
             "model trains 2 epochs from scratch, far from converged: its accuracy moves with anything that changes "
             "the order of floating-point sums (the thread count, the split of a batch over processes).", "",
             "| task | setup | wall (s) | CPU (s) | final fit (s) | valid acc (each repeat) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in r["ddp"]:
        accs = ", ".join(f"{a:.3f}" for a in row["accuracies"])
        lines.append(f"| {row['task']} | {row['setup']} | {row['wall']:.1f} | {row['cpu']:.1f} | {row['final']:.1f} | {accs} |")
    lines += ["", "NaN recovery: the final model's loss made NaN on its 20th training batch, once; the guard "
              "restores the fit's start state and fits again (docs/gpu.md, Non-finite losses).", "",
              "| task | devices | final fit clean (s) | final fit with the NaN (s) | overhead | retries | job wall clean / NaN (s) | valid acc clean / NaN |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["nan"]:
        over = 100 * (row["poisoned_final"] - row["clean_final"]) / row["clean_final"]
        acc = " / ".join(f"{a:.3f}" for a in row["valid_accuracy"])
        lines.append(f"| {row['task']} | {row['devices']} | {row['clean_final']:.1f} | {row['poisoned_final']:.1f} | "
                     f"{over:+.0f}% | {row['retries']} | {row['clean_wall']:.1f} / {row['poisoned_wall']:.1f} | {acc} |")
    lines += ["", "Batch-size finder: the job with `batch_size: \"auto\"` against the default fixed size "
              "(docs/gpu.md, Batch size \"auto\"); one process, 1 thread.", "",
              "| task | fixed batch | job wall (s) | chosen batch | job wall with auto (s) | finder (s) | valid acc fixed / auto |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["finder"]:
        finder = "-" if row["finder_s"] is None else f"{row['finder_s']:.2f}"
        acc = " / ".join(f"{a:.3f}" for a in row["valid_accuracy"])
        lines.append(f"| {row['task']} | {row['fixed_bs']} | {row['fixed_wall']:.1f} | {row['chosen']} | "
                     f"{row['auto_wall']:.1f} | {finder} | {acc} |")
    if r.get("oof"):
        lines += ["", "Out-of-fold models (`folds: 2`): each fold model data-parallel on both processes "
                  "(`fold_parallelism: data`) against one fold model per process at once (`folds`), beside one "
                  "process; 1 thread each. `fold models` is the wall time of the out-of-fold stage; the final "
                  "model trains data-parallel in both 2-process setups (docs/gpu.md, Fold models).", "",
                  "| task | setup | wall (s) | CPU (s) | fold models (s) | valid acc |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for row in r["oof"]:
            lines.append(f"| {row['task']} | {row['setup']} | {row['wall']:.1f} | {row['cpu']:.1f} | "
                         f"{row['folds']:.1f} | {row['valid_accuracy']:.3f} |")
    return lines + [""]


def splice(text: str, section: list[str], head: str = "## (e) ") -> str:
    """The report `text` with its section `head` replaced by (or, without one, followed by) `section`."""
    start = text.find(head)
    if start < 0:
        return text.rstrip("\n") + "\n\n" + "\n".join(section)
    end = text.find("\n## ", start + len(head))
    rest = "" if end < 0 else text[end + 1:]
    return text[:start] + "\n".join(section) + ("\n" + rest if rest else "")
