"""The job's fastai callbacks keep fastai's dispatch rules (run, run_train, run_valid) while
being called only for the events they handle."""

from __future__ import annotations

import pytest
import torch
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat

from app.jobs.context import JobCancelled
from app.training.callbacks import (
    CancelCallback,
    HistoryCallback,
    JobProgressCallback,
    LeanCallback,
    LRFindProgressCallback,
    RunProgress,
)
from app.training.learners import quiet

N_TRAIN, N_VALID, BS = 16, 8, 4


class Recorder:
    """A JobContext's progress, recorded."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str | None]] = []

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.reports.append((fraction, message))


def _learner(path) -> Learner:
    torch.manual_seed(0)
    items = [(torch.randn(2), torch.tensor(i % 2)) for i in range(N_TRAIN + N_VALID)]
    dls = DataLoaders(DataLoader(items[:N_TRAIN], bs=BS, shuffle=True, drop_last=True), DataLoader(items[N_TRAIN:], bs=BS))
    return quiet(Learner(dls, torch.nn.Linear(2, 2), loss_func=CrossEntropyLossFlat(), path=path))


class CountBatches(LeanCallback):
    run_valid = False

    def __init__(self) -> None:
        self.batches = 0

    def after_batch(self) -> None:
        self.batches += 1


class SkipFirstFit(LeanCallback):
    def __init__(self) -> None:
        self.fits, self.epochs = 0, 0

    def before_fit(self) -> None:
        self.fits += 1
        self.run = self.fits > 1

    def after_epoch(self) -> None:
        self.epochs += 1


def test_lean_callbacks_are_called_only_for_the_events_they_define():
    assert JobProgressCallback._handles == {"before_fit", "after_batch", "after_epoch"}
    assert CancelCallback._handles == {"after_batch"}
    assert CountBatches._handles == {"after_batch"}


def test_run_valid_false_skips_the_validation_batches(tmp_path):
    learn, cb = _learner(tmp_path), CountBatches()
    learn.fit(2, cbs=[cb])
    assert cb.batches == 2 * (N_TRAIN // BS)


def test_run_set_in_before_fit_skips_that_fit_and_is_reset_after_it(tmp_path):
    learn, cb = _learner(tmp_path), SkipFirstFit()
    learn.fit(2, cbs=[cb])
    assert (cb.fits, cb.epochs, cb.run) == (1, 0, True)
    learn.fit(3, cbs=[cb])
    assert (cb.fits, cb.epochs) == (2, 3)


def test_lr_find_reports_its_own_progress_and_no_epochs(tmp_path):
    learn, ctx = _learner(tmp_path), Recorder()
    progress = RunProgress(ctx, {"lr_find": 1.0, "final": 1.0}, min_interval=0)
    entries: list[dict] = []
    cbs = [
        LRFindProgressCallback(progress, "lr_find", "learning rate"),
        JobProgressCallback(progress, "final", "final model", 2),
        HistoryCallback("final", None, entries.append),
    ]
    with learn.added_cbs(cbs):
        learn.lr_find(num_it=8, show_plot=False)
        assert entries == [] and ctx.reports
        assert all(m == "learning rate: finding the learning rate" for _, m in ctx.reports)
        assert max(f for f, _ in ctx.reports) <= 0.5
        ctx.reports.clear()
        learn.fit(2)
    assert [e["epoch"] for e in entries] == [1, 2]
    assert ctx.reports and all(m.startswith("final model, epoch") for _, m in ctx.reports)
    assert ctx.reports[-1][0] == pytest.approx(1.0)


def test_cancel_ends_a_fit_cleanly_and_stops_predictions_with_job_cancelled(tmp_path):
    learn, cancelled = _learner(tmp_path), [False]
    cancel = CancelCallback(lambda: cancelled[0])
    counted = CountBatches()

    class CancelAfterTwoBatches(Callback):
        def after_batch(self) -> None:
            cancelled[0] = counted.batches >= 2

    learn.fit(3, cbs=[cancel, counted, CancelAfterTwoBatches()])
    assert cancel.cancelled and counted.batches == 2
    with learn.added_cbs([cancel]), pytest.raises(JobCancelled):
        learn.get_preds(dl=learn.dls.valid)
