"""Model artifacts: a state dict plus the recipe, the classes and the preprocessing state.

Only tensors and plain values are stored (no pickled code), so an artifact loads with
`torch.load(path, weights_only=True)`; `LoadedModel` rebuilds the learner from it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from app.config import Settings

FORMAT = "curate-model/1"
FILENAME = "model.pt"


def artifact_dir(settings: Settings, run_id: int) -> Path:
    return Path(settings.data_dir) / "artifacts" / f"run-{run_id}"


def save_artifact(directory: Path, learn, adapter, task: str, extra: dict[str, Any] | None = None) -> Path:
    """Write the learner's weights and what it takes to predict with them; returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "task": str(task),  # a plain str: weights_only loading refuses enum classes
        "classes": list(adapter.classes),
        "multilabel": bool(adapter.multilabel),  # a sigmoid per class rather than a softmax
        "recipe": adapter.recipe.model_dump(),
        "preprocess": adapter.state(learn),
        "state_dict": {k: v.detach().cpu().clone() for k, v in learn.model.state_dict().items()},
        "extra": extra or {},
    }
    target = directory / FILENAME
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_artifact(path: Path | str) -> dict[str, Any]:
    """The artifact's contents, loaded without executing any pickled code."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} artifact")
    return payload


class LoadedModel:
    """A trained model read back from its artifact, ready to predict sample rows."""

    def __init__(self, payload: dict[str, Any]) -> None:
        from app.training.adapters import adapter_for
        from app.training.environment import resolve_environment
        from app.training.recipe import Recipe

        self.payload = payload
        self.task: str = payload["task"]
        self.classes: list[str] = list(payload["classes"])
        self.recipe = Recipe.model_validate(payload["recipe"])
        pre = payload["preprocess"]
        self.adapter = adapter_for(
            self.task,
            self.recipe,
            resolve_environment(self.recipe),
            self.classes,
            pre.get("cat_names", ()),
            pre.get("cont_names", ()),
            bool(payload.get("multilabel", False)),
        )
        self._learn = None

    @classmethod
    def from_path(cls, path: Path | str) -> LoadedModel:
        return cls(load_artifact(path))

    def predict_probs(self, items: pd.DataFrame) -> np.ndarray:
        """Probabilities over `classes` for rows shaped like TrainingData.items."""
        from app.training.learners import predict_probs, quiet

        if self._learn is None:
            learn = quiet(self.adapter.inference_learner(self.payload["preprocess"], items))
            learn.model.load_state_dict(self.payload["state_dict"])
            self._learn = learn
        return predict_probs(self.adapter, self._learn, items)
