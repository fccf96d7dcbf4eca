import math

import numpy as np
import pytest

from app.scoring import flagged
from app.scoring.flagged import METHODS, flag_label_errors

CLASSES = ["a", "b", "c"]

# Given a: two clear, two that look like b (r2 less sure than r3), one torn (r4).
# Given b and c: clean, some below their class threshold. r12 is unlabelled and looks like b.
P = np.array(
    [
        [0.9, 0.1, 0.0],  # r0  a
        [0.7, 0.2, 0.1],  # r1  a
        [0.2, 0.7, 0.1],  # r2  a, looks like b but below t_b
        [0.1, 0.85, 0.05],  # r3  a, confidently b
        [0.4, 0.5, 0.1],  # r4  a, torn
        [0.1, 0.8, 0.1],  # r5  b
        [0.0, 0.9, 0.1],  # r6  b
        [0.1, 0.6, 0.3],  # r7  b, below t_b
        [0.05, 0.9, 0.05],  # r8  b
        [0.0, 0.1, 0.9],  # r9  c
        [0.1, 0.1, 0.8],  # r10 c, below t_c
        [0.1, 0.0, 0.9],  # r11 c
        [0.0, 0.95, 0.05],  # r12 unlabelled
    ]
)
Y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, -1])


def test_thresholds_are_the_mean_probability_of_each_class_over_its_given_samples():
    t = flagged.per_class_thresholds(P, Y)
    # (0.9 + 0.7 + 0.2 + 0.1 + 0.4) / 5, (0.8 + 0.9 + 0.6 + 0.9) / 4, (0.9 + 0.8 + 0.9) / 3
    assert t.tolist() == pytest.approx([0.46, 0.8, 2.6 / 3])
    assert flag_label_errors(P, Y).thresholds.tolist() == pytest.approx(t.tolist())


def test_confident_joint_counts_each_sample_under_its_most_probable_class_above_threshold():
    C, conf = flagged.confident_joint(P, Y)
    # r2, r4 (given a), r7 (b) and r10 (c) have no class at or above its threshold;
    # r3 is counted as b; r5 sits exactly on t_b and counts.
    assert C.tolist() == [[2, 1, 0], [0, 3, 0], [0, 0, 2]]
    assert conf.tolist() == [0, 0, -1, 1, -1, 1, 1, -1, 1, 2, -1, 2, -1]


def test_calibration_rescales_rows_to_the_given_counts_and_the_whole_to_n():
    result = flag_label_errors(P, Y)
    C = result.confident_joint
    calibrated = flagged.calibrate_joint(C, np.array([5, 4, 3]))
    assert calibrated.sum(axis=1).tolist() == pytest.approx([5, 4, 3])
    assert calibrated.sum() == pytest.approx(12)
    assert calibrated[0].tolist() == pytest.approx([10 / 3, 5 / 3, 0])
    expected = np.zeros((3, 3))
    expected[0, 1] = 5 / 3
    assert result.estimated == pytest.approx(expected)
    assert np.diag(result.estimated).tolist() == [0, 0, 0]


def test_rounding_keeps_row_totals_giving_the_largest_remainders():
    rounded = flagged.round_preserving_rows(np.array([[10 / 3, 5 / 3, 0.0], [0.0, 4.0, 0.0], [1.5, 1.5, 0.0]]))
    assert rounded.tolist() == [[3, 2, 0], [0, 4, 0], [2, 1, 0]]


def test_prune_by_noise_rate_flags_the_estimated_count_with_the_largest_margin():
    result = flag_label_errors(P, Y, method="prune_by_noise_rate")
    # estimated[a, b] = 5/3 rounds (keeping row a at 5) to 2: r3 (margin 0.75) and r2 (0.5), not r4 (0.1).
    assert np.flatnonzero(result.mask).tolist() == [2, 3]
    assert result.suggested.tolist() == [-1, -1, 1, 1] + [-1] * 9
    assert result.count == 2
    assert result.pairs(CLASSES) == [{"given": "a", "suggested": "b", "estimated": 1.67, "flagged": 2}]


def test_confident_joint_method_flags_only_the_off_diagonal_counts():
    off = flag_label_errors(P, Y, method="confident_joint_off_diagonal")
    assert np.flatnonzero(off.mask).tolist() == [3]
    assert off.suggested[3] == 1
    both = flag_label_errors(P, Y, method="both")
    assert np.flatnonzero(both.mask).tolist() == [3]
    assert both.pairs(CLASSES) == [{"given": "a", "suggested": "b", "estimated": 1.67, "flagged": 1}]


@pytest.mark.parametrize("method", METHODS)
def test_unlabelled_rows_are_never_flagged_and_may_have_no_probabilities(method):
    P2 = P.copy()
    P2[12] = np.nan
    result = flag_label_errors(P2, Y, method=method)
    assert not result.mask[12] and result.suggested[12] == -1
    assert result.estimated == pytest.approx(flag_label_errors(P, Y, method=method).estimated)


def test_a_sample_the_model_agrees_with_is_not_flagged_whatever_the_counts_say():
    P3 = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.8, 0.1, 0.1],
            [0.45, 0.42, 0.13],  # given a, below t_a = 0.7167, above t_b = 0.4: counted as b
            [0.25, 0.4, 0.35],
            [0.3, 0.4, 0.3],
            [0.1, 0.1, 0.8],
            [0.05, 0.05, 0.9],
        ]
    )
    y3 = np.array([0, 0, 0, 1, 1, 2, 2])
    for method in METHODS:
        result = flag_label_errors(P3, y3, method=method)
        assert result.confident_joint.tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]
        assert result.estimated[0, 1] == pytest.approx(1.0)
        assert not result.mask.any()
        assert result.pairs(CLASSES) == [{"given": "a", "suggested": "b", "estimated": 1.0, "flagged": 0}]


def test_a_class_with_no_given_samples_has_no_threshold_and_is_never_suggested():
    classes = ["a", "b", "c", "d"]
    P4 = np.array(
        [
            [0.9, 0.05, 0.0, 0.05],
            [0.8, 0.1, 0.0, 0.1],
            [0.05, 0.05, 0.0, 0.9],  # given a, looks like d, which nobody was given
            [0.1, 0.85, 0.05, 0.0],
            [0.0, 0.9, 0.1, 0.0],
            [0.1, 0.0, 0.9, 0.0],
            [0.05, 0.05, 0.85, 0.05],
        ]
    )
    y4 = np.array([0, 0, 0, 1, 1, 2, 2])
    for method in METHODS:
        result = flag_label_errors(P4, y4, method=method)
        assert math.isnan(result.thresholds[3])
        assert result.confident_joint[:, 3].tolist() == [0, 0, 0, 0]
        assert result.estimated[:, 3].tolist() == [0, 0, 0, 0]
        assert 3 not in result.suggested.tolist()
        assert not result.mask.any()
        assert result.pairs(classes) == []


def test_a_class_keeps_at_least_one_sample():
    P5 = np.array(
        [
            [0.9, 0.1, 0.0],
            [0.8, 0.1, 0.1],
            [0.9, 0.1, 0.0],  # given b
            [0.85, 0.15, 0.0],  # given b
            [0.1, 0.0, 0.9],
            [0.0, 0.1, 0.9],
        ]
    )
    y5 = np.array([0, 0, 1, 1, 2, 2])
    result = flag_label_errors(P5, y5, method="prune_by_noise_rate")
    # Both given-b samples are confidently a (estimated 2), but b keeps one: the larger margin goes.
    assert result.confident_joint[1].tolist() == [2, 0, 0]
    assert result.estimated[1, 0] == pytest.approx(2.0)
    assert np.flatnonzero(result.mask).tolist() == [2]
    assert result.suggested[2] == 0
    assert result.pairs(CLASSES) == [{"given": "b", "suggested": "a", "estimated": 2.0, "flagged": 1}]
    # by_score: the count is 2 (both estimates agree), b keeps one; the lower p_b (r2) goes.
    by_score = flag_label_errors(P5, y5)
    assert np.flatnonzero(by_score.mask).tolist() == [2]
    assert by_score.suggested[2] == 0


@pytest.mark.parametrize("method", METHODS)
def test_a_table_the_model_gets_all_right_flags_nothing(method):
    rng = np.random.default_rng(3)
    P6 = rng.dirichlet(np.ones(4) * 0.7, size=200)
    y6 = P6.argmax(axis=1)
    result = flag_label_errors(P6, y6, method=method)
    assert not result.mask.any()
    assert (result.suggested == -1).all()
    assert all(p["flagged"] == 0 for p in result.pairs(["w", "x", "y", "z"]))


def test_by_score_is_the_default_and_flags_the_geometric_mean_count():
    result = flag_label_errors(P, Y)
    assert result.method == "by_score"
    # Off the diagonal: 1 uncalibrated (r3), 5/3 calibrated; sqrt(5/3) = 1.29 rounds to 1.
    assert flagged.flag_count(result.confident_joint, flagged.calibrate_joint(result.confident_joint, np.array([5, 4, 3]))) == 1
    assert flagged.flag_count(np.array([[5, 4], [0, 9]]), np.array([[5.0, 9.0], [0.0, 9.0]])) == 6  # sqrt(4 * 9)
    # Without a score, the combined score of P alone picks among the samples the model disagrees
    # with (r2, r3, r4 given a, most probable b): r3 has the lowest p_a (0.1) and margin (-0.75).
    assert np.flatnonzero(result.mask).tolist() == [3]
    assert result.suggested.tolist() == [-1, -1, -1, 1] + [-1] * 9
    assert result.pairs(CLASSES) == [{"given": "a", "suggested": "b", "estimated": 1.67, "flagged": 1}]


def test_by_score_takes_the_lowest_score_among_the_samples_the_model_disagrees_with():
    score = np.linspace(0.9, 0.1, 13)  # r12 lowest, then r11, ... r0 highest
    score[4] = 0.5
    # r12 is unlabelled and r5..r11 agree with their labels: of r2, r3, r4 the lowest score is r4.
    result = flag_label_errors(P, Y, score=score)
    assert np.flatnonzero(result.mask).tolist() == [4]
    assert result.suggested[4] == 1  # its most probable class
    score[2] = 0.0
    assert np.flatnonzero(flag_label_errors(P, Y, score=score).mask).tolist() == [2]
    # A missing score ranks last; the other methods ignore the score.
    score[[2, 4]] = np.nan
    assert np.flatnonzero(flag_label_errors(P, Y, score=score).mask).tolist() == [3]
    pbnr = flag_label_errors(P, Y, method="prune_by_noise_rate", score=score)
    assert np.flatnonzero(pbnr.mask).tolist() == [2, 3]
    with pytest.raises(ValueError, match="score"):
        flag_label_errors(P, Y, score=np.zeros(3))


@pytest.mark.parametrize("method", METHODS)
def test_flipped_labels_are_found_with_their_true_class_suggested(method):
    rng = np.random.default_rng(0)
    n, k = 600, 3
    truth = rng.integers(0, k, size=n)
    logits = rng.normal(0, 1, size=(n, k))
    logits[np.arange(n), truth] += 3.0
    P7 = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y7 = truth.copy()
    flips = rng.choice(n, size=60, replace=False)
    y7[flips] = (truth[flips] + 1) % k
    result = flag_label_errors(P7, y7, method=method)
    found = np.flatnonzero(result.mask)
    precision = np.isin(found, flips).mean()
    recall = np.isin(flips, found).mean()
    assert precision > 0.8 and recall > 0.7
    hits = found[np.isin(found, flips)]
    assert (result.suggested[hits] == truth[hits]).mean() > 0.9
    # Given i, true i - 1: about 20 per pair, and little elsewhere.
    for i in range(k):
        assert 10 <= result.estimated[i, (i - 1) % k] <= 30
        assert result.estimated[i, (i + 1) % k] < 5


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="method"):
        flag_label_errors(P, Y, method="nope")
    P8 = P.copy()
    P8[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        flag_label_errors(P8, Y)
    with pytest.raises(ValueError):
        flag_label_errors(P, Y[:-1])
    with pytest.raises(ValueError, match="class names"):
        flag_label_errors(P, Y).pairs(["a", "b"])
