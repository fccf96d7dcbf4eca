"""The train job end to end, through the job registry (as a worker runs it) with a LocalJobContext."""

import threading

import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from app.jobs.context import JobCancelled, LocalJobContext
from app.models import Prediction, Run, Sample
from app.runs import embeddings
from app.scoring.oof import plan_folds
from app.training import adapters, jobs, learners, records
from app.training.artifacts import LoadedModel
from app.jobs.registry import run_job
from app.training.jobs import TrainRun
from app.training.recipe import RecipeError
from tests.training.factories import image_dataset, tabular_dataset, text_dataset


def _ctx(engine, settings, ds, params, cls=LocalJobContext):
    return cls(engine=engine, settings=settings, params=params, dataset_id=ds.id)


def _predictions(db, run_id):
    rows = db.execute(
        select(Prediction, Sample).join(Sample, Sample.id == Prediction.sample_id).where(Prediction.run_id == run_id)
    ).all()
    return {s.id: (p, s) for p, s in rows}


def _check_run(db, ctx, result, samples, classes):
    run = db.get(Run, result["run_id"])
    db.refresh(run)
    assert ctx.run_id == run.id
    assert run.status == "succeeded" and run.finished_at is not None
    assert run.label_version == 7
    assert run.params["epochs"] == ctx.params.get("epochs", run.params["epochs"])
    for split in ("valid", "test"):
        m = run.metrics[split]
        assert set(m) == {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion"}
        assert set(m["per_class"]) == set(classes)  # JSONB keeps no key order; confusion.labels does
        assert m["confusion"]["labels"] == classes
    assert result["valid_accuracy"] == run.metrics["valid"]["accuracy"]
    preds = _predictions(db, run.id)
    assert set(preds) == {s.id for s in samples}
    for p, s in preds.values():
        assert p.given_label == s.label
        assert p.label in classes
        assert abs(sum(p.probs.values()) - 1.0) < 1e-4
        if s.label is None:
            assert p.loss is None and p.self_confidence is None and p.normalized_margin is None
        else:
            assert p.loss == pytest.approx(-np.log(max(p.probs[s.label], 1e-12)), rel=1e-5)
    # Progress only moves forward and ends complete.
    assert ctx.fractions == sorted(ctx.fractions) and ctx.fractions[-1] == 1.0
    # The final model's embedding of every sample, at most 128 numbers each, kept beside the run.
    ids, X = embeddings.load(ctx.settings.data_dir, run.id)
    assert sorted(ids.tolist()) == sorted(s.id for s in samples) and X.shape[0] == len(samples)
    assert 0 < X.shape[1] <= 128 and np.isfinite(X).all() and X.std(axis=0).max() > 0
    assert run.info["embedding"]["source"] == "final_model" and run.info["embedding"]["dim"] == X.shape[1]
    # From it, every sample's outlier score (a typical train sample's is 1) and the run's data issues.
    issues = run.info["data_issues"]
    assert issues["embedding"] and issues["index"] == "exact" and issues["outlier_fence"] > 1
    train_scores = [p.outlier for p, _ in preds.values() if p.sample_split == "train"]
    assert all(p.outlier is not None and p.outlier >= 0 for p, _ in preds.values())
    assert 1.0 <= float(np.median(train_scores)) < 1.1  # the larger of two scales, each 1 at the median
    grouped = [p for p, _ in preds.values() if p.duplicate_group is not None]
    assert len(grouped) == issues["grouped_samples"]
    # With embeddings, the train split's review order is the gain order: every labelled train
    # sample has an expected gain and the flagged ones come first, highest gain first.
    assert run.info["review_order"] == {"order": "gain", "reason": "embeddings"}
    train = [p for p, s in preds.values() if s.split == "train" and s.label is not None]
    assert all(p.review_gain is not None and np.isfinite(p.review_gain) for p in train)
    assert all(p.review_gain is None for p, s in preds.values() if s.split != "train")
    flagged = sorted((p for p in train if p.flagged), key=lambda p: p.priority)
    assert [p.review_gain for p in flagged] == sorted((p.review_gain for p in flagged), reverse=True)
    return run, preds


def test_tabular_out_of_fold_run_end_to_end(engine, settings, db, monkeypatch):
    ds, samples = tabular_dataset(db)
    trained_on: list[set[int]] = []
    original = TrainRun._learner

    def spy(self, train_df, valid_df, **kwargs):
        trained_on.append(set(train_df["sample_id"].tolist()))
        assert set(valid_df["sample_id"]).isdisjoint(trained_on[-1])
        return original(self, train_df, valid_df, **kwargs)

    monkeypatch.setattr(TrainRun, "_learner", spy)
    ctx = _ctx(engine, settings, ds, {"epochs": 2, "folds": 3, "seed": 4})
    result = run_job(ctx, "train")
    run, preds = _check_run(db, ctx, result, samples, ["a", "b", "c"])

    # lr_find ran and its suggestion is the lr used.
    assert run.params["lr"] is None
    assert run.info["lr"] == run.info["lr_find"]["suggestion"] > 0
    assert run.info["environment"]["device"] in ("cpu", "cuda")
    assert run.info["features"] == {"categorical": ["f:code"], "continuous": ["f:x", "f:y"]}
    assert [f["held_out"] for f in run.info["folds"]["sizes"]] == [20, 20, 20]
    assert {"lr_find", "folds", "final", "scoring", "label_errors", "writing", "total"} <= set(run.info["timings"])
    # One history entry per epoch of each model: 3 folds and the final model, 2 epochs each.
    assert [(h["model"], h["epoch"]) for h in run.history] == [
        (m, e) for m in ("fold 1", "fold 2", "fold 3", "final") for e in (1, 2)
    ]
    assert all(h["train_loss"] > 0 and h["valid_loss"] > 0 and 0 <= h["accuracy"] <= 1 for h in run.history)
    assert any(m == "fold 2/3, epoch 2/2" for m in ctx.messages)
    assert any(m.startswith("final model, epoch") for m in ctx.messages)

    # Out-of-fold: the fold on each train prediction is the seeded plan's, and that fold's
    # model never trained on the sample; every other prediction is the final model's.
    train = sorted((s for s in samples if s.split == "train"), key=lambda s: s.id)
    plan = plan_folds(np.array([["a", "b", "c"].index(s.label) for s in train]), 3, 4)
    assert len(trained_on) == 4  # the final model first, then one per fold
    final_set, fold_sets = trained_on[0], trained_on[1:]
    assert final_set == {s.id for s in train}
    for i, s in enumerate(train):
        p, _ = preds[s.id]
        assert p.out_of_fold and p.fold == plan.fold_of[i]
        assert s.id not in fold_sets[p.fold]
        assert all(s.id in fold_sets[f] for f in range(3) if f != p.fold)
    for p, s in preds.values():
        if s.split != "train":
            assert not p.out_of_fold and p.fold is None


def test_several_out_of_fold_passes_average_each_samples_held_out_probabilities(engine, settings, db, monkeypatch):
    ds, samples = tabular_dataset(db)
    trained_on: list[set[int]] = []
    seeds: list[int | None] = []
    original_learner = TrainRun._learner

    def spy(self, train_df, valid_df, **kwargs):
        trained_on.append(set(train_df["sample_id"].tolist()))
        seeds.append(kwargs.get("seed"))
        return original_learner(self, train_df, valid_df, **kwargs)

    passes: list[np.ndarray] = []
    original_oof = jobs.out_of_fold_probs

    def record(*args, **kwargs):
        passes.append(original_oof(*args, **kwargs))
        return passes[-1]

    monkeypatch.setattr(TrainRun, "_learner", spy)
    monkeypatch.setattr(jobs, "out_of_fold_probs", record)
    ctx = _ctx(engine, settings, ds, {"epochs": 2, "lr": 1e-2, "folds": 2, "seed": 3, "oof_repeats": 2})
    result = run_job(ctx, "train")
    run, preds = _check_run(db, ctx, result, samples, ["a", "b", "c"])

    assert run.info["folds"]["repeats"] == 2 and len(run.info["timings"]["folds"]) == 4
    assert [h["model"] for h in run.history if h["epoch"] == 1] == [
        "fold 1 pass 1", "fold 2 pass 1", "fold 1 pass 2", "fold 2 pass 2", "final"
    ]
    assert any(m.startswith("fold 2/2, pass 2/2") for m in ctx.messages)
    # Pass r splits with seed + r; in each, the model that scores a sample never trained on it.
    train = sorted((s for s in samples if s.split == "train"), key=lambda s: s.id)
    y = np.array([["a", "b", "c"].index(s.label) for s in train])
    plans = [plan_folds(y, 2, 3), plan_folds(y, 2, 4)]
    assert not np.array_equal(plans[0].fold_of, plans[1].fold_of)
    fold_sets = trained_on[1:]  # the final model's learner comes first
    assert len(fold_sets) == 4
    # The second pass's models start from other weights too.
    assert seeds == [None, 3, 3, 4, 4]
    for i, s in enumerate(train):
        for r, plan in enumerate(plans):
            assert s.id not in fold_sets[2 * r + plan.fold_of[i]]
    # The stored probabilities are the mean of the two passes; the stored fold is the first pass's.
    assert len(passes) == 2 and not np.allclose(passes[0], passes[1])
    mean = (passes[0] + passes[1]) / 2
    for i, s in enumerate(train):
        p, _ = preds[s.id]
        assert p.out_of_fold and p.fold == plans[0].fold_of[i]
        assert [p.probs[c] for c in ("a", "b", "c")] == pytest.approx(mean[i].tolist(), abs=1e-6)


def test_more_than_one_out_of_fold_pass_needs_out_of_fold_scoring(engine, settings, db):
    ds, _ = tabular_dataset(db)
    with pytest.raises(RecipeError) as exc:
        run_job(_ctx(engine, settings, ds, {"epochs": 1, "scoring": "in_sample", "oof_repeats": 2}), "train")
    assert exc.value.errors == [{"field": "oof_repeats", "message": "oof_repeats needs out_of_fold scoring: it repeats the fold models"}]


def test_in_sample_scores_everything_with_one_model(engine, settings, db):
    ds, samples = tabular_dataset(db)
    ctx = _ctx(engine, settings, ds, {"epochs": 4, "lr": 3e-2, "scoring": "in_sample"})
    result = run_job(ctx, "train")
    run, preds = _check_run(db, ctx, result, samples, ["a", "b", "c"])
    assert "lr_find" not in run.info and run.info["lr"] == 3e-2
    # Every sample up to the highest id is scored, and the run says so for the listings.
    assert run.info["covers_through"] == max(s.id for s in samples) and set(preds) == {s.id for s in samples}
    assert all(not p.out_of_fold and p.fold is None for p, _ in preds.values())
    # The advisor's train confusion is the predictions' (given, predicted) count on train.
    train_ids = {s.id for s in samples if s.split == "train" and s.label is not None}
    expected: dict = {}
    for sid in train_ids:
        p, _ = preds[sid]
        expected.setdefault(p.given_label, {}).setdefault(p.label, 0)
        expected[p.given_label][p.label] += 1
    assert run.info["train_confusion"] == expected and sum(n for r in expected.values() for n in r.values()) == len(train_ids)
    assert [h["model"] for h in run.history] == ["final"] * 4
    # The embedding is the input of the last linear layer: through it, it gives the stored probabilities.
    ids, X = embeddings.load(settings.data_dir, run.id)
    state = torch.load(run.artifact, weights_only=True)["state_dict"]
    weight, bias = next((state[k], state[k.replace("weight", "bias")]) for k in reversed(list(state))
                        if k.endswith("weight") and state[k].shape == (3, X.shape[1]))
    probs = torch.softmax(torch.from_numpy(np.asarray(X)) @ weight.T + bias, dim=1).numpy()
    classes = ["a", "b", "c"]
    for row, sid in zip(probs, ids.tolist()):
        for c, p in preds[sid][0].probs.items():
            assert row[classes.index(c)] == pytest.approx(p, abs=1e-4)
    # The well separated classes are learnt.
    assert run.metrics["valid"]["accuracy"] >= 0.8 and run.metrics["test"]["accuracy"] >= 0.8


def test_the_artifact_loads_with_weights_only_and_reproduces_the_predictions(engine, settings, db):
    ds, samples = tabular_dataset(db)
    result = run_job(_ctx(engine, settings, ds, {"epochs": 2, "lr": 1e-2, "folds": 2}), "train")
    run = db.get(Run, result["run_id"])
    path = settings.data_dir / "artifacts" / f"run-{run.id}" / "model.pt"
    assert run.artifact == str(path)
    payload = torch.load(path, weights_only=True)
    assert payload["classes"] == ["a", "b", "c"] and payload["recipe"]["epochs"] == 2
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    _assert_reproduces(db, settings, run, path)


def _assert_reproduces(db, settings, run, path):
    """The loaded artifact predicts what the final model wrote for valid, test and unlabelled samples."""
    from app.training.data import load_training_data

    data = load_training_data(db.get_bind(), run.dataset_id, settings)
    items = data.items[data.items["split"] != "train"]
    probs = LoadedModel.from_path(path).predict_probs(items)
    stored = {p.sample_id: p.probs for p in db.scalars(select(Prediction).where(Prediction.run_id == run.id))}
    classes = data.classes
    assert len(items) > 0
    for row, sid in zip(probs, items["sample_id"]):
        for c, p in stored[int(sid)].items():
            assert row[classes.index(c)] == pytest.approx(p, abs=1e-5)


class CancelOnFold2(LocalJobContext):
    """Cancels from another thread once the second fold starts, the way a cancel request arrives."""

    def progress(self, fraction, message=None):
        super().progress(fraction, message)
        if message and message.startswith("fold 2/") and not self.cancel_event.is_set():
            t = threading.Thread(target=self.cancel_event.set)
            t.start()
            t.join()


def test_cancel_before_a_later_fold_leaves_the_run_cancelled(engine, settings, db):
    ds, _ = tabular_dataset(db)
    ctx = _ctx(engine, settings, ds, {"epochs": 2, "lr": 1e-2, "folds": 3}, CancelOnFold2)
    with pytest.raises(JobCancelled):
        run_job(ctx, "train")
    run = db.get(Run, ctx.run_id)
    assert run.status == "cancelled" and run.finished_at is not None
    # Fold 1 finished, fold 2 stopped in its first epoch, no final model.
    assert {h["model"] for h in run.history} <= {"fold 1", "fold 2"}
    assert not any(m.startswith("final") for m in ctx.messages)
    assert db.scalar(select(func.count()).select_from(Prediction).where(Prediction.run_id == run.id)) == 0


class CancelMidEpoch(LocalJobContext):
    """Cancelled after a few batches of the first model, in the middle of an epoch."""

    calls = 0

    def is_cancelled(self):
        self.calls += 1
        return self.calls > 3


def test_cancel_mid_epoch_stops_fit_and_raises_job_cancelled(engine, settings, db):
    ds, _ = tabular_dataset(db, counts={"train": 150, "valid": 15})
    ctx = _ctx(engine, settings, ds, {"epochs": 3, "lr": 1e-2, "folds": 2, "batch_size": 16}, CancelMidEpoch)
    with pytest.raises(JobCancelled):
        run_job(ctx, "train")
    run = db.get(Run, ctx.run_id)
    assert run.status == "cancelled"
    assert run.history == []  # stopped before the first epoch ended


class ReadsHistoryWhileTraining(LocalJobContext):
    seen: list

    def progress(self, fraction, message=None):
        super().progress(fraction, message)
        if message and message.startswith("final model, epoch") and not self.seen:
            from sqlalchemy.orm import Session

            with Session(self.engine) as s:
                run = s.get(Run, self.run_id)
                self.seen.append((run.status, len(run.history)))


def test_history_is_stored_while_the_run_trains(engine, settings, db):
    ds, _ = tabular_dataset(db)
    ctx = _ctx(engine, settings, ds, {"epochs": 2, "lr": 1e-2, "folds": 2}, ReadsHistoryWhileTraining)
    ctx.seen = []
    run_job(ctx, "train")
    # Once the final model trains, both folds' epochs (2 x 2) are in the database.
    assert ctx.seen and ctx.seen[0][0] == "running" and ctx.seen[0][1] >= 4


def test_a_training_error_marks_the_run_failed_and_propagates(engine, settings, db, monkeypatch):
    ds, _ = tabular_dataset(db)

    def boom(*args, **kwargs):
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(learners, "fit", boom)
    ctx = _ctx(engine, settings, ds, {"epochs": 1, "lr": 1e-2})
    with pytest.raises(RuntimeError, match="caught fire"):
        run_job(ctx, "train")
    run = db.get(Run, ctx.run_id)
    assert run.status == "failed" and "caught fire" in run.info["error"]


def test_bad_params_fail_before_a_run_exists(engine, settings, db):
    ds, _ = tabular_dataset(db)
    with pytest.raises(RecipeError, match="epochs"):
        run_job(_ctx(engine, settings, ds, {"epochs": -1}), "train")
    with pytest.raises(RecipeError, match="image_size"):
        run_job(_ctx(engine, settings, ds, {"image_size": 32}), "train")
    assert db.scalar(select(func.count()).select_from(Run)) == 0


def test_a_dataset_without_train_labels_cannot_train(engine, settings, db):
    ds, _ = tabular_dataset(db, counts={"valid": 5, "unlabelled": 5})
    with pytest.raises(ValueError, match="0 labelled train samples"):
        run_job(_ctx(engine, settings, ds, {}), "train")


def test_predictions_are_written_in_batches(engine, db, monkeypatch):
    ds, samples = tabular_dataset(db, counts={"train": 7})
    run = Run(dataset_id=ds.id, status="running", params={}, label_version=0, history=[], info={})
    db.add(run)
    db.commit()
    rows = [
        {"run_id": run.id, "sample_id": s.id, "given_label": s.label, "label": "a", "probs": {"a": 1.0},
         "loss": 0.0, "self_confidence": 1.0, "normalized_margin": 1.0, "confusion_margin": 1.0,
         "confusion_a": "a", "confusion_b": "b", "entropy": 0.0, "out_of_fold": False, "fold": None}
        for s in samples
    ]
    # Text COPY would misread unescaped: a backslash, a tab, a newline, quotes.
    rows[1]["confusion_b"] = 'b\\n\t"x"\n'
    rows[1]["probs"] = {'a "1"\\': 0.5}
    batches = []
    real = records.bulk_insert

    def spy(session, table, columns, tables, plain=()):
        tables = list(tables)
        batches.append(sum(t.num_rows for t in tables))
        return real(session, table, columns, tables, plain)

    monkeypatch.setattr(records, "bulk_insert", spy)
    jobs.write_predictions(engine, rows, batch=3)
    assert batches == [3, 3, 1]
    stored = db.scalars(select(Prediction).where(Prediction.run_id == run.id).order_by(Prediction.sample_id)).all()
    assert [p.sample_id for p in stored] == [s.id for s in samples]
    # What a row leaves out is null, or false for the flags; the probabilities come back as given.
    p = stored[0]
    assert (p.probs, p.aum, p.flagged, p.out_of_fold, p.fold, p.priority) == ({"a": 1.0}, None, False, False, None, None)
    assert (stored[1].confusion_b, stored[1].probs) == (rows[1]["confusion_b"], rows[1]["probs"])


def test_written_predictions_carry_their_samples_current_label_reviewed_flag_and_split(engine, db):
    """The job writes the sample's label, reviewed flag and split as it read them; whatever
    changed since (or was left out) is brought up to date once the rows are in, and the
    triggers keep it afterwards: the listings filter on these copies (docs/queries.md)."""
    ds, samples = tabular_dataset(db, counts={"train": 4, "valid": 2})
    run = Run(dataset_id=ds.id, status="running", params={}, label_version=0, history=[], info={})
    db.add(run)
    db.commit()
    rows = [
        {"run_id": run.id, "sample_id": s.id, "given_label": s.label, "label": "a", "probs": {"a": 1.0},
         "confusion_margin": 1.0, "confusion_a": "a", "confusion_b": "b", "entropy": 0.0,
         "sample_label": s.label, "sample_reviewed": False, "sample_split": str(s.split)}
        for s in samples
    ]
    # As read by the run, then changed before its predictions were written.
    samples[0].label = "b" if samples[0].label == "a" else "a"
    samples[1].reviewed = True
    samples[2].split = "test"
    db.commit()
    del rows[3]["sample_split"]  # left out: the insert fills all three from the sample
    jobs.write_predictions(engine, rows)
    samples[4].label = None
    db.commit()
    db.expire_all()
    stored = {p.sample_id: p for p in db.scalars(select(Prediction).where(Prediction.run_id == run.id))}
    for s in db.scalars(select(Sample).where(Sample.dataset_id == ds.id)):
        p = stored[s.id]
        assert (p.sample_label, p.sample_reviewed, p.sample_split) == (s.label, s.reviewed, str(s.split)), s.id
    assert stored[samples[2].id].sample_split == "test" and stored[samples[4].id].sample_label is None
    assert records.sync_sample_mirror(engine, run.id) == 0


@pytest.mark.slow
def test_image_run_end_to_end_with_tiny_pngs(engine, settings, db, monkeypatch):
    ds, samples = image_dataset(db, settings)
    tried = []
    original = adapters.ImageAdapter.learner

    def offline(self, dls, pretrained, **kwargs):
        tried.append(pretrained)
        if pretrained:
            raise OSError("no network")  # what a machine without internet or cached weights sees
        return original(self, dls, pretrained, **kwargs)

    monkeypatch.setattr(adapters.ImageAdapter, "learner", offline)
    ctx = _ctx(engine, settings, ds, {"epochs": 1, "folds": 2, "lr": 1e-3})
    result = run_job(ctx, "train")
    run, preds = _check_run(db, ctx, result, samples, ["left", "right", "top"])
    # Pretrained weights are tried once, then every model trains from scratch, with a notice.
    assert tried == [True, False, False, False]
    assert run.info["pretrained"] is False and run.params["pretrained"] is True
    assert any("training from scratch" in n and "no network" in n for n in run.info["notices"])
    assert any("training from scratch" in m for _, m in ctx.logs)
    assert run.params["image_size"] == 32
    assert sum(p.out_of_fold for p, _ in preds.values()) == 30
    _assert_reproduces(db, settings, run, run.artifact)


@pytest.mark.slow
def test_text_run_end_to_end(engine, settings, db):
    ds, samples = text_dataset(db)
    ctx = _ctx(engine, settings, ds, {"epochs": 1, "folds": 2, "lr": 1e-3})
    result = run_job(ctx, "train")
    run, preds = _check_run(db, ctx, result, samples, ["neg", "pos"])
    if not run.info["pretrained"]:
        assert any("training from scratch" in n for n in run.info["notices"])
    assert sum(p.out_of_fold for p, _ in preds.values()) == 40
    _assert_reproduces(db, settings, run, run.artifact)


def test_a_dataset_without_valid_or_test_samples_trains_and_has_null_metrics(engine, settings, db):
    ds, samples = tabular_dataset(db, counts={"train": 45, "unlabelled": 5})
    ctx = _ctx(engine, settings, ds, {"epochs": 2, "lr": 1e-2, "folds": 3, "early_stopping": 1})
    result = run_job(ctx, "train")
    run = db.get(Run, result["run_id"])
    assert run.status == "succeeded"
    assert run.metrics == {"valid": None, "test": None}
    assert result["valid_accuracy"] is None and result["test_accuracy"] is None
    assert any("early_stopping ignored" in n for n in run.info["notices"])
    assert len(run.history) == 8 and all(h["valid_loss"] is None for h in run.history)
    assert len(_predictions(db, run.id)) == 50


def test_a_compiled_model_trains_and_its_artifact_is_the_plain_models(engine, settings, db, monkeypatch):
    """torch_compile compiles the module in place: it trains, its artifact has the plain
    state_dict keys (no `_orig_mod.`) and reloads to the stored predictions."""
    compiled = []
    original = learners.build_learner

    def build(*args, **kwargs):
        learn = original(*args, **kwargs)
        compiled.append(learn.model._compiled_call_impl is not None)
        return learn

    monkeypatch.setattr(learners, "build_learner", build)
    ds, _ = tabular_dataset(db)
    result = run_job(_ctx(engine, settings, ds, {"epochs": 1, "lr": 1e-2, "scoring": "in_sample",
                                                 "torch_compile": True}), "train")
    run = db.get(Run, result["run_id"])
    assert run.status == "succeeded" and run.params["torch_compile"] is True
    assert compiled and all(compiled)
    payload = torch.load(run.artifact, weights_only=True)
    assert payload["state_dict"] and not any("_orig_mod" in k for k in payload["state_dict"])
    _assert_reproduces(db, settings, run, run.artifact)
