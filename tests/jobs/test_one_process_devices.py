"""`devices` in the recipe of a job that trains each model in one process (search, seeds,
prune): 1 is accepted; 2 or "all" is a 422 at enqueue naming the field, not ignored."""

from __future__ import annotations

import pytest

from tests.jobs.conftest import load_job
from tests.training.factories import tabular_dataset

# (kind, its params with a recipe whose devices is `d`, the field that names it)
KINDS = {
    "search": (lambda d: {"n_trials": 2, "base": {"devices": d}}, "base.devices"),
    "seeds": (lambda d: {"recipe": {"devices": d}}, "recipe.devices"),
    "prune": (lambda d: {"class": "a", "recipe": {"devices": d}}, "recipe.devices"),
}


def post(client, headers, ds_id, kind, params):
    return client.post(f"/api/v1/datasets/{ds_id}/jobs", json={"kind": kind, "params": params}, headers=headers)


@pytest.mark.parametrize("devices", [2, "all", "4", 0])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_devices_other_than_1_in_a_one_process_recipe_is_422_naming_it(client, db, engineer, kind, devices):
    ds, _ = tabular_dataset(db)
    params, field = KINDS[kind]
    r = post(client, engineer.headers, ds.id, kind, params(devices))
    assert r.status_code == 422, r.text
    body = r.json()
    assert [e["field"] for e in body["errors"]] == [field], body
    message = body["errors"][0]["message"]
    assert "one process" in message and "train jobs" in message, message
    assert f"{field}: must be 1" in body["detail"], body["detail"]


def test_the_devices_error_comes_with_the_recipes_other_errors(client, db, engineer):
    ds, _ = tabular_dataset(db)
    r = post(client, engineer.headers, ds.id, "seeds", {"recipe": {"devices": 2, "epochs": 0}})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"recipe.devices", "recipe.epochs"}
    r = post(client, engineer.headers, ds.id, "search", {"base": {"devices": "all", "epochs": 0}})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"base.devices", "base.epochs"}


def test_a_search_cannot_search_devices(client, db, engineer):
    ds, _ = tabular_dataset(db)
    r = post(client, engineer.headers, ds.id, "search", {"space": {"devices": {"choices": [1, 2]}}})
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["space.devices"]
    assert "one process" in r.json()["errors"][0]["message"]


@pytest.mark.parametrize("devices", [1, "1"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_devices_1_is_accepted_and_needs_one_device(client, db, engine, engineer, kind, devices):
    ds, _ = tabular_dataset(db)
    params, _ = KINDS[kind]
    r = post(client, engineer.headers, ds.id, kind, params(devices))
    assert r.status_code == 202, r.text
    assert r.json()["devices"] == 1 and load_job(engine, r.json()["id"]).devices == 1


@pytest.mark.parametrize(("devices", "needs"), [(2, 2), ("all", 1)])
def test_a_train_job_still_takes_devices(client, db, engine, engineer, devices, needs):
    ds, _ = tabular_dataset(db)
    r = post(client, engineer.headers, ds.id, "train", {"devices": devices, "epochs": 1})
    assert r.status_code == 202, r.text
    assert r.json()["devices"] == needs and load_job(engine, r.json()["id"]).devices == needs
