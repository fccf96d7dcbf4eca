"""The dataset and export services refuse with the domain errors of app.errors, not HTTP ones."""

from __future__ import annotations

import io

import pytest

from app.datasets import exporters, service
from app.datasets.schemas import DatasetCreate
from app.deps import get_dataset
from app.errors import Conflict, Invalid, NotFound
from tests.builders import make_dataset


def test_a_second_dataset_of_the_same_name_is_a_conflict(db):
    ds = make_dataset(db)
    with pytest.raises(Conflict, match="already exists") as exc:
        service.create_dataset(db, DatasetCreate(name=ds.name, task="tabular"))
    assert exc.value.status_code == 409


def test_an_unknown_dataset_is_not_found(db):
    with pytest.raises(NotFound, match="dataset 123456 not found"):
        get_dataset(db, 123456)


def test_an_export_of_an_unknown_snapshot_is_not_found(db):
    ds = make_dataset(db)
    with pytest.raises(NotFound, match=f"snapshot 123456 not found in dataset {ds.id}"):
        exporters.plan_export(db, ds, snapshot_id=123456)


def test_a_feature_named_like_an_export_column_is_a_conflict(db):
    ds = make_dataset(db, settings={"features": ["x", "predicted"]})
    with pytest.raises(Conflict, match=r"feature names \['predicted'\] clash"):
        exporters.plan_export(db, ds)


@pytest.mark.parametrize(
    ("fmt", "split", "out", "field"),
    [("xml", None, "f", "format"), ("csv", "holdout", None, "split"), ("parquet", None, None, "out")],
)
def test_the_command_lines_export_refuses_what_it_cannot_write(fmt, split, out, field):
    with pytest.raises(Invalid) as exc:
        exporters.export_path("any", fmt, split, None, out, io.BytesIO())
    assert [e["field"] for e in exc.value.errors] == [field]


def test_the_api_answers_a_domain_error_with_its_status_and_detail(client, engineer):
    r = client.get("/api/v1/datasets/123456", headers=engineer.headers)
    assert r.status_code == 404
    assert r.json() == {"detail": "dataset 123456 not found"}
