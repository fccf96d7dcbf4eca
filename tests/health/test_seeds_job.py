"""The seeds job, tiny and real: N fits of one recipe, with their spread."""

from __future__ import annotations

import statistics
import threading

import numpy as np
import pytest
from sqlalchemy import select

from app.jobs.context import JobCancelled, LocalJobContext
from app.jobs.registry import run_job
from app.models import Job
from tests.advisor.builders import make_run, metrics_from
from tests.training.factories import tabular_dataset

RECIPE = {"epochs": 1, "lr": 0.05, "batch_size": 16}


def test_seeds_job_stores_every_seed_and_their_spread(engine, settings, db):
    ds, _ = tabular_dataset(db, flip=0.2)
    classes = ["a", "b", "c"]
    # Two earlier runs 0.5 apart in valid macro F1: far beyond any seed noise.
    make_run(db, ds, metrics_from([[5, 0, 0], [5, 0, 0], [5, 0, 0]], classes))
    newer = make_run(db, ds, metrics_from([[5, 0, 0], [0, 5, 0], [0, 0, 5]], classes))
    ctx = LocalJobContext(engine=engine, settings=settings, params={"recipe": RECIPE, "seeds": 3}, dataset_id=ds.id)
    result = run_job(ctx, "seeds")

    assert [r["seed"] for r in result["per_seed"]] == [0, 1, 2]
    assert result["recipe"]["epochs"] == 1 and result["recipe"]["seed"] == 0
    for split in ("valid", "test"):
        for metric in ("accuracy", "macro_f1"):
            values = [r[split][metric] for r in result["per_seed"]]
            s = result["summary"][split][metric]
            assert s["n"] == 3
            assert s["mean"] == pytest.approx(statistics.fmean(values))
            assert s["std"] == pytest.approx(statistics.stdev(values))
            assert s["sem"] == pytest.approx(statistics.stdev(values) / np.sqrt(3))
        for c in classes:
            values = [r[split]["f1"][c] for r in result["per_seed"]]
            assert result["summary"][split]["f1"][c]["mean"] == pytest.approx(statistics.fmean(values))
    comparison = result["comparison"]
    assert comparison["source"] == "last_two_runs" and comparison["run_ids"][1] == newer.id
    assert comparison["delta"] == pytest.approx(1.0 - metrics_from([[5, 0, 0], [5, 0, 0], [5, 0, 0]], classes)["macro_f1"])
    assert comparison["threshold"] == pytest.approx(2 * np.sqrt(2) * result["summary"]["valid"]["macro_f1"]["std"])
    assert comparison["warn"] is (abs(comparison["delta"]) < comparison["threshold"])
    # Progress per seed, only forwards, ending at the last seed's last epoch.
    assert ctx.fractions == sorted(ctx.fractions) and ctx.fractions[-1] == pytest.approx(1.0)
    assert {"seed 1/3", "seed 2/3", "seed 3/3"} <= set(ctx.messages)


def test_a_given_delta_inside_the_noise_warns(engine, settings, db):
    ds, _ = tabular_dataset(db, flip=0.3)
    ctx = LocalJobContext(engine=engine, settings=settings, dataset_id=ds.id,
                          params={"recipe": RECIPE, "seeds": 2, "compare_delta": 0.0})
    result = run_job(ctx, "seeds")
    std = result["summary"]["valid"]["macro_f1"]["std"]
    assert result["comparison"]["source"] == "compare_delta"
    # A zero difference is noise whenever the seeds disagree at all.
    assert result["comparison"]["warn"] is (std > 0)
    if std > 0:
        assert result["warning"].startswith("the valid split is too small to tell these runs apart")


def test_cancel_stops_between_and_within_seeds(engine, settings, db):
    ds, _ = tabular_dataset(db)

    class CancelAfterFirstEpoch(LocalJobContext):
        def progress(self, fraction, message=None):
            super().progress(fraction, message)
            if message and "epoch" in message:
                self.cancel_event.set()

    ctx = CancelAfterFirstEpoch(engine=engine, settings=settings, dataset_id=ds.id,
                                params={"recipe": {**RECIPE, "epochs": 3}, "seeds": 2})
    with pytest.raises(JobCancelled):
        run_job(ctx, "seeds")
    assert not any(m.startswith("seed 2/2") for m in ctx.messages)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"seeds": 1}, "seeds"),
        ({"seeds": 21}, "seeds"),
        ({"seeds": "5"}, "seeds"),
        ({"seeds": True}, "seeds"),
        ({"compare_delta": -0.1}, "compare_delta"),
        ({"recipe": {"epochs": 0}}, "recipe.epochs"),
        ({"recipe": {"seed": 3}}, "recipe.seed"),
        ({"recipe": {"arch": "resnet18"}}, "recipe.arch"),
        ({"recipe": "fast"}, "recipe"),
        ({"sedes": 3}, "sedes"),
    ],
)
def test_bad_params_are_422_naming_the_field(client, db, engineer, params, field):
    ds, _ = tabular_dataset(db)
    r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "seeds", "params": params}, headers=engineer.headers)
    assert r.status_code == 422, r.text
    assert f"{field}:" in r.json()["detail"]
    assert db.scalar(select(Job.id)) is None


def test_good_params_queue_the_job(client, db, engineer):
    ds, _ = tabular_dataset(db)
    r = client.post(f"/api/v1/datasets/{ds.id}/jobs", json={"kind": "seeds", "params": {"recipe": RECIPE, "seeds": 2}},
                    headers=engineer.headers)
    assert r.status_code == 202 and r.json()["kind"] == "seeds"


def test_the_job_runs_in_a_worker(engine, settings, db):
    """Through the real queue: the registry knows the kind and the result lands on the job."""
    from app.jobs.service import enqueue
    from app.jobs.worker import Worker

    ds, _ = tabular_dataset(db)
    job = enqueue(db, "seeds", {"recipe": RECIPE, "seeds": 2}, dataset_id=ds.id)
    db.commit()
    worker = Worker(settings, engine, worker_id="seeds-test")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        import time

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            db.expire_all()
            if db.get(Job, job.id).status in ("succeeded", "failed"):
                break
            time.sleep(0.2)
    finally:
        worker.stop()
        thread.join(timeout=30)
    done = db.get(Job, job.id)
    assert done.status == "succeeded", done.error
    assert done.result["seeds"] == 2 and len(done.result["per_seed"]) == 2
