"""Out-of-fold models one per device at once (`fold_parallelism: folds`) against one process."""

import numpy as np
import pytest

from app.training.fold_parallel import assign, choose
from app.training.recipe import RecipeError, resolve_recipe
from tests.training.factories import tabular_dataset
from tests.training.test_ddp import _check_exactly_once, _run, two_devices  # noqa: F401  (a fixture)


def _oof(preds):
    return {s.id: np.array(list(p.probs.values())) for p, s in preds if s.split == "train" and s.label is not None}


def test_each_fold_model_is_the_one_process_runs_model(engine, settings, two_devices, db):  # noqa: F811
    """Fold models trained alone on two ranks at once, with the same rows and seeds as in one
    process, give the same held-out probabilities; the run's history has every fold's epochs."""
    ds, samples = tabular_dataset(db, flip=0.1)
    params = {"epochs": 2, "folds": 3, "lr": 3e-2, "seed": 3, "retrain_best_epochs": True}
    one, one_preds = _run(engine, settings, db, ds, params)
    two, two_preds = _run(engine, two_devices, db, ds, {**params, "devices": 2, "fold_parallelism": "folds"})
    assert one.status == two.status == "succeeded"
    assert two.params["fold_parallelism"] == "folds" and two.params["devices"] == 2
    _check_exactly_once(two, two_preds, samples)
    a, b = _oof(one_preds), _oof(two_preds)
    assert a.keys() == b.keys()
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert diff < 1e-4, diff  # the same models, up to the order of floating-point sums
    folds = {(e["model"], e["epoch"]) for e in two.history if e["fold"] is not None}
    assert folds == {(f"fold {f}", e) for f in (1, 2, 3) for e in (1, 2)}  # rank 1's epochs relayed too
    # Every fold's best epoch reached the final model's epoch count, from both ranks.
    assert len(two.info["retrain_best_epochs"]["fold_best_epochs"]) == 3
    assert sorted(two.info["retrain_best_epochs"]["fold_best_epochs"]) == sorted(
        one.info["retrain_best_epochs"]["fold_best_epochs"])
    assert len(two.info["timings"]["folds"]) == 3


def test_fold_ensemble_gathers_every_ranks_models(engine, settings, two_devices, db):  # noqa: F811
    ds, samples = tabular_dataset(db)
    params = {"epochs": 1, "folds": 2, "lr": 3e-2, "ensemble": True}
    one, one_preds = _run(engine, settings, db, ds, params)
    two, two_preds = _run(engine, two_devices, db, ds, {**params, "devices": 2, "fold_parallelism": "folds"})
    assert two.status == "succeeded" and two.info["predictions"]["model"] == "fold_ensemble"
    _check_exactly_once(two, two_preds, samples)
    rest_one = {s.id: np.array(list(p.probs.values())) for p, s in one_preds if s.split != "train"}
    rest_two = {s.id: np.array(list(p.probs.values())) for p, s in two_preds if s.split != "train"}
    assert max(float(np.abs(rest_one[k] - rest_two[k]).max()) for k in rest_one) < 1e-4


def test_a_follower_that_dies_mid_fold_fails_the_job_with_its_exit(engine, settings, two_devices, db, monkeypatch):  # noqa: F811
    """Rank 1's process is killed while rank 0 trains its own fold: the job fails naming the
    exit, instead of waiting for results that never come."""
    from app.jobs.context import LocalJobContext
    from app.jobs.registry import run_job
    from app.training.jobs import TrainRun

    original = TrainRun._train

    def train(self, learn, stage, label, model, fold, lr, solo=False):
        if solo:
            proc, _ = self.group.procs[0]
            proc.kill()
            proc.wait()
        return original(self, learn, stage, label, model, fold, lr, solo)

    monkeypatch.setattr(TrainRun, "_train", train)
    ds, _ = tabular_dataset(db)
    params = {"epochs": 1, "folds": 2, "lr": 3e-2, "devices": 2, "fold_parallelism": "folds"}
    ctx = LocalJobContext(engine=engine, settings=two_devices, params=params, dataset_id=ds.id)
    with pytest.raises(RuntimeError, match="exited with status -9 while training fold models"):
        run_job(ctx, "train")


def test_a_follower_fold_error_is_posted_and_raised_on_rank_0():
    """A follower whose fold fails posts the error in the store before it exits; rank 0's
    watcher raises it with the rank named."""
    from types import SimpleNamespace

    import torch.distributed as dist

    from app.training import fold_parallel

    store = dist.HashStore()
    group = SimpleNamespace(rank=1, store=store, procs=[])
    cmd = {"jobs": [{"rank": 1, "pass": 0, "fold": 0, "seed": 0, "label": "fold 1/2", "model": "fold 1",
                     "rows": np.arange(3), "held": np.arange(3, 5)}],
           "recipe": {"epochs": "many"}, "lr": 1e-2, "pretrained": False, "has_valid": True, "rest": None, "tta": False}
    with pytest.raises(Exception, match="epochs"):
        fold_parallel.follow_folds(group, SimpleNamespace(), cmd, "/tmp")
    run = SimpleNamespace(recipe=resolve_recipe({}, "tabular"), pretrained=False, info={"notices": []})
    watcher = fold_parallel._Watcher(run, group, [1])
    with pytest.raises(RuntimeError, match="fold models on rank 1 failed: ValidationError"):
        watcher.poll()


@pytest.mark.parametrize(
    "models, devices, device, expected",
    [(5, 5, "cuda", "folds"), (4, 2, "cuda", "folds"), (5, 2, "cuda", "data"), (5, 4, "cuda", "data"),
     (5, 2, "cpu", "folds"), (1, 2, "cpu", "data"), (2, 2, "cpu", "folds"), (3, 2, "cuda", "data")],
)
def test_auto_picks_the_fewer_fit_times(models, devices, device, expected):
    mode, why = choose("auto", devices, models, device)
    assert mode == expected and f"{models} fold models on {devices} devices" in why
    assert choose("data", devices, models, device)[0] == "data"


def test_assignment_is_round_robin_and_covers_every_fold():
    jobs = [(r, f) for r in range(2) for f in range(5)]
    ranks = assign(jobs, 4)
    assert set(ranks) == set(jobs) and [ranks[j] for j in jobs] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_fold_parallelism_is_validated():
    assert resolve_recipe({}, "tabular").fold_parallelism == "auto"
    with pytest.raises(RecipeError) as err:
        resolve_recipe({"fold_parallelism": "ranks"}, "tabular")
    assert err.value.errors[0]["field"] == "fold_parallelism"
    with pytest.raises(RecipeError, match="needs out_of_fold"):
        resolve_recipe({"fold_parallelism": "folds", "scoring": "in_sample"}, "tabular")


@pytest.mark.parametrize("mode", ["folds", "data"])
def test_a_multilabel_run_on_two_processes_scores_every_sample_once(engine, settings, two_devices, db, mode):  # noqa: F811
    """Sigmoid heads and per-class thresholds through both fold placements: every sample scored
    once, the one-process run's metrics within noise."""
    from tests.training.factories import multilabel_tabular_dataset

    ds, samples = multilabel_tabular_dataset(db)
    params = {"epochs": 2, "folds": 2, "lr": 3e-2, "seed": 1}
    one, _ = _run(engine, settings, db, ds, params)
    two, preds = _run(engine, two_devices, db, ds, {**params, "devices": 2, "fold_parallelism": mode})
    assert one.status == two.status == "succeeded" and two.params["fold_parallelism"] == mode
    ids = [s.id for _, s in preds]
    assert len(ids) == len(set(ids)) == len(samples)
    train = [p for p, s in preds if s.split == "train" and s.label is not None]
    assert train and all(p.out_of_fold for p in train)
    assert set(two.info["thresholds"]) == set(ds.classes)
    for split in ("valid", "test"):
        assert abs(one.metrics[split]["micro_f1"] - two.metrics[split]["micro_f1"]) <= 0.25
