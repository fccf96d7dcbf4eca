import math

import numpy as np
import pytest

from app.scoring.combined import combined_score, probability_rank, unit_rank
from app.scoring.scores import normalized_margin, self_confidence

# Given labels a, a, b, b, unlabelled; self-confidences 0.9, 0.2, 0.6, 0.4 and normalized margins
# 0.8, -0.6, 0.2, -0.2: with two classes both give the same ranks.
P = np.array(
    [
        [0.9, 0.1],
        [0.2, 0.8],
        [0.4, 0.6],
        [0.6, 0.4],
        [0.5, 0.5],
    ]
)
Y = np.array([0, 0, 1, 1, -1])


def test_unit_rank_scales_ranks_into_the_unit_interval_and_keeps_nan():
    got = unit_rank(np.array([3.0, np.nan, -1.0, 3.0, 10.0]))
    # ranks among the four finite values: -1 -> 1, 3 and 3 -> 2.5, 10 -> 4; minus 1/2, over 4
    assert got[[0, 2, 3, 4]].tolist() == pytest.approx([0.5, 0.125, 0.5, 0.875])
    assert math.isnan(got[1])
    assert np.isnan(unit_rank(np.array([np.nan, np.inf]))).all()


def test_without_aum_the_order_is_the_probability_order():
    got = combined_score(P, Y)
    assert self_confidence(P, Y)[:4].tolist() == pytest.approx([0.9, 0.2, 0.6, 0.4])
    assert normalized_margin(P, Y)[:4].tolist() == pytest.approx([0.8, -0.6, 0.2, -0.2])
    assert got[:4].tolist() == pytest.approx([0.875, 0.125, 0.625, 0.375])
    assert np.argsort(got[:4]).tolist() == [1, 3, 2, 0]
    assert math.isnan(got[4])


def test_aum_that_disagrees_moves_a_sample_up_or_down_the_order():
    # AUM ranks: sample 0 lowest (0.125), 2 next (0.375), 1 (0.625), 3 highest (0.875).
    aum = np.array([-3.0, 1.0, -1.0, 4.0, 7.0])
    got = combined_score(P, Y, aum)
    assert got[:4].tolist() == pytest.approx([(0.875 + 0.125) / 2, (0.125 + 0.625) / 2, (0.625 + 0.375) / 2, (0.375 + 0.875) / 2])
    assert np.argsort(got[:4]).tolist() == [1, 0, 2, 3]
    # The unlabelled sample's AUM neither gets it a score nor shifts the others' ranks.
    assert math.isnan(got[4])


def test_both_signals_low_puts_a_sample_first():
    aum = np.array([2.0, -5.0, 1.0, 0.0, np.nan])
    got = combined_score(P, Y, aum)
    assert int(np.nanargmin(got)) == 1


def test_samples_without_aum_fall_back_to_the_probability_rank():
    aum = np.array([np.nan, 1.0, np.nan, -1.0, np.nan])
    got = combined_score(P, Y, aum)
    prob = combined_score(P, Y)
    assert got[0] == pytest.approx(prob[0]) and got[2] == pytest.approx(prob[2])
    # Samples 1 and 3 have AUM ranks 0.75 and 0.25 among the two that have one.
    assert got[1] == pytest.approx((0.125 + 0.75) / 2)
    assert got[3] == pytest.approx((0.375 + 0.25) / 2)
    all_nan = combined_score(P, Y, np.full(5, np.nan))
    assert np.allclose(all_nan[:4], prob[:4])


def test_aum_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="aum"):
        combined_score(P, Y, np.zeros(3))


def test_the_probability_rank_is_the_mean_of_the_self_confidence_and_margin_ranks():
    # Three classes, all given a. Row 0 is torn between a and b (margin 0.01) but gives a 0.45;
    # row 1 prefers a by 0.10 but gives it only 0.40: the two scores disagree on which is worse.
    P3 = np.array([[0.45, 0.44, 0.11], [0.40, 0.30, 0.30], [0.9, 0.05, 0.05]])
    y3 = np.array([0, 0, 0])
    assert unit_rank(self_confidence(P3, y3)).tolist() == pytest.approx([0.5, 1 / 6, 5 / 6])
    assert unit_rank(normalized_margin(P3, y3)).tolist() == pytest.approx([1 / 6, 0.5, 5 / 6])
    got = combined_score(P3, y3)
    assert got.tolist() == pytest.approx([1 / 3, 1 / 3, 5 / 6])
    assert probability_rank(P3, y3).tolist() == pytest.approx(got.tolist())
    # With AUM (ranks 1/6, 5/6, 1/2): half the probability rank, half the AUM rank.
    with_aum = combined_score(P3, y3, np.array([-2.0, 3.0, 1.0]))
    assert with_aum.tolist() == pytest.approx([(1 / 3 + 1 / 6) / 2, (1 / 3 + 5 / 6) / 2, (5 / 6 + 0.5) / 2])
