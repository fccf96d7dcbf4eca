"""Data-parallel train jobs (`devices: 2`, two gloo processes on the CPU) against one-process runs."""

import numpy as np
import pytest
from sqlalchemy import select

from app.jobs.context import LocalJobContext
from app.jobs.registry import run_job
from app.models import Prediction, Run, Sample
from app.training.ddp import resolve_devices
from app.training.recipe import RecipeError, resolve_recipe
from tests.training.factories import image_dataset, tabular_dataset


@pytest.fixture
def two_devices(settings):
    return settings.model_copy(update={"worker_devices": 2})


def _run(engine, settings, db, ds, params):
    ctx = LocalJobContext(engine=engine, settings=settings, params=params, dataset_id=ds.id)
    result = run_job(ctx, "train")
    run = db.get(Run, result["run_id"])
    db.refresh(run)
    preds = db.execute(
        select(Prediction, Sample).join(Sample, Sample.id == Prediction.sample_id).where(Prediction.run_id == run.id)
    ).all()
    return run, preds


def _check_exactly_once(run, preds, samples):
    ids = [s.id for _, s in preds]
    assert len(ids) == len(set(ids)) == len(samples)  # one prediction per sample, none twice
    assert set(ids) == {s.id for s in samples}
    train = [p for p, s in preds if s.split == "train" and s.label is not None]
    assert train and all(p.out_of_fold for p in train)
    assert all(np.isfinite(list(p.probs.values())).all() for p, _ in preds)
    return train


def test_tabular_two_processes_match_one(engine, settings, two_devices, db):
    ds, samples = tabular_dataset(db, flip=0.1)
    params = {"epochs": 3, "folds": 2, "lr": 3e-2, "seed": 1}
    one, one_preds = _run(engine, settings, db, ds, params)
    two, two_preds = _run(engine, two_devices, db, ds, {**params, "devices": 2})
    assert one.status == two.status == "succeeded"
    assert one.params["devices"] == 1 and two.params["devices"] == 2  # the resolved recipe
    # Both models saw the same global batches per step: metrics within noise.
    for split in ("valid", "test"):
        assert abs(one.metrics[split]["accuracy"] - two.metrics[split]["accuracy"]) <= 0.2
    train_one = _check_exactly_once(one, one_preds, samples)
    train_two = _check_exactly_once(two, two_preds, samples)
    # AUM from both ranks' shards, summed: no batch left out, as few samples unseen (drop_last) as
    # in one process, every other train sample's AUM finite and mostly of the one-process sign.
    for run in (one, two):
        assert run.info["aum"]["epochs"] == 3 and run.info["aum"]["skipped_batches"] == 0
    assert two.info["aum"]["unseen"] <= max(3, one.info["aum"]["unseen"])
    aum_one = {p.sample_id: p.aum for p in train_one}
    aum_two = {p.sample_id: p.aum for p in train_two}
    seen = [v for v in aum_two.values() if v is not None]
    assert len(seen) == len(train_two) - two.info["aum"]["unseen"] and np.isfinite(seen).all()
    both = [k for k in aum_one if aum_one[k] is not None and aum_two[k] is not None]
    assert np.mean([np.sign(aum_one[k]) == np.sign(aum_two[k]) for k in both]) >= 0.8
    # The flipped labels get the lowest AUM in both runs alike.
    low_one = {k for k in both if aum_one[k] < 0}
    low_two = {k for k in both if aum_two[k] < 0}
    assert len(low_one & low_two) >= 0.6 * max(len(low_one), 1)


def test_image_two_processes_end_to_end(engine, settings, two_devices, db):
    ds, samples = image_dataset(db, settings)
    params = {"epochs": 1, "folds": 2, "lr": 1e-3, "pretrained": False}
    one, _ = _run(engine, settings, db, ds, params)
    # Every model data-parallel (two fold models on two devices would otherwise train one per device).
    two, preds = _run(engine, two_devices, db, ds, {**params, "devices": 2, "fold_parallelism": "data"})
    assert two.status == "succeeded" and two.params["devices"] == 2 and two.params["fold_parallelism"] == "data"
    train = _check_exactly_once(two, preds, samples)
    seen = [p.aum for p in train if p.aum is not None]
    assert len(seen) == len(train) - two.info["aum"]["unseen"] > 0 and np.isfinite(seen).all()
    assert two.info["aum"]["skipped_batches"] == 0
    for split in ("valid", "test"):
        assert abs(one.metrics[split]["accuracy"] - two.metrics[split]["accuracy"]) <= 0.34


def test_devices_param_is_validated():
    assert resolve_recipe({"devices": "all"}, "tabular").devices == "all"
    assert resolve_recipe({"devices": "2"}, "tabular").devices == 2
    assert resolve_recipe({}, "tabular").devices == 1
    for bad in (0, -1, 65, "two", 1.5, True):
        with pytest.raises(RecipeError) as err:
            resolve_recipe({"devices": bad}, "tabular")
        assert err.value.errors[0]["field"] == "devices"


def test_devices_resolve_against_what_the_worker_advertises():
    assert resolve_devices("all", 4) == 4
    assert resolve_devices(2, 2) == 2
    with pytest.raises(ValueError, match="asks for 3 devices"):
        resolve_devices(3, 2)


def test_a_rank_started_elsewhere_joins_through_the_follower_entry_point(engine, settings, db):
    """The multi-machine path on one machine: the worker starts no follower itself
    (ddp_local_devices 1) and a rank started as torchrun would (LOCAL_RANK in its environment,
    --first-rank) joins at CURATE_DDP_ADDRESS."""
    import os
    import subprocess
    import sys

    from app.training.ddp import free_port

    ds, samples = tabular_dataset(db)
    address = f"127.0.0.1:{free_port()}"
    remote = settings.model_copy(update={"worker_devices": 2, "ddp_local_devices": 1, "ddp_address": address})
    env = {**os.environ, "LOCAL_RANK": "0", "WORLD_SIZE": "1", "RANK": "0", "CURATE_TORCH_THREADS": "1"}
    follower = subprocess.Popen([sys.executable, "-m", "app.training.ddp_run", "--master", address,
                                 "--world-size", "2", "--first-rank", "1"], env=env, stderr=subprocess.PIPE)
    try:
        run, preds = _run(engine, remote, db, ds, {"epochs": 1, "scoring": "in_sample", "lr": 1e-2, "devices": 2})
        _, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err.decode()[-2000:]
    assert "fitted 1 models with rank 0" in err.decode()
    assert run.status == "succeeded" and run.params["devices"] == 2
    assert sorted(s.id for _, s in preds) == sorted(s.id for s in samples)


def test_a_nan_on_one_rank_is_retried_by_every_rank_in_step(engine, settings, two_devices, db, monkeypatch):
    """The NaN made on rank 0's loss reaches every rank through the averaged gradients: all of
    them fail the same step, restore and retry, and the run succeeds with finite predictions."""
    from datetime import timedelta

    from app.training import ddp
    from app.training.jobs import TrainRun
    from app.training.nan_guard import PoisonLossCallback

    monkeypatch.setattr(ddp, "COLLECTIVE_TIMEOUT", timedelta(seconds=120))  # a hang fails, not waits
    original = TrainRun._callbacks

    def callbacks(self, stage, label, model, fold):
        cbs = original(self, stage, label, model, fold)
        return cbs + [PoisonLossCallback(at=2)] if model == "final" else cbs

    monkeypatch.setattr(TrainRun, "_callbacks", callbacks)
    ds, samples = tabular_dataset(db)
    run, preds = _run(engine, two_devices, db, ds, {"epochs": 2, "scoring": "in_sample", "lr": 1e-2, "devices": 2})
    assert run.status == "succeeded"
    [recovery] = run.info["nan_recovery"]
    assert recovery["model"] == "final" and len(recovery["attempts"]) == 1
    assert len(preds) == len(samples) and all(np.isfinite(list(p.probs.values())).all() for p, _ in preds)
