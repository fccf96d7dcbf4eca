"""The final model's embedding of every sample: the input of its last linear layer.

That layer maps the penultimate representation to the class logits, so its input is what
the classifier has learnt to separate the classes by (for images the pooled body through the
head's hidden layer, for text the pooled encoder, for tabular data the last hidden layer).
One forward pass over the samples with a hook on that input; app.runs.embeddings stores it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from app.training.adapters import TaskAdapter


def last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linear:
        raise ValueError("the model has no linear layer to take an embedding from")
    return linear[-1]


def predict_embeddings(adapter: TaskAdapter, learn, items: pd.DataFrame) -> np.ndarray:
    """(len(items), d) float32: the final model's penultimate features for each item, in order."""
    if len(items) == 0:
        return np.zeros((0, last_linear(learn.model).in_features), dtype=np.float32)
    chunks: list[np.ndarray] = []

    def keep(_module, inputs, _output) -> None:
        chunks.append(inputs[0].detach().float().cpu().numpy())

    handle = last_linear(learn.model).register_forward_hook(keep)
    # A model compiled in place (recipe.torch_compile) runs its compiled graph, which does not
    # call hooks added after compiling: this pass runs the plain forward.
    compiled = getattr(learn.model, "_compiled_call_impl", None)
    learn.model._compiled_call_impl = None
    try:
        dl = adapter.test_dl(learn, items, max(adapter.recipe.batch_size * 2, 64))
        learn.get_preds(dl=dl)
    finally:
        handle.remove()
        learn.model._compiled_call_impl = compiled
    X = np.concatenate(chunks).astype(np.float32, copy=False)
    if len(X) != len(items):
        raise RuntimeError(f"the embedding pass gave {len(X)} rows for {len(items)} samples")
    return X
