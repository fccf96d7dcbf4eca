"""The train job on multi-label datasets, end to end through the job registry: BCE on one
sigmoid per class, thresholds from valid, multi-label metrics and label-error scores."""

import pytest
from sqlalchemy import select

from app.datasets import tagsets
from app.jobs.context import LocalJobContext
from app.jobs.registry import run_job
from app.models import Prediction, Run, Sample
from app.scoring.oof import plan_multilabel_folds
from app.training.artifacts import LoadedModel
from app.training.data import load_training_data
from app.training.multilabel import indicator
from app.training.recipe import RecipeError
from tests.training.factories import multilabel_image_dataset, multilabel_tabular_dataset, multilabel_text_dataset

ML_KEYS = {"multilabel", "accuracy", "exact_match", "hamming_loss", "micro_f1", "macro_f1", "weighted_f1",
           "samples_f1", "per_class", "swaps"}


def _ctx(engine, settings, ds, params):
    return LocalJobContext(engine=engine, settings=settings, params=params, dataset_id=ds.id)


def _check(db, result, samples, classes):
    run = db.get(Run, result["run_id"])
    db.refresh(run)
    assert run.status == "succeeded", run.error
    for split in ("valid", "test"):
        m = run.metrics[split]
        assert set(m) == ML_KEYS and m["multilabel"] is True
        assert set(m["per_class"]) == set(classes) and m["swaps"]["labels"] == classes
        assert m["accuracy"] == m["exact_match"]
    assert set(run.info["thresholds"]) == set(classes)
    assert all(0 < t <= 1 for t in run.info["thresholds"].values())
    rows = db.execute(select(Prediction, Sample).join(Sample, Sample.id == Prediction.sample_id)
                      .where(Prediction.run_id == run.id)).all()
    assert {s.id for _, s in rows} == {s.id for s in samples}
    for p, s in rows:
        assert p.given_label == s.label
        assert tagsets.is_canonical(p.label, classes)
        assert set(p.probs) <= set(classes) and all(0 <= v <= 1 for v in p.probs.values())
        # The predicted set is every class at or above its threshold.
        expected = [c for c in classes if c in p.probs and p.probs[c] >= run.info["thresholds"][c]]
        if len(classes) <= 5:
            assert tagsets.to_list(p.label) == expected
        if s.label is None:
            assert p.loss is None and p.self_confidence is None and p.priority is None and not p.flagged
        else:
            assert p.loss > 0 and 0 <= p.self_confidence <= 1 and 0 < p.priority < 1
        if p.flagged:
            assert s.split == "train" and p.suggested_label != s.label
            assert tagsets.is_canonical(p.suggested_label, classes)
        else:
            assert p.suggested_label is None
    return run, {s.id: (p, s) for p, s in rows}


def test_tabular_multilabel_run_with_out_of_fold_scores_and_a_planted_missing_tag(engine, settings, db, client, annotator):
    # Sample 3's true set lacks or has "a" the other way round in its given set: a label error.
    ds, samples = multilabel_tabular_dataset(db, flips={3: "a", 11: "b"})
    ctx = _ctx(engine, settings, ds, {"epochs": 8, "lr": 3e-2, "folds": 3, "seed": 1})
    result = run_job(ctx, "train")
    run, preds = _check(db, result, samples, ["a", "b", "c"])
    assert result["valid_accuracy"] == run.metrics["valid"]["accuracy"]
    # Well separated tags: the model learns them.
    assert run.metrics["test"]["micro_f1"] > 0.8
    assert run.info["folds"]["stratified"] is True
    # The folds are iterative stratification's on the train tags, in sample order.
    train = sorted((s for s in samples if s.split == "train"), key=lambda s: s.id)
    plan = plan_multilabel_folds(indicator([s.label for s in train], ["a", "b", "c"]), 3, 1)
    assert [preds[s.id][0].fold for s in train] == plan.fold_of.tolist()
    # The planted errors are flagged, suggested with the tag flipped back, and come first in the queue.
    for index, tag in ((3, "a"), (11, "b")):
        p, s = preds[samples[index].id]
        assert p.flagged, (s.label, p.probs)
        assert (tag in tagsets.to_list(p.suggested_label)) != (tag in tagsets.to_list(s.label))
    train_rows = sorted((p for p, s in preds.values() if s.split == "train"), key=lambda p: p.priority)
    assert {train_rows[0].sample_id, train_rows[1].sample_id} <= {samples[3].id, samples[11].id} | {
        p.sample_id for p in train_rows if p.flagged}
    assert run.info["flagged"]["count"] == sum(p.flagged for p in train_rows) >= 2
    # Through the API: the run's multi-label metrics, and the review queue's score orders.
    body = client.get(f"/api/v1/runs/{run.id}", headers=annotator.headers).json()
    assert set(body["metrics"]["test"]) == ML_KEYS and list(body["metrics"]["test"]["per_class"]) == ["a", "b", "c"]
    assert body["metrics"]["test"]["swaps"]["matrix"] == run.metrics["test"]["swaps"]["matrix"]
    url = f"/api/v1/datasets/{ds.id}/samples"
    r = client.get(url, params={"order": "priority", "split": "train", "limit": 2}, headers=annotator.headers)
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["items"]] == [p.sample_id for p in train_rows[:2]]
    for order in ("loss", "self_confidence", "normalized_margin", "combined", "confusion_margin", "entropy"):
        r = client.get(url, params={"order": order, "limit": 5}, headers=annotator.headers)
        assert r.status_code == 200, (order, r.text)
    r = client.get(url, params={"flagged": "true", "limit": 50}, headers=annotator.headers)
    assert {i["id"] for i in r.json()["items"]} == {p.sample_id for p in train_rows if p.flagged}
    # The artifact predicts with a sigmoid per class, as the run did.
    if run.info["predictions"]["artifact_reproduces"]:
        data = load_training_data(engine, ds.id, settings)
        held = data.items[data.items["split"] != "train"]  # train samples were scored out of fold
        P = LoadedModel.from_path(run.artifact).predict_probs(held)
        for i, sample_id in enumerate(held["sample_id"].tolist()):
            for c, v in preds[sample_id][0].probs.items():
                assert P[i, ["a", "b", "c"].index(c)] == pytest.approx(v, abs=1e-4)


@pytest.mark.parametrize("params", [
    {"loss": "weighted_cross_entropy"},
    {"loss": "focal", "focal_gamma": 2.0, "focal_alpha": "balanced"},
    {"sampling": "oversample"},
    {"sampling": "weighted", "monitor": "f1", "keep_best": True},
    {"scoring": "out_of_fold", "folds": 2, "ensemble": True, "snapshot_ensemble": 2},
    {"scoring": "out_of_fold", "folds": 2, "oof_repeats": 2, "retrain_best_epochs": True, "monitor": "accuracy"},
    {"early_stopping": 1, "monitor": "f1", "schedule": "sgdr", "optimizer": "sgd", "accumulate": 20, "batch_size": 8},
])
def test_imbalance_and_other_recipe_options_train_a_multilabel_model(engine, settings, db, params):
    ds, samples = multilabel_tabular_dataset(db, counts={"train": 45, "valid": 15, "test": 6})
    ctx = _ctx(engine, settings, ds, {"epochs": 3, "lr": 3e-2, "scoring": "in_sample", **params})
    run, _ = _check(db, run_job(ctx, "train"), samples, ["a", "b", "c"])
    if params.get("ensemble"):
        assert run.info["predictions"]["model"] == "fold_ensemble"
    if params.get("retrain_best_epochs"):
        assert run.info["retrain_best_epochs"]["fold_best_epochs"]


@pytest.mark.parametrize("params, field", [
    ({"loss": "label_smoothing"}, "loss"),
    ({"label_smoothing": 0.1}, "label_smoothing"),
])
def test_options_that_do_not_apply_to_multilabel_are_refused_naming_the_field(engine, settings, db, params, field):
    ds, _ = multilabel_tabular_dataset(db, counts={"train": 6, "valid": 2})
    with pytest.raises(RecipeError) as err:
        run_job(_ctx(engine, settings, ds, params), "train")
    assert field in [e["field"] for e in err.value.errors]
    assert "multi-label" in str(err.value)


@pytest.mark.slow
def test_text_multilabel_run_end_to_end(engine, settings, db):
    ds, samples = multilabel_text_dataset(db)
    result = run_job(_ctx(engine, settings, ds, {"epochs": 1, "folds": 2, "lr": 1e-2, "pretrained": False}), "train")
    _, preds = _check(db, result, samples, ["cat", "dog"])
    assert sum(p.out_of_fold for p, _ in preds.values()) == 40


@pytest.mark.slow
def test_image_multilabel_run_end_to_end(engine, settings, db):
    ds, samples = multilabel_image_dataset(db, settings)
    result = run_job(_ctx(engine, settings, ds, {"epochs": 1, "folds": 2, "lr": 1e-3, "pretrained": False}), "train")
    _, preds = _check(db, result, samples, ["left", "top"])
    assert sum(p.out_of_fold for p, _ in preds.values()) == 32


def test_a_seeds_job_measures_a_multilabel_recipe_over_seeds(engine, settings, db):
    ds, _ = multilabel_tabular_dataset(db, counts={"train": 40, "valid": 15, "test": 10})
    ctx = _ctx(engine, settings, ds, {"seeds": 2, "recipe": {"epochs": 2, "lr": 3e-2}})
    result = run_job(ctx, "seeds")
    assert [r["seed"] for r in result["per_seed"]] == [0, 1]
    for row in result["per_seed"]:
        assert 0 <= row["valid"]["macro_f1"] <= 1 and set(row["valid"]["f1"]) == {"a", "b", "c"}
    assert result["summary"]["valid"]["macro_f1"]["mean"] is not None


def test_a_search_tunes_a_multilabel_recipe_and_prunes_on_its_macro_f1(engine, settings, db):
    from app.errors import Invalid
    from app.jobs import service
    from app.search.params import validate_search
    from tests.search.helpers import enqueue_search, local_ctx, optuna_trials

    ds, _ = multilabel_tabular_dataset(db, counts={"train": 40, "valid": 15, "test": 6})
    params = {"n_trials": 3, "metric": "macro_f1", "pruner": "median", "startup_trials": 1, "seed": 0,
              "space": {"lr": {"low": 1e-5, "high": 0.1, "log": True}}, "base": {"epochs": 2, "batch_size": 16}}
    job_id = enqueue_search(db, ds.id, params)
    result = run_job(local_ctx(engine, settings, job_id, ds.id, params), "search")
    states = [r.state for r in optuna_trials(db, job_id)]
    assert "FAIL" not in states and len(states) == 3, states
    assert 0 <= result["best"]["value"] <= 1
    # Label smoothing cannot be searched on a multi-label dataset; the default space leaves it out.
    with pytest.raises(Invalid) as err:
        service.enqueue(db, "search", {**params, "space": {"label_smoothing": {"low": 0.05, "high": 0.2}}},
                        dataset_id=ds.id)
    assert [e["field"] for e in err.value.errors] == ["space.label_smoothing"]
    db.rollback()
    _, space = validate_search({"base": {"epochs": 2}}, "tabular", multilabel=True)
    assert "label_smoothing" not in space and space["loss"]["choices"] == ["cross_entropy", "weighted_cross_entropy"]


def test_a_prune_job_removes_the_easiest_samples_carrying_a_tag(engine, settings, db):
    ds, samples = multilabel_tabular_dataset(db, counts={"train": 40, "valid": 15, "test": 6})
    run_job(_ctx(engine, settings, ds, {"epochs": 2, "lr": 3e-2, "scoring": "in_sample"}), "train")
    ctx = _ctx(engine, settings, ds, {"class": "a", "fraction": 0.25, "seeds": 2, "recipe": {"epochs": 2, "lr": 3e-2}})
    result = run_job(ctx, "prune")
    carrying = {s.id for s in samples if s.split == "train" and "a" in tagsets.to_list(s.label)}
    assert result["removed"] == round(0.25 * len(carrying)) == len(result["removed_sample_ids"])
    assert set(result["removed_sample_ids"]) <= carrying and result["train"]["class_before"] == len(carrying)
    assert result["selection"] == "self_confidence" and result["scored_by_run"] is not None
    assert set(result["decision"]) >= {"reason"}
