"""Runners of the theory checks ``ntk-regime`` and ``ntk-spectrum``.

See ``theory/ntk-regime.md`` and ``theory/ntk-spectrum.md`` for every reported quantity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from metalab.core.claims import RunConfig, runner_params
from metalab.core.config import at_least, bounded, nonempty, positive
from metalab.core.figures import plot_curves, plot_heatmap
from metalab.core.runs import Run
from metalab.core.stats import fit_loglog
from metalab.ntk.activations import make_activation
from metalab.ntk.asgd import DataStream, KernelASGD, Lanes, Learner, NetworkASGD, run_asgd
from metalab.ntk.empirical import _MAX_DIM as MAX_SPECTRUM_DIM
from metalab.ntk.empirical import compare_spectra
from metalab.ntk.experiments import torch_threads
from metalab.ntk.study import ModelConfig, Setting, horizon_grid, make_problem

__all__ = ["RegimeParams", "SpectrumParams", "ntk_regime", "ntk_spectrum_check"]


@dataclass
class RegimeParams:
    """``ntk-regime``: widths × horizons × seeds, one setting (circle, r = 1 by default)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dim: int = bounded(2, ge=2, le=3)  # the circle or S² (make_problem's spectra)
    r: float = bounded(1.0, gt=0, le=1)  # source exponent
    widths: list[int] = nonempty(lambda: [32, 128, 512, 2048, 8192], ge=1)
    t_max: float = at_least(10, 1e5)
    decades: float = positive(2.0)
    per_decade: int = at_least(1, 2)
    seeds: int = at_least(1, 3)
    tolerance: float = positive(0.1)
    threads: int = at_least(1, 1)


def _regime_runs(config: RunConfig, p: RegimeParams, horizons: np.ndarray) -> np.ndarray:
    """``(2, W, seeds, H)`` risks (kernel, network) of every (width, seed, horizon) lane."""
    problem = make_problem(
        Setting("regime", p.dim, p.r),
        p.model,
        reference_horizon=float(horizons.max()),
        generator=config.generator("target"),
    )
    grid = [(m, s, t) for m in p.widths for s in range(p.seeds) for t in horizons]
    horizon = torch.tensor([t for _, _, t in grid], dtype=torch.int64)
    lanes = Lanes(
        horizon=horizon,
        lam=torch.from_numpy(problem.lam(horizon.numpy())),
        eta=torch.full((len(grid),), problem.eta, dtype=torch.float64),
        coef=problem.target.coef.expand(len(grid), -1).clone(),
        width=torch.tensor([m for m, _, _ in grid], dtype=torch.int64),
    )
    degree = problem.target.max_degree
    learners: dict[str, Learner] = {
        "kernel": KernelASGD(problem.spectrum.mu, dim=p.dim, feature_degree=degree),
        "network": NetworkASGD(
            p.model.make_activation(),
            dim=p.dim,
            radius=p.model.radius,
            gamma=p.model.gamma,
            quadrature=4 * degree,
        ),
    }
    with torch_threads(p.threads):
        out = run_asgd(
            learners,
            lanes,
            DataStream(p.dim, degree, p.model.noise_half_width),
            generator=config.generator("sgd"),
        )
    shape = (len(p.widths), p.seeds, horizons.size)
    return np.stack([out[k].averaged.reshape(shape).numpy() for k in ("kernel", "network")])


def _threshold(widths: np.ndarray, deviation: np.ndarray, tolerance: float) -> float | None:
    """Smallest width from which every larger width deviates by at most ``tolerance``.

    ``None`` when even the widest network is outside: M₀(T) lies beyond the measured widths.
    """
    ok = deviation <= tolerance
    for index in range(widths.size):
        if ok[index:].all():
            return float(widths[index])
    return None


@runner_params(RegimeParams)
def ntk_regime(config: RunConfig, run: Run) -> dict[str, float]:
    """``ntk-regime``: network/kernel risk ratio vs width, and the width needed vs T."""
    p = config.typed(RegimeParams)
    horizons = horizon_grid(p.t_max, decades=p.decades, per_decade=p.per_decade)
    risks = np.asarray(run.stage("runs", lambda: _regime_runs(config, p, horizons).tolist()))
    kernel, network = risks
    deviation = np.abs(network / kernel - 1).mean(axis=1)  # (W, H): mean over seeds
    ratio = (network / kernel).mean(axis=1)
    widths = np.asarray(p.widths, dtype=float)
    metrics: dict[str, float] = {}
    for i, m in enumerate(p.widths):
        for j, t in enumerate(horizons):
            metrics[f"ratio.M{m}.T{t}"] = float(ratio[i, j])
            metrics[f"deviation.M{m}.T{t}"] = float(deviation[i, j])
    thresholds = [_threshold(widths, deviation[:, j], p.tolerance) for j in range(horizons.size)]
    for t, value in zip(horizons, thresholds, strict=True):
        if value is not None:  # an unmeasured threshold is left out, not written as Infinity
            metrics[f"threshold_width.T{t}"] = value
    first, last = thresholds[0], thresholds[-1]
    # NaN (never passes a check) when either end's M₀ lies beyond the measured widths
    metrics["threshold_growth"] = last / first if first and last else float("nan")
    fit = fit_loglog(widths, np.maximum(deviation[:, -1], 1e-12))
    metrics.update(
        {
            "max_deviation_at_max_width": float(deviation[-1].max()),
            "deviation_width_slope": fit.slope,
            "deviation_width_slope_ci_low": fit.ci_low,
            "deviation_width_slope_ci_high": fit.ci_high,
            "small_width_deviation_growth": float(deviation[0, -1] / deviation[0, 0]),
        }
    )
    plot_curves(
        run.figure_path("ratio-vs-width.png"),
        {f"T={t}": (widths, ratio[:, j]) for j, t in enumerate(horizons)},
        xlabel="width M",
        ylabel="network risk / kernel risk",
        logx=True,
        hlines={"1": 1.0},
        title="averaged SGD: network vs its NTK kernel",
    )
    plot_heatmap(
        run.figure_path("deviation-heatmap.png"),
        deviation,
        x=horizons,
        y=widths,
        xlabel="horizon T",
        ylabel="width M",
        log_scale=True,
        title="|network/kernel − 1| (mean over seeds)",
    )
    return metrics


@dataclass
class SpectrumParams:
    """``ntk-spectrum``: one symmetric-init network per (activation, sphere)."""

    activations: list[str] = nonempty(lambda: ["relu", "swish"])
    sharpness: float = positive(20.0)
    dims: list[int] = nonempty(lambda: [2, 3], ge=2, le=MAX_SPECTRUM_DIM)
    width: int = at_least(1, 4096)
    points: int = at_least(10, 1000)
    blocks: int = at_least(1, 5)
    decay_window: dict[str, list[int]] = field(
        default_factory=lambda: {"2": [10, 80], "3": [10, 150]}
    )
    radius: float = 1.0
    gamma: float = 1.0
    threads: int = at_least(1, 1)


@runner_params(SpectrumParams)
def ntk_spectrum_check(config: RunConfig, run: Run) -> dict[str, float]:
    """``ntk-spectrum``: empirical (torch.func) vs Funk–Hecke eigenvalues, decay vs β."""
    p = config.typed(SpectrumParams)
    metrics: dict[str, float] = {}
    for name in p.activations:
        activation = make_activation(name, sharpness=p.sharpness if name == "swish" else None)
        for dim in p.dims:
            with torch_threads(p.threads):
                cmp = compare_spectra(
                    activation,
                    dim=dim,
                    width=p.width,
                    points=p.points,
                    generator=config.generator(f"{name}/d{dim}"),
                    radius=p.radius,
                    gamma=p.gamma,
                    device=config.torch_device,
                )
            low, high = p.decay_window[str(dim)]
            measured, predicted = cmp.decay_fit(low, high), cmp.decay_fit(low, high, measured=False)
            key = f"{name}.d{dim}"
            blocks = cmp.block_errors(p.blocks)
            metrics.update(
                {
                    f"{key}.gram_error": cmp.gram_error,
                    f"{key}.max_block_error": float(np.abs(blocks).max()),
                    f"{key}.decay_slope": measured.slope,
                    f"{key}.decay_slope_ci_low": measured.ci_low,
                    f"{key}.decay_slope_ci_high": measured.ci_high,
                    f"{key}.predicted_decay_slope": predicted.slope,
                    f"{key}.decay_vs_beta": measured.slope + cmp.spectrum.beta,
                    f"{key}.decay_vs_funk_hecke": measured.slope - predicted.slope,
                }
            )
            index = np.arange(1, cmp.points + 1)
            plot_curves(
                run.figure_path(f"spectrum-{key}.png"),
                {
                    "empirical NTK (torch.func)": (index, np.clip(cmp.measured, 1e-16, None)),
                    "Funk–Hecke": (index, cmp.predicted),
                },
                xlabel="index i",
                ylabel="eigenvalue λ_i",
                logx=True,
                logy=True,
                title=f"NTK spectrum, {activation.describe()}, d={dim}, M={p.width}",
            )
            run.log(
                None,
                activation=name,
                dim=dim,
                predicted=cmp.predicted[:50],
                measured=cmp.measured[:50],
            )
    return metrics
