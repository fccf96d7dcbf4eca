import pytest

from app.errors import Invalid
from app.training import adapters, options
from app.training.recipe import (
    IMAGE_ARCHS,
    LOSS_NAMES,
    OPTIMIZER_NAMES,
    SCHEDULE_NAMES,
    TEXT_ARCHS,
    Recipe,
    RecipeError,
    resolve_recipe,
)


def test_defaults_are_filled_per_task():
    image = resolve_recipe({}, "image")
    assert (image.arch, image.epochs, image.batch_size, image.image_size, image.augment) == ("resnet18", 8, 64, 32, True)
    assert (image.scoring, image.folds, image.loss, image.optimizer, image.schedule, image.precision) == (
        "out_of_fold", 5, "cross_entropy", "adamw", "one_cycle", "auto",
    )
    assert image.lr is None and image.label_smoothing is None and image.layers is None
    tab = resolve_recipe({"epochs": 3}, "tabular")
    assert (tab.arch, tab.epochs, tab.layers, tab.image_size, tab.pretrained) == ("mlp", 3, [200, 100], None, None)
    text = resolve_recipe({}, "text")
    assert (text.arch, text.seq_len, text.pretrained) == ("awd_lstm", 72, True)


def test_the_resolved_recipe_is_plain_json_and_resolves_to_itself():
    r = resolve_recipe({"lr": 0.01, "folds": 3}, "image")
    assert resolve_recipe(r.model_dump(), "image") == r


def test_label_smoothing_alone_selects_the_smoothed_loss_and_the_loss_alone_gets_a_default_eps():
    assert resolve_recipe({"label_smoothing": 0.2}, "tabular").loss == "label_smoothing"
    r = resolve_recipe({"loss": "label_smoothing"}, "tabular")
    assert r.label_smoothing == 0.1


@pytest.mark.parametrize(
    "params, field, words",
    [
        ({"epochs": 0}, "epochs", "greater than or equal to 1"),
        ({"lr": -1}, "lr", "greater than 0"),
        ({"scoring": "sometimes"}, "scoring", "out_of_fold"),
        ({"folds": 1}, "folds", "greater than or equal to 2"),
        ({"optimizer": "lion"}, "optimizer", "adam"),
        ({"precision": "fp8"}, "precision", "bf16"),
        ({"wings": 2}, "wings", "unknown parameter"),
        ({"arch": "awd_lstm"}, "arch", "one of mlp"),
        ({"image_size": 64}, "image_size", "does not apply to tabular"),
        ({"loss": "cross_entropy", "label_smoothing": 0.1}, "label_smoothing", "label_smoothing needs loss"),
        ({"label_smoothing": 1.5}, "label_smoothing", "less than 1"),
    ],
)
def test_bad_params_name_the_field(params, field, words):
    with pytest.raises(RecipeError) as info:
        resolve_recipe(params, "tabular")
    assert isinstance(info.value, Invalid) and info.value.status_code == 422
    assert any(e["field"] == field and words in e["message"] for e in info.value.errors), info.value.errors
    assert field in str(info.value)


def test_every_option_name_maps_to_a_fastai_piece():
    assert set(LOSS_NAMES) == set(options.LOSSES)
    assert set(OPTIMIZER_NAMES) == set(options.OPTIMIZERS)
    assert set(SCHEDULE_NAMES) == set(options.SCHEDULES)
    assert set(IMAGE_ARCHS) == set(adapters.IMAGE_ARCHS)
    assert set(TEXT_ARCHS) == set(adapters.TEXT_ARCHS)


def test_the_recipe_resolves_itself_for_the_task_in_its_validation_context():
    """The train job's params model: validated with a task, it is resolve_recipe's recipe."""
    params = {"epochs": 3, "label_smoothing": 0.2}
    assert Recipe.model_validate(params, context={"task": "text"}) == resolve_recipe(params, "text")
    assert Recipe.model_validate(params).arch is None  # without a task: validated, nothing filled in
    with pytest.raises(RecipeError, match="arch: for tabular datasets one of mlp"):
        Recipe.model_validate({"arch": "resnet18"}, context={"task": "tabular"})
