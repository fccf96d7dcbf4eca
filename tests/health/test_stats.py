"""The pure rules of validation health, on given numbers."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from app.health import stats


def test_spread_is_mean_sample_std_and_standard_error():
    values = [0.80, 0.84, 0.83, 0.79, 0.86]
    s = stats.spread(values)
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["std"] == pytest.approx(np.std(values, ddof=1))
    assert s["sem"] == pytest.approx(sps.sem(values))
    assert (s["min"], s["max"]) == (0.79, 0.86)


def test_spread_of_one_value_has_no_std():
    assert stats.spread([0.5]) == {"n": 1, "mean": 0.5, "std": None, "sem": None, "min": 0.5, "max": 0.5}
    assert stats.spread([])["mean"] is None


def test_a_difference_within_seed_noise_warns():
    # std 0.02: two single runs differ by noise of std 0.02 * sqrt(2); 2 of those is 0.0566.
    check = stats.check_spread(0.02, 0.03, "runs #1 and #2")
    assert check.threshold == pytest.approx(2 * math.sqrt(2) * 0.02)
    assert check.warn
    assert check.message.startswith(stats.TOO_SMALL)
    assert "runs #1 and #2" in check.message


def test_a_difference_beyond_seed_noise_does_not_warn_whatever_its_sign():
    assert not stats.check_spread(0.02, 0.06).warn
    assert not stats.check_spread(0.02, -0.06).warn
    assert stats.check_spread(0.02, -0.05).warn


def test_zero_spread_never_warns_and_no_delta_only_reports():
    assert not stats.check_spread(0.0, 0.0).warn
    check = stats.check_spread(0.01, None)
    assert not check.warn and check.delta is None and "0.0283" in check.message
    with pytest.raises(ValueError):
        stats.check_spread(float("nan"), 0.1)


def test_correlation_matches_scipy():
    x = [0.70, 0.75, 0.72, 0.80, 0.78, 0.81]
    y = [0.68, 0.74, 0.69, 0.79, 0.80, 0.77]
    c = stats.correlation(x, y)
    assert c["n"] == 6
    assert c["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert c["spearman"] == pytest.approx(sps.spearmanr(x, y).statistic)


def test_correlation_is_null_when_undefined():
    assert stats.correlation([0.1, 0.2], [0.3, 0.4]) == {"n": 2, "pearson": None, "spearman": None}
    assert stats.correlation([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])["pearson"] is None


def test_correlation_warning_needs_four_runs_and_a_low_coefficient():
    low = {"n": 4, "pearson": 0.3, "spearman": 0.6}
    assert "do not move together over 4 runs" in stats.correlation_warning("macro F1", low)
    assert stats.correlation_warning("macro F1", {"n": 3, "pearson": -0.9, "spearman": -0.9}) is None
    assert stats.correlation_warning("macro F1", {"n": 8, "pearson": 0.9, "spearman": 0.5}) is None
    assert stats.correlation_warning("macro F1", {"n": 8, "pearson": None, "spearman": None}) is None


def test_small_valid_warning_names_the_small_classes():
    w = stats.small_valid_warning({"a": 100, "b": 12, "c": 29, "d": 30})
    assert w.startswith("2 of 4 classes have fewer than 30 valid samples: b (12), c (29)")
    assert "8.3 points" in w
    assert stats.small_valid_warning({"a": 30, "b": 31}) is None
    assert "undefined" in stats.small_valid_warning({"a": 0, "b": 40})
