"""The recipe's loss, optimiser and schedule options as fastai pieces, and lr_find's rules.

A new option is a name in app.training.recipe and an entry in one of the tables here
(LOSSES, OPTIMIZERS, SCHEDULES, LR_RULES, MONITORS); architectures are in app.training.adapters.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from fastai.callback.schedule import (  # noqa: F401  (fit_one_cycle, fine_tune, fit_flat_cos patch Learner)
    ParamScheduler,
    SchedCos,
    combine_scheds,
    fine_tune,
    fit_flat_cos,
    fit_one_cycle,
    minimum,
    steep,
    valley,
)
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat, FocalLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.optimizer import Adam, Optimizer, RAdam, average_grad, l2_reg, ranger, weight_decay
from fastcore.foundation import L

from app.training.recipe import Recipe


def class_weights(counts: np.ndarray) -> np.ndarray:
    """sqrt(n_min / n_c): the rarest class weighs 1, a class 100x as common 0.1. The square root
    (rather than the full inverse frequency) keeps the common classes' precision; a class absent
    from the train set weighs 1 (no sample of it reaches the loss)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return np.ones_like(counts)
    n_min = counts[present].min()
    return np.where(present, np.sqrt(n_min / np.where(present, counts, 1.0)), 1.0)


def _weights_tensor(weights, device: torch.device) -> torch.Tensor:
    return torch.tensor(np.asarray(weights, dtype=np.float32), device=device)


def _focal(recipe: Recipe, counts: np.ndarray, device: torch.device) -> FocalLossFlat:
    alpha = recipe.focal_alpha
    if alpha is None:
        weight = None
    elif alpha == "balanced":
        weight = _weights_tensor(class_weights(counts), device)
    else:
        if len(alpha) != len(counts):
            raise ValueError(f"focal_alpha has {len(alpha)} weights; the dataset has {len(counts)} classes")
        weight = _weights_tensor(alpha, device)
    return FocalLossFlat(gamma=recipe.focal_gamma, weight=weight)


# name -> loss from (recipe, the train set's class counts, device)
LOSSES: dict[str, Callable[[Recipe, np.ndarray, torch.device], Any]] = {
    "cross_entropy": lambda r, counts, device: CrossEntropyLossFlat(),
    "weighted_cross_entropy": lambda r, counts, device: CrossEntropyLossFlat(weight=_weights_tensor(class_weights(counts), device)),
    "focal": _focal,
    "label_smoothing": lambda r, counts, device: LabelSmoothingCrossEntropyFlat(eps=r.label_smoothing),
}


def nesterov_step(p, lr, mom, grad_avg, **kwargs):
    "Nesterov momentum, as torch.optim.SGD(nesterov=True): step along grad + mom * grad_avg"
    p.data.add_(p.grad.data.add(grad_avg, alpha=mom), alpha=-lr)


def nesterov_sgd(params, lr, mom: float = 0.9, wd: float = 0.0, decouple_wd: bool = True) -> Optimizer:
    """SGD with Nesterov momentum from fastai's optimizer steps (fastai's SGD has plain momentum)."""
    cbs = [weight_decay] if decouple_wd else [l2_reg]
    return Optimizer(params, [*cbs, average_grad, nesterov_step], lr=lr, mom=mom, wd=wd)


# name -> fastai optimizer function. fastai's Adam decouples weight decay (AdamW) by default:
# "adamw" is that, unchanged; "adam" adds the decay to the gradient (L2), the classic Adam.
OPTIMIZERS: dict[str, Callable] = {
    "adamw": Adam,
    "adam": Adam,
    "radam": RAdam,
    "ranger": ranger,
    "sgd": nesterov_sgd,
}
OPTIMIZER_OPTIONS: dict[str, dict[str, Any]] = {
    "adam": {"decouple_wd": False},
    "sgd": {"mom": 0.9},
}


def opt_func(recipe: Recipe) -> Callable:
    """The recipe's optimizer function with its eps and weight decay (true weight decay except for
    "adam"; the learner keeps batchnorm and bias parameters out of it: wd_bn_bias=False)."""
    kwargs = dict(OPTIMIZER_OPTIONS.get(recipe.optimizer, {}))
    if recipe.eps is not None:
        kwargs["eps"] = recipe.eps
    if recipe.weight_decay is not None:
        kwargs["wd"] = recipe.weight_decay
    fn = OPTIMIZERS[recipe.optimizer]
    return partial(fn, **kwargs) if kwargs else fn


def fit_sgdr_cycles(learn: Learner, n_epoch: int, lr, cycle_len: int, cbs: list) -> None:
    """SGDR with cycles of `cycle_len` epochs (the last one shorter when they do not divide
    n_epoch): a cosine from lr to 0 in each, restarting at lr. fastai's fit_sgdr doubles each
    cycle (cycle_mult=2, epochs 1, 3, 7, 15 ...); this builds the same ParamScheduler with
    equal cycles so that any epoch count works."""
    if learn.opt is None:
        learn.create_opt()
    learn.opt.set_hyper("lr", lr)
    lr_max = np.array([h["lr"] for h in learn.opt.hypers])
    lengths = [cycle_len] * (n_epoch // cycle_len) + ([n_epoch % cycle_len] if n_epoch % cycle_len else [])
    scheds = {"lr": combine_scheds([n / n_epoch for n in lengths], [SchedCos(lr_max, 0) for _ in lengths])}
    learn.fit(n_epoch, cbs=ParamScheduler(scheds) + L(cbs))


def _phase(name: str, learn: Learner, recipe: Recipe, n_epoch: int, lr, cbs: list, part: str = "all") -> None:
    """One fit under the schedule `name`; part "head" and "body" are a pretrained model's two
    phases (one_cycle then takes fine_tune's settings), "all" a model from scratch."""
    if name == "one_cycle":
        if part == "head":
            learn.fit_one_cycle(n_epoch, lr, pct_start=0.99, cbs=cbs)
        elif part == "body":
            learn.fit_one_cycle(n_epoch, lr, pct_start=0.3, div=5.0, cbs=cbs)
        else:
            learn.fit_one_cycle(n_epoch, lr, cbs=cbs)
    elif name == "flat_cos":
        learn.fit_flat_cos(n_epoch, lr, cbs=cbs)
    else:
        fit_sgdr_cycles(learn, n_epoch, lr, recipe.cycle_len or 1, cbs)


def _fine_tune(name: str, learn: Learner, recipe: Recipe, lr: float, cbs: list) -> None:
    """fastai's transfer-learning recipe under any schedule: `freeze_epochs` on the new head at
    lr, then the whole model at lr/2 with discriminative rates slice(lr/2/lr_mult, lr/2)."""
    freeze_epochs = recipe.freeze_epochs if recipe.freeze_epochs is not None else 1
    lr_mult = recipe.lr_mult or 100.0
    if name == "one_cycle" and freeze_epochs > 0:
        learn.fine_tune(recipe.epochs, base_lr=lr, freeze_epochs=freeze_epochs, lr_mult=lr_mult, cbs=cbs)
        return
    if freeze_epochs > 0:
        learn.freeze()
        _phase(name, learn, recipe, freeze_epochs, slice(lr), cbs, "head")
    learn.unfreeze()
    _phase(name, learn, recipe, recipe.epochs, slice(lr / 2 / lr_mult, lr / 2), cbs, "body")


def _schedule(name: str) -> Callable[[Learner, Recipe, float, bool, list], None]:
    def fit_fn(learn: Learner, recipe: Recipe, lr: float, pretrained: bool, cbs: list) -> None:
        if pretrained:
            _fine_tune(name, learn, recipe, lr, cbs)
        else:
            _phase(name, learn, recipe, recipe.epochs, lr, cbs)

    fit_fn.__name__ = f"fit_{name}"
    return fit_fn


# name -> (fit function, whether a pretrained model first trains its head for freeze_epochs)
SCHEDULES: dict[str, tuple[Callable[[Learner, Recipe, float, bool, list], None], bool]] = {
    "one_cycle": (_schedule("one_cycle"), True),
    "flat_cos": (_schedule("flat_cos"), True),
    "sgdr": (_schedule("sgdr"), True),
}

# lr_find suggestion functions; fastai's `minimum` is already a tenth of the minimum's lr.
LR_RULES: dict[str, Callable] = {"valley": valley, "steep": steep, "minimum": minimum}
# monitor name -> the recorder's column
MONITORS = {"valid_loss": "valid_loss", "accuracy": "accuracy", "f1": "f1_score"}


def total_epochs(recipe: Recipe, pretrained: bool) -> int:
    """Epochs one model runs under the recipe's schedule."""
    _, two_phases = SCHEDULES[recipe.schedule]
    freeze = recipe.freeze_epochs if recipe.freeze_epochs is not None else 1
    return recipe.epochs + (freeze if pretrained and two_phases else 0)
