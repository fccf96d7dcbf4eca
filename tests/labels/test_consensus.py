"""The consensus rule on hand-built cases (app.labels.consensus, docs/annotations.md)."""

from __future__ import annotations

import numpy as np
import pytest

from app.labels.consensus import TIE_MARGIN, crowdlab, decide_with, majority_vote


def fit(answers: list[tuple[int, int, int]], n_samples: int, n_annotators: int, k: int, probs=None):
    s, a, label = (np.array(x) for x in zip(*answers))
    return crowdlab(s, a, label, n_samples, n_annotators, k, None if probs is None else np.array(probs, dtype=float))


def test_unanimous_answers_decide_with_full_agreement():
    c = fit([(0, 0, 1), (0, 1, 1), (0, 2, 1)], 1, 3, 3)
    assert c.label.tolist() == [1] and not c.tie[0] and c.agreement[0] == 1.0 and c.count[0] == 3
    assert c.quality[0] > 0.9


def test_two_against_one_follows_the_majority_without_a_model():
    c = fit([(0, 0, 2), (0, 1, 2), (0, 2, 0)], 1, 3, 3)
    assert c.label.tolist() == [2] and not c.tie[0]
    assert c.agreement[0] == pytest.approx(2 / 3)


def test_one_against_one_is_a_tie_without_a_model_and_the_model_breaks_it():
    answers = [(0, 0, 0), (0, 1, 1)]
    assert fit(answers, 1, 2, 3).tie.tolist() == [True]
    with_model = fit(answers, 1, 2, 3, probs=[[0.1, 0.85, 0.05]])
    assert with_model.label.tolist() == [1] and not with_model.tie[0]
    # A model torn between the two is no help: still a tie, sent to a reviewer.
    torn = fit(answers, 1, 2, 3, probs=[[0.45, 0.45, 0.10]])
    assert torn.tie.tolist() == [True]
    assert np.sort(torn.quality)[0] < 0.5 + TIE_MARGIN


def test_a_reliable_annotator_outweighs_two_unreliable_ones_and_ranks_first():
    """Annotator 0 always agrees with the model; 1 and 2 answer at random on 40 samples. On the
    last sample 1 and 2 agree against 0 and the model is silent (uniform): the weights, not the
    count, decide, and the estimated accuracies rank 0 first."""
    rng = np.random.default_rng(0)
    k, n = 4, 41
    truth = rng.integers(0, k, n)
    probs = np.full((n, k), 0.1)
    probs[np.arange(n), truth] = 0.7
    probs[-1] = 0.25
    answers = []
    for i in range(n - 1):
        answers += [(i, 0, truth[i]), (i, 1, int(rng.integers(0, k))), (i, 2, int(rng.integers(0, k)))]
    answers += [(n - 1, 0, 0), (n - 1, 1, 3), (n - 1, 2, 3)]
    c = fit(answers, n, 3, k, probs)
    assert c.accuracy[0] > 0.9 and c.accuracy[0] > max(c.accuracy[1], c.accuracy[2]) + 0.3
    assert c.label[-1] == 0, "the reliable annotator's answer wins against two unreliable ones"
    mv, _ = majority_vote(np.array([a[0] for a in answers]), np.array([a[2] for a in answers]), n, k)
    assert mv[-1] == 3, "where a plain vote follows the count"
    assert (c.label[:-1] == truth[:-1]).all()


def test_majority_vote_reports_ties_unless_a_model_breaks_them():
    s, label = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 2, 2, 0])
    mv, tie = majority_vote(s, label, 2, 3)
    assert mv.tolist() == [0, 2] and tie.tolist() == [True, False]
    mv, tie = majority_vote(s, label, 2, 3, probs=np.array([[0.2, 0.7, 0.1], [0.3, 0.3, 0.4]]))
    assert mv.tolist() == [1, 2] and not tie.any()


def test_deciding_with_a_fits_estimates_reproduces_the_fit_and_weighs_new_samples():
    """decide_with (no refit) on the fit's own answers gives the fit's labels, qualities and
    ties; on a new sample it follows the annotator the fit found reliable."""
    rng = np.random.default_rng(3)
    n, k = 60, 4
    truth = rng.integers(0, k, n)
    answers = []
    for i in range(n):
        answers.append((i, 0, int(truth[i])))  # reliable
        for a in (1, 2):
            answers.append((i, a, int(truth[i]) if rng.random() < 0.5 else int(rng.integers(0, k))))
    probs = np.full((n, k), 0.1)
    probs[np.arange(n), truth] = 0.7
    c = fit(answers, n, 3, k, probs)
    est = c.estimates([10, 11, 12], len(answers))
    s, a, label = (np.array(x) for x in zip(*answers))
    d = decide_with(est, s, [[10, 11, 12][i] for i in a], label, n, k, probs)
    assert d.label.tolist() == c.label.tolist() and d.tie.tolist() == c.tie.tolist()
    np.testing.assert_allclose(d.quality, c.quality)
    np.testing.assert_allclose(d.agreement, c.agreement)
    # A new sample where the reliable annotator stands alone against the two others.
    new = decide_with(est, np.array([0, 0, 0]), [10, 11, 12], np.array([3, 1, 2]), 1, k,
                      np.array([[0.25, 0.25, 0.25, 0.25]]))
    assert new.label.tolist() == [3] and new.count.tolist() == [3]
    # An annotator the fit never saw counts at the prior accuracy: one answer decides alone.
    alone = decide_with(est, np.array([0]), [99], np.array([2]), 1, k)
    assert alone.label.tolist() == [2] and alone.agreement.tolist() == [1.0]
