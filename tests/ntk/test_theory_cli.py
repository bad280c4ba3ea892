from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metalab.core.errors import ConfigError
from metalab.ntk import (
    balanced_lambda0,
    compare_spectra,
    fit_rate,
    horizon_grid,
    last_iterate_plateau,
    make_activation,
    ntk_spectrum,
    predicted_exponent,
    regularization,
    ridge_proxy,
)
from metalab.ntk.cli import ntk


def test_predicted_exponents() -> None:
    assert predicted_exponent(1.0, 2.0) == pytest.approx(0.8)
    assert predicted_exponent(0.5, 2.0) == pytest.approx(2 / 3)
    assert predicted_exponent(1.0, 1.5) == pytest.approx(0.75)
    assert regularization(1e4, r=1.0, beta=2.0, lambda0=2.0) == pytest.approx(2 * 1e4**-0.4)


def test_ridge_proxy_on_a_two_mode_problem() -> None:
    mu, mult, energy = np.array([1.0, 0.1]), np.array([1, 2]), np.array([0.5, 0.2])
    bias, var = ridge_proxy(100.0, 0.1, mu=mu, multiplicity=mult, energy=energy, noise_variance=0.3)
    assert bias[0] == pytest.approx(0.5 * (0.1 / 1.1) ** 2 + 0.2 * 0.25)
    assert var[0] == pytest.approx(0.3 / 100 * (1 / 1.21 + 2 * 0.25))
    floor = last_iterate_plateau(
        0.1, eta=0.5, mu=mu, multiplicity=mult, energy=energy, noise_variance=0.3
    )
    assert floor[0] == pytest.approx(bias[0] + 0.5 * 0.3 / 2 * (1 / 1.1 + 2 * 0.05))


def test_balanced_lambda0_equalizes_bias_and_variance() -> None:
    spec = ntk_spectrum(make_activation("relu"), dim=2, max_degree=100)
    energy = np.zeros(101)
    energy[1:20] = spec.mu[1:20] ** 2
    lam0 = balanced_lambda0(
        1e4,
        r=1.0,
        beta=2.0,
        mu=spec.mu,
        multiplicity=spec.multiplicity,
        energy=energy,
        noise_variance=1 / 12,
    )
    lam = regularization(1e4, r=1.0, beta=2.0, lambda0=lam0)
    bias, var = ridge_proxy(
        1e4, lam, mu=spec.mu, multiplicity=spec.multiplicity, energy=energy, noise_variance=1 / 12
    )
    assert bias[0] == pytest.approx(var[0], rel=1e-6)
    with pytest.raises(ConfigError):
        balanced_lambda0(
            1e4,
            r=1.0,
            beta=2.0,
            mu=spec.mu,
            multiplicity=spec.multiplicity,
            energy=energy,
            noise_variance=0.0,
        )


def test_horizon_grid_and_rate_fit_recover_a_known_slope() -> None:
    grid = horizon_grid(1e5, decades=3, per_decade=2)
    assert grid[0] == 100 and grid[-1] == 100_000 and grid.size == 7
    rng = np.random.default_rng(0)
    risks = 3.0 * grid[None, :] ** -0.7 * np.exp(0.05 * rng.standard_normal((5, grid.size)))
    fit = fit_rate(grid, risks, fit_decades=1.5)
    assert fit.ci_low < -0.7 < fit.ci_high
    with pytest.raises(ConfigError):
        horizon_grid(5, decades=1, per_decade=1)


def test_empirical_ntk_matches_funk_hecke_at_small_scale() -> None:
    cmp = compare_spectra(
        make_activation("relu"),
        dim=2,
        width=512,
        points=200,
        generator=torch.Generator().manual_seed(0),
    )
    assert cmp.gram_error < 0.1
    assert np.abs(cmp.block_errors(4)).max() < 0.1
    assert cmp.predicted.size == cmp.measured.size == 200


def test_cli_spectrum_prints_predicted_and_measured() -> None:
    result = CliRunner().invoke(
        ntk,
        [
            "spectrum",
            "--activation",
            "relu",
            "--dim",
            "2",
            "--width",
            "256",
            "--points",
            "120",
            "--top",
            "4",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "predicted" in result.output and "measured" in result.output
    assert len([ln for ln in result.output.splitlines() if ln.strip().startswith("4 ")]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["spectrum", "--activation", "relux"], "did you mean relu"),
        (["spectrum", "--points", "50", "--top", "60"], "--top"),
        (["spectrum", "--dim", "1", "--points", "20", "--top", "3"], "dimension"),
        (["spectrum", "--dim", "-3", "--points", "20", "--top", "3"], "dimension"),
        (["spectrum", "--dim", "400", "--points", "20", "--top", "3"], "dimension"),
        (["spectrum", "--points", "1"], "at least 10 points"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str) -> None:
    from metalab.cli.main import cli

    result = CliRunner().invoke(cli, ["ntk", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_averaged_sgd_risk_matches_the_mean_recursion_and_its_limit() -> None:
    from metalab.ntk.theory import averaged_sgd_risk

    mu, mult, energy = np.array([0.8, 0.05, 0.002]), np.array([1, 2, 2]), np.array([0.3, 0.1, 0.02])
    eta, lam, horizon = 0.2, 0.01, 50
    f, total = np.zeros(3), np.zeros(3)  # mean of f_t / c per mode: f ← qf + ημ, f_0 = 0
    for _ in range(horizon):
        f = (1 - eta * (mu + lam)) * f + eta * mu
        total += f
    mean_bias = float((energy * (1 - total / (horizon + 1)) ** 2).sum())
    noiseless = averaged_sgd_risk(
        horizon,
        lam,
        eta=eta,
        mu=mu,
        multiplicity=mult,
        energy=energy,
        noise_variance=0.0,
        kappa_one=1.0,
    )
    assert noiseless[0] == pytest.approx(mean_bias, rel=1e-12)
    far = averaged_sgd_risk(
        1e12,
        lam,
        eta=eta,
        mu=mu,
        multiplicity=mult,
        energy=energy,
        noise_variance=0.3,
        kappa_one=1.0,
    )
    bias, var = ridge_proxy(1e12, lam, mu=mu, multiplicity=mult, energy=energy, noise_variance=0.3)
    assert far[0] == pytest.approx(bias[0] + var[0] / (1 - eta / 2), rel=1e-9)


def test_critical_target_bias_decays_like_lambda_to_the_2r() -> None:
    from metalab.ntk import source_energies

    spec = ntk_spectrum(make_activation("relu"), dim=2, max_degree=600)
    lam = np.logspace(-5, -3, 9)
    exponents = []
    for log_power in (0.0, 2.0):
        energy = source_energies(spec.mu, r=0.75, log_power=log_power)
        bias, _ = ridge_proxy(
            np.ones(lam.size),
            lam,
            mu=spec.mu,
            multiplicity=spec.multiplicity,
            energy=energy,
            noise_variance=0.0,
        )
        exponents.append(np.polyfit(np.log(lam), np.log(bias), 1)[0])
    # 2r = 1.5 for the critical profile; the (1 + log k)^{−2} profile is steeper (log² factor)
    assert 1.42 < exponents[0] < 1.52
    assert 1.65 < exponents[1] < 1.85
