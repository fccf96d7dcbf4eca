"""A run with training dynamics scores exactly as before the no-AUM score existed: the combined
score, flagged set and priority of samples in a set that has AUM follow the probability rank
(self-confidence and normalized-margin ranks) averaged with the AUM rank."""

import numpy as np

from app.scoring.combined import combined_score, noise_rank, unit_rank
from app.scoring.flagged import flag_label_errors
from app.scoring.priority import review_priority
from app.scoring.scores import normalized_margin, self_confidence
from app.training.label_errors import columns_from


def reference_combined(P: np.ndarray, y: np.ndarray, aum: np.ndarray) -> np.ndarray:
    """The combined score with AUM as written before: (r(sc) + r(margin)) / 2, averaged with r(aum) where there is one."""
    labelled = y >= 0
    prob = (unit_rank(self_confidence(P, y)) + unit_rank(normalized_margin(P, y))) / 2
    aum_rank = unit_rank(np.where(labelled, aum, np.nan))
    both = np.isfinite(aum_rank) & labelled
    out = prob.copy()
    out[both] = (prob[both] + aum_rank[both]) / 2
    return out


def noisy(n: int = 300, k: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1.2, (n, k))
    logits[np.arange(n), true] += 2.0
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = true.copy()
    flip = rng.random(n) < 0.2
    y[flip] = (true[flip] + 1 + rng.integers(0, k - 1, flip.sum())) % k
    y[rng.random(n) < 0.05] = -1
    aum = rng.normal(0, 2, n) - 3 * flip
    aum[rng.random(n) < 0.02] = np.nan  # a few samples the loader never showed
    return P, y, aum


def test_with_aum_the_combined_score_is_the_reference_formula():
    for seed in range(3):
        P, y, aum = noisy(seed=seed)
        assert np.array_equal(combined_score(P, y, aum), reference_combined(P, y, aum), equal_nan=True)


def test_a_train_run_with_aum_keeps_its_columns_and_only_splits_without_aum_move():
    P, y, aum = noisy(n=400, seed=4)
    split = np.array(["train"] * 300 + ["valid"] * 100)
    aum[300:] = np.nan  # AUM is recorded on train only
    classes = [f"c{j}" for j in range(P.shape[1])]
    got = columns_from(P, y, split, classes, True, aum=aum)
    train = np.arange(300)
    expected = reference_combined(P[train], y[train], aum[train])
    assert np.array_equal(got.combined[train], expected, equal_nan=True)
    labelled = train[y[train] >= 0]
    found = flag_label_errors(P[labelled], y[labelled], score=expected[y[train] >= 0])
    assert np.array_equal(got.flagged[labelled], found.mask)
    assert not got.flagged[300:].any()
    assert np.array_equal(got.priority[train], review_priority(P[train], y[train], got.flagged[train], expected),
                          equal_nan=True)
    # The valid split has no AUM at all: it gets the score of a run without training dynamics.
    valid = np.arange(300, 400)
    assert np.array_equal(got.combined[valid], noise_rank(P[valid], y[valid]), equal_nan=True)


def test_a_run_without_aum_gets_the_noise_rank_on_every_split():
    P, y, _ = noisy(n=400, seed=5)
    split = np.array(["train"] * 300 + ["test"] * 100)
    got = columns_from(P, y, split, [f"c{j}" for j in range(P.shape[1])], True, aum=None)
    for rows in (np.arange(300), np.arange(300, 400)):
        assert np.array_equal(got.combined[rows], noise_rank(P[rows], y[rows]), equal_nan=True)
    train = np.arange(300)
    labelled = train[y[train] >= 0]
    found = flag_label_errors(P[labelled], y[labelled], score=noise_rank(P[train], y[train])[y[train] >= 0])
    assert np.array_equal(got.flagged[labelled], found.mask)
