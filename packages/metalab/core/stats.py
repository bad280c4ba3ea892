"""Small statistics the experiments share: log-log slope fits with confidence intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from metalab.core.errors import ConfigError

__all__ = ["LogLogFit", "fit_loglog"]


@dataclass(frozen=True)
class LogLogFit:
    """``log y = intercept + slope * log x`` fitted by least squares, with a CI on the slope."""

    slope: float
    intercept: float
    stderr: float
    ci_low: float
    ci_high: float
    r_squared: float
    n: int

    def predict(self, x: ArrayLike) -> np.ndarray:
        """The fitted power law evaluated at ``x``."""
        return np.exp(self.intercept) * np.asarray(x, dtype=float) ** self.slope


def fit_loglog(x: ArrayLike, y: ArrayLike, *, confidence: float = 0.95) -> LogLogFit:
    """Fit a power law ``y ≈ C x^slope`` in log-log space (natural logs; slope is base-free).

    Raises:
        ValueError: fewer than three points, or non-positive values.
    """
    xs, ys = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if xs.shape != ys.shape or xs.size < 3:
        raise ConfigError("fit_loglog needs at least three (x, y) pairs of equal length")
    finite = bool(np.all(np.isfinite(xs)) and np.all(np.isfinite(ys)))
    if not finite or np.any(xs <= 0) or np.any(ys <= 0):
        raise ConfigError("fit_loglog needs positive, finite x and y")
    result = stats.linregress(np.log(xs), np.log(ys))
    half_width = stats.t.ppf(0.5 + confidence / 2, xs.size - 2) * result.stderr
    return LogLogFit(
        slope=float(result.slope),
        intercept=float(result.intercept),
        stderr=float(result.stderr),
        ci_low=float(result.slope - half_width),
        ci_high=float(result.slope + half_width),
        r_squared=float(result.rvalue**2),
        n=int(xs.size),
    )
