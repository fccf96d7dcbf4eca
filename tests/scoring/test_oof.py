import numpy as np
import pytest

from app.scoring.oof import out_of_fold_probs, plan_folds


def test_every_sample_lands_in_exactly_one_stratified_fold():
    y = np.repeat(np.arange(3), 20)
    plan = plan_folds(y, 5, seed=1)
    assert plan.stratified and plan.folds == 5 and not plan.notices
    assert sorted(np.concatenate([plan.held_out(f) for f in range(5)]).tolist()) == list(range(60))
    for f in range(5):
        held = plan.held_out(f)
        # Stratified: each fold holds out 4 of every class.
        assert np.bincount(y[held], minlength=3).tolist() == [4, 4, 4]
        assert set(plan.train_indices(f)).isdisjoint(held)
        assert len(plan.train_indices(f)) + len(held) == 60
    assert plan.sizes()[0] == {"fold": 0, "train": 48, "held_out": 12}


def test_the_seed_decides_the_assignment():
    y = np.repeat(np.arange(2), 25)
    assert plan_folds(y, 5, 3).fold_of.tolist() == plan_folds(y, 5, 3).fold_of.tolist()
    assert plan_folds(y, 5, 3).fold_of.tolist() != plan_folds(y, 5, 4).fold_of.tolist()


def test_a_rare_class_falls_back_to_plain_k_fold_with_a_notice():
    y = np.array([0] * 20 + [1] * 2)
    plan = plan_folds(y, 5, seed=0)
    assert not plan.stratified and plan.folds == 5
    assert "not stratified" in plan.notices[0]
    assert sorted(np.concatenate([plan.held_out(f) for f in range(5)]).tolist()) == list(range(22))


def test_fewer_samples_than_folds_lowers_the_folds():
    plan = plan_folds(np.array([0, 1, 0]), 5, seed=0)
    assert plan.folds == 3
    assert "3 folds" in plan.notices[0]
    with pytest.raises(ValueError, match="at least 2"):
        plan_folds(np.array([0]), 5, seed=0)


def test_each_sample_is_predicted_by_the_model_that_did_not_train_on_it():
    y = np.repeat(np.arange(4), 10)
    plan = plan_folds(y, 4, seed=0)
    trained_on: dict[int, set[int]] = {}

    def fit(fold, idx):
        trained_on[fold] = set(idx.tolist())
        return fold

    def predict(model, idx):
        assert trained_on[model].isdisjoint(idx.tolist())
        out = np.zeros((len(idx), 4))
        out[:, model] = 1.0  # the fold's model marks its own predictions
        return out

    P = out_of_fold_probs(plan, fit, predict, 4)
    assert sorted(trained_on) == [0, 1, 2, 3]
    assert P.argmax(1).tolist() == plan.fold_of.tolist()
    for i, f in enumerate(plan.fold_of):
        assert i not in trained_on[f]
        assert all(i in trained_on[g] for g in range(4) if g != f)
