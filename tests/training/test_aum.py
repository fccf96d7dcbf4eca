"""Area under the margin: the callback maps shuffled batches back to their samples, and a
flipped label ends up with one of the lowest AUMs of a real train run."""

import numpy as np
import pytest
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from sqlalchemy import select

from app.jobs.context import LocalJobContext
from app.jobs.registry import run_job
from app.models import Prediction, Run, Sample
from app.training.aum import AUMCallback, margins
from app.training.learners import quiet
from tests.training.factories import tabular_dataset


class IndexLogits(torch.nn.Module):
    """Logits (x, -x) for the input x: a row holding its dataset index i has margin 2i under label 0, -2i under 1."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.cat([x, -x], dim=1) + 0 * self.w


class OneShotOrderDL(DataLoader):
    """Like text's SortedDL: get_idxs hands back an iterator that the epoch consumes."""

    def get_idxs(self):
        return iter(super().get_idxs())


def _index_learner(n: int, y: np.ndarray, bs: int, dl_type=DataLoader) -> Learner:
    items = [(torch.tensor([float(i)]), torch.tensor(int(y[i]))) for i in range(n)]
    train = dl_type(items, bs=bs, shuffle=True, drop_last=True)
    valid = DataLoader(items[:4], bs=bs)
    return quiet(Learner(DataLoaders(train, valid), IndexLogits(), loss_func=CrossEntropyLossFlat(), lr=0.0))


def test_margin_is_the_given_logit_minus_the_best_other():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 1.0], [1.0, 1.0, 0.0]])
    got = margins(logits, torch.tensor([0, 0, 1]))
    assert got.tolist() == pytest.approx([1.0, -2.5, 0.0])


@pytest.mark.parametrize("dl_type", [DataLoader, OneShotOrderDL])
def test_shuffled_batches_map_back_to_their_samples(dl_type):
    n, bs, epochs = 23, 4, 3
    y = np.arange(n) % 2
    learn = _index_learner(n, y, bs, dl_type)
    cb = AUMCallback(targets=y)
    learn.fit(epochs, cbs=[cb])
    expected = np.where(y == 0, 2.0, -2.0) * np.arange(n)
    seen = cb.seen()
    # drop_last: 5 batches of 4 per epoch, so 20 of the 23 samples each epoch.
    assert seen.sum() == epochs * (n // bs) * bs
    assert seen.max() <= epochs
    got = cb.aum()
    assert np.allclose(got[seen > 0], expected[seen > 0])
    assert np.isnan(got[seen == 0]).all()
    assert cb.epochs == epochs and cb.skipped_batches == 0
    assert (seen < epochs).any()
    # The loader is left as it was.
    assert "get_idxs" not in learn.dls.train.__dict__


def test_repeated_rows_of_an_oversampled_loader_count_towards_their_train_row():
    n, bs, epochs = 12, 4, 2
    y = np.arange(n) % 2
    rows = np.concatenate([np.arange(n), [1, 3, 3, 5]])  # dataset row -> train row
    items = [(torch.tensor([float(r)]), torch.tensor(int(y[r]))) for r in rows]
    dls = DataLoaders(DataLoader(items, bs=bs, shuffle=True, drop_last=True), DataLoader(items[:4], bs=bs))
    dls.train_rows = rows
    learn = quiet(Learner(dls, IndexLogits(), loss_func=CrossEntropyLossFlat(), lr=0.0))
    cb = AUMCallback(targets=y)
    learn.fit(epochs, cbs=[cb])
    seen = cb.seen()
    assert len(seen) == n and seen.sum() == epochs * len(rows)
    assert seen[3] == 3 * epochs and seen[1] == 2 * epochs and seen[0] == epochs
    assert np.allclose(cb.aum(), np.where(y == 0, 2.0, -2.0) * np.arange(n))
    assert cb.skipped_batches == 0


def test_a_batch_whose_targets_do_not_match_its_rows_is_left_out():
    n, bs = 16, 4
    y = np.arange(n) % 2
    learn = _index_learner(n, y, bs)
    wrong = y.copy()
    wrong[5] = 1 - wrong[5]  # the callback believes sample 5 has the other label
    cb = AUMCallback(targets=wrong)
    learn.fit(2, cbs=[cb])
    assert cb.skipped_batches == 2  # sample 5's batch, once per epoch
    assert cb.seen()[5] == 0 and np.isnan(cb.aum()[5])
    assert cb.seen().sum() == 2 * (n - bs)


def test_lr_find_and_validation_record_nothing():
    n, bs = 16, 4
    y = np.arange(n) % 2
    learn = _index_learner(n, y, bs)
    cb = AUMCallback(targets=y)
    learn.add_cb(cb)
    learn.lr_find(num_it=5, show_plot=False, suggest_funcs=())
    assert cb.seen().sum() == 0 and cb.epochs == 0
    learn.fit(1)
    assert cb.seen().sum() == n and cb.epochs == 1


def _flip(db, samples, i):
    s = samples[i]
    s.label = "c" if s.label != "c" else "a"
    db.commit()
    return s


def test_a_flipped_label_has_the_lowest_aum(engine, settings, db):
    ds, samples = tabular_dataset(db, counts={"train": 60, "valid": 9, "test": 6, "unlabelled": 3})
    flipped = _flip(db, samples, 7)
    ctx = LocalJobContext(engine=engine, settings=settings, params={"epochs": 8, "scoring": "in_sample", "seed": 1, "lr": 0.03}, dataset_id=ds.id)
    result = run_job(ctx, "train")
    run = db.get(Run, result["run_id"])
    rows = db.execute(
        select(Prediction, Sample).join(Sample, Sample.id == Prediction.sample_id).where(Prediction.run_id == run.id)
    ).all()
    train = {s.id: p.aum for p, s in rows if s.split == "train"}
    assert all(p.aum is None for p, s in rows if s.split != "train")
    assert all(v is not None for v in train.values())
    ranked = sorted(train, key=train.get)
    assert ranked[0] == flipped.id
    clean = [v for sid, v in train.items() if sid != flipped.id]
    assert np.mean(clean) > 0
    assert train[flipped.id] < 0
    assert run.info["aum"]["epochs"] == 8 and run.info["aum"]["skipped_batches"] == 0
    # The flagged set and the combined score of the same run find it too.
    preds = {s.id: p for p, s in rows}
    assert preds[flipped.id].flagged and preds[flipped.id].suggested_label == flipped.original_label
    assert min(train, key=lambda sid: preds[sid].combined) == flipped.id
    assert all(p.combined is None for p, s in rows if s.label is None)
    # The review priority puts the flagged set first (the flipped sample among them), then the rest.
    assert all(p.priority is None for p, s in rows if s.label is None)
    by_priority = sorted(train, key=lambda sid: preds[sid].priority)
    n_flagged = sum(preds[sid].flagged for sid in train)
    assert all(preds[sid].flagged for sid in by_priority[:n_flagged])
    assert flipped.id in by_priority[:n_flagged]
    assert all(0 < preds[sid].priority < 1 for sid in train)
    assert len({preds[sid].priority for sid in train}) == len(train)
    info = run.info["flagged"]
    assert info["out_of_fold"] is False and info["count"] == sum(p.flagged for p, _ in rows)
    assert {"given": flipped.label, "suggested": flipped.original_label} in [
        {"given": d["given"], "suggested": d["suggested"]} for d in info["pairs"]
    ]
    assert any("in-sample" in n for n in run.info["notices"])


def test_out_of_fold_runs_flag_from_the_fold_models_probabilities(engine, settings, db):
    ds, samples = tabular_dataset(db, counts={"train": 60, "valid": 9, "test": 6, "unlabelled": 3})
    flipped = _flip(db, samples, 11)
    params = {"epochs": 4, "folds": 2, "seed": 2, "lr": 0.03}
    result = run_job(LocalJobContext(engine=engine, settings=settings, params=params, dataset_id=ds.id), "train")
    run = db.get(Run, result["run_id"])
    p = db.scalar(select(Prediction).where(Prediction.run_id == run.id, Prediction.sample_id == flipped.id))
    assert p.out_of_fold and p.flagged and p.suggested_label == flipped.original_label
    assert run.info["flagged"]["out_of_fold"] is True
    assert not any("in-sample" in n for n in run.info["notices"])
    unlabelled = db.scalars(
        select(Prediction).join(Sample, Sample.id == Prediction.sample_id).where(Prediction.run_id == run.id, Sample.split == "unlabelled")
    ).all()
    assert unlabelled and all(not u.flagged and u.suggested_label is None and u.combined is None for u in unlabelled)
