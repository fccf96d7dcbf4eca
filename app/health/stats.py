"""Pure statistics behind validation health: seed spread, the noise warning, correlations.

No database and no torch here, so the rules can be tested on given numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from app.formatting import fmt

# Two single runs of one recipe differ by noise with standard deviation sigma * sqrt(2), sigma
# being the seed-to-seed standard deviation; under normality 95% of such differences are
# within two of those standard deviations. A difference smaller than that cannot be told
# from noise.
NOISE_Z = 2.0
# Correlation of valid and test below this, over at least MIN_RUNS_FOR_CORRELATION runs, means
# the valid split does not rank models the way the test split does.
MIN_CORRELATION = 0.5
MIN_RUNS_FOR_CORRELATION = 4
# Fewer labelled valid samples than this in a class: one sample moves its recall by more
# than 3 points, so per-class valid numbers are coarse.
MIN_VALID_PER_CLASS = 30

TOO_SMALL = "the valid split is too small to tell these runs apart"


def spread(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample standard deviation (ddof=1), standard error of the mean, min and max."""
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "sem": None, "min": None, "max": None}
    std = float(x.std(ddof=1)) if n > 1 else None
    return {
        "n": n,
        "mean": float(x.mean()),
        "std": std,
        "sem": std / math.sqrt(n) if std is not None else None,
        "min": float(x.min()),
        "max": float(x.max()),
    }


def resolvable_delta(std: float) -> float:
    """The smallest difference between two single runs' metric that stands out of seed noise."""
    return NOISE_Z * math.sqrt(2.0) * std


@dataclass(frozen=True)
class SpreadCheck:
    """The seed spread of valid macro F1 set against a difference someone wants to read."""

    std: float
    delta: float | None
    threshold: float
    warn: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "std": self.std,
            "delta": self.delta,
            "threshold": self.threshold,
            "warn": self.warn,
            "message": self.message,
        }


def check_spread(std: float, delta: float | None, what: str = "the two runs") -> SpreadCheck:
    """Warn when |delta| is below resolvable_delta(std): the difference is within seed noise.

    `std` is the seed-to-seed standard deviation of valid macro F1 of one recipe; `delta`
    the difference of valid macro F1 between two runs (None: nothing to compare).
    """
    if not math.isfinite(std) or std < 0:
        raise ValueError(f"std must be a finite number >= 0, got {std}")
    threshold = resolvable_delta(std)
    if delta is None:
        return SpreadCheck(
            std, None, threshold, False,
            f"valid macro F1 varies by {std:.4f} (std) between seeds; differences between two single runs "
            f"below {threshold:.4f} are noise",
        )
    d = abs(float(delta))
    warn = d < threshold
    if warn:
        message = (
            f"{TOO_SMALL}: valid macro F1 of {what} differs by {d:.4f}, within the {threshold:.4f} that "
            f"seeds alone produce (2 x sqrt(2) x seed std {std:.4f})"
        )
    else:
        message = (
            f"valid macro F1 of {what} differs by {d:.4f}, more than the {threshold:.4f} that seeds alone "
            f"produce (2 x sqrt(2) x seed std {std:.4f})"
        )
    return SpreadCheck(std, float(delta), threshold, warn, message)


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Pearson and Spearman correlation of paired values with n; null where undefined
    (fewer than 3 pairs, or a constant series)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    n = len(a)
    out: dict[str, Any] = {"n": n, "pearson": None, "spearman": None}
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    out["pearson"] = float(stats.pearsonr(a, b)[0])
    out["spearman"] = float(stats.spearmanr(a, b)[0])
    return out


def correlation_warning(metric: str, corr: dict[str, Any]) -> str | None:
    """A warning when valid and test do not move together: either coefficient below
    MIN_CORRELATION with at least MIN_RUNS_FOR_CORRELATION runs."""
    if corr["n"] < MIN_RUNS_FOR_CORRELATION:
        return None
    values = [v for v in (corr["pearson"], corr["spearman"]) if v is not None]
    if not values:
        return None
    if min(values) >= MIN_CORRELATION:
        return None
    return (
        f"valid and test {metric} do not move together over {corr['n']} runs "
        f"(Pearson {fmt(corr['pearson'], '.2f')}, Spearman {fmt(corr['spearman'], '.2f')}): the run that looks best "
        "on valid may not be best on test"
    )


def small_valid_warning(valid_counts: dict[str, int]) -> str | None:
    """A warning naming the classes with fewer than MIN_VALID_PER_CLASS labelled valid samples."""
    small = {c: n for c, n in valid_counts.items() if n < MIN_VALID_PER_CLASS}
    if not small:
        return None
    worst = sorted(small.items(), key=lambda kv: (kv[1], kv[0]))
    listed = ", ".join(f"{c} ({n})" for c, n in worst[:10]) + (f" and {len(worst) - 10} more" if len(worst) > 10 else "")
    fewest = worst[0][1]
    step = "undefined" if fewest == 0 else f"{100 / fewest:.1f} points"
    return (
        f"{len(small)} of {len(valid_counts)} classes have fewer than {MIN_VALID_PER_CLASS} valid samples: "
        f"{listed}; one sample moves the recall of the smallest by {step}"
    )

