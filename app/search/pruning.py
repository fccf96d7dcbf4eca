"""The fastai callback that reports a trial's valid metric to Optuna after every epoch and
stops the fit when the pruner says so."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from fastai.callback.core import CancelFitException
from fastai.learner import Recorder

from app.evaluation.metrics import classification_metrics
from app.evaluation.multilabel import multilabel_metrics
from app.training.callbacks import CancelCallback, LeanCallback, in_lr_find


class TrialPruningCallback(LeanCallback):
    """Reports `metric` (macro_f1, accuracy or valid_loss on the valid split) as the trial's
    intermediate value at each epoch (steps count epochs from 1 over every fit of the model).

    When the pruner prunes, it sets `pruned` and stops the fit the way a cancel does (fastai's
    CancelFitException, with the CancelCallback marked cancelled), so fit_and_evaluate skips
    its evaluation and raises JobCancelled, which the search turns into a pruned trial.
    """

    # After the Recorder has written the epoch's valid_loss; batches are read in validation only.
    order = Recorder.order + 3
    run_train = False

    def __init__(self, trial, metric: str, classes: Sequence[str], multilabel: bool = False) -> None:
        self.trial, self.metric, self.classes, self.multilabel = trial, metric, list(classes), multilabel
        self.step = 0
        self.pruned = False
        self.values: list[float] = []

    def before_fit(self) -> None:
        self.run = not in_lr_find(self)

    def before_validate(self) -> None:
        self._pred: list[np.ndarray] = []
        self._true: list[np.ndarray] = []

    def after_batch(self) -> None:
        if self.metric == "valid_loss":
            return
        pred = self.learn.pred
        if isinstance(pred, (tuple, list)):
            pred = pred[0]
        if self.multilabel:
            # Per-class sigmoids, judged at 0.5 while training (the fit's end tunes the thresholds).
            self._pred.append(pred.detach().float().sigmoid().cpu().numpy())
            self._true.append(self.learn.yb[0].detach().cpu().numpy())
            return
        self._pred.append(pred.detach().argmax(dim=-1).reshape(-1).cpu().numpy())
        self._true.append(self.learn.yb[0].detach().reshape(-1).cpu().numpy())

    def _value(self) -> float | None:
        if self.metric == "valid_loss":
            rec = self.learn.recorder
            value = dict(zip(rec.metric_names, rec.log)).get("valid_loss")
            return None if value is None else float(value)
        if not getattr(self, "_pred", None):
            return None
        if self.multilabel:
            m = multilabel_metrics(np.concatenate(self._true), np.concatenate(self._pred), np.full(len(self.classes), 0.5),
                                   self.classes)
        else:
            m = classification_metrics(np.concatenate(self._true), np.concatenate(self._pred), self.classes)
        return None if m is None else float(m[self.metric])

    def after_epoch(self) -> None:
        self.step += 1
        value = self._value()
        if value is None:
            return
        self.values.append(value)
        # A diverged model (nan loss) is the worst there is: report it so the pruner drops it.
        self.trial.report(value if math.isfinite(value) else float("nan"), self.step)
        if self.trial.should_prune():
            self.pruned = True
            for cb in self.learn.cbs:
                if isinstance(cb, CancelCallback):
                    cb.cancelled = True
            raise CancelFitException()
