"""The scores of a run without training dynamics: clean log-odds under the estimated noise, and
the out-of-fold logit margin (app.scoring.noise), and the combined score built from them."""

import math

import numpy as np
import pytest

from app.scoring import noise
from app.scoring.combined import combined_score, noise_rank, probability_rank, unit_rank
from app.scoring.flagged import flag_label_errors
from app.scoring.scores import self_confidence


def structured() -> tuple[np.ndarray, np.ndarray]:
    """Classes a, b, c with 20 clean samples each; 8 samples given b look like a (class a's labels
    leak into b, never c's). Then two samples given b, alike for p[y] and the margin: row 68 looks
    like a, row 69 like c."""
    clean = [[0.9, 0.05, 0.05]] * 20 + [[0.05, 0.9, 0.05]] * 20 + [[0.05, 0.05, 0.9]] * 20
    flips = [[0.92, 0.05, 0.03]] * 8
    pair = [[0.6, 0.35, 0.05], [0.05, 0.35, 0.6]]
    P = np.array(clean + flips + pair)
    y = np.array([0] * 20 + [1] * 20 + [2] * 20 + [1] * 8 + [1, 1])
    return P, y


def test_the_estimated_transition_follows_the_counted_pairs():
    P, y = structured()
    T, strength = noise.noise_transition(P, y)
    # T[i, j]: given i when the true class is j. Columns are distributions over the given label.
    assert T.sum(axis=0).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert T[1, 0] > 5 * T[1, 2]  # a's samples end up in b far more often than c's do
    assert strength < 1.0  # one concentrated row: little shrinkage towards "any other class alike"


def test_structured_noise_makes_the_sample_that_looks_like_the_leaking_class_more_suspicious():
    P, y = structured()
    # The probability rank cannot tell rows 68 and 69 apart: same p[y], same margin.
    assert probability_rank(P, y)[68] == probability_rank(P, y)[69]
    assert noise.logit_margin(P, y)[68] == pytest.approx(noise.logit_margin(P, y)[69])
    odds = noise.clean_log_odds(P, y)
    assert odds[68] < odds[69]
    got = combined_score(P, y)
    assert got[68] < got[69]


def test_the_strength_is_large_for_uniform_counts_and_small_for_concentrated_ones():
    uniform = np.full((4, 4), 6.0)
    np.fill_diagonal(uniform, 0.0)
    assert noise.dirichlet_strength(uniform) == noise.STRENGTHS[-1]
    concentrated = np.zeros((4, 4))
    for i in range(4):
        concentrated[i, (i + 1) % 4] = 18.0
    assert noise.dirichlet_strength(concentrated) == noise.STRENGTHS[0]
    assert noise.dirichlet_strength(np.zeros((3, 3))) == noise.STRENGTHS[0]  # no counts: any A, the first


def test_with_uniform_noise_the_order_within_a_class_is_the_self_confidence_order():
    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.ones(4) * 0.7, size=200)
    y = rng.integers(0, 4, size=200)
    T = np.full((4, 4), 0.1 / 3)
    np.fill_diagonal(T, 0.9)
    odds = noise.clean_log_odds(P, y, T)
    sc = self_confidence(P, y)
    for c in range(4):
        rows = np.flatnonzero(y == c)
        assert np.argsort(odds[rows], kind="stable").tolist() == np.argsort(sc[rows], kind="stable").tolist()
    # With one rate for every class it is the log-odds of p[y] itself, shifted.
    assert odds == pytest.approx(np.log(sc / (1 - sc)) + math.log(0.9 / (0.1 / 3)))


def test_the_logit_margin_is_the_margin_of_the_logits_behind_a_softmax():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 4.0]])
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([0, 0, -1])
    got = noise.logit_margin(P, y)
    assert got[:2].tolist() == pytest.approx([2.0 - 0.5, 0.0 - 3.0])
    assert math.isnan(got[2]) and math.isnan(noise.clean_log_odds(P, y)[2])


def test_without_aum_the_combined_score_is_the_mean_of_the_two_ranks():
    P, y = structured()
    y = y.copy()
    y[5] = -1
    expected = (unit_rank(noise.clean_log_odds(P, y)) + unit_rank(noise.logit_margin(P, y))) / 2
    assert np.allclose(combined_score(P, y), expected, equal_nan=True)
    assert np.allclose(noise_rank(P, y), expected, equal_nan=True)
    # No sample with an AUM is the same as no AUM at all.
    assert np.allclose(combined_score(P, y, np.full(len(y), np.nan)), expected, equal_nan=True)
    assert math.isnan(combined_score(P, y)[5])


def test_without_aum_the_flagged_set_is_chosen_by_the_noise_rank():
    # Four classes; a fifth of the labels moved to the next class; clean samples often close to the previous one.
    rng = np.random.default_rng(0)
    n, k = 400, 4
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 2.5
    ambiguous = np.flatnonzero(rng.random(n) < 0.3)
    logits[ambiguous, (true[ambiguous] - 1) % k] += 2.0
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = true.copy()
    flip = rng.random(n) < 0.2
    y[flip] = (true[flip] + 1) % k
    got = flag_label_errors(P, y)
    assert got.mask.tolist() == flag_label_errors(P, y, score=noise_rank(P, y)).mask.tolist()
    assert got.mask.tolist() != flag_label_errors(P, y, score=probability_rank(P, y)).mask.tolist()


def test_a_class_nobody_is_counted_as_keeps_finite_scores():
    # Class c is given once and its only sample looks like a: its column of the joint is empty.
    P = np.array([[0.9, 0.05, 0.05]] * 5 + [[0.05, 0.9, 0.05]] * 5 + [[0.8, 0.1, 0.1]])
    y = np.array([0] * 5 + [1] * 5 + [2])
    T, _ = noise.noise_transition(P, y)
    assert np.isfinite(T).all()
    got = combined_score(P, y)
    assert np.isfinite(got).all()
    assert int(np.argmin(got)) == 10


def test_exact_zeros_and_two_classes():
    P = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.3], [0.2, 0.8], [1.0, 0.0]])
    y = np.array([0, 1, 0, 1, 1])
    got = combined_score(P, y)
    assert np.isfinite(got).all()
    assert int(np.argmin(got)) == 4  # given 1 with p[1] = 0
