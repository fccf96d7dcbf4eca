"""Label-error detection: Curate's scores and flagged set against cleanlab, on the same probabilities.

    CURATE_TORCH_THREADS=1 .venv/bin/python bench/label_errors.py [--quick] [--out PATH]
    CURATE_TORCH_THREADS=1 .venv/bin/python bench/label_errors.py --external   # a few minutes, no training

One process, one temporary SQLite database and blob store, side by side:
  data     scikit-learn digits as a table (64 features) and as 8x8 PNGs (app.datasets.demo's
           images and split), and make_classification sets (10 classes, 2,000 samples); the train
           split gets uniform or class-conditional noise at 10, 20 and 40%; valid and test stay clean.
  probs    Curate's real train job (imported through the REST API, run with a LocalJobContext,
           out-of-fold scoring) gives the out-of-fold matrix; the final model (trained on all of
           train) gives the in-sample one. A 5-fold logistic regression (cross_val_predict) is
           the second source, the one cleanlab's published digits figures use.
  arms     on each source: Curate's scores (loss in-sample and out-of-fold, normalized margin,
           aum, combined) and flagged set; cleanlab's get_label_quality_scores (every method)
           and find_label_issues (every filter_by); random.
  metrics  AUROC, AUPRC, precision at the true number of errors; precision, recall, F1 and size
           of each flagged set; a curation simulation: relabel the top 10% and 20% of train in an
           arm's order to the true labels through PATCH /api/v1/samples/{id} (If-Match), retrain
           with the train job, and compare test accuracy with random and cleanlab orders, with no
           curation and with every label clean.
  multilabel (--multilabel) Curate's multi-label scores and flagged set against cleanlab's
           multilabel_classification on synthetic multi-label sets (bench/multilabel_errors.py); writes
           only the report's multi-label section, at its end, and keeps the rest (as every run keeps it).
  external (--external) the logistic regression's probabilities of every setting posted as a run without
           training dynamics through POST /api/v1/datasets/{id}/runs (bring your own predictions); the run's
           stored combined score, flagged set and priority against cleanlab on the same matrix. It writes
           only the report's external-runs section and keeps the rest of the file (a full run keeps it too).
Prints the tables and writes bench/results/label_errors.md.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # One thread per library (before numpy loads): the machine is shared, every arm gets the same budget.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("CURATE_TORCH_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
import zipfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "label_errors.md"
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
RATES = (0.10, 0.20, 0.40)
NOISES = ("uniform", "classcond")
BUDGETS = (0.10, 0.20)
CLEANLAB_FILTERS = (
    "prune_by_noise_rate",  # cleanlab's default
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_normalized_margin",
    "low_self_confidence",
)
# Curate's flag methods (None: the function's default) -> arm name.
CURATE_FLAG_METHODS = {
    None: "curate:flagged",  # the default, as the train job calls it (with the combined score where it takes one)
    "prune_by_noise_rate": "curate:flagged_pbnr",
    "confident_joint_off_diagonal": "curate:flagged_cj_offdiag",
    "both": "curate:flagged_both",
}
CLEANLAB_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


# --- settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    dataset: str  # digits-tab | classif | digits-img
    noise: str  # uniform | classcond
    rate: float
    seed: int

    @property
    def key(self) -> tuple:
        return (self.dataset, self.noise, self.rate)

    def __str__(self) -> str:
        return f"{self.dataset} {self.noise} {int(self.rate * 100)}% seed {self.seed}"


@dataclass
class Plan:
    settings: list[Setting]
    simulate: set[Setting]
    params: dict[str, dict]  # train job params per dataset
    retrain_epochs: dict[str, int]
    notes: list[str] = field(default_factory=list)
    sim_seeds: int = 1  # training seeds per simulation cell (the same for every order)


def full_plan() -> Plan:
    settings, simulate = [], set()
    for dataset in ("digits-tab", "classif"):
        for noise in NOISES:
            for rate in RATES:
                for seed in (0, 1, 2):
                    s = Setting(dataset, noise, rate, seed)
                    settings.append(s)
                    if seed == 0:
                        simulate.add(s)
    # Images cost ~20x more per model on this CPU: one seed, class-conditional noise at 20% and 40%.
    for rate in (0.20, 0.40):
        settings.append(Setting("digits-img", "classcond", rate, 0))
    simulate.add(Setting("digits-img", "classcond", 0.20, 0))
    return Plan(
        settings,
        simulate,
        params={
            "digits-tab": {},  # the default tabular recipe: MLP [200, 100], 10 epochs, lr_find
            "classif": {},
            # resnet18 at 32 px from scratch; 5 epochs instead of 8 and a fixed lr instead of
            # lr_find (~90 s) to fit the CPU budget.
            "digits-img": {"epochs": 5, "lr": 2e-3, "pretrained": False},
        },
        retrain_epochs={"digits-tab": 10, "classif": 10, "digits-img": 5},
        sim_seeds=3,
        notes=[
            "Tabular sets: 2 datasets x 2 noise kinds x 3 rates x 3 seeds, the default tabular recipe "
            "(MLP [200, 100], 10 epochs, lr_find, 5 folds).",
            "Image set: one seed, class-conditional noise at 20% and 40% only; resnet18 from scratch at 32 px, "
            "5 epochs (the default is 8), lr fixed at 2e-3 (no lr_find), 5 folds.",
            "Curation simulation: seed 0 of every tabular setting and the image set at class-conditional 20%; "
            "each cell retrained with 3 training seeds.",
        ],
    )


def quick_plan() -> Plan:
    s = Setting("digits-tab", "classcond", 0.20, 0)
    return Plan(
        [s], {s}, params={"digits-tab": {"epochs": 5}}, retrain_epochs={"digits-tab": 5},
        notes=["--quick: one setting, 5 epochs."],
    )


# --- data -------------------------------------------------------------------------------


@dataclass
class Data:
    """One dataset before noise: inputs, true labels, splits (train, valid, test)."""

    task: str
    classes: list[str]
    y_true: np.ndarray
    split: np.ndarray
    X: np.ndarray  # features (tabular) or flattened pixels (images), for the logistic regression
    pngs: list[bytes] | None = None


def load_data(dataset: str, seed: int) -> Data:
    from sklearn.datasets import load_digits, make_classification

    rng = np.random.default_rng(seed)
    if dataset == "digits-img":
        from PIL import Image

        from app.datasets.demo import demo_records

        # The demo's images and split; its own 10% flips are replaced by this bench's noise.
        recs = [r for r in demo_records(seed) if r.split != "unlabelled"]
        pngs = [r.png for r in recs]
        X = np.stack([np.asarray(Image.open(io.BytesIO(p)), dtype=np.float64).ravel() / 255 for p in pngs])
        y = np.array([int(r.true_label) for r in recs])
        return Data("image", [str(c) for c in range(10)], y, np.array([r.split for r in recs]), X, pngs)
    if dataset == "digits-tab":
        d = load_digits()
        X, y = d.data.astype(np.float64), d.target
    elif dataset == "classif":
        X, y = make_classification(
            n_samples=2000, n_features=20, n_informative=10, n_redundant=4, n_classes=10,
            n_clusters_per_class=1, class_sep=1.5, random_state=seed,
        )
    else:
        raise ValueError(dataset)
    n = len(y)
    split = np.array(["train"] * n, dtype=object)
    order = rng.permutation(n)
    split[order[int(0.6 * n): int(0.8 * n)]] = "valid"
    split[order[int(0.8 * n):]] = "test"
    return Data("tabular", [str(c) for c in range(10)], y, split.astype(str), X)


def transition(k: int, noise: str, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-class flip rate, k x k destination distribution over the other classes).

    uniform: every class flips at `rate`, to any other class alike. classcond: a fixed random
    matrix (the same for every seed): class i flips at rate x w_i (w_i in [0.75, 1.25]), 60%
    of its flips into one confusable class, 30% into a second, 10% spread over the rest.
    """
    if noise == "uniform":
        dest = np.full((k, k), 1.0 / (k - 1))
        np.fill_diagonal(dest, 0.0)
        return np.full(k, rate), dest
    rng = np.random.default_rng(1234)
    while True:
        first = rng.permutation(k)
        if (first != np.arange(k)).all():
            break
    dest = np.zeros((k, k))
    for i in range(k):
        second = rng.choice([c for c in range(k) if c not in (i, first[i])])
        rest = [c for c in range(k) if c not in (i, first[i], second)]
        dest[i, first[i]], dest[i, second] = 0.6, 0.3
        dest[i, rest] = 0.1 / len(rest)
    w = rng.uniform(0.75, 1.25, k)
    return rate * w / w.mean(), dest


def add_noise(y: np.ndarray, split: np.ndarray, noise: str, rate: float, seed: int) -> np.ndarray:
    """The given labels: train labels flipped per `transition`, exactly round(rate_i * n_i) per class."""
    k = int(y.max()) + 1
    rates, dest = transition(k, noise, rate)
    rng = np.random.default_rng(10_000 + seed)
    given = y.copy()
    for c in range(k):
        members = np.flatnonzero((split == "train") & (y == c))
        flip = rng.choice(members, size=int(round(rates[c] * len(members))), replace=False)
        given[flip] = rng.choice(k, size=len(flip), p=dest[c])
    return given


# --- the app ----------------------------------------------------------------------------


class App:
    """Curate in-process: a migrated SQLite database, a TestClient and an admin token."""

    def __init__(self, tmp: Path) -> None:
        from fastapi.testclient import TestClient

        from app.auth.service import create_token, create_user
        from app.config import Settings
        from app.db import get_engine, session_scope
        from app.main import create_app
        from app.migrate import upgrade

        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        self.settings = Settings(database_url=url, data_dir=tmp / "data", secret_key=SECRET, _env_file=None)
        self.engine = get_engine(url)
        with session_scope(self.engine) as session:
            user, _ = create_user(session, "bench", "admin")
            _, token = create_token(session, user, "bench")
        self.client = TestClient(create_app(self.settings))
        self.headers = {"Authorization": f"Bearer {token}"}

    def import_dataset(self, name: str, data: Data, given: np.ndarray) -> np.ndarray:
        """Create the dataset and import it through the REST API; returns the sample id of each row."""
        from sqlalchemy import select

        from app.models import Sample

        r = self.client.post("/api/v1/datasets", json={"name": name, "task": data.task, "classes": data.classes},
                             headers=self.headers)
        r.raise_for_status()
        ds_id = r.json()["id"]
        ids = [f"r{i}" for i in range(len(given))]
        labels = [data.classes[c] for c in given]
        if data.task == "tabular":
            df = pd.DataFrame({"id": ids, "label": labels, "split": data.split})
            feats = pd.DataFrame(data.X, columns=[f"x{j}" for j in range(data.X.shape[1])])
            body, filename = pd.concat([df, feats], axis=1).to_csv(index=False).encode(), "data.csv"
        else:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                table = pd.DataFrame({"id": ids, "label": labels, "split": data.split, "image": [f"img/{i}.png" for i in ids]})
                zf.writestr("labels.csv", table.to_csv(index=False))
                for i, png in zip(ids, data.pngs):
                    zf.writestr(f"img/{i}.png", png)
            body, filename = buf.getvalue(), "data.zip"
        r = self.client.post(f"/api/v1/datasets/{ds_id}/imports", files={"file": (filename, body)}, headers=self.headers)
        if r.status_code != 201:
            raise RuntimeError(f"import failed: {r.status_code} {r.text[:500]}")
        with self.engine.connect() as conn:
            rows = dict(conn.execute(select(Sample.external_id, Sample.id).where(Sample.dataset_id == ds_id)).all())
        self.dataset_id = ds_id
        return np.array([rows[i] for i in ids])

    def relabel(self, sample_ids: np.ndarray, labels: list[str]) -> None:
        """PATCH each sample's label, with If-Match carrying the version read just before."""
        from sqlalchemy import select

        from app.models import Sample

        if len(sample_ids) == 0:
            return
        with self.engine.connect() as conn:
            versions = dict(conn.execute(select(Sample.id, Sample.version).where(Sample.id.in_([int(s) for s in sample_ids]))).all())
        for sid, label in zip(sample_ids.tolist(), labels):
            r = self.client.patch(f"/api/v1/samples/{sid}", json={"label": label},
                                  headers={**self.headers, "If-Match": f'"{versions[sid]}"'})
            if r.status_code != 200:
                raise RuntimeError(f"PATCH sample {sid}: {r.status_code} {r.text[:300]}")


# --- Curate's train job -----------------------------------------------------------------


@dataclass
class CurateRun:
    P_oof: np.ndarray  # train rows, in the order of `train_ids`
    P_in: np.ndarray  # the final model (trained on all of train) on the same rows
    aum: np.ndarray | None
    priority: np.ndarray | None  # the review priority the job stored (low = reviewed first); None in older checkouts
    train_ids: np.ndarray
    seconds: float  # the job's wall time, less the bench's own in-sample prediction
    timings: dict
    lr: float
    test_accuracy: float | None


def _capturing_train_run():
    """TrainRun that also keeps the full probability matrix it stores (the database keeps the top 5)
    and the final model's predictions on train; nothing else changes."""
    from app.training import jobs

    class CapturingTrainRun(jobs.TrainRun):
        captured: dict = {}

        def _train(self, learn, *args, **kwargs):
            seconds = super()._train(learn, *args, **kwargs)
            model = kwargs.get("model", args[2] if len(args) > 2 else None)
            if model == "final":
                from app.training.learners import predict_probs

                t = time.perf_counter()
                CapturingTrainRun.captured["P_in"] = predict_probs(self.plan.adapter, learn, self.data.train)
                CapturingTrainRun.captured["extra_s"] = time.perf_counter() - t
            return seconds

        def _write(self, P, fold_col, *args, **kwargs):
            items = self.data.items
            CapturingTrainRun.captured.update(
                P=np.array(P, copy=True), fold_col=np.array(fold_col, copy=True),
                sample_ids=items["sample_id"].to_numpy(), train_ids=self.data.train["sample_id"].to_numpy(),
            )
            return super()._write(P, fold_col, *args, **kwargs)

    return CapturingTrainRun


def run_job(app: App, dataset_id: int, params: dict):
    """Curate's train job in-process (what a worker runs); returns (result, wall seconds, captured)."""
    from app.jobs import registry
    from app.jobs.context import LocalJobContext
    from app.training import jobs

    cls = _capturing_train_run()
    cls.captured = {}
    ctx = LocalJobContext(engine=app.engine, settings=app.settings, params=params, dataset_id=dataset_id)
    t = time.perf_counter()
    with mock.patch.object(jobs, "TrainRun", cls), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = registry.run_job(ctx, "train")
    return result, time.perf_counter() - t, cls.captured


def curate_oof(app: App, dataset_id: int, params: dict) -> CurateRun:
    from sqlalchemy import select

    from app.models import Prediction, Run

    result, seconds, cap = run_job(app, dataset_id, {**params, "scoring": "out_of_fold"})
    train_ids = cap["train_ids"]
    pos = pd.Series(np.arange(len(cap["sample_ids"])), index=cap["sample_ids"])[train_ids].to_numpy()
    assert (cap["fold_col"][pos] >= 0).all(), "every train sample must be scored out-of-fold"
    has_priority = hasattr(Prediction, "priority")
    with app.engine.connect() as conn:
        stored = {row[0]: row[1:] for row in conn.execute(
            select(Prediction.sample_id, Prediction.aum, *([Prediction.priority] if has_priority else []))
            .where(Prediction.run_id == result["run_id"])
        ).all()}
        run = conn.execute(select(Run.info).where(Run.id == result["run_id"])).scalar_one()

    def column(j: int) -> np.ndarray | None:
        values = np.array([np.nan if stored[int(s)][j] is None else stored[int(s)][j] for s in train_ids], dtype=np.float64)
        return None if np.isnan(values).all() else values  # null everywhere: this checkout does not store it

    aum = column(0)
    priority = column(1) if has_priority else None
    return CurateRun(
        P_oof=cap["P"][pos], P_in=cap["P_in"], aum=aum, priority=priority, train_ids=train_ids,
        seconds=seconds - cap.get("extra_s", 0.0), timings=run.get("timings", {}), lr=float(run["lr"]),
        test_accuracy=result.get("test_accuracy"),
    )


# --- the arms ---------------------------------------------------------------------------


def new_pieces() -> dict[str, Callable | None]:
    """Curate's combined score and flagged set, when this checkout has them."""
    out: dict = {"combined": None, "flag": None, "flag_methods": (), "priority": None}
    with contextlib.suppress(ImportError):
        from app.scoring.combined import combined_score

        out["combined"] = combined_score
    with contextlib.suppress(ImportError):
        from app.scoring.flagged import flag_label_errors

        out["flag"] = flag_label_errors
    with contextlib.suppress(ImportError):
        from app.scoring.priority import review_priority

        out["priority"] = review_priority
    with contextlib.suppress(ImportError):
        from app.scoring.flagged import METHODS

        out["flag_methods"] = tuple(METHODS)
    return out


def _timed(fn: Callable, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def rank_arms(P_oof: np.ndarray, P_in: np.ndarray, y: np.ndarray, aum: np.ndarray | None, seed: int,
              pieces: dict) -> dict[str, tuple[np.ndarray | None, float]]:
    """name -> (suspicion, higher is more suspicious, or None when the arm is not available; seconds)."""
    from cleanlab.rank import get_label_quality_scores

    from app.scoring import scores

    arms: dict[str, tuple[np.ndarray | None, float]] = {}
    arms["curate:loss_in_sample"] = _timed(scores.loss, P_in, y)
    arms["curate:loss_oof"] = _timed(scores.loss, P_oof, y)
    nm, t = _timed(scores.normalized_margin, P_oof, y)
    arms["curate:normalized_margin"] = (-nm, t)
    # A sample the AUM callback never saw (NaN) ranks as least suspicious.
    arms["curate:aum"] = (None, 0.0) if aum is None else (-np.where(np.isnan(aum), np.nanmax(aum), aum), 0.0)
    if pieces["combined"] is None:
        arms["curate:combined"] = (None, 0.0)
    else:
        c, t = _timed(pieces["combined"], P_oof, y, aum=aum)
        arms["curate:combined"] = (-np.asarray(c, dtype=np.float64), t)
    for method in CLEANLAB_METHODS:
        q, t = _timed(get_label_quality_scores, y, P_oof, method=method)
        arms[f"cleanlab:{method}"] = (-q, t)
    arms["random"] = (np.random.default_rng(seed).random(len(y)), 0.0)
    return arms


def flag_arms(P_oof: np.ndarray, y: np.ndarray, pieces: dict, combined: np.ndarray | None = None) -> dict[str, tuple[np.ndarray | None, float, dict]]:
    """name -> (boolean mask of flagged samples or None, seconds, extra); `combined` (low = suspicious)
    goes to flag_label_errors the way the train job passes it, when the function takes a score."""
    import inspect

    from cleanlab.filter import find_label_issues

    arms: dict[str, tuple[np.ndarray | None, float, dict]] = {}
    takes_score = pieces["flag"] is not None and "score" in inspect.signature(pieces["flag"]).parameters
    for method, arm in CURATE_FLAG_METHODS.items():
        if pieces["flag"] is None or (method and method not in pieces["flag_methods"]):
            arms[arm] = (None, 0.0, {})
            continue
        kwargs = {"method": method} if method else {}
        if takes_score and combined is not None:
            kwargs["score"] = combined
        fs, t = _timed(pieces["flag"], P_oof, y, **kwargs)
        est = getattr(fs, "estimated", None)
        extra = {} if est is None else {"estimated": float(np.asarray(est).sum())}
        arms[arm] = (np.asarray(fs.mask, dtype=bool), t, extra)
    for f in CLEANLAB_FILTERS:
        try:
            mask, t = _timed(find_label_issues, y, P_oof, filter_by=f, n_jobs=1)
            arms[f"cleanlab:{f}"] = (np.asarray(mask, dtype=bool), t, {})
        except Exception as exc:  # a filter that cannot run on this input is reported, not fatal
            print(f"    cleanlab {f} failed: {type(exc).__name__}: {exc}", flush=True)
            arms[f"cleanlab:{f}"] = (None, 0.0, {})
    return arms


def priority_arm(P: np.ndarray, y: np.ndarray, arms: dict, flags: dict, pieces: dict,
                 stored: np.ndarray | None = None) -> tuple[np.ndarray | None, float]:
    """The review priority as a rank arm (higher = reviewed first): what the job stored, when given
    (Curate's probabilities), else computed the same way from this matrix's flagged set and combined score."""
    if stored is not None:
        return -stored, 0.0
    combined, flagged = arms["curate:combined"][0], flags["curate:flagged"][0]
    if pieces["priority"] is None or combined is None or flagged is None:
        return None, 0.0
    priority, t = _timed(pieces["priority"], P, y, flagged, -combined)
    return -priority, t


def rank_metrics(s: np.ndarray, is_err: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = int(is_err.sum())
    top = np.argsort(-s, kind="stable")[:k]
    return {"auroc": float(roc_auc_score(is_err, s)), "auprc": float(average_precision_score(is_err, s)),
            "p_at_k": float(is_err[top].mean()) if k else float("nan")}


def flag_metrics(mask: np.ndarray, is_err: np.ndarray) -> dict:
    tp = int((mask & is_err).sum())
    size, true = int(mask.sum()), int(is_err.sum())
    p = tp / size if size else 0.0
    r = tp / true if true else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "size": size, "true": true}


def lr_oof(X: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """5-fold out-of-fold and in-sample probabilities of a standardised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    t = time.perf_counter()
    P = cross_val_predict(model, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=seed), method="predict_proba")
    seconds = time.perf_counter() - t
    P_in = model.fit(X, y).predict_proba(X)
    return P, P_in, seconds


# --- one setting ------------------------------------------------------------------------


def curation_orders(arms: dict, flags: dict) -> dict[str, tuple[str, np.ndarray]]:
    """The review orders of the simulation: order name -> (what it is, train positions most suspicious first)."""
    out = {}
    combined = arms["curate:combined"][0]
    priority = arms.get("curate:priority", (None, 0.0))[0]
    # `curate` is the review queue's default order for labelled samples in this checkout.
    if priority is not None:
        out["curate"] = ("Curate review priority (the review queue's default, order=priority: the flagged set lowest "
                         "self-confidence first, then the rest by the combined score)", np.argsort(-priority, kind="stable"))
        if combined is not None:
            out["combined"] = ("Curate combined score alone (order=combined)", np.argsort(-combined, kind="stable"))
    elif combined is not None:
        out["curate"] = ("Curate combined score (the review queue's order=combined)", np.argsort(-combined, kind="stable"))
    else:
        out["curate"] = ("Curate loss out-of-fold (combined not available)", np.argsort(-arms["curate:loss_oof"][0], kind="stable"))
    # cleanlab's documented workflow: its default issues ranked by self-confidence, then the rest the same way.
    sc = arms["cleanlab:self_confidence"][0]
    flagged = flags["cleanlab:prune_by_noise_rate"][0]
    key = np.where(flagged, 1.0, 0.0)
    out["cleanlab"] = ("cleanlab find_label_issues (default) by self-confidence, then the rest",
                       np.lexsort((-sc, -key)))
    out["random"] = ("random", np.argsort(arms["random"][0], kind="stable"))
    return out


def simulate(app: App, setting: Setting, plan: Plan, run: CurateRun, pos: np.ndarray, data: Data,
             given: np.ndarray, orders: dict, n_seeds: int = 1) -> dict:
    """Relabel top budgets in each order through PATCH, retrain in-sample with each of `n_seeds` training
    seeds (the same seeds for every order, no curation and all clean), read test accuracy; undo each order."""
    classes = data.classes
    train_ids = run.train_ids
    y_true, y_given = data.y_true[pos], given[pos]
    n = len(train_ids)
    seeds = [setting.seed + k for k in range(max(n_seeds, 1))]
    params = {**plan.params[setting.dataset], "scoring": "in_sample", "lr": run.lr,
              "epochs": plan.retrain_epochs[setting.dataset], "seed": setting.seed}
    out: dict = {"n_train": n, "errors": int((y_true != y_given).sum()), "retrain_params": params, "orders": {},
                 "seeds": seeds}

    def retrain() -> list[float]:
        """Test accuracy after a retrain with each seed, in the order of `seeds`."""
        accs = []
        for seed in seeds:
            result, seconds, _ = run_job(app, app.dataset_id, {**params, "seed": seed})
            accs.append(result["test_accuracy"])
        return accs

    out["none_by_seed"] = retrain()
    out["none"] = statistics.fmean(out["none_by_seed"])
    wrong = np.flatnonzero(y_true != y_given)
    t = time.perf_counter()
    app.relabel(train_ids[wrong], [classes[c] for c in y_true[wrong]])
    out["patch_s"] = [(time.perf_counter() - t) / max(len(wrong), 1)]
    out["clean_by_seed"] = retrain()
    out["clean"] = statistics.fmean(out["clean_by_seed"])
    app.relabel(train_ids[wrong], [classes[c] for c in y_given[wrong]])
    for name, (what, order) in orders.items():
        done = 0
        fixed_all: list[int] = []
        rows = []
        for b in BUDGETS:
            upto = int(round(b * n))
            chunk = order[done:upto]
            fix = chunk[y_true[chunk] != y_given[chunk]]
            app.relabel(train_ids[fix], [classes[c] for c in y_true[fix]])
            fixed_all += fix.tolist()
            done = upto
            accs = retrain()
            rows.append({"budget": b, "reviewed": upto, "fixed": len(fixed_all), "test_accuracy": statistics.fmean(accs),
                         "test_accuracy_by_seed": accs})
        fixed_all = np.array(fixed_all, dtype=np.int64)
        app.relabel(train_ids[fixed_all], [classes[c] for c in y_given[fixed_all]])
        out["orders"][name] = {"what": what, "rows": rows}
    return out


def run_setting(app: App, setting: Setting, plan: Plan, pieces: dict) -> dict:
    data = load_data(setting.dataset, setting.seed)
    given = add_noise(data.y_true, data.split, setting.noise, setting.rate, setting.seed)
    name = f"{setting.dataset}-{setting.noise}-{int(setting.rate * 100)}-s{setting.seed}"
    sample_ids = app.import_dataset(name, data, given)
    ds_id = app.dataset_id
    params = {**plan.params[setting.dataset], "seed": setting.seed}
    run = curate_oof(app, ds_id, params)
    # Train rows in the job's order, mapped back to the data's rows.
    row_of = pd.Series(np.arange(len(sample_ids)), index=sample_ids)
    pos = row_of[run.train_ids].to_numpy()
    y, is_err = given[pos], given[pos] != data.y_true[pos]
    out: dict = {"setting": setting, "n_train": len(pos), "errors": int(is_err.sum()), "sources": {},
                 "curate_job_s": run.seconds, "curate_timings": run.timings, "curate_test_acc": run.test_accuracy,
                 "aum": run.aum is not None, "aum_missing": 0 if run.aum is None else int(np.isnan(run.aum).sum())}
    P_lr, P_lr_in, lr_s = lr_oof(data.X[pos], y, setting.seed)
    out["lr_cv_s"] = lr_s
    out["oof_acc"] = {"curate": float((run.P_oof.argmax(1) == y).mean()), "lr": float((P_lr.argmax(1) == y).mean())}
    for source, P, P_in, aum in (("curate", run.P_oof, run.P_in, run.aum), ("lr", P_lr, P_lr_in, None)):
        arms = rank_arms(P, P_in, y, aum, setting.seed, pieces)
        comb = arms["curate:combined"][0]
        flags = flag_arms(P, y, pieces, None if comb is None else -comb)
        arms["curate:priority"] = priority_arm(P, y, arms, flags, pieces, run.priority if source == "curate" else None)
        src = {"rank": {}, "flag": {}, "times": {}}
        for arm, (s, t) in arms.items():
            src["rank"][arm] = None if s is None else rank_metrics(s, is_err)
            src["times"][arm] = t
        for arm, (m, t, extra) in flags.items():
            src["flag"][arm] = None if m is None else {**flag_metrics(m, is_err), **extra}
            src["times"][arm] = t
        out["sources"][source] = src
        if source == "curate" and setting in plan.simulate:
            orders = curation_orders(arms, flags)
            t = time.perf_counter()
            out["simulation"] = simulate(app, setting, plan, run, pos, data, given, orders, plan.sim_seeds)
            out["simulation_s"] = time.perf_counter() - t
    return out


def run_simulation(app: App, setting: Setting, plan: Plan, pieces: dict) -> dict:
    """The curation simulation alone: import, Curate's out-of-fold job (for the orders), simulate."""
    data = load_data(setting.dataset, setting.seed)
    given = add_noise(data.y_true, data.split, setting.noise, setting.rate, setting.seed)
    name = f"{setting.dataset}-{setting.noise}-{int(setting.rate * 100)}-s{setting.seed}"
    sample_ids = app.import_dataset(name, data, given)
    run = curate_oof(app, app.dataset_id, {**plan.params[setting.dataset], "seed": setting.seed})
    pos = pd.Series(np.arange(len(sample_ids)), index=sample_ids)[run.train_ids].to_numpy()
    y = given[pos]
    arms = rank_arms(run.P_oof, run.P_in, y, run.aum, setting.seed, pieces)
    comb = arms["curate:combined"][0]
    flags = flag_arms(run.P_oof, y, pieces, None if comb is None else -comb)
    arms["curate:priority"] = priority_arm(run.P_oof, y, arms, flags, pieces, run.priority)
    t = time.perf_counter()
    sim = simulate(app, setting, plan, run, pos, data, given, curation_orders(arms, flags), plan.sim_seeds)
    return {"simulation": sim, "simulation_s": time.perf_counter() - t}


# --- external runs (bring your own predictions) ------------------------------------------


EXTERNAL_START = "<!-- external-runs:start -->"
EXTERNAL_END = "<!-- external-runs:end -->"
EXTERNAL_RANK = ("external:combined", "external:priority", "before:combined",
                 *[f"cleanlab:{m}" for m in CLEANLAB_METHODS])
EXTERNAL_FLAG = ("external:flagged", "before:flagged", *[f"cleanlab:{f}" for f in CLEANLAB_FILTERS])


def external_plan() -> Plan:
    """The full plan's 14 settings (38 with seeds) on the logistic regression only: no training, no simulation."""
    plan = full_plan()
    plan.simulate = set()
    plan.notes = [("--external: the full plan's settings, the logistic regression's probabilities only; no train job, "
                   "no curation simulation.")]
    return plan


def post_external_run(app: App, external_ids: list[str], classes: list[str], P: np.ndarray, name: str) -> int:
    """POST the probabilities as an external run (CSV, out_of_fold=true, normalize=none); returns the run id."""
    table = pd.DataFrame(P, columns=classes)
    table.insert(0, "external_id", external_ids)
    body = table.to_csv(index=False).encode()
    r = app.client.post(f"/api/v1/datasets/{app.dataset_id}/runs", files={"file": ("predictions.csv", body, "text/csv")},
                        data={"name": name, "out_of_fold": "true", "normalize": "none"}, headers=app.headers)
    if r.status_code != 201:
        raise RuntimeError(f"external run refused: {r.status_code} {r.text[:500]}")
    return int(r.json()["id"])


def stored_columns(app: App, run_id: int, sample_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The run's Prediction.combined, .flagged and .priority, in the order of `sample_ids`."""
    from sqlalchemy import select

    from app.models import Prediction

    with app.engine.connect() as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            select(Prediction.sample_id, Prediction.combined, Prediction.flagged, Prediction.priority)
            .where(Prediction.run_id == run_id)).all()}
    missing = [int(s) for s in sample_ids if int(s) not in rows]
    if missing:
        raise RuntimeError(f"run {run_id} has no prediction for {len(missing)} of the posted samples")

    def col(j: int, dtype) -> np.ndarray:
        return np.array([np.nan if rows[int(s)][j] is None else rows[int(s)][j] for s in sample_ids], dtype=dtype)

    return {"combined": col(0, np.float64), "flagged": col(1, np.float64).astype(bool), "priority": col(2, np.float64)}


def external_columns(app: App, setting: Setting, data: Data, given: np.ndarray, sample_ids: np.ndarray,
                     pos: np.ndarray, P: np.ndarray) -> tuple[dict[str, np.ndarray], str, float]:
    """Curate's columns for the train rows `pos` from the probabilities P: through POST
    /api/v1/datasets/{id}/runs when this checkout has it (app.runs.external), else
    app.training.label_errors.columns_from in-process. Returns (columns, how, seconds)."""
    t = time.perf_counter()
    try:
        from app.runs import external  # noqa: F401  (this checkout takes external runs)
    except ImportError:
        from app.training.label_errors import columns_from

        y = given[pos]
        cols = columns_from(P, y, np.array(["train"] * len(y)), data.classes, True, aum=None)
        return ({"combined": cols.combined, "flagged": cols.flagged, "priority": cols.priority}, "in-process columns_from",
                time.perf_counter() - t)
    run_id = post_external_run(app, [f"r{i}" for i in pos], data.classes, P, f"lr {setting}")
    return stored_columns(app, run_id, sample_ids[pos]), "POST /api/v1/datasets/{id}/runs", time.perf_counter() - t


def run_external_setting(app: App, setting: Setting, pieces: dict) -> dict:
    """Import the noisy dataset, post the logistic regression's out-of-fold probabilities of its train samples as
    an external run, read back what the run stored, and score it against cleanlab on the same matrix."""
    from app.scoring.combined import probability_rank
    from app.training.label_errors import columns_from

    data = load_data(setting.dataset, setting.seed)
    given = add_noise(data.y_true, data.split, setting.noise, setting.rate, setting.seed)
    name = f"{setting.dataset}-{setting.noise}-{int(setting.rate * 100)}-s{setting.seed}-external"
    sample_ids = app.import_dataset(name, data, given)
    pos = np.flatnonzero(data.split == "train")
    y, is_err = given[pos], given[pos] != data.y_true[pos]
    P, _, lr_s = lr_oof(data.X[pos], y, setting.seed)
    stored, how, post_s = external_columns(app, setting, data, given, sample_ids, pos, P)
    # The same code in-process on the matrix as posted: the route's renormalisation aside, it must agree.
    direct = columns_from(P, y, np.array(["train"] * len(y)), data.classes, True, aum=None)
    check = {"combined": float(np.nanmax(np.abs(direct.combined - stored["combined"]))),
             "flagged": int((direct.flagged != stored["flagged"]).sum())}
    # Before: the combined score of a run without AUM was the probability rank, and the flagged set was chosen by it.
    before = probability_rank(P, y)
    arms = rank_arms(P, P, y, None, setting.seed, pieces)
    rank = {"external:combined": -stored["combined"], "external:priority": -stored["priority"], "before:combined": -before}
    rank.update({a: arms[a][0] for a in EXTERNAL_RANK if a.startswith("cleanlab:")})
    flags = flag_arms(P, y, pieces)
    flag = {"external:flagged": stored["flagged"],
            "before:flagged": np.asarray(pieces["flag"](P, y, score=before).mask, dtype=bool)}
    flag.update({a: flags[a][0] for a in EXTERNAL_FLAG if a.startswith("cleanlab:")})
    return {
        "setting": setting, "n_train": len(pos), "errors": int(is_err.sum()), "how": how, "check": check,
        "lr_cv_s": lr_s, "post_s": post_s, "oof_acc": float((P.argmax(1) == y).mean()),
        "rank": {a: None if s is None else rank_metrics(s, is_err) for a, s in rank.items()},
        "flag": {a: None if m is None else flag_metrics(m, is_err) for a, m in flag.items()},
    }


def external_summary(results: list[dict]) -> dict:
    """Per setting (seed-averaged): Curate's external-run combined AUPRC, flagged F1 and priority AUPRC, and the
    same for the probability rank it replaced, against cleanlab's best quality score and default and best filters."""
    rows = []
    for key, rs in group(results).items():
        def m(kind: str, arm: str, metric: str, rs: list[dict] = rs) -> float | None:
            return _mean([None if r[kind][arm] is None else r[kind][arm][metric] for r in rs])

        cl_rank = max(((m("rank", a, "auprc"), a) for a in EXTERNAL_RANK if a.startswith("cleanlab:")), key=lambda t: t[0])
        cl_flag = max(((m("flag", a, "f1") or 0.0, a) for a in EXTERNAL_FLAG if a.startswith("cleanlab:")), key=lambda t: t[0])
        rows.append({
            "key": key, "seeds": len(rs), "errors": _mean([r["errors"] for r in rs]),
            "combined": m("rank", "external:combined", "auprc"), "before": m("rank", "before:combined", "auprc"),
            "priority": m("rank", "external:priority", "auprc"), "cl_auprc": cl_rank[0], "cl_auprc_arm": cl_rank[1],
            "flag_f1": m("flag", "external:flagged", "f1"), "flag_p": m("flag", "external:flagged", "precision"),
            "flag_r": m("flag", "external:flagged", "recall"), "flag_n": m("flag", "external:flagged", "size"),
            "before_f1": m("flag", "before:flagged", "f1"), "cl_default_f1": m("flag", "cleanlab:prune_by_noise_rate", "f1"),
            "cl_f1": cl_flag[0], "cl_f1_arm": cl_flag[1],
        })
    n = len(rows)

    def count(a: str, b: str) -> int:
        return sum(r[a] is not None and r[b] is not None and r[a] >= r[b] for r in rows)

    return {"rows": rows, "n": n,
            "auprc": count("combined", "cl_auprc"), "auprc_before": count("before", "cl_auprc"),
            "priority": count("priority", "cl_auprc"),
            "f1_default": count("flag_f1", "cl_default_f1"), "f1_best": count("flag_f1", "cl_f1"),
            "f1_default_before": count("before_f1", "cl_default_f1"), "f1_best_before": count("before_f1", "cl_f1")}


def external_section(results: list[dict], argv: list[str], minutes: float, load: tuple, code: str) -> str:
    """The report's "External runs" section, between EXTERNAL_START and EXTERNAL_END."""
    s = external_summary(results)
    n = s["n"]
    hows = sorted({r["how"] for r in results})
    worst_combined = max(r["check"]["combined"] for r in results)
    flag_diff = sum(r["check"]["flagged"] for r in results)
    cmd = "CURATE_TORCH_THREADS=1 .venv/bin/python bench/label_errors.py " + shlex.join(argv)

    def diffs(a: str, b: str) -> str:
        d = [(r[a] - r[b], r) for r in s["rows"] if r[a] is not None and r[b] is not None]
        lo, hi = min(d, key=lambda t: t[0]), max(d, key=lambda t: t[0])
        return (f"mean {statistics.fmean(x for x, _ in d):+.3f}; worst {lo[0]:+.3f} ({_label(lo[1]['key'], 'lr')}), "
                f"best {hi[0]:+.3f} ({_label(hi[1]['key'], 'lr')})")

    lines = [EXTERNAL_START, "## External runs: the logistic regression's probabilities as a run without training dynamics", "",
             (f"This section alone comes from `{cmd}` at commit {code}: {minutes:.1f} min on {os.cpu_count()} CPUs "
              f"(load average {load[0]:.1f} at start, {load[1]:.1f} at end). Every other section of this file comes from "
              "the full run described under the title below it; its `lr` rows predate the change measured here (there the "
              "combined score of a run without AUM was the probability rank, the `before` columns below)."), "",
             (f"- Path: {', '.join(hows)}. Each setting's dataset (the data, noise and seeds of the full plan: "
              f"{n} settings, {len(results)} with seeds) is imported through `POST /api/v1/datasets/{{id}}/imports`; "
              "the standardised logistic regression's 5-fold out-of-fold probabilities of its train samples "
              "(`cross_val_predict`, as in the full run; the image set's pixels as features) are posted as CSV (`external_id`, "
              "one column per class; `out_of_fold=true`, `normalize=none`) and the run's stored `Prediction.combined`, "
              "`.flagged` and `.priority` are read back. Nothing is trained and there is no curation simulation."),
             (f"- Check: the same matrix through `app.training.label_errors.columns_from(..., aum=None)` in-process gives "
              f"combined scores within {worst_combined:.1e} of the stored ones and {flag_diff} different flags in all."),
             ("- Arms on the same matrix: Curate's stored combined score, review priority and flagged set; `before` = the "
              "probability rank (mean of the self-confidence and normalized-margin ranks) and the `by_score` flagged set "
              "chosen with it, computed in-process; cleanlab 2.9.0's `get_label_quality_scores` (3 methods) and "
              "`find_label_issues` (7 filters, n_jobs=1). cleanlab's best is picked per row after the fact."), "",
             f"Over {n} settings (seed-averaged):", "",
             f"- Curate combined AUPRC >= cleanlab's best quality score: **{s['auprc']}/{n}** (before: {s['auprc_before']}/{n}); "
             + diffs("combined", "cl_auprc"),
             (f"- Curate flagged-set F1 >= cleanlab's default filter (prune_by_noise_rate): **{s['f1_default']}/{n}** "
              f"(before: {s['f1_default_before']}/{n}); " + diffs("flag_f1", "cl_default_f1")),
             f"- Curate flagged-set F1 >= cleanlab's best filter: **{s['f1_best']}/{n}** (before: {s['f1_best_before']}/{n}); "
             + diffs("flag_f1", "cl_f1"),
             (f"- Curate review priority AUPRC >= cleanlab's best quality score: {s['priority']}/{n} (for reference; the "
              "priority is judged by the curation simulation of the full run)."), "",
             ("| dataset | noise | rate | seeds | errors | C combined AUPRC | before | cl best quality | C priority AUPRC | "
              "C flagged F1 (P/R) n | before | cl default F1 | cl best F1 |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def mark(v: float | None, ref: float | None) -> str:
        return "n/a" if v is None else (f"**{v:.3f}**" if ref is not None and v >= ref else f"{v:.3f}")

    for r in s["rows"]:
        dataset, noise, rate = r["key"]
        lines.append(
            f"| {dataset} | {noise} | {int(rate * 100)}% | {r['seeds']} | {r['errors']:.0f} | {mark(r['combined'], r['cl_auprc'])} | "
            f"{_f(r['before'])} | {r['cl_auprc']:.3f} ({SHORT[r['cl_auprc_arm']]}) | {_f(r['priority'])} | "
            f"{mark(r['flag_f1'], r['cl_f1'])} ({_f(r['flag_p'], 2)}/{_f(r['flag_r'], 2)}) n={_f(r['flag_n'], 0)} | "
            f"{_f(r['before_f1'])} | {_f(r['cl_default_f1'])} | {r['cl_f1']:.3f} ({SHORT[r['cl_f1_arm']]}) |")
    lines += ["", "Bold: at or above cleanlab's best (AUPRC: its best quality score; F1: its best filter).", "",
              "Per seed:", "",
              "| setting | errors | LR accuracy on given labels | C combined | before | cl best | C flagged F1 | before | cl default F1 | cl best F1 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        cl_best = max(r["rank"][a]["auprc"] for a in EXTERNAL_RANK if a.startswith("cleanlab:"))
        cl_f1 = max((r["flag"][a]["f1"] for a in EXTERNAL_FLAG if a.startswith("cleanlab:") and r["flag"][a]), default=None)
        lines.append(f"| {r['setting']} | {r['errors']} | {r['oof_acc']:.3f} | {r['rank']['external:combined']['auprc']:.3f} | "
                     f"{r['rank']['before:combined']['auprc']:.3f} | {cl_best:.3f} | {r['flag']['external:flagged']['f1']:.3f} | "
                     f"{r['flag']['before:flagged']['f1']:.3f} | {r['flag']['cleanlab:prune_by_noise_rate']['f1']:.3f} | {_f(cl_f1)} |")
    lines += ["", EXTERNAL_END]
    return "\n".join(lines)


def split_external(text: str) -> tuple[str, str | None]:
    """(the report without its external-runs section, that section or None)."""
    start, end = text.find(EXTERNAL_START), text.find(EXTERNAL_END)
    if start < 0 or end < start:
        return text, None
    section = text[start: end + len(EXTERNAL_END)]
    rest = text[:start] + text[end + len(EXTERNAL_END):]
    return rest.replace("\n\n\n\n", "\n\n"), section


def with_external(text: str, section: str | None) -> str:
    """The report with `section` placed after its title line (replacing any section already there)."""
    text, _ = split_external(text)
    if section is None:
        return text
    title, _, rest = text.partition("\n")
    return f"{title}\n\n{section}\n\n{rest.lstrip(chr(10))}"


def run_external(args) -> None:
    """--external: every setting of the plan (filtered by --only and --seeds) on the logistic regression, through
    an external run; writes the report's external-runs section into --out, keeping the rest of the file."""
    import logging

    plan = external_plan()
    if args.only:
        plan.settings = [s for s in plan.settings if args.only in str(s)]
    if args.seeds is not None:
        plan.settings = [s for s in plan.settings if s.seed < args.seeds]
    pieces = new_pieces()
    if pieces["combined"] is None or pieces["flag"] is None:
        raise SystemExit("--external needs app.scoring.combined and app.scoring.flagged")
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    logging.getLogger("httpx").setLevel(logging.WARNING)
    results = []
    with tempfile.TemporaryDirectory(prefix="curate-label-errors-") as tmp:
        app = App(Path(tmp))
        for i, setting in enumerate(plan.settings):
            t = time.perf_counter()
            r = run_external_setting(app, setting, pieces)
            results.append(r)
            print(f"[{i + 1}/{len(plan.settings)}] {setting}: {r['errors']}/{r['n_train']} errors; AUPRC combined "
                  f"{r['rank']['external:combined']['auprc']:.3f} before {r['rank']['before:combined']['auprc']:.3f} "
                  f"cl_self_conf {r['rank']['cleanlab:self_confidence']['auprc']:.3f}; F1 flagged "
                  f"{r['flag']['external:flagged']['f1']:.3f} cl_default {r['flag']['cleanlab:prune_by_noise_rate']['f1']:.3f}; "
                  f"{time.perf_counter() - t:.1f}s", flush=True)
        app.client.close()
        app.engine.dispose()
    minutes, load = (time.perf_counter() - started) / 60, (load0, os.getloadavg()[0])
    if args.raw:
        import pickle

        with open(args.raw, "wb") as fh:
            pickle.dump({"results": results, "argv": sys.argv[1:], "minutes": minutes, "load": load, "commit": commit()}, fh)
    section = external_section(results, sys.argv[1:], minutes, load, commit())
    out = Path(args.out)
    base = out.read_text() if out.exists() else "# Label-error detection benchmark\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(with_external(base, section))
    print()
    print(section)
    print(f"\nwritten to {out} (the rest of the file kept)")


# --- report -----------------------------------------------------------------------------


RANK_ARMS = ["curate:loss_in_sample", "curate:loss_oof", "curate:normalized_margin", "curate:aum", "curate:combined", "curate:priority",
             *[f"cleanlab:{m}" for m in CLEANLAB_METHODS], "random"]
SIM_ORDERS = ("curate", "combined", "cleanlab", "random")
FLAG_ARMS = [*CURATE_FLAG_METHODS.values(), *[f"cleanlab:{f}" for f in CLEANLAB_FILTERS]]
SHORT = {
    "curate:loss_in_sample": "C loss in", "curate:loss_oof": "C loss oof", "curate:normalized_margin": "C margin",
    "curate:aum": "C aum", "curate:combined": "C combined", "curate:priority": "C priority", "cleanlab:self_confidence": "cl self_conf",
    "cleanlab:normalized_margin": "cl margin", "cleanlab:confidence_weighted_entropy": "cl cw_entropy",
    "random": "random", "curate:flagged": "C flagged (default)", "curate:flagged_pbnr": "C noise_rate", "curate:flagged_cj_offdiag": "C cj_offdiag",
    "curate:flagged_both": "C both", "cleanlab:prune_by_noise_rate": "cl noise_rate (default)",
    "cleanlab:prune_by_class": "cl by_class", "cleanlab:both": "cl both", "cleanlab:confident_learning": "cl conf_learning",
    "cleanlab:predicted_neq_given": "cl pred!=given", "cleanlab:low_normalized_margin": "cl low_margin",
    "cleanlab:low_self_confidence": "cl low_self_conf",
}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return statistics.fmean(values) if values else None


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _label(key: tuple, source: str) -> str:
    dataset, noise, rate = key
    return f"{dataset} | {noise} | {int(rate * 100)}% | {source}"


def group(results: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        out[r["setting"].key].append(r)
    return out


def summarise(results: list[dict], sources=("curate", "lr")) -> dict:
    """Per setting (seed-averaged) and source: Curate's designated arms against cleanlab's best."""
    out = {"settings": 0, "auprc_combined": 0, "auprc_aum": 0, "auprc_priority": 0, "f1": 0, "f1_default": 0,
           "have_combined": 0, "have_flag": 0, "cases": []}
    for key, rs in group(results).items():
        for source in sources:
            def m(kind, arm, metric):
                return _mean([None if r["sources"][source][kind][arm] is None else r["sources"][source][kind][arm][metric] for r in rs])

            cl_auprc = max(m("rank", a, "auprc") for a in RANK_ARMS if a.startswith("cleanlab:"))
            cl_f1 = max(m("flag", a, "f1") or 0.0 for a in FLAG_ARMS if a.startswith("cleanlab:"))
            cl_default_f1 = m("flag", "cleanlab:prune_by_noise_rate", "f1")
            curate_auprcs = {a: m("rank", a, "auprc") for a in RANK_ARMS if a.startswith("curate:")}
            comb, flag = curate_auprcs["curate:combined"], m("flag", "curate:flagged", "f1")
            out["settings"] += 1
            out["have_combined"] += comb is not None
            out["have_flag"] += flag is not None
            out["auprc_combined"] += comb is not None and comb >= cl_auprc
            aum = curate_auprcs["curate:aum"]
            out["auprc_aum"] += aum is not None and aum >= cl_auprc
            prio = curate_auprcs.get("curate:priority")
            out["auprc_priority"] += prio is not None and prio >= cl_auprc
            out["f1"] += flag is not None and flag >= cl_f1
            out["f1_default"] += flag is not None and cl_default_f1 is not None and flag >= cl_default_f1
            out["cases"].append({"key": key, "source": source, "cl_auprc": cl_auprc, "curate_auprc": curate_auprcs, "comb": comb,
                                 "cl_f1": cl_f1, "cl_default_f1": cl_default_f1, "flag_f1": flag})
    return out


def simulation_summary(results: list[dict]) -> dict:
    """Per order and budget over the simulated settings: test accuracy, its gain over no curation in
    points per 100 reviewed samples, and the share of reviewed samples that were errors."""
    sims = [r["simulation"] for r in results if r.get("simulation")]
    if not sims:
        return {}
    gains: dict = defaultdict(list)
    for sim in sims:
        for order, o in sim["orders"].items():
            for row in o["rows"]:
                gains[(order, row["budget"])].append(100 * 100 * (row["test_accuracy"] - sim["none"]) / row["reviewed"])
                gains[(order, "acc", row["budget"])].append(row["test_accuracy"])
                gains[(order, "fixed", row["budget"])].append(row["fixed"] / row["reviewed"])
    gains["n"] = len(sims)
    gains["seeds"] = sorted({len(s.get("seeds", [0])) for s in sims})
    gains["paired"] = {(a, "cleanlab"): paired(sims, a, "cleanlab") for a in ("curate", "combined")
                       if any(a in sim["orders"] for sim in sims)}
    gains["none"] = _mean([s["none"] for s in sims])
    gains["clean"] = _mean([s["clean"] for s in sims])
    gains["ceiling"] = _mean([100 * 100 * (s["clean"] - s["none"]) / s["errors"] for s in sims])
    return gains


def _by_seed(sim: dict, key: str) -> list[float]:
    return sim.get(f"{key}_by_seed", [sim[key]])


def paired(sims: list[dict], a: str = "curate", b: str = "cleanlab") -> dict:
    """Per budget, order `a` against order `b` in each (setting, training seed) cell, both retrained with the
    same seed: the gain over no curation (points per 100 reviewed) of a minus that of b."""
    out = {}
    for budget in BUDGETS:
        cells, per_setting = [], []
        for sim in sims:
            if a not in sim["orders"] or b not in sim["orders"]:
                continue
            ra = next(r for r in sim["orders"][a]["rows"] if r["budget"] == budget)
            rb = next(r for r in sim["orders"][b]["rows"] if r["budget"] == budget)
            none = _by_seed(sim, "none")
            acc_a = ra.get("test_accuracy_by_seed", [ra["test_accuracy"]])
            acc_b = rb.get("test_accuracy_by_seed", [rb["test_accuracy"]])
            d = [100 * 100 * ((x - z) - (y - z)) / ra["reviewed"] for x, y, z in zip(acc_a, acc_b, none)]
            cells += d
            per_setting.append(statistics.fmean(d))
        if not cells:
            continue

        def se(v: list[float]) -> float | None:
            return statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else None

        out[budget] = {"cells": len(cells), "ge": sum(d >= 0 for d in cells), "gt": sum(d > 0 for d in cells),
                       "mean": statistics.fmean(cells), "se": se(cells), "settings": len(per_setting),
                       "settings_ge": sum(d >= 0 for d in per_setting), "se_settings": se(per_setting)}
    return out


def below_cleanlab(results: list[dict]) -> list[str]:
    """Every (setting, source) where Curate's combined AUPRC or flagged F1 is below cleanlab's best, with the arm that beat it."""
    rows = []
    for key, rs in group(results).items():
        for source in ("curate", "lr"):
            def m(kind, arm, metric):
                return _mean([None if r["sources"][source][kind][arm] is None else r["sources"][source][kind][arm][metric] for r in rs])

            comb = m("rank", "curate:combined", "auprc")
            cl_rank = max(((m("rank", a, "auprc"), a) for a in RANK_ARMS if a.startswith("cleanlab:")), key=lambda t: t[0])
            flag = m("flag", "curate:flagged", "f1")
            cl_flag = max(((m("flag", a, "f1") or 0.0, a) for a in FLAG_ARMS if a.startswith("cleanlab:")), key=lambda t: t[0])
            if comb is not None and comb < cl_rank[0]:
                rows.append(f"| {_label(key, source)} | AUPRC | {comb:.3f} | {cl_rank[0]:.3f} ({SHORT[cl_rank[1]]}) | {comb - cl_rank[0]:+.3f} |")
            if flag is not None and flag < cl_flag[0]:
                rows.append(f"| {_label(key, source)} | flagged F1 | {flag:.3f} | {cl_flag[0]:.3f} ({SHORT[cl_flag[1]]}) | {flag - cl_flag[0]:+.3f} |")
    if not rows:
        return ["## Where Curate is below cleanlab's best", "", "Nowhere: Curate's combined AUPRC and flagged F1 are at or above "
                "cleanlab's best method in every setting and source.", ""]
    return ["## Where Curate is below cleanlab's best", "",
            "Seed-averaged; cleanlab's best is the best of its methods (or filters) for that row, picked after the fact.", "",
            "| dataset | noise | rate | probs | metric | Curate | cleanlab's best | difference |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, ""]


def report(results: list[dict], plan: Plan, argv: list[str], minutes: float, load: tuple, pieces: dict, code: str,
           sim_runs: list[dict] | None = None, parts: list[dict] | None = None) -> str:
    import cleanlab
    import torch

    lines = ["# Label-error detection benchmark", ""]
    lines.append(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} thread), "
        f"cleanlab {cleanlab.__version__}, CUDA: {'yes' if torch.cuda.is_available() else 'no'}. "
        f"Load average at start {load[0]:.1f}, at end {load[1]:.1f}; total wall time {minutes:.1f} min."
    )
    lines.append(f"Code: Curate at commit {code}.")
    cmd = " ".join(["CURATE_TORCH_THREADS=1 .venv/bin/python bench/label_errors.py", *argv])
    if parts:
        lines += ["", f"Run as {len(parts)} processes side by side on the same machine (sharing its cores), each on part of "
                  f"the plan, then merged with `{cmd}`:", ""]
        lines += [f"- `CURATE_TORCH_THREADS=1 .venv/bin/python bench/label_errors.py {' '.join(p['argv'])}` at commit {p['commit']}: "
                  f"{p['minutes']:.1f} min (load average {p['load'][0]:.1f} at start, {p['load'][1]:.1f} at end)" for p in parts]
        lines.append("")
    else:
        lines += ["", f"Command: `{cmd}`", ""]
    for sr in sim_runs or []:
        lines += [f"Curation simulation re-run alone for {', '.join(sr['settings'])}: "
                  f"`CURATE_TORCH_THREADS=1 .venv/bin/python bench/label_errors.py {' '.join(sr['argv'])}` at commit {sr['commit']}, "
                  f"{sr['minutes']:.1f} min (load average {sr['load'][0]:.1f} at start, {sr['load'][1]:.1f} at end). Its out-of-fold "
                  "job is run again for the orders; the simulation sections come from it, every other section from the run above.", ""]
    lines += ["## Setup", ""]
    lines += [
        "- Data: `digits-tab` = scikit-learn digits as 64 numeric features (train 60% / valid 20% / test 20%, split by seed); "
        "`classif` = `make_classification` (2,000 samples, 10 classes, 20 features of which 10 informative and 4 redundant, "
        "class_sep 1.5, one cluster per class; a new set per seed), same split; `digits-img` = the demo's 8x8 PNGs "
        "(`app.datasets.demo.demo_records`: train 1,000, valid 300, test 197; its unlabelled 300 left out and its own flips "
        "replaced by the noise below). Imported through `POST /api/v1/datasets/{id}/imports` (CSV, or a ZIP with labels.csv).",
        "- Noise on train only (valid and test clean): `uniform` = a flipped label goes to any other class alike; `classcond` = "
        "a fixed random transition matrix (the same for every seed): each class flips at the rate x w (w in [0.75, 1.25], "
        "mean 1), 60% of its flips into one confusable class, 30% into a second, 10% over the rest. Exactly round(rate x n) "
        "labels per class are flipped, so the error count is known.",
        "- Probabilities: `curate` = Curate's train job (`run_train_job`, LocalJobContext, out-of-fold scoring, 5 folds); the "
        "bench subclasses TrainRun to keep the full matrix it passes to `_write` (the database stores the top 5) and the final "
        "model's predictions on train (in-sample). AUM, when the job stores it, is read from `Prediction.aum`. "
        "`lr` = standardised logistic regression, `cross_val_predict` 5-fold (in-sample: fitted on all of train).",
        "- Rank arms (higher = more suspicious, all on the same matrix): Curate loss in-sample, loss out-of-fold, "
        "normalized margin, aum, combined, priority (the review order, as stored by the job; computed the same way for "
        "the logistic regression); cleanlab `get_label_quality_scores` with each method; random. Flag arms: Curate's "
        "`flag_label_errors`, the default as the train job calls it (with the combined score) and each other method; "
        "cleanlab `find_label_issues` with each `filter_by` (n_jobs=1).",
        "- Metrics: AUROC and AUPRC (sklearn `average_precision_score`), P@k = precision among the k most suspicious with k the "
        "true number of errors; flagged sets: precision, recall, F1, size against the true count. Means over seeds.",
        "- Curation simulation: review the top 10% then 20% of train in an order; every reviewed sample whose label is wrong is "
        "set to its true label with `PATCH /api/v1/samples/{id}` and `If-Match: <version>`; after each budget the train job "
        "retrains (in-sample scoring, the out-of-fold run's lr, same seed) and the test accuracy is read; the order's changes "
        "are then PATCHed back. Orders: `curate` (the review queue's default order for labelled samples: `order=priority`, the "
        "run's flagged set lowest self-confidence first, then the rest by the combined score, as the job stored it in "
        "`Prediction.priority`), `combined` (Curate's combined score alone, `order=combined`), `cleanlab` (cleanlab's default "
        "`find_label_issues` set ranked by self-confidence, then the rest by self-confidence: its documented review workflow), "
        "`random`; plus no curation and every label clean.",
    ]
    lines += [f"- {n}" for n in plan.notes]
    missing = [k for k, v in pieces.items() if not v]
    if missing:
        lines.append(f"- **Not available in this checkout:** {', '.join('app.scoring.combined.combined_score' if m == 'combined' else 'app.scoring.flagged.flag_label_errors' for m in missing)}: those arms read n/a.")
    if any(r["aum"] for r in results):
        missing = [r["aum_missing"] for r in results if r["aum"]]
        lines.append(f"- AUM read from `Prediction.aum` of the out-of-fold run for {sum(r['aum'] for r in results)} of {len(results)} "
                     f"settings; train samples without one (ranked least suspicious): {max(missing)} at most.")
    if not any(r["aum"] for r in results):
        lines.append("- **AUM not stored by the train job in this checkout** (Prediction.aum is null): the aum arm reads n/a.")
    lines.append("")

    gains = simulation_summary(results)
    lines += ["## Summary", ""]
    lines.append("Curate's loss out-of-fold and normalized margin give the same order as cleanlab's `self_confidence` and "
                 "`normalized_margin` quality scores (the same formulas), so the comparison that matters is Curate's "
                 "combined score (probability rank = mean of the self-confidence and margin ranks, averaged with the AUM rank) and its "
                 "flagged set (default method `by_score`: a confident-learning count, the samples chosen by the combined score) "
                 "against cleanlab's best method, picked per setting after the fact. The logistic regression has no training "
                 "dynamics: there, combined = the probability rank. The review priority is the order the review queue shows "
                 "labelled samples in (the flagged set lowest self-confidence first, then the rest by the combined score): it "
                 "is judged by the curation simulation, what a budget of relabels buys after a retrain, and its AUPRC is "
                 "listed for reference.")
    for sources, title in ((("curate",), "On Curate's probabilities (with AUM)"), (("lr",), "On the logistic regression's probabilities")):
        summ = summarise(results, sources)
        n = summ["settings"]
        lines += ["", f"{title}, over {n} settings (seed-averaged):", ""]
        lines.append(f"- Curate combined AUPRC >= cleanlab's best quality score: **{summ['auprc_combined']}/{n}**"
                     + ("" if summ["have_combined"] == n else f" (combined available in {summ['have_combined']})"))
        lines.append(f"- Curate review priority (the queue's order) AUPRC >= cleanlab's best: {summ['auprc_priority']}/{n}")
        if sources == ("curate",):
            lines.append(f"- Curate AUM alone >= cleanlab's best: {summ['auprc_aum']}/{n}")
        lines.append(f"- Curate flagged-set F1 >= cleanlab's best filter_by: **{summ['f1']}/{n}**; "
                     f">= cleanlab's default filter (prune_by_noise_rate): {summ['f1_default']}/{n}"
                     + ("" if summ["have_flag"] == n else f" (flagged set available in {summ['have_flag']})"))
        cases = summ["cases"]
        for label, cur, ref in (("Curate combined AUPRC - cleanlab's best quality score", "comb", "cl_auprc"),
                                ("Curate flagged F1 - cleanlab's best filter", "flag_f1", "cl_f1"),
                                ("Curate flagged F1 - cleanlab's default filter", "flag_f1", "cl_default_f1")):
            diffs = [(c[cur] - c[ref], c) for c in cases if c[cur] is not None and c[ref] is not None]
            if not diffs:
                continue
            worst, best = min(diffs, key=lambda d: d[0]), max(diffs, key=lambda d: d[0])
            lines.append(f"- {label}: mean {statistics.fmean(d for d, _ in diffs):+.3f}; worst {worst[0]:+.3f} "
                         f"({_label(worst[1]['key'], worst[1]['source'])}), best {best[0]:+.3f} ({_label(best[1]['key'], best[1]['source'])})")
    if gains:
        n_seeds = "/".join(str(k) for k in gains["seeds"])
        per_cell = "one retrain per cell" if gains["seeds"] == [1] else f"each cell the mean of {n_seeds} retrains with different training seeds"
        lines += ["", f"Curation simulation ({gains['n']} settings, {per_cell}): mean test accuracy, the gain over no curation "
                  "in accuracy points per 100 reviewed samples, and the share of reviewed samples that were real errors. "
                  f"No curation: {gains['none']:.3f}; every label clean: {gains['clean']:.3f}, i.e. "
                  f"{gains['ceiling']:+.2f} points per 100 labels fixed when all are.", "",
                  "| order | test acc @10% | @20% | gain per 100 reviewed @10% | @20% | errors among reviewed @10% | @20% |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for order in SIM_ORDERS:
            if (order, BUDGETS[0]) in gains:
                lines.append(f"| {order} | " + " | ".join(f"{_mean(gains[(order, 'acc', b)]):.3f}" for b in BUDGETS) + " | "
                             + " | ".join(f"{_mean(gains[(order, b)]):+.2f}" for b in BUDGETS) + " | "
                             + " | ".join(f"{_mean(gains[(order, 'fixed', b)]):.2f}" for b in BUDGETS) + " |")
        if any(gains["paired"].values()):
            lines += ["", "Paired against cleanlab: in each (setting, training seed) cell both orders retrain with the same "
                      "seed; difference = the order's gain minus cleanlab's, points per 100 reviewed. The standard error over cells "
                      "treats the seeds of a setting as independent (they share the order); the one over settings does not.", "",
                      "| order | budget | cells with order >= cleanlab (>) | mean difference | SE over cells | settings with order >= cleanlab (seed mean) | SE over settings |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for (a, _), by_budget in gains["paired"].items():
                for b, c in by_budget.items():
                    lines.append(f"| {a} | {int(b * 100)}% | {c['ge']}/{c['cells']} ({c['gt']}) | {c['mean']:+.2f} | {_f(c['se'], 2)} | "
                                 f"{c['settings_ge']}/{c['settings']} | {_f(c['se_settings'], 2)} |")
    lines.append("")
    lines += below_cleanlab(results)

    # Ranking tables.
    groups = group(results)
    for metric, title in (("auprc", "AUPRC"), ("auroc", "AUROC"), ("p_at_k", "Precision at k (k = true number of errors)")):
        lines += [f"## Ranking: {title}", "", "Mean over seeds; best non-random arm per row in bold.", "",
                  "| dataset | noise | rate | probs | seeds | " + " | ".join(SHORT[a] for a in RANK_ARMS) + " |",
                  "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in RANK_ARMS) + " |"]
        for key, rs in groups.items():
            for source in ("curate", "lr"):
                vals = [_mean([None if r["sources"][source]["rank"][a] is None else r["sources"][source]["rank"][a][metric] for r in rs]) for a in RANK_ARMS]
                best = max((v for a, v in zip(RANK_ARMS, vals) if v is not None and a != "random"), default=None)
                cells = [("**" + _f(v) + "**") if v is not None and v == best else _f(v) for v in vals]
                lines.append(f"| {_label(key, source)} | {len(rs)} | " + " | ".join(cells) + " |")
        lines.append("")

    lines += ["## Flagged sets: F1 (precision / recall), size vs true count", "", "Mean over seeds; best F1 per row in bold.", "",
              "| dataset | noise | rate | probs | true errors | " + " | ".join(SHORT[a] for a in FLAG_ARMS) + " |",
              "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in FLAG_ARMS) + " |"]
    for key, rs in groups.items():
        for source in ("curate", "lr"):
            cells, f1s = [], []
            for a in FLAG_ARMS:
                ms = [r["sources"][source]["flag"][a] for r in rs]
                if any(m is None for m in ms):
                    cells.append("n/a")
                    f1s.append(None)
                    continue
                f1 = _mean([m["f1"] for m in ms])
                f1s.append(f1)
                cells.append(f"{f1:.3f} ({_mean([m['precision'] for m in ms]):.2f}/{_mean([m['recall'] for m in ms]):.2f}) "
                             f"n={_mean([m['size'] for m in ms]):.0f}")
            best = max((v for v in f1s if v is not None), default=None)
            cells = [("**" + c.replace(" (", "** (", 1)) if f is not None and f == best else c for c, f in zip(cells, f1s)]
            true = _mean([r["errors"] for r in rs])
            lines.append(f"| {_label(key, source)} | {true:.0f} | " + " | ".join(cells) + " |")
    lines.append("")

    sims = [r for r in results if r.get("simulation")]
    if sims:
        orders = [o for o in SIM_ORDERS if all(o in r["simulation"]["orders"] for r in sims)]
        lines += ["## Curation simulation: test accuracy", "",
                  "Reviewed = samples looked at (top of the order); fixed = wrong labels among them, set right by PATCH. "
                  + ("One retrain per cell, so a cell moves by a point or two from training noise alone"
                     if all(len(r["simulation"].get("seeds", [0])) == 1 for r in sims) else
                     "Each cell is the mean test accuracy of the retrains with training seeds "
                     + ", ".join(sorted({"/".join(str(x) for x in r["simulation"]["seeds"]) for r in sims if "seeds" in r["simulation"]}))
                     + " (the same seeds for every order); one retrain moves by a point or two from training noise alone")
                  + " (test sets: 360 samples for digits-tab, 400 for classif, 197 for digits-img, where one sample is half a point).", "",
                  "| setting | train / errors | no curation | " + " | ".join(f"{o} @{int(b * 100)}% (fixed)" for o in orders for b in BUDGETS) + " | all clean |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in range(len(orders) * len(BUDGETS))) + " | --- |"]
        for r in sims:
            sim = r["simulation"]
            cells = []
            for o in orders:
                for row in sim["orders"][o]["rows"]:
                    cells.append(f"{row['test_accuracy']:.3f} ({row['fixed']})")
            lines.append(f"| {r['setting']} | {sim['n_train']} / {sim['errors']} | {sim['none']:.3f} | " + " | ".join(cells) + f" | {sim['clean']:.3f} |")
        lines += ["", "Orders: " + "; ".join(f"{o} = {sims[0]['simulation']['orders'][o]['what']}" for o in orders if o != "random")
                  + ". Retrain params (lr: the out-of-fold run's): "
                  + "; ".join(sorted({f"{r['setting'].dataset}: `{ {k: v for k, v in r['simulation']['retrain_params'].items() if k not in ('lr', 'seed')} }`" for r in sims})) + ". "
                  f"PATCH: {1000 * _mean([x for r in sims for x in r['simulation']['patch_s']]):.1f} ms per relabel through the TestClient.", ""]

    lines += ["## Wall time", "",
              "Cross-validation apart: the Curate train job (lr_find, 5 fold models, the final model, scoring, writing) and the "
              "logistic regression's 5-fold `cross_val_predict`; then each arm's own time on a ready matrix (median over settings "
              "and sources, milliseconds).", "",
              "| dataset | Curate train job (s) | of which folds (s) | logistic regression CV (s) | out-of-fold accuracy on given labels: Curate / LR | test accuracy of the job's final model |",
              "| --- | --- | --- | --- | --- | --- |"]
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_ds[r["setting"].dataset].append(r)
    for ds, rs in by_ds.items():
        folds = _mean([sum(r["curate_timings"].get("folds", [])) for r in rs])
        lines.append(f"| {ds} | {_mean([r['curate_job_s'] for r in rs]):.1f} | {_f(folds, 1)} | {_mean([r['lr_cv_s'] for r in rs]):.2f} | "
                     f"{_mean([r['oof_acc']['curate'] for r in rs]):.3f} / {_mean([r['oof_acc']['lr'] for r in rs]):.3f} | "
                     f"{_f(_mean([r['curate_test_acc'] for r in rs]))} |")
    lines += ["", "| arm | " + " | ".join(SHORT[a] for a in RANK_ARMS + FLAG_ARMS) + " |", "| --- | " + " | ".join("---" for _ in RANK_ARMS + FLAG_ARMS) + " |"]
    med = []
    for a in RANK_ARMS + FLAG_ARMS:
        ts = [r["sources"][s]["times"][a] for r in results for s in ("curate", "lr")]
        med.append(f"{1000 * statistics.median(ts):.2f}")
    lines.append("| ms | " + " | ".join(med) + " |")
    lines.append("")

    lines += ["## Per seed", "", "AUPRC of Curate's combined and loss-oof arms and cleanlab's best quality score; F1 of Curate's flagged set and "
              "cleanlab's default and best filter.", "",
              "| setting | probs | errors | C combined | C loss oof | cl best | C flagged F1 | cl default F1 | cl best F1 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for source in ("curate", "lr"):
            src = r["sources"][source]
            cl_best = max(src["rank"][a]["auprc"] for a in RANK_ARMS if a.startswith("cleanlab:"))
            cl_f1 = max((src["flag"][a]["f1"] for a in FLAG_ARMS if a.startswith("cleanlab:") and src["flag"][a]), default=None)
            comb = src["rank"]["curate:combined"]
            flag = src["flag"]["curate:flagged"]
            dflt = src["flag"]["cleanlab:prune_by_noise_rate"]
            lines.append(f"| {r['setting']} | {source} | {r['errors']} | {_f(comb and comb['auprc'])} | {src['rank']['curate:loss_oof']['auprc']:.3f} | "
                         f"{cl_best:.3f} | {_f(flag and flag['f1'])} | {_f(dflt and dflt['f1'])} | {_f(cl_f1)} |")
    lines.append("")
    return "\n".join(lines)


def commit() -> str:
    """The commit the bench runs against (a snapshot made with `git archive` carries it in .bench_commit)."""
    import subprocess

    mark = ROOT / ".bench_commit"
    if mark.exists():
        return mark.read_text().strip() + " (a clean snapshot of it)"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "app"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + (" with uncommitted changes under app/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small setting (about a minute)")
    parser.add_argument("--external", action="store_true",
                        help="the logistic regression's probabilities only, posted as external runs (POST "
                             "/api/v1/datasets/{id}/runs) for every setting; no training, no simulation (a few minutes); "
                             "rewrites only the report's external-runs section")
    parser.add_argument("--multilabel", action="store_true",
                        help="multi-label label errors against cleanlab's multilabel_classification (under a minute); "
                             "rewrites only the report's multi-label section")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--only", default=None, help="only settings whose description contains this text (e.g. 'digits-img')")
    parser.add_argument("--seeds", type=int, default=None, help="only the first N seeds of each setting")
    parser.add_argument("--no-simulation", action="store_true", help="skip the curation simulation")
    parser.add_argument("--raw", default=None, help="also pickle the raw results here (for --report-from)")
    parser.add_argument("--report-from", default=None,
                        help="write the report from a --raw pickle, running nothing; several, comma-separated, are merged "
                             "(parts of one plan run side by side with --only)")
    parser.add_argument("--sim-seeds", type=int, default=None,
                        help="training seeds per simulation cell, the same for every order (default: 3 in the full plan, 1 with --quick)")
    parser.add_argument("--simulation-only", default=None, metavar="RAW",
                        help="re-run only the curation simulation (its settings, filtered by --only) on top of a --raw pickle; "
                             "the other sections stay as they are in it; --raw writes the result")
    args = parser.parse_args()
    if args.multilabel:
        from bench import multilabel_errors

        print(multilabel_errors.run(args.out, commit()))
        return
    if args.external:
        run_external(args)
        return
    if args.simulation_only:
        simulation_only(args)
        return
    if args.report_from:
        import pickle

        paths = args.report_from.split(",")
        loaded = []
        for path in paths:
            with open(path, "rb") as fh:
                loaded.append(pickle.load(fh))
        if len(loaded) == 1:
            saved = loaded[0]
            text = report(saved["results"], saved["plan"], saved["argv"], saved["minutes"], saved["load"], saved["pieces"],
                          saved["commit"], saved.get("sim_runs"))
        else:
            text = report(argv=sys.argv[1:], **merge_parts(loaded))
        Path(args.out).write_text(text := keeping_external(text, args.out))
        print(text)
        return
    plan = quick_plan() if args.quick else full_plan()
    if args.only:
        plan.settings = [s for s in plan.settings if args.only in str(s)]
    if args.seeds is not None:
        plan.settings = [s for s in plan.settings if s.seed < args.seeds]
    if args.no_simulation:
        plan.simulate = set()
    if args.sim_seeds is not None:
        plan.sim_seeds = args.sim_seeds
    if args.only or args.seeds is not None or args.no_simulation:
        plan.notes.append("A partial run (" + " ".join(sys.argv[1:]) + "): not the full plan above.")
    started = time.perf_counter()
    load0 = os.getloadavg()[0]
    pieces = new_pieces()
    print(f"combined score: {'yes' if pieces['combined'] else 'not available'}; flagged set: "
          f"{'yes' if pieces['flag'] else 'not available'}", flush=True)
    results = []
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="curate-label-errors-") as tmp:
        app = App(Path(tmp))
        for i, setting in enumerate(plan.settings):
            t = time.perf_counter()
            r = run_setting(app, setting, plan, pieces)
            results.append(r)
            c = r["sources"]["curate"]
            comb = c["rank"]["curate:combined"]
            flag = c["flag"]["curate:flagged"]
            print(
                f"[{i + 1}/{len(plan.settings)}] {setting}: {r['errors']}/{r['n_train']} errors; job {r['curate_job_s']:.0f}s; "
                f"AUPRC loss_oof {c['rank']['curate:loss_oof']['auprc']:.3f} combined {_f(comb and comb['auprc'])} "
                f"cl_self_conf {c['rank']['cleanlab:self_confidence']['auprc']:.3f}; F1 flagged {_f(flag and flag['f1'])} "
                f"cl_default {_f(c['flag']['cleanlab:prune_by_noise_rate'] and c['flag']['cleanlab:prune_by_noise_rate']['f1'])}"
                + (f"; simulation {r['simulation_s']:.0f}s" if "simulation_s" in r else "")
                + f"; {time.perf_counter() - t:.0f}s, {(time.perf_counter() - started) / 60:.1f} min so far",
                flush=True,
            )
        app.client.close()
        app.engine.dispose()
    minutes = (time.perf_counter() - started) / 60
    load = (load0, os.getloadavg()[0])
    available = {k: v is not None for k, v in pieces.items() if k in ("combined", "flag")}
    if args.raw:
        import pickle

        with open(args.raw, "wb") as fh:
            pickle.dump({"results": results, "plan": plan, "argv": sys.argv[1:], "minutes": minutes, "load": load,
                         "pieces": available, "commit": commit()}, fh)
    write_report(report(results, plan, sys.argv[1:], minutes, load, available, commit()), args.out)


def keeping_external(text: str, out: str | Path) -> str:
    """The report `text` with the external-runs (--external) and multi-label (--multilabel) sections that the
    file `out` already has, if any."""
    from bench import multilabel_errors

    out = Path(out)
    if not out.exists():
        return text
    kept = with_external(text, split_external(out.read_text())[1])
    return multilabel_errors.with_section(kept, multilabel_errors.split_section(out.read_text())[1])


def write_report(text: str, out: str | Path) -> None:
    """Write the report (creating its folder) and print it; an external-runs section already in the
    file (--external) is kept, marked with the run that made it."""
    out = Path(out)
    text = keeping_external(text, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print()
    print(text)
    print(f"\nwritten to {out}")


def merge_parts(loaded: list[dict]) -> tuple:
    """Several --raw pickles of one plan, each run on part of it (--only), as one report's arguments."""
    if len({tuple(sorted(s["pieces"].items())) for s in loaded}) != 1:
        raise SystemExit("the parts were run by checkouts with different pieces: not one run")
    full = full_plan()
    index = {s: i for i, s in enumerate(full.settings)}
    results = sorted((r for s in loaded for r in s["results"]), key=lambda r: index.get(r["setting"], len(index)))
    seen = [r["setting"] for r in results]
    if len(set(seen)) != len(seen):
        raise SystemExit("a setting appears in more than one part")
    plan = loaded[0]["plan"]
    plan = Plan(full.settings, full.simulate, full.params, full.retrain_epochs, list(full.notes), plan.sim_seeds)
    missing = [str(s) for s in full.settings if s not in set(seen)]
    if missing:
        plan.notes.append("A partial run: these settings of the plan are missing: " + ", ".join(missing) + ".")
    plan.notes = [n for n in plan.notes if not n.startswith("Curation simulation:")] + [
        f"Curation simulation: seed 0 of every setting that has a simulation table row below; each cell retrained with "
        f"{plan.sim_seeds} training seeds."]
    parts = [{"argv": s["argv"], "minutes": s["minutes"], "load": s["load"], "commit": s["commit"]} for s in loaded]
    commits = sorted({s["commit"] for s in loaded})
    return dict(results=results, plan=plan, minutes=max(s["minutes"] for s in loaded),
                load=(max(s["load"][0] for s in loaded), max(s["load"][1] for s in loaded)), pieces=loaded[0]["pieces"],
                code=" and ".join(commits), parts=parts)


def simulation_only(args) -> None:
    """Re-run the curation simulation on top of saved raw results; settings it does not re-run keep their
    simulation only when it was made with the same number of training seeds."""
    import logging
    import pickle

    with open(args.simulation_only, "rb") as fh:
        saved = pickle.load(fh)
    plan: Plan = saved["plan"]
    plan.sim_seeds = args.sim_seeds if args.sim_seeds is not None else 3
    todo = [s for s in plan.simulate if not args.only or args.only in str(s)]
    todo = [r["setting"] for r in saved["results"] if r["setting"] in todo]  # the run's order
    for r in saved["results"]:
        sim = r.get("simulation")
        if sim and r["setting"] not in todo and len(sim.get("seeds", [0])) != plan.sim_seeds:
            del r["simulation"]
            r.pop("simulation_s", None)
    plan.notes = [n for n in plan.notes if not n.startswith("Curation simulation:")]
    plan.notes.append(f"Curation simulation: seed 0 of every setting that has a simulation table row below; each cell "
                      f"retrained with {plan.sim_seeds} training seeds.")
    out_raw = args.raw or args.simulation_only
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    pieces = new_pieces()
    sim_run = {"settings": [str(s) for s in todo], "argv": sys.argv[1:], "commit": commit(), "minutes": 0.0, "load": (load0, load0)}
    saved.setdefault("sim_runs", []).append(sim_run)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    by_setting = {r["setting"]: r for r in saved["results"]}
    with tempfile.TemporaryDirectory(prefix="curate-label-errors-") as tmp:
        app = App(Path(tmp))
        for i, setting in enumerate(todo):
            t = time.perf_counter()
            by_setting[setting].update(run_simulation(app, setting, plan, pieces))
            sim = by_setting[setting]["simulation"]
            sim_run["minutes"] = (time.perf_counter() - started) / 60
            sim_run["load"] = (load0, os.getloadavg()[0])
            with open(out_raw, "wb") as fh:  # after every setting, so a stopped run keeps what it did
                pickle.dump(saved, fh)
            print(f"[{i + 1}/{len(todo)}] {setting}: none {sim['none']:.3f} clean {sim['clean']:.3f}; "
                  + "; ".join(f"{o} " + " ".join(f"{row['test_accuracy']:.3f} ({row['fixed']})" for row in v["rows"]) for o, v in sim["orders"].items())
                  + f"; {time.perf_counter() - t:.0f}s, {sim_run['minutes']:.1f} min so far", flush=True)
        app.client.close()
        app.engine.dispose()
    text = report(saved["results"], plan, saved["argv"], saved["minutes"], saved["load"], saved["pieces"], saved["commit"],
                  saved["sim_runs"])
    Path(args.out).write_text(text := keeping_external(text, args.out))
    print(text)
    print(f"\nwritten to {args.out}; raw results in {out_raw}")


if __name__ == "__main__":
    main()
