"""Training, scoring and label-error benchmarks: `.venv/bin/python bench/training.py`.

Side by side, in one temporary SQLite database and blob store:
  (a) the same tabular and image training through run_train_job and as a plain fastai script;
  (b) scoring N samples through Curate's scoring path and with plain learn.get_preds;
  (c) the demo (scikit-learn digits as 8x8 PNGs, 10% of train labels flipped): how well the
      loss ranks the flipped labels, out-of-fold and in-sample, and how long the runs take;
  (d) on CUDA, training and scoring throughput with bf16 on and off;
  (e) data-parallel training (devices 2 on gloo vs one process), NaN recovery overhead and the
      batch-size finder's time (bench/training_parallel.py);
  (f) torch.compile on and off (bench/training_compile.py).
Prints a table and writes bench/results/training.md; a run of sections (e) and (f) alone
replaces those sections of the existing report and keeps the rest.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from app.config import Settings  # noqa: E402
from app.datasets.storage import BlobStore  # noqa: E402
from app.db import get_engine  # noqa: E402
from app.jobs.context import LocalJobContext  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models import Dataset, Prediction, Run, Sample  # noqa: E402
from bench.training_compile import HEAD as COMPILE_HEAD, report_lines as compile_lines, section_compile  # noqa: E402
from bench.training_parallel import report_lines, section_parallel, splice  # noqa: E402

DEMO_SPLITS = {"train": 1000, "valid": 300, "test": 197, "unlabelled": 300}
FLIP_FRACTION = 0.10


# --- data -------------------------------------------------------------------------------


@dataclass
class Demo:
    dataset_id: int
    flipped: set[int]  # sample ids whose train label was flipped
    images: np.ndarray  # (n, 8, 8) uint8, in sample order
    labels: np.ndarray  # the stored label index (-1 unlabelled), in sample order
    splits: list[str]
    sample_ids: list[int]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def build_demo(engine, settings: Settings, seed: int = 0, name: str = "digits-demo") -> Demo:
    """The demo's shape (app/datasets/demo.py): digits as 8x8 PNGs, train 1,000 (10% flipped), valid 300, test 197, unlabelled 300."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    target = digits.target
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(target))
    classes = [str(i) for i in range(10)]
    store = BlobStore(settings.blob_dir)
    splits: list[str] = []
    for split, n in DEMO_SPLITS.items():
        splits += [split] * n
    n_train = DEMO_SPLITS["train"]
    flip_at = set(rng.choice(n_train, size=int(n_train * FLIP_FRACTION), replace=False).tolist())
    labels = []
    with Session(engine, expire_on_commit=False) as db:
        ds = Dataset(name=name, task="image", classes=classes, settings={}, label_version=1)
        db.add(ds)
        db.flush()
        samples = []
        for pos, idx in enumerate(order):
            split = splits[pos]
            y = int(target[idx])
            if pos in flip_at:
                y = int((y + rng.integers(1, 10)) % 10)  # another class, uniformly
            label = None if split == "unlabelled" else classes[y]
            labels.append(-1 if label is None else y)
            samples.append(
                Sample(
                    dataset_id=ds.id,
                    external_id=f"digit-{idx}",
                    split=split,
                    image_blob=store.put(_png(images[idx])),
                    image_path=f"{idx}.png",
                    label=label,
                    original_label=label,
                )
            )
        db.add_all(samples)
        db.commit()
        flipped = {samples[pos].id for pos in flip_at}
        return Demo(ds.id, flipped, images[order], np.array(labels), splits, [s.id for s in samples])


def build_tabular(engine, n: int = 6000, seed: int = 0, name: str = "bench-tabular") -> int:
    """A synthetic tabular dataset: 5 classes, 20 features (3 of them small integer codes)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n, n_features=20, n_informative=10, n_classes=5, n_clusters_per_class=2, random_state=seed
    )
    X[:, :3] = np.clip(np.round(X[:, :3] * 2 + 4), 0, 8)
    rng = np.random.default_rng(seed)
    split = rng.choice(["train", "valid", "test"], size=n, p=[0.7, 0.15, 0.15])
    classes = [f"c{i}" for i in range(5)]
    with Session(engine, expire_on_commit=False) as db:
        ds = Dataset(name=name, task="tabular", classes=classes, settings={}, label_version=1)
        db.add(ds)
        db.flush()
        db.add_all(
            Sample(
                dataset_id=ds.id,
                external_id=f"r{i}",
                split=str(split[i]),
                features={f"x{j}": float(X[i, j]) for j in range(X.shape[1])},
                label=classes[y[i]],
                original_label=classes[y[i]],
            )
            for i in range(n)
        )
        db.commit()
        return ds.id


# --- runs -------------------------------------------------------------------------------


class EchoContext(LocalJobContext):
    """A LocalJobContext that also prints the job log, with the time since the start."""

    echo: bool = False
    started: float = 0.0

    def log(self, message: str, level: str = "info") -> None:
        super().log(message, level)
        if self.echo:
            print(f"    [{time.perf_counter() - self.started:6.0f}s] {message}", flush=True)


def train_job(engine, settings, dataset_id: int, params: dict, echo: bool = False) -> tuple[dict, float, LocalJobContext]:
    """run_train_job through a LocalJobContext; returns (result, wall seconds, ctx)."""
    from app.jobs.registry import run_job

    ctx = EchoContext(engine=engine, settings=settings, params=params, dataset_id=dataset_id)
    ctx.echo, ctx.started = echo, time.perf_counter()
    t = time.perf_counter()
    cpu = time.process_time()
    result = run_job(ctx, "train")
    ctx.cpu_seconds = time.process_time() - cpu
    return result, time.perf_counter() - t, ctx


def plain_fastai_script(engine, settings, dataset_id: int, params: dict) -> tuple[float, float]:
    """The same training written directly against fastai, without any of Curate's modules;
    returns (wall seconds, CPU seconds)."""
    from fastai.callback.progress import ProgressCallback
    from fastai.data.block import CategoryBlock, ColReader, ColSplitter, DataBlock
    from fastai.data.transforms import Normalize
    from fastai.metrics import accuracy
    from fastai.tabular.all import Categorify, FillMissing, TabularPandas, tabular_learner
    from fastai.tabular.all import Normalize as TabNormalize
    from fastai.torch_core import set_seed
    from fastai.vision.all import ImageBlock, Resize, ResizeMethod, aug_transforms, imagenet_stats, resnet18, vision_learner

    t, cpu = time.perf_counter(), time.process_time()
    with Session(engine) as db:
        ds = db.get(Dataset, dataset_id)
        rows = db.execute(
            select(Sample.id, Sample.split, Sample.label, Sample.features, Sample.image_blob).where(Sample.dataset_id == dataset_id)
        ).all()
        task, classes = ds.task, list(ds.classes)
    set_seed(params.get("seed", 0), reproducible=True)
    labelled = [r for r in rows if r.split in ("train", "valid") and r.label is not None]
    if task == "image":
        store = BlobStore(settings.blob_dir)
        df = pd.DataFrame(
            {"path": [str(store.path(r.image_blob)) for r in labelled], "label": [r.label for r in labelled], "is_valid": [r.split == "valid" for r in labelled]}
        )
        block = DataBlock(
            blocks=(ImageBlock, CategoryBlock(vocab=classes, sort=False)),
            get_x=ColReader("path"),
            get_y=ColReader("label"),
            splitter=ColSplitter("is_valid"),
            item_tfms=Resize(32, method=ResizeMethod.Squish),
            batch_tfms=[*aug_transforms(do_flip=False, max_rotate=10.0, max_zoom=1.1, max_warp=0.0, max_lighting=0.2), Normalize.from_stats(*imagenet_stats)],
        )
        dls = block.dataloaders(df.sort_values("is_valid", kind="stable"), bs=64, num_workers=0)
        learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
        test = pd.DataFrame({"path": [str(store.path(r.image_blob)) for r in rows]})
    else:
        feats = pd.DataFrame.from_records([r.features for r in labelled])
        cats = [c for c in feats.columns if c in ("x0", "x1", "x2")]
        conts = [c for c in feats.columns if c not in cats]
        for c in cats:
            feats[c] = feats[c].map(lambda v: str(int(v)))
        feats["label"] = [r.label for r in labelled]
        is_valid = np.array([r.split == "valid" for r in labelled])
        feats = pd.concat([feats[~is_valid], feats[is_valid]], ignore_index=True)
        n_train = int((~is_valid).sum())
        to = TabularPandas(
            feats, procs=[Categorify, FillMissing, TabNormalize], cat_names=cats, cont_names=conts, y_names="label",
            y_block=CategoryBlock(vocab=classes, sort=False), splits=(list(range(n_train)), list(range(n_train, len(feats)))),
        )
        dls = to.dataloaders(bs=64, val_bs=128)
        learn = tabular_learner(dls, layers=[200, 100], metrics=accuracy)
        test = pd.DataFrame.from_records([r.features for r in rows])
        for c in cats:
            test[c] = test[c].map(lambda v: str(int(v)))
    learn.remove_cb(ProgressCallback)
    learn.logger = lambda *a: None
    learn.fit_one_cycle(params["epochs"], params["lr"])
    learn.get_preds(dl=learn.dls.test_dl(test, bs=128))
    return time.perf_counter() - t, time.process_time() - cpu


def ranking_quality(engine, run_id: int, flipped: set[int]) -> dict:
    """AUROC and precision at k (k = number of flipped labels) of the train ranking by loss."""
    from sklearn.metrics import roc_auc_score

    with Session(engine) as db:
        rows = db.execute(
            select(Prediction.sample_id, Prediction.loss)
            .join(Sample, Sample.id == Prediction.sample_id)
            .where(Prediction.run_id == run_id, Sample.split == "train", Prediction.loss.is_not(None))
        ).all()
    ids = np.array([r.sample_id for r in rows])
    loss = np.array([r.loss for r in rows])
    is_flipped = np.isin(ids, list(flipped))
    k = int(is_flipped.sum())
    top = np.argsort(-loss, kind="stable")[:k]
    return {"auroc": float(roc_auc_score(is_flipped, loss)), "precision_at_k": float(is_flipped[top].mean()), "k": k}


# --- sections ---------------------------------------------------------------------------


def section_overhead(engine, settings, demo: Demo, tabular_id: int, repeats: int) -> list[dict]:
    """(a) run_train_job against the plain fastai script, same recipe (in-sample, fixed lr).

    On a shared machine wall times swing by 2x from one run to the next, so the overhead is
    taken on CPU time (one torch thread: CPU time is the work done), best of the repeats.
    """
    out = []
    for task, ds_id, params in (
        ("tabular", tabular_id, {"epochs": 5, "lr": 3e-3, "scoring": "in_sample", "seed": 0}),
        ("image", demo.dataset_id, {"epochs": 8, "lr": 2e-3, "scoring": "in_sample", "seed": 0}),
    ):
        job, plain, writing = [], [], []
        for _ in range(repeats):
            # Alternate, so a busy spell on the machine hits both sides alike.
            plain.append(plain_fastai_script(engine, settings, ds_id, params))
            result, seconds, ctx = train_job(engine, settings, ds_id, params)
            job.append((seconds, ctx.cpu_seconds))
            with Session(engine) as db:
                writing.append(db.get(Run, result["run_id"]).info["timings"]["writing"])
        row = {
            "task": task, "params": params,
            "job_s": min(j[0] for j in job), "plain_s": min(p[0] for p in plain),
            "job_cpu": min(j[1] for j in job), "plain_cpu": min(p[1] for p in plain),
            "writing_s": min(writing),
        }
        row["overhead_pct"] = 100 * (row["job_cpu"] - row["plain_cpu"]) / row["plain_cpu"]
        row["overhead_wall_pct"] = 100 * (row["job_s"] - row["plain_s"]) / row["plain_s"]
        row["overhead_no_insert_pct"] = 100 * (row["job_cpu"] - row["writing_s"] - row["plain_cpu"]) / row["plain_cpu"]
        out.append(row)
        print(
            f"(a) {task}: run_train_job {row['job_cpu']:.1f}s CPU ({row['job_s']:.1f}s wall), plain fastai "
            f"{row['plain_cpu']:.1f}s CPU ({row['plain_s']:.1f}s wall): overhead {row['overhead_pct']:+.1f}% CPU, "
            f"{row['overhead_no_insert_pct']:+.1f}% without the prediction insert ({row['writing_s']:.2f}s)",
            flush=True,
        )
    return out


def section_scoring(engine, settings, demo: Demo, tabular_id: int, repeats: int) -> list[dict]:
    """(b) scoring every sample: Curate's path (test_dl, get_preds, scores, rows, insert) vs get_preds."""
    from fastai.torch_core import set_seed

    from app.scoring.scores import score
    from app.training.data import load_training_data
    from app.training.jobs import write_predictions
    from app.training.adapters import adapter_for
    from app.training.environment import resolve_environment
    from app.training.learners import build_learner, predict_probs
    from app.training.recipe import resolve_recipe

    out = []
    for task, ds_id, params in (("tabular", tabular_id, {"epochs": 1, "lr": 3e-3}), ("image", demo.dataset_id, {"epochs": 1, "lr": 2e-3})):
        data = load_training_data(engine, ds_id, settings)
        recipe = resolve_recipe(params, data.task)
        adapter = adapter_for(data.task, recipe, resolve_environment(recipe), data.classes, data.cat_names, data.cont_names)
        set_seed(0)
        with tempfile.TemporaryDirectory() as workdir:
            learn = build_learner(adapter, adapter.dataloaders(data.train, data.valid), False, [], workdir)
            items = data.items
            with Session(engine) as db:
                run = Run(dataset_id=ds_id, status="running", params={}, label_version=0, history=[], info={})
                db.add(run)
                db.commit()
                run_id = run.id
            plain, curate, curate_db = [], [], []
            clock = time.process_time  # CPU time: steady on a shared machine
            for _ in range(max(repeats, 3)):
                t = clock()
                dl = learn.dls.test_dl(adapter._prepare(items).drop(columns=["label"]) if task == "tabular" else items, bs=max(recipe.batch_size * 2, 64))
                learn.get_preds(dl=dl)
                plain.append(clock() - t)

                t = clock()
                P = predict_probs(adapter, learn, items)
                rows = score(P, items["y"].to_numpy(), data.classes).rows()
                curate.append(clock() - t)
                sample_ids = items["sample_id"].tolist()
                for i, row in enumerate(rows):
                    row.update(run_id=run_id, sample_id=sample_ids[i], out_of_fold=False, fold=None)
                write_predictions(engine, rows)
                curate_db.append(clock() - t)
                with Session(engine) as db:
                    db.execute(Prediction.__table__.delete().where(Prediction.run_id == run_id))
                    db.commit()
        n = len(items)
        row = {"task": task, "n": n, "plain_s": min(plain), "curate_s": min(curate), "curate_db_s": min(curate_db)}
        row["ratio"] = row["curate_s"] / row["plain_s"]
        row["ratio_db"] = row["curate_db_s"] / row["plain_s"]
        out.append(row)
        print(
            f"(b) {task}: {n} samples, get_preds {row['plain_s']:.2f}s, Curate scores {row['curate_s']:.2f}s "
            f"({row['ratio']:.2f}x), with the database insert {row['curate_db_s']:.2f}s ({row['ratio_db']:.2f}x)",
            flush=True,
        )
    return out


def section_demo(engine, settings, demo: Demo) -> list[dict]:
    """(c) the demo with the default recipe: out-of-fold and in-sample rankings by loss."""
    out = []
    for scoring in ("out_of_fold", "in_sample"):
        result, seconds, ctx = train_job(engine, settings, demo.dataset_id, {"scoring": scoring}, echo=True)
        quality = ranking_quality(engine, result["run_id"], demo.flipped)
        with Session(engine) as db:
            info = db.get(Run, result["run_id"]).info
        row = {"scoring": scoring, "seconds": seconds, "cpu_seconds": ctx.cpu_seconds, **quality, "valid_accuracy": result["valid_accuracy"],
               "test_accuracy": result["test_accuracy"], "lr": info.get("lr"), "timings": info.get("timings")}
        out.append(row)
        print(
            f"(c) demo {scoring}: {seconds:.0f}s wall, {ctx.cpu_seconds:.0f}s CPU, AUROC {row['auroc']:.3f}, precision@{row['k']} {row['precision_at_k']:.3f}, "
            f"valid acc {row['valid_accuracy']:.3f}, test acc {row['test_accuracy']:.3f}",
            flush=True,
        )
    return out


def section_precision(engine, settings, demo: Demo) -> list[dict] | str:
    """(d) CUDA only: throughput of training and scoring with bf16 mixed precision on and off."""
    import torch

    if not torch.cuda.is_available():
        return "skipped: no CUDA device on this machine"
    out = []
    n_train = DEMO_SPLITS["train"]
    for precision in ("fp32", "bf16"):
        params = {"scoring": "in_sample", "epochs": 8, "lr": 2e-3, "precision": precision}
        result, seconds, _ = train_job(engine, settings, demo.dataset_id, params)
        with Session(engine) as db:
            info = db.get(Run, result["run_id"]).info
        t = info["timings"]
        out.append({
            "precision": info["environment"]["precision"],
            "train_samples_per_s": n_train * 8 / t["final"],
            "score_samples_per_s": len(demo.sample_ids) / max(t["scoring"], 1e-9),
            "seconds": seconds,
        })
        print(f"(d) {precision}: {out[-1]}", flush=True)
    return out


# --- report -----------------------------------------------------------------------------


def report(results: dict, path: Path) -> str:
    import torch

    lines = ["# Training benchmark", ""]
    lines.append(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s), CUDA: {'yes' if torch.cuda.is_available() else 'no'}. "
        f"Load average at start {results['load'][0]}, at end {results['load'][1]} (a shared machine: times are noisy)."
    )
    lines += ["", "Command: `.venv/bin/python bench/training.py " + " ".join(sys.argv[1:]) + "`", ""]
    if "overhead" in results:
        lines += ["## (a) run_train_job vs a plain fastai script", "",
                  "Same data, same recipe (in-sample scoring, fixed lr, no lr_find), one torch thread; best of the repeats. "
                  "Overhead on CPU time (wall times on a shared machine swing too much to compare). "
                  "The job also reads the samples through the ORM, writes the run, its history, the artifact and a "
                  "Prediction per sample; the last column leaves out the prediction insert. Target: < 10% overhead.", "",
                  "| task | params | run_train_job CPU s (wall) | plain fastai CPU s (wall) | overhead CPU (wall) | without the insert |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in results["overhead"]:
            lines.append(
                f"| {r['task']} | `{r['params']}` | {r['job_cpu']:.1f} ({r['job_s']:.1f}) | {r['plain_cpu']:.1f} ({r['plain_s']:.1f}) | "
                f"{r['overhead_pct']:+.1f}% ({r['overhead_wall_pct']:+.1f}%) | {r['overhead_no_insert_pct']:+.1f}% |"
            )
        lines.append("")
    if "scoring" in results:
        lines += ["## (b) scoring N samples", "",
                  "Curate's path: test_dl + get_preds + every score + Prediction rows; then also the batched insert. "
                  "CPU seconds, best of the repeats. Target: within 1.2x of plain `learn.get_preds`.", "",
                  "| task | N | get_preds (s) | Curate scores (s) | ratio | with insert (s) | ratio |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in results["scoring"]:
            lines.append(f"| {r['task']} | {r['n']} | {r['plain_s']:.2f} | {r['curate_s']:.2f} | {r['ratio']:.2f}x | {r['curate_db_s']:.2f} | {r['ratio_db']:.2f}x |")
        lines.append("")
    if "demo" in results:
        lines += ["## (c) demo: finding the flipped labels", "",
                  f"Digits as 8x8 PNGs: train {DEMO_SPLITS['train']} ({int(FLIP_FRACTION * 100)}% of the labels flipped), "
                  f"valid {DEMO_SPLITS['valid']}, test {DEMO_SPLITS['test']}, unlabelled {DEMO_SPLITS['unlabelled']}; "
                  "the default recipe. Train samples ranked by loss; k = number of flipped labels.", "",
                  "| scoring | wall time (s) | CPU time (s) | AUROC | precision@k | valid acc | test acc | lr (lr_find) | timings (s) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in results["demo"]:
            t = r["timings"] or {}
            tim = ", ".join(f"{k} {sum(v) if isinstance(v, list) else v:.0f}" for k, v in t.items())
            lines.append(f"| {r['scoring']} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['auroc']:.3f} | {r['precision_at_k']:.3f} (k={r['k']}) | "
                         f"{r['valid_accuracy']:.3f} | {r['test_accuracy']:.3f} | {r['lr']:.2e} | {tim} |")
        lines.append("")
    if "precision" in results:
        lines += ["## (d) bf16 mixed precision (CUDA)", ""]
        if isinstance(results["precision"], str):
            lines.append(results["precision"])
        else:
            lines += ["| precision | train samples/s | score samples/s |", "| --- | --- | --- |"]
            for r in results["precision"]:
                lines.append(f"| {r['precision']} | {r['train_samples_per_s']:.0f} | {r['score_samples_per_s']:.0f} |")
        lines.append("")
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="overhead,scoring,demo,precision,parallel,compile")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the idle cores at the start)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "training.md"))
    args = parser.parse_args()
    import torch

    from app.training.environment import configure_threads

    # One thread count for every run, so the job and the plain script compare like for like.
    os.environ["CURATE_TORCH_THREADS"] = str(configure_threads(args.threads or Settings(_env_file=None).torch_threads))
    sections = set(args.sections.split(","))
    results: dict = {"load": [round(os.getloadavg()[0], 1), None]}
    with tempfile.TemporaryDirectory(prefix="curate-bench-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        engine = get_engine(url)
        settings = Settings(database_url=url, data_dir=Path(tmp) / "data", _env_file=None)
        demo = build_demo(engine, settings)
        tabular_id = build_tabular(engine) if sections & {"overhead", "scoring", "parallel", "compile"} else None
        print(f"torch threads: {torch.get_num_threads()}", flush=True)
        if "demo" in sections:
            results["demo"] = section_demo(engine, settings, demo)
        if "overhead" in sections:
            results["overhead"] = section_overhead(engine, settings, demo, tabular_id, args.repeats)
        if "scoring" in sections:
            results["scoring"] = section_scoring(engine, settings, demo, tabular_id, args.repeats)
        if "precision" in sections:
            results["precision"] = section_precision(engine, settings, demo)
            if isinstance(results["precision"], str):
                print(f"(d) {results['precision']}")
        if "parallel" in sections:
            results["parallel"] = section_parallel(engine, settings, demo.dataset_id, tabular_id, args.repeats)
        if "compile" in sections:
            results["compile"] = section_compile(engine, settings, demo.dataset_id, tabular_id, args.repeats)
        engine.dispose()
    results["load"][1] = round(os.getloadavg()[0], 1)
    print()
    out = Path(args.out)
    if sections <= {"parallel", "compile"} and out.exists():  # keep the other sections' last results
        text = out.read_text()
    else:
        text = report(results, out)
    if "parallel" in results:
        text = splice(text, report_lines(results["parallel"], os.cpu_count() or 1, results["load"]))
    if "compile" in results:
        text = splice(text, compile_lines(results["compile"], results["load"]), COMPILE_HEAD)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
