"""fastai callbacks that tie training to its job (progress, cancel, the per-epoch history) and
the recipe's weight keeping (best epoch, keep best, snapshots)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastai.callback.core import Callback, CancelFitException, event
from fastai.callback.tracker import SaveModelCallback, TrackerCallback
from fastai.learner import Recorder
from fastai.torch_core import get_model

from app.jobs.context import JobCancelled, JobContext

# Every event fastai calls a callback with.
EVENTS = frozenset(name for name in vars(event) if not name.startswith("_"))


def in_lr_find(cb: Callback) -> bool:
    """Whether the fit that `cb` is in is fastai's lr_find (it adds the `lr_finder` callback)."""
    return hasattr(cb.learn, "lr_finder")


class RunProgress:
    """The job's overall progress over weighted stages (lr_find, each fold, final model, scoring).

    Reports to ctx.progress at most every `min_interval` seconds unless forced, so a
    database-backed context is not written every batch.
    """

    def __init__(self, ctx: JobContext, weights: dict[str, float], min_interval: float = 1.0) -> None:
        total = sum(weights.values()) or 1.0
        self.ctx = ctx
        self.weights = {k: v / total for k, v in weights.items()}
        self.offsets: dict[str, float] = {}
        acc = 0.0
        for k, v in self.weights.items():
            self.offsets[k] = acc
            acc += v
        self.min_interval = min_interval
        self._last = 0.0
        self.fraction = 0.0

    def report(self, stage: str, within: float, message: str | None = None, force: bool = False) -> None:
        """Stage `stage` is `within` (0..1) done."""
        within = min(max(within, 0.0), 1.0)
        fraction = min(1.0, self.offsets[stage] + self.weights[stage] * within)
        # Never move backwards (fine_tune runs two fits inside one stage).
        self.fraction = max(self.fraction, fraction)
        now = time.monotonic()
        if force or now - self._last >= self.min_interval:
            self._last = now
            self.ctx.progress(round(self.fraction, 4), message)


class LeanCallback(Callback):
    """A callback that fastai calls only for the events it defines, with fastai's semantics.

    fastai calls every callback on every event (a dozen per batch); the default dispatch
    costs ~10 us a call, which measured 5-15% of a small tabular model's training time for
    the job's callbacks. This one returns at once for the events the class does not handle and
    hands the others to fastai's own dispatch, so `run`, `run_train` and `run_valid` work as
    in fastai's callbacks (and `run` is reset when a fit ends).
    """

    _handles: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._handles = frozenset(e for e in EVENTS if callable(getattr(cls, e, None)))

    def __call__(self, event_name: str):
        if event_name in self._handles:
            return super().__call__(event_name)
        if event_name == "after_fit":
            self.run = True
        return None


class JobProgressCallback(LeanCallback):
    """Reports the overall fraction and "fold 2/5, epoch 3/8" while one model trains (not in lr_find)."""

    order = Recorder.order + 2
    run_valid = False

    def __init__(self, progress: RunProgress, stage: str, label: str, total_epochs: int) -> None:
        self.progress, self.stage, self.label, self.total_epochs = progress, stage, label, total_epochs
        self.epochs_done = 0

    def before_fit(self) -> None:
        self.run = not in_lr_find(self)

    def _message(self) -> str:
        return f"{self.label}, epoch {min(self.epochs_done + 1, self.total_epochs)}/{self.total_epochs}"

    def after_batch(self) -> None:
        within = (self.epochs_done + self.iter / max(self.n_iter, 1)) / self.total_epochs
        self.progress.report(self.stage, within, self._message())

    def after_epoch(self) -> None:
        self.epochs_done += 1
        self.progress.report(self.stage, self.epochs_done / self.total_epochs, self._message(), force=True)


class LRFindProgressCallback(LeanCallback):
    """Reports the overall fraction and "learning rate: finding the learning rate" during lr_find."""

    order = Recorder.order + 2
    run_valid = False

    def __init__(self, progress: RunProgress, stage: str, label: str) -> None:
        self.progress, self.stage, self.label = progress, stage, label

    def before_fit(self) -> None:
        self.run = in_lr_find(self)

    def after_batch(self) -> None:
        within = self.train_iter / max(self.learn.lr_finder.num_it, 1)
        self.progress.report(self.stage, within, f"{self.label}: finding the learning rate")


class CancelCallback(LeanCallback):
    """Stops training at the next batch once the job is cancelled.

    Inside fit it raises fastai's CancelFitException (fit ends cleanly, `cancelled` is set
    and the job raises JobCancelled); during get_preds it raises JobCancelled directly.
    """

    order = -10

    def __init__(self, is_cancelled: Callable[[], bool]) -> None:
        self.is_cancelled = is_cancelled
        self.cancelled = False

    def after_batch(self) -> None:
        if self.is_cancelled():
            self.cancelled = True
            # get_preds adds fastai's `gather_preds` callback; there is no fit to end.
            if hasattr(self.learn, "gather_preds"):
                raise JobCancelled()
            raise CancelFitException()


class HistoryCallback(LeanCallback):
    """Records train_loss, valid_loss and the metrics of every epoch, and hands each epoch's
    entry to `on_epoch` (which stores the run's history, so the API shows it while training)."""

    order = Recorder.order + 1

    def __init__(self, model: str, fold: int | None, on_epoch: Callable[[dict[str, Any]], None]) -> None:
        self.model, self.fold, self.on_epoch = model, fold, on_epoch
        self.epochs_done = 0
        self.entries: list[dict[str, Any]] = []

    def before_fit(self) -> None:
        self.run = not in_lr_find(self)
        self.started = time.monotonic()

    def after_epoch(self) -> None:
        self.epochs_done += 1
        rec = self.learn.recorder
        values = dict(zip(rec.metric_names, rec.log))
        entry: dict[str, Any] = {"model": self.model, "fold": self.fold, "epoch": self.epochs_done}
        for name in rec.metric_names:
            if name in ("epoch", "time"):
                continue
            v = values.get(name)
            entry[name] = None if v is None else float(v)
        entry["frozen"] = bool(getattr(self.learn, "opt", None) is not None and self.learn.opt.frozen_idx > 0)
        entry["seconds"] = round(time.monotonic() - self.started, 3)
        self.started = time.monotonic()
        self.entries.append(entry)
        self.on_epoch(entry)


class BestEpochCallback(TrackerCallback):
    """Which epoch had the best `monitor` value, counted over every fit of the learner (a
    pretrained model's frozen and unfrozen phases are one count): `best_epoch`, from 1."""

    def __init__(self, monitor: str = "valid_loss") -> None:
        super().__init__(monitor=monitor, reset_on_fit=False)
        self.epochs_done = 0
        self.best_epoch: int | None = None

    def after_epoch(self) -> None:
        super().after_epoch()
        self.epochs_done += 1
        if self.new_best:
            self.best_epoch = self.epochs_done


class KeepBestCallback(SaveModelCallback):
    """fastai's SaveModelCallback (save the best epoch's weights, load them when fit ends),
    without its print, and loading only what this fit saved: a fit cancelled before its first
    epoch ends keeps its weights rather than failing on a missing or stale file."""

    def before_fit(self) -> None:
        super().before_fit()
        self.last_saved_path = None
        self.best_epoch: int | None = None

    def after_epoch(self) -> None:
        TrackerCallback.after_epoch(self)
        if self.new_best:
            self.best_epoch = self.epoch + 1
            self._save(self.fname)

    def after_fit(self) -> None:
        if self.last_saved_path is not None and Path(self.last_saved_path).exists():
            self.learn.load(self.fname, with_opt=self.with_opt)
        self.run = True


class SnapshotCallback(LeanCallback):
    """Keeps a CPU copy of the weights after each of the last `n` epochs of a fit (a snapshot
    ensemble; with SGDR's restarts each snapshot ends a cycle). Runs before fastai's trackers,
    so the epoch at which early stopping ends the fit is kept too."""

    order = Recorder.order + 3

    def __init__(self, n: int) -> None:
        self.n = n
        self.snapshots: deque[dict[str, Any]] = deque(maxlen=n)

    def before_fit(self) -> None:
        self.run = not in_lr_find(self)
        if self.run:
            self.snapshots.clear()

    def after_epoch(self) -> None:
        # A rolling window: early stopping may end the fit before its planned last epoch.
        # get_model: the plain module's keys, also while data-parallel training wraps it (app.training.ddp).
        weights = get_model(self.learn.model).state_dict()
        self.snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in weights.items()})
