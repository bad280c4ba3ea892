"""Estimators by value on a linear-quadratic system whose gradient is known in closed form.

The full meta-loss of :class:`LinearQuadratic` is quadratic in θ, so its Gaussian-smoothed
gradient equals the exact one; unbiased estimators must match it within a few standard
errors, biased ones must miss it by many.
"""

import pytest
import torch

from metalab.core.errors import ConfigError
from metalab.lopt import (
    PES,
    TBPTT,
    FullBPTT,
    FullES,
    LinearQuadratic,
    TruncatedES,
    estimate_statistics,
    estimator_resolver,
    linear_quadratic_loss,
    make_estimator,
)

SYSTEM = LinearQuadratic(dim=3, horizon=10)
THETA = SYSTEM.initial_theta()
EXACT = linear_quadratic_loss(SYSTEM, THETA)[1].float()

# name -> (options, windows per sample, episodes per sample, unbiased?)
TABLE = {
    "full-es": ({"pairs": 20, "sigma": 0.1}, 1, 1, True),
    "pes": ({"pairs": 20, "sigma": 0.1, "truncation": 5}, 2, 1, True),
    "truncated-es": ({"pairs": 20, "sigma": 0.1, "truncation": 5}, 2, 1, False),
    "tbptt": ({"truncation": 5}, 2, 1, False),
    "bptt": ({}, 1, 1, True),
}


def test_every_registered_estimator_is_in_the_table():
    assert {cls.name for cls in estimator_resolver} == set(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_estimator_against_the_exact_gradient(name):
    options, windows, episodes, unbiased = TABLE[name]
    estimator = make_estimator(name, **options)
    stats = estimate_statistics(
        SYSTEM,
        estimator,
        THETA,
        repeats=60,
        windows=windows,
        generator=torch.Generator().manual_seed(1),
    )
    target = EXACT * episodes
    error = (stats.mean - target).abs()
    if stats.stderr.max() == 0:  # deterministic estimators: exact or clearly wrong
        assert torch.allclose(stats.mean, target, rtol=1e-4) is unbiased
        return
    z = error / stats.stderr
    if unbiased:
        assert z.max() < 4.5, (stats.mean, target, z)
    else:
        assert z.max() > 10, (stats.mean, target, z)


@pytest.mark.parametrize(
    ("horizon", "truncation", "windows", "episodes"),
    [(10, 4, 5, 2), (6, 4, 3, 2), (5, 1, 5, 1), (3, 7, 3, 7)],
)
def test_pes_mid_window_resets_are_credited_correctly(horizon, truncation, windows, episodes):
    """Windows straddling episode ends: the sum over lcm(T, K) steps estimates episodes·∇L."""
    system = LinearQuadratic(dim=2, horizon=horizon, decay=0.8, coupling=0.3)
    theta = torch.tensor([0.2, -0.4])
    exact = linear_quadratic_loss(system, theta)[1].float() * episodes
    stats = estimate_statistics(
        system,
        PES(pairs=50, sigma=0.05, truncation=truncation),
        theta,
        repeats=40,
        windows=windows,
        generator=torch.Generator().manual_seed(2),
    )
    z = (stats.mean - exact).abs() / stats.stderr
    assert z.max() < 4.5, (stats.mean, exact, z)


class NaivePES(PES):
    """Credits every loss of a window to ξ + ε and zeroes ξ after any reset."""

    @staticmethod
    def credit(delta, resets, xi, eps):
        grad_sum = delta.sum(dim=1) @ (xi + eps)
        return grad_sum, torch.where(
            resets.any(dim=1, keepdim=True), torch.zeros_like(xi), xi + eps
        )


def test_naive_reset_crediting_is_measurably_biased():
    """The mid-window test above has power: the naive rule fails it on the same system."""
    system = LinearQuadratic(dim=2, horizon=6, decay=0.8, coupling=0.3)
    theta = torch.tensor([0.2, -0.4])
    exact = linear_quadratic_loss(system, theta)[1].float() * 2
    stats = estimate_statistics(
        system,
        NaivePES(pairs=50, sigma=0.05, truncation=4),
        theta,
        repeats=40,
        windows=3,
        generator=torch.Generator().manual_seed(3),
    )
    assert ((stats.mean - exact).abs() / stats.stderr).max() > 6


def test_pes_credit_by_hand():
    delta = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    resets = torch.tensor([[False, False, False], [False, True, False], [False, False, True]])
    xi = torch.tensor([[10.0], [10.0], [10.0]])
    eps = torch.tensor([[1.0], [1.0], [1.0]])
    grad_sum, new_xi = PES.credit(delta, resets, xi, eps)
    # pair 0: 6·11; pair 1: (1+2)·11 + 3·1; pair 2: 6·11 (reset after the last step).
    assert float(grad_sum) == pytest.approx(66 + 36 + 66)
    assert new_xi.flatten().tolist() == [11.0, 1.0, 0.0]


def test_tbptt_with_a_window_as_long_as_the_episode_is_exact():
    estimator = TBPTT(truncation=SYSTEM.horizon)
    state = estimator.init(SYSTEM, THETA, generator=torch.Generator())
    estimate, _ = estimator.step(SYSTEM, THETA, state, generator=torch.Generator())
    assert torch.allclose(estimate.grad, EXACT, rtol=1e-5)


def test_full_bptt_loss_is_the_full_meta_loss():
    estimator = FullBPTT()
    estimate, _ = estimator.step(
        SYSTEM,
        THETA,
        estimator.init(SYSTEM, THETA, generator=torch.Generator()),
        generator=torch.Generator(),
    )
    assert float(estimate.loss) == pytest.approx(linear_quadratic_loss(SYSTEM, THETA)[0], rel=1e-5)


def test_antithetic_es_is_exact_on_a_linear_loss():
    """With a loss linear in θ, L⁺ − L⁻ = 2σ εᵀ∇L, so g = εεᵀ∇L: mean over many pairs ≈ ∇L."""
    system = LinearQuadratic(dim=2, horizon=1, decay=0.0, coupling=0.0)
    theta = torch.tensor([5.0, -3.0])  # L = ½‖θ − 1‖²; ES of a quadratic is unbiased with
    estimator = FullES(pairs=4000, sigma=1e-3)  # tiny σ: L⁺ − L⁻ is exactly linear in ε
    estimate, _ = estimator.step(
        system,
        theta,
        estimator.init(system, theta, generator=torch.Generator()),
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.allclose(estimate.grad, theta - 1.0, rtol=0.06)


def test_grad_clip_bounds_the_norm():
    estimator = FullES(pairs=10, sigma=0.1, grad_clip=1.0)
    state = estimator.init(SYSTEM, THETA, generator=torch.Generator())
    estimate, _ = estimator.step(SYSTEM, THETA, state, generator=torch.Generator().manual_seed(0))
    assert float(torch.linalg.vector_norm(estimate.grad)) == pytest.approx(1.0, rel=1e-5)
    unclipped, _ = FullES(pairs=10, sigma=0.1).step(
        SYSTEM, THETA, state, generator=torch.Generator().manual_seed(0)
    )
    assert torch.allclose(estimate.grad, unclipped.grad / torch.linalg.vector_norm(unclipped.grad))


@pytest.mark.parametrize(
    ("cls", "options", "message"),
    [
        (PES, {"pairs": 0}, "pairs"),
        (PES, {"sigma": 0.0}, "sigma"),
        (TruncatedES, {"truncation": 0}, "truncation"),
        (TBPTT, {"streams": 0}, "streams"),
        (FullES, {"grad_clip": -1.0}, "grad_clip"),
    ],
)
def test_impossible_options_are_config_errors(cls, options, message):
    with pytest.raises(ConfigError, match=message):
        cls(**options)


def test_whole_episode_estimators_refuse_never_ending_systems():
    from metalab.lopt import InfluenceBalancing

    with pytest.raises(ConfigError, match="never ends"):
        FullES().init(InfluenceBalancing(), torch.zeros(1), generator=torch.Generator())
    with pytest.raises(ConfigError, match="never ends"):
        FullBPTT().init(InfluenceBalancing(), torch.zeros(1), generator=torch.Generator())


def test_state_round_trips_through_torch_save(tmp_path):
    estimator = PES(pairs=4, sigma=0.1, truncation=3)
    gen = torch.Generator().manual_seed(0)
    state = estimator.init(SYSTEM, THETA, generator=gen)
    _, state = estimator.step(SYSTEM, THETA, state, generator=gen)
    torch.save(state._asdict(), tmp_path / "s.pt")
    loaded = type(state)(**torch.load(tmp_path / "s.pt", weights_only=True))
    a, _ = estimator.step(SYSTEM, THETA, state, generator=torch.Generator().manual_seed(5))
    b, _ = estimator.step(SYSTEM, THETA, loaded, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.grad, b.grad)
