"""Nearest-neighbour libraries for near duplicates and outlier scores, measured side by side.

    .venv/bin/python bench/nn_search.py --sizes 10000,100000,1000000 --dim 128 --k 10 --threads 2
    .venv/bin/python bench/nn_search.py --quick          # 10,000 samples only, a minute or two

Curate needs, for every sample of a dataset, its k nearest neighbours among the dataset's other
samples (float32 embeddings, at most 128 dimensions after PCA, up to 1,000,000 samples): the 1st
neighbour finds near duplicates, the k-th neighbour's distance scores outliers.

  data     a Gaussian mixture of 50 clusters of uneven size and width in --dim dimensions, on a
           decaying per-dimension scale (variance ~ 1/(1+j), the shape of PCA output), plus 1%
           planted near duplicates (a copy of a random sample with noise of 2% of its cluster's
           width) and 0.5% outliers (1.5 to 3 radii of a cluster from its centre and at least 1.5
           radii from every centre: outside every cluster, near enough that the clusters' uneven
           widths keep the exact score's AUROC below 1), shuffled. float32.
  truth    exact neighbours of 2,000 random query points by brute force in float64 numpy.
  arms     scikit-learn NearestNeighbors(algorithm="brute") (exact), faiss IndexFlatL2 (exact),
           faiss IndexHNSWFlat, faiss IndexIVFFlat, usearch (HNSW), hnswlib (HNSW), pynndescent
           (NN-descent); the three HNSW arms share M, efConstruction and efSearch. An arm whose
           library is not installed is left out.
  measure  per arm and size, each in a process of its own with BLAS/OpenMP/numba threads limited
           to --threads: index build time, all-points query time (every point queries the index
           that holds it for k+1 neighbours; the point itself is dropped, or the (k+1)-th when the
           point is missing), peak RSS (VmHWM, the data set included), recall@k against the exact
           neighbours, planted-duplicate recall (the copy is its source's 1st neighbour) and the
           outlier AUROC of the k-th neighbour's distance.

An arm is skipped at a size when extrapolating its time at the previous size (quadratically for
the exact arms, n log n for the others) predicts clearly more than --max-minutes (over twice
it: the prediction is rough, and the machine's load moves it). Prints the table and
writes bench/results/nn_search.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import commit, markdown_table, write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "nn_search.md"
OUTLIER_RADII = (1.5, 3.0)  # outliers lie this many of a cluster's radii from its centre, and >= the first from every centre
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")


# --------------------------------------------------------------------------- data and ground truth


@dataclass
class Synthetic:
    X: np.ndarray  # (n, dim) float32
    sources: np.ndarray  # rows that were copied
    copies: np.ndarray  # copies[i] is the near duplicate of sources[i]
    is_outlier: np.ndarray  # (n,) bool


def make_data(n: int, dim: int, seed: int = 0, clusters: int = 50, dup_frac: float = 0.01,
              outlier_frac: float = 0.005) -> Synthetic:
    rng = np.random.default_rng(seed)
    n_dup = max(1, round(n * dup_frac))
    n_out = max(1, round(n * outlier_frac))
    n_base = n - n_dup - n_out
    scale = (1.0 + np.arange(dim, dtype=np.float32)) ** -0.5  # PCA-like decaying spread
    radius_unit = float(np.linalg.norm(scale))
    centres = (rng.standard_normal((clusters, dim), dtype=np.float32) * scale * 2.0).astype(np.float32)
    width = rng.uniform(0.5, 1.5, clusters).astype(np.float32)
    label = rng.choice(clusters, size=n_base, p=rng.dirichlet(np.full(clusters, 2.0)))

    X = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n_base, 65536):  # float32 throughout: no 1 GiB float64 temporary at 1M
        stop = min(start + 65536, n_base)
        lab = label[start:stop]
        X[start:stop] = centres[lab] + rng.standard_normal((stop - start, dim), dtype=np.float32) * scale * width[lab, None]

    sources = rng.choice(n_base, size=n_dup, replace=False)
    noise = rng.standard_normal((n_dup, dim), dtype=np.float32) * scale * (0.02 * width[label[sources], None])
    X[n_base:n_base + n_dup] = X[sources] + noise

    # Outliers: far from every cluster (in units of that cluster's radius), resampled until they are.
    out = np.empty((0, dim), dtype=np.float32)
    while len(out) < n_out:
        near = rng.integers(0, clusters, 2 * n_out)
        far = rng.uniform(OUTLIER_RADII[0], OUTLIER_RADII[1], 2 * n_out).astype(np.float32)
        cand = centres[near] + rng.standard_normal((2 * n_out, dim), dtype=np.float32) * scale * (far * width[near])[:, None]
        d = np.sqrt(((cand[:, None, :] - centres[None]) ** 2).sum(-1)) / (width * radius_unit)
        out = np.concatenate([out, cand[d.min(axis=1) >= OUTLIER_RADII[0]]])
    X[n_base + n_dup:] = out[:n_out]

    perm = rng.permutation(n)  # position p holds original row perm[p]
    where = np.empty(n, dtype=np.int64)
    where[perm] = np.arange(n)
    is_outlier = np.zeros(n, dtype=bool)
    is_outlier[where[n_base + n_dup:]] = True
    return Synthetic(X=X[perm], sources=where[sources], copies=where[n_base:n_base + n_dup], is_outlier=is_outlier)


def exact_neighbours(X: np.ndarray, queries: np.ndarray, k: int, block: int = 32768) -> np.ndarray:
    """The k nearest other rows of X for each row in `queries` (indices), by brute force in float64."""
    Q = X[queries].astype(np.float64)
    qn = (Q * Q).sum(axis=1)
    best_d = np.full((len(queries), k), np.inf)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    rows = np.arange(len(queries))
    for start in range(0, len(X), block):
        B = X[start:start + block].astype(np.float64)
        d = qn[:, None] - 2.0 * (Q @ B.T) + (B * B).sum(axis=1)[None, :]
        mine = (queries >= start) & (queries < start + len(B))
        d[rows[mine], queries[mine] - start] = np.inf  # not itself
        cand_d = np.concatenate([best_d, d], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(B)), d.shape)], axis=1)
        top = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(cand_d, top, 1), np.take_along_axis(cand_i, top, 1)
    order = np.argsort(best_d, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1)


# --------------------------------------------------------------------------- metrics


def drop_self(ids: np.ndarray, dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k+1 neighbours per row (row i queried with X[i]) -> the k that are not row i itself.
    Where the search did not return the row itself (an approximate miss, or an exact tie with a
    copy), the (k+1)-th is dropped instead."""
    n = ids.shape[0]
    is_self = ids == np.arange(n)[:, None]
    first = is_self.argmax(axis=1)  # the first match only, should a library repeat a row
    found = is_self.any(axis=1)
    drop = np.where(found, first, ids.shape[1] - 1)
    keep = np.ones_like(is_self)
    keep[np.arange(n), drop] = False
    return ids[keep].reshape(n, k), dists[keep].reshape(n, k)


def recall_at_k(ids: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the query rows of |found neighbours ∩ exact neighbours| / k."""
    found = ids[queries][:, :, None] == truth[:, None, :]
    return float(found.any(axis=2).sum() / truth.size)


def duplicate_recall(ids: np.ndarray, sources: np.ndarray, copies: np.ndarray) -> float:
    """Fraction of planted pairs whose copy is the source's 1st neighbour."""
    return float(np.mean(ids[sources, 0] == copies))


def outlier_auroc(dists: np.ndarray, is_outlier: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(is_outlier, dists[:, -1]))


# --------------------------------------------------------------------------- arms


@dataclass
class Params:
    hnsw_m: int = 16
    ef_construction: int = 100
    ef_search: int = 64
    nprobe: int = 16
    seed: int = 0


@dataclass
class ArmResult:
    ids: np.ndarray  # (n, k) int64, the row itself excluded
    dists: np.ndarray  # (n, k) Euclidean distances
    build: Clock
    query: Clock
    note: str = ""


class Clock:
    """Wall and CPU seconds (all of this process's threads) of a with-block."""

    wall = cpu = 0.0

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def _finish(ids, dists, k, build: Clock, query: Clock, squared: bool, note: str = "") -> ArmResult:
    ids = np.asarray(ids).astype(np.int64, copy=False)
    dists = np.asarray(dists, dtype=np.float32)
    ids, dists = drop_self(ids, dists, k)
    if squared:
        dists = np.sqrt(np.maximum(dists, 0))
    return ArmResult(ids, dists, build, query, note)


def arm_sklearn(X, k, threads, p: Params) -> ArmResult:
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        with Clock() as build:
            nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(X)
        with Clock() as query:
            dists, ids = nn.kneighbors(X)
    return _finish(ids, dists, k, build, query, squared=False)


def arm_faiss_flat(X, k, threads, p: Params) -> ArmResult:
    import faiss

    faiss.omp_set_num_threads(threads)
    with Clock() as build:
        index = faiss.IndexFlatL2(X.shape[1])
        index.add(X)
    with Clock() as query:
        dists, ids = index.search(X, k + 1)
    return _finish(ids, dists, k, build, query, squared=True)


def arm_faiss_hnsw(X, k, threads, p: Params) -> ArmResult:
    import faiss

    faiss.omp_set_num_threads(threads)
    with Clock() as build:
        index = faiss.IndexHNSWFlat(X.shape[1], p.hnsw_m)
        index.hnsw.efConstruction = p.ef_construction
        index.add(X)
    index.hnsw.efSearch = p.ef_search
    with Clock() as query:
        dists, ids = index.search(X, k + 1)
    return _finish(ids, dists, k, build, query, squared=True)


def arm_faiss_ivf(X, k, threads, p: Params) -> ArmResult:
    import faiss

    faiss.omp_set_num_threads(threads)
    n, dim = X.shape
    nlist = max(1, int(4 * math.sqrt(n)))
    with Clock() as build:
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
        train = X if n <= 40 * nlist else X[np.random.default_rng(p.seed).choice(n, 40 * nlist, replace=False)]
        index.cp.seed = p.seed
        index.train(train)
        index.add(X)
    index.nprobe = min(p.nprobe, nlist)
    with Clock() as query:
        dists, ids = index.search(X, k + 1)
    return _finish(ids, dists, k, build, query, squared=True, note=f"nlist {nlist}, nprobe {index.nprobe}")


def arm_usearch(X, k, threads, p: Params) -> ArmResult:
    from usearch.index import Index

    with Clock() as build:
        index = Index(ndim=X.shape[1], metric="l2sq", dtype="f32", connectivity=p.hnsw_m,
                      expansion_add=p.ef_construction, expansion_search=p.ef_search)
        index.add(np.arange(len(X)), X, threads=threads)
    with Clock() as query:
        m = index.search(X, k + 1, threads=threads)
    ids = m.keys.astype(np.int64)
    ids[np.arange(k + 1)[None, :] >= m.counts[:, None]] = -1  # fewer than k+1 found
    return _finish(ids, m.distances, k, build, query, squared=True)


def arm_hnswlib(X, k, threads, p: Params) -> ArmResult:
    import hnswlib

    with Clock() as build:
        index = hnswlib.Index(space="l2", dim=X.shape[1])
        index.init_index(max_elements=len(X), ef_construction=p.ef_construction, M=p.hnsw_m, random_seed=p.seed)
        index.set_num_threads(threads)
        index.add_items(X, np.arange(len(X)))
    index.set_ef(p.ef_search)
    with Clock() as query:
        ids, dists = index.knn_query(X, k=k + 1)
    return _finish(ids, dists, k, build, query, squared=True)


def arm_pynndescent(X, k, threads, p: Params) -> ArmResult:
    import numba
    from pynndescent import NNDescent

    numba.set_num_threads(threads)
    with Clock() as jit:  # numba compiles on first use: timed apart on a small set
        NNDescent(X[:min(len(X), 2000)], n_neighbors=k + 1, n_jobs=threads).neighbor_graph
    with Clock() as build:
        index = NNDescent(X, n_neighbors=k + 1, n_jobs=threads)
    with Clock() as query:
        ids, dists = index.neighbor_graph  # the all-points graph is what NN-descent builds
    return _finish(ids, dists, k, build, query, squared=False,
                   note=f"+{jit.wall:.0f} s numba compile on first use, not counted")


@dataclass(frozen=True)
class Arm:
    run: object
    package: str  # the distribution that must be installed
    exact: bool
    label: str


ARMS: dict[str, Arm] = {
    "sklearn-brute": Arm(arm_sklearn, "scikit-learn", True, "scikit-learn NearestNeighbors(brute)"),
    "faiss-flat": Arm(arm_faiss_flat, "faiss-cpu", True, "faiss IndexFlatL2"),
    "faiss-hnsw": Arm(arm_faiss_hnsw, "faiss-cpu", False, "faiss IndexHNSWFlat"),
    "faiss-ivf": Arm(arm_faiss_ivf, "faiss-cpu", False, "faiss IndexIVFFlat"),
    "usearch": Arm(arm_usearch, "usearch", False, "usearch Index (HNSW)"),
    "hnswlib": Arm(arm_hnswlib, "hnswlib", False, "hnswlib Index (HNSW)"),
    "pynndescent": Arm(arm_pynndescent, "pynndescent", False, "pynndescent NNDescent"),
}

# What the table cannot show (checked for this report with pip against PyPI, x86_64 Linux unless said);
# versions are read from the installed packages.
LICENCES = {"scikit-learn": "BSD-3-Clause", "faiss-cpu": "MIT", "usearch": "Apache-2.0", "hnswlib": "Apache-2.0",
            "pynndescent": "BSD-2-Clause"}
PACKAGING = {
    "scikit-learn": "already a Curate dependency; exact, so its all-points search grows with n squared",
    "faiss-cpu": ("one cp310-abi3 wheel per platform serves Python 3.11 and 3.12 (manylinux x86_64 and aarch64, "
                  "macOS arm64; cp312 for Windows); about 66 MB installed, numpy its only compiled dependency; "
                  "Meta's library, packaged for PyPI by the faiss-wheels project, 17 releases from 1.7.3 to 1.15.1"),
    "usearch": ("wheels for Python 3.11 and 3.12 (cp311, cp312) on manylinux x86_64 and aarch64, macOS and Windows; about 57 MB installed "
                "with its numkong kernels; frequent releases (2.26.x)"),
    "hnswlib": ("no wheels: only an sdist, so every install compiles C++ (g++ and Python headers on every "
                "machine and image); 0.8.0 is the latest release"),
    "pynndescent": ("a pure-Python wheel on numba + llvmlite (BSD-2-Clause; llvmlite also Apache-2.0 with LLVM "
                    "exception), wheels for 3.11 and 3.12; numba compiles its kernels on first use in every "
                    "fresh worker process"),
}
MIN_RECALL, MIN_DUP_RECALL = 0.95, 0.99


def installed(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def available_arms() -> list[str]:
    return [name for name, arm in ARMS.items() if installed(arm.package)]


@dataclass
class Measured:
    build_s: float
    query_s: float
    cpu_s: float  # build + query, CPU seconds of all threads
    recall: float
    dup_recall: float
    auroc: float
    note: str = ""


def measure(name: str, data: Synthetic, queries: np.ndarray, truth: np.ndarray, k: int, threads: int,
            params: Params | None = None) -> Measured:
    """Run one arm in this process and score it against the exact neighbours of `queries`."""
    r = ARMS[name].run(data.X, k, threads, params or Params())
    return Measured(r.build.wall, r.query.wall, r.build.cpu + r.query.cpu, recall_at_k(r.ids, queries, truth),
                    duplicate_recall(r.ids, data.sources, data.copies), outlier_auroc(r.dists, data.is_outlier), r.note)


# --------------------------------------------------------------------------- child process


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM), which starts afresh at exec."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def save(data: Synthetic, queries: np.ndarray, truth: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in (("X", data.X), ("sources", data.sources), ("copies", data.copies),
                      ("is_outlier", data.is_outlier), ("queries", queries), ("truth", truth)):
        np.save(folder / f"{name}.npy", arr)


def load(folder: Path) -> tuple[Synthetic, np.ndarray, np.ndarray]:
    get = {name: np.load(folder / f"{name}.npy") for name in ("X", "sources", "copies", "is_outlier", "queries", "truth")}
    return Synthetic(get["X"], get["sources"], get["copies"], get["is_outlier"]), get["queries"], get["truth"]


def child_main(args) -> None:
    data, queries, truth = load(Path(args.data))
    params = Params(**json.loads(args.params))
    m = measure(args.arm, data, queries, truth, args.k, args.threads, params)
    print(json.dumps(m.__dict__ | {"peak_mib": peak_rss_mib()}))


def thread_env(threads: int) -> dict[str, str]:
    return os.environ | {var: str(threads) for var in THREAD_VARS}


def run_child(arm: str, folder: Path, k: int, threads: int, params: Params, timeout: float) -> dict:
    """One arm in a process of its own; its Measured fields plus peak_mib, or {"error": ...}."""
    cmd = [sys.executable, __file__, "--arm", arm, "--data", str(folder), "--k", str(k), "--threads", str(threads),
           "--params", json.dumps(params.__dict__)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=thread_env(threads), timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"over the {timeout / 60:.0f} min limit"}
    if proc.returncode:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] or ''}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- driver


def predicted_seconds(arm: str, prev_n: int, prev_s: float, n: int) -> float:
    ratio = n / prev_n
    if ARMS[arm].exact:
        return prev_s * ratio ** 2
    return prev_s * ratio * math.log(n) / math.log(prev_n)


def machine_line() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem = next((int(line.split()[1]) / 2**20 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores ({cpu}), {mem:.0f} GiB memory, "
            f"Python {platform.python_version()}, numpy {np.__version__}")


def fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def choice(rows: list[dict], sizes: list[int]) -> str:
    """The recommendation, from the measurements: among the approximate arms that finished at the
    largest size with recall@k >= MIN_RECALL and duplicate recall >= MIN_DUP_RECALL and whose
    library installs from a wheel, the fastest in total (build + all-points query)."""
    top = max(sizes)
    at_top = [r for r in rows if r["n"] == top]
    done = [r for r in at_top if "build_s" in r]
    good = [r for r in done if not ARMS[r["arm"]].exact and r["recall"] >= MIN_RECALL
            and r["dup_recall"] >= MIN_DUP_RECALL and r["arm"] != "hnswlib"]
    if not good:
        return (f"No approximate arm with a wheel reached recall@k >= {MIN_RECALL} and duplicate recall >= "
                f"{MIN_DUP_RECALL} at {top:,} samples; no choice is made from this run.")
    best = min(good, key=lambda r: r["build_s"] + r["query_s"])
    pkg = ARMS[best["arm"]].package

    def total(r):
        return r["build_s"] + r["query_s"]

    def span(seconds):
        return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"

    lines = [
        f"Curate should use **{pkg} {installed(pkg)}** ({LICENCES[pkg]}), {ARMS[best['arm']].label} (`{best['arm']}`). "
        f"At {top:,} samples x {best['dim']} dimensions on {best['threads']} threads it built the index in "
        f"{best['build_s']:.0f} s and found every sample's {best['k']} neighbours in {best['query_s']:.0f} s, "
        f"{span(total(best))} in all ({best['cpu_s']:,.0f} CPU seconds), with recall@{best['k']} {best['recall']:.3f}, planted-duplicate recall "
        f"{best['dup_recall']:.3f}, outlier AUROC {best['auroc']:.3f} and a peak RSS of {best['peak_mib']:,.0f} MiB "
        f"(the {top * best['dim'] * 4 / 2**20:,.0f} MiB of data included). It was the fastest arm at this size "
        f"that met recall@k >= {MIN_RECALL} and duplicate recall >= {MIN_DUP_RECALL} and installs from a wheel. "
        f"Packaging: {PACKAGING[pkg]}.",
        "",
        f"The other arms at {top:,} samples:",
        "",
    ]
    for r in sorted(at_top, key=lambda r: (r is best, "build_s" not in r, total(r) if "build_s" in r else 0)):
        if r is best:
            continue
        p = ARMS[r["arm"]].package
        if "build_s" in r:
            met = [] if r["recall"] >= MIN_RECALL else [f"recall below {MIN_RECALL}"]
            met += [] if r["dup_recall"] >= MIN_DUP_RECALL else [f"duplicate recall below {MIN_DUP_RECALL}"]
            what = (f"{span(total(r))} (build {r['build_s']:.0f} s, query {r['query_s']:.0f} s; {r['cpu_s']:,.0f} CPU s), "
                    f"recall@{r['k']} "
                    f"{r['recall']:.3f}, duplicates {r['dup_recall']:.3f}, AUROC {r['auroc']:.3f}, "
                    f"{r['peak_mib']:,.0f} MiB" + (f" ({', '.join(met)})" if met else ""))
        else:
            what = r.get("skipped") or r.get("error", "")
        lines.append(f"- `{r['arm']}` ({p} {installed(p)}, {LICENCES[p]}): {what}. {PACKAGING[p][0].upper() + PACKAGING[p][1:]}.")
    return "\n".join(lines)

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated sample counts")
    p.add_argument("--quick", action="store_true", help="10,000 samples only")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated; uninstalled ones are left out")
    p.add_argument("--queries", type=int, default=2000, help="query points with exact ground truth")
    p.add_argument("--max-minutes", type=float, default=15.0,
                   help="the time an arm should fit in at one size; one predicted to take over twice this is skipped")
    p.add_argument("--hnsw-m", type=int, default=Params.hnsw_m)
    p.add_argument("--ef-construction", type=int, default=Params.ef_construction)
    p.add_argument("--ef-search", type=int, default=Params.ef_search)
    p.add_argument("--nprobe", type=int, default=Params.nprobe)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arm-timeout-minutes", type=float, default=45.0, help="stop an arm's process after this long")
    p.add_argument("--rows-file", type=Path, help="JSON lines: each measured row is appended; rows already there "
                   "with the same settings are reused, so a stopped run can go on where it was")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.arm:
        return child_main(args)

    from threadpoolctl import threadpool_limits

    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    wanted = [a for a in args.arms.split(",") if a]
    unknown = set(wanted) - set(ARMS)
    if unknown:
        raise SystemExit(f"unknown arms: {', '.join(sorted(unknown))}")
    arms = [a for a in wanted if installed(ARMS[a].package)]
    missing = [a for a in wanted if a not in arms]
    params = Params(args.hnsw_m, args.ef_construction, args.ef_search, args.nprobe, args.seed)
    command = ".venv/bin/python bench/nn_search.py " + shlex.join(sys.argv[1:])
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()
    print(f"{machine_line()}; load average {load_start[0]:.1f} {load_start[1]:.1f} {load_start[2]:.1f}")
    print(f"arms: {', '.join(arms)}" + (f" (not installed: {', '.join(missing)})" if missing else ""))

    rows: list[dict] = []
    loads: list[float] = []
    last: dict[str, tuple[int, float]] = {}  # arm -> (n, seconds) of its last finished size
    same = {"k": args.k, "dim": args.dim, "threads": args.threads, "params": params.__dict__}
    kept = {}  # (arm, n) -> a row measured by an earlier run with the same settings (--rows-file)
    if args.rows_file and args.rows_file.exists():
        for line in args.rows_file.read_text().splitlines():
            r = json.loads(line)
            if "build_s" in r and all(r.get(key) == value for key, value in same.items()):
                kept[r["arm"], r["n"]] = r
    work = Path(tempfile.mkdtemp(prefix="curate-nn-"))
    try:
        for n in sizes:
            folder = None
            print(f"\n{n:,} samples")
            for arm in arms:
                row = {"arm": arm, "n": n, **same}
                if (arm, n) in kept:
                    row = kept[arm, n] | {"reused": True}
                elif arm in last and last[arm][0] != n:
                    guess = predicted_seconds(arm, last[arm][0], last[arm][1], n)
                    if guess > 2 * args.max_minutes * 60:
                        row["skipped"] = (f"skipped: {last[arm][1]:.0f} s at {last[arm][0]:,} extrapolates to "
                                          f"~{guess / 60:.0f} min ({'quadratic' if ARMS[arm].exact else 'n log n'}), over twice "
                                          f"the {args.max_minutes:.0f} min target")
                elif any(r["arm"] == arm and ("error" in r or "skipped" in r) for r in rows):
                    row["skipped"] = "skipped: failed or skipped at a smaller size"
                if "skipped" in row:
                    rows.append(row)
                    print(f"  {arm:<14} {row['skipped']}")
                    continue
                if not row.get("reused"):
                    if folder is None:  # the data and its exact truth, made when an arm first needs them
                        t = time.perf_counter()
                        data = make_data(n, args.dim, seed=args.seed)
                        queries = np.random.default_rng(args.seed + 1).choice(n, size=min(args.queries, n), replace=False)
                        with threadpool_limits(args.threads):
                            truth = exact_neighbours(data.X, queries, args.k)
                        folder = work / str(n)
                        save(data, queries, truth, folder)
                        del data
                        print(f"  data and exact truth for {len(queries):,} queries in {time.perf_counter() - t:.0f} s")
                    row["load"] = os.getloadavg()[0]
                    row["at"] = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
                    row |= run_child(arm, folder, args.k, args.threads, params, timeout=args.arm_timeout_minutes * 60)
                    if args.rows_file and "build_s" in row:
                        with args.rows_file.open("a") as fh:
                            fh.write(json.dumps(row) + "\n")
                rows.append(row)
                if "error" in row:
                    print(f"  {arm:<14} failed: {row['error']}")
                    continue
                loads.append(row["load"])
                last[arm] = (n, row["build_s"] + row["query_s"])
                print(f"  {arm:<14} build {row['build_s']:8.1f} s  query {row['query_s']:8.1f} s  CPU {row['cpu_s']:6.0f} s  "
                      f"recall {row['recall']:.3f}  dup {row['dup_recall']:.3f}  AUROC {row['auroc']:.3f}  "
                      f"{row['peak_mib']:6.0f} MiB  load {row['load']:.1f}  {row.get('note', '')}"
                      + ("  (reused)" if row.get("reused") else ""))
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header = ["n", "arm", "build s", "query s", "total s", "CPU s", f"recall@{args.k}", "dup recall", "outlier AUROC",
              "peak RSS MiB", "load", "note"]
    table_rows = []
    for r in rows:
        if "build_s" not in r:
            table_rows.append([f"{r['n']:,}", r["arm"], *[""] * 9, r.get("skipped") or r.get("error", "")])
            continue
        table_rows.append([f"{r['n']:,}", r["arm"], fmt(r["build_s"], ".1f"), fmt(r["query_s"], ".1f"),
                           fmt(r["build_s"] + r["query_s"], ".1f"), fmt(r["cpu_s"], ".0f"), fmt(r["recall"], ".4f"), fmt(r["dup_recall"], ".4f"),
                           fmt(r["auroc"], ".4f"), fmt(r["peak_mib"], ".0f"), fmt(r["load"], ".1f"), r.get("note", "")])
    table = markdown_table(header, table_rows)
    libs = sorted({ARMS[a].package for a in arms})
    load_end = os.getloadavg()
    minutes = (dt.datetime.now(dt.UTC) - started).total_seconds() / 60
    stamps = [r["at"] for r in rows if "at" in r]
    text = "\n".join([
        "# Nearest-neighbour search for near duplicates and outlier scores",
        "",
        f"`{command}` at commit {commit()}, {started:%Y-%m-%d %H:%M} UTC, {minutes:.0f} min in all.",
        "",
        *([f"{sum(bool(r.get('reused')) for r in rows)} rows come from earlier invocations of the same command "
           f"with the same settings, kept in `--rows-file` (a stopped run goes on there, and a rerun rewrites this "
           f"report without measuring again); the rows were measured from "
           f"{min(stamps)} to {max(stamps)}.", ""] if any(r.get("reused") for r in rows) else []),
        f"Machine: {machine_line()}. Load average (1/5/15 min) {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f} "
        f"at the start, {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f} at the end; the 1-minute load as each arm "
        f"started is in the table (from {min(loads, default=0):.1f} to {max(loads, default=0):.1f}). Other work shared "
        "the cores, so the wall times (build, query, total) carry that noise; CPU s (build + query, all of the arm's "
        "threads) moves less with the load. Every arm ran under the same thread limit.",
        "",
        "Libraries: " + ", ".join(f"{lib} {installed(lib)} ({LICENCES[lib]})" for lib in libs)
        + (f"; not installed, left out: {', '.join(missing)}" if missing else "") + ".",
        "",
        f"Data: a Gaussian mixture of 50 clusters (uneven sizes and widths) in {args.dim} float32 dimensions with a "
        "PCA-like decaying scale, 1% planted near duplicates (a copy of a random sample plus noise of 2% of its "
        "cluster's width) and 0.5% outliers (1.5 to 3 radii of a cluster from its centre, at least 1.5 radii from "
        "every centre; the clusters' uneven widths keep even the exact score's AUROC below 1), shuffled.",
        "",
        f"Each arm ran in a process of its own with OMP/BLAS/numba threads, faiss.omp_set_num_threads, usearch's and "
        f"hnswlib's thread arguments all set to {args.threads}. Query = every sample searched for its {args.k + 1} "
        f"nearest in the index that holds it, itself then dropped. HNSW arms (faiss, usearch, hnswlib): "
        f"M={params.hnsw_m}, efConstruction={params.ef_construction}, efSearch={params.ef_search}. faiss IVF: "
        f"nlist = 4 sqrt(n), trained on at most 40 x nlist samples, nprobe={params.nprobe}. pynndescent: defaults "
        f"with n_neighbors={args.k + 1}; its numba compile is timed apart (note column). Recall@{args.k}: against exact "
        f"float64 neighbours of {args.queries:,} random samples. Dup recall: planted pairs whose copy is the source's "
        f"1st neighbour. Outlier AUROC: the {args.k}-th neighbour's distance as the score. Peak RSS: the arm process's "
        f"VmHWM, including the data set it loads ({sizes[-1] * args.dim * 4 / 2**20:,.0f} MiB at {sizes[-1]:,}).",
        "",
        table,
        "",
        "## Choice",
        "",
        choice(rows, sizes),
        "",
    ])
    write_report(text, args.out)


if __name__ == "__main__":
    main()
