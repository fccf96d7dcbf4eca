"""Multi-label label errors: Curate's multi-label scores and flagged set against cleanlab's
multilabel_classification, on the same out-of-fold probabilities.

    .venv/bin/python bench/label_errors.py --multilabel   # well under a minute, no training

  data     scikit-learn make_multilabel_classification sets (2,000 samples, 20 word-count features;
           8 classes with about 2 tags each at 500 and at 200 words a sample, 15 classes with about 3
           at 500 words; empty sets allowed); 80% train, 20% valid.
  noise    in train, 10% or 20% of the samples get one tag flipped: a present tag dropped (a
           missing tag) or an absent one added (a wrong extra tag), half each; valid stays clean.
  probs    a standardised one-vs-rest logistic regression: 5-fold out-of-fold probabilities of
           the train samples on iterative-stratification folds (as the train job), and the model
           on all of train predicts valid, where Curate chooses its per-class thresholds.
  arms     Curate (app.scoring.multilabel): self_confidence (worst tag), normalized_margin, combined,
           priority, the flagged set; cleanlab: get_label_quality_scores (3 methods) and
           find_label_issues (4 filters).
  metrics  per sample (a sample is an error when any tag was flipped): AUROC, AUPRC, precision at
           the true number of errors; precision, recall, F1 and size of each flagged set; for
           Curate, how many flagged true errors get their true set back as the suggestion.
Writes its own section of bench/results/label_errors.md and keeps the rest of the file.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

START = "<!-- multilabel:start -->"
END = "<!-- multilabel:end -->"
# (name, classes, mean tags per sample, words per sample: more words, clearer tags)
SETTINGS = (("ml8", 8, 2, 500), ("ml8-hard", 8, 2, 200), ("ml15", 15, 3, 500))
RATES = (0.10, 0.20)
SEEDS = (0, 1)
CL_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
CL_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning")


def make_data(classes: int, labels: int, length: int, seed: int):
    from sklearn.datasets import make_multilabel_classification

    X, Y = make_multilabel_classification(n_samples=2000, n_features=20, n_classes=classes, n_labels=labels,
                                          length=length, allow_unlabeled=True, random_state=seed)
    split = np.where(np.random.default_rng(seed).random(len(X)) < 0.8, "train", "valid")
    return X.astype(np.float64), Y.astype(np.int64), split


def add_noise(Y: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(given tags, which rows were changed): one tag flipped in a `rate` share of the rows."""
    rng = np.random.default_rng(seed + 1000)
    given = Y.copy()
    rows = rng.choice(len(Y), int(round(rate * len(Y))), replace=False)
    for i in rows:
        present, absent = np.flatnonzero(Y[i] == 1), np.flatnonzero(Y[i] == 0)
        drop = len(present) and (not len(absent) or rng.random() < 0.5)
        j = rng.choice(present) if drop else rng.choice(absent)
        given[i, j] = 1 - given[i, j]
    changed = np.zeros(len(Y), dtype=bool)
    changed[rows] = True
    return given, changed


def _model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=1000)))


def _fit_predict(X_fit, Y_fit, X_pred) -> np.ndarray:
    # A tag that one fold never sees (or always sees) gets its constant probability.
    P = np.zeros((len(X_pred), Y_fit.shape[1]))
    live = (Y_fit.min(axis=0) != Y_fit.max(axis=0))
    if live.any():
        P[:, live] = _model().fit(X_fit, Y_fit[:, live]).predict_proba(X_pred)
    P[:, ~live] = Y_fit[0, ~live]
    return P


def probabilities(X, given, split, seed):
    """(out-of-fold P of the train rows, P of the valid rows from the model on all of train)."""
    from app.scoring.oof import plan_multilabel_folds

    tr, va = split == "train", split == "valid"
    Xt, Yt = X[tr], given[tr]
    plan = plan_multilabel_folds(Yt, 5, seed)
    P = np.zeros(Yt.shape)
    for f in range(plan.folds):
        P[plan.held_out(f)] = _fit_predict(Xt[plan.train_indices(f)], Yt[plan.train_indices(f)], Xt[plan.held_out(f)])
    return P, _fit_predict(Xt, Yt, X[va])


def rank_metrics(score: np.ndarray, is_err: np.ndarray) -> dict:
    """Low score = suspicious."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = -np.asarray(score, dtype=np.float64)
    top = np.argsort(-s, kind="stable")[: int(is_err.sum())]
    return {"auroc": roc_auc_score(is_err, s), "auprc": average_precision_score(is_err, s),
            "p_at_k": float(is_err[top].mean())}


def flag_metrics(mask: np.ndarray, is_err: np.ndarray) -> dict:
    tp = int((mask & is_err).sum())
    p = tp / max(int(mask.sum()), 1)
    r = tp / max(int(is_err.sum()), 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "n": int(mask.sum())}


def run_one(name: str, classes: int, labels: int, length: int, rate: float, seed: int) -> dict:
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    from app.evaluation.multilabel import choose_thresholds
    from app.scoring.multilabel import multilabel_scores

    X, Y, split = make_data(classes, labels, length, seed)
    noisy, changed = add_noise(Y[split == "train"], rate, seed)
    given = Y.copy()
    given[split == "train"] = noisy
    P, P_valid = probabilities(X, given, split, seed)
    t = choose_thresholds(Y[split == "valid"], P_valid)
    n = len(P)
    s = multilabel_scores(P, noisy, np.ones(n, bool), np.array(["train"] * n), t, [f"c{j}" for j in range(classes)])
    out: dict = {"setting": (name, rate), "seed": seed, "errors": int(changed.sum()), "n": n, "rank": {}, "flag": {}}
    for arm, score in (("C self_conf", s.self_confidence), ("C margin", s.normalized_margin),
                       ("C combined", s.combined), ("C priority", s.priority)):
        out["rank"][arm] = rank_metrics(score, changed)
    out["flag"]["C flagged"] = flag_metrics(s.flagged, changed)
    fixed = s.flagged & changed
    out["suggested_right"] = (int((s.suggested[fixed] == Y[split == "train"][fixed]).all(axis=1).sum()), int(fixed.sum()))
    lists = [list(np.flatnonzero(row)) for row in noisy]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in CL_METHODS:
            out["rank"][f"cl {method}"] = rank_metrics(get_label_quality_scores(lists, P, method=method), changed)
        for filter_by in CL_FILTERS:
            t0 = time.monotonic()
            mask = find_label_issues(lists, P, filter_by=filter_by, n_jobs=1)
            out["flag"][f"cl {filter_by}"] = {**flag_metrics(np.asarray(mask, dtype=bool), changed),
                                              "seconds": time.monotonic() - t0}
    return out


def _mean(rows: list[dict], *path) -> float:
    values = []
    for r in rows:
        v = r
        for p in path:
            v = v[p]
        values.append(v)
    return float(np.mean(values))


def section(results: list[dict], minutes: float, code: str) -> str:
    import cleanlab

    settings = sorted({r["setting"] for r in results}, key=lambda s: (s[0], s[1]))
    rank_arms = list(results[0]["rank"])
    flag_arms = list(results[0]["flag"])
    lines = [START, "## Multi-label: Curate's tag-level scores against cleanlab's multilabel_classification", "",
             f"From `.venv/bin/python bench/label_errors.py --multilabel` at {code}: {minutes:.1f} min. "
             f"cleanlab {cleanlab.__version__}, on the same out-of-fold probabilities (module docstring of "
             "`bench/multilabel_errors.py`: synthetic multi-label sets, one tag flipped per noisy train sample, "
             f"a one-vs-rest logistic regression on 5 iterative-stratification folds). Seeds: {len(SEEDS)} per setting, "
             "averaged. A sample is an error when any of its tags was flipped.", "",
             "Ranking (AUPRC, seed mean; low score = suspicious):", "",
             "| setting | rate | errors | " + " | ".join(rank_arms) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in rank_arms) + " |"]
    for key in settings:
        rows = [r for r in results if r["setting"] == key]
        vals = {a: _mean(rows, "rank", a, "auprc") for a in rank_arms}
        best = max(vals.values())
        cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in vals.values()]
        lines.append(f"| {key[0]} | {key[1]:.0%} | {_mean(rows, 'errors'):.0f} | " + " | ".join(cells) + " |")
    lines += ["", "Flagged sets (F1, with precision / recall and size, seed mean):", "",
              "| setting | rate | " + " | ".join(flag_arms) + " | C suggestion = true set |",
              "| --- | --- | " + " | ".join("---" for _ in flag_arms) + " | --- |"]
    for key in settings:
        rows = [r for r in results if r["setting"] == key]
        f1 = {a: _mean(rows, "flag", a, "f1") for a in flag_arms}
        best = max(f1.values())
        cells = []
        for a in flag_arms:
            cell = f"{f1[a]:.3f} ({_mean(rows, 'flag', a, 'precision'):.2f}/{_mean(rows, 'flag', a, 'recall'):.2f}) " \
                   f"n={_mean(rows, 'flag', a, 'n'):.0f}"
            cells.append(f"**{cell}**" if f1[a] == best else cell)
        right = sum(r["suggested_right"][0] for r in rows)
        total = sum(r["suggested_right"][1] for r in rows)
        lines.append(f"| {key[0]} | {key[1]:.0%} | " + " | ".join(cells) + f" | {right}/{total} |")
    lines += ["", "Bold: the best of the row. Curate's flagged set is confident learning per class, the method of "
              "cleanlab's `confident_learning` filter (the confident value by the confident joint's rule; flagged "
              "when the binary argmax disagrees with the given tag), with one more condition: the thresholded "
              "prediction disagrees too, so that the suggested set is one the model predicts. Where the two checks "
              "differ it drops a few samples, mostly correct ones. cleanlab's quality scores aggregate the per-tag scores by an exponential moving average; "
              "Curate's sample score is the worst tag's self-confidence. The last column counts the flagged true "
              "errors whose suggested tag set is exactly the true one.", END]
    return "\n".join(lines)


def split_section(text: str) -> tuple[str, str | None]:
    """(the report without the multi-label section, that section or None)."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return text, None
    return (text[:start].rstrip("\n") + "\n" + text[end + len(END):].lstrip("\n")), text[start:end + len(END)]


def with_section(text: str, part: str | None) -> str:
    """The report with the multi-label section at its end (replacing one already there)."""
    text, _ = split_section(text)
    return text if part is None else text.rstrip("\n") + "\n\n" + part + "\n"


def run(out, code: str) -> str:
    """Every setting and seed; writes the section into `out` (keeping the rest) and returns it."""
    from pathlib import Path

    started = time.monotonic()
    results = [run_one(name, k, m, words, rate, seed) for name, k, m, words in SETTINGS for rate in RATES for seed in SEEDS]
    part = section(results, (time.monotonic() - started) / 60, code)
    out = Path(out)
    base = out.read_text() if out.exists() else "# Label-error detection benchmark\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(with_section(base, part))
    return part
