from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad

from metalab.core.errors import ConfigError
from metalab.ntk import (
    DataStream,
    KernelASGD,
    Lanes,
    NetworkASGD,
    augment_inputs,
    basis_degrees,
    harmonic_basis,
    make_activation,
    make_source_target,
    network_forward,
    ntk_spectrum,
    run_asgd,
    sample_sphere,
    single_network_output,
    sphere_quadrature,
    symmetric_init,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dim", [2, 3])
def test_bases_are_orthonormal_under_the_quadrature(dim: int) -> None:
    points, weights = sphere_quadrature(dim, 30, dtype=torch.float64)
    basis = harmonic_basis(points, 10)
    gram = (basis * weights[:, None]).T @ basis
    torch.testing.assert_close(gram, torch.eye(basis.shape[1], dtype=torch.float64))
    assert basis.shape[1] == basis_degrees(dim, 10).size


def test_sphere_basis_spans_scipys_harmonics() -> None:
    from scipy import special

    x = sample_sphere((300,), 3, generator=_gen(), dtype=torch.float64)
    ours = harmonic_basis(x, 4).numpy()
    polar, azimuth = np.arccos(x[:, 2].numpy()), np.arctan2(x[:, 1].numpy(), x[:, 0].numpy())
    for degree in range(5):
        cols = ours[:, basis_degrees(3, 4) == degree]
        for order in range(degree + 1):
            y = special.sph_harm_y(degree, order, polar, azimuth) * np.sqrt(4 * np.pi)
            for part in (y.real, y.imag):
                coef, *_ = np.linalg.lstsq(cols, part, rcond=None)
                np.testing.assert_allclose(cols @ coef, part, atol=1e-10)


def test_source_target_energy_and_scale() -> None:
    spec = ntk_spectrum(make_activation("relu"), dim=2, max_degree=40)
    target = make_source_target(spec, r=1.0, max_degree=32, generator=_gen())
    energy = target.degree_energy()
    k = np.arange(1, 33)
    shape = spec.mu[1:33] ** 2 / k / (1 + np.log(k)) ** 2
    np.testing.assert_allclose(energy[1:] / shape, energy[1] / shape[0], rtol=1e-10)
    assert energy[0] == 0
    points, _ = sphere_quadrature(2, 200, dtype=torch.float64)
    assert target(points).abs().max().item() == pytest.approx(0.5, rel=1e-3)
    labels = target.sample_labels(torch.zeros(200_000, dtype=torch.float64), generator=_gen())
    assert labels.var().item() == pytest.approx(target.noise_variance, rel=0.02)
    with pytest.raises(ConfigError):
        make_source_target(spec, r=1.5, max_degree=5, generator=_gen())


def test_symmetric_init_gives_the_zero_function() -> None:
    params = symmetric_init([8, 16, 32], 3, generator=_gen())
    x = sample_sphere((50,), 3, generator=_gen(1), dtype=torch.float64)
    out = network_forward(params, x, make_activation("swish"), gamma=1.0, widths=[8, 16, 32])
    assert out.abs().max().item() < 1e-12
    assert params[0, :, 8:].abs().max().item() == 0  # padding stays zero
    with pytest.raises(ConfigError):
        symmetric_init([7], 2, generator=_gen())


def test_network_forward_matches_each_lane_for_any_block() -> None:
    # lanes of different widths, trained away from the zero function
    widths = [8, 16, 32]
    params = symmetric_init(widths, 3, generator=_gen())
    params[:, 1:] += 0.3 * torch.randn(params[:, 1:].shape, generator=_gen(2), dtype=params.dtype)
    params[:, 0] += 0.1 * torch.randn(params[:, 0].shape, generator=_gen(3), dtype=params.dtype)
    x = sample_sphere((37,), 3, generator=_gen(1), dtype=torch.float64)
    act = make_activation("swish")
    expected = torch.stack(
        [
            torch.stack(
                [
                    single_network_output(
                        {
                            "a": params[lane, 0, :m],
                            "B": params[lane, 1:4, :m].T,
                            "c": params[lane, 4, :m],
                        },
                        point,
                        act,
                        gamma=0.7,
                    )
                    for point in x
                ]
            )
            for lane, m in enumerate(widths)
        ]
    )
    for block in (None, 1, 5, 64):
        out = network_forward(params, x, act, gamma=0.7, widths=widths, block=block)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def _reference_step(
    params: torch.Tensor,
    x: torch.Tensor,
    y: float,
    *,
    eta: float,
    lam: float,
    p0: torch.Tensor,
    act_name: str,
) -> torch.Tensor:
    """θ ← θ − η∇½(g−y)² − ηλ(θ−θ⁰) with the gradient from torch.func.grad."""
    act = make_activation(act_name)
    dim = x.numel()

    def loss(theta: dict[str, torch.Tensor]) -> torch.Tensor:
        return 0.5 * (single_network_output(theta, x, act, gamma=0.8) - y) ** 2

    as_dict = {"a": params[0], "B": params[1 : dim + 1].T, "c": params[dim + 1]}
    start = {"a": p0[0], "B": p0[1 : dim + 1].T, "c": p0[dim + 1]}
    g = grad(loss)(as_dict)
    new = {k: v - eta * g[k] - eta * lam * (v - start[k]) for k, v in as_dict.items()}
    return torch.cat([new["a"][None], new["B"].T, new["c"][None]])


@pytest.mark.parametrize("act_name", ["swish", "tanh", "sigmoid"])
def test_batched_step_matches_torch_func_grad(act_name: str) -> None:
    dim, widths = 3, [6, 10]
    net = NetworkASGD(make_activation(act_name), dim=dim, gamma=0.8, quadrature=8)
    lanes = Lanes(
        torch.tensor([5, 5]),
        torch.tensor([0.1, 0.3], dtype=torch.float64),
        torch.tensor([0.2, 0.5], dtype=torch.float64),
        torch.zeros(2, 16, dtype=torch.float64),
        torch.tensor(widths),
    )
    state = net.init(lanes, generator=_gen())
    p0 = state.params.clone()
    state.params.add_(
        0.1
        * torch.randn(state.params.shape, generator=_gen(3), dtype=torch.float64)
        * state.mask[:, None, :]
    )
    moved = state.params.clone()
    x = sample_sphere((2,), dim, generator=_gen(4), dtype=torch.float64)
    y = torch.tensor([0.3, -0.2], dtype=torch.float64)
    net.step(state, augment_inputs(x, 0.8), y)
    for lane, m in enumerate(widths):
        want = _reference_step(
            moved[lane, :, :m],
            x[lane],
            float(y[lane]),
            eta=float(lanes.eta[lane]),
            lam=float(lanes.lam[lane]),
            p0=p0[lane, :, :m],
            act_name=act_name,
        )
        torch.testing.assert_close(state.params[lane, :, :m], want)
        assert not state.params[lane, :, m:].any()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), lanes=st.integers(1, 4))
def test_kernel_step_batched_equals_loop(seed: int, lanes: int) -> None:
    mu = np.linspace(1.0, 0.01, 12)
    learner = KernelASGD(mu, dim=2, feature_degree=5)
    setup = Lanes(
        torch.full((lanes,), 3),
        torch.rand(lanes, generator=_gen(seed), dtype=torch.float64) * 0.1,
        torch.full((lanes,), 0.2, dtype=torch.float64),
        torch.zeros(lanes, 11, dtype=torch.float64),
        torch.full((lanes,), 2),
    )
    state = learner.init(setup, generator=_gen())
    inputs = torch.randn(lanes, 11, generator=_gen(seed + 1), dtype=torch.float64)
    y = torch.randn(lanes, generator=_gen(seed + 2), dtype=torch.float64)
    before = state.theta.clone()
    learner.step(state, inputs, y)
    for i in range(lanes):
        err = before[i] @ inputs[i] - y[i]
        want = (1 - 0.2 * setup.lam[i]) * before[i] - 0.2 * err * inputs[i]
        torch.testing.assert_close(state.theta[i], want)


def test_kernel_risk_is_the_l2_distance() -> None:
    spec = ntk_spectrum(make_activation("relu"), dim=2, max_degree=12)
    learner = KernelASGD(spec.mu, dim=2, feature_degree=8)
    theta = torch.randn(1, 17, generator=_gen(), dtype=torch.float64)
    coef = torch.randn(1, 21, generator=_gen(1), dtype=torch.float64)  # degree 10 target
    state = learner.init(
        Lanes(
            torch.tensor([1]),
            torch.zeros(1, dtype=torch.float64),
            torch.ones(1, dtype=torch.float64),
            coef,
            torch.tensor([2]),
        ),
        generator=_gen(),
    )
    state.theta.copy_(theta)
    _, last = learner.risks(state, 0, coef)
    points, weights = sphere_quadrature(2, 64, dtype=torch.float64)
    f = harmonic_basis(points, 8) @ (theta[0] * learner.sqrt_mu)
    g = harmonic_basis(points, 10) @ coef[0]
    assert last.item() == pytest.approx(((f - g) ** 2 * weights).sum().item(), rel=1e-10)


def test_wide_network_tracks_the_kernel_and_averaging_helps() -> None:
    spec = ntk_spectrum(make_activation("swish"), dim=2, max_degree=60)
    target = make_source_target(spec, r=1.0, max_degree=16, generator=_gen())
    lanes = Lanes(
        torch.tensor([200, 600, 600]),
        torch.tensor([0.02, 0.01, 0.01], dtype=torch.float64),
        torch.full((3,), 1 / (4 * spec.kappa_one), dtype=torch.float64),
        target.coef.expand(3, -1).clone(),
        torch.tensor([2048, 2048, 2048]),
    )
    learners = {
        "kernel": KernelASGD(spec.mu, dim=2, feature_degree=16),
        "network": NetworkASGD(make_activation("swish"), dim=2, quadrature=64),
    }
    out = run_asgd(learners, lanes, DataStream(2, 16, 0.5), generator=_gen(5))
    ratio = out["network"].averaged / out["kernel"].averaged
    assert torch.all((ratio - 1).abs() < 0.15), ratio
    assert torch.all(out["kernel"].averaged < out["kernel"].last)
    assert torch.isfinite(out["network"].last).all()


def test_run_asgd_rejects_bad_lanes() -> None:
    lanes = Lanes(
        torch.tensor([0]),
        torch.zeros(1, dtype=torch.float64),
        torch.ones(1, dtype=torch.float64),
        torch.zeros(1, 5, dtype=torch.float64),
        torch.tensor([2]),
    )
    with pytest.raises(ConfigError, match="horizon"):
        run_asgd({}, lanes, DataStream(2, 2, 0.5), generator=_gen())


def test_float32_network_matches_float64_on_the_same_stream() -> None:
    spec = ntk_spectrum(make_activation("swish"), dim=2, max_degree=60)
    target = make_source_target(spec, r=1.0, max_degree=16, generator=_gen())
    lanes = Lanes(
        torch.tensor([2000, 2000]),
        torch.tensor([0.01, 0.003], dtype=torch.float64),
        torch.full((2,), 1 / (4 * spec.kappa_one), dtype=torch.float64),
        target.coef.expand(2, -1).clone(),
        torch.tensor([512, 512]),
    )
    risks = {}
    for kind in (torch.float32, torch.float64):
        net = NetworkASGD(make_activation("swish"), dim=2, quadrature=64, dtype=kind)
        risks[kind] = run_asgd({"network": net}, lanes, DataStream(2, 16, 0.5), generator=_gen(7))[
            "network"
        ]
    for field in ("averaged", "last"):
        low, high = getattr(risks[torch.float32], field), getattr(risks[torch.float64], field)
        torch.testing.assert_close(low, high, rtol=1e-3, atol=0.0)


def test_float32_network_keeps_a_float64_running_sum() -> None:
    # 10⁵ float32 additions of near-equal iterates round systematically (ulp(10⁵) ≈ 0.008):
    # at T = 10⁵ that biased the averaged network (circle r = 1 risk 0.6× the kernel's)
    lanes = Lanes(
        torch.tensor([10]),
        torch.tensor([0.01], dtype=torch.float64),
        torch.full((1,), 0.2, dtype=torch.float64),
        torch.zeros(1, 5, dtype=torch.float64),
        torch.tensor([8]),
    )
    state = NetworkASGD(make_activation("swish"), dim=2, quadrature=8, dtype=torch.float32).init(
        lanes, generator=_gen()
    )
    assert state.params.dtype == torch.float32
    assert state.total.dtype == torch.float64


def test_model_config_rejects_unknown_network_dtype() -> None:
    from metalab.ntk import ModelConfig

    assert ModelConfig(network_dtype="float32").torch_dtype() == torch.float32
    with pytest.raises(ConfigError, match="network_dtype"):
        ModelConfig(network_dtype="float16").torch_dtype()


def test_critical_source_target_has_no_log_factor() -> None:
    spec = ntk_spectrum(make_activation("relu"), dim=2, max_degree=40)
    target = make_source_target(spec, r=0.75, max_degree=32, generator=_gen(), log_power=0.0)
    energy = target.degree_energy()
    shape = spec.mu[1:33] ** 1.5 / np.arange(1, 33)
    np.testing.assert_allclose(energy[1:] / shape, energy[1] / shape[0], rtol=1e-10)
    with pytest.raises(ConfigError):
        make_source_target(spec, r=0.75, max_degree=8, generator=_gen(), log_power=-1.0)
