"""The empirical NTK of a finite network against the Funk–Hecke spectrum.

For ``n`` points ``x_i`` uniform on ``S^{d−1}``, the eigenvalues of ``K/n`` with
``K_ij = ⟨∇_Θ g(x_i), ∇_Θ g(x_j)⟩`` (a network of width ``M`` at its symmetric
initialization, Jacobians by :mod:`torch.func`) estimate the eigenvalues ``λ_i`` of the
integral operator (Nitanda & Suzuki 2021, Sec. 2; Bietti & Mairal 2019): sorted with
multiplicity ``N(d, k)``, they should match the Funk–Hecke ``μ_k``, up to the ``O(1/√n)``
sampling error and the ``O(1/√M)`` finite-width error.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from metalab.core.errors import ConfigError
from metalab.core.stats import LogLogFit, fit_loglog
from metalab.ntk.activations import Activation
from metalab.ntk.network import empirical_ntk, symmetric_init
from metalab.ntk.spectrum import (
    NTKSpectrum,
    harmonic_multiplicity,
    ntk_dot_kernel,
    ntk_spectrum,
)
from metalab.ntk.sphere import sample_sphere

__all__ = ["SpectrumComparison", "check_spectrum_inputs", "compare_spectra"]

_MAX_DIM = 100  # the paper's largest d; d = 400 gave NaN Funk–Hecke eigenvalues


def check_spectrum_inputs(*, dim: int, points: int) -> None:
    """Reject what :func:`compare_spectra` cannot measure, before any work is done.

    Raises:
        ConfigError: fewer than 10 points, or d outside 2..100.
    """
    if points < 10:
        raise ConfigError(f"need at least 10 points for a spectrum, got {points}")
    if not 2 <= dim <= _MAX_DIM:
        raise ConfigError(
            f"the input dimension d must be between 2 and {_MAX_DIM} (data on S^(d-1)), got {dim}"
        )


@dataclass(frozen=True)
class SpectrumComparison:
    """Predicted vs measured NTK eigenvalues (sorted, with multiplicity)."""

    spectrum: NTKSpectrum
    predicted: np.ndarray  # (n,) Funk–Hecke eigenvalues with multiplicity, descending
    measured: np.ndarray  # (n,) eigenvalues of the empirical Gram / n, descending
    gram_error: float  # ‖K_emp − K_analytic‖_F / ‖K_analytic‖_F
    width: int
    points: int

    def relative_errors(self, count: int) -> np.ndarray:
        """``|measured − predicted| / predicted`` for the ``count`` largest eigenvalues."""
        return np.abs(self.measured[:count] - self.predicted[:count]) / self.predicted[:count]

    def block_errors(self, blocks: int) -> np.ndarray:
        """Relative error of the block-mean measured eigenvalue, for the first ``blocks`` blocks.

        A block is a run of equal predicted eigenvalues (one harmonic degree): the split of
        a degenerate eigenvalue by sampling averages out within its block.
        """
        edges = (
            np.flatnonzero(
                ~np.isclose(self.predicted[1:], self.predicted[:-1], rtol=1e-9, atol=0.0)
            )
            + 1
        )
        bounds = np.concatenate([[0], edges, [self.predicted.size]])[: blocks + 1]
        return np.array(
            [
                self.measured[lo:hi].mean() / self.predicted[lo:hi].mean() - 1
                for lo, hi in itertools.pairwise(bounds)
            ]
        )

    def decay_fit(self, low: int, high: int, *, measured: bool = True) -> LogLogFit:
        """Fit ``λ_i ∝ i^{slope}`` over sorted indices ``low..high`` (1-based)."""
        values = self.measured if measured else self.predicted
        if not 1 <= low < high <= values.size:
            raise ConfigError(f"index window {low}..{high} outside 1..{values.size}")
        index = np.arange(low, high + 1)
        return fit_loglog(index, values[index - 1])


def compare_spectra(
    activation: Activation,
    *,
    dim: int,
    width: int,
    points: int,
    generator: torch.Generator,
    radius: float = 1.0,
    gamma: float = 1.0,
    device: torch.device | str = "cpu",
) -> SpectrumComparison:
    """Empirical NTK spectrum of one symmetric-init network vs the Funk–Hecke prediction.

    Raises:
        ConfigError: fewer than 10 points, d outside 2..100, or an odd/non-positive width.
    """
    check_spectrum_inputs(dim=dim, points=points)
    p0 = symmetric_init([width], dim, radius=radius, generator=generator)[0]
    x = sample_sphere((points,), dim, generator=generator, dtype=torch.float64)
    params = {"a": p0[0], "B": p0[1 : dim + 1].T.contiguous(), "c": p0[dim + 1]}
    params = {k: v.to(device) for k, v in params.items()}
    gram = empirical_ntk(params, x.to(device), activation, gamma=gamma).cpu()
    angles = np.arccos((x @ x.T).clamp(-1.0, 1.0).numpy())
    grid = np.linspace(0.0, np.pi, 1025)  # κ(cos θ) is smooth in θ: interpolate finely
    table = ntk_dot_kernel(np.cos(grid), activation, dim=dim, radius=radius, gamma=gamma)
    analytic = np.interp(angles, grid, table)
    error = float(np.linalg.norm(gram.numpy() - analytic) / np.linalg.norm(analytic))
    measured = np.sort(np.linalg.eigvalsh(gram.numpy() / points))[::-1]
    degree = 1
    while int(harmonic_multiplicity(dim, np.arange(degree + 1)).sum()) < points:
        degree += 1
    spectrum = ntk_spectrum(activation, dim=dim, max_degree=degree, radius=radius, gamma=gamma)
    return SpectrumComparison(
        spectrum=spectrum,
        predicted=spectrum.sorted_eigenvalues(points),
        measured=measured,
        gram_error=error,
        width=width,
        points=points,
    )
