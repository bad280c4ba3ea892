from __future__ import annotations

import numpy as np
import pytest
import torch

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.ntk import (
    Activation,
    activation_names,
    funk_hecke_eigenvalues,
    harmonic_multiplicity,
    make_activation,
    ntk_dot_kernel,
    ntk_spectrum,
)


@pytest.mark.parametrize("name", activation_names())
def test_every_registered_activation_has_the_right_derivative(name: str) -> None:
    act = make_activation(name)
    u = torch.linspace(-2, 2, 41, dtype=torch.float64)[1::2]  # avoids ReLU's kink at 0
    u.requires_grad_(True)
    (grad,) = torch.autograd.grad(act(u).sum(), u)
    value, deriv = act.value_and_derivative(u.detach())
    torch.testing.assert_close(deriv, grad)
    torch.testing.assert_close(value, act(u).detach())


def test_unknown_activation_and_bad_options_are_one_line_errors() -> None:
    with pytest.raises(UnknownNameError, match="did you mean swish"):
        make_activation("swsh")
    with pytest.raises(ConfigError, match="takes no sharpness"):
        make_activation("tanh", sharpness=3.0)
    with pytest.raises(ConfigError):
        make_activation("swish", sharpness=-1.0)


@pytest.mark.parametrize(("dim", "expected"), [(2, {0: 0.5, 2: 0.25}), (3, {0: 1 / 3, 2: 2 / 15})])
def test_funk_hecke_on_a_known_kernel(dim: int, expected: dict[int, float]) -> None:
    # u² = (1/2)(1 + T_2) on the circle; (1/3)P_0 + (2/3)P_2 on S² with μ_2 = (2/3)/5.
    mu = funk_hecke_eigenvalues(lambda u: u**2, dim=dim, max_degree=6)
    want = np.zeros(7)
    for k, v in expected.items():
        want[k] = v
    np.testing.assert_allclose(mu, want, atol=1e-12)


def test_multiplicities() -> None:
    np.testing.assert_array_equal(harmonic_multiplicity(2, np.arange(4)), [1, 2, 2, 2])
    np.testing.assert_array_equal(harmonic_multiplicity(3, np.arange(4)), [1, 3, 5, 7])
    np.testing.assert_array_equal(harmonic_multiplicity(4, np.arange(3)), [1, 4, 9])


class _QuadratureReLU(Activation):
    """ReLU through the generic quadrature path (not the closed form)."""

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(u, 0)

    def derivative(self, u: torch.Tensor) -> torch.Tensor:
        return (u > 0).to(u.dtype)


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_relu_closed_form_matches_quadrature(dim: int) -> None:
    u = np.linspace(-0.95, 0.95, 9)
    exact = ntk_dot_kernel(u, make_activation("relu"), dim=dim, gamma=0.7)
    quad = ntk_dot_kernel(u, _QuadratureReLU(), dim=dim, gamma=0.7, n_phi=4096, n_rho=64)
    np.testing.assert_allclose(quad, exact, rtol=2e-3, atol=5e-4)  # O(1/n_phi) at kinks


@pytest.mark.parametrize("dim", [2, 3])
def test_trace_identity_and_decay(dim: int) -> None:
    spec = ntk_spectrum(make_activation("relu"), dim=dim, max_degree=400)
    # Σ_k N(d,k) μ_k = κ(1) (Mercer at x = x'); the tail beyond degree 400 is tiny.
    assert spec.kappa_one == pytest.approx((spec.mu * spec.multiplicity).sum(), rel=2e-3)
    fit = spec.degree_fit(100, 300)
    assert fit.slope == pytest.approx(-dim, abs=0.05)  # μ_k ≍ k^{−d}
    assert spec.beta == pytest.approx(dim / (dim - 1))


def test_odd_eigenvalues_vanish_without_bias() -> None:
    with_bias = ntk_spectrum(make_activation("relu"), dim=2, max_degree=12, gamma=1.0)
    without = ntk_spectrum(make_activation("relu"), dim=2, max_degree=12, gamma=0.0)
    assert np.abs(without.mu[3::2]).max() < 1e-10 * without.mu[0]
    assert with_bias.mu[3::2].min() > 1e-4


def test_swish_approaches_relu_at_low_degrees() -> None:
    relu = ntk_spectrum(make_activation("relu"), dim=2, max_degree=10)
    swish = ntk_spectrum(make_activation("swish", sharpness=200.0), dim=2, max_degree=10)
    np.testing.assert_allclose(swish.mu[:6], relu.mu[:6], rtol=0.03)


def test_bad_dimension_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        ntk_spectrum(make_activation("relu"), dim=1, max_degree=3)
