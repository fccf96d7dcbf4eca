"""`batch_size: "auto"`: the batch size from the gradient noise scale.

McCandlish et al. 2018, "An Empirical Model of Large-Batch Training" (appendix A.1): the
simple noise scale B_simple = tr(Sigma) / |G|^2 (the gradient's per-sample variance over its
squared norm) is about the largest batch size that still buys a near-linear speed-up; past it
larger batches mostly waste samples. With |G_B|^2 the squared norm of a gradient over a batch
of B samples, E|G_B|^2 = |G|^2 + tr(Sigma) / B, so two batch sizes B_small < B_big give

    |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1 / B_small - 1 / B_big)

Each is averaged over `AUTO_STEPS` batches before the ratio is taken (the ratio of averages
is less biased than the average of ratios). Gradients are taken at the starting weights
(pretrained or fresh), with every parameter trainable and no optimizer step: the noise scale
grows as the loss falls, so this is a floor for the later epochs, a sound starting batch size.

The chosen size is B_simple rounded to a power of two, then bounded: at least AUTO_MIN, at
most AUTO_MAX, the train samples over MIN_STEPS_PER_EPOCH (so an epoch has at least that many
optimizer steps) and, on CUDA, what half the free device memory holds at the memory one sample
took in the B_big pass. Where a bound is below AUTO_MIN the bound wins (a small train set).

Why a bound on steps per epoch: B_simple says how large a batch still buys a near-linear
speed-up per optimizer step, i.e. it trades samples for steps (McCandlish et al.'s
S = S_min (1 + B_noise / B)). That trade pays when the fit can run more epochs, but a recipe
fixes the number of epochs, so the batch size also fixes how many optimizer steps the fit gets:
epochs * n_train / B. Too few, and the fit stops far short of S_min however good each step is;
one-cycle also spends the first quarter of its steps (fastai's pct_start 0.25; 0.3 in a
pretrained model's second phase) warming the learning rate up, and with a couple of steps an
epoch there is no warm-up to speak of. On the image demo (1,000 train samples, 2 epochs from
scratch) the noise scale, bounded only by half the train samples, chose 500: 2 steps an epoch,
4 in all, and the valid accuracy fell from 0.600 at the fixed batch 64 to 0.247.
MIN_STEPS_PER_EPOCH = 16 is about what the default batch of 64 gives those 1,000 samples (15
full batches), which trains well there; it leaves one-cycle at least 4 warm-up steps in a
one-epoch fit and 8 in the demo's two, and it can bind only below 16 * AUTO_MAX = 16,384 train
samples, where a larger batch would save little time anyway.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from app.training.environment import Environment
from app.training.recipe import Recipe

AUTO_MIN = 8
AUTO_MAX = 1024
AUTO_STEPS = 10
AUTO_SMALL = 16  # B_small at most; B_big is 8x as large, within the train set
MIN_STEPS_PER_EPOCH = 16  # optimizer steps an epoch at least (see the module's docstring)
MEMORY_FRACTION = 0.5


def _squared_grad_norm(learn, xb: tuple, yb: tuple, params: list[torch.Tensor]) -> float:
    for p in params:
        p.grad = None
    pred = learn.model(*xb)
    if isinstance(pred, (tuple, list)):  # an RNN's (output, raw outputs, outputs)
        pred = pred[0]
    loss = learn.loss_func(pred, *yb)
    loss.backward()
    total = sum((p.grad.detach().float() ** 2).sum() for p in params if p.grad is not None)
    return float(total)


def noise_scale(learn, b_small: int, b_big: int, steps: int = AUTO_STEPS) -> dict[str, Any]:
    """Estimate |G|^2, tr(Sigma) and B_simple from `steps` batches of learn.dls.train (batch size
    b_big; the first b_small samples of each are the small batch). Also the device memory one
    sample of the B_big pass took (CUDA only, else None)."""
    model, dl = learn.model, learn.dls.train
    params = list(model.parameters())
    trainable = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    cuda = next(model.parameters()).is_cuda
    base = 0
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    small, big = [], []
    model.train()
    try:
        while len(big) < steps:
            seen = len(big)
            for batch in dl:
                xb, yb = tuple(batch[: dl.n_inp]), tuple(batch[dl.n_inp :])
                big.append(_squared_grad_norm(learn, xb, yb, params))
                small.append(_squared_grad_norm(learn, tuple(x[:b_small] for x in xb), tuple(y[:b_small] for y in yb), params))
                if len(big) >= steps:
                    break
            if len(big) == seen:
                raise ValueError(f"the train loader yields no batch of {b_big} samples")
    finally:
        for p, flag in zip(params, trainable):
            p.grad = None
            p.requires_grad_(flag)
    per_sample = (torch.cuda.max_memory_allocated() - base) / b_big if cuda else None
    g_small, g_big = sum(small) / len(small), sum(big) / len(big)
    grad_sq = (b_big * g_big - b_small * g_small) / (b_big - b_small)
    trace = (g_small - g_big) / (1 / b_small - 1 / b_big)
    b_simple = trace / grad_sq if grad_sq > 0 and trace > 0 else None
    return {"b_small": b_small, "b_big": b_big, "steps": len(big), "grad_sq": grad_sq, "trace_sigma": trace,
            "b_simple": b_simple, "bytes_per_sample": per_sample}


def choose(estimate: dict[str, Any], n_train: int, free_bytes: int | None) -> tuple[int, dict[str, int]]:
    """The batch size for an estimate (see the module's docstring) and the bounds that applied."""
    bounds = {"min": AUTO_MIN, "max": AUTO_MAX, "steps": max(2, n_train // MIN_STEPS_PER_EPOCH)}
    per_sample = estimate.get("bytes_per_sample")
    if free_bytes is not None and per_sample:
        bounds["memory"] = max(2, int(free_bytes * MEMORY_FRACTION / per_sample))
    upper = min(v for k, v in bounds.items() if k != "min")
    b = estimate["b_simple"]
    if b is None:
        # |G|^2 <= 0: the mean gradient is lost in the noise (take the largest size);
        # tr(Sigma) <= 0: no measurable noise (the smallest).
        target = upper if estimate["grad_sq"] <= 0 else AUTO_MIN
    else:
        target = 2 ** round(math.log2(max(b, 1.0)))
    return int(max(min(target, upper), min(AUTO_MIN, upper))), bounds


def auto_batch_size(recipe: Recipe, task: str, classes: list[str], cat_names, cont_names, train_df: pd.DataFrame,
                    valid_df: pd.DataFrame, env: Environment, log: Callable[[str], None], info: dict[str, Any],
                    multilabel: bool = False) -> Recipe:
    """The recipe with batch_size "auto" replaced by the chosen size (logged, and in
    info["batch_size_finder"]); any other recipe as it is."""
    if recipe.batch_size != "auto":
        return recipe
    from app.training.adapters import adapter_for
    from app.training.learners import build_learner

    n = len(train_df)
    if n < 4:
        chosen = max(2, n // 2)
        info["batch_size_finder"] = {"chosen": chosen, "reason": f"{n} train samples: too few to measure"}
        log(f"batch size auto: {chosen} ({n} train samples are too few to measure the gradient noise)")
        return recipe.model_copy(update={"batch_size": chosen})
    b_small = max(2, min(AUTO_SMALL, n // 8))
    b_big = min(8 * b_small, n)
    probe = recipe.model_copy(update={"batch_size": b_big})
    adapter = adapter_for(task, probe, env, classes, cat_names, cont_names, multilabel)
    dls = adapter.dataloaders(train_df, valid_df)
    with tempfile.TemporaryDirectory(prefix="curate-bs-") as workdir:
        try:
            learn = build_learner(adapter, dls, bool(recipe.pretrained), [], workdir)
        except Exception:  # no pretrained weights to be had: the fit falls back the same way
            learn = build_learner(adapter, dls, False, [], workdir)
        estimate = noise_scale(learn, b_small, dls.train.bs)
        del learn
    free = torch.cuda.mem_get_info(env.device)[0] if env.device.type == "cuda" else None
    chosen, bounds = choose(estimate, n, free)
    if recipe.accumulate is not None and chosen >= recipe.accumulate:  # accumulate is the larger batch
        bounds["accumulate"] = chosen = max(2, recipe.accumulate // 2)
    info["batch_size_finder"] = {**estimate, "chosen": chosen, "bounds": bounds}
    shown = "n/a" if estimate["b_simple"] is None else f"{estimate['b_simple']:.1f}"
    log(f"batch size auto: gradient noise scale B_simple {shown} (from {estimate['steps']} batches of "
        f"{b_small} and {estimate['b_big']}); chose {chosen} (bounds {bounds})")
    return recipe.model_copy(update={"batch_size": chosen})
