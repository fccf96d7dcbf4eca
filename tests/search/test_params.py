"""Search params and space: validated against the Recipe when the job is queued, 422 naming the field."""

from __future__ import annotations

import pytest

from app.search.params import SearchParamsError, default_space, resolve_space, validate_search
from app.training.recipe import TASK_DEFAULTS, resolve_recipe
from tests.builders import make_user
from tests.training.factories import tabular_dataset


def post(client, headers, ds_id, params):
    return client.post(f"/api/v1/datasets/{ds_id}/jobs", json={"kind": "search", "params": params}, headers=headers)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"space": {"foo": {"low": 1, "high": 2}}}, "space.foo"),
        ({"space": {"lr": {"low": 0.1, "high": 0.01}}}, "space.lr.high"),
        ({"space": {"lr": {"low": 0, "high": 0.1, "log": True}}}, "space.lr.low"),
        ({"space": {"lr": {"low": 1e-4, "high": 50}}}, "space.lr.high"),
        ({"space": {"epochs": {"low": 1.5, "high": 3}}}, "space.epochs.low"),
        ({"space": {"epochs": {"low": 0, "high": 3}}}, "space.epochs.low"),
        ({"space": {"optimizer": {"choices": ["adam", "nadam"]}}}, "space.optimizer.choices[1]"),
        ({"space": {"loss": {"low": 1, "high": 2}}}, "space.loss"),
        ({"space": {"image_size": {"low": 16, "high": 64}}}, "space.image_size"),
        ({"space": {"seed": {"low": 0, "high": 9}}}, "space.seed"),
        ({"space": {"lr": {"low": 0.001, "high": 0.1, "slope": 2}}}, "space.lr.slope"),
        ({"space": {"lr": {"low": 0.001}}}, "space.lr.high"),
        ({"space": {"batch_size": {"choices": []}}}, "space.batch_size.choices"),
        ({"space": {}}, "space"),
        ({"space": {"lr": {"low": 0.001, "high": 0.1}}, "base": {"lr": 0.01}}, "space.lr"),
        ({"space": {"label_smoothing": {"low": 0.05, "high": 0.2}}, "base": {"loss": "cross_entropy"}}, "space.label_smoothing"),
        ({"base": {"foo": 1}}, "base.foo"),
        ({"base": {"epochs": 0}}, "base.epochs"),
        ({"n_trials": 0}, "n_trials"),
        ({"workers": 0}, "workers"),
        ({"timeout_s": -5}, "timeout_s"),
        ({"metric": "f1"}, "metric"),
        ({"pruner": "aggressive"}, "pruner"),
        ({"sampler": "random"}, "sampler"),
        ({"trials": 5}, "trials"),
    ],
)
def test_bad_params_are_422_naming_the_field(client, db, params, field):
    ds, _ = tabular_dataset(db)
    engineer = make_user(db, "engineer")
    r = post(client, engineer.headers, ds.id, params)
    assert r.status_code == 422, r.text
    assert f"{field}:" in r.json()["detail"], r.json()["detail"]


def test_a_parent_job_must_be_a_search_of_the_same_dataset(client, db):
    ds, _ = tabular_dataset(db)
    other, _ = tabular_dataset(db, name="other")
    engineer = make_user(db, "engineer")
    r = post(client, engineer.headers, other.id, {"n_trials": 2})
    assert r.status_code == 202, r.text
    r = post(client, engineer.headers, ds.id, {"parent_job": r.json()["id"]})
    assert r.status_code == 422 and "parent_job:" in r.json()["detail"]


def test_a_dataset_without_valid_samples_cannot_be_searched(client, db):
    ds, _ = tabular_dataset(db, counts={"train": 30, "test": 6})
    engineer = make_user(db, "engineer")
    r = post(client, engineer.headers, ds.id, {})
    assert r.status_code == 422 and "valid" in r.json()["detail"]


def test_good_params_are_queued_and_annotators_cannot_search(client, db):
    ds, _ = tabular_dataset(db)
    engineer, annotator = make_user(db, "engineer"), make_user(db, "annotator")
    params = {"n_trials": 3, "workers": 2, "metric": "accuracy", "pruner": "hyperband",
              "space": {"lr": {"low": 0.001, "high": 0.1, "log": True}, "loss": {"choices": ["cross_entropy", "label_smoothing"]},
                        "label_smoothing": {"low": 0.05, "high": 0.2}}, "base": {"epochs": 2}}
    r = post(client, engineer.headers, ds.id, params)
    assert r.status_code == 202, r.text
    assert (r.json()["kind"], r.json()["status"], r.json()["params"]) == ("search", "queued", params)
    assert post(client, annotator.headers, ds.id, params).status_code == 403


@pytest.mark.parametrize("task", ["tabular", "image", "text"])
def test_the_default_space_holds_only_values_the_recipe_accepts(task):
    space = resolve_space(None, {}, task)
    assert {"lr", "batch_size", "epochs", "loss", "label_smoothing", "optimizer"} <= set(space)
    assert space["lr"]["log"] is True and space["lr"]["low"] < space["lr"]["high"]
    assert space["epochs"]["high"] == TASK_DEFAULTS[task]["epochs"]
    assert list(space)[-1] == "label_smoothing", "sampled after the loss it depends on"
    for name, spec in space.items():
        values = spec["choices"] if "choices" in spec else [spec["low"], spec["high"]]
        for value in values:
            params = {name: value, **({"loss": "label_smoothing"} if name == "label_smoothing" else {})}
            resolve_recipe(params, task)


def test_the_base_takes_params_out_of_the_default_space():
    assert "epochs" not in default_space("tabular", {"epochs": 2})
    fixed_loss = default_space("tabular", {"loss": "cross_entropy"})
    assert "loss" not in fixed_loss and "label_smoothing" not in fixed_loss
    _, space = validate_search({"base": {"lr": 0.01, "epochs": 2}}, "tabular")
    assert "lr" not in space and "epochs" not in space and "batch_size" in space


def test_several_errors_are_reported_together():
    with pytest.raises(SearchParamsError) as info:
        validate_search({"space": {"lr": {"low": 1, "high": 0.1}, "bogus": {"choices": [1]}}}, "tabular")
    fields = {e["field"] for e in info.value.errors}
    assert fields == {"space.lr.high", "space.bogus"}
