"""Imbalance recipes side by side: `.venv/bin/python bench/recipes.py [--seeds 5] [--epochs 10]`.

scikit-learn's digits (1,797 samples of 64 pixel features, 10 classes) as a tabular dataset,
split stratified into train 60% / valid 15% / test 25%. In train, the classes CUT keep 5% of
their samples (about 5 each); valid and test stay untouched. The same tabular learner as a
train job (Curate's adapter, build_learner, fit, predict_probs; fixed lr, in-sample) trains
under each recipe, for several seeds (the seed also draws which samples of a cut class stay),
and is measured on test: macro F1, and the mean F1 of the cut classes and of the others.
Prints a table and writes bench/results/recipes.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

CUT = (3, 5, 8)  # classes cut to KEEP of their train samples
KEEP = 0.05
RECIPES = {
    "none (cross-entropy)": {},
    "oversample": {"sampling": "oversample"},
    "weighted sampling": {"sampling": "weighted"},
    "weighted cross-entropy": {"loss": "weighted_cross_entropy"},
    "focal (gamma 2)": {"loss": "focal"},
    "focal, balanced alpha": {"loss": "focal", "focal_alpha": "balanced"},
}


def digits_frames(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(train with the cut classes thinned, valid, test, classes); the valid/test split is fixed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    classes = [str(c) for c in range(10)]
    df = pd.DataFrame(digits.data, columns=[f"f:p{i}" for i in range(64)])
    df["label"] = [classes[y] for y in digits.target]
    train, rest = train_test_split(df, test_size=0.4, stratify=df["label"], random_state=0)
    valid, test = train_test_split(rest, test_size=0.625, stratify=rest["label"], random_state=0)
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        rows = train.index[train["label"] == c]
        if int(c) in CUT:
            rows = rng.choice(rows, max(1, round(KEEP * len(rows))), replace=False)
        keep += list(rows)
    return train.loc[sorted(keep)], valid, test, classes


def run_one(params: dict, seed: int, epochs: int, lr: float, workdir: str) -> dict:
    from fastai.torch_core import set_seed

    from app.evaluation.metrics import classification_metrics
    from app.training import adapters, environment, learners
    from app.training.recipe import resolve_recipe

    train, valid, test, classes = digits_frames(seed)
    recipe = resolve_recipe({"epochs": epochs, "lr": lr, "seed": seed, "scoring": "in_sample", **params}, "tabular")
    env = environment.resolve_environment(recipe)
    conts = [c for c in train.columns if c.startswith("f:")]
    adapter = adapters.adapter_for("tabular", recipe, env, classes, [], conts)
    started = time.process_time()
    set_seed(seed, reproducible=True)
    learn = learners.build_learner(adapter, adapter.dataloaders(train, valid), False, [], workdir)
    learners.fit(learn, recipe, lr, False, has_valid=True)
    probs = learners.predict_probs(adapter, learn, test)
    seconds = time.process_time() - started
    y = test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    m = classification_metrics(y, probs.argmax(1), classes)
    f1 = {c: m["per_class"][c]["f1"] for c in classes}
    cut = [str(c) for c in CUT]
    return {
        "macro_f1": m["macro_f1"],
        "cut_f1": float(np.mean([f1[c] for c in cut])),
        "other_f1": float(np.mean([f1[c] for c in classes if c not in cut])),
        "accuracy": m["accuracy"],
        "seconds": seconds,
        "n_train": len(train),
        "cut_train": int(train["label"].isin(cut).sum()),
    }


def fmt(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "recipes.md"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("CURATE_TORCH_THREADS", "1")))
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    results: dict[str, list[dict]] = {name: [] for name in RECIPES}
    with tempfile.TemporaryDirectory(prefix="curate-bench-") as workdir:
        for seed in range(args.seeds):
            for name, params in RECIPES.items():
                r = run_one(params, seed, args.epochs, args.lr, workdir)
                results[name].append(r)
                print(f"seed {seed} {name:24s} macro F1 {r['macro_f1']:.3f}  cut F1 {r['cut_f1']:.3f}  "
                      f"others {r['other_f1']:.3f}  {r['seconds']:.1f}s", flush=True)
    wall = time.monotonic() - started
    first = results["none (cross-entropy)"][0]

    lines = [
        "# Imbalance recipes",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s). Load average at start {load_start:.1f}, at end "
        f"{os.getloadavg()[0]:.1f}. Whole bench: {wall:.0f} s wall.",
        "",
        "Command: `" + " ".join([".venv/bin/python bench/recipes.py", *sys.argv[1:]]) + "`",
        "",
        f"scikit-learn digits as 64 continuous features, 10 classes; train / valid / test stratified 60 / 15 / 25 %. "
        f"In train, classes {', '.join(map(str, CUT))} keep {KEEP:.0%} of their samples "
        f"({first['cut_train']} of {first['n_train']} train samples); valid and test are untouched. "
        f"The tabular learner of a train job (MLP 200-100, batch 64), {args.epochs} epochs of one-cycle at a fixed "
        f"lr {args.lr:g}, in-sample; {args.seeds} seeds (each also redraws which samples of a cut class stay). "
        "Test-set F1, mean ± standard deviation over the seeds; CPU seconds per model.",
        "",
        "| recipe | params | macro F1 | cut classes' F1 | other classes' F1 | accuracy | CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, params in RECIPES.items():
        rs = results[name]
        lines.append(
            f"| {name} | `{params}` | {fmt([r['macro_f1'] for r in rs])} | {fmt([r['cut_f1'] for r in rs])} | "
            f"{fmt([r['other_f1'] for r in rs])} | {fmt([r['accuracy'] for r in rs])} | "
            f"{np.mean([r['seconds'] for r in rs]):.1f} |"
        )
    base = np.mean([r["cut_f1"] for r in results["none (cross-entropy)"]])
    ranked = sorted(RECIPES, key=lambda n: -np.mean([r["macro_f1"] for r in results[n]]))
    lines += ["", "Cut classes' F1 against no rebalancing (same seeds, mean of the paired differences):", ""]
    for name in ranked:
        if name == "none (cross-entropy)":
            continue
        diffs = [r["cut_f1"] - b["cut_f1"] for r, b in zip(results[name], results["none (cross-entropy)"])]
        better = sum(d > 0 for d in diffs)
        lines.append(f"- {name}: {np.mean(diffs):+.3f} (better on {better} of {len(diffs)} seeds; "
                     f"none averages {base:.3f})")
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
