"""Closed-form predictions: the theorem's exponent and λ(T), the ridge proxy, the plateau.

Nitanda & Suzuki (2021), Corollary 1: with ``λ = λ₀ T^{−β/(2rβ+1)}`` averaged SGD reaches
``E‖ḡ − g_ρ‖² = O(T^{−2rβ/(2rβ+1)})``. Theorem 1's bias and variance terms have the same
shape as those of kernel ridge regression on ``T`` samples, the *ridge proxy*
(``papers/ntk.md``, numerical check 3)

``P(T) = Σ_k e_k λ²/(μ_k + λ)²  +  (σ²/T) Σ_k N(d,k) μ_k²/(μ_k + λ)²``,

per harmonic degree ``k`` with target energy ``e_k``, NTK eigenvalue ``μ_k`` and
multiplicity ``N(d, k)``. All risks here are ``‖g − g_ρ‖²_{L²(ρ_X)}`` (no factor ½).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from metalab.core.errors import ConfigError

__all__ = [
    "averaged_sgd_risk",
    "balanced_lambda0",
    "last_iterate_plateau",
    "predicted_exponent",
    "regularization",
    "ridge_proxy",
]


def predicted_exponent(r: float, beta: float) -> float:
    """Corollary 1's rate exponent ``2rβ/(2rβ+1)`` (risk ``∝ T^{−exponent}``)."""
    return 2 * r * beta / (2 * r * beta + 1)


def regularization(
    horizon: np.ndarray | float, *, r: float, beta: float, lambda0: float
) -> np.ndarray:
    """Corollary 1's ``λ(T) = λ₀ T^{−β/(2rβ+1)}``."""
    return lambda0 * np.asarray(horizon, dtype=float) ** (-beta / (2 * r * beta + 1))


def _padded(energy: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size)
    out[: min(size, energy.size)] = energy[:size]
    if energy[size:].sum() > 0:
        raise ConfigError("target energy extends beyond the spectrum's degrees")
    return out


def ridge_proxy(
    horizon: np.ndarray | float,
    lam: np.ndarray | float,
    *,
    mu: np.ndarray,
    multiplicity: np.ndarray,
    energy: np.ndarray,
    noise_variance: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The proxy's ``(bias, variance)`` at horizons ``T`` with regularization ``λ``."""
    t = np.atleast_1d(np.asarray(horizon, dtype=float))
    lam_arr = np.broadcast_to(np.asarray(lam, dtype=float), t.shape)[:, None]
    mu_pos = np.clip(mu, 0.0, None)[None, :]
    e = _padded(energy, mu.size)[None, :]
    bias = (e * lam_arr**2 / (mu_pos + lam_arr) ** 2).sum(-1)
    dof = (multiplicity[None, :] * mu_pos**2 / (mu_pos + lam_arr) ** 2).sum(-1)
    return bias, noise_variance * dof / t


def averaged_sgd_risk(
    horizon: np.ndarray | float,
    lam: np.ndarray | float,
    *,
    eta: float,
    mu: np.ndarray,
    multiplicity: np.ndarray,
    energy: np.ndarray,
    noise_variance: float,
    kappa_one: float,
) -> np.ndarray:
    """Expected risk of Algorithm 1 in the RKHS: exact mean plus the inflated variance term.

    Per mode the mean of the averaged iterate is the ridge solution times
    ``1 − (1 − q^{T+1})/((T+1)(1 − q))`` with ``q = 1 − η(μ_k + λ)`` (Theorem 1's
    optimization term, exactly), so the bias is ``Σ_k e_k (1 − shrink_k)²``. The variance is
    the proxy's ``(σ²/T) Σ_k N(d,k) μ_k²/(μ_k+λ)²`` times ``1/(1 − ηκ(1)/2)`` (to first order
    the iterate's own fluctuation inflates the label noise; ``‖ψ(x)‖² = κ(1)`` on the
    sphere). The fourth-moment remainder is not modelled. ``theory/ntk-asgd-rate.md``
    uses its local log–log slope as the slope to expect at finite ``T``.
    """
    t = np.atleast_1d(np.asarray(horizon, dtype=float))[:, None]
    lam_arr = np.broadcast_to(np.asarray(lam, dtype=float), t.shape[:1])[:, None]
    mu_pos = np.clip(mu, 0.0, None)[None, :]
    e = _padded(energy, mu.size)[None, :]
    rate = eta * (mu_pos + lam_arr)  # 1 − q
    transient = -np.expm1((t + 1) * np.log1p(-rate)) / ((t + 1) * rate)
    shrink = mu_pos / (mu_pos + lam_arr) * (1 - transient)
    bias = (e * (1 - shrink) ** 2).sum(-1)
    _, variance = ridge_proxy(
        t[:, 0],
        lam_arr[:, 0],
        mu=mu,
        multiplicity=multiplicity,
        energy=energy,
        noise_variance=noise_variance,
    )
    result: np.ndarray = bias + variance / (1 - eta * kappa_one / 2)
    return result


def balanced_lambda0(
    reference_horizon: float,
    *,
    r: float,
    beta: float,
    mu: np.ndarray,
    multiplicity: np.ndarray,
    energy: np.ndarray,
    noise_variance: float,
) -> float:
    """The constant ``λ₀`` at which the proxy's bias equals its variance at ``T_ref``.

    Corollary 1 fixes ``λ(T)`` up to a constant; balancing the two terms at the largest
    horizon is the oracle choice of that constant (it does not depend on measurements).
    """
    if noise_variance <= 0:
        raise ConfigError("balancing λ₀ needs label noise (noise variance > 0)")

    def gap(log_lambda0: float) -> float:
        lam = regularization(reference_horizon, r=r, beta=beta, lambda0=float(np.exp(log_lambda0)))
        bias, var = ridge_proxy(
            reference_horizon,
            lam,
            mu=mu,
            multiplicity=multiplicity,
            energy=energy,
            noise_variance=noise_variance,
        )
        return float(np.log(bias[0]) - np.log(var[0]))

    return float(np.exp(optimize.brentq(gap, -30.0, 10.0)))


def last_iterate_plateau(
    lam: np.ndarray | float,
    *,
    eta: float,
    mu: np.ndarray,
    multiplicity: np.ndarray,
    energy: np.ndarray,
    noise_variance: float,
) -> np.ndarray:
    """First-order stationary risk of the *last* iterate of constant-step SGD.

    Linearising ``θ ← θ − η(ψψᵀθ − yψ) − ηλθ`` around the ridge solution, the stationary
    covariance solves ``(Σ+λ)C + C(Σ+λ) = ησ²Σ`` to first order in ``η``, so the excess
    risk is the ridge bias plus ``(ησ²/2) Σ_k N(d,k) μ_k²/(μ_k + λ)``: a floor that does not
    shrink with ``T`` (it grows to ``ησ²κ(1)/2`` as ``λ → 0``). Averaging removes it.
    """
    lam_arr = np.atleast_1d(np.asarray(lam, dtype=float))[:, None]
    mu_pos = np.clip(mu, 0.0, None)[None, :]
    e = _padded(energy, mu.size)[None, :]
    bias = (e * lam_arr**2 / (mu_pos + lam_arr) ** 2).sum(-1)
    floor = (multiplicity[None, :] * mu_pos**2 / (mu_pos + lam_arr)).sum(-1)
    result: np.ndarray = bias + eta * noise_variance / 2 * floor
    return result
