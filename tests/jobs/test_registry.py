"""The job registry: kinds as import paths, their params models, and the worker's shared setup."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel, ValidationInfo, model_validator

from app.errors import Invalid
from app.jobs.context import LocalJobContext
from app.jobs.registry import KINDS, JobKind, all_kinds, job_kind, known_kinds, run_job
from app.training.recipe import Recipe, RecipeError
from tests.jobs.handlers import KINDS as TEST_KINDS
from tests.training.factories import tabular_dataset


class EchoParams(BaseModel):
    """A params model that records the context it was validated with."""

    n: int = 1
    task: str | None = None
    classes: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _context(cls, data, info: ValidationInfo):
        context = info.context or {}
        return {**data, "task": context.get("task"), "classes": context.get("classes", [])}


def echo_prepared(ctx, params: EchoParams, data) -> dict:
    return {"n": params.n, "task": params.task, "rows": len(data.items), "threads": torch.get_num_threads()}


PREPARED = JobKind("t_prepared", "tests.jobs.test_registry:echo_prepared", "tests.jobs.test_registry:EchoParams",
                   needs_dataset=True, torch_threads=True)


def test_the_built_in_kinds_point_at_importable_models_and_handlers():
    assert sorted(KINDS) == ["prune", "search", "seeds", "train"]
    for kind in KINDS.values():
        assert issubclass(kind.params_model(), BaseModel) and callable(kind.handler_function())
        assert kind.needs_dataset and kind.torch_threads
    assert KINDS["train"].params_model() is Recipe


def test_known_kinds_include_the_extra_handlers_of_the_settings(settings):
    assert set(TEST_KINDS) <= set(known_kinds(settings)) and "train" in known_kinds(settings)
    extra = job_kind("t_echo", settings)
    assert (extra.params, extra.needs_dataset, extra.torch_threads) == (None, False, False)
    bare = settings.model_copy(update={"extra_job_handlers": {}})
    assert known_kinds(bare) == ["prune", "search", "seeds", "train"]
    replaced = settings.model_copy(update={"extra_job_handlers": {"train": "tests.jobs.handlers:echo"}})
    assert all_kinds(replaced)["train"].handler == "tests.jobs.handlers:echo"


def test_an_unknown_kind_names_the_known_ones(settings):
    with pytest.raises(KeyError, match="unknown job kind 'bake'; known: prune, search, seeds,"):
        job_kind("bake", settings)


def test_params_are_validated_into_the_kind_s_model():
    recipe = KINDS["train"].validate({"epochs": 2}, task="tabular")
    assert isinstance(recipe, Recipe) and (recipe.epochs, recipe.arch, recipe.batch_size) == (2, "mlp", 64)
    with pytest.raises(RecipeError) as info:
        KINDS["train"].validate({"epochs": 0, "image_size": 32}, task="tabular")
    assert isinstance(info.value, Invalid) and info.value.status_code == 422
    assert {e["field"] for e in info.value.errors} == {"epochs"}
    seeds = KINDS["seeds"].validate({"seeds": 3}, task="tabular")
    assert (seeds.seeds, seeds.compare_delta, seeds.recipe.arch) == (3, None, "mlp")
    prune = KINDS["prune"].validate({"class": "b"}, task="tabular", classes=["a", "b"])
    assert (prune.class_, prune.seeds, prune.fraction) == ("b", 3, 0.3)
    with pytest.raises(Invalid) as info:
        KINDS["prune"].validate({"class": "z", "seeds": 1}, task="tabular", classes=["a", "b"])
    assert [e["field"] for e in info.value.errors] == ["class", "seeds"]
    assert JobKind("t", "m:f").validate(None) == {}


def test_a_model_s_own_validation_errors_become_invalid_with_field_errors():
    with pytest.raises(Invalid) as info:
        PREPARED.validate({"n": "many"})
    assert info.value.detail.startswith("invalid t_prepared params: n: ")
    assert info.value.errors[0]["field"] == "n"


def test_the_shared_setup_loads_the_dataset_validates_and_sets_the_threads(engine, settings, db):
    ds, samples = tabular_dataset(db)
    db.commit()
    threads = torch.get_num_threads()
    ctx = LocalJobContext(engine=engine, settings=settings.model_copy(update={"torch_threads": 1}),
                          params={"n": 4}, dataset_id=ds.id)
    try:
        params, data = PREPARED.arguments(ctx)
        assert isinstance(params, EchoParams) and (params.n, params.task, params.classes) == (4, "tabular", ["a", "b", "c"])
        assert len(data.items) == len(samples) and data.dataset_id == ds.id
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="a t_prepared job needs a dataset"):
        PREPARED.arguments(LocalJobContext(engine=engine, settings=settings))


def test_run_job_runs_a_kind_in_process(engine, settings, db):
    ds, _ = tabular_dataset(db)
    db.commit()
    ctx = LocalJobContext(engine=engine, settings=settings, params={"x": 1}, dataset_id=ds.id)
    assert run_job(ctx, "t_echo") == {"echo": {"x": 1}, "dataset_id": ds.id}
