"""Runners of the theory checks ``ntk-asgd-rate`` and ``asgd-vs-last-iterate``.

Each runner is ``(config: RunConfig, run: Run) -> {metric: number}`` (see
``theory/<name>.md`` for what every metric is and why it is compared).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from metalab.core.claims import RunConfig
from metalab.core.figures import plot_curves, plot_loglog_fit
from metalab.core.runs import Run
from metalab.ntk.study import (
    ModelConfig,
    Problem,
    Setting,
    fit_rate,
    horizon_grid,
    make_problem,
    run_problems,
)
from metalab.ntk.theory import last_iterate_plateau

__all__ = ["RateParams", "asgd_rate", "last_iterate", "torch_threads"]


def _default_settings() -> list[Setting]:
    return [
        Setting("circle-r1", 2, 1.0),
        Setting("circle-r0.75", 2, 0.75),
        Setting("sphere-r1", 3, 1.0),
        Setting("sphere-r0.75", 3, 0.75, network=False),
        Setting("circle-r0.5", 2, 0.5, network=False),
    ]


@dataclass
class RateParams:
    """Parameters of the rate studies (``[params]`` of the TOML files)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    settings: list[Setting] = field(default_factory=_default_settings)
    t_max: float = 1e6
    decades: float = 3.0
    per_decade: int = 2
    fit_decades: float = 1.5
    seeds: int = 3
    kernel_seeds: dict[str, int] = field(default_factory=lambda: {"2": 24, "3": 12})
    threads: int = 1


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` intra-op threads (small batched steps are fastest on 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _study(config: RunConfig, run: Run, p: RateParams) -> tuple[np.ndarray, dict[str, dict]]:
    """Run every setting: kernel lanes with many seeds, network+kernel pairs with ``seeds``.

    Within a pair the network and the kernel see the same stream, so ``log(net/kernel)``
    has little seed noise (a control variate for the network's slope and risk level).
    """
    horizons = horizon_grid(p.t_max, decades=p.decades, per_decade=p.per_decade)
    problems = {
        s.name: make_problem(s, p.model, reference_horizon=float(horizons.max()),
                             generator=config.generator(f"target/{s.name}"))
        for s in p.settings
    }
    results: dict[str, dict] = {s.name: {"problem": problems[s.name]} for s in p.settings}
    for dim in sorted({s.dim for s in p.settings}):
        for network in (False, True):
            members = [problems[s.name] for s in p.settings
                       if s.dim == dim and (s.network or not network)]
            if not members:
                continue
            key = f"d{dim}-{'paired' if network else 'kernel'}"
            seeds = p.seeds if network else p.kernel_seeds.get(str(dim), p.seeds)

            def compute(members: list[Problem] = members, network: bool = network,
                        key: str = key, seeds: int = seeds) -> dict[str, list]:
                with torch_threads(p.threads):
                    out = run_problems(members, p.model, horizons=horizons, seeds=seeds,
                                       network=network, generator=config.generator(f"sgd/{key}"))
                return {name: value.tolist() for name, value in out.items()}

            stored = run.stage(key, compute)
            for index, problem in enumerate(members):
                entry = results[problem.setting.name]
                for name, value in stored.items():
                    label = name.replace("kernel.", "paired_kernel.") if network else name
                    entry[label] = np.asarray(value)[index]
    return horizons, results


def _report(run: Run, horizons: np.ndarray, name: str, entry: dict, learner: str,
            fit_decades: float, *, figure: bool) -> dict[str, float]:
    problem: Problem = entry["problem"]
    risks = entry[f"{learner}.averaged"]
    fit = fit_rate(horizons, risks, fit_decades=fit_decades)
    proxy = problem.proxy(horizons)
    if figure:
        plot_loglog_fit(
            run.figure_path(f"rate-{name}-{learner}.png"),
            np.broadcast_to(horizons, risks.shape).ravel(), risks.ravel(),
            xlabel="horizon T", ylabel="excess risk", fit=fit,
            reference_slope=-problem.predicted,
            title=f"{name} ({learner}), fit on the last {fit_decades:g} decades",
        )
    prefix = f"{name}.{learner}"
    run.log(None, setting=name, learner=learner, horizons=horizons, mean_risk=risks.mean(0),
            proxy=proxy, slope=-fit.slope)
    return {
        f"{prefix}.slope": -fit.slope,
        f"{prefix}.slope_ci_low": -fit.ci_high,
        f"{prefix}.slope_ci_high": -fit.ci_low,
        f"{prefix}.slope_error": -fit.slope - problem.predicted,
        f"{prefix}.risk_at_tmax": float(risks[:, -1].mean()),
        f"{prefix}.proxy_ratio": float(risks[:, -1].mean() / proxy[-1]),
    }


def _network_metrics(horizons: np.ndarray, name: str, entry: dict, kernel_fit: dict[str, float],
                     fit_decades: float) -> dict[str, float]:
    """Network slope and level through the paired (same-stream) network/kernel ratio."""
    problem: Problem = entry["problem"]
    ratio = entry["network.averaged"] / entry["paired_kernel.averaged"]
    ratio_fit = fit_rate(horizons, ratio, fit_decades=fit_decades)
    slope = kernel_fit["slope"] - ratio_fit.slope
    half = np.hypot(kernel_fit["half_width"], (ratio_fit.ci_high - ratio_fit.ci_low) / 2)
    level = entry["kernel.averaged"][:, -1].mean() * ratio[:, -1].mean()
    prefix = f"{name}.network"
    return {
        f"{prefix}.slope": slope,
        f"{prefix}.slope_ci_low": slope - half,
        f"{prefix}.slope_ci_high": slope + half,
        f"{prefix}.slope_error": slope - problem.predicted,
        f"{prefix}.proxy_ratio": float(level / problem.proxy(horizons)[-1]),
        f"{prefix}.raw_slope": -fit_rate(horizons, entry["network.averaged"],
                                         fit_decades=fit_decades).slope,
        f"{name}.network_over_kernel": float(ratio[:, -1].mean()),
        f"{name}.network_over_kernel_slope": -ratio_fit.slope,
    }


def asgd_rate(config: RunConfig, run: Run) -> dict[str, float]:
    """``ntk-asgd-rate``: fitted slope vs ``2rβ/(2rβ+1)`` and risk vs the ridge proxy."""
    p = config.typed(RateParams)
    horizons, results = _study(config, run, p)
    metrics: dict[str, float] = {}
    curves = {}
    for setting in p.settings:
        entry = results[setting.name]
        problem: Problem = entry["problem"]
        metrics[f"{setting.name}.predicted"] = problem.predicted
        metrics[f"{setting.name}.lambda0"] = problem.lambda0
        kernel = _report(run, horizons, setting.name, entry, "kernel", p.fit_decades,
                         figure=True)
        metrics.update(kernel)
        curves[f"{setting.name} kernel"] = (horizons, entry["kernel.averaged"].mean(0))
        curves[f"{setting.name} proxy"] = (horizons, problem.proxy(horizons))
        if setting.network:
            k = f"{setting.name}.kernel"
            fit = {"slope": kernel[f"{k}.slope"],
                   "half_width": (kernel[f"{k}.slope_ci_high"] - kernel[f"{k}.slope_ci_low"]) / 2}
            metrics.update(_network_metrics(horizons, setting.name, entry, fit, p.fit_decades))
            curves[f"{setting.name} network"] = (horizons, entry["network.averaged"].mean(0))
    plot_curves(run.figure_path("risk-vs-proxy.png"), curves, xlabel="horizon T",
                ylabel="excess risk (mean over seeds)", logx=True, logy=True,
                title="averaged SGD: network, kernel and the ridge proxy")
    return metrics


def last_iterate(config: RunConfig, run: Run) -> dict[str, float]:
    """``asgd-vs-last-iterate``: slopes of the averaged and the last iterate, same runs."""
    p = config.typed(RateParams)
    horizons, results = _study(config, run, p)
    metrics: dict[str, float] = {}
    curves = {}
    for setting in p.settings:
        entry = results[setting.name]
        problem: Problem = entry["problem"]
        learners = ("kernel", "network") if setting.network else ("kernel",)
        plateau = last_iterate_plateau(
            problem.lam(horizons), eta=problem.eta, mu=problem.spectrum.mu,
            multiplicity=problem.spectrum.multiplicity, energy=problem.target.degree_energy(),
            noise_variance=problem.target.noise_variance)
        for learner in learners:
            avg, last = entry[f"{learner}.averaged"], entry[f"{learner}.last"]
            fit_avg = fit_rate(horizons, avg, fit_decades=p.fit_decades)
            fit_last = fit_rate(horizons, last, fit_decades=p.fit_decades)
            prefix = f"{setting.name}.{learner}"
            curves[f"{prefix} averaged"] = (horizons, avg.mean(0))
            curves[f"{prefix} last"] = (horizons, last.mean(0))
            metrics.update({
                f"{prefix}.averaged_slope": -fit_avg.slope,
                f"{prefix}.last_slope": -fit_last.slope,
                f"{prefix}.last_slope_ci_high": -fit_last.ci_low,
                f"{prefix}.slope_gain": fit_last.slope - fit_avg.slope,
                f"{prefix}.last_over_averaged": float(last[:, -1].mean() / avg[:, -1].mean()),
                f"{prefix}.last_over_plateau": float(last[:, -1].mean() / plateau[-1]),
                f"{prefix}.last_seed_cv": float(last[:, -1].std() / last[:, -1].mean()),
                f"{prefix}.averaged_seed_cv": float(avg[:, -1].std() / avg[:, -1].mean()),
            })
        curves[f"{setting.name} plateau"] = (horizons, plateau)
    plot_curves(run.figure_path("last-vs-averaged.png"), curves, xlabel="horizon T",
                ylabel="excess risk (mean over seeds)", logx=True, logy=True,
                title="averaged vs last iterate (same runs, same step size)")
    return metrics
