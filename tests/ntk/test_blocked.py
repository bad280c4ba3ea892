"""The exact block recursion of kernel ASGD equals the step-by-step algorithm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metalab.core.errors import ConfigError
from metalab.ntk.activations import make_activation
from metalab.ntk.asgd import KernelASGD, Lanes
from metalab.ntk.blocked import block_kernel_step, dot_kernel_gram, run_kernel_blocked
from metalab.ntk.spectrum import harmonic_multiplicity, ntk_spectrum
from metalab.ntk.sphere import basis_degrees, harmonic_basis, sample_sphere


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _features(dim: int, degree: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    mu = ntk_spectrum(make_activation("swish"), dim=dim, max_degree=degree + 4).mu
    sqrt_mu = torch.from_numpy(np.sqrt(np.clip(mu[basis_degrees(dim, degree)], 0.0, None)))
    weights = torch.from_numpy(
        np.clip(mu[: degree + 1], 0.0, None) * harmonic_multiplicity(dim, np.arange(degree + 1))
    )
    return mu, sqrt_mu, weights


@pytest.mark.parametrize(("dim", "degree"), [(2, 12), (3, 6)])
def test_gram_is_the_truncated_feature_inner_product(dim: int, degree: int) -> None:
    _, sqrt_mu, weights = _features(dim, degree)
    x = sample_sphere((2, 9), dim, generator=_gen(), dtype=torch.float64)
    psi = harmonic_basis(x, degree) * sqrt_mu
    torch.testing.assert_close(
        dot_kernel_gram(x, weights, dim=dim), psi @ psi.transpose(1, 2), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(("dim", "degree", "block"), [(2, 12, 7), (3, 6, 16)])
def test_block_step_equals_sequential_kernel_steps(dim: int, degree: int, block: int) -> None:
    mu, sqrt_mu, weights = _features(dim, degree)
    seeds, lanes = 2, 3
    lam = torch.tensor([0.05, 0.01, 0.0], dtype=torch.float64)
    eta = torch.tensor([0.2, 0.1, 0.25], dtype=torch.float64)
    x = sample_sphere((seeds, block), dim, generator=_gen(1), dtype=torch.float64)
    psi = harmonic_basis(x, degree) * sqrt_mu
    y = torch.randn(seeds, block, lanes, generator=_gen(2), dtype=torch.float64)
    theta0 = 0.3 * torch.randn(
        seeds, lanes, sqrt_mu.numel(), generator=_gen(3), dtype=torch.float64
    )
    theta, total = theta0.clone(), torch.zeros_like(theta0)
    block_kernel_step(
        theta, total, psi, y, dot_kernel_gram(x, weights, dim=dim), decay=1 - eta * lam, lr=eta
    )
    learner = KernelASGD(mu, dim=dim, feature_degree=degree)
    setup = Lanes(
        torch.full((lanes,), block),
        lam,
        eta,
        torch.zeros(lanes, sqrt_mu.numel(), dtype=torch.float64),
        torch.full((lanes,), 2),
    )
    for seed in range(seeds):
        state = learner.init(setup, generator=_gen())
        state.theta.copy_(theta0[seed])
        for s in range(block):
            learner.step(state, psi[seed, s].expand(lanes, -1), y[seed, s])
        torch.testing.assert_close(theta[seed], state.theta, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(total[seed], state.total, rtol=1e-10, atol=1e-12)


def test_run_kernel_blocked_learns_and_rejects_bad_input() -> None:
    mu, _, _ = _features(2, 8)
    coef = torch.zeros(2, 17, dtype=torch.float64)
    coef[:, 1] = 0.4
    kwargs = {
        "lam": torch.full((2,), 1e-3, dtype=torch.float64),
        "eta": torch.full((2,), 0.2, dtype=torch.float64),
        "seeds": 3,
        "dim": 2,
        "feature_degree": 8,
        "noise_half_width": 0.5,
    }
    averaged, last = run_kernel_blocked(
        mu, coef, horizon=torch.tensor([50, 2000]), generator=_gen(), **kwargs
    )
    assert averaged.shape == (3, 2) and torch.isfinite(last).all()
    assert (averaged[:, 1] < averaged[:, 0]).all()  # more data, smaller excess risk
    assert (averaged[:, 1] < 0.16 * 0.1).all()  # well below ‖g_ρ‖² = 0.16
    with pytest.raises(ConfigError, match="horizons"):
        run_kernel_blocked(mu, coef, horizon=torch.tensor([0, 5]), generator=_gen(), **kwargs)


def test_rate_study_runs_kernels_further_and_widths_per_setting(tmp_path: Path) -> None:
    from metalab.core.claims import run_spec
    from metalab.core.specs import find_spec

    spec = find_spec("ntk-asgd-rate", "theory")
    settings = [
        {"name": "c1", "dim": 2, "r": 1.0, "network": True, "width": 16},
        {"name": "c2", "dim": 2, "r": 0.75, "network": True},
    ]
    outcome = run_spec(
        spec,
        smoke=True,
        device="cpu",
        out=tmp_path,
        overrides={
            "settings": settings,
            "kernel_t_max": 1000,
            "per_decade": 1,
            "decades": 2.0,
            "fit_decades": 1.0,
        },
    )
    assert outcome.error is None, outcome.error
    metrics = outcome.metrics
    assert metrics["c1.kernel.t_max"] == 1000 and metrics["c1.network.t_max"] == 100
    assert np.isfinite(metrics["c2.network.slope"])
    stages = sorted(p.name for p in tmp_path.rglob("stages/*.json"))
    assert stages == ["d2-kernel.json", "d2-paired-m16.json", "d2-paired.json"]
    figures = sorted(p.name for p in tmp_path.rglob("figures/rate-*.png"))
    assert figures == [
        f"rate-{s}-{lane}.png" for s in ("c1", "c2") for lane in ("kernel", "network")
    ]
    bad = run_spec(
        spec,
        smoke=True,
        device="cpu",
        out=tmp_path,
        overrides={"kernel_t_max": 300, "per_decade": 1},
    )
    assert bad.error is not None and "kernel horizon grid" in str(bad.error)
