"""Multi-label metrics and thresholds on hand-built cases, checked against scikit-learn and by hand."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, hamming_loss

from app.evaluation.multilabel import choose_thresholds, multilabel_metrics, predict_sets, swap_counts

CLASSES = ["a", "b", "c"]
Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1], [0, 1, 1]])
P = np.array([
    [0.9, 0.2, 0.1],  # right
    [0.8, 0.3, 0.2],  # misses b
    [0.6, 0.7, 0.1],  # extra a
    [0.1, 0.1, 0.1],  # right: the empty set
    [0.4, 0.6, 0.9],  # misses a, extra b: b in place of a
    [0.2, 0.8, 0.7],  # right
])
HALF = np.full(3, 0.5)


def test_metrics_match_scikit_learn_and_hand_counts():
    m = multilabel_metrics(Y, P, HALF, CLASSES)
    pred = (P >= 0.5).astype(int)
    assert m["multilabel"] is True
    assert m["exact_match"] == m["accuracy"] == pytest.approx(3 / 6)
    assert m["hamming_loss"] == pytest.approx(hamming_loss(Y, pred)) == pytest.approx(4 / 18)
    for average in ("micro", "macro", "weighted"):
        assert m[f"{average}_f1"] == pytest.approx(f1_score(Y, pred, average=average, zero_division=0))
    assert m["samples_f1"] == pytest.approx(f1_score(Y, pred, average="samples", zero_division=1))
    a = m["per_class"]["a"]
    # a: predicted on rows 0, 1, 2; true on 0, 1, 4.
    assert (a["precision"], a["recall"], a["support"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert a["average_precision"] == pytest.approx(average_precision_score(Y[:, 0], P[:, 0]))
    assert a["threshold"] == 0.5
    # Swaps: row 4 put b in place of a; row 1 missed b with nothing extra, row 2 added a with nothing missed.
    assert m["swaps"]["labels"] == CLASSES and m["swaps"]["matrix"] == [[0, 0, 0], [1, 0, 0], [0, 0, 0]]
    # Plain counts per class: a missed on row 4, b on row 1; a extra on row 2, b on row 4.
    assert m["swaps"]["missed"] == [1, 1, 0] and m["swaps"]["extra"] == [1, 1, 0]


def test_swap_counts_count_each_false_positive_against_each_false_negative_of_a_sample():
    truth = np.array([[1, 1, 0], [1, 0, 0]])
    pred = np.array([[0, 0, 1], [0, 1, 1]])
    assert swap_counts(truth, pred).tolist() == [[0, 0, 0], [1, 0, 0], [2, 1, 0]]


def test_a_class_without_positives_has_no_average_precision_and_an_empty_split_no_metrics():
    m = multilabel_metrics(np.array([[1, 0], [1, 0]]), np.array([[0.9, 0.1], [0.6, 0.7]]), np.full(2, 0.5), ["x", "y"])
    assert m["per_class"]["y"]["average_precision"] is None and m["per_class"]["y"]["support"] == 0
    assert multilabel_metrics(np.zeros((0, 2)), np.zeros((0, 2)), np.full(2, 0.5), ["x", "y"]) is None


def test_thresholds_maximise_each_classs_f1_on_valid_and_fall_back_to_a_half():
    Yv = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    Pv = np.array([[0.30, 0.9], [0.25, 0.8], [0.20, 0.1], [0.05, 0.2]])
    t = choose_thresholds(Yv, Pv)
    # Class 0: 0.25 keeps both positives and no negative (F1 1); the highest such threshold wins.
    assert t[0] == pytest.approx(0.25)
    # Class 1 has no positive on valid: 0.5.
    assert t[1] == 0.5
    assert predict_sets(Pv, t).tolist() == [[1, 1], [1, 1], [0, 0], [0, 0]]
    f1 = f1_score(Yv[:, 0], (Pv[:, 0] >= t[0]).astype(int))
    for other in np.linspace(0, 1, 41):
        assert f1 >= f1_score(Yv[:, 0], (Pv[:, 0] >= other).astype(int), zero_division=0)
    assert choose_thresholds(np.zeros((0, 2)), np.zeros((0, 2))).tolist() == [0.5, 0.5]
