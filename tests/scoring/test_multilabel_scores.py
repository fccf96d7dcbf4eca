"""Label-error scores of multi-label runs on hand-built probabilities."""

import numpy as np
import pytest

from app.scoring.multilabel import flag_tags, multilabel_scores, tag_confidence
from app.scoring.oof import plan_multilabel_folds

CLASSES = ["a", "b", "c"]


def _clean(n: int, seed: int = 0):
    """n train samples whose probabilities agree with their tags, plus planted errors."""
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, 3)) < 0.4).astype(int)
    P = np.where(Y == 1, rng.uniform(0.7, 0.95, (n, 3)), rng.uniform(0.02, 0.3, (n, 3)))
    return Y, P


def test_a_missing_tag_and_a_wrong_extra_tag_are_flagged_with_the_fixed_set_suggested():
    Y, P = _clean(60)
    Y[0] = [1, 0, 0]; P[0] = [0.9, 0.95, 0.1]  # missing b  # noqa: E702
    Y[1] = [1, 1, 0]; P[1] = [0.85, 0.03, 0.1]  # extra b  # noqa: E702
    split = np.array(["train"] * 60)
    s = multilabel_scores(P, Y, np.ones(60, bool), split, np.full(3, 0.5), CLASSES)
    assert s.flagged[0] and s.flagged[1]
    assert s.suggested[0].tolist() == [1, 1, 0] and s.suggested[1].tolist() == [1, 0, 0]
    # The samples with a wrong tag rank first in the review order and lowest in self-confidence.
    assert set(np.argsort(s.priority)[:2]) == {0, 1}
    assert s.self_confidence[0] == pytest.approx(0.05) and s.self_confidence[1] == pytest.approx(0.03)
    assert s.normalized_margin[0] == pytest.approx(0.5 - 0.95)
    assert s.loss[1] == pytest.approx(-np.log(0.85) - np.log(0.03) - np.log(0.9))
    assert s.info["flagged"]["count"] == int(s.flagged.sum())
    assert {"class": "b", "missing": 1, "extra": 1} in s.info["flagged"]["tags"]
    assert s.flagged.sum() <= 4  # the clean samples stay unflagged


def test_only_labelled_train_samples_are_flagged_and_unlabelled_ones_get_no_label_scores():
    Y, P = _clean(12)
    Y[0] = [0, 0, 0]; P[0] = [0.99, 0.01, 0.01]  # noqa: E702
    Y[5] = [0, 0, 0]; P[5] = [0.99, 0.01, 0.01]  # noqa: E702
    split = np.array(["valid"] + ["train"] * 10 + ["unlabelled"])
    labelled = np.array([True] * 11 + [False])
    s = multilabel_scores(P, Y, labelled, split, np.full(3, 0.5), CLASSES)
    assert not s.flagged[0] and s.flagged[5]
    assert np.isnan(s.self_confidence[11]) and np.isnan(s.priority[11]) and not s.flagged[11]
    # The unlabelled pool is ranked by how near its least certain class is to its threshold.
    assert s.confusion_margin[11] == pytest.approx(np.abs(P[11] - 0.5).min())
    assert s.confusion_a[11] == np.abs(P[11] - 0.5).argmin()


def test_per_class_thresholds_are_the_mean_self_confidences():
    Y = np.array([[1], [1], [0], [0]])
    P = np.array([[0.9], [0.7], [0.2], [0.4]])
    flags = flag_tags(np.hstack([P, 1 - P]), np.hstack([Y, 1 - Y]), np.array([0.5, 0.5]), np.ones(4, bool))
    assert flags.t1[0] == pytest.approx(0.8) and flags.t0[0] == pytest.approx(0.7)
    assert not flags.tags.any()
    assert tag_confidence(P, Y).ravel().tolist() == pytest.approx([0.9, 0.7, 0.8, 0.6])


def test_iterative_stratification_puts_a_rare_tag_in_every_fold():
    rng = np.random.default_rng(0)
    Y = (rng.random((60, 4)) < 0.5).astype(int)
    Y[:, 3] = 0
    Y[[3, 17, 29, 41, 55], 3] = 1  # five samples of a rare tag, five folds
    plan = plan_multilabel_folds(Y, 5, seed=0)
    assert plan.stratified and plan.folds == 5 and not plan.notices
    assert sorted(plan.fold_of[[3, 17, 29, 41, 55]].tolist()) == [0, 1, 2, 3, 4]
    assert sorted(np.bincount(plan.fold_of).tolist()) == [12] * 5
    few = plan_multilabel_folds(Y[:4], 5, seed=0)
    assert few.folds == 4 and any("only 4" in n for n in few.notices)


def test_a_tag_is_flagged_only_when_the_model_decides_for_the_other_value_both_ways():
    # Given 1 on the first four rows, 0 on the last four: t1 = 0.45, t0 = 0.82.
    P = np.array([[0.6], [0.5], [0.4], [0.3], [0.05], [0.1], [0.47], [0.1]])
    Y = np.array([[1], [1], [1], [1], [0], [0], [0], [0]])
    rows = np.ones(8, bool)
    # Row 6 (given 0, p 0.47) is confidently 1 and the decision threshold 0.3 says 1, but the
    # binary argmax says 0: not flagged. Under a threshold of 0.5 neither check agrees.
    low = flag_tags(P, Y, np.array([0.3]), rows)
    assert low.t1[0] == pytest.approx(0.45) and low.t0[0] == pytest.approx(0.82)
    assert not low.tags.any()
    # Raise p to 0.55: both checks agree and the tag is flagged as missing.
    P[6, 0] = 0.55
    assert np.flatnonzero(flag_tags(P, Y, np.array([0.3]), rows).tags[:, 0]).tolist() == [6]
    # With a decision threshold above p the model keeps the given 0: not flagged.
    assert not flag_tags(P, Y, np.array([0.6]), rows).tags.any()


def test_when_both_values_are_confident_the_more_probable_one_wins():
    # t1 = 0.3 and t0 = 0.4 are low (a weak model), so a p between 0.3 and 0.6 clears both.
    # Row 0 (given 1, p 0.48) is 0.18 over t1 and 0.12 over t0, yet 0 is the more probable
    # value: it is confidently 0, and flagged since p is also under 0.5 and the threshold 0.5.
    # Row 4 (given 0, p 0.4) clears both and is confidently 0, as given: not flagged.
    P = np.array([[0.48], [0.2], [0.2], [0.32], [0.4], [0.8], [0.6], [0.6]])
    Y = np.array([[1], [1], [1], [1], [0], [0], [0], [0]])
    flags = flag_tags(P, Y, np.array([0.5]), np.ones(8, bool))
    assert flags.t1[0] == pytest.approx(0.3) and flags.t0[0] == pytest.approx(0.4)
    assert flags.tags[:, 0].tolist() == [True, True, True, True, False, True, True, True]
