"""Consensus labels and annotator quality from several annotators and a model, in the spirit of
CROWDLAB (Goh, Tkachenko and Mueller, 2022: "CROWDLAB: Supervised learning to infer
consensus labels and quality scores for data with multiple annotators"). Pure numpy; the
rule is documented in docs/annotations.md.

For each sample with annotations, the consensus posterior is a weighted mixture of the model's
out-of-fold probabilities and one distribution per annotation:

    P(y) = (w_M p_M(y) + sum_a w_a p_a(y)) / (w_M + sum_a w_a)
    p_a(y) = acc_a if y is the annotator's label, else (1 - acc_a) / (K - 1)

An annotator's weight is w_a = max(0, 1 - (1 - acc_a) / e_0) and the model's is
w_M = max(0, 1 - (1 - acc_M) / e_0) * sqrt(mean annotations per sample), where e_0 is the
error of always answering the most common consensus class. The accuracies start from
agreement with the majority of the other annotators on each sample (the model's, from
agreement with the majority vote) and are re-estimated a few times from the posterior that
leaves the annotator out: acc_a is the share of the annotator's labels that are the top
class of everyone else's evidence (the other annotators and the model) on that sample. The consensus is the posterior's top class; when its margin
over the runner-up is under TIE_MARGIN, the sample is a tie, sent to a reviewer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIE_MARGIN = 0.05
ITERATIONS = 5
PRIOR_ACCURACY = 0.8  # an annotator with nothing to compare against yet
_PRIOR_WEIGHT = 2.0  # pseudo-annotations at PRIOR_ACCURACY behind each accuracy estimate


@dataclass
class Consensus:
    label: np.ndarray  # per sample: the consensus class index
    quality: np.ndarray  # per sample: the posterior probability of that class
    tie: np.ndarray  # per sample: too close to call
    agreement: np.ndarray  # per sample: the share of its annotations that give the consensus class
    count: np.ndarray  # per sample: its number of annotations
    accuracy: np.ndarray  # per annotator: estimated accuracy
    weight: np.ndarray  # per annotator
    model_accuracy: float | None
    model_weight: float
    e0: float  # the error of always answering the most common consensus class
    mean_count: float  # mean answers per answered sample

    def estimates(self, annotator_ids: list[int], answers: int) -> Estimates:
        """What deciding more samples with this fit needs (annotator_ids: the ids by index)."""
        return Estimates({uid: float(a) for uid, a in zip(annotator_ids, self.accuracy)}, self.model_accuracy,
                         self.e0, self.mean_count, answers)


@dataclass
class Estimates:
    """A fit's estimates, to decide further samples without fitting every answer again."""

    accuracy: dict[int, float]  # by annotator id
    model_accuracy: float | None
    e0: float
    mean_count: float
    answers: int  # how many answers the fit was over


@dataclass
class Decided:
    """Per sample: the consensus class index, its posterior, too close to call, the share of
    answers that give it, the number of answers."""

    label: np.ndarray
    quality: np.ndarray
    tie: np.ndarray
    agreement: np.ndarray
    count: np.ndarray


def majority_vote(sample: np.ndarray, label: np.ndarray, n_samples: int, k: int,
                  probs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(label, tie) per sample by plain majority; a tie is broken by the model when given
    (then not reported as a tie), else left at the lowest class index and reported."""
    counts = np.zeros((n_samples, k))
    np.add.at(counts, (sample, label), 1)
    top = counts.max(axis=1, keepdims=True)
    tied = (counts == top).sum(axis=1) > 1
    if probs is not None:
        scored = np.where(counts == top, probs + 1.0, 0.0)
        return scored.argmax(axis=1), np.zeros(n_samples, dtype=bool)
    return counts.argmax(axis=1), tied


def crowdlab(sample: np.ndarray, annotator: np.ndarray, label: np.ndarray, n_samples: int, n_annotators: int,
             k: int, probs: np.ndarray | None = None) -> Consensus:
    """The consensus of annotations (sample, annotator, label) as index arrays, with the model's
    probabilities per sample (n_samples x k) when there is a model."""
    sample, annotator, label = (np.asarray(a, dtype=np.int64) for a in (sample, annotator, label))
    counts = np.zeros((n_samples, k))
    np.add.at(counts, (sample, label), 1)
    count = counts.sum(axis=1)
    mv, _ = majority_vote(sample, label, n_samples, k, probs)

    # Start: agreement with the majority of the others on the same sample.
    others = counts[sample] - np.eye(k)[label]
    has_others = others.sum(axis=1) > 0
    agree = (others[np.arange(len(label)), label] == others.max(axis=1)) & has_others
    accuracy = _per_annotator(annotator, agree.astype(float), has_others, n_annotators)
    model_accuracy = None
    if probs is not None:
        shared = count > 0
        model_accuracy = float((probs[shared].argmax(axis=1) == mv[shared]).mean()) if shared.any() else None

    for _ in range(ITERATIONS):
        posterior, total, weights, w_model, _, _ = _posterior(sample, annotator, label, counts, count, accuracy,
                                                              model_accuracy, probs, mv, k)
        consensus = posterior.argmax(axis=1)
        # Leave each annotation out: how likely everyone else makes the label it gave.
        own = weights[annotator][:, None] * _spread(label, accuracy[annotator], k)
        rest = total[sample] - own
        informed = (count[sample] > 1) | (w_model > 0)
        agree = rest.argmax(axis=1) == label
        accuracy = _per_annotator(annotator, agree.astype(float), informed, n_annotators)
        if probs is not None:
            shared = count > 0
            model_accuracy = float((probs[shared].argmax(axis=1) == consensus[shared]).mean()) if shared.any() else None
        mv = consensus

    posterior, _, weights, w_model, e0, mean_count = _posterior(sample, annotator, label, counts, count, accuracy,
                                                                model_accuracy, probs, mv, k)
    d = _decided(posterior, counts, count, k)
    return Consensus(d.label, d.quality, d.tie, d.agreement, count, accuracy, weights, model_accuracy, w_model,
                     e0, mean_count)


def decide_with(est: Estimates, sample: np.ndarray, annotator_ids: list[int], label: np.ndarray, n_samples: int,
                k: int, probs: np.ndarray | None = None) -> Decided:
    """Decide samples from their answers with a fit's estimates (no refit): the same posterior
    as the fit's last step. An annotator the fit did not see counts at PRIOR_ACCURACY."""
    sample, label = np.asarray(sample, dtype=np.int64), np.asarray(label, dtype=np.int64)
    counts = np.zeros((n_samples, k))
    np.add.at(counts, (sample, label), 1)
    count = counts.sum(axis=1)
    acc = np.array([est.accuracy.get(uid, PRIOR_ACCURACY) for uid in annotator_ids], dtype=float)
    w_model = _model_weight(est.model_accuracy, est.e0, est.mean_count) if probs is not None else 0.0
    posterior, _ = _mix(sample, label, acc, _weight(acc, est.e0), counts, count, w_model, probs, k)
    return _decided(posterior, counts, count, k)


def _posterior(sample, annotator, label, counts, count, accuracy, model_accuracy, probs, current, k):
    """The posterior per sample, its unnormalised total, the annotators' weights, the model's,
    e0 and the mean number of answers per answered sample."""
    shared = count > 0
    # e0: the error of always answering the most common consensus class.
    freq = np.bincount(current[shared], minlength=k) / max(1, shared.sum())
    e0 = max(1e-6, 1.0 - float(freq.max()))
    weights = _weight(accuracy, e0)
    mean_count = float(count[shared].mean()) if shared.any() else 1.0
    w_model = _model_weight(model_accuracy, e0, mean_count) if probs is not None else 0.0
    posterior, total = _mix(sample, label, accuracy[annotator], weights[annotator], counts, count, w_model, probs, k)
    return posterior, total, weights, w_model, e0, mean_count


def _weight(accuracy: np.ndarray, e0: float) -> np.ndarray:
    return np.clip(1.0 - (1.0 - accuracy) / e0, 0.0, None)


def _model_weight(model_accuracy: float | None, e0: float, mean_count: float) -> float:
    return 0.0 if model_accuracy is None else max(0.0, 1.0 - (1.0 - model_accuracy) / e0) * np.sqrt(mean_count)


def _mix(sample, label, acc, weight, counts, count, w_model, probs, k):
    """(posterior, unnormalised total) per sample from per-answer accuracies and weights."""
    total = np.zeros(counts.shape)
    np.add.at(total, sample, weight[:, None] * _spread(label, acc, k))
    if w_model > 0:
        total += w_model * probs
    mass = total.sum(axis=1, keepdims=True)
    # Where every weight is zero (annotators no better than the base rate), the vote counts.
    posterior = np.where(mass > 1e-12, total / np.where(mass > 1e-12, mass, 1.0),
                         counts / np.maximum(count, 1)[:, None])
    return posterior, total


def _decided(posterior: np.ndarray, counts: np.ndarray, count: np.ndarray, k: int) -> Decided:
    n_samples = len(count)
    ordered = np.sort(posterior, axis=1)
    consensus = posterior.argmax(axis=1)
    tie = (ordered[:, -1] - ordered[:, -2] < TIE_MARGIN) if k > 1 else np.zeros(n_samples, dtype=bool)
    agreement = np.divide(counts[np.arange(n_samples), consensus], count, out=np.zeros(n_samples), where=count > 0)
    return Decided(consensus, posterior[np.arange(n_samples), consensus], tie & (count > 0), agreement, count)


def _spread(label: np.ndarray, accuracy: np.ndarray, k: int) -> np.ndarray:
    """One row per annotation: acc on its label, the rest shared evenly by the other classes."""
    rows = np.repeat(((1.0 - accuracy) / max(1, k - 1))[:, None], k, axis=1)
    rows[np.arange(len(label)), label] = accuracy
    return rows


def _per_annotator(annotator: np.ndarray, values: np.ndarray, counted: np.ndarray, n: int) -> np.ndarray:
    """Per annotator, the mean of `values` over their counted annotations, shrunk towards
    PRIOR_ACCURACY by _PRIOR_WEIGHT pseudo-annotations (so two lucky answers are not 100%)."""
    sums = np.bincount(annotator[counted], weights=values[counted], minlength=n)
    ns = np.bincount(annotator[counted], minlength=n)
    return (sums + _PRIOR_WEIGHT * PRIOR_ACCURACY) / (ns + _PRIOR_WEIGHT)
