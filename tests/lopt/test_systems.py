import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.lopt import (
    PES,
    InfluenceBalancing,
    Layout,
    LinearQuadratic,
    ToyRegression,
    clean_losses,
    full_meta_loss,
    linear_quadratic_loss,
    make_estimator,
    make_system,
    system_names,
    system_resolver,
    unroll,
)


def test_influence_balancing_optimum_is_minus_one_sixth():
    system = InfluenceBalancing()
    assert system.optimum() == pytest.approx(-1 / 6, abs=1e-9)
    # and the long-run s[0] under θ* is 1
    layout = Layout(1, range(1))
    theta = torch.tensor([[-1 / 6]], dtype=torch.float32)
    window = unroll(
        system,
        system.init_state(1, generator=torch.Generator()),
        torch.zeros(1, dtype=torch.long),
        theta,
        400,
        layout=layout,
        generator=torch.Generator(),
    )
    assert float(window.state["s"][0, 0]) == pytest.approx(1.0, abs=1e-5)
    assert window.losses[0, :-1].abs().sum() == 0  # loss only at the window's end


def test_toy_regression_gradient_matches_autograd():
    x = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    x.requires_grad_(True)
    (auto,) = torch.autograd.grad(ToyRegression.objective(x).sum(), x)
    assert torch.allclose(ToyRegression.objective_grad(x), auto)


def test_toy_regression_meta_loss_at_the_paper_points():
    system = ToyRegression()
    losses = full_meta_loss(
        system, torch.tensor([[-4.0, -4.0], [2.75, -1.75]]), generator=torch.Generator()
    )
    assert 2300 < float(losses[0]) < 2500  # the start: lr ≈ 0.018 barely moves x
    assert float(losses[1]) == pytest.approx(553, abs=10)  # the paper's grid optimum


def test_linear_quadratic_closed_form_matches_the_unroll():
    system = LinearQuadratic(dim=4, horizon=7)
    theta = torch.tensor([0.1, -0.2, 0.3, 0.5])
    loss, grad = linear_quadratic_loss(system, theta)
    assert float(full_meta_loss(system, theta, generator=torch.Generator())) == pytest.approx(
        loss, rel=1e-5
    )
    bptt = make_estimator("bptt")
    estimate, _ = bptt.step(
        system,
        theta,
        bptt.init(system, theta, generator=torch.Generator()),
        generator=torch.Generator(),
    )
    assert torch.allclose(estimate.grad.double(), grad, rtol=1e-4)


@settings(max_examples=20, deadline=None)
@given(horizon=st.integers(1, 6), steps=st.integers(1, 13), start=st.integers(0, 5))
def test_unroll_resets_exactly_at_episode_ends(horizon, steps, start):
    start = start % horizon
    system = LinearQuadratic(dim=1, horizon=horizon)
    layout = Layout(2, range(2))
    t0 = torch.full((2,), start, dtype=torch.long)
    window = unroll(
        system,
        system.init_state(2, generator=torch.Generator()),
        t0,
        torch.ones(2, 1),
        steps,
        layout=layout,
        generator=torch.Generator(),
    )
    expected = [(start + j + 1) % horizon == 0 for j in range(steps)]
    assert window.resets[0].tolist() == expected
    assert int(window.t[0]) == (start + steps) % horizon


def test_unroll_batched_equals_one_particle_at_a_time():
    system = ToyRegression(horizon=20)
    thetas = torch.tensor([[-1.0, 0.5], [0.3, -2.0], [1.0, 1.0]])
    layout = Layout(3, range(3))
    batched = unroll(
        system,
        system.init_state(3, generator=torch.Generator()),
        torch.zeros(3, dtype=torch.long),
        thetas,
        25,
        layout=layout,
        generator=torch.Generator(),
    )
    for i in range(3):
        one = unroll(
            system,
            system.init_state(1, generator=torch.Generator()),
            torch.zeros(1, dtype=torch.long),
            thetas[i : i + 1],
            25,
            layout=Layout(1, range(1)),
            generator=torch.Generator(),
        )
        assert torch.allclose(batched.losses[i], one.losses[0])


def test_clean_losses_maps_nan_and_clips():
    losses = torch.tensor([1.0, math.nan, math.inf, 50.0])
    assert clean_losses(losses, nan_loss=1e3, loss_clip=20.0).tolist() == [1.0, 20.0, 20.0, 20.0]
    assert clean_losses(losses, nan_loss=1e3).tolist() == [1.0, 1e3, 1e3, 50.0]


class Exploding(LinearQuadratic):
    """Inner training that blows up (NaN loss) wherever θ[0] > 0.5."""

    def step(self, state, theta, t, data):
        state, loss = super().step(state, theta, t, data)
        return state, torch.where(theta[:, 0] > 0.5, torch.full_like(loss, math.nan), loss)


def test_nan_losses_do_not_poison_the_estimate():
    system = Exploding(dim=2, horizon=5)
    theta = torch.tensor([0.5, 0.0])
    plain = PES(pairs=8, sigma=0.1, truncation=5)
    guarded = PES(pairs=8, sigma=0.1, truncation=5, nan_loss=1e4, loss_clip=1e4)
    gen = torch.Generator()
    bad, _ = plain.step(
        system,
        theta,
        plain.init(system, theta, generator=gen),
        generator=torch.Generator().manual_seed(1),
    )
    good, _ = guarded.step(
        system,
        theta,
        guarded.init(system, theta, generator=gen),
        generator=torch.Generator().manual_seed(1),
    )
    assert not torch.isfinite(bad.grad).all()
    assert torch.isfinite(good.grad).all()
    assert float(good.grad[0]) > 100  # the estimate points away from the blow-up, strongly


def test_registries_name_every_system_and_reject_typos():
    assert set(system_names()) == {
        "influence-balancing",
        "linear-quadratic",
        "toy-regression",
        "learned-optimizer-system",
        "scheduled-sgd-system",
    }
    assert isinstance(make_system("scheduled-sgd-system", horizon=3), system_resolver.base)
    for name in ["influence-balancing", "linear-quadratic", "toy-regression"]:
        assert isinstance(make_system(name), system_resolver.base)
    with pytest.raises(UnknownNameError, match="did you mean toy-regression"):
        make_system("toy-regresion")
    with pytest.raises(UnknownNameError, match="did you mean pes"):
        make_estimator("pse")
    with pytest.raises(ConfigError, match="does not take sigma"):
        make_estimator("tbptt", sigma=0.1)
    with pytest.raises(ConfigError):
        make_system("influence-balancing", n=0)
