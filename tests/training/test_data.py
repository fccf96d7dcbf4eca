import numpy as np
import pandas as pd
import pytest

from app.models import Sample
from app.training.data import infer_feature_types, load_training_data
from tests.training.factories import image_dataset, tabular_dataset


def test_small_integer_codes_are_categorical_everything_else_continuous():
    df = pd.DataFrame(
        {
            "flag": [0.0, 1.0, None, 1.0],
            "code": [1.0, 5.0, 9.0, 3.0],
            "price": [1.5, 2.0, 3.25, 4.0],
            "count": [float(i) for i in range(0, 40, 10)],
        }
    )
    cats, conts = infer_feature_types(df)
    assert (cats, conts) == (["flag", "code", "count"], ["price"])
    many = pd.DataFrame({"id": np.arange(11, dtype=float), "empty": [np.nan] * 11})
    assert infer_feature_types(many) == ([], ["id", "empty"])


def test_current_labels_and_the_label_version_are_read(engine, settings, db):
    ds, samples = tabular_dataset(db, counts={"train": 6, "valid": 3, "unlabelled": 2})
    samples[0].label = "c"  # relabelled since import
    db.add(Sample(dataset_id=ds.id, split="train", label=None, features={"x": 1.0, "y": 2.0}))
    db.commit()
    data = load_training_data(engine, ds.id, settings)
    assert data.label_version == 7 and data.classes == ["a", "b", "c"] and data.task == "tabular"
    first = data.items.iloc[0]
    assert (first["label"], first["y"]) == ("c", 2)
    # Unlabelled samples are scored but never trained on, whatever their split.
    assert len(data.train) == 6 and len(data.items) == 12
    assert (data.items[data.items["label"].isna()]["y"] == -1).all()
    assert {"f:x", "f:y", "f:code"} <= set(data.items.columns)
    assert data.cat_names == ["f:code"]


def test_labels_outside_the_classes_are_refused(engine, settings, db):
    ds, samples = tabular_dataset(db, counts={"train": 6})
    samples[1].label = "zebra"
    db.commit()
    with pytest.raises(ValueError, match="outside its classes"):
        load_training_data(engine, ds.id, settings)


def test_images_must_be_in_the_blob_store(engine, settings, db):
    ds, samples = image_dataset(db, settings, counts={"train": 6})
    load_training_data(engine, ds.id, settings)
    samples[2].image_blob = "0" * 64
    db.commit()
    with pytest.raises(ValueError, match="missing from the blob store"):
        load_training_data(engine, ds.id, settings)


def test_an_unknown_dataset_is_a_clear_error(engine, settings):
    with pytest.raises(ValueError, match="dataset 424242 not found"):
        load_training_data(engine, 424242, settings)
