import pytest

from app.evaluation.metrics import classification_metrics, summary

CLASSES = ["cat", "dog", "fox", "owl"]


def test_metrics_match_a_hand_computed_table():
    # true:  cat cat cat dog dog fox fox fox fox   (owl never appears)
    # pred:  cat cat dog dog cat fox fox cat fox
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 0, 2, 2, 0, 2]
    m = classification_metrics(y_true, y_pred, CLASSES)
    assert m["accuracy"] == pytest.approx(6 / 9)
    cat, dog, fox, owl = (m["per_class"][c] for c in CLASSES)
    # cat: predicted 4 times, 2 right; 3 true cats
    assert (cat["precision"], cat["recall"], cat["support"]) == (pytest.approx(2 / 4), pytest.approx(2 / 3), 3)
    assert cat["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert (dog["precision"], dog["recall"], dog["f1"], dog["support"]) == (0.5, 0.5, 0.5, 2)
    assert (fox["precision"], fox["recall"], fox["support"]) == (1.0, pytest.approx(0.75), 4)
    fox_f1 = 2 * 0.75 / 1.75
    assert fox["f1"] == pytest.approx(fox_f1)
    assert owl == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    cat_f1 = 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3)
    assert m["macro_f1"] == pytest.approx((cat_f1 + 0.5 + fox_f1 + 0.0) / 4)
    assert m["weighted_f1"] == pytest.approx((3 * cat_f1 + 2 * 0.5 + 4 * fox_f1) / 9)
    assert m["confusion"] == {
        "labels": CLASSES,
        "matrix": [[2, 1, 0, 0], [1, 1, 0, 0], [1, 0, 3, 0], [0, 0, 0, 0]],
    }


def test_values_are_plain_json_types():
    m = classification_metrics([0, 1], [0, 0], CLASSES[:2])
    assert type(m["accuracy"]) is float
    assert type(m["per_class"]["cat"]["support"]) is int
    assert all(type(v) is int for row in m["confusion"]["matrix"] for v in row)


def test_an_empty_split_has_no_metrics():
    assert classification_metrics([], [], CLASSES) is None


def test_lengths_must_match():
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0], CLASSES)


def test_summary_reads_accuracy_and_macro_f1_of_both_splits():
    m = classification_metrics([0, 1], [0, 1], CLASSES[:2])
    assert summary({"valid": m, "test": None}) == {
        "valid_accuracy": 1.0,
        "valid_macro_f1": 1.0,
        "test_accuracy": None,
        "test_macro_f1": None,
    }
    assert summary(None)["valid_accuracy"] is None
