"""The named steps of an import, one at a time (the API tests run them together)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from app.config import Settings
from app.datasets import importers
from app.datasets.importers import archives, pipeline, validation, writing


def test_the_package_exports_what_other_modules_import():
    for name in importers.__all__:
        assert getattr(importers, name) is not None
    assert importers.import_file is pipeline.import_file
    assert importers.INTEGER_TEXT == writing.INTEGER_TEXT


@pytest.mark.parametrize(
    ("path", "label", "split"),
    [
        ("cat/1.png", "cat", ""),
        ("valid/cat/1.png", "cat", "valid"),
        ("unlabelled/1.png", "", "unlabelled"),
    ],
)
def test_a_folder_layout_names_label_and_split(path, label, split):
    errors = validation.Errors(10)
    assert archives._folder_label(path.split("/"), 0, errors) == (label, split)
    assert not errors


@pytest.mark.parametrize(
    ("path", "field", "label", "split"),
    [("unlabelled/cat/1.png", "split", "", "unlabelled"), ("1.png", "path", "", ""), ("a/b/c/1.png", "path", "", "")],
)
def test_a_folder_layout_refuses_what_it_cannot_read(path, field, label, split):
    errors = validation.Errors(10)
    assert archives._folder_label(path.split("/"), 4, errors) == (label, split)
    with pytest.raises(validation.ImportFailed) as failed:
        errors.raise_if_any("f.zip")
    assert [(e["row"], e["field"]) for e in failed.value.errors] == [(5, field)]


def test_the_row_count_must_be_within_the_limit():
    settings = Settings(max_import_rows=2, _env_file=None)
    assert pipeline._row_count_problem(pa.table({"a": []}), True, settings) == "the file holds no images"
    assert pipeline._row_count_problem(pa.table({"a": []}), False, settings) == "the file holds no rows"
    assert pipeline._row_count_problem(pa.table({"a": [1, 2]}), False, settings) is None
    assert "CURATE_MAX_IMPORT_ROWS" in pipeline._row_count_problem(pa.table({"a": [1, 2, 3]}), False, settings)


def test_only_rows_that_change_a_sample_are_updates():
    prepared = validation.Prepared(
        n=4,
        ids=pa.array(["a", "b", "c", "new"]),
        labels=pa.array(["x", "y", "", "x"]),
        splits=pa.array(["train", "valid", "unlabelled", "train"]),
        existing_pos=np.array([0, 1, 2]),
        existing_ids=np.array([10, 11, 12]),
        existing_labels=["x", "y", "x"],
        existing_splits=["train", "train", "train"],
        existing_versions=[1, 2, 3],
    )
    changed = writing._changed_rows(prepared)
    assert [(c.sample_id, c.new_label, c.new_split, c.version) for c in changed] == [
        (11, "y", "valid", 2),
        (12, None, "unlabelled", 3),
    ]
    assert writing._changed_rows(validation.Prepared(n=1, ids=None, labels=None, splits=None, existing_pos=np.empty(0))) == []
