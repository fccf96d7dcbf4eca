"""Non-finite losses and gradients: detect them during a fit, restore the state the fit started
from, and retry down a bounded ladder of safer settings.

fastai's TerminateOnNaNCallback only stops the fit and keeps the broken weights. Here
`NanGuardCallback` raises `NonFiniteError` on a non-finite loss or gradient (on the CPU before the
optimizer steps; on CUDA within CUDA_CHECK_EVERY steps, to spare a device sync every step), and
`fit_with_recovery` catches it, restores the model's weights and the optimizer's state from
before the fit, and fits again:

    attempt 1: the recipe as it is
    attempt 2: optimizer eps raised to 1e-4 (sgd, which has no eps: lr / 10)
    attempt 3: eps 1e-3 and lr / 10 (sgd: lr / 100)

A larger eps bounds Adam's step where the second-moment estimate is tiny; a lower lr shrinks
every step. A retry reruns the whole schedule from the start: a schedule (one cycle, fine_tune's
two phases, SGDR cycles) cannot resume cleanly from an epoch in its middle. When the last
attempt fails too, `NonFiniteTraining` says what was tried, and the model is not used.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.learner import Learner

from app.training.callbacks import LeanCallback, in_lr_find

# (eps, lr factor) of each retry; eps None: leave it (sgd has none).
RETRY_LADDER: tuple[tuple[float | None, float], ...] = ((1e-4, 1.0), (1e-3, 0.1))
SGD_LADDER: tuple[tuple[float | None, float], ...] = ((None, 0.1), (None, 0.01))
CUDA_CHECK_EVERY = 16  # steps between reads of the guard's flags on CUDA (each read waits for the GPU)


class NonFiniteError(RuntimeError):
    """A non-finite loss, gradient or weight met during a fit (caught by fit_with_recovery)."""


class NonFiniteTraining(RuntimeError):
    """Training kept producing non-finite values after every retry; the message says what was tried.
    The worker does not run the job again: the same recipe on the same data fails the same way."""

    retryable = False


def _finite(tensors) -> torch.Tensor:
    """One boolean tensor: every value of every tensor is finite (one device sync when read).
    fp32 tensors go through one fused norm (a NaN or infinity makes the norm non-finite)."""
    ts = [t.detach() for t in tensors if t is not None and t.is_floating_point()]
    if not ts:
        return torch.tensor(True)
    wide = [t for t in ts if t.dtype == torch.float32]
    flags = [torch.isfinite(torch.stack(torch._foreach_norm(wide))).all()] if wide else []
    flags += [torch.isfinite(t).all() for t in ts if t.dtype != torch.float32]
    device = flags[0].device
    return torch.stack([f.to(device) for f in flags]).all()


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer (batchnorm statistics too) is finite."""
    return bool(_finite(model.state_dict().values()))


class NanGuardCallback(LeanCallback):
    """Raises NonFiniteError on a non-finite training loss or gradient, and on non-finite weights
    at an epoch's end. Not in lr_find, which diverges on purpose.

    Runs after MixedPrecision (order 10): under fp16 its before_step sees unscaled gradients, and
    only for steps the loss scaler takes (an overflowing scaled gradient is the scaler's business,
    not an error); a non-finite loss on a skipped step is caught after the batch. On the CPU every
    step is checked before the optimizer steps, so a NaN never reaches the weights. On CUDA reading
    a flag waits for the GPU, so each step's flags are combined on the device and read every
    `check_every` steps (CUDA_CHECK_EVERY) and at each epoch's end: a NaN may reach the weights
    for up to that many steps, and fit_with_recovery's restore undoes it.
    """

    order = MixedPrecision.order + 5
    run_valid = False

    def __init__(self, check_every: int | None = None) -> None:
        self.check_every = check_every

    def before_fit(self) -> None:
        self.run = not in_lr_find(self)
        self._bad: torch.Tensor | None = None  # [loss, gradient] flags since the last check
        cuda = next(self.learn.model.parameters()).is_cuda
        self._every = self.check_every or (CUDA_CHECK_EVERY if cuda else 1)

    def before_batch(self) -> None:
        self._stepped = False

    def _flag(self, loss_bad: torch.Tensor, grad_bad: torch.Tensor) -> None:
        flags = torch.stack([loss_bad, grad_bad.to(loss_bad.device)])
        self._bad = flags if self._bad is None else self._bad | flags

    def _check(self, epoch_end: bool = False) -> None:
        if self._bad is None:
            return
        loss_bad, grad_bad = self._bad.tolist()
        self._bad = None
        if loss_bad or grad_bad:
            self._fail("loss" if loss_bad else "gradient", epoch_end)

    def _fail(self, what: str, epoch_end: bool = False) -> None:
        if epoch_end:
            where = f"in epoch {self.epoch + 1}"
        else:
            where = f"{'at' if self._every == 1 else 'by'} epoch {self.epoch + 1}, batch {self.iter + 1}"
        exc = NonFiniteError(f"non-finite {what} {where}")
        exc.detail = exc.args[0]  # fastai prefixes the message with the callback and event
        raise exc

    def before_step(self) -> None:
        self._stepped = True
        grads = [p.grad for p in self.learn.model.parameters() if p.grad is not None]
        self._flag(~torch.isfinite(self.learn.loss.detach()).all(), ~_finite(grads))
        if self._every == 1:
            self._check()  # before the step: the weights stay finite

    def after_batch(self) -> None:
        if not self._stepped:  # the loss scaler skipped the step, or gradients are being accumulated
            loss_bad = ~torch.isfinite(self.learn.loss.detach()).all()
            self._flag(loss_bad, torch.zeros_like(loss_bad))
        if (self.iter + 1) % self._every == 0:
            self._check()

    def after_epoch(self) -> None:
        self._check(epoch_end=True)
        if not weights_finite(self.learn.model):
            self._fail("weights", epoch_end=True)


class PoisonLossCallback(Callback):
    """Fault injection for tests and the bench: makes the training loss NaN on batch `at` (counted
    over every fit it is added to), `times` times (None: every batch from then on)."""

    order = MixedPrecision.order + 1  # after MixedPrecision's after_loss leaves autocast

    def __init__(self, at: int = 2, times: int | None = 1) -> None:
        self.at, self.times = at, times
        self.batches = 0
        self.poisoned = 0

    def after_loss(self) -> None:
        if not self.training or in_lr_find(self):
            return
        self.batches += 1
        if self.batches >= self.at and (self.times is None or self.poisoned < self.times):
            self.poisoned += 1
            self.learn.loss_grad = self.learn.loss_grad * float("nan")
            self.learn.loss = self.learn.loss_grad.clone()


@dataclass
class StartState:
    """The weights and optimizer state a fit starts from, kept on the CPU."""

    weights: dict[str, torch.Tensor]
    opt: dict[str, Any] | None
    frozen_idx: int | None
    opt_func: Callable

    @classmethod
    def take(cls, learn: Learner) -> StartState:
        weights = {k: v.detach().to("cpu", copy=True) for k, v in learn.model.state_dict().items()}
        opt = None if learn.opt is None else copy.deepcopy(learn.opt.state_dict())
        return cls(weights, opt, None if learn.opt is None else learn.opt.frozen_idx, learn.opt_func)

    def restore(self, learn: Learner, eps: float | None) -> None:
        learn.model.load_state_dict(self.weights)
        for p in learn.model.parameters():
            p.grad = None  # the failed step's non-finite gradients would add to the next ones
        learn.opt_func = self.opt_func if eps is None else partial(self.opt_func, eps=eps)
        if self.opt is None:
            learn.opt = None  # the fit creates it, with the new eps
            return
        learn.opt.load_state_dict(copy.deepcopy(self.opt))
        learn.opt.freeze_to(self.frozen_idx)
        if eps is not None and "eps" in learn.opt.hypers[0]:
            learn.opt.set_hyper("eps", eps)


def _reset_callbacks(learn: Learner) -> None:
    """Let the job's callbacks count the retry's epochs from the start again."""
    for cb in learn.cbs:
        reset = getattr(cb, "reset_for_retry", None)
        if callable(reset):
            reset()
        elif hasattr(cb, "epochs_done"):
            cb.epochs_done = 0


def _current_eps(learn: Learner) -> float | None:
    if learn.opt is not None and "eps" in learn.opt.hypers[0]:
        return float(learn.opt.hypers[0]["eps"])
    kw = getattr(learn.opt_func, "keywords", None) or {}
    return kw.get("eps")


def fit_with_recovery(
    learn: Learner,
    lr: float,
    fit_once: Callable[[float], list[str]],
    has_eps: bool,
    log: Callable[[str], None] | None = None,
    check_every: int | None = None,
) -> list[str]:
    """Run `fit_once(lr)` under NanGuardCallback; on a non-finite value restore the start state and
    retry down the ladder. Returns fit_once's notices; `learn.nan_recovery` lists each retry
    (empty when the first attempt was clean). Raises NonFiniteTraining when every attempt failed."""
    log = log or (lambda message: None)
    start = StartState.take(learn)
    ladder = RETRY_LADDER if has_eps else SGD_LADDER
    base_eps = _current_eps(learn) if has_eps else None
    tried: list[str] = []
    learn.nan_recovery = []
    guard = NanGuardCallback(check_every)
    eps, attempt_lr = base_eps, lr
    for attempt in range(len(ladder) + 1):
        try:
            with learn.added_cbs([guard]):
                notices = fit_once(attempt_lr)
            if not weights_finite(learn.model):
                raise NonFiniteError("non-finite weights after the fit")
            return notices
        except NonFiniteError as error:
            exc = getattr(error, "detail", str(error))
            setting = f"lr {attempt_lr:.2e}" + (f", eps {eps:.0e}" if eps is not None else "")
            tried.append(f"{setting}: {exc}")
            learn.nan_recovery.append({"attempt": attempt + 1, "lr": attempt_lr, "eps": eps, "error": exc})
            if attempt == len(ladder):
                break
            new_eps, factor = ladder[attempt]
            if new_eps is not None:
                eps = max(new_eps, eps or 0.0)
            attempt_lr = lr * factor
            start.restore(learn, eps if new_eps is not None else None)
            _reset_callbacks(learn)
            log(f"{exc}: restored the weights and optimizer state from the start of the fit; retrying with "
                f"lr {attempt_lr:.2e}" + (f", eps {eps:.0e}" if eps is not None else "")
                + f" (retry {attempt + 1} of {len(ladder)})")
    # Leave the start weights rather than broken ones; the caller must not predict with them.
    start.restore(learn, None)
    raise NonFiniteTraining(
        f"training produced non-finite values in all {len(tried)} attempts ({'; '.join(tried)}); "
        "try a lower lr, precision fp32, or check the data for extreme values"
    )


def check_finite_probs(probs: torch.Tensor) -> torch.Tensor:
    """Probabilities as they are, or NonFiniteTraining when any is NaN or infinite."""
    if not bool(torch.isfinite(probs).all()):
        bad = int((~torch.isfinite(probs)).any(dim=-1).sum()) if probs.ndim > 1 else -1
        raise NonFiniteTraining(f"the model predicted non-finite probabilities for {bad} samples; none were stored")
    return probs
