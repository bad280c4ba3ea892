"""Runners of the theory checks ``ntk-asgd-rate`` and ``asgd-vs-last-iterate``.

Each runner is ``(config: RunConfig, run: Run) -> {metric: number}`` (see
``theory/<name>.md`` for what every metric is and why it is compared).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from metalab.core.claims import RunConfig, runner_params
from metalab.core.config import at_least, non_negative, nonempty, positive
from metalab.core.errors import ConfigError
from metalab.core.figures import plot_curves, plot_loglog_fit
from metalab.core.parallel import StageJob, default_workers, run_stages, torch_threads
from metalab.core.runs import Run
from metalab.core.seeding import make_generator
from metalab.core.stats import LogLogFit
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
    settings: list[Setting] = nonempty(_default_settings)
    t_max: float = at_least(10, 1e6)
    decades: float = positive(3.0)
    per_decade: int = at_least(1, 2)
    fit_decades: float = positive(1.5)
    seeds: int = at_least(1, 3)
    kernel_seeds: dict[str, int] = field(default_factory=lambda: {"2": 24, "3": 12})
    kernel_t_max: float = non_negative(0.0)  # horizon of the kernel-only lanes (0: t_max)
    threads: int = at_least(1, 1)
    workers: int = non_negative(0)  # processes for the stages (0: one per `threads` cores)


def _study(config: RunConfig, run: Run, p: RateParams) -> dict[str, dict]:
    """Run every setting: kernel lanes with many seeds, network+kernel pairs with ``seeds``.

    Within a pair the network and the kernel see the same stream, so ``log(net/kernel)``
    has little seed noise (a control variate for the network's slope and risk level). The
    kernel-only lanes may run to a larger horizon (``kernel_t_max``) than the pairs; each
    entry records its horizons as ``kernel.horizons`` / ``network.horizons``.
    """
    horizons = horizon_grid(p.t_max, decades=p.decades, per_decade=p.per_decade)
    kernel_horizons = horizon_grid(
        p.kernel_t_max or p.t_max, decades=p.decades, per_decade=p.per_decade
    )
    window = horizons[horizons >= horizons.max() / 10**p.fit_decades * (1 - 1e-9)]
    if any(s.network for s in p.settings) and not np.isin(window, kernel_horizons).all():
        raise ConfigError(
            "the kernel horizon grid must contain the network's fit horizons "
            f"{window.tolist()} (choose kernel_t_max = t_max · 10^(k/per_decade))"
        )
    reference = float(max(horizons.max(), kernel_horizons.max()))
    problems = {
        s.name: make_problem(
            s, p.model, reference_horizon=reference, generator=config.generator(f"target/{s.name}")
        )
        for s in p.settings
    }
    results: dict[str, dict] = {
        s.name: {
            "problem": problems[s.name],
            "kernel.horizons": kernel_horizons,
            "network.horizons": horizons,
        }
        for s in p.settings
    }
    groups = _groups(p)
    jobs = []
    for key, members, width in groups:
        network = width > 0
        jobs.append(
            StageJob(
                key,
                _run_group,
                ([problems[s.name] for s in members],),
                dict(
                    model=replace(p.model, width=width) if network else p.model,
                    horizons=horizons if network else kernel_horizons,
                    seeds=p.seeds if network else p.kernel_seeds.get(str(members[0].dim), p.seeds),
                    network=network,
                    seed=config.seed,
                    purpose=f"sgd/{key}",
                ),
            )
        )
    workers = p.workers or default_workers(p.threads, torch.device("cpu"))
    with torch_threads(p.threads):
        stored_groups = run_stages(run, jobs, workers=workers, threads=p.threads)
    for (_, members, width), stored in zip(groups, stored_groups, strict=True):
        for index, setting in enumerate(members):
            entry = results[setting.name]
            for name, value in stored.items():
                label = name.replace("kernel.", "paired_kernel.") if width > 0 else name
                entry[label] = np.asarray(value)[index]
    return results


def _run_group(
    problems: list[Problem],
    *,
    model: ModelConfig,
    horizons: np.ndarray,
    seeds: int,
    network: bool,
    seed: int,
    purpose: str,
    log: Callable[..., None],
) -> dict[str, list]:
    """One stage: a batched :func:`run_problems` call on its own stream (a worker may run it)."""
    out = run_problems(
        problems,
        model,
        horizons=horizons,
        seeds=seeds,
        network=network,
        generator=make_generator(seed, purpose),
    )
    return {name: value.tolist() for name, value in out.items()}


def _groups(p: RateParams) -> list[tuple[str, list[Setting], int]]:
    """``(stage key, settings, width)`` per batched call; width 0 marks kernel-only lanes."""
    groups = []
    for dim in sorted({s.dim for s in p.settings}):
        on_sphere = [s for s in p.settings if s.dim == dim]
        groups.append((f"d{dim}-kernel", on_sphere, 0))
        widths = sorted({s.width or p.model.width for s in on_sphere if s.network})
        for width in widths:
            members = [s for s in on_sphere if s.network and (s.width or p.model.width) == width]
            suffix = "" if width == p.model.width else f"-m{width}"
            groups.append((f"d{dim}-paired{suffix}", members, width))
    return groups


def _plot_rate(
    run: Run,
    name: str,
    learner: str,
    horizons: np.ndarray,
    risks: np.ndarray,
    problem: Problem,
    fit_decades: float,
    fit: LogLogFit | None = None,
) -> None:
    """``rate-NAME-LEARNER.png``: every seed's risk vs T, the fitted line, the theorem's slope."""
    plot_loglog_fit(
        run.figure_path(f"rate-{name}-{learner}.png"),
        np.broadcast_to(horizons, risks.shape).ravel(),
        risks.ravel(),
        xlabel="horizon T",
        ylabel="excess risk",
        fit=fit or fit_rate(horizons, risks, fit_decades=fit_decades),
        reference_slope=-problem.predicted,
        title=f"{name} ({learner}), fit on the last {fit_decades:g} decades",
    )


def _report(run: Run, name: str, entry: dict, learner: str, fit_decades: float) -> dict[str, float]:
    problem: Problem = entry["problem"]
    horizons = entry[f"{learner}.horizons"]
    risks = entry[f"{learner}.averaged"]
    fit = fit_rate(horizons, risks, fit_decades=fit_decades)
    proxy = problem.proxy(horizons)
    _plot_rate(run, name, learner, horizons, risks, problem, fit_decades, fit)
    prefix = f"{name}.{learner}"
    run.log(
        None,
        setting=name,
        learner=learner,
        horizons=horizons,
        mean_risk=risks.mean(0),
        proxy=proxy,
        slope=-fit.slope,
    )
    return {
        f"{prefix}.slope": -fit.slope,
        f"{prefix}.slope_ci_low": -fit.ci_high,
        f"{prefix}.slope_ci_high": -fit.ci_low,
        f"{prefix}.slope_error": -fit.slope - problem.predicted,
        f"{prefix}.risk_at_tmax": float(risks[:, -1].mean()),
        f"{prefix}.proxy_ratio": float(risks[:, -1].mean() / proxy[-1]),
    }


def _network_metrics(name: str, entry: dict, fit_decades: float) -> dict[str, float]:
    """Network slope and level through the paired (same-stream) network/kernel ratio.

    The many-seed kernel lanes are restricted to the network's horizons, so both factors
    of ``network = kernel × (network/paired kernel)`` are fitted over the same window.
    """
    problem: Problem = entry["problem"]
    horizons = entry["network.horizons"]
    shared = np.isin(entry["kernel.horizons"], horizons)
    kernel = entry["kernel.averaged"][:, shared]
    kernel_fit = fit_rate(entry["kernel.horizons"][shared], kernel, fit_decades=fit_decades)
    ratio = entry["network.averaged"] / entry["paired_kernel.averaged"]
    ratio_fit = fit_rate(horizons, ratio, fit_decades=fit_decades)
    slope = -kernel_fit.slope - ratio_fit.slope
    half = np.hypot(
        (kernel_fit.ci_high - kernel_fit.ci_low) / 2, (ratio_fit.ci_high - ratio_fit.ci_low) / 2
    )
    level = kernel[:, -1].mean() * ratio[:, -1].mean()
    prefix = f"{name}.network"
    return {
        f"{prefix}.slope": slope,
        f"{prefix}.slope_ci_low": slope - half,
        f"{prefix}.slope_ci_high": slope + half,
        f"{prefix}.slope_error": slope - problem.predicted,
        f"{prefix}.proxy_ratio": float(level / problem.proxy(horizons)[-1]),
        f"{prefix}.raw_slope": -fit_rate(
            horizons, entry["network.averaged"], fit_decades=fit_decades
        ).slope,
        f"{prefix}.t_max": float(horizons.max()),
        f"{name}.network_over_kernel": float(ratio[:, -1].mean()),
        f"{name}.network_over_kernel_slope": -ratio_fit.slope,
    }


def _expected_slope(problem: Problem, entry: dict, fit_decades: float) -> float:
    """Local slope of the closed-form expected risk over the kernel's fit window (reported)."""
    horizons = entry["kernel.horizons"]
    keep = horizons >= horizons.max() / 10**fit_decades * (1 - 1e-9)
    if keep.sum() < 2:
        raise ConfigError("the fit range holds fewer than two horizons")
    expected = problem.expected_risk(horizons[keep])
    return float(-np.polyfit(np.log(horizons[keep]), np.log(expected), 1)[0])


@runner_params(RateParams)
def asgd_rate(config: RunConfig, run: Run) -> dict[str, float]:
    """``ntk-asgd-rate``: fitted slope vs ``2rβ/(2rβ+1)`` and risk vs the ridge proxy."""
    p = config.typed(RateParams)
    results = _study(config, run, p)
    metrics: dict[str, float] = {}
    curves = {}
    for setting in p.settings:
        entry = results[setting.name]
        problem: Problem = entry["problem"]
        metrics[f"{setting.name}.predicted"] = problem.predicted
        metrics[f"{setting.name}.lambda0"] = problem.lambda0
        metrics[f"{setting.name}.expected_slope"] = _expected_slope(problem, entry, p.fit_decades)
        metrics.update(_report(run, setting.name, entry, "kernel", p.fit_decades))
        metrics[f"{setting.name}.kernel.t_max"] = float(entry["kernel.horizons"].max())
        kernel_h = entry["kernel.horizons"]
        curves[f"{setting.name} kernel"] = (kernel_h, entry["kernel.averaged"].mean(0))
        curves[f"{setting.name} proxy"] = (kernel_h, problem.proxy(kernel_h))
        if setting.network:
            metrics.update(_network_metrics(setting.name, entry, p.fit_decades))
            # the raw network risks (the checked slope also divides by the paired kernel)
            _plot_rate(
                run,
                setting.name,
                "network",
                entry["network.horizons"],
                entry["network.averaged"],
                problem,
                p.fit_decades,
            )
            curves[f"{setting.name} network"] = (
                entry["network.horizons"],
                entry["network.averaged"].mean(0),
            )
    plot_curves(
        run.figure_path("risk-vs-proxy.png"),
        curves,
        xlabel="horizon T",
        ylabel="excess risk (mean over seeds)",
        logx=True,
        logy=True,
        title="averaged SGD: network, kernel and the ridge proxy",
    )
    return metrics


@runner_params(RateParams)
def last_iterate(config: RunConfig, run: Run) -> dict[str, float]:
    """``asgd-vs-last-iterate``: slopes of the averaged and the last iterate, same runs."""
    p = config.typed(RateParams)
    results = _study(config, run, p)
    metrics: dict[str, float] = {}
    curves = {}
    for setting in p.settings:
        entry = results[setting.name]
        problem: Problem = entry["problem"]
        learners = ("kernel", "network") if setting.network else ("kernel",)
        for learner in learners:
            horizons = entry[f"{learner}.horizons"]
            plateau = last_iterate_plateau(
                problem.lam(horizons),
                eta=problem.eta,
                mu=problem.spectrum.mu,
                multiplicity=problem.spectrum.multiplicity,
                energy=problem.target.degree_energy(),
                noise_variance=problem.target.noise_variance,
            )
            avg, last = entry[f"{learner}.averaged"], entry[f"{learner}.last"]
            fit_avg = fit_rate(horizons, avg, fit_decades=p.fit_decades)
            fit_last = fit_rate(horizons, last, fit_decades=p.fit_decades)
            prefix = f"{setting.name}.{learner}"
            curves[f"{prefix} averaged"] = (horizons, avg.mean(0))
            curves[f"{prefix} last"] = (horizons, last.mean(0))
            metrics.update(
                {
                    f"{prefix}.averaged_slope": -fit_avg.slope,
                    f"{prefix}.last_slope": -fit_last.slope,
                    f"{prefix}.last_slope_ci_high": -fit_last.ci_low,
                    f"{prefix}.slope_gain": fit_last.slope - fit_avg.slope,
                    f"{prefix}.last_over_averaged": float(last[:, -1].mean() / avg[:, -1].mean()),
                    f"{prefix}.last_over_plateau": float(last[:, -1].mean() / plateau[-1]),
                    f"{prefix}.last_seed_cv": float(last[:, -1].std() / last[:, -1].mean()),
                    f"{prefix}.averaged_seed_cv": float(avg[:, -1].std() / avg[:, -1].mean()),
                }
            )
            curves[f"{prefix} plateau"] = (horizons, plateau)
    plot_curves(
        run.figure_path("last-vs-averaged.png"),
        curves,
        xlabel="horizon T",
        ylabel="excess risk (mean over seeds)",
        logx=True,
        logy=True,
        title="averaged vs last iterate (same runs, same step size)",
    )
    return metrics
