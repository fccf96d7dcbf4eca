"""Out-of-fold scoring: each train sample is scored by a model that never saw it.

A network that has memorised a wrong label stops finding it suspicious, so the train split
is cut into K folds; the model of fold f trains on every other fold and predicts fold f.
The fold plan is a plain object so that tests (and the run's info) can check the assignment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold


@dataclass
class FoldPlan:
    """fold_of[i] is the fold whose model predicts train sample i (and never trains on it)."""

    fold_of: np.ndarray
    folds: int
    stratified: bool
    notices: list[str] = field(default_factory=list)

    def held_out(self, fold: int) -> np.ndarray:
        """Indices (into the train split) that fold `fold`'s model predicts."""
        return np.flatnonzero(self.fold_of == fold)

    def train_indices(self, fold: int) -> np.ndarray:
        """Indices that fold `fold`'s model trains on: every sample outside the fold."""
        return np.flatnonzero(self.fold_of != fold)

    def sizes(self) -> list[dict[str, int]]:
        return [{"fold": f, "train": int((self.fold_of != f).sum()), "held_out": int((self.fold_of == f).sum())} for f in range(self.folds)]


def _fold_count(n: int, folds: int) -> tuple[int, list[str]]:
    """(the folds n train samples can take, the notices): fewer samples than folds lowers it."""
    if n < 2:
        raise ValueError(f"out-of-fold scoring needs at least 2 labelled train samples, found {n}")
    if n < folds:
        return n, [f"only {n} labelled train samples: using {n} folds instead of {folds}"]
    return folds, []


def plan_folds(y: np.ndarray, folds: int, seed: int) -> FoldPlan:
    """Assign each train sample (labels y, class indices) to one of `folds` folds.

    Stratified when every class present has at least `folds` members; otherwise plain
    shuffled K-fold, with a notice. Fewer samples than folds lowers the number of folds.
    """
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    k, notices = _fold_count(n, folds)
    _, counts = np.unique(y, return_counts=True)
    if counts.min() >= k:
        splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        stratified = True
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
        stratified = False
        notices.append(
            f"some class has only {int(counts.min())} labelled train sample(s), fewer than {k} folds: "
            "the folds are not stratified"
        )
    fold_of = np.full(n, -1, dtype=np.int64)
    for f, (_, held) in enumerate(splitter.split(np.zeros(n), y)):
        fold_of[held] = f
    return FoldPlan(fold_of=fold_of, folds=k, stratified=stratified, notices=notices)


def plan_multilabel_folds(Y: np.ndarray, folds: int, seed: int) -> FoldPlan:
    """Assign each train sample of a multi-label dataset (tags Y, (n, k) 0/1) to one of `folds`
    folds by iterative stratification (Sechidis et al. 2011, package iterative-stratification):
    it deals the samples of the rarest tags out first, so that every tag with at least `folds`
    samples appears in every fold. Fewer samples than folds lowers the number of folds."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    Y = np.asarray(Y, dtype=np.int64)
    n = len(Y)
    k, notices = _fold_count(n, folds)
    counts = Y.sum(axis=0)
    rare = counts[(counts > 0) & (counts < k)]
    if len(rare):
        notices.append(f"some tag has only {int(rare.min())} labelled train sample(s), fewer than {k} folds: "
                       "not every fold can hold it")
    fold_of = np.full(n, -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, held) in enumerate(splitter.split(np.zeros((n, 1)), Y)):
        fold_of[held] = f
    return FoldPlan(fold_of=fold_of, folds=k, stratified=True, notices=notices)


def out_of_fold_probs(
    plan: FoldPlan,
    fit: Callable[[int, np.ndarray], Any],
    predict: Callable[[Any, np.ndarray], np.ndarray],
    n_classes: int,
) -> np.ndarray:
    """Probabilities for every train sample from the model of its own fold.

    fit(fold, train_idx) returns a model trained on train_idx only;
    predict(model, idx) returns the (len(idx), n_classes) probabilities of those samples.
    """
    n = len(plan.fold_of)
    P = np.full((n, n_classes), np.nan)
    for f in range(plan.folds):
        train_idx, held = plan.train_indices(f), plan.held_out(f)
        # The held-out set and the training set of a fold never overlap, by construction.
        assert not np.intersect1d(train_idx, held).size
        model = fit(f, train_idx)
        P[held] = predict(model, held)
    if np.isnan(P).any():
        raise RuntimeError("some train sample was not scored by any fold")
    return P
