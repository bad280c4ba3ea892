"""The NTK of the two-layer model as a dot-product kernel on the sphere, and its spectrum.

Nitanda & Suzuki (2021), Sec. 2: with ``b`` uniform on ``S^{d−1}``,
``k(x, x') = E_b[σ(bᵀx)σ(bᵀx')] + R²(xᵀx' + γ²) E_b[σ'(bᵀx)σ'(bᵀx')] = κ(xᵀx')``.
For inputs uniform on the sphere its integral operator is diagonal in spherical harmonics;
the eigenvalue of degree ``k`` is given by the Funk–Hecke formula

``μ_k = (|S^{d−2}| / |S^{d−1}|) ∫_0^π κ(cos θ) P_k^{(d)}(cos θ) sin^{d−2}θ dθ``

with ``P_k^{(d)}`` the Gegenbauer polynomial normalised to ``P_k(1) = 1`` (Chebyshev on
the circle). ``κ`` is exact for ReLU (arc-cosine formulas) and computed by quadrature for
smooth activations: the projection of ``b`` on ``span(x, x')`` is ``ρ(cos φ, sin φ)`` with
``φ`` uniform and ``ρ² ~ Beta(1, (d−2)/2)`` (``ρ = 1`` on the circle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special

from metalab.core.errors import ConfigError
from metalab.core.stats import LogLogFit, fit_loglog
from metalab.ntk.activations import Activation, ReLU

__all__ = [
    "NTKSpectrum",
    "funk_hecke_eigenvalues",
    "gegenbauer_normalized",
    "harmonic_multiplicity",
    "ntk_dot_kernel",
    "ntk_spectrum",
]


def harmonic_multiplicity(dim: int, degrees: np.ndarray) -> np.ndarray:
    """Dimension ``N(d, k)`` of the degree-``k`` spherical harmonics on ``S^{d−1}``."""
    k = np.asarray(degrees, dtype=np.int64)
    if dim == 2:
        return np.where(k == 0, 1, 2)
    top = special.comb(k + dim - 3, dim - 2, exact=False)
    counts = np.where(k == 0, 1.0, (2 * k + dim - 2) / np.maximum(k, 1) * top)
    return np.rint(counts).astype(np.int64)


def gegenbauer_normalized(degrees: np.ndarray, t: np.ndarray, *, dim: int) -> np.ndarray:
    """``P_k^{(d)}(t)`` with ``P_k(1) = 1``, shape ``(len(degrees), len(t))``."""
    k = np.asarray(degrees)[:, None]
    t = np.asarray(t, dtype=float)[None, :]
    if dim == 2:
        return np.cos(k * np.arccos(np.clip(t, -1.0, 1.0)))
    alpha = (dim - 2) / 2
    return special.eval_gegenbauer(k, alpha, t) / special.eval_gegenbauer(k, alpha, 1.0)


def _check_dim(dim: int) -> None:
    if not isinstance(dim, int) or dim < 2:
        raise ConfigError(f"input dimension must be an integer ≥ 2, got {dim!r}")


def _relu_kernel(u: np.ndarray, *, dim: int, radius: float, gamma: float) -> np.ndarray:
    theta = np.arccos(np.clip(u, -1.0, 1.0))
    first = (np.sqrt(np.clip(1 - u**2, 0.0, None)) + (np.pi - theta) * u) / (2 * np.pi * dim)
    return first + radius**2 * (u + gamma**2) * (np.pi - theta) / (2 * np.pi)


def _radial_rule(dim: int, n_rho: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``ρ`` and weights for ``ρ² ~ Beta(1, (d−2)/2)`` (Gauss–Jacobi in ``ρ²``)."""
    if dim == 2:
        return np.ones(1), np.ones(1)
    x, w = special.roots_jacobi(n_rho, (dim - 4) / 2, 0.0)
    return np.sqrt((1 + x) / 2), w / w.sum()


def ntk_dot_kernel(
    u: np.ndarray,
    activation: Activation,
    *,
    dim: int,
    radius: float = 1.0,
    gamma: float = 1.0,
    n_phi: int = 512,
    n_rho: int = 48,
) -> np.ndarray:
    """``κ(u)`` of the paper's NTK (Sec. 2) at cosines ``u`` (b uniform on ``S^{d−1}``).

    Args:
        u: cosines ``xᵀx'`` in ``[−1, 1]``.
        activation: σ; ReLU uses the closed form, others the (spectrally accurate)
            trapezoid rule in ``φ`` and Gauss–Jacobi rule in ``ρ²``.
        dim: ``d``, inputs on ``S^{d−1}``.
        radius: ``R`` (output weights ``±R``).
        gamma: bias scale ``γ``.
        n_phi: trapezoid nodes in ``φ``.
        n_rho: Gauss–Jacobi nodes in ``ρ²`` (ignored on the circle).
    """
    _check_dim(dim)
    u = np.asarray(u, dtype=float)
    if isinstance(activation, ReLU):
        return _relu_kernel(u, dim=dim, radius=radius, gamma=gamma)
    theta = np.arccos(np.clip(u, -1.0, 1.0)).ravel()
    rho, weights = _radial_rule(dim, n_rho)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    z1 = torch.from_numpy(rho[:, None] * np.cos(phi)[None, :])  # (rho, phi)
    s1, ds1 = activation.value_and_derivative(z1)
    out_s, out_ds = np.zeros(theta.size), np.zeros(theta.size)
    for start in range(0, theta.size, 256):  # bounded memory, not a hot path
        th = theta[start : start + 256]
        z2 = torch.from_numpy(rho[:, None, None] * np.cos(phi[None, None, :] - th[None, :, None]))
        s2, ds2 = activation.value_and_derivative(z2)
        w = torch.from_numpy(weights)[:, None]
        out_s[start : start + th.size] = (w * (s1[:, None, :] * s2).mean(-1)).sum(0).numpy()
        out_ds[start : start + th.size] = (w * (ds1[:, None, :] * ds2).mean(-1)).sum(0).numpy()
    flat = out_s + radius**2 * (np.cos(theta) + gamma**2) * out_ds
    return flat.reshape(u.shape)


def funk_hecke_eigenvalues(
    kernel: Callable[[np.ndarray], np.ndarray],
    *,
    dim: int,
    max_degree: int,
    n_nodes: int | None = None,
) -> np.ndarray:
    """Eigenvalues ``μ_0..μ_K`` of a dot-product kernel on ``L²(uniform on S^{d−1})``.

    ``kernel`` is a callable ``κ(u)``; the integral is Gauss–Legendre in ``θ ∈ [0, π]``,
    where ``κ(cos θ)`` is analytic for the kernels used here.
    """
    _check_dim(dim)
    n = n_nodes or 2 * max_degree + 400
    x, w = special.roots_legendre(n)
    theta, w = (x + 1) * np.pi / 2, w * np.pi / 2
    values = np.asarray(kernel(np.cos(theta)), dtype=float)
    degrees = np.arange(max_degree + 1)
    poly = gegenbauer_normalized(degrees, np.cos(theta), dim=dim)
    ratio = special.gamma(dim / 2) / (np.sqrt(np.pi) * special.gamma((dim - 1) / 2))
    result: np.ndarray = ratio * poly @ (values * np.sin(theta) ** (dim - 2) * w)
    return result


@dataclass(frozen=True)
class NTKSpectrum:
    """Per-degree NTK eigenvalues ``μ_k`` on ``S^{d−1}`` and what follows from them."""

    dim: int
    mu: np.ndarray  # (K+1,), μ_k for k = 0..K
    multiplicity: np.ndarray  # (K+1,), N(d, k)
    kappa_one: float  # κ(1) = sup_x k(x, x)
    activation: str

    @property
    def max_degree(self) -> int:
        """Largest degree ``K`` computed."""
        return int(self.mu.size - 1)

    @property
    def beta(self) -> float:
        """The capacity exponent of Corollary 2: ``λ_i ≍ i^{−β}`` with ``β = d/(d−1)``."""
        return self.dim / (self.dim - 1)

    def sorted_eigenvalues(self, count: int | None = None) -> np.ndarray:
        """Eigenvalues with multiplicity, in decreasing order (the ``λ_i`` of (A4))."""
        values = np.repeat(self.mu, self.multiplicity)
        values = np.sort(values)[::-1]
        return values if count is None else values[:count]

    def degree_fit(self, low: int, high: int, *, parity: int | None = None) -> LogLogFit:
        """Fit ``μ_k ≍ k^{slope}`` over ``low ≤ k ≤ high`` (optionally one parity only)."""
        k = np.arange(low, high + 1)
        if parity is not None:
            k = k[k % 2 == parity]
        return fit_loglog(k, self.mu[k])

    def index_fit(self, low: int, high: int) -> LogLogFit:
        """Fit ``λ_i ≍ i^{−β}`` over sorted indices ``low ≤ i ≤ high`` (1-based)."""
        values = self.sorted_eigenvalues(high)
        index = np.arange(1, high + 1)
        keep = index >= low
        return fit_loglog(index[keep], values[keep])


def ntk_spectrum(
    activation: Activation,
    *,
    dim: int,
    max_degree: int,
    radius: float = 1.0,
    gamma: float = 1.0,
) -> NTKSpectrum:
    """Funk–Hecke eigenvalues of the paper's NTK for ``activation`` on ``S^{d−1}``.

    Raises:
        ConfigError: ``dim < 2`` or ``max_degree < 1``.
    """
    _check_dim(dim)
    if max_degree < 1:
        raise ConfigError(f"max_degree must be ≥ 1, got {max_degree}")

    def kappa(u: np.ndarray) -> np.ndarray:
        return ntk_dot_kernel(u, activation, dim=dim, radius=radius, gamma=gamma)

    mu = funk_hecke_eigenvalues(kappa, dim=dim, max_degree=max_degree)
    return NTKSpectrum(
        dim=dim,
        mu=mu,
        multiplicity=harmonic_multiplicity(dim, np.arange(max_degree + 1)),
        kappa_one=float(kappa(np.ones(1))[0]),
        activation=activation.describe(),
    )
