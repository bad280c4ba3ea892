import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalab.core.stats import LogLogFit, fit_loglog


@pytest.mark.parametrize("slope", [-2.0, -0.5, 0.0, 1.0, 3.25])
def test_noiseless_power_law_is_recovered_exactly(slope):
    x = np.geomspace(1.0, 100.0, 12)
    y = 7.5 * x**slope
    fit = fit_loglog(x, y)
    assert isinstance(fit, LogLogFit)
    assert fit.slope == pytest.approx(slope, abs=1e-10)
    assert math.exp(fit.intercept) == pytest.approx(7.5, rel=1e-9)
    assert fit.stderr < 1e-6  # linregress computes it through 1 - r², so ~sqrt(eps)
    assert fit.ci_low <= fit.slope <= fit.ci_high
    assert fit.ci_high - fit.ci_low < 1e-5
    assert fit.n == 12
    if slope != 0.0:
        assert fit.r_squared == pytest.approx(1.0)
    assert np.allclose(fit.predict(x), y, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    slope=st.floats(-4, 4, allow_nan=False),
    scale=st.floats(1e-3, 1e3, allow_nan=False),
    n=st.integers(3, 30),
)
def test_noiseless_slope_property(slope, scale, n):
    x = np.linspace(1.0, 50.0, n)
    fit = fit_loglog(x, scale * x**slope)
    assert fit.slope == pytest.approx(slope, abs=1e-8)


def test_noisy_ci_contains_true_slope():
    rng = np.random.default_rng(0)
    x = np.geomspace(1, 1000, 30)
    y = 2.0 * x**-0.75 * np.exp(rng.normal(0, 0.2, size=x.size))
    fit = fit_loglog(x, y)
    assert fit.ci_low < -0.75 < fit.ci_high
    assert fit.ci_low < fit.slope < fit.ci_high
    assert fit.stderr > 0
    assert 0.0 < fit.r_squared < 1.0


def test_ci_coverage_matches_its_confidence():
    rng = np.random.default_rng(1)
    x = np.geomspace(1, 100, 8)
    covered95 = covered50 = 0
    trials = 400
    for _ in range(trials):
        y = x**1.5 * np.exp(rng.normal(0, 0.3, size=x.size))
        fit95 = fit_loglog(x, y)
        fit50 = fit_loglog(x, y, confidence=0.5)
        assert fit50.ci_high - fit50.ci_low < fit95.ci_high - fit95.ci_low
        covered95 += fit95.ci_low <= 1.5 <= fit95.ci_high
        covered50 += fit50.ci_low <= 1.5 <= fit50.ci_high
    assert 0.92 <= covered95 / trials <= 0.98
    assert 0.42 <= covered50 / trials <= 0.58


def test_accepts_lists_and_2d_arrays():
    fit = fit_loglog([[1, 2], [4, 8]], [[1, 4], [16, 64]])
    assert fit.slope == pytest.approx(2.0)
    assert fit.n == 4


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1, 2], [1, 2], "at least three"),
        ([1, 2, 3], [1, 2], "at least three"),
        ([], [], "at least three"),
        ([0, 1, 2], [1, 2, 3], "positive"),
        ([-1, 1, 2], [1, 2, 3], "positive"),
        ([1, 2, 3], [1, 0, 3], "positive"),
        ([1, 2, 3], [1, -2, 3], "positive"),
        ([1, 2, 3], [1, np.inf, 3], "finite"),
        ([1, 2, 3], [1, np.nan, 3], "finite"),
        ([1, np.inf, 3], [1, 2, 3], "finite"),
        ([1, np.nan, 3], [1, 2, 3], "finite"),
    ],
)
def test_bad_input(x, y, message):
    with pytest.raises(ValueError, match=message):
        fit_loglog(x, y)


def test_ci_uses_student_t_with_n_minus_2_degrees_of_freedom():
    # With three points there is one degree of freedom and the t quantile (12.7) is far from
    # the normal one (1.96) or t with two degrees of freedom (4.3): coverage tells them apart.
    rng = np.random.default_rng(2)
    x = np.array([1.0, 3.0, 10.0])
    trials = 400
    covered = 0
    for _ in range(trials):
        fit = fit_loglog(x, x**-1.0 * np.exp(rng.normal(0, 0.3, size=3)))
        covered += fit.ci_low <= -1.0 <= fit.ci_high
    assert 0.92 <= covered / trials <= 0.98
