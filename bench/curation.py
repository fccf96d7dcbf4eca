"""Curation simulation without the web app: which review order buys the most test accuracy per relabel.

    .venv/bin/python bench/curation.py [--quick] [--out PATH]

Per setting (dataset x noise kind x rate x data seed):
  data     four sets, three modalities, each split train / valid / test:
             digits-tab  scikit-learn digits, 64 numeric features (tabular);
             classif     make_classification, 2,000 samples, 10 classes (tabular);
             digits-img  the demo's 8x8 PNGs (app.datasets.demo), their pixels (image);
             topics      generated documents (10 topics over a 600-word vocabulary, pairs of topics
                         sharing words), TF-IDF then a 64-dimension SVD (text).
  noise    on train only: uniform, classcond (bench/label_errors.py: a fixed confusable-class
           matrix) and boundary (the samples a clean-label model finds most ambiguous flipped to
           their second class), at 10% and 30%.
  model    a one-hidden-layer MLP (32 units) trained full-batch with Adam in torch; many models
           train at once as one batched network, each with its own labels, sample weights and seed.
  run      5-fold out-of-fold probabilities, and a final model on all of train that gives the AUM
           (mean margin over training), the embeddings (hidden layer) and per-class F1 on valid.
  orders   Curate's review priority (app.scoring: combined score with AUM, flagged set, priority),
           cleanlab's (find_label_issues default set by self-confidence, then the rest: the order
           bench/label_errors.py uses), random, and candidates: expected gain from KNN-Shapley
           relabel values in the embedding space, a class-aware order, training dynamics, mixes.
  sim      for each order and budget (5, 10, 20% of train) the top of the order is relabelled to the
           true label and the MLP retrained with 5 seeds (the same seeds for every order); test
           accuracy against no curation gives points per 100 reviewed; paired against cleanlab.
  which    on the same runs: equal-size random sets of true errors split by a property (the final
           model already right on them, near/far from the boundary, low/high class F1, ...), each
           fixed alone and retrained: which corrected errors move test accuracy.
Settings with data seed 0 are the tuning set (candidates were designed and adjusted on them);
data seeds 1 and 2 are the reported set. Prints the tables and writes bench/results/curation.md.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import commit, machine, markdown_table, write_report  # noqa: E402

BUDGETS = (0.05, 0.10, 0.20)
TUNING_SEEDS = (0,)
REPORTED_SEEDS = (1, 2)
K_NEIGHBOURS = 10


def _label_errors_module():
    """bench/label_errors.py for its data and noise (loaded by path: bench is not a package here)."""
    name = "bench_label_errors_for_curation"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "label_errors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- data ---------------------------------------------------------------------------------


@dataclass
class Data:
    modality: str
    X: np.ndarray  # standardised features, (n, d)
    y: np.ndarray  # true labels
    split: np.ndarray  # train | valid | test


def topic_documents(seed: int, n: int = 2000, k: int = 10, vocab: int = 600) -> tuple[list[str], np.ndarray]:
    """Generated text: each class a topic (a sparse word distribution); classes 2i and 2i+1 share half
    their words, so pairs are confusable; every document mixes its topic with a common background."""
    rng = np.random.default_rng(500 + seed)
    background = rng.dirichlet(np.full(vocab, 0.5))
    topics = np.zeros((k, vocab))
    for c in range(k):
        own = rng.choice(vocab, 40, replace=False)
        topics[c, own] = rng.dirichlet(np.full(40, 0.5))
    for c in range(0, k - 1, 2):
        a, b = topics[c].copy(), topics[c + 1].copy()
        topics[c], topics[c + 1] = 0.25 * (a + b) + 0.5 * a, 0.25 * (a + b) + 0.5 * b
    rng2 = np.random.default_rng(900 + seed)
    y = rng2.integers(0, k, n)
    docs = []
    for i in range(n):
        length = int(rng2.integers(15, 40))
        mix = 0.35 * rng2.random() + 0.25
        p = mix * topics[y[i]] + (1 - mix) * background
        docs.append(" ".join(f"w{j}" for j in rng2.choice(vocab, length, p=p)))
    return docs, y


def load(dataset: str, seed: int) -> Data:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    if dataset == "topics":
        docs, y = topic_documents(seed)
        X = TfidfVectorizer().fit_transform(docs)
        X = TruncatedSVD(64, random_state=seed).fit_transform(X)
        rng = np.random.default_rng(seed)
        split = np.array(["train"] * len(y), dtype=object)
        order = rng.permutation(len(y))
        split[order[int(0.6 * len(y)): int(0.8 * len(y))]] = "valid"
        split[order[int(0.8 * len(y)):]] = "test"
        modality, split = "text", split.astype(str)
    else:
        d = _label_errors_module().load_data(dataset, seed)
        X, y, split = d.X, d.y_true, d.split
        modality = "image" if dataset == "digits-img" else "tabular"
    train = split == "train"
    mu, sd = X[train].mean(axis=0), X[train].std(axis=0) + 1e-6
    return Data(modality, ((X - mu) / sd).astype(np.float32), np.asarray(y), np.asarray(split))


def boundary_noise(data: Data, rate: float, seed: int) -> np.ndarray:
    """Flip round(rate x n_train) train labels among the most ambiguous third of train (the smallest
    top-2 margin of a clean-label logistic regression, out-of-fold) to the second most likely class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    train = np.flatnonzero(data.split == "train")
    P = cross_val_predict(LogisticRegression(C=0.1, max_iter=500), data.X[train], data.y[train], cv=5,
                          method="predict_proba")
    order = np.argsort(-P, axis=1)
    margin = P[np.arange(len(train)), order[:, 0]] - P[np.arange(len(train)), order[:, 1]]
    m = int(round(rate * len(train)))
    pool = np.argsort(margin, kind="stable")[: max(m, len(train) // 3)]
    rng = np.random.default_rng(20_000 + seed)
    pick = rng.choice(pool, m, replace=False)
    other = np.where(order[pick, 0] == data.y[train][pick], order[pick, 1], order[pick, 0])
    given = data.y.copy()
    given[train[pick]] = other
    return given


def noisy_labels(data: Data, noise: str, rate: float, seed: int) -> np.ndarray:
    if noise == "boundary":
        return boundary_noise(data, rate, seed)
    return _label_errors_module().add_noise(data.y, data.split, noise, rate, seed)


# --- many MLPs at once ----------------------------------------------------------------------


@dataclass
class Fit:
    W1: object
    b1: object
    W2: object
    b2: object
    aum: np.ndarray | None

    def forward(self, X: np.ndarray):
        import torch

        with torch.no_grad():
            H = torch.relu(torch.as_tensor(X) @ self.W1 + self.b1)  # (M, n, h)
            return H, H @ self.W2 + self.b2

    def probs(self, X: np.ndarray) -> np.ndarray:
        import torch

        return torch.softmax(self.forward(X)[1], dim=-1).numpy()

    def embed(self, X: np.ndarray) -> np.ndarray:
        return self.forward(X)[0].numpy()


def train_many(X: np.ndarray, Y: np.ndarray, weights: np.ndarray, seeds: list[int], k: int, hidden: int = 32,
               steps: int = 120, lr: float = 0.02, wd: float = 1e-4, aum_of: int | None = None) -> Fit:
    """M MLPs on the same inputs X (n, d): model m fits labels Y[m] with sample weights weights[m]
    (0 = not in its training set), initialised from seeds[m]; full-batch Adam. With aum_of, the
    area under the margin of that model's training samples (mean over steps of the given label's
    logit minus the largest other)."""
    import torch

    M, (n, d) = len(seeds), X.shape
    W1, W2 = torch.empty(M, d, hidden), torch.empty(M, hidden, k)
    for m, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s))
        W1[m] = torch.randn(d, hidden, generator=g) * (2.0 / d) ** 0.5
        W2[m] = torch.randn(hidden, k, generator=g) * (1.0 / hidden) ** 0.5
    b1, b2 = torch.zeros(M, 1, hidden), torch.zeros(M, 1, k)
    params = [p.requires_grad_() for p in (W1, b1, W2, b2)]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    Xt = torch.as_tensor(X)
    Yt = torch.as_tensor(np.asarray(Y, dtype=np.int64))
    Wt = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    Wt = Wt / Wt.sum(dim=1, keepdim=True)
    aum_sum = None
    for _ in range(steps):
        logits = torch.relu(Xt @ W1 + b1) @ W2 + b2
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, k), Yt.reshape(-1), reduction="none").reshape(M, n)
        loss = (ce * Wt).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if aum_of is not None:
            with torch.no_grad():
                z = logits[aum_of]
                yz = z.gather(1, Yt[aum_of][:, None])[:, 0]
                other = z.scatter(1, Yt[aum_of][:, None], float("-inf")).max(dim=1).values
                margin = (yz - other).numpy()
                aum_sum = margin if aum_sum is None else aum_sum + margin
    fit = Fit(*(p.detach() for p in params), None)
    if aum_of is not None:
        fit.aum = aum_sum / steps
    return fit


# --- one run: the scores a Curate run would store ----------------------------------------------


@dataclass
class RunScores:
    P: np.ndarray  # out-of-fold probabilities of train
    P_in: np.ndarray  # final model on train
    aum: np.ndarray
    Z: np.ndarray  # final model's embeddings of every sample
    f1_valid: np.ndarray  # per-class F1 of the final model on valid (given labels)
    combined: np.ndarray
    flagged: np.ndarray
    priority: np.ndarray


def run_scores(data: Data, given: np.ndarray, seed: int, k: int, steps: int) -> RunScores:
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    from app.scoring.combined import combined_score
    from app.scoring.flagged import flag_label_errors
    from app.scoring.priority import review_priority

    train = np.flatnonzero(data.split == "train")
    yt = given[train]
    Xt = data.X[train]
    folds = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(Xt, yt))
    W = np.ones((6, len(train)), dtype=np.float32)
    for f, (_, held) in enumerate(folds):
        W[f, held] = 0.0
    fit = train_many(Xt, np.tile(yt, (6, 1)), W, [seed * 7 + f for f in range(6)], k, steps=steps, aum_of=5)
    Pall = fit.probs(Xt)
    P = np.zeros((len(train), k))
    for f, (_, held) in enumerate(folds):
        P[held] = Pall[f, held]
    P_in = Pall[5]
    Z = fit.embed(data.X)[5]
    valid = data.split == "valid"
    pred_valid = fit.probs(data.X[valid])[5].argmax(axis=1)
    f1 = f1_score(given[valid], pred_valid, labels=np.arange(k), average=None, zero_division=0)
    combined = combined_score(P, yt, aum=fit.aum)
    flagged = flag_label_errors(P, yt, score=combined).mask
    priority = review_priority(P, yt, flagged, combined)
    return RunScores(P, P_in, fit.aum, Z, np.asarray(f1), combined, flagged, priority)


# --- orders ----------------------------------------------------------------------------------


def knn_relabel_value(Z_train: np.ndarray, y: np.ndarray, suggested: np.ndarray, Z_ref: np.ndarray,
                      y_ref: np.ndarray, K: int = K_NEIGHBOURS, depth: int = 50,
                      exclude_self: bool = False) -> np.ndarray:
    """What relabelling each train sample from y to `suggested` adds to its KNN-Shapley value (Jia et
    al. 2019, unweighted KNN utility) summed over reference points: a train sample at rank r among a
    reference point's neighbours has Shapley value s_r = s_{r+1} + (1[y_r = y_t] - 1[y_{r+1} = y_t])
    min(K, r) / (K r); s_{r+1} does not depend on y_r, so changing y_r moves s_r by
    (1[new = y_t] - 1[old = y_t]) min(K, r) / (K r). Ranks beyond `depth` are left out."""
    from sklearn.neighbors import NearestNeighbors

    depth = min(depth, len(Z_train) - (1 if exclude_self else 0))
    nn = NearestNeighbors(n_neighbors=depth + (1 if exclude_self else 0)).fit(Z_train)
    _, idx = nn.kneighbors(Z_ref)
    if exclude_self:
        idx = idx[:, 1:]
    r = np.arange(1, depth + 1)
    w = np.minimum(K, r) / (K * r)
    delta = (suggested[idx] == y_ref[:, None]).astype(float) - (y[idx] == y_ref[:, None]).astype(float)
    out = np.zeros(len(Z_train))
    np.add.at(out, idx.ravel(), (delta * w[None, :]).ravel())
    return out


def _rank(x: np.ndarray) -> np.ndarray:
    from app.scoring.combined import unit_rank

    return unit_rank(x)


def flagged_first(flagged: np.ndarray, within: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Positions: the flagged samples by `within` ascending, then the others by `rest` ascending."""
    key = np.where(flagged, within, rest)
    return np.lexsort((key, ~flagged))


def class_budget_order(flagged: np.ndarray, priority: np.ndarray, y: np.ndarray, suggested: np.ndarray,
                       f1: np.ndarray) -> np.ndarray:
    """Flagged samples first, spread over class pairs in proportion to how much F1 they lose: a flagged
    sample's place is its rank by priority among the flagged of its given class divided by that class's
    weight (1 - F1 of the given class + 1 - F1 of the suggested class, on valid); then the rest by priority."""
    loss = 1.0 - f1
    weight = loss[y] + loss[suggested] + 1e-3
    pos = np.full(len(y), np.inf)
    for c in np.unique(y[flagged]):
        members = np.flatnonzero(flagged & (y == c))
        ranked = members[np.argsort(priority[members], kind="stable")]
        pos[ranked] = (np.arange(len(ranked)) + 1.0) / weight[ranked]
    return flagged_first(flagged, pos, priority)


def orders(rs: RunScores, y: np.ndarray, Z_valid: np.ndarray, y_valid: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Order name -> train positions, reviewed first to last."""
    from cleanlab.filter import find_label_issues

    from app.scoring.scores import self_confidence

    sc = self_confidence(rs.P, y)
    suggested = rs.P.argmax(axis=1)
    train_Z = rs.Z
    p_err = 1.0 - sc
    gain_valid = knn_relabel_value(train_Z, y, suggested, Z_valid, y_valid)
    gain_train = knn_relabel_value(train_Z, y, suggested, train_Z, suggested, exclude_self=True)
    exp_valid = p_err * gain_valid
    exp_train = p_err * gain_train
    cl_flag = np.asarray(find_label_issues(y, rs.P, n_jobs=1), dtype=bool)
    out = {
        "cleanlab": np.lexsort((sc, ~cl_flag)),
        "curate": np.argsort(rs.priority, kind="stable"),
        "random": np.random.default_rng(seed + 77).permutation(len(y)),
        "gain_valid": np.argsort(-exp_valid, kind="stable"),
        "flag>gain_valid": flagged_first(rs.flagged, -exp_valid, rs.combined),
        "flag>gain_train": flagged_first(rs.flagged, -exp_train, rs.combined),
        "flag>mix": flagged_first(rs.flagged, _rank(sc) + _rank(-exp_valid), rs.combined),
        "flag>aum": flagged_first(rs.flagged, rs.aum, rs.combined),
        "class_f1": class_budget_order(rs.flagged, rs.priority, y, suggested, rs.f1_valid),
    }
    return out


ORDER_NOTES = {
    "cleanlab": "cleanlab find_label_issues (default filter) by self-confidence, then the rest by self-confidence",
    "curate": "Curate's review priority: the flagged set by self-confidence, then the rest by the combined score",
    "random": "random",
    "gain_valid": "expected gain alone: (1 - p[y]) x KNN-Shapley relabel value on valid (given labels), every sample",
    "flag>gain_valid": "Curate's flagged set by expected gain (valid reference), then the rest by the combined score",
    "flag>gain_train": "Curate's flagged set by expected gain with train as reference (out-of-fold predicted labels, "
                       "leave-self-out), then the rest by combined",
    "flag>mix": "Curate's flagged set by mean rank of self-confidence and expected gain (valid), then the rest",
    "flag>aum": "Curate's flagged set by AUM (training dynamics), lowest first, then the rest",
    "class_f1": "Curate's flagged set spread over classes by 1 - F1 on valid (given + suggested class), priority within",
}


# --- which errors matter ----------------------------------------------------------------------


def suspect_groups(rs: RunScores, y_given: np.ndarray, y_true: np.ndarray, Z_valid: np.ndarray,
                   y_valid: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Property -> (errors with it, errors without it), train positions of true errors split in two."""
    from app.scoring.scores import self_confidence

    err = np.flatnonzero(y_given != y_true)
    sc = self_confidence(rs.P, y_given)
    top2 = np.sort(rs.P, axis=1)
    margin = top2[:, -1] - top2[:, -2]
    gain = knn_relabel_value(rs.Z, y_given, y_true, Z_valid, y_valid)
    f1 = rs.f1_valid
    f1_pair = (f1[y_true] + f1[y_given]) / 2

    def halves(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = value[err]
        o = err[np.argsort(v, kind="stable")]
        h = len(o) // 2
        return o[h:], o[:h]  # (high, low)

    groups = {
        "final model already right (in-sample) vs wrong": (
            err[rs.P_in[err].argmax(axis=1) == y_true[err]], err[rs.P_in[err].argmax(axis=1) != y_true[err]]),
        "out-of-fold model finds the true class vs not": (
            err[rs.P[err].argmax(axis=1) == y_true[err]], err[rs.P[err].argmax(axis=1) != y_true[err]]),
        "far from the boundary (top-2 margin high) vs confusable (low)": halves(margin),
        "low self-confidence (high 1 - p[y]) vs high": halves(-sc),
        "classes with high F1 (given + true, valid) vs low": halves(f1_pair),
        "high KNN relabel value (true label, valid) vs low": halves(gain),
    }
    return groups


# --- one setting -------------------------------------------------------------------------------


@dataclass
class Setting:
    dataset: str
    noise: str
    rate: float
    seed: int

    @property
    def role(self) -> str:
        return "tuning" if self.seed in TUNING_SEEDS else "reported"

    def __str__(self) -> str:
        return f"{self.dataset} {self.noise} {int(round(self.rate * 100))}% seed {self.seed}"


def run_setting(s: Setting, train_seeds: int, steps: int) -> dict:
    data = load(s.dataset, s.seed)
    given = noisy_labels(data, s.noise, s.rate, s.seed)
    k = int(data.y.max()) + 1
    train = np.flatnonzero(data.split == "train")
    valid, test = data.split == "valid", data.split == "test"
    yg, ytrue = given[train], data.y[train]
    rs = run_scores(data, given, s.seed, k, steps)
    Z_valid = rs.Z[valid]
    rs.Z = rs.Z[train]
    ords = orders(rs, yg, Z_valid, given[valid], s.seed)
    n = len(train)
    seeds = [1000 + t for t in range(train_seeds)]
    label_sets: list[np.ndarray] = []
    cells: list[tuple] = []

    def add(key: tuple, labels: np.ndarray) -> None:
        for t in seeds:
            label_sets.append(labels)
            cells.append((*key, t))

    add(("none",), yg)
    add(("clean",), ytrue)
    reviewed = {}
    for name, order in ords.items():
        for b in BUDGETS:
            top = order[: int(round(b * n))]
            labels = yg.copy()
            labels[top] = ytrue[top]
            reviewed[(name, b)] = (len(top), int((yg[top] != ytrue[top]).sum()))
            add(("order", name, b), labels)
    groups = suspect_groups(rs, yg, ytrue, Z_valid, given[valid])
    group_sizes = {}
    rng = np.random.default_rng(s.seed + 5)
    for gname, (a, bgrp) in groups.items():
        m = min(len(a), len(bgrp), max(1, int(round(0.05 * n))))
        group_sizes[gname] = (m, len(a), len(bgrp))
        if m < 5:
            continue
        for side, members in (("with", a), ("without", bgrp)):
            pick = rng.choice(members, m, replace=False)
            labels = yg.copy()
            labels[pick] = ytrue[pick]
            add(("group", gname, side), labels)
    fit = train_many(data.X[train], np.stack(label_sets), np.ones((len(label_sets), n), dtype=np.float32),
                     [c[-1] for c in cells], k, steps=steps)
    acc = (fit.probs(data.X[test]).argmax(axis=2) == data.y[test][None, :]).mean(axis=1)
    res: dict = {"setting": s, "n_train": n, "errors": int((yg != ytrue).sum()), "acc": {}, "reviewed": reviewed,
                 "group_sizes": group_sizes, "flagged": int(rs.flagged.sum()),
                 "flag_precision": float((yg[rs.flagged] != ytrue[rs.flagged]).mean()) if rs.flagged.any() else 0.0}
    for c, a in zip(cells, acc):
        res["acc"].setdefault(c[:-1], {})[c[-1]] = float(a)
    return res


# --- summaries ----------------------------------------------------------------------------------


def gain_per_100(res: dict, name: str, budget: float) -> dict[int, float]:
    """Per training seed: test-accuracy points gained over no curation per 100 reviewed samples."""
    none, cell = res["acc"][("none",)], res["acc"][("order", name, budget)]
    m = res["reviewed"][(name, budget)][0]
    return {t: (cell[t] - none[t]) * 100 * 100 / m for t in cell}


def paired(results: list[dict], name: str, budget: float, ref: str = "cleanlab", factor: float = 1.0) -> dict:
    """Over settings (seed means): mean of gain(name) - factor x gain(ref) and its standard error."""
    d = []
    for r in results:
        g, c = gain_per_100(r, name, budget), gain_per_100(r, ref, budget)
        d.append(float(np.mean([g[t] - factor * c[t] for t in g])))
    d = np.array(d)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "se": se, "wins": int((d > 0).sum()), "n": len(d)}


def mean_gain(results: list[dict], name: str, budgets=BUDGETS) -> float:
    return float(np.mean([np.mean(list(gain_per_100(r, name, b).values())) for r in results for b in budgets]))


def all_budgets_paired(results: list[dict], name: str, ref: str = "cleanlab", factor: float = 1.0) -> dict:
    """Paired over (setting, budget) pairs averaged per setting first, so the SE is over settings."""
    d = []
    for r in results:
        per_b = []
        for b in BUDGETS:
            g, c = gain_per_100(r, name, b), gain_per_100(r, ref, b)
            per_b.append(np.mean([g[t] - factor * c[t] for t in g]))
        d.append(float(np.mean(per_b)))
    d = np.array(d)
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan"),
            "wins": int((d > 0).sum()), "n": len(d)}


def _fmt(v: float, digits: int = 2, sign: bool = True) -> str:
    if v != v:
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def order_table(results: list[dict], names: list[str]) -> tuple[str, dict]:
    rows, summary = [], {}
    for name in names:
        row = [name]
        for b in BUDGETS:
            row.append(_fmt(float(np.mean([np.mean(list(gain_per_100(r, name, b).values())) for r in results]))))
        g_all, c_all = mean_gain(results, name), mean_gain(results, "cleanlab")
        ratio = g_all / c_all if c_all else float("nan")
        p = all_budgets_paired(results, name)
        p125 = all_budgets_paired(results, name, factor=1.25)
        pc = all_budgets_paired(results, name, ref="curate")
        err_share = np.mean([r["reviewed"][(name, 0.10)][1] / r["reviewed"][(name, 0.10)][0] for r in results])
        row += [_fmt(g_all), _fmt(ratio, 3, sign=False), f"{_fmt(p['mean'])} ± {_fmt(p['se'], sign=False)}",
                f"{p['wins']}/{p['n']}", f"{_fmt(p125['mean'])} ± {_fmt(p125['se'], sign=False)}",
                f"{_fmt(pc['mean'])} ± {_fmt(pc['se'], sign=False)}", f"{err_share:.2f}"]
        summary[name] = {"gain": g_all, "ratio": ratio, "paired": p, "paired125": p125, "vs_curate": pc}
        rows.append(row)
    header = ["order", *[f"gain/100 @{int(b * 100)}%" for b in BUDGETS], "gain/100 (all budgets)", "x cleanlab",
              "paired diff vs cleanlab ± SE", "settings > cleanlab", "gain - 1.25 x cleanlab ± SE",
              "paired diff vs curate ± SE", "errors among reviewed @10%"]
    return markdown_table(header, rows), summary


def budget_paired_table(results: list[dict], names: list[str]) -> str:
    rows = []
    for name in names:
        if name == "cleanlab":
            continue
        row = [name]
        for b in BUDGETS:
            p = paired(results, name, b)
            row.append(f"{_fmt(p['mean'])} ± {_fmt(p['se'], sign=False)} ({p['wins']}/{p['n']})")
        rows.append(row)
    return markdown_table(["order", *[f"diff vs cleanlab @{int(b * 100)}%" for b in BUDGETS]], rows)


def group_table(results: list[dict]) -> str:
    return group_summary(results)[0]


def group_summary(results: list[dict]) -> tuple[str, list[str]]:
    """Per property: accuracy points per 100 errors fixed, with the property vs without, paired per
    setting; and one line per property saying whether the difference is beyond 2 SE."""
    names = list(results[0]["group_sizes"])
    rows, findings = [], []
    for g in names:
        d, a_all, b_all = [], [], []
        for r in results:
            key_a, key_b = ("group", g, "with"), ("group", g, "without")
            if key_a not in r["acc"]:
                continue
            m = r["group_sizes"][g][0]
            none = r["acc"][("none",)]
            ga = np.mean([(r["acc"][key_a][t] - none[t]) * 1e4 / m for t in none])
            gb = np.mean([(r["acc"][key_b][t] - none[t]) * 1e4 / m for t in none])
            a_all.append(ga)
            b_all.append(gb)
            d.append(ga - gb)
        if not d:
            rows.append([g, "n/a", "n/a", "n/a", "0"])
            continue
        d = np.array(d)
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        rows.append([g, _fmt(float(np.mean(a_all))), _fmt(float(np.mean(b_all))), f"{_fmt(float(d.mean()))} ± {_fmt(se, sign=False)}",
                     str(len(d))])
        verdict = ("moves accuracy more when fixed" if d.mean() > 2 * se else
                   "moves accuracy less when fixed" if d.mean() < -2 * se else "no difference beyond 2 SE")
        findings.append(f"- {g}: the first group {verdict} ({_fmt(float(d.mean()))} ± {_fmt(se, sign=False)} points "
                        f"per 100 fixed, {len(d)} settings).")
    return markdown_table(["errors split by", "gain per 100 fixed: with", "without", "difference ± SE (over settings)",
                           "settings"], rows), findings


def setting_rows(results: list[dict], names: list[str]) -> str:
    rows = []
    for r in results:
        none = np.mean(list(r["acc"][("none",)].values()))
        clean = np.mean(list(r["acc"][("clean",)].values()))
        row = [str(r["setting"]), r["setting"].role, str(r["errors"]), f"{none:.3f}", f"{clean:.3f}"]
        row += [_fmt(float(np.mean([np.mean(list(gain_per_100(r, nm, b).values())) for b in BUDGETS]))) for nm in names]
        rows.append(row)
    return markdown_table(["setting", "set", "errors", "acc none", "acc clean", *names], rows)


# --- plan and report -------------------------------------------------------------------------------


def plan(quick: bool) -> list[Setting]:
    if quick:
        return [Setting("digits-tab", "classcond", 0.2, 0), Setting("digits-tab", "uniform", 0.2, 1)]
    out = []
    for dataset in ("digits-tab", "classif", "digits-img", "topics"):
        for noise in ("uniform", "classcond", "boundary"):
            for rate in (0.1, 0.3):
                for seed in (*TUNING_SEEDS, *REPORTED_SEEDS):
                    out.append(Setting(dataset, noise, rate, seed))
    return out


def report(results: list[dict], argv: list[str], minutes: float, load: tuple, train_seeds: int, steps: int,
           parts: list[str] | None = None) -> str:
    import cleanlab
    import torch

    names = list(ORDER_NOTES)
    tuning = [r for r in results if r["setting"].role == "tuning"]
    reported = [r for r in results if r["setting"].role == "reported"]
    lines = ["# Curation simulation: what a review order buys per relabel", "",
             f"`{' '.join(shlex.quote(a) for a in argv)}` at commit {commit()}, "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: {minutes:.1f} min on {machine()}, torch {torch.__version__} "
             f"(CPU), cleanlab {cleanlab.__version__}; load average {load[0]:.1f} at start, {load[1]:.1f} at end.", "",
             *([f"Merged from processes run side by side on the same machine: {'; '.join(parts)}.", ""] if parts else []),
             "## Setup", "",
             "- Settings: " + ", ".join(sorted({r['setting'].dataset for r in results})) + " x noise "
             + ", ".join(sorted({r['setting'].noise for r in results})) + " x rates "
             + ", ".join(sorted({f"{int(round(r['setting'].rate * 100))}%" for r in results})) + ". "
             f"Tuning set: data seed {', '.join(map(str, TUNING_SEEDS))} ({len(tuning)} settings; the candidate orders "
             f"were designed and adjusted on these). Reported set: data seeds {', '.join(map(str, REPORTED_SEEDS))} "
             f"({len(reported)} settings: other splits, other noise draws and, for classif and topics, other data).",
             "- Data: digits-tab (scikit-learn digits, 64 features), classif (make_classification, 2,000 x 20, 10 classes), "
             "digits-img (the demo's 8x8 PNGs as pixels: train 1,000, valid 300, test 197), topics (generated documents, "
             "10 topics in confusable pairs, TF-IDF then SVD to 64 dimensions); train 60% / valid 20% / test 20% "
             "except digits-img. Noise on train only: uniform and classcond as in bench/label_errors.py; boundary = the "
             "most ambiguous third of train under a clean-label logistic regression (out-of-fold top-2 margin), a "
             "random rate x n of them flipped to their second class. Valid and test are clean.",
             f"- Model: a one-hidden-layer MLP (32 ReLU units) on the standardised features, full-batch Adam "
             f"(lr 0.02, weight decay 1e-4, {steps} steps); many models train at once as one batched network. The run: "
             "5-fold out-of-fold probabilities and a final model on all of train (AUM over its steps, its hidden layer "
             "as the embeddings, its per-class F1 on valid). Curate's combined score, flagged set and review priority "
             "come from app.scoring on these (`combined_score` with the AUM, `flag_label_errors(score=combined)`, "
             "`review_priority`).",
             f"- Simulation: for each order and budget (5, 10, 20% of train) the top of the order is relabelled to the "
             f"true label (a reviewed sample that was right stays as it is) and the MLP is retrained with {train_seeds} "
             "training seeds, the same seeds for every order, no curation and all labels clean. Gain = test accuracy "
             "points over no curation per 100 reviewed samples. Paired: per setting, the mean over seeds of the order's "
             "gain minus cleanlab's (same noisy labels, same seeds); SE over settings. `gain - 1.25 x cleanlab` > 0 "
             "by 2 SE is the issue's adoption test.",
             "", "Orders:", ""]
    lines += [f"- `{n}`: {ORDER_NOTES[n]}" for n in names]
    lines += ["", "KNN-Shapley relabel value: for a train sample at rank r among a reference point t's neighbours "
              "(embedding space, 50 deep, K = 10), relabelling it from y to the suggested class (out-of-fold argmax) "
              "changes its KNN-Shapley value by (1[new = y_t] - 1[old = y_t]) min(K, r) / (K r); summed over the "
              "reference points and weighted by 1 - p[y] it is the expected gain. The valid reference uses valid's "
              "given labels (clean here, as in bench/label_errors.py)."]
    summary = {}
    for title, rs in (("Reported settings", reported), ("Tuning settings", tuning)):
        if not rs:
            continue
        table, summ = order_table(rs, names)
        summary[title] = summ
        lines += ["", f"## {title} ({len(rs)})", "", table, "", "Per budget, paired against cleanlab (mean ± SE over "
                  "settings, settings where the order gains more):", "", budget_paired_table(rs, names)]
    lines += ["", "## Verdict", ""]
    if "Reported settings" in summary:
        s = summary["Reported settings"]
        best = max((n for n in names if n not in ("cleanlab", "random")), key=lambda n: s[n]["gain"])
        b = s[best]
        wins125 = [n for n in names if n not in ("cleanlab", "random")
                   and s[n]["paired125"]["mean"] > 2 * s[n]["paired125"]["se"]]
        lines.append(f"Best order on the reported settings: `{best}`, {b['gain']:+.2f} points per 100 reviewed, "
                     f"{b['ratio']:.3f}x cleanlab's {s['cleanlab']['gain']:+.2f} (paired {b['paired']['mean']:+.2f} ± "
                     f"{b['paired']['se']:.2f}); Curate's current priority: {s['curate']['gain']:+.2f}, "
                     f"{s['curate']['ratio']:.3f}x (paired {s['curate']['paired']['mean']:+.2f} ± "
                     f"{s['curate']['paired']['se']:.2f}).")
        lines.append("")
        lines.append("Orders at or above 1.25x cleanlab by 2 SE (paired): " + (", ".join(f"`{n}`" for n in wins125) or
                                                                            "none."))
    lines += ["", "## Which corrected errors move test accuracy", "",
              "On every setting (tuning and reported), the train samples whose given label is wrong are split in two by "
              "a property; an equal number m = min(5% of train, both halves) drawn at random from each half is fixed "
              "alone and the MLP retrained with the same seeds. Gain per 100 errors fixed (test points), with the "
              "property vs without, paired per setting:", "", group_summary(results)[0], "",
              *group_summary(results)[1], "", "<!-- findings -->", "", "## Per setting", "", "Gain per 100 reviewed, mean of the three budgets and the "
              "training seeds.", "", setting_rows(results, names)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two settings, 3 seeds, fewer steps (a smoke test)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "curation.md"))
    ap.add_argument("--only", default=None, help="comma-separated datasets")
    ap.add_argument("--seeds", type=int, default=None, help="training seeds per cell (default 5, 3 with --quick)")
    ap.add_argument("--part", default=None, help="i/n: run every n-th setting from the i-th (processes side by side)")
    ap.add_argument("--raw", default=None, help="pickle the results here (for --report-from)")
    ap.add_argument("--report-from", default=None, help="comma-separated pickles of --raw runs: merge and report")
    args = ap.parse_args(argv)
    full_argv = ["bench/curation.py", *(argv if argv is not None else sys.argv[1:])]
    if args.report_from:
        import pickle

        results, meta = [], []
        for path in args.report_from.split(","):
            with open(path, "rb") as fh:
                part = pickle.load(fh)
            results += part["results"]
            meta.append(part)
        results.sort(key=lambda r: (r["setting"].seed, r["setting"].dataset, r["setting"].noise, r["setting"].rate))
        text = report(results, full_argv, max(m["minutes"] for m in meta),
                      (min(m["load"][0] for m in meta), max(m["load"][1] for m in meta)),
                      meta[0]["train_seeds"], meta[0]["steps"],
                      parts=[f"`{' '.join(shlex.quote(a) for a in m['argv'])}`: {m['minutes']:.1f} min" for m in meta])
        write_report(text, args.out)
        return results
    import torch

    torch.set_num_threads(int(os.environ.get("CURATE_TORCH_THREADS", "1")))
    train_seeds = args.seeds or (3 if args.quick else 5)
    steps = 60 if args.quick else 120
    settings = plan(args.quick)
    if args.only:
        keep = set(args.only.split(","))
        settings = [s for s in settings if s.dataset in keep]
    if args.part:
        i, n = (int(v) for v in args.part.split("/"))
        settings = settings[i::n]
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    results = []

    def save_raw() -> None:
        if args.raw:
            import pickle

            with open(args.raw, "wb") as fh:
                pickle.dump({"results": results, "argv": full_argv, "minutes": (time.perf_counter() - t0) / 60,
                             "load": (load0, os.getloadavg()[0]), "train_seeds": train_seeds, "steps": steps}, fh)

    for i, s in enumerate(settings):
        t = time.perf_counter()
        r = run_setting(s, train_seeds, steps)
        results.append(r)
        save_raw()  # after every setting, so a run cut short still reports what it did
        g = {n: np.mean([np.mean(list(gain_per_100(r, n, b).values())) for b in BUDGETS]) for n in ORDER_NOTES}
        print(f"[{i + 1}/{len(settings)}] {s} ({s.role}): {time.perf_counter() - t:.1f}s  "
              + "  ".join(f"{n} {v:+.2f}" for n, v in g.items()), flush=True)
    minutes = (time.perf_counter() - t0) / 60
    load = (load0, os.getloadavg()[0])
    text = report(results, full_argv, minutes, load, train_seeds, steps)
    write_report(text, args.out)
    return results


if __name__ == "__main__":
    main()
