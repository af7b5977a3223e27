"""Unit tests for models.metrics against scikit-learn and SciPy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from models.metrics import Metric, regression_metrics, seed_mean_metrics


def _data(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.gamma(3.0, 1.0, size=n)
    return y, y + rng.normal(0.0, 0.5, size=n)


def test_point_estimates_match_sklearn_and_scipy() -> None:
    y, p = _data()
    m = regression_metrics(y, p, n_boot=500)
    assert set(m) == {"r2", "mae", "rmse", "spearman"}
    assert m["r2"].value == pytest.approx(r2_score(y, p), rel=1e-12)
    assert m["mae"].value == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
    assert m["rmse"].value == pytest.approx(np.sqrt(mean_squared_error(y, p)), rel=1e-12)
    assert m["spearman"].value == pytest.approx(spearmanr(y, p).statistic, rel=1e-12)


def test_spearman_with_ties_matches_scipy() -> None:
    y = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0])
    p = np.array([1.0, 1.0, 2.5, 3.0, 3.0, 6.0, 5.0])
    assert regression_metrics(y, p, n_boot=0)["spearman"].value == pytest.approx(spearmanr(y, p).statistic)


def test_intervals_contain_estimates_and_are_reproducible() -> None:
    y, p = _data()
    a = regression_metrics(y, p, n_boot=2000, seed=1)
    b = regression_metrics(y, p, n_boot=2000, seed=1)
    c = regression_metrics(y, p, n_boot=2000, seed=2)
    assert a == b and a != c
    for metric in a.values():
        assert metric.ci_low < metric.value < metric.ci_high


def test_perfect_predictions() -> None:
    y, _ = _data(50)
    m = regression_metrics(y, y, n_boot=1000)
    assert m["r2"] == Metric(value=1.0, ci_low=1.0, ci_high=1.0)
    assert m["spearman"].value == 1.0
    assert m["mae"].value == m["rmse"].value == m["mae"].ci_high == 0.0


def test_default_bootstrap_gives_finite_intervals() -> None:
    m = regression_metrics(*_data(100))  # 10,000 resamples (speed: not a unit test's business)
    assert np.isfinite([v.ci_low for v in m.values()]).all()


def test_json_serialisable() -> None:
    y, p = _data(20)
    m = regression_metrics(y, p, n_boot=100)
    dumped = json.loads(json.dumps({k: v.model_dump() for k, v in m.items()}))
    assert set(dumped["r2"]) == {"value", "ci_low", "ci_high"}


def test_multi_output_per_column_and_flat_single_column() -> None:
    y, p = _data(60)
    y2, p2 = np.stack([y, 2 * y], axis=1), np.stack([p, 2 * p + 1], axis=1)
    m = regression_metrics(y2, p2, n_boot=300, names=["1 bar", "5.8 bar"])
    assert set(m) == {"1 bar", "5.8 bar"}
    assert m["5.8 bar"]["mae"].value == pytest.approx(mean_absolute_error(2 * y, 2 * p + 1))
    assert m["1 bar"] == regression_metrics(y, p, n_boot=300)
    default = regression_metrics(y2, p2, n_boot=0)
    assert set(default) == {"output_0", "output_1"}
    flat = regression_metrics(y[:, None], p[:, None], n_boot=0)
    assert set(flat) == {"r2", "mae", "rmse", "spearman"}
    assert np.isnan(flat["r2"].ci_low)


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        regression_metrics([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2"):
        regression_metrics([1.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        regression_metrics([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="names"):
        regression_metrics(np.ones((3, 2)), np.ones((3, 2)), names=["a"])


def test_seed_mean_of_one_run_is_the_plain_bootstrap() -> None:
    y, p = _data(60)
    plain = regression_metrics(y, p, n_boot=500, seed=4)
    assert seed_mean_metrics(y, p[None], n_boot=500, seed=4) == plain


def test_seed_mean_averages_run_metrics_and_bootstraps_them_jointly() -> None:
    y, good = _data(80, seed=1)
    bad = y + np.random.default_rng(9).normal(0.0, 1.5, size=len(y))
    m = seed_mean_metrics(y, np.stack([good, bad]), n_boot=2000, seed=0)
    assert m["r2"].value == pytest.approx((r2_score(y, good) + r2_score(y, bad)) / 2, rel=1e-12)
    assert m["mae"].value == pytest.approx((mean_absolute_error(y, good) + mean_absolute_error(y, bad)) / 2)
    for metric in m.values():
        assert metric.ci_low <= metric.value <= metric.ci_high
    # the mean of two runs is not the metric of their mean prediction (an ensemble)
    assert m["r2"].value < r2_score(y, (good + bad) / 2)
    with pytest.raises(ValueError, match="y_preds"):
        seed_mean_metrics(y, good)
    with pytest.raises(ValueError, match="at least 2"):
        seed_mean_metrics(y[:1], good[None, :1])


def test_paired_difference_is_zero_for_one_model_and_resolves_small_consistent_gains() -> None:
    from models.metrics import paired_difference

    rng = np.random.default_rng(0)
    t = rng.normal(size=300)
    shared = rng.normal(scale=0.5, size=300)  # errors both models make
    a, b = t + shared, t + shared * 1.05  # B is slightly but consistently worse
    same = paired_difference(t, [a], [a], n_boot=500)
    assert all(m.value == 0.0 and m.ci_low == 0.0 == m.ci_high for m in same.values())
    d = paired_difference(t, [a], [b], n_boot=2000)
    assert d["r2"].value > 0 and d["r2"].ci_low > 0 and d["mae"].ci_high < 0
    separate_a = regression_metrics(t, a, n_boot=2000)["r2"]
    separate_b = regression_metrics(t, b, n_boot=2000)["r2"]
    assert separate_a.ci_low < separate_b.value  # apart, their CIs overlap ...
    assert d["r2"].ci_high - d["r2"].ci_low < (separate_a.ci_high - separate_a.ci_low) / 5  # ... paired, they do not
    seed_means = paired_difference(t, [a, a + 0.01], [b], n_boot=200)
    assert seed_means["r2"].value == pytest.approx(
        np.mean([regression_metrics(t, p, n_boot=0)["r2"].value for p in (a, a + 0.01)])
        - regression_metrics(t, b, n_boot=0)["r2"].value)
    with pytest.raises(ValueError):
        paired_difference(t, [a[:10]], [b], n_boot=10)
