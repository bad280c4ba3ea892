"""Runners for the PES paper's cheap experiments (Vicol et al. 2021, Secs. 5.1–5.2).

* :func:`influence_balancing` — Sec. 5.1, Fig. 3: PES with K=1 and TBPTT with K=100
  reach ``θ* = −1/6``; TBPTT and truncated ES with K=1 drift the wrong way (≈ 3.26
  after 3000 iterations); TBPTT with K=10 diverges.
* :func:`toy_regression` — Sec. 5.2, Fig. 4: tuning a linear learning-rate schedule on
  a chaotic 2-D problem; PES reaches the optimum basin, truncated ES stays near the start.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from metalab.core import Run, RunConfig
from metalab.core.claims import runner_params
from metalab.core.config import at_least, bounded, fraction, nonempty, positive
from metalab.core.errors import ConfigError
from metalab.core.figures import plot_curves, plot_heatmap
from metalab.core.worker_pool import torch_threads
from metalab.lopt.base import GradientEstimator
from metalab.lopt.registry import make_estimator
from metalab.lopt.systems import UnrolledSystem
from metalab.lopt.toy_systems import InfluenceBalancing, ToyRegression
from metalab.lopt.training import MetaTrainResult, OptimizerFactory, full_meta_loss, meta_train

__all__ = [
    "InfluenceBalancingParams",
    "ToyRegressionParams",
    "influence_balancing",
    "parse_method",
    "single_thread",
    "toy_regression",
]


def single_thread() -> contextlib.AbstractContextManager[None]:
    """Run tiny batched ops on one intra-op thread (extra threads only add sync overhead)."""
    return torch_threads(1)


def parse_method(text: str) -> tuple[str, int, str]:
    """``"pes:10"`` → ``("pes", 10, "pes_k10")``: estimator name, window K and metric label."""
    name, sep, k = text.partition(":")
    if not sep or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"method {text!r} must look like 'ESTIMATOR:K', e.g. 'pes:10'")
    short = {"truncated-es": "tes", "full-es": "es"}.get(name, name).replace("-", "_")
    return name, int(k), f"{short}_k{k}"


def _estimator(name: str, k: int, *, pairs: int, sigma: float, **extra: Any) -> GradientEstimator:
    if name in ("tbptt", "bptt"):
        return make_estimator(name, truncation=k, **extra)
    return make_estimator(name, truncation=k, pairs=pairs, sigma=sigma, **extra)


def _train_method(
    config: RunConfig,
    system: UnrolledSystem,
    estimator: GradientEstimator,
    *,
    steps: int,
    optimizer: OptimizerFactory,
    stream: str,
) -> MetaTrainResult:
    """Meta-train one method on one thread, with noise and data streams named ``stream``.

    Naming the streams after the method keeps each method's numbers independent of which
    other methods the experiment runs.
    """
    with single_thread():
        return meta_train(
            system,
            estimator,
            steps=steps,
            optimizer=optimizer,
            generator=config.generator(f"noise/{stream}"),
            data_generator=config.generator(f"data/{stream}"),
        )


@dataclass
class InfluenceBalancingParams:
    """Sec. 5.1 constants (reference code): SGD lr 1e-4, 3000 iterations, σ = 0.1."""

    outer_steps: int = at_least(1, 3000)
    lr: float = positive(1e-4)
    pairs: int = at_least(1, 500)
    sigma: float = positive(0.1)
    theta0: float = 0.5
    methods: list[str] = nonempty(
        lambda: ["pes:1", "truncated-es:1", "tbptt:1", "tbptt:100", "tbptt:10"]
    )
    log_every: int = at_least(1, 50)


@runner_params(InfluenceBalancingParams)
def influence_balancing(config: RunConfig, run: Run) -> dict[str, float]:
    """Meta-train θ of the influence-balancing system with each method; report final θ."""
    p = config.typed(InfluenceBalancingParams)
    system = InfluenceBalancing(theta0=p.theta0, device=config.torch_device)
    theta_star = system.optimum()
    metrics: dict[str, float] = {"theta_star": theta_star}
    curves = {}
    for method in p.methods:
        name, k, label = parse_method(method)

        def train(name: str = name, k: int = k, label: str = label) -> dict[str, Any]:
            estimator = _estimator(name, k, pairs=p.pairs, sigma=p.sigma)
            result = _train_method(
                config,
                system,
                estimator,
                steps=p.outer_steps,
                optimizer=lambda params: torch.optim.SGD(params, lr=p.lr),
                stream=label,
            )
            thetas = result.thetas[:, 0]
            for i in range(0, p.outer_steps + 1, p.log_every):
                run.log(i, method=label, theta=float(thetas[i]))
            return {"theta_final": float(thetas[-1]), "trajectory": thetas.tolist()}

        out = run.stage(label, train)
        final = out["theta_final"]
        metrics[f"{label}.theta_final"] = final
        metrics[f"{label}.abs_error"] = abs(final - theta_star)
        metrics[f"{label}.diverged"] = float(not math.isfinite(final) or abs(final) > 100)
        shown = torch.tensor(out["trajectory"]).clamp(-1.0, 5.0)
        curves[label] = (list(range(len(shown))), shown.tolist())
    plot_curves(
        run.figure_path("theta.png"),
        curves,
        xlabel="outer iteration",
        ylabel="θ (clipped to [−1, 5])",
        title="Influence balancing (Vicol et al. 2021, Fig. 3)",
        hlines={"θ* = −1/6": theta_star},
    )
    return metrics


@dataclass
class ToyRegressionParams:
    """Sec. 5.2 constants (reference code): T=100, K=10, σ=0.3, Adam(1e-2, β1=0.99)."""

    outer_steps: int = at_least(1, 20000)
    outer_lr: float = positive(1e-2)
    beta1: float = bounded(0.99, ge=0, lt=1)
    pairs: int = at_least(1, 50)
    sigma: float = positive(0.3)
    horizon: int = at_least(1, 100)
    theta0: tuple[float, float] = (-4.0, -4.0)
    methods: list[str] = nonempty(lambda: ["pes:10", "truncated-es:10", "tbptt:10"])
    grid: int = at_least(1, 201)
    eval_every: int = at_least(1, 10)
    best_from: float = fraction(0.5)


@runner_params(ToyRegressionParams)
def toy_regression(config: RunConfig, run: Run) -> dict[str, float]:
    """Meta-train the LR schedule with each method; compare with the meta-loss grid optimum.

    Reports per method the full meta-loss at the final θ and the best full meta-loss among
    the iterates evaluated every ``eval_every`` steps in the last ``1 − best_from`` of
    training (the usual "best configuration found" of hyperparameter search).
    """
    p = config.typed(ToyRegressionParams)
    system = ToyRegression(horizon=p.horizon, theta0=p.theta0, device=config.torch_device)
    eval_gen = config.generator("eval")
    with single_thread():
        grid = run.stage("grid", lambda: _loss_grid(system, p.grid, eval_gen))
    values = torch.tensor(grid["values"])
    optimum = float(values.min())
    metrics: dict[str, float] = {"grid_optimum": optimum}
    metrics["grid_theta0"], metrics["grid_theta1"] = grid["argmin"]
    metrics["start_meta_loss"] = float(
        full_meta_loss(system, system.initial_theta(), generator=eval_gen)
    )
    trajectories = {}
    for method in p.methods:
        name, k, label = parse_method(method)
        out = run.stage(
            label,
            functools.partial(_toy_method, config, run, p, system, name, k, label),
        )
        metrics[f"{label}.meta_loss_final"] = out["final"]
        metrics[f"{label}.meta_loss_best"] = out["best"]
        metrics[f"{label}.rel_gap_final"] = out["final"] / optimum - 1.0
        metrics[f"{label}.rel_gap_best"] = out["best"] / optimum - 1.0
        metrics[f"{label}.theta0"], metrics[f"{label}.theta1"] = out["theta"]
        trajectories[label] = out["path"]
    axis = torch.linspace(-5.0, 5.0, p.grid).tolist()
    plot_heatmap(
        run.figure_path("meta_loss_heatmap.png"),
        values.reshape(p.grid, p.grid).T.tolist(),
        x=axis,
        y=axis,
        xlabel="θ0 (log initial lr)",
        ylabel="θ1 (log final lr)",
        title="Toy regression meta-loss (Vicol et al. 2021, Fig. 4)",
        log_scale=True,
        trajectories=trajectories,
    )
    return metrics


def _loss_grid(system: UnrolledSystem, size: int, generator: torch.Generator) -> dict[str, Any]:
    axis = torch.linspace(-5.0, 5.0, size)
    points = torch.cartesian_prod(axis, axis)  # row i*size + j is (axis[i], axis[j])
    values = full_meta_loss(system, points, generator=generator)
    best = int(values.argmin())
    return {"values": values.tolist(), "argmin": points[best].tolist()}


def _toy_method(
    config: RunConfig,
    run: Run,
    p: ToyRegressionParams,
    system: ToyRegression,
    name: str,
    k: int,
    label: str,
) -> dict[str, Any]:
    estimator = _estimator(name, k, pairs=p.pairs, sigma=p.sigma)
    with single_thread():
        result = meta_train(
            system,
            estimator,
            steps=p.outer_steps,
            optimizer=lambda params: torch.optim.Adam(
                params, lr=p.outer_lr, betas=(p.beta1, 0.999)
            ),
            generator=config.generator(f"noise/{label}"),
        )
        evaluated = result.thetas[:: p.eval_every]
        losses = full_meta_loss(system, evaluated, generator=config.generator("eval"))
    for i, loss in enumerate(losses.tolist()):
        run.log(i * p.eval_every, method=label, meta_loss=loss, theta=evaluated[i].tolist())
    late = losses[int(len(losses) * p.best_from) :]
    final = float(full_meta_loss(system, result.theta, generator=config.generator("eval")))
    return {
        "final": final,
        "best": float(late.min()) if len(late) else final,
        "theta": result.theta.tolist(),
        "path": evaluated.tolist(),
    }
