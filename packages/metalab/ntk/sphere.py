"""Data on the sphere: uniform sampling, real spherical-harmonic bases, exact quadrature.

The bases are orthonormal in ``L²`` of the *uniform probability* measure on ``S^{d−1}``
(the paper's ``ρ_X``), so that the excess risk of ``f = Σ_j w_j φ_j`` against
``g = Σ_j c_j φ_j`` is ``Σ_j (w_j − c_j)²``. Circle: ``1, √2 cos kθ, √2 sin kθ``; sphere
``S²``: real harmonics ``P̄_km(cos θ){cos, sin}(mφ)`` with fully normalised associated Legendre
functions (recurrence in torch; checked against scipy's ``sph_harm_y`` in the tests).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy import special
from torch import Tensor

from metalab.core.errors import ConfigError

__all__ = [
    "SUPPORTED_DIMS",
    "basis_degrees",
    "harmonic_basis",
    "sample_sphere",
    "sphere_quadrature",
]

SUPPORTED_DIMS = (2, 3)


def _check(dim: int) -> None:
    if dim not in SUPPORTED_DIMS:
        raise ConfigError(f"harmonic bases exist for the circle (d=2) and S² (d=3); got d={dim}")


def sample_sphere(
    shape: tuple[int, ...], dim: int, *, generator: torch.Generator, dtype: torch.dtype
) -> Tensor:
    """Points uniform on ``S^{d−1}``, shape ``(*shape, dim)`` (normalised Gaussians)."""
    z = torch.randn((*shape, dim), generator=generator, dtype=dtype)
    return z / z.norm(dim=-1, keepdim=True)


def basis_degrees(dim: int, max_degree: int) -> np.ndarray:
    """Degree of each basis function of :func:`harmonic_basis` (in its column order)."""
    _check(dim)
    if dim == 2:
        return np.concatenate([[0], np.repeat(np.arange(1, max_degree + 1), 2)])
    return np.concatenate([np.full(2 * k + 1, k) for k in range(max_degree + 1)])


def _circle_basis(x: Tensor, max_degree: int) -> Tensor:
    angle = torch.atan2(x[..., 1], x[..., 0])
    k = torch.arange(1, max_degree + 1, dtype=x.dtype)
    arg = angle[..., None] * k
    pairs = torch.stack([torch.cos(arg), torch.sin(arg)], dim=-1) * np.sqrt(2.0)
    ones = torch.ones((*x.shape[:-1], 1), dtype=x.dtype)
    return torch.cat([ones, pairs.flatten(-2)], dim=-1)


@functools.lru_cache(maxsize=8)
def _legendre_recurrence(max_degree: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients over ``m``, per degree ``l``, of ``Q_lm = A z Q_{l−1,m} − B Q_{l−2,m} + C``.

    ``C`` holds the diagonal ``Q_mm`` (a constant), ``A`` the first step off it
    (``Q_{m+1,m} = √(2m+3) z Q_mm``) and the three-term recurrence beyond; entries with
    ``m > l`` stay zero.
    """
    size = max_degree + 1
    a, b, c = (np.zeros((size, size)) for _ in range(3))
    diag = 1.0
    for m in range(size):
        if m == 1:
            diag = diag * np.sqrt(3.0)
        elif m > 1:
            diag = diag * np.sqrt((2 * m + 1) / (2 * m))
        c[m, m] = diag
        if m + 1 < size:
            a[m + 1, m] = np.sqrt(2 * m + 3)
        for deg in range(m + 2, size):
            a[deg, m] = np.sqrt((2 * deg - 1) * (2 * deg + 1) / ((deg - m) * (deg + m)))
            b[deg, m] = np.sqrt(
                (2 * deg + 1)
                * (deg + m - 1)
                * (deg - m - 1)
                / ((deg - m) * (deg + m) * (2 * deg - 3))
            )
    return a, b, c


def _legendre_columns(z: Tensor, max_degree: int) -> Tensor:
    """``Q_lm = P̄_lm(z) / sin^m θ`` by the standard stable recurrence → ``(..., l, m)``.

    ``P̄_lm`` are the fully normalised associated Legendre functions (unit mean square of
    ``P̄_lm cos mφ`` over ``S²``). All orders ``m`` advance together, one degree at a time.
    """
    a, b, c = (torch.from_numpy(t).to(z.dtype) for t in _legendre_recurrence(max_degree))
    zc = z.unsqueeze(-1)
    previous = torch.zeros((*z.shape, max_degree + 1), dtype=z.dtype)
    current = torch.zeros_like(previous)
    rows = []
    for deg in range(max_degree + 1):
        nxt = (a[deg] * zc) * current - b[deg] * previous + c[deg]
        rows.append(nxt)
        previous, current = current, nxt
    return torch.stack(rows, dim=-2)


@functools.lru_cache(maxsize=8)
def _sphere2_columns(max_degree: int) -> tuple[Tensor, Tensor]:
    """Column order of the S² basis: flat ``(l, |m|)`` index and azimuthal index per column."""
    size = max_degree + 1
    legendre, azimuth = [], []
    for deg in range(size):
        for m in range(-deg, deg + 1):
            legendre.append(deg * size + abs(m))
            azimuth.append(m if m >= 0 else size - m)  # cos mφ part, or the sin part after it
    return torch.tensor(legendre), torch.tensor(azimuth)


def _sphere2_basis(x: Tensor, max_degree: int) -> Tensor:
    q = _legendre_columns(x[..., 2], max_degree).flatten(-2)
    planar = torch.complex(x[..., 0], x[..., 1])
    powers = [torch.ones_like(planar)]
    for _ in range(max_degree):
        powers.append(powers[-1] * planar)  # (x + iy)^m = sin^m θ e^{imφ}
    stacked = torch.stack(powers, dim=-1)
    trig = torch.cat([stacked.real, stacked.imag], dim=-1)  # (..., 2(K+1)): cos parts, sin parts
    legendre, azimuth = _sphere2_columns(max_degree)
    return q[..., legendre] * trig[..., azimuth]


def harmonic_basis(x: Tensor, max_degree: int) -> Tensor:
    """Orthonormal harmonics of degree ≤ ``max_degree`` at points ``x`` (``(..., d)``).

    Returns:
        ``(..., J)`` with ``J = 2K + 1`` on the circle and ``(K + 1)²`` on ``S²``.
    """
    _check(x.shape[-1])
    if x.shape[-1] == 2:
        return _circle_basis(x, max_degree)
    return _sphere2_basis(x, max_degree)


def sphere_quadrature(dim: int, resolution: int, *, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Points and weights (summing to 1) of an exact rule for the uniform measure.

    Exact for harmonics of degree ``< resolution``: equispaced on the circle,
    Gauss–Legendre in ``cos θ`` times equispaced azimuths on ``S²``.
    """
    _check(dim)
    if dim == 2:
        angle = 2 * np.pi * np.arange(2 * resolution) / (2 * resolution)
        points = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
        weights = np.full(angle.size, 1.0 / angle.size)
    else:
        t, w = special.roots_legendre(resolution)
        phi = 2 * np.pi * np.arange(2 * resolution) / (2 * resolution)
        s = np.sqrt(1 - t**2)
        points = np.stack(
            [
                (s[:, None] * np.cos(phi)[None, :]).ravel(),
                (s[:, None] * np.sin(phi)[None, :]).ravel(),
                np.repeat(t, phi.size),
            ],
            axis=-1,
        )
        weights = np.repeat(w / 2, phi.size) / phi.size
    return torch.from_numpy(points).to(dtype), torch.from_numpy(weights).to(dtype)
