"""Train one model on a dataset's train split and measure it on valid and test, storing nothing.

The unit of work of experiments that compare recipes rather than curate labels: a search
trial, one seed of a `seeds` job, one arm of a prune experiment. A `train` job (TrainRun)
does more: out-of-fold scoring, predictions for every sample, an artifact, a Run row.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from app.evaluation.metrics import classification_metrics
from app.jobs.context import JobCancelled
from app.training.data import TrainingData
from app.training.recipe import Recipe


@dataclass
class FitResult:
    """What one fit measured: metrics per split (None for an empty split), per-epoch history."""

    metrics: dict[str, dict[str, Any] | None]
    history: list[dict[str, Any]]
    lr: float
    seconds: float
    pretrained: bool
    notices: list[str] = field(default_factory=list)

    def value(self, split: str, metric: str) -> float | None:
        """A headline metric (accuracy, macro_f1, weighted_f1) of one split, or a class's
        F1 as `f1:<class>`; None when the split is empty."""
        m = self.metrics.get(split)
        if m is None:
            return None
        if metric.startswith("f1:"):
            return float(m["per_class"][metric[3:]]["f1"])
        return float(m[metric])


def fit_and_evaluate(
    data: TrainingData,
    recipe: Recipe,
    *,
    train: pd.DataFrame | None = None,
    callbacks: Sequence[Any] = (),
    is_cancelled: Callable[[], bool] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train the recipe's model on `train` (default: every labelled train sample), validate on
    the valid split, and return its metrics on valid and test.

    `callbacks` are extra fastai callbacks for the fit (a pruning callback, a progress
    callback); `is_cancelled` is polled every batch and raises JobCancelled when true.
    """
    from fastai.torch_core import set_seed

    from app.training import learners as L
    from app.training.adapters import adapter_for
    from app.training.batch_size import auto_batch_size
    from app.training.callbacks import CancelCallback, HistoryCallback
    from app.training.environment import resolve_environment

    started = time.monotonic()
    env = resolve_environment(recipe)
    notices = list(env.notices)
    train_df = data.train if train is None else train
    recipe = auto_batch_size(recipe, data.task, data.classes, data.cat_names, data.cont_names, train_df, data.valid,
                             env, notices.append, {}, multilabel=data.multilabel)
    adapter = adapter_for(data.task, recipe, env, data.classes, data.cat_names, data.cont_names, data.multilabel)
    if len(train_df) < 2:
        raise ValueError(f"training needs at least 2 labelled train samples, got {len(train_df)}")
    history: list[dict[str, Any]] = []

    def record(entry: dict[str, Any]) -> None:
        history.append(entry)
        if on_epoch is not None:
            on_epoch(entry)

    cancel = CancelCallback(is_cancelled) if is_cancelled is not None else None
    with tempfile.TemporaryDirectory(prefix="curate-fit-") as workdir:
        set_seed(recipe.seed, reproducible=env.device.type == "cpu")
        dls = adapter.dataloaders(train_df, data.valid)
        learn, pretrained = _learner(adapter, dls, recipe, workdir, notices)
        lr = recipe.lr if recipe.lr is not None else _valley_lr(learn, recipe, len(train_df), cancel)
        cbs = [*([cancel] if cancel else []), HistoryCallback("model", None, record), *callbacks]
        with learn.added_cbs(cbs):
            notices += L.fit(learn, recipe, lr, pretrained, has_valid=len(data.valid) > 0, log=notices.append)
        if cancel is not None and cancel.cancelled:
            raise JobCancelled()
        metrics = _evaluate(data, adapter, learn)
    return FitResult(
        metrics=metrics,
        history=history,
        lr=float(lr),
        seconds=round(time.monotonic() - started, 3),
        pretrained=pretrained,
        notices=notices,
    )


def _learner(adapter, dls, recipe: Recipe, workdir: str, notices: list[str]):
    """(the learner, whether it is pretrained): from scratch, with a notice, when the
    pretrained weights cannot be had (no network and no cache)."""
    from app.training import learners as L

    pretrained = bool(recipe.pretrained)
    try:
        return L.build_learner(adapter, dls, pretrained, [], workdir), pretrained
    except Exception as exc:
        if not pretrained:
            raise
        notices.append(f"pretrained weights for {recipe.arch} unavailable ({type(exc).__name__}); training from scratch")
        return L.build_learner(adapter, dls, False, [], workdir), False


def _valley_lr(learn, recipe: Recipe, n_train: int, cancel) -> float:
    """fastai's lr_find, its valley suggestion (cancellable like the fit)."""
    from fastai.callback.schedule import valley

    from app.training import learners as L

    with learn.added_cbs([cancel] if cancel else []):
        found = learn.lr_find(num_it=L.lr_find_iterations(recipe, n_train), show_plot=False, suggest_funcs=(valley,))
    if cancel is not None and cancel.cancelled:
        raise JobCancelled()
    return float(found.valley)


def _evaluate(data: TrainingData, adapter, learn) -> dict[str, dict[str, Any] | None]:
    """The fitted model's metrics on the labelled valid and test samples (None for an empty split);
    a multi-label model's under per-class thresholds chosen on valid (app.evaluation.multilabel)."""
    from app.training import learners as L

    if data.multilabel:
        from app.evaluation.multilabel import choose_thresholds, multilabel_metrics

        valid, test = data.split("valid", labelled=True), data.split("test", labelled=True)
        P_valid, P_test = L.predict_probs(adapter, learn, valid), L.predict_probs(adapter, learn, test)
        thresholds = choose_thresholds(data.targets(valid), P_valid)
        return {name: multilabel_metrics(data.targets(df), P, thresholds, data.classes)
                for name, df, P in (("valid", valid, P_valid), ("test", test, P_test))}

    metrics: dict[str, dict[str, Any] | None] = {}
    for name in ("valid", "test"):
        df = data.split(name, labelled=True)
        if len(df) == 0:
            metrics[name] = None
            continue
        P = L.predict_probs(adapter, learn, df)
        metrics[name] = classification_metrics(df["y"].to_numpy(), np.argmax(P, axis=1), data.classes)
    return metrics
