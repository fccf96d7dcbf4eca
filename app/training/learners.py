"""Recipe to fastai learner, fit and predictions: the learner with the recipe's loss, optimiser,
metrics and precision; training under its schedule, early stopping and weight keeping;
lr_find's suggestions; and ensembled predictions.

The pieces come from app.training.adapters (tasks, architectures, sampling), app.training.options
(losses, optimisers, schedules) and app.training.environment (device, precision).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import pandas as pd
import torch
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision  # noqa: F401  (patches Learner.to_fp16 / to_bf16)
from fastai.callback.progress import ProgressCallback
from fastai.callback.tracker import EarlyStoppingCallback
from fastai.callback.training import GradientAccumulation
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.metrics import F1Score, accuracy
from fastcore.basics import noop

from app.training.adapters import TaskAdapter
from app.training.callbacks import BestEpochCallback, KeepBestCallback, SnapshotCallback
from app.training.environment import effective_batch_size
from app.training.nan_guard import check_finite_probs, fit_with_recovery
from app.training.multilabel import learner_metrics, multilabel_loss
from app.training.options import LOSSES, LR_RULES, MONITORS, SCHEDULES, opt_func
from app.training.recipe import Recipe

LR_FIND_ITERATIONS = 100
LR_FIND_MIN_ITERATIONS = 20


def quiet(learn: Learner) -> Learner:
    """Progress goes to the job, not to a console progress bar or printed epoch lines."""
    if any(isinstance(cb, ProgressCallback) for cb in learn.cbs):
        learn.remove_cb(ProgressCallback)
    learn.logger = noop
    return learn


def build_learner(adapter: TaskAdapter, dls: DataLoaders, pretrained: bool, cbs: list, path) -> Learner:
    """The task's fastai learner with the recipe's loss, optimiser, metrics, precision and callbacks."""
    recipe = adapter.recipe
    counts = getattr(dls, "class_counts", None)
    if counts is None:
        if recipe.loss in ("weighted_cross_entropy", "focal"):
            raise ValueError("class-weighted losses need loaders from TaskAdapter.dataloaders (they carry the class counts)")
        counts = np.ones(len(adapter.classes), dtype=np.int64)
    if adapter.multilabel:
        n_train = getattr(dls, "n_train", int(counts.max()))
        loss_func = multilabel_loss(recipe, counts, n_train, adapter.env.device)
        metrics = learner_metrics(recipe.monitor)
    else:
        loss_func = LOSSES[recipe.loss](recipe, counts, adapter.env.device)
        metrics = [accuracy] + ([F1Score(average="macro")] if recipe.monitor == "f1" else [])
    learn = adapter.learner(
        dls,
        pretrained,
        loss_func=loss_func,
        opt_func=opt_func(recipe),
        metrics=metrics,
        cbs=cbs,
        path=path,
        wd_bn_bias=False,
    )
    quiet(learn)
    if adapter.env.precision == "bf16":
        learn.to_bf16()
    elif adapter.env.precision == "fp16":
        learn.to_fp16()
    if adapter.env.channels_last and adapter.task == "image":
        learn.add_cb(ChannelsLast())  # the model in NHWC; convolutions then give NHWC outputs
    if recipe.torch_compile:
        # In place (nn.Module.compile): the same module, so its state_dict keys, the artifact,
        # DDP's wrapper and the NaN guard's restore see no `_orig_mod.` prefix.
        learn.model.compile()
    return learn


def fit(learn: Learner, recipe: Recipe, lr: float, pretrained: bool, has_valid: bool,
        log: Callable[[str], None] | None = None,
        wrap: Callable[[Learner], AbstractContextManager] | None = None) -> list[str]:
    """Train under the recipe's schedule, recovering from non-finite losses and gradients
    (app.training.nan_guard: each retry goes to `log`); returns notices. `wrap(learn)` is a
    context around each attempt (app.training.ddp.data_parallel), left before a retry restores
    the start state.

    Afterwards `learn.best_epoch` is the epoch (counted over both phases of a pretrained model)
    with the best `monitor` value when retrain_best_epochs asks for it, and `learn.snapshots`
    the last epochs' weights when snapshot_ensemble is on."""
    def once(lr: float) -> list[str]:
        with wrap(learn) if wrap is not None else nullcontext():
            return _fit_once(learn, recipe, lr, pretrained, has_valid)

    return fit_with_recovery(learn, lr, once, has_eps=recipe.optimizer != "sgd", log=log)


def _fit_once(learn: Learner, recipe: Recipe, lr: float, pretrained: bool, has_valid: bool) -> list[str]:
    notices = []
    cbs: list[Callback] = []
    monitor = MONITORS[recipe.monitor]
    watchers = {"early_stopping": recipe.early_stopping is not None, "keep_best": recipe.keep_best,
                "retrain_best_epochs": recipe.retrain_best_epochs}
    if has_valid:
        if recipe.early_stopping is not None:
            cbs.append(EarlyStoppingCallback(monitor=monitor, patience=recipe.early_stopping))
        if recipe.keep_best:
            cbs.append(KeepBestCallback(monitor=monitor, fname="best"))
    else:
        for name, on in watchers.items():
            if on:
                notices.append(f"{name} ignored: the dataset has no labelled valid samples to monitor")
    best = BestEpochCallback(monitor=monitor) if has_valid and recipe.retrain_best_epochs else None
    if best is not None:
        cbs.append(best)
    snapshots = SnapshotCallback(recipe.snapshot_ensemble) if recipe.snapshot_ensemble else None
    if snapshots is not None:
        cbs.append(snapshots)
    if recipe.accumulate is not None:
        cbs.append(GradientAccumulation(n_acc=recipe.accumulate))
    fit_fn, _ = SCHEDULES[recipe.schedule]
    fit_fn(learn, recipe, lr, pretrained, cbs)
    if best is not None:
        learn.best_epoch = best.best_epoch
    if snapshots is not None:
        learn.snapshots = list(snapshots.snapshots)
    return notices


def lr_find_iterations(recipe: Recipe, n_train: int) -> int:
    """lr_find's usual 100 steps, but never more than the training itself takes (at least 20):
    on a small dataset 100 steps would be many epochs, and longer than the run."""
    batches = max(1, n_train // effective_batch_size(recipe.batch_size, n_train))
    return int(min(LR_FIND_ITERATIONS, max(LR_FIND_MIN_ITERATIONS, batches * recipe.epochs)))


def lr_suggestions(learn: Learner, num_it: int = LR_FIND_ITERATIONS) -> dict[str, float]:
    """fastai's lr_find, with every rule's suggestion: valley, steep and minimum (a tenth of
    the lr at the lowest loss)."""
    found = learn.lr_find(num_it=num_it, show_plot=False, suggest_funcs=tuple(LR_RULES.values()))
    return {name: float(getattr(found, fn.__name__)) for name, fn in LR_RULES.items()}


def _get_probs(learn: Learner, dl, tta: bool) -> torch.Tensor:
    if tta:
        preds, _ = learn.tta(dl=dl)
    else:
        preds, _ = learn.get_preds(dl=dl)
    return check_finite_probs(preds.float().cpu())


def predict_probs(adapter: TaskAdapter, learn: Learner, items: pd.DataFrame, tta: bool = False) -> np.ndarray:
    """Class probabilities (rows in the order of `items`) from fastai's get_preds, or learn.tta
    with `tta`. A learner trained with a snapshot ensemble averages its snapshots' probabilities
    (and is left with its final weights)."""
    if len(items) == 0:
        return np.zeros((0, len(adapter.classes)))
    bs = max(adapter.recipe.batch_size * 2, 64)
    dl = adapter.test_dl(learn, items, bs)
    snapshots = getattr(learn, "snapshots", None)
    if not snapshots:
        return _get_probs(learn, dl, tta).numpy().astype(np.float64)
    final = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    try:
        total = None
        for state in snapshots:
            learn.model.load_state_dict(state)
            probs = _get_probs(learn, dl, tta).double()
            total = probs if total is None else total + probs
    finally:
        learn.model.load_state_dict(final)
    return (total / len(snapshots)).numpy()
