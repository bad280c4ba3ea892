"""Runners for ``pes-lopt-mlp`` and ``pes-lr-schedule`` (Vicol et al. 2021, Secs. 5.3, 5.5).

``pes-lopt-mlp`` meta-trains the per-parameter MLP learned optimizer with PES and with
truncated ES at the same compute (Fig. 8).

Both methods get the same number of outer steps, pairs and window length, hence the same
number of inner steps. Each resulting optimizer (and the random initial one) then trains
``eval_episodes`` fresh digits MLPs for ``horizon`` steps; the meta-loss is the mean
training loss per step (common random numbers: the same MLP inits and minibatches).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import torch

from metalab.core import Run, RunConfig
from metalab.core.claims import runner_params
from metalab.core.config import at_least, nonempty, positive
from metalab.core.figures import plot_curves
from metalab.lopt.experiments_toy import _estimator, _train_method, parse_method, single_thread
from metalab.lopt.systems import UnrolledSystem
from metalab.lopt.tasks import LearnedOptimizerSystem
from metalab.lopt.training import full_meta_loss

__all__ = ["LRScheduleParams", "LoptMLPParams", "lopt_mlp", "lr_schedule"]


@dataclass
class LoptMLPParams:
    """Meta-training setup (learned_optimization-style: σ = 0.01, Adam on θ)."""

    horizon: int = at_least(1, 200)
    hidden: int = at_least(1, 32)
    init_scale: float = 1.0
    pairs: int = at_least(1, 32)
    sigma: float = positive(0.01)
    outer_steps: int = at_least(1, 2000)
    outer_lr: float = positive(3e-3)
    methods: list[str] = nonempty(lambda: ["pes:10", "truncated-es:10"])
    loss_clip: float = positive(10.0)
    eval_episodes: int = at_least(1, 16)
    log_every: int = at_least(1, 10)


@runner_params(LoptMLPParams)
def lopt_mlp(config: RunConfig, run: Run) -> dict[str, float]:
    """Meta-train with each method; report each optimizer's meta-loss and the initial one's."""
    p = config.typed(LoptMLPParams)
    system = LearnedOptimizerSystem(
        horizon=p.horizon,
        hidden=p.hidden,
        init_scale=p.init_scale,
        seed=config.seed,
        device=config.torch_device,
    )

    evaluate = functools.partial(_mean_meta_loss, config, system, p.eval_episodes)
    init_loss = run.stage("init", lambda: evaluate(system.initial_theta()))
    metrics: dict[str, float] = {"init.meta_loss": init_loss}
    curves = {}
    for method in p.methods:
        name, k, label = parse_method(method)
        train = functools.partial(_lopt_method, config, run, p, system, name, k, label, evaluate)
        out = run.stage(label, train)
        metrics[f"{label}.meta_loss"] = out["meta_loss"]
        metrics[f"{label}.improvement_over_init"] = init_loss - out["meta_loss"]
        metrics[f"{label}.inner_steps"] = float(out["inner_steps"])
        metrics[f"{label}.steps_per_second"] = out["steps_per_second"]
        curve = torch.tensor(out["curve"])
        window = max(1, len(curve) // 50)
        smooth = curve.unfold(0, window, window).mean(dim=1) if len(curve) >= window else curve
        curves[label] = ((torch.arange(len(smooth)) * window).tolist(), smooth.tolist())
    labels = [parse_method(m)[2] for m in p.methods]
    if len(labels) >= 2:
        metrics["pes_minus_tes"] = (
            metrics[f"{labels[0]}.meta_loss"] - metrics[f"{labels[1]}.meta_loss"]
        )
    plot_curves(
        run.figure_path("meta_training.png"),
        curves,
        xlabel="outer iteration",
        ylabel="training loss per inner step (windows)",
        title="Meta-training the MLP learned optimizer (Vicol et al. 2021, Fig. 8)",
        hlines={"initial optimizer": init_loss},
    )
    return metrics


def _lopt_method(
    config: RunConfig,
    run: Run,
    p: LoptMLPParams,
    system: LearnedOptimizerSystem,
    name: str,
    k: int,
    label: str,
    evaluate: Any,
) -> dict[str, Any]:
    estimator = _estimator(
        name, k, pairs=p.pairs, sigma=p.sigma, nan_loss=p.loss_clip, loss_clip=p.loss_clip
    )
    started = time.perf_counter()
    result = _train_method(
        config,
        system,
        estimator,
        steps=p.outer_steps,
        optimizer=lambda params: torch.optim.Adam(params, lr=p.outer_lr),
        stream=label,
    )
    seconds = time.perf_counter() - started
    per_step = [loss / k for loss in result.losses]
    for i in range(0, len(per_step), p.log_every):
        run.log(i, method=label, window_loss_per_step=per_step[i])
    return {
        "meta_loss": evaluate(result.theta),
        "inner_steps": result.inner_steps,
        "steps_per_second": result.inner_steps / seconds,
        "curve": per_step,
    }


@dataclass
class LRScheduleParams:
    """Sec. 5.3 setup: SGD-momentum MLP on MNIST, inverse-time-decay schedule, σ = 0.1."""

    horizon: int = at_least(1, 5000)
    sizes: list[int] = nonempty(lambda: [784, 100, 100, 10], ge=1)
    batch_size: int = at_least(1, 100)
    pairs: int = at_least(1, 500)
    sigma: float = positive(0.1)
    truncation: int = at_least(1, 10)
    outer_steps: int = at_least(1, 1000)
    outer_lr: float = positive(1e-2)
    objectives: list[str] = nonempty(lambda: ["train-loss", "val-error"])
    methods: list[str] = nonempty(lambda: ["pes", "truncated-es"])
    eval_episodes: int = at_least(1, 4)


@runner_params(LRScheduleParams)
def lr_schedule(config: RunConfig, run: Run) -> dict[str, float]:
    """Tune ``(θ0, θ1)`` of ``lr_t = e^{θ0}/(1 + t/5000)^{e^{θ1}}`` with PES and truncated ES.

    For each objective (training loss; validation error rate, not differentiable) reports
    the full meta-objective (mean per inner step over ``eval_episodes`` full trainings,
    same inits and minibatches for every θ) at each method's final θ and at the start.
    """
    p = config.typed(LRScheduleParams)
    metrics: dict[str, float] = {}
    for objective in p.objectives:
        metrics.update(_lr_objective(config, run, p, objective))
    return metrics


def _lr_objective(
    config: RunConfig, run: Run, p: LRScheduleParams, objective: str
) -> dict[str, float]:
    from metalab.lopt.tasks import ScheduledSGDSystem

    system = ScheduledSGDSystem(
        horizon=p.horizon,
        objective=objective,
        sizes=tuple(p.sizes),
        batch_size=p.batch_size,
        device=config.torch_device,
    )
    key = objective.replace("-", "_")
    evaluate = functools.partial(_mean_meta_loss, config, system, p.eval_episodes)
    metrics = {f"{key}.start": run.stage(f"{key}-start", lambda: evaluate(system.initial_theta()))}
    labels = []
    for name in p.methods:
        label = parse_method(f"{name}:{p.truncation}")[2]
        labels.append(label)
        train = functools.partial(_lr_method, config, run, p, system, key, name, label)
        out = run.stage(f"{key}-{label}", train)
        metrics[f"{key}.{label}"] = out["meta"]
        metrics[f"{key}.{label}.theta0"], metrics[f"{key}.{label}.theta1"] = out["theta"]
    if len(labels) >= 2:
        metrics[f"{key}.pes_minus_tes"] = (
            metrics[f"{key}.{labels[0]}"] - metrics[f"{key}.{labels[1]}"]
        )
    return metrics


def _mean_meta_loss(
    config: RunConfig, system: UnrolledSystem, episodes: int, theta: torch.Tensor
) -> float:
    assert system.horizon is not None
    with single_thread():
        total = full_meta_loss(system, theta, generator=config.generator("eval"), episodes=episodes)
    return float(total) / system.horizon


def _lr_method(
    config: RunConfig,
    run: Run,
    p: LRScheduleParams,
    system: UnrolledSystem,
    key: str,
    name: str,
    label: str,
) -> dict[str, Any]:
    estimator = _estimator(name, p.truncation, pairs=p.pairs, sigma=p.sigma)
    result = _train_method(
        config,
        system,
        estimator,
        steps=p.outer_steps,
        optimizer=lambda params: torch.optim.Adam(params, lr=p.outer_lr),
        stream=f"{key}/{label}",
    )
    for i, theta in enumerate(result.thetas.tolist()):
        run.log(i, objective=key, method=label, theta=theta)
    return {
        "meta": _mean_meta_loss(config, system, p.eval_episodes, result.theta),
        "theta": result.theta.tolist(),
    }
