import math

import numpy as np
import pytest

from app.scoring import scores

CLASSES = ["a", "b", "c"]
# A hand-made probability table; y: given labels (-1: unlabelled).
P = np.array(
    [
        [0.7, 0.2, 0.1],  # labelled a, predicted a
        [0.1, 0.6, 0.3],  # labelled a, predicted b: suspicious
        [0.2, 0.3, 0.5],  # unlabelled
        [0.0, 1.0, 0.0],  # labelled a with p[a] = 0: loss is clipped
        [0.4, 0.4, 0.2],  # tie between a and b, labelled c
    ]
)
Y = np.array([0, 0, -1, 0, 2])


def test_loss_is_minus_log_p_of_the_given_label_clipped():
    got = scores.loss(P, Y)
    assert got[0] == pytest.approx(-math.log(0.7))
    assert got[1] == pytest.approx(-math.log(0.1))
    assert math.isnan(got[2])
    assert got[3] == pytest.approx(-math.log(1e-12))
    assert got[4] == pytest.approx(-math.log(0.2))


def test_self_confidence_is_p_of_the_given_label():
    got = scores.self_confidence(P, Y)
    assert got[[0, 1, 3, 4]].tolist() == pytest.approx([0.7, 0.1, 0.0, 0.2])
    assert math.isnan(got[2])


def test_normalized_margin_is_p_y_minus_the_best_other_class():
    got = scores.normalized_margin(P, Y)
    assert got[0] == pytest.approx(0.7 - 0.2)
    assert got[1] == pytest.approx(0.1 - 0.6)
    assert math.isnan(got[2])
    assert got[3] == pytest.approx(0.0 - 1.0)
    assert got[4] == pytest.approx(0.2 - 0.4)


def test_confusion_margin_and_pair_need_no_label():
    margin, a, b = scores.confusion_margin(P)
    assert margin.tolist() == pytest.approx([0.5, 0.3, 0.2, 1.0, 0.0])
    assert a.tolist() == [0, 1, 2, 1, 0]
    # Ties keep the lower class index first.
    assert b.tolist() == [1, 2, 1, 0, 1]


def test_entropy_is_minus_sum_p_log_p_with_zero_terms_dropped():
    got = scores.entropy(P)
    for row, value in zip(P, got):
        expected = -sum(p * math.log(p) for p in row if p > 0)
        assert value == pytest.approx(expected)
    assert got[3] == pytest.approx(0.0)


def test_top_k_probabilities_most_probable_first():
    P6 = np.array([[0.05, 0.3, 0.1, 0.2, 0.15, 0.2]])
    idx, probs = scores.top_k(P6, 5)
    assert idx.tolist() == [[1, 3, 5, 4, 2]]
    assert probs[0].tolist() == pytest.approx([0.3, 0.2, 0.2, 0.15, 0.1])


def test_rows_hold_prediction_columns_and_none_for_unlabelled_label_scores():
    rows = scores.score(P, Y, CLASSES).rows()
    assert len(rows) == 5
    first = rows[0]
    assert first["given_label"] == "a" and first["label"] == "a"
    assert first["probs"] == pytest.approx({"a": 0.7, "b": 0.2, "c": 0.1})
    assert list(first["probs"]) == ["a", "b", "c"]
    assert first["loss"] == pytest.approx(-math.log(0.7))
    assert (first["confusion_a"], first["confusion_b"]) == ("a", "b")
    unlabelled = rows[2]
    assert unlabelled["given_label"] is None
    assert unlabelled["loss"] is None and unlabelled["self_confidence"] is None and unlabelled["normalized_margin"] is None
    assert unlabelled["label"] == "c"
    assert unlabelled["confusion_margin"] == pytest.approx(0.2)
    assert unlabelled["entropy"] == pytest.approx(-sum(p * math.log(p) for p in P[2]))
    assert all(type(v) is float for r in rows for v in r["probs"].values())


def test_ranking_by_loss_and_by_self_confidence_agree():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4))
    Pr = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 4, size=50)
    by_loss = np.argsort(-scores.loss(Pr, y), kind="stable")
    by_confidence = np.argsort(scores.self_confidence(Pr, y), kind="stable")
    assert by_loss.tolist() == by_confidence.tolist()


@pytest.mark.parametrize(
    "P_, y_, message",
    [
        (np.ones((2, 1)), np.array([0, 0]), "k >= 2"),
        (np.full((2, 3), 1 / 3), np.array([0]), "one label per row"),
        (np.full((2, 3), 1 / 3), np.array([0, 3]), "class indices"),
    ],
)
def test_bad_inputs_are_refused(P_, y_, message):
    with pytest.raises(ValueError, match=message):
        scores.loss(P_, y_)


def test_score_checks_the_class_list():
    with pytest.raises(ValueError, match="3 columns but there are 2 classes"):
        scores.score(P, Y, ["a", "b"])
