"""Section (f) of bench/training.py: `torch_compile` on and off, the same job otherwise.

One process, 1 thread, the jobs of section (e): the whole job's wall time, the final model's
fit alone (where the compile is paid: its first batches compile the forward and backward),
and the valid accuracy, which should agree within noise.
"""

from __future__ import annotations

from bench.training_parallel import timed_job

HEAD = "## (f) "


def section_compile(engine, settings, demo_id: int, tabular_id: int, repeats: int) -> dict:
    jobs = (("tabular", tabular_id, {"epochs": 5, "lr": 3e-3, "scoring": "in_sample", "seed": 0}),
            ("image", demo_id, {"epochs": 2, "lr": 2e-3, "scoring": "in_sample", "seed": 0, "pretrained": False}))
    rows = []
    s = settings.model_copy(update={"torch_threads": 1})
    for task, ds_id, params in jobs:
        for on in (False, True):
            runs = [timed_job(engine, s, ds_id, {**params, "torch_compile": on}) for _ in range(repeats)]
            best = min(runs, key=lambda r: r["wall"])
            row = {"task": task, "compile": on, "wall": best["wall"], "final": best["info"]["timings"]["final"],
                   "valid_accuracy": best["valid_accuracy"]}
            rows.append(row)
            print(f"(f) compile {task}: {row}", flush=True)
    return {"rows": rows, "repeats": repeats}


def report_lines(r: dict, load: list) -> list[str]:
    import torch

    lines = [f"{HEAD}torch.compile", "",
             f"Command: `.venv/bin/python bench/training.py --sections compile --repeats {r['repeats']}`; torch "
             f"{torch.__version__}, CUDA: {'yes' if torch.cuda.is_available() else 'no'}, load average {load[0]} at "
             f"the start and {load[1]} at the end.", "",
             "The same job with `torch_compile` off and on (docs/gpu.md, torch.compile); one process, 1 thread, best "
             "of the repeats. The final fit includes the compile, paid on its first batches (and again for each new "
             "batch shape).", "",
             "| task | torch_compile | job wall (s) | final fit (s) | final fit vs off | valid acc |",
             "| --- | --- | --- | --- | --- | --- |"]
    off = {row["task"]: row for row in r["rows"] if not row["compile"]}
    for row in r["rows"]:
        ratio = row["final"] / off[row["task"]]["final"]
        lines.append(f"| {row['task']} | {'on' if row['compile'] else 'off'} | {row['wall']:.1f} | {row['final']:.1f} | "
                     f"{ratio:.2f}x | {row['valid_accuracy']:.3f} |")
    return lines + [""]
