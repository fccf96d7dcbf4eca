"""GPU bench: `python bench/gpu.py [--dry] [--out PATH]`.

One shot, on whatever device torch finds (a GPU is the point):
  (a) the image demo (scikit-learn digits) trained in fp32, bf16 and fp16: training
      samples/s and test accuracy of each (the precision actually used is shown: a CPU or a GPU
      without bfloat16 falls back); on CUDA also with torch_compile (its compile included);
  (b) scoring throughput: Curate's predict_probs against plain fastai learn.get_preds;
  (c) a NaN injected into one fp16 batch's loss, and the recovery (app/training/nan_guard.py);
  (d) batch_size "auto" (app/training/batch_size.py): the noise scale and the size chosen;
  (e) a one-rank data-parallel train job (app/training/ddp.py: NCCL on CUDA, gloo on the CPU)
      against the same job without a group: backend, world size, wall s, samples/s, valid
      accuracy, and each sample's predictions counted (bench/gpu_ddp.py); reported as not run,
      naming the module, where Curate's own dependencies are missing.
Writes bench/results/gpu.md (--out). `--dry` runs the same code on the CPU with tiny sizes, to
check the paths (tests/bench/test_gpu.py runs it; (e) runs both jobs for real, on gloo); its
figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench.common import commit, machine, markdown_table, write_report  # noqa: E402
from bench.gpu_ddp import report_lines, section_ddp  # noqa: E402

FULL = {"train_copies": 4, "valid": 300, "test": 197, "image_size": 64, "epochs": 3, "batch_size": 256, "score_copies": 20}
DRY = {"train": 48, "valid": 12, "test": 12, "image_size": 16, "epochs": 1, "batch_size": 8, "score_copies": 1}
LR = 3e-3


def demo_data(workdir: Path, sizes: dict):
    """The image demo as TrainingData, without a database: PNGs under `workdir`; the full size
    repeats the 1,000 train digits `train_copies` times (throughput needs more than 1,000)."""
    from app.datasets.demo import demo_records
    from app.training.data import TrainingData

    classes = [str(d) for d in range(10)]
    rows, paths = [], {}
    for r in demo_records():
        if r.split not in ("train", "valid", "test"):
            continue
        path = workdir / f"{r.external_id}.png"
        path.write_bytes(r.png)
        paths[r.external_id] = str(path)
        rows.append({"split": r.split, "label": r.true_label, "path": str(path)})
    df = pd.DataFrame(rows)
    parts = []
    for split in ("train", "valid", "test"):
        part = df[df["split"] == split]
        if "train_copies" in sizes and split == "train":
            part = pd.concat([part] * sizes["train_copies"], ignore_index=True)
        elif split in sizes:
            part = part.head(sizes[split])
        parts.append(part)
    items = pd.concat(parts, ignore_index=True)
    items["sample_id"] = np.arange(1, len(items) + 1)
    items["y"] = items["label"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
    return TrainingData(dataset_id=0, name="digits-demo", task="image", classes=classes, label_version=1, items=items)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train(data, params: dict, workdir: str, callbacks=(), log=None) -> dict:
    """One model through Curate's learner and fit (nan guard included): fit seconds, samples/s,
    test accuracy, the precision used, and the learner."""
    from fastai.torch_core import set_seed

    from app.training import learners as L
    from app.training.adapters import adapter_for
    from app.training.environment import resolve_environment
    from app.training.recipe import resolve_recipe

    recipe = resolve_recipe(params, "image")
    env = resolve_environment(recipe)
    adapter = adapter_for("image", recipe, env, data.classes)
    set_seed(recipe.seed)
    learn = L.build_learner(adapter, adapter.dataloaders(data.train, data.valid), False, [], workdir)
    _sync()
    t = time.perf_counter()
    with learn.added_cbs(list(callbacks)):
        L.fit(learn, recipe, recipe.lr, False, has_valid=True, log=log)
    _sync()
    seconds = time.perf_counter() - t
    test = data.split("test")
    probs = L.predict_probs(adapter, learn, test)
    accuracy = float((probs.argmax(1) == test["y"].to_numpy()).mean())
    steps = len(data.train) // learn.dls.train.bs * recipe.epochs
    return {"precision": env.precision, "device": str(env.device), "notices": env.notices, "seconds": seconds,
            "samples_per_s": steps * learn.dls.train.bs / seconds, "accuracy": accuracy, "learn": learn,
            "adapter": adapter, "recovery": getattr(learn, "nan_recovery", [])}


def section_precision(data, sizes: dict, workdir: str) -> list[dict]:
    rows = []
    base = {"epochs": sizes["epochs"], "lr": LR, "batch_size": sizes["batch_size"], "image_size": sizes["image_size"],
            "pretrained": False, "scoring": "in_sample"}
    for precision in ("fp32", "bf16", "fp16"):
        r = train(data, {**base, "precision": precision}, workdir)
        r["asked"] = precision
        rows.append(r)
        print(f"(a) {precision} -> {r['precision']} on {r['device']}: {r['samples_per_s']:.0f} samples/s, "
              f"accuracy {r['accuracy']:.3f}", flush=True)
    if torch.cuda.is_available():  # torch_compile on the GPU (on the CPU: bench/training.py, section (f))
        try:
            r = train(data, {**base, "precision": "auto", "torch_compile": True}, workdir)
            r["asked"] = "auto + torch_compile"
            rows.append(r)
            print(f"(a) torch_compile, {r['precision']}: {r['samples_per_s']:.0f} samples/s (compile included), "
                  f"accuracy {r['accuracy']:.3f}", flush=True)
        except Exception as exc:  # a compiler the machine lacks must not cost the other sections
            rows.append({"asked": "auto + torch_compile", "precision": f"failed: {type(exc).__name__}: {exc}"[:200],
                         "device": "cuda", "samples_per_s": None, "seconds": None, "accuracy": None})
            print(f"(a) torch_compile failed: {exc}", flush=True)
    return rows


def section_scoring(data, trained: dict, copies: int, repeats: int = 3) -> dict:
    """Best of `repeats`: every demo sample `copies` times through predict_probs and get_preds."""
    from app.training.learners import predict_probs

    learn, adapter = trained["learn"], trained["adapter"]
    items = pd.concat([data.items] * copies, ignore_index=True)
    bs = max(adapter.recipe.batch_size * 2, 64)
    plain, curate = [], []
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        learn.get_preds(dl=learn.dls.test_dl(items, bs=bs))
        _sync()
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        predict_probs(adapter, learn, items)
        _sync()
        curate.append(time.perf_counter() - t)
    out = {"n": len(items), "plain": len(items) / min(plain), "curate": len(items) / min(curate)}
    print(f"(b) scoring {out['n']} samples: get_preds {out['plain']:.0f}/s, Curate {out['curate']:.0f}/s", flush=True)
    return out


def section_nan(data, sizes: dict, workdir: str) -> dict:
    from app.training.nan_guard import PoisonLossCallback

    lines: list[str] = []
    poison = PoisonLossCallback(at=2)
    params = {"epochs": sizes["epochs"], "lr": LR, "batch_size": sizes["batch_size"], "image_size": sizes["image_size"],
              "pretrained": False, "precision": "fp16"}
    r = train(data, params, workdir, [poison], log=lines.append)
    out = {"precision": r["precision"], "poisoned": poison.poisoned, "log": lines, "recovery": r["recovery"],
           "accuracy": r["accuracy"]}
    print(f"(c) NaN under {r['precision']}: {len(r['recovery'])} failed attempt(s), recovered, accuracy {r['accuracy']:.3f}",
          flush=True)
    return out


def section_batch_size(data, sizes: dict) -> dict:
    from app.training.batch_size import auto_batch_size
    from app.training.environment import resolve_environment
    from app.training.recipe import resolve_recipe

    recipe = resolve_recipe({"batch_size": "auto", "image_size": sizes["image_size"], "pretrained": False}, "image")
    info: dict = {}
    lines: list[str] = []
    t = time.perf_counter()
    chosen = auto_batch_size(recipe, "image", data.classes, [], [], data.train, data.valid, resolve_environment(recipe),
                             lines.append, info)
    finder = info["batch_size_finder"]
    finder["seconds"] = time.perf_counter() - t
    print(f"(d) {lines[-1]}", flush=True)
    assert chosen.batch_size == finder["chosen"]
    return finder


def _fmt(x, spec=".0f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def report(results: dict, dry: bool) -> str:
    import fastai

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA device)"
    lines = ["# GPU bench", ""]
    if dry:
        lines += ["**CPU dry run** (`python bench/gpu.py --dry`): tiny sizes on the CPU, to check that every code path "
                  "runs. Its figures say nothing about GPU speed; bf16 and fp16 fall back to fp32 on the CPU.", ""]
    lines += [f"Device: {device}; torch {torch.__version__}, fastai {fastai.__version__}; {machine()}; commit {commit()}.",
              "", "## (a) training precision", ""]
    lines.append(markdown_table(
        ["asked", "used", "device", "train samples/s", "fit s", "test accuracy"],
        [[r["asked"], r["precision"], r["device"], _fmt(r["samples_per_s"]), _fmt(r["seconds"], ".1f"),
          _fmt(r["accuracy"], ".3f")] for r in results["precision"]]))
    s = results["scoring"]
    lines += ["", "## (b) scoring throughput", "",
              markdown_table(["samples", "fastai get_preds /s", "Curate predict_probs /s", "Curate / fastai"],
                             [[s["n"], _fmt(s["plain"]), _fmt(s["curate"]), _fmt(s["curate"] / s["plain"], ".2f")]])]
    n = results["nan"]
    lines += ["", f"## (c) NaN under {n['precision']}", "",
              f"Batch 2's loss made NaN once ({n['poisoned']} poisoned); failed attempts: {len(n['recovery'])}; "
              f"test accuracy after recovery {_fmt(n['accuracy'], '.3f')}. Job log:", ""]
    lines += [f"    {line}" for line in n["log"]] or ["    (nothing logged)"]
    b = results["batch_size"]
    lines += ["", "## (d) batch_size auto", "",
              markdown_table(["B_small", "B_big", "steps", "G^2 (mean gradient)", "tr Sigma (noise)", "B_simple", "chosen", "bounds", "s"],
                             [[b["b_small"], b["b_big"], b["steps"], _fmt(b["grad_sq"], ".3g"), _fmt(b["trace_sigma"], ".3g"),
                               _fmt(b["b_simple"], ".1f"), b["chosen"], b["bounds"], _fmt(b["seconds"], ".1f")]])]
    d = results["ddp"]
    lines += ["", "## (e) data-parallel job", ""]
    lines += ([f"Not run: {d['missing']}. It runs a whole train job, which needs Curate's own dependencies "
               "(requirements), not only the bench's wheels."] if "missing" in d else report_lines(d))
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU: checks the code paths")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu.md"))
    args = parser.parse_args(argv)
    from app.training.environment import configure_threads

    configure_threads(int(os.environ.get("CURATE_TORCH_THREADS", "0")))
    if args.dry:
        torch.cuda.is_available = lambda: False  # the CPU even on a GPU machine: the dry run is about the paths
    sizes = DRY if args.dry else FULL
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="curate-gpu-bench-") as tmp:
        data = demo_data(Path(tmp), sizes)
        results["precision"] = section_precision(data, sizes, tmp)
        results["scoring"] = section_scoring(data, results["precision"][0], sizes["score_copies"])
        results["nan"] = section_nan(data, sizes, tmp)
        results["batch_size"] = section_batch_size(data, sizes)
        try:
            results["ddp"] = section_ddp(data, sizes, LR, tmp, _sync)
        except ImportError as exc:  # (e) is a whole train job: it needs Curate's own dependencies too
            results["ddp"] = {"missing": f"{type(exc).__name__}: {exc}"}
            print(f"(e) not run: {results['ddp']['missing']}", flush=True)
    write_report(report(results, args.dry), args.out)
    return results


if __name__ == "__main__":
    main()
