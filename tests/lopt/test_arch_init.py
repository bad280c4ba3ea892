"""The hand-designed starting points of the MLP learned optimizer compute what they claim."""

from __future__ import annotations

import pytest
import torch

from metalab.core.errors import ConfigError
from metalab.lopt.arch_init import make_init_theta, mlp_theta_like_momentum
from metalab.lopt.arch_mlp import MLPArch
from metalab.lopt.mlp_lopt import BETAS, MLPLOptShapes, Segments, mlp_lopt_step


def _setup(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    segments = Segments.from_shapes([(5, 3), (3,), (7,)], torch.device("cpu"))
    params = torch.randn(1, 25, generator=gen)
    grads = torch.randn(1, 25, generator=gen)
    moments = torch.randn(1, 25, len(BETAS), generator=gen)
    return segments, params, grads, moments


def _normalized_momentum(grads, moments, segments, beta=0.9):
    k = BETAS.index(beta)
    m = beta * moments[..., k] + (1 - beta) * grads
    return segments.normalize(m, dim=1)


@pytest.mark.parametrize("lr", [1e-3, 0.02])
def test_momentum_init_is_exactly_normalized_momentum(lr):
    segments, params, grads, moments = _setup()
    theta = mlp_theta_like_momentum(lr, residual=0.0).unsqueeze(0)
    t = torch.tensor([7])
    new, _ = mlp_lopt_step(theta, params, grads, moments, t, segments)
    expected = lr * _normalized_momentum(grads, moments, segments)
    torch.testing.assert_close(
        params - new, expected, rtol=1e-4, atol=5e-7
    )  # float32 rounding of p − (p − step)
    per_tensor_rms = segments.rms(params - new, dim=1)
    torch.testing.assert_close(
        per_tensor_rms, torch.full_like(per_tensor_rms, lr), rtol=1e-4, atol=0
    )


def test_clipped_momentum_init_clamps_each_parameter():
    segments, params, grads, moments = _setup(1)
    theta = mlp_theta_like_momentum(0.01, clip=0.3, residual=0.0).unsqueeze(0)
    new, _ = mlp_lopt_step(theta, params, grads, moments, torch.tensor([0]), segments)
    expected = 0.01 * _normalized_momentum(grads, moments, segments).clamp(-0.3, 0.3)
    torch.testing.assert_close(
        params - new, expected, rtol=1e-4, atol=5e-7
    )  # float32 rounding of p − (p − step)
    assert (params - new).abs().max() <= 0.01 * 0.3 + 1e-7


def test_residual_part_is_small_and_seeded():
    segments, params, grads, moments = _setup(2)
    exact = mlp_theta_like_momentum(0.01, residual=0.0).unsqueeze(0)
    a = mlp_theta_like_momentum(0.01, generator=torch.Generator().manual_seed(3))
    b = mlp_theta_like_momentum(0.01, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and (a != 0).sum() > 1000  # every weight perturbable by ES
    t = torch.tensor([3])
    step_exact = params - mlp_lopt_step(exact, params, grads, moments, t, segments)[0]
    step_mixed = params - mlp_lopt_step(a.unsqueeze(0), params, grads, moments, t, segments)[0]
    rel = (step_mixed - step_exact).norm() / step_exact.norm()
    assert 0 < rel < 0.05


def test_momentum_init_trains_a_quadratic_where_random_init_does_not_help():
    gen = torch.Generator().manual_seed(0)
    segments = Segments.from_shapes([(20,)], torch.device("cpu"))
    lam = torch.linspace(0.5, 2.0, 20)
    arch = MLPArch()
    thetas = torch.stack(
        [mlp_theta_like_momentum(0.02, clip=0.3, generator=gen), arch.init_theta(generator=gen)]
    )
    params = torch.ones(2, 20)
    state = arch.init_state(params, segments)
    for t in range(200):
        grads = lam * params
        params, state = arch.step(thetas, params, grads, state, torch.full((2,), t), segments)
    loss = 0.5 * (lam * params.square()).sum(dim=1)
    assert loss[0] < 0.01 * 0.5 * lam.sum()
    assert loss[0] < loss[1]


def test_make_init_theta_parses_specs():
    gen = torch.Generator().manual_seed(0)
    assert make_init_theta("random", generator=gen) is None
    theta = make_init_theta("momentum:0.02:0.5", generator=torch.Generator().manual_seed(0))
    expected = mlp_theta_like_momentum(0.02, clip=0.5, generator=torch.Generator().manual_seed(0))
    assert theta is not None and torch.equal(theta, expected)
    assert make_init_theta("momentum", generator=gen).shape == (MLPLOptShapes().size,)


@pytest.mark.parametrize(
    "spec", ["adam", "random:1", "momentum:x", "momentum:1:2:3", "momentum:-1", "momentum:0.1:0"]
)
def test_bad_init_specs_raise_config_error(spec):
    with pytest.raises(ConfigError):
        make_init_theta(spec, generator=torch.Generator())


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError):
        mlp_theta_like_momentum(0.01, beta=0.8, residual=0.0)
    with pytest.raises(ConfigError):
        mlp_theta_like_momentum(0.01, clip=0.1, shapes=MLPLOptShapes(3), residual=0.0)
    with pytest.raises(ConfigError):
        mlp_theta_like_momentum(0.01)  # residual without a generator
