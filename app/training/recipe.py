"""The training recipe: every knob of a train job, validated, with per-task defaults.

This module imports neither torch nor fastai, so the web process can validate job params.
The fastai piece behind each option name lives in app.training.learners (LOSSES,
OPTIMIZERS, SCHEDULES, IMAGE_ARCHS ...): a new option is a name here and an entry there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Option names; app.training.learners maps each to its fastai piece.
IMAGE_ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121", "squeezenet1_1")
TEXT_ARCHS = ("awd_lstm",)
TABULAR_ARCHS = ("mlp",)
ARCHS = {"image": IMAGE_ARCHS, "text": TEXT_ARCHS, "tabular": TABULAR_ARCHS}
LOSS_NAMES = ("cross_entropy", "label_smoothing")
OPTIMIZER_NAMES = ("adam",)
SCHEDULE_NAMES = ("one_cycle",)
SAMPLING_NAMES = ("none",)
PRECISION_NAMES = ("auto", "fp32", "bf16", "fp16")

DEFAULT_LABEL_SMOOTHING = 0.1

# Per-task defaults, chosen so the default recipe trains a good model on a laptop CPU in minutes.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # 8x8 to a few hundred pixels: 32 px is the smallest size at which every stage of a
    # ResNet (total stride 32) still sees a feature map, and costs ~1/49 of 224 px.
    "image": {"arch": "resnet18", "epochs": 8, "batch_size": 64, "image_size": 32, "augment": True, "pretrained": True},
    "text": {"arch": "awd_lstm", "epochs": 6, "batch_size": 32, "seq_len": 72, "pretrained": True},
    "tabular": {"arch": "mlp", "epochs": 10, "batch_size": 64, "layers": [200, 100]},
}
TASK_FIELDS = {
    "image": ("image_size", "augment", "pretrained"),
    "text": ("seq_len", "pretrained"),
    "tabular": ("layers",),
}
TASK_ONLY_FIELDS = {f for fields in TASK_FIELDS.values() for f in fields}


class RecipeError(ValueError):
    """Invalid train job params; `errors` lists {"field", "message"} for a 422 response."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("invalid training params: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors))


class Recipe(BaseModel):
    """Train job params (design.md); None means "the default for this task" until resolved."""

    model_config = ConfigDict(extra="forbid")

    arch: str | None = Field(default=None, description="model architecture; default per task")
    epochs: int | None = Field(default=None, ge=1, le=1000)
    lr: float | None = Field(default=None, gt=0, le=10, description="null: found with lr_find")
    batch_size: int | None = Field(default=None, ge=2, le=65536)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    scoring: Literal["out_of_fold", "in_sample"] = "out_of_fold"
    folds: int = Field(default=5, ge=2, le=20)
    loss: Literal[LOSS_NAMES] | None = None  # type: ignore[valid-type]
    label_smoothing: float | None = Field(default=None, gt=0, lt=1)
    sampling: Literal[SAMPLING_NAMES] = "none"  # type: ignore[valid-type]
    optimizer: Literal[OPTIMIZER_NAMES] = "adam"  # type: ignore[valid-type]
    schedule: Literal[SCHEDULE_NAMES] = "one_cycle"  # type: ignore[valid-type]
    precision: Literal[PRECISION_NAMES] = "auto"  # type: ignore[valid-type]
    early_stopping: int | None = Field(default=None, ge=1, le=1000, description="patience in epochs on valid_loss")
    # Task-specific knobs; each is null for the other tasks.
    image_size: int | None = Field(default=None, ge=16, le=1024)
    augment: bool | None = None
    pretrained: bool | None = Field(default=None, description="try pretrained weights (falls back to none offline)")
    seq_len: int | None = Field(default=None, ge=8, le=4096)
    layers: list[int] | None = Field(default=None, min_length=1, max_length=8)

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.loss == "cross_entropy" and self.label_smoothing is not None:
            raise ValueError("label_smoothing needs loss 'label_smoothing' (or leave loss unset)")
        if self.layers is not None and any(n < 1 or n > 65536 for n in self.layers):
            raise ValueError("layers must be sizes between 1 and 65536")
        return self


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "params"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown parameter; known: {', '.join(Recipe.model_fields)}"
        out.append({"field": loc, "message": msg})
    return out


def resolve_recipe(params: dict[str, Any] | None, task: str) -> Recipe:
    """Validate params and fill every default for `task`; raises RecipeError naming the field."""
    if task not in TASK_DEFAULTS:
        raise RecipeError([{"field": "task", "message": f"unknown task {task!r}"}])
    params = dict(params or {})
    try:
        recipe = Recipe.model_validate(params)
    except ValidationError as exc:
        raise RecipeError(_errors(exc)) from None
    errors = []
    for name in TASK_ONLY_FIELDS - set(TASK_FIELDS[task]):
        if getattr(recipe, name) is not None:
            errors.append({"field": name, "message": f"does not apply to {task} datasets"})
    if recipe.arch is not None and recipe.arch not in ARCHS[task]:
        errors.append({"field": "arch", "message": f"for {task} datasets one of {', '.join(ARCHS[task])}"})
    if errors:
        raise RecipeError(errors)
    values = recipe.model_dump()
    for name, default in TASK_DEFAULTS[task].items():
        if values.get(name) is None:
            values[name] = default
    if values["loss"] is None:
        values["loss"] = "label_smoothing" if values["label_smoothing"] is not None else "cross_entropy"
    if values["loss"] == "label_smoothing" and values["label_smoothing"] is None:
        values["label_smoothing"] = DEFAULT_LABEL_SMOOTHING
    return Recipe.model_validate(values)
