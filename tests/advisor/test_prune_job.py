"""The prune job, tiny and real, and its params."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.advisor.prune import decide
from app.jobs.context import JobCancelled, LocalJobContext
from app.jobs.registry import run_job
from app.models import Job
from tests.advisor.builders import make_run, metrics_from, predict
from tests.training.factories import tabular_dataset

RECIPE = {"epochs": 1, "lr": 0.05, "batch_size": 16}


def test_prune_removes_the_most_confident_and_decides_on_paired_seeds(engine, settings, db):
    ds, samples = tabular_dataset(db)
    classes = ["a", "b", "c"]
    run = make_run(db, ds, metrics_from([[5, 0, 0], [0, 5, 0], [0, 0, 5]], classes))
    a_train = [s for s in samples if s.split == "train" and s.label == "a"]
    # self_confidence rises with the index: the last ones are the easiest.
    for i, s in enumerate(a_train):
        predict(db, run, s, {"a": 0.34 + 0.03 * i, "b": (0.66 - 0.03 * i) / 2, "c": (0.66 - 0.03 * i) / 2})
    ctx = LocalJobContext(engine=engine, settings=settings, dataset_id=ds.id,
                          params={"class": "a", "fraction": 0.25, "recipe": RECIPE, "seeds": 2})
    result = run_job(ctx, "prune")

    assert len(a_train) == 20 and result["removed"] == 5
    assert result["removed_sample_ids"] == sorted(s.id for s in a_train[-5:])
    assert result["selection"] == "self_confidence" and result["scored_by_run"] == run.id
    assert result["train"] == {"before": 60, "after": 55, "class_before": 20, "class_after": 15}
    assert [r["seed"] for r in result["baseline"]] == [0, 1] == [r["seed"] for r in result["pruned"]]
    assert result["split"] == "valid"
    again = decide([r["valid"] for r in result["baseline"]], [r["valid"] for r in result["pruned"]], "a")
    assert result["decision"] == again.as_dict()
    assert result["recommend"] is again.recommend and result["reason"] == again.reason
    assert ctx.fractions == sorted(ctx.fractions) and ctx.fractions[-1] == pytest.approx(1.0)
    assert "pruned, seed 2/2" in ctx.messages


def test_without_a_run_the_removed_samples_are_drawn_at_random_with_a_notice(engine, settings, db):
    ds, samples = tabular_dataset(db)
    ctx = LocalJobContext(engine=engine, settings=settings, dataset_id=ds.id,
                          params={"class": "b", "recipe": RECIPE, "seeds": 2})
    result = run_job(ctx, "prune")
    b_ids = {s.id for s in samples if s.split == "train" and s.label == "b"}
    assert result["fraction"] == 0.3 and result["removed"] == 6
    assert set(result["removed_sample_ids"]) <= b_ids
    assert result["selection"] == "random" and result["scored_by_run"] is None
    assert "drawn at random" in result["notices"][0]
    assert any(level == "warning" and "drawn at random" in m for level, m in ctx.logs)


def test_cancel_stops_the_experiment(engine, settings, db):
    ds, _ = tabular_dataset(db)
    ctx = LocalJobContext(engine=engine, settings=settings, dataset_id=ds.id,
                          params={"class": "a", "recipe": RECIPE, "seeds": 2})
    ctx.cancel_event.set()
    with pytest.raises(JobCancelled):
        run_job(ctx, "prune")


@pytest.mark.parametrize(
    "params, field",
    [
        ({}, "class"),
        ({"class": "zebra"}, "class"),
        ({"class": 3}, "class"),
        ({"class": "a", "fraction": 0}, "fraction"),
        ({"class": "a", "fraction": 0.95}, "fraction"),
        ({"class": "a", "fraction": "half"}, "fraction"),
        ({"class": "a", "seeds": 1}, "seeds"),
        ({"class": "a", "seeds": 11}, "seeds"),
        ({"class": "a", "recipe": {"lr": -1}}, "recipe.lr"),
        ({"class": "a", "recipe": {"seed": 1}}, "recipe.seed"),
        ({"class": "a", "frac": 0.2}, "frac"),
    ],
)
def test_bad_params_are_422_naming_the_field(client, db, engineer, params, field):
    ds, _ = tabular_dataset(db)
    r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "prune", "params": params}, headers=engineer.headers)
    assert r.status_code == 422, r.text
    assert f"{field}:" in r.json()["detail"]
    assert db.scalar(select(Job.id)) is None


def test_the_advice_action_queues_the_job(client, db, engineer, annotator):
    ds, _ = tabular_dataset(db)
    body = {"kind": "prune", "params": {"class": "c"}}
    assert client.post(f"/api/v1/datasets/{ds.id}/jobs", json=body, headers=annotator.headers).status_code == 403
    r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json=body, headers=engineer.headers)
    assert r.status_code == 202 and r.json()["params"] == {"class": "c"}
