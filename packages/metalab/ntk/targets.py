"""Regression targets with a prescribed source exponent, and their noisy samples.

Assumption (A3) of Nitanda & Suzuki (2021): ``g_ρ = Σ^r h`` with ``h ∈ L²``. In the
harmonic basis with NTK eigenvalue ``μ_k`` per degree, the target used here puts energy

``e_k = Σ_{j: deg j = k} c_j² ∝ μ_k^{2r} k^{−1} (1 + log k)^{−p}``,  ``1 ≤ k ≤ K``

on degree ``k`` (a random direction inside each degree), i.e. ``g_ρ = Σ^r h`` with
``‖h‖²`` per degree ``∝ k^{−1}(1 + log k)^{−p}`` (``≍ i^{−1}`` per eigenfunction index, up
to the log factor). ``p = 2`` (the default, ``papers/ntk.md``, numerical check 1) keeps
``‖Σ^{−r} g_ρ‖`` bounded as ``K → ∞``, but only barely, so the ridge bias decays like
``λ^{2r}/log²(1/λ)``. ``p = 0`` is the critical (lower-bound) profile: for ``r < 1`` its bias
is ``≍ λ^{2r}`` with no log factor while ``λ`` resolves degrees ``≪ K`` (``‖h‖²`` grows like
``log K``, finite at the truncation degree ``K``). The whole function is scaled to
``sup |g_ρ| = sup_norm`` and labels get uniform noise ``U[−a, a]`` of variance ``a²/3``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.ntk.spectrum import NTKSpectrum
from metalab.ntk.sphere import basis_degrees, harmonic_basis, sphere_quadrature

__all__ = ["SourceTarget", "make_source_target", "source_energies"]


def source_energies(mu: np.ndarray, *, r: float, log_power: float = 2.0) -> np.ndarray:
    """Unnormalised energy per degree ``μ_k^{2r} k^{−1} (1 + log k)^{−p}`` (0 at ``k = 0``)."""
    k = np.arange(mu.size, dtype=float)
    energy = np.zeros(mu.size)
    positive = np.clip(mu[1:], 0.0, None)
    energy[1:] = positive ** (2 * r) / k[1:] / (1 + np.log(k[1:])) ** log_power
    return energy


@dataclass(frozen=True)
class SourceTarget:
    """``g_ρ = Σ_j c_j φ_j`` in the orthonormal harmonic basis, with label noise."""

    dim: int
    r: float
    coef: Tensor  # (J,) coefficients c_j in the basis of harmonic_basis(·, max_degree)
    max_degree: int
    noise_half_width: float

    @property
    def noise_variance(self) -> float:
        """``σ² = a²/3`` of the uniform label noise ``U[−a, a]``."""
        return self.noise_half_width**2 / 3

    def degree_energy(self) -> np.ndarray:
        """``e_k = Σ_{deg j = k} c_j²`` for ``k = 0..K``."""
        degrees = basis_degrees(self.dim, self.max_degree)
        return np.bincount(
            degrees, weights=self.coef.double().numpy() ** 2, minlength=self.max_degree + 1
        )

    def __call__(self, x: Tensor) -> Tensor:
        """``g_ρ(x)`` at points ``x`` of shape ``(..., d)``."""
        return harmonic_basis(x, self.max_degree) @ self.coef.to(x.dtype)

    def sample_labels(self, values: Tensor, *, generator: torch.Generator) -> Tensor:
        """``y = g_ρ(x) + ε`` given ``values = g_ρ(x)``, ``ε ~ U[−a, a]`` i.i.d."""
        noise = torch.rand(values.shape, generator=generator, dtype=values.dtype)
        return values + (2 * noise - 1) * self.noise_half_width


def make_source_target(
    spectrum: NTKSpectrum,
    *,
    r: float,
    max_degree: int,
    generator: torch.Generator,
    sup_norm: float = 0.5,
    noise_half_width: float = 0.5,
    log_power: float = 2.0,
) -> SourceTarget:
    """Draw a target of source exponent ``r`` for ``spectrum`` (see the module docstring).

    ``log_power`` is the ``p`` of the energy profile (2: inside the class by a log factor;
    0: the critical profile whose bias decays exactly like ``λ^{2r}`` for ``r < 1``).

    Raises:
        ConfigError: ``r`` outside ``(0, 1]``, a degree beyond the spectrum, bad scales,
            a negative ``log_power``.
    """
    if not 0 < r <= 1:
        raise ConfigError(f"source exponent r must lie in (0, 1], got {r}")
    if not 1 <= max_degree <= spectrum.max_degree:
        raise ConfigError(
            f"target degree must be in 1..{spectrum.max_degree} (the spectrum's), got {max_degree}"
        )
    if sup_norm <= 0 or noise_half_width < 0:
        raise ConfigError("sup_norm must be positive and noise_half_width non-negative")
    if not log_power >= 0:
        raise ConfigError(f"target log_power must be ≥ 0, got {log_power}")
    energy = source_energies(spectrum.mu[: max_degree + 1], r=r, log_power=log_power)
    degrees = basis_degrees(spectrum.dim, max_degree)
    direction = torch.randn(degrees.size, generator=generator, dtype=torch.float64)
    per_degree = torch.zeros(max_degree + 1, dtype=torch.float64)
    per_degree.index_add_(0, torch.from_numpy(degrees), direction**2)
    index = torch.from_numpy(degrees)
    coef = direction / per_degree[index].sqrt() * torch.from_numpy(np.sqrt(energy))[index]
    points, _ = sphere_quadrature(spectrum.dim, 4 * max_degree + 8, dtype=torch.float64)
    peak = (harmonic_basis(points, max_degree) @ coef).abs().max()
    return SourceTarget(
        dim=spectrum.dim,
        r=float(r),
        coef=coef * (sup_norm / peak),
        max_degree=max_degree,
        noise_half_width=float(noise_half_width),
    )
