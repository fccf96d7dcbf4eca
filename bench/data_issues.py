"""Data issues: Curate's near duplicates and outlier scores against cleanlab Datalab, on injected problems.

    .venv/bin/python bench/data_issues.py                               # every setting + 20k, 100k, 1M
    .venv/bin/python bench/data_issues.py --quick                       # no 1M step (a few minutes)
    .venv/bin/python bench/data_issues.py --scale-sizes 20000 --explore # + Curate variants, not defaults

  data      scikit-learn digits as 8x8 images and as a 64-column table, and make_classification
            (3,000 x 20, 5 classes); each split 80/20 train/test, stratified, seeded.
  injected  (seeded; fractions of the base set) exact copies within train (2%) and from train into
            test (2%); near copies within train (3%) and from train into test (3%): images get
            gaussian pixel noise, a 1-pixel shift or a 1-pixel crop resized back to 8x8, tables
            gaussian noise of 2% or 10% of each feature's sd; conflicting-label twins (2%, an exact
            or noisy copy in train with another label); outliers (4%, 80% in train): images are
            uniform noise, blank scans, inverted or rotated digits and random strokes, tables are
            rows with 3 features x20, rows with 3 features at +-10 sd, and rows of another
            distribution (shuffled marginals or a uniform box for digits, another make_classification
            or a wide gaussian for the classification set). Every copy has a source of its own.
  features  "embedding": the last hidden layer (64 relu units) of an MLPClassifier(128, 64) trained
            on the corrupted train split (standardised inputs), for every sample; "raw": the
            standardised features. Both tools get the same matrix.
  arms      Curate: app.scoring.neighbours.find_issues with its defaults (K and NEAR_FACTOR of
            that module, Euclidean, identical embeddings searched once), threads 2, content keys = a hash of each raw row (Curate hashes content at
            import); predicted pairs = every pair within a group; outlier score = .outlier.
            cleanlab Datalab: Datalab(data={"label": y}).find_issues(features=X,
            issue_types={"near_duplicate": {}, "outlier": {}}), defaults (k 10, threshold 0.13,
            cosine metric above 3 columns); predicted pairs = near_duplicate_sets;
            outlier score = 1 - outlier_score.
  metrics   duplicate-pair precision (a predicted pair is correct when it was injected; exact-equal
            rows already in the data are counted apart) and recall, recall per kind of copy,
            outlier AUROC and AUPRC (injected outliers positive), seconds; the leakage report lists
            every injected train/test pair and whether each tool joined it.
  scale     bench.nn_search's Gaussian mixture (128 dims, 1% planted near copies, 0.5% outliers) at
            --scale-sizes, each tool in a process of its own: seconds, peak RSS, planted-pair
            recall and precision, outlier AUROC. Datalab only up to --datalab-max samples.

Prints the tables and writes bench/results/data_issues.md.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                 "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib.metadata import PackageNotFoundError, version  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import commit, markdown_table, write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "data_issues.md"
THREADS = 2
FRACTIONS = {"exact-train": 0.02, "exact-cross": 0.02, "near-train": 0.03, "near-cross": 0.03, "conflict": 0.02,
             "outlier": 0.04}
IMAGE_NEAR = ("noise", "shift", "crop")
TABLE_NEAR = ("noise 2% sd", "noise 10% sd")
IMAGE_OUTLIERS = ("uniform noise", "blank scan", "inverted digit", "rotated digit", "random strokes")
DIGIT_TABLE_OUTLIERS = ("x20 features", "extreme values", "shuffled marginals", "uniform box")
CLASSIF_OUTLIERS = ("x20 features", "extreme values", "other dataset", "wide gaussian")


# --------------------------------------------------------------------------- data and injections


@dataclass
class Injected:
    name: str
    raw: np.ndarray  # (n, d) float64, as stored (pixels 0..16 for images)
    y: np.ndarray
    split: np.ndarray  # "train" / "test"
    pairs: list[tuple[int, int, str]]  # (source, copy, kind); kind names the injection
    is_outlier: np.ndarray
    outlier_kind: list[str]
    n_base: int
    notes: dict = field(default_factory=dict)


def _shift(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy, dx = [(0, 1), (0, -1), (1, 0), (-1, 0)][rng.integers(4)]
    out = np.zeros_like(img)
    src = img[max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def _crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import zoom

    a, b = rng.integers(0, 2, 2)
    return np.clip(zoom(img[a:a + 7, b:b + 7], 8 / 7, order=1)[:8, :8], 0, 16)


def _strokes(rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((8, 8))
    for _ in range(rng.integers(2, 4)):
        (r0, c0), (r1, c1) = rng.uniform(0, 7.99, (2, 2))
        t = np.linspace(0, 1, 24)
        img[(r0 + t * (r1 - r0)).astype(int), (c0 + t * (c1 - c0)).astype(int)] = 16
    return img


def near_copy(row: np.ndarray, kind: str, sd: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if kind == "noise":
        return np.clip(row + rng.normal(0, 1.0, row.shape), 0, 16)
    if kind == "shift":
        return _shift(row.reshape(8, 8), rng).ravel()
    if kind == "crop":
        return _crop(row.reshape(8, 8), rng).ravel()
    frac = {"noise 2% sd": 0.02, "noise 10% sd": 0.10}[kind]
    return row + rng.normal(0, 1, row.shape) * sd * frac


def outlier_row(kind: str, base: np.ndarray, rng: np.random.Generator, seed: int) -> np.ndarray:
    mean, sd = base.mean(axis=0), base.std(axis=0)
    row = base[rng.integers(len(base))].copy()
    if kind == "uniform noise":
        return rng.uniform(0, 16, 64)
    if kind == "blank scan":
        return rng.uniform(0, 2, 64)
    if kind == "inverted digit":
        return 16 - row
    if kind == "rotated digit":
        return np.rot90(row.reshape(8, 8), k=int(rng.choice([1, 3]))).ravel()
    if kind == "random strokes":
        return _strokes(rng).ravel()
    if kind == "x20 features":
        nonzero = np.flatnonzero(np.abs(row) > 1e-9)
        cols = rng.choice(nonzero if len(nonzero) >= 3 else len(row), 3, replace=False)
        row[cols] *= 20
        return row
    if kind == "extreme values":
        cols = rng.choice(np.flatnonzero(sd > 0), 3, replace=False)
        row[cols] = mean[cols] + rng.choice([-10, 10], 3) * sd[cols]
        return row
    if kind == "shuffled marginals":
        return base[rng.integers(len(base), size=base.shape[1]), np.arange(base.shape[1])]
    if kind == "uniform box":
        return rng.uniform(base.min(axis=0), base.max(axis=0))
    if kind == "other dataset":
        from sklearn.datasets import make_classification

        other, _ = make_classification(n_samples=1, n_features=base.shape[1], n_informative=10, n_redundant=4,
                                       n_classes=5, class_sep=1.5, random_state=int(rng.integers(10**6)) + 7919 * seed)
        return other[0] * sd + mean
    if kind == "wide gaussian":
        return mean + rng.normal(0, 1, base.shape[1]) * sd * 3
    raise ValueError(kind)


def build(name: str, seed: int) -> Injected:
    from sklearn.datasets import load_digits, make_classification
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    if name.startswith("digits"):
        d = load_digits()
        X, y = d.data.astype(np.float64), d.target.astype(np.int64)
    else:
        X, y = make_classification(n_samples=3000, n_features=20, n_informative=10, n_redundant=4, n_classes=5,
                                   class_sep=1.5, random_state=seed)
    image = name == "digits-image"
    near_kinds = IMAGE_NEAR if image else TABLE_NEAR
    outlier_kinds = IMAGE_OUTLIERS if image else DIGIT_TABLE_OUTLIERS if name == "digits-tabular" else CLASSIF_OUTLIERS
    n_base, classes = len(X), int(y.max()) + 1
    tr, te = train_test_split(np.arange(n_base), test_size=0.2, stratify=y, random_state=seed)
    split = np.empty(n_base, dtype=object)
    split[tr], split[te] = "train", "test"
    sd = X[tr].std(axis=0)
    counts = {k: max(1, round(f * n_base)) for k, f in FRACTIONS.items()}
    sources = iter(rng.choice(tr, size=sum(v for k, v in counts.items() if k != "outlier"), replace=False))
    rows, ys, splits, pairs, out_kind = [], [], [], [], []

    def add(row: np.ndarray, label: int, where: str) -> int:
        rows.append(row)
        ys.append(label)
        splits.append(where)
        return n_base + len(rows) - 1

    for kind, n in counts.items():
        for i in range(n):
            if kind == "outlier":
                ok = outlier_kinds[i % len(outlier_kinds)]
                add(outlier_row(ok, X[tr], rng, seed), int(rng.integers(classes)), "train" if rng.random() < 0.8 else "test")
                out_kind.append(ok)
                continue
            s = int(next(sources))
            where = "test" if kind.endswith("cross") else "train"
            if kind.startswith("exact") or (kind == "conflict" and i % 2 == 0):
                row, label = X[s].copy(), int(y[s])
                sub = "exact"
            else:
                sub = near_kinds[i % len(near_kinds)] if kind != "conflict" else near_kinds[0]
                row, label = near_copy(X[s], sub, sd, rng), int(y[s])
            if kind == "conflict":
                label = int((y[s] + rng.integers(1, classes)) % classes)
            c = add(row, label, where)
            pairs.append((s, c, f"{kind.split('-')[0] if kind != 'conflict' else 'conflict'}:{sub}"
                          + (" (train->test)" if where == "test" else "")))
    raw = np.vstack([X, np.asarray(rows)])
    y_all = np.concatenate([y, np.asarray(ys, dtype=np.int64)])
    split_all = np.concatenate([split, np.asarray(splits, dtype=object)])
    is_out = np.zeros(len(raw), dtype=bool)
    n_out = counts["outlier"]
    first_out = len(raw) - n_out
    is_out[first_out:] = True
    kinds = [""] * first_out + out_kind
    # Shuffle: position p holds original row perm[p]; sample ids are positions.
    perm = rng.permutation(len(raw))
    where = np.empty(len(raw), dtype=np.int64)
    where[perm] = np.arange(len(raw))
    return Injected(name=name, raw=raw[perm], y=y_all[perm], split=split_all[perm].astype(str),
                    pairs=[(int(where[a]), int(where[b]), k) for a, b, k in pairs], is_outlier=is_out[perm],
                    outlier_kind=[kinds[i] for i in perm], n_base=n_base, notes={"counts": counts})


def embeddings(data: Injected, seed: int) -> tuple[np.ndarray, float]:
    """Last hidden layer (64 relu units) of an MLP trained on the corrupted train split; train accuracy."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    train = data.split == "train"
    scaler = StandardScaler().fit(data.raw[train])
    Z = scaler.transform(data.raw)
    mlp = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(Z[train], data.y[train])
    h = Z
    for W, b in zip(mlp.coefs_[:-1], mlp.intercepts_[:-1]):
        h = np.maximum(h @ W + b, 0.0)
    test = ~train & ~data.is_outlier
    return h.astype(np.float32), float(mlp.score(Z[test], data.y[test]))


def raw_features(data: Injected) -> np.ndarray:
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit(data.raw[data.split == "train"]).transform(data.raw).astype(np.float32)


# --------------------------------------------------------------------------- arms


@dataclass
class Prediction:
    same: callable  # (i, j) -> bool: the pair is predicted
    n_pairs: int
    pairs_sample: set | None  # explicit pairs (Datalab) or None (Curate: groups)
    score: np.ndarray
    seconds: float
    info: dict = field(default_factory=dict)
    group: np.ndarray | None = None


def image_files(data: Injected, folder: Path) -> list[str]:
    """The 8x8 images as PNG files (0-16 scaled to 0-255), as an image import stores them."""
    from PIL import Image

    paths = []
    for i, row in enumerate(data.raw):
        path = folder / f"{i}.png"
        Image.fromarray(np.clip(row.reshape(8, 8) * 255 / 16, 0, 255).astype(np.uint8), mode="L").save(path)
        paths.append(str(path))
    return paths


def run_curate(X: np.ndarray, data: Injected, content_keys: bool = True, **kw) -> Prediction:
    """Curate as a train job runs it: neighbours in X, and for an image set the held-out images
    that are near copies of a train image in the pixels (app.scoring.image_copies)."""
    import tempfile

    from app.scoring import image_copies
    from app.scoring.neighbours import find_issues

    keys = [hashlib.blake2b(r.tobytes(), digest_size=16).hexdigest() for r in data.raw] if content_keys else None
    with tempfile.TemporaryDirectory() as tmp:
        paths = image_files(data, Path(tmp)) if data.name == "digits-image" else None
        started = time.perf_counter()
        extra, pixel_info = None, None
        if paths is not None:
            a, b, _, pixel_info = image_copies.held_out_copies(image_copies.thumbnails(paths), data.split, threads=THREADS)
            extra = (a, b)
        res = find_issues(X, np.arange(len(X)), data.split, content_keys=keys, threads=THREADS, extra_pairs=extra, **kw)
        seconds = time.perf_counter() - started
    if pixel_info is not None:
        res.info["image_copies"] = pixel_info
    return curate_prediction(res, seconds)


def curate_prediction(res, seconds: float) -> Prediction:
    group = res.group
    sizes = np.unique(group[group >= 0], return_counts=True)[1]
    n_pairs = int((sizes * (sizes - 1) // 2).sum())
    return Prediction(same=lambda i, j: group[i] >= 0 and group[i] == group[j], n_pairs=n_pairs, pairs_sample=None,
                      score=np.asarray(res.outlier, dtype=np.float64), seconds=seconds, info=res.info, group=group)


def run_datalab(X: np.ndarray, y: np.ndarray) -> Prediction:
    from cleanlab import Datalab

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab = Datalab(data={"label": y}, label_name="label", verbosity=0)
        lab.find_issues(features=X, issue_types={"near_duplicate": {}, "outlier": {}})
    seconds = time.perf_counter() - started
    sets = lab.get_issues("near_duplicate")["near_duplicate_sets"]
    pairs = {(min(i, int(j)), max(i, int(j))) for i, s in enumerate(sets) for j in s}
    score = 1.0 - lab.get_issues("outlier")["outlier_score"].to_numpy(dtype=np.float64)
    info = lab.get_info("near_duplicate")
    return Prediction(same=lambda i, j: (min(i, j), max(i, j)) in pairs, n_pairs=len(pairs), pairs_sample=pairs,
                      score=score, seconds=seconds,
                      info={"metric": str(info.get("metric")), "threshold": info.get("threshold"), "k": info.get("k")})


# --------------------------------------------------------------------------- metrics


def natural_exact_pairs(data: Injected) -> set[tuple[int, int]]:
    """Pairs of exact-equal raw rows that no injection made (copies present in the base data)."""
    injected = {(min(a, b), max(a, b)) for a, b, _ in data.pairs}
    by_key: dict[bytes, list[int]] = {}
    for i, r in enumerate(data.raw):
        by_key.setdefault(r.tobytes(), []).append(i)
    out = set()
    for members in by_key.values():
        for x in range(len(members)):
            for z in range(x + 1, len(members)):
                p = (members[x], members[z])
                if p not in injected:
                    out.add(p)
    return out


def score(pred: Prediction, data: Injected, natural: set) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    found = [pred.same(a, b) for a, b, _ in data.pairs]
    tp = sum(found)
    nat = sum(pred.same(a, b) for a, b in natural)
    by_kind: dict[str, list[bool]] = {}
    for (a, b, kind), f in zip(data.pairs, found):
        by_kind.setdefault(kind, []).append(f)
    cross = [(a, b, kind, f) for (a, b, kind), f in zip(data.pairs, found) if "train->test" in kind]
    s = np.nan_to_num(pred.score, nan=0.0, posinf=1e12)
    inlier = ~data.is_outlier
    kinds = np.asarray(data.outlier_kind)
    by_out = {}
    for k in sorted(set(data.outlier_kind) - {""}):
        sel = (kinds == k) | inlier
        by_out[k] = (int((kinds == k).sum()), float(roc_auc_score(kinds[sel] == k, s[sel])))
    return {
        "by_outlier_kind": by_out,
        "pairs": pred.n_pairs, "tp": tp, "natural": nat,
        "precision": tp / pred.n_pairs if pred.n_pairs else float("nan"),
        "recall": tp / len(data.pairs),
        "by_kind": {k: (sum(v), len(v)) for k, v in by_kind.items()},
        "auroc": float(roc_auc_score(data.is_outlier, s)), "auprc": float(average_precision_score(data.is_outlier, s)),
        "seconds": pred.seconds, "cross": cross, "info": pred.info,
    }


# --------------------------------------------------------------------------- scale (a process per step)


def scale_worker(tool: str, n: int, seed: int) -> dict:
    from bench.nn_search import make_data

    data = make_data(n, 128, seed=seed)
    X = data.X
    split = np.where(np.random.default_rng(seed).random(n) < 0.8, "train", "test")
    if tool == "curate":
        from app.scoring.neighbours import find_issues

        started = time.perf_counter()
        res = find_issues(X, np.arange(n), split, threads=THREADS)
        seconds = time.perf_counter() - started
        pred = curate_prediction(res, seconds)
        index = res.info.get("index")
    else:
        pred = run_datalab(X, np.zeros(n, dtype=np.int64))
        seconds, index = pred.seconds, f"sklearn brute, {pred.info['metric']}"
    from sklearn.metrics import roc_auc_score

    found = sum(pred.same(int(a), int(b)) for a, b in zip(data.sources, data.copies))
    return {"tool": tool, "n": n, "seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "recall": found / len(data.sources), "precision": found / pred.n_pairs if pred.n_pairs else float("nan"),
            "pairs": pred.n_pairs, "planted": len(data.sources),
            "auroc": float(roc_auc_score(data.is_outlier, np.nan_to_num(pred.score, posinf=1e12))), "index": index}


def run_scale(sizes: list[int], datalab_max: int, seed: int, timeout_min: float) -> list[dict]:
    rows = []
    for n in sizes:
        for tool in ("curate", "datalab"):
            if tool == "datalab" and n > datalab_max:
                rows.append({"tool": tool, "n": n, "note": f"not run: above --datalab-max {datalab_max:,} "
                             "(sklearn brute-force kNN, quadratic in n)"})
                continue
            cmd = [sys.executable, __file__, "--scale-worker", tool, "--n", str(n), "--seed", str(seed)]
            print(f"  scale {tool} n={n:,} ...", flush=True)
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_min * 60)
            except subprocess.TimeoutExpired:
                rows.append({"tool": tool, "n": n, "note": f"stopped after {timeout_min:g} min"})
                continue
            if done.returncode != 0:
                rows.append({"tool": tool, "n": n, "note": "failed: " + done.stderr.strip().splitlines()[-1][:200]})
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["load"] = os.getloadavg()[0]
            print(f"    {row['seconds']:.1f} s, {row['peak_mib']:.0f} MiB, dup recall {row['recall']:.4f}", flush=True)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- report


def f3(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def machine_line() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem = next((int(line.split()[1]) / 2**20 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores ({cpu}), {mem:.0f} GiB memory, "
            f"Python {platform.python_version()}")


def lib_versions() -> str:
    out = []
    for pkg in ("cleanlab", "faiss-cpu", "scikit-learn", "numpy", "scipy"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


EXPLORE = {
    "near_factor 0.13 (Datalab's factor, on Euclidean distances)": {"near_factor": 0.13},
    "near_factor 0.20": {"near_factor": 0.20}, "near_factor 0.30": {"near_factor": 0.30},
    "near_factor 0.50": {"near_factor": 0.50},
    "k 10 (one scale)": {"k": 10, "scales": (10,)}, "k 20 (one scale)": {"k": 20, "scales": (20,)},
    "k 30 (one scale)": {"k": 30, "scales": (30,)},
    "k 40 (scales 10 and 40)": {"k": 40, "scales": (10, 40)}, "k 50 (scales 10 and 50)": {"k": 50, "scales": (10, 50)},
    "cosine (rows L2-normalised)": {"_cosine": True},
    "k 10, near_factor 0.13 (the first defaults)": {"k": 10, "scales": (10,), "near_factor": 0.13},
}


def main() -> None:
    from app.scoring import image_copies, neighbours

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="digits-image,digits-tabular,make_classification")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale-sizes", default="20000,100000,1000000", help="comma-separated; empty for none")
    p.add_argument("--datalab-max", type=int, default=100_000, help="largest scale size Datalab runs at")
    p.add_argument("--quick", action="store_true", help="skip scale sizes above 100,000")
    p.add_argument("--explore", action="store_true", help="also run Curate with non-default settings (a section apart)")
    p.add_argument("--step-timeout-minutes", type=float, default=20.0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--scale-worker", choices=["curate", "datalab"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    logging.disable(logging.WARNING)
    if args.scale_worker:
        print(json.dumps(scale_worker(args.scale_worker, args.n, args.seed)))
        return

    started, load_start = time.monotonic(), os.getloadavg()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{machine_line()}; load {load_start[0]:.1f}", flush=True)
    results: dict[tuple[str, str], dict[str, dict]] = {}
    explore: dict[tuple[str, str], dict[str, dict]] = {}
    extras: dict[tuple[str, str], dict] = {}
    meta: dict[str, dict] = {}
    for name in [s for s in args.datasets.split(",") if s]:
        data = build(name, args.seed)
        natural = natural_exact_pairs(data)
        emb, acc = embeddings(data, args.seed)
        meta[name] = {"n": len(data.raw), "n_base": data.n_base, "pairs": len(data.pairs),
                      "outliers": int(data.is_outlier.sum()), "cross": sum("train->test" in k for *_, k in data.pairs),
                      "natural": len(natural), "mlp_test_acc": acc, "dim": data.raw.shape[1]}
        print(f"{name}: {len(data.raw)} samples, {len(data.pairs)} injected pairs, {int(data.is_outlier.sum())} outliers, "
              f"{len(natural)} natural exact pairs, MLP test accuracy {acc:.3f}", flush=True)
        for feats, X in (("embedding", emb), ("raw", raw_features(data))):
            res = {"Curate": score(run_curate(X, data), data, natural),
                   "Datalab": score(run_datalab(X, data.y), data, natural)}
            results[(name, feats)] = res
            med = float(res["Curate"]["info"].get("median_nn_distance") or 0.0)
            ratios: dict[str, list[float]] = {}
            for a, b, kind in data.pairs:
                ratios.setdefault(kind, []).append(float(np.linalg.norm(X[a] - X[b])) / med if med > 0 else float("nan"))
            extras[(name, feats)] = {"ratio": {k: float(np.median(v)) for k, v in ratios.items()}}
            for tool, r in res.items():
                print(f"  {feats:9} {tool:7} P {f3(r['precision'])} R {f3(r['recall'])} ({r['pairs']} pairs) "
                      f"AUROC {r['auroc']:.3f} AUPRC {r['auprc']:.3f} {r['seconds']:.2f} s", flush=True)
            if args.explore:
                ex = {}
                for label, kw in EXPLORE.items():
                    kw = dict(kw)
                    Xv = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12) if kw.pop("_cosine", False) else X
                    ex[label] = score(run_curate(Xv, data, **kw), data, natural)
                explore[(name, feats)] = ex

    sizes = [int(s) for s in args.scale_sizes.split(",") if s.strip()]
    if args.quick:
        sizes = [s for s in sizes if s <= 100_000]
    scale_rows = run_scale(sizes, args.datalab_max, args.seed, args.step_timeout_minutes) if sizes else []
    load_end = os.getloadavg()
    minutes = (time.monotonic() - started) / 60

    # ----- tables
    head = ["dataset", "features", "tool", "pairs predicted", "dup precision", "dup recall", "natural exact pairs joined",
            "outlier AUROC", "outlier AUPRC", "leak pairs found", "seconds"]
    rows, wins, total = [], {"precision": 0, "recall": 0, "auroc": 0, "auprc": 0}, 0
    below = []
    for (name, feats), res in results.items():
        c, d = res["Curate"], res["Datalab"]
        total += 1
        for m in wins:
            cv, dv = c[m], d[m]
            ok = (np.isnan(dv) and not np.isnan(cv)) or (not np.isnan(cv) and cv >= dv - 1e-9) or (np.isnan(cv) and np.isnan(dv))
            wins[m] += ok
            if not ok:
                below.append(f"{name} / {feats}: {m} {f3(cv)} vs Datalab {f3(dv)}")
        for tool, r in res.items():
            other = d if tool == "Curate" else c
            bold = {m: tool == "Curate" and not np.isnan(r[m]) and (np.isnan(other[m]) or r[m] >= other[m] - 1e-9)
                    for m in wins}
            cell = {m: (f"**{f3(r[m])}**" if bold[m] else f3(r[m])) for m in wins}
            rows.append([name, feats, tool, f"{r['pairs']:,}", cell["precision"], cell["recall"], r["natural"],
                         cell["auroc"], cell["auprc"], f"{sum(x[3] for x in r['cross'])}/{len(r['cross'])}",
                         f"{r['seconds']:.2f}"])
    main_table = markdown_table(head, rows)

    kinds = sorted({k for res in results.values() for k in res["Curate"]["by_kind"]})
    krows = []
    for (name, feats), res in results.items():
        for kind in kinds:
            if kind not in res["Curate"]["by_kind"]:
                continue
            c, n = res["Curate"]["by_kind"][kind]
            d, _ = res["Datalab"]["by_kind"][kind]
            krows.append([name, feats, kind, n, f"{extras[(name, feats)]['ratio'][kind]:.2f}", f"{c}/{n}", f"{d}/{n}"])
    kind_table = markdown_table(["dataset", "features", "injected copy", "pairs", "median distance / median NN distance",
                                 "Curate found", "Datalab found"], krows)
    orows = []
    for (name, feats), res in results.items():
        for kind, (n, c) in res["Curate"]["by_outlier_kind"].items():
            d = res["Datalab"]["by_outlier_kind"][kind][1]
            orows.append([name, feats, kind, n, f"**{c:.3f}**" if c >= d - 1e-9 else f"{c:.3f}", f"{d:.3f}"])
    out_table = markdown_table(["dataset", "features", "injected outlier", "n", "Curate AUROC", "Datalab AUROC"], orows)

    leak_lines = []
    for (name, feats), res in results.items():
        c, d = res["Curate"]["cross"], res["Datalab"]["cross"]
        missed = [f"{a}~{b} ({k.split(' (')[0]})" for a, b, k, f in c if not f]
        missed_d = [f"{a}~{b}" for a, b, k, f in d if not f]
        leak_lines.append(
            f"- **{name} / {feats}**: Curate {sum(x[3] for x in c)}/{len(c)} injected train/test pairs found, "
            f"Datalab {sum(x[3] for x in d)}/{len(d)}. "
            + (f"Curate missed: {', '.join(missed)}." if missed else "Curate missed none.")
            + (f" Datalab missed {len(missed_d)}." if missed_d else ""))
    pair_lines = []
    for name in meta:
        res = results.get((name, "embedding")) or next(v for (nm, _), v in results.items() if nm == name)
        found = {feats: {(a, b): f for a, b, _, f in results[(name, feats)]["Curate"]["cross"]}
                 for (nm, feats) in results if nm == name}
        items = []
        for a, b, k, _ in res["Curate"]["cross"]:
            marks = "/".join(("found" if found[f][(a, b)] else "missed") for f in found)
            items.append(f"{a}~{b} {k.split(' (')[0]} [{marks}]")
        pair_lines.append(f"- {name} (train id ~ test id, kind [{' / '.join(found)}]): " + "; ".join(items))

    shead = ["n", "tool", "seconds", "peak RSS MiB", "planted dup recall", "dup precision", "pairs predicted",
             "outlier AUROC", "index", "load", "note"]
    srows = [[f"{r['n']:,}", r["tool"], f"{r['seconds']:.1f}" if "seconds" in r else "",
              f"{r['peak_mib']:.0f}" if "peak_mib" in r else "", f"{r['recall']:.4f}" if "recall" in r else "",
              f"{r['precision']:.4f}" if "precision" in r else "", f"{r['pairs']:,}" if "pairs" in r else "",
              f"{r['auroc']:.4f}" if "auroc" in r else "", r.get("index", ""), f"{r['load']:.1f}" if "load" in r else "",
              r.get("note", "")] for r in scale_rows]

    cmd = " ".join([".venv/bin/python", "bench/data_issues.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    lines = [
        "# Data issues: near duplicates, leakage and outliers against cleanlab Datalab", "",
        f"`{cmd}` at commit {commit()}, {when}, {minutes:.1f} min in all.", "",
        f"Machine: {machine_line()}. Load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_start)} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in load_end)} at the end; other work shared the cores, so seconds carry that noise. "
        f"BLAS/OpenMP threads 2, Curate `threads=2`.", "",
        f"Libraries: {lib_versions()}. cleanlab (AGPL-3.0) is a benchmark-only comparator (the `bench` extra).", "",
        "## Settings", "",
        "- Data: scikit-learn digits as 8x8 images (`digits-image`) and as a 64-column table (`digits-tabular`): the "
        "same 1,797 digits with image-style or table-style injections; `make_classification` (3,000 x 20, 10 informative, "
        "4 redundant, 5 classes, class_sep 1.5). Each split 80/20 train/test, stratified, seed "
        f"{args.seed}.",
        "- Injected (fractions of the base set; every copy has a source of its own, drawn from train): exact copies "
        "within train 2% and from train into test 2%; near copies within train 3% and from train into test 3% "
        "(images: gaussian pixel noise sd 1 on the 0-16 scale, a 1-pixel shift, a 1-pixel crop resized back to 8x8; "
        "tables: gaussian noise of 2% or 10% of each feature's train sd); conflicting-label twins 2% (alternately an "
        "exact copy and a noisy copy in train with another label); outliers 4%, 80% of them in train (images: uniform "
        "noise, blank scans with faint noise, inverted digits, digits rotated 90 degrees, random strokes; digits table: "
        "3 nonzero features x20, 3 features at +-10 sd, rows drawn from shuffled marginals, rows uniform in the "
        "features' box; classification table: x20, +-10 sd, rows of another make_classification with another seed, a "
        "gaussian 3x as wide).",
        "- Sizes: " + "; ".join(f"{nm} {m['n']:,} samples ({m['n_base']:,} base), {m['pairs']} injected pairs "
                                 f"({m['cross']} train/test), {m['outliers']} outliers, {m['natural']} exact-equal pairs "
                                 f"already in the base data, MLP test accuracy {m['mlp_test_acc']:.3f}"
                                 for nm, m in meta.items()) + ".",
        "- Features: `embedding` = the last hidden layer (64 relu units) of scikit-learn's `MLPClassifier(hidden_layer_sizes="
        "(128, 64), max_iter=300)` trained on the corrupted train split (inputs standardised on train), computed for every "
        "sample from `coefs_`/`intercepts_`; `raw` = the features standardised on train. Both tools get the same float32 "
        "matrix, all splits together.",
        f"- Curate: `app.scoring.neighbours.find_issues` with its defaults (k {neighbours.K}, near_factor "
        f"{neighbours.NEAR_FACTOR} x the median nearest-neighbour distance, Euclidean, identical embeddings searched once, exact faiss search below 50,000 samples, IVF above), `threads=2`, and "
        "content keys = a hash of each raw row's bytes, as Curate passes the content hash it stores at import (exact "
        "copies are joined by key as well as by distance). Predicted pairs: every pair of samples in one group "
        "(groups are connected components). Outlier score: `.outlier`. On `digits-image` (both feature rows) Curate "
        "also runs what a train job runs for an image dataset: the digits are written as 8x8 PNG files and "
        "`app.scoring.image_copies.held_out_copies` (16x16 thumbnails, "
        f"{len(image_copies.transforms())} shifts and crops, Lowe's ratio {image_copies.RATIO}) joins each test image "
        "to the train image it copies (`extra_pairs` of `find_issues`); its seconds are included.",
        "- Datalab: `Datalab(data={'label': y}, label_name='label').find_issues(features=X, issue_types={'near_duplicate': "
        "{}, 'outlier': {}})`, defaults: k 10, near-duplicate threshold 0.13 x the median nearest-neighbour distance, "
        "metric chosen by cleanlab (cosine above 3 columns, so cosine here), scikit-learn brute-force neighbours. "
        "Predicted pairs: each sample with each member of its `near_duplicate_sets` (no transitive closure). Outlier "
        "score: 1 - `outlier_score`.",
        "- Metrics: duplicate precision = injected pairs predicted / pairs predicted (a pair of exact-equal rows already "
        "in the base data counts as wrong there, and is counted apart in `natural exact pairs joined`; other natural near "
        "duplicates cannot be told apart and count as wrong for both tools); recall = injected pairs predicted / injected "
        "pairs (conflicting twins included); outlier AUROC and AUPRC (scikit-learn) with the injected outliers as "
        "positives over all samples; seconds = the tool's call alone (Datalab: constructor + find_issues). "
        "Bold: Curate at or above Datalab.", "",
        "## Results", "",
        f"Curate at or above Datalab in {total} settings: duplicate precision {wins['precision']}/{total}, "
        f"recall {wins['recall']}/{total}, outlier AUROC {wins['auroc']}/{total}, AUPRC {wins['auprc']}/{total}."
        + (" Below: " + "; ".join(below) + "." if below else ""), "",
        main_table, "",
        "### Recall per kind of injected copy", "", kind_table, "",
        "The distance column: the median, over the kind's injected pairs, of the pair's Euclidean distance in the "
        f"features given, divided by Curate's median nearest-neighbour distance (Curate joins a pair at or below "
        f"{neighbours.NEAR_FACTOR}).", "",
        "### Outlier AUROC per kind of injected outlier", "",
        "Each kind against all non-injected samples.", "", out_table, "",
        "### Leakage report", "",
        "Every injected train/test pair (exact and near copies of a train sample placed in test): found = both samples in "
        "one Curate group, which then has members in train and test.", "",
        *leak_lines, "", "Every injected train/test pair, by sample id:", "", *pair_lines, "",
    ]
    if explore:
        lines += ["## Exploration: Curate with non-default settings (not the defaults above)", "",
                  "Same data and features; only the named argument of `find_issues` differs from the default "
                  "(cosine: rows divided by their L2 norm before the call).", ""]
        ehead = ["dataset", "features", "Curate variant", "dup precision", "dup recall", "outlier AUROC", "outlier AUPRC",
                 "leak found"]
        erows = []
        for key, ex in explore.items():
            base = results[key]
            for label, r in [("default", base["Curate"]), *ex.items(), ("Datalab default", base["Datalab"])]:
                erows.append([*key, label, f3(r["precision"]), f3(r["recall"]), f3(r["auroc"]), f3(r["auprc"]),
                              f"{sum(x[3] for x in r['cross'])}/{len(r['cross'])}"])
        lines += [markdown_table(ehead, erows), ""]
    if scale_rows:
        lines += ["## Scale", "",
                  "bench.nn_search's data: a Gaussian mixture of 50 uneven clusters in 128 float32 dimensions, 1% planted "
                  "near copies (2% of the cluster's width), 0.5% outliers, 80/20 train/test at random; embeddings only, no "
                  "content keys. Each tool in a process of its own (peak RSS = that process's maxrss, the data set "
                  "included); seconds = the tool's call alone. Datalab runs only up to "
                  f"{args.datalab_max:,} samples: its neighbours are scikit-learn brute force, quadratic in n.", "",
                  markdown_table(shead, srows), ""]
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
