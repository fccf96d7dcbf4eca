import math

import numpy as np
import pytest

from app.scoring.priority import review_priority

# Three classes. Given labels and out-of-fold probabilities:
#   0: a, p = (0.95, 0.03, 0.02)  clean and sure
#   1: a, p = (0.10, 0.85, 0.05)  flagged, self-confidence 0.10
#   2: b, p = (0.70, 0.02, 0.28)  flagged, self-confidence 0.02
#   3: c, p = (0.30, 0.30, 0.40)  unflagged
#   4: c, p = (0.20, 0.10, 0.70)  unflagged
#   5: unlabelled
P = np.array(
    [
        [0.95, 0.03, 0.02],
        [0.10, 0.85, 0.05],
        [0.70, 0.02, 0.28],
        [0.30, 0.30, 0.40],
        [0.20, 0.10, 0.70],
        [0.34, 0.33, 0.33],
    ]
)
Y = np.array([0, 0, 1, 2, 2, -1])
FLAGGED = np.array([False, True, True, False, False, False])


def order_of(priority: np.ndarray) -> list[int]:
    ok = ~np.isnan(priority)
    return [int(i) for i in np.flatnonzero(ok)[np.argsort(priority[ok])]]


def test_flagged_samples_come_first_lowest_self_confidence_first_then_the_rest_by_combined():
    # The combined score would put sample 1 before sample 2, and sample 4 before 0 and 3.
    combined = np.array([0.9, 0.05, 0.10, 0.7, 0.3, np.nan])
    got = review_priority(P, Y, FLAGGED, combined)
    assert order_of(got) == [2, 1, 4, 3, 0]
    # Positions scaled to (0, 1): (rank - 1/2) / 5 labelled samples.
    assert got[[2, 1, 4, 3, 0]].tolist() == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert math.isnan(got[5])


def test_without_a_flagged_set_the_order_is_the_combined_order():
    combined = np.array([0.9, 0.05, 0.10, 0.7, 0.3, np.nan])
    got = review_priority(P, Y, np.zeros(6, dtype=bool), combined)
    assert order_of(got) == [1, 2, 4, 3, 0]


def test_a_labelled_sample_without_a_combined_score_goes_last_and_ties_keep_the_input_order():
    combined = np.array([np.nan, 0.5, 0.5, 0.5, np.nan, np.nan])
    got = review_priority(P, Y, np.zeros(6, dtype=bool), combined)
    assert order_of(got) == [1, 2, 3, 0, 4]


def test_bad_shapes_and_a_flagged_unlabelled_sample_are_refused():
    combined = np.zeros(6)
    with pytest.raises(ValueError, match="one value per row"):
        review_priority(P, Y, FLAGGED[:5], combined)
    with pytest.raises(ValueError, match="unlabelled"):
        review_priority(P, Y, np.array([False] * 5 + [True]), combined)


def test_nothing_labelled_gives_all_nan():
    got = review_priority(P[:2], np.array([-1, -1]), np.zeros(2, dtype=bool), np.full(2, np.nan))
    assert np.isnan(got).all()
