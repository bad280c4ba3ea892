"""Outer loops over estimators: meta-training, full meta-loss evaluation, estimate statistics.

The outer step is any ``torch.optim`` optimizer on ``θ``: :func:`meta_train` puts the
estimate in ``θ.grad`` and calls ``optimizer.step()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from metalab.core.errors import ConfigError
from metalab.lopt.base import Estimate, GradientEstimator, horizon_of
from metalab.lopt.systems import Layout, UnrolledSystem, unroll

__all__ = [
    "EstimateReport",
    "EstimateStats",
    "MetaTrainResult",
    "estimate_on_system",
    "estimate_statistics",
    "full_meta_loss",
    "meta_train",
]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
Callback = Callable[[int, Tensor, Estimate], None]


@dataclass
class MetaTrainResult:
    """What :func:`meta_train` returns.

    Attributes:
        theta: final meta-parameters ``[d]``.
        thetas: ``[steps + 1, d]`` trajectory (start included).
        losses: the estimator's loss at every outer step.
        inner_steps: inner steps this process took in total.
        state: the estimator's final state (to continue or checkpoint).
    """

    theta: Tensor
    thetas: Tensor
    losses: list[float] = field(default_factory=list)
    inner_steps: int = 0
    state: Any = None


def meta_train(
    system: UnrolledSystem,
    estimator: GradientEstimator,
    *,
    steps: int,
    optimizer: OptimizerFactory,
    generator: torch.Generator,
    data_generator: torch.Generator | None = None,
    theta: Tensor | None = None,
    state: Any = None,
    callback: Callback | None = None,
) -> MetaTrainResult:
    """Run ``steps`` outer iterations: estimate ``∇_θ``, then ``optimizer.step()``.

    Args:
        system: the unrolled system.
        estimator: any registered estimator.
        steps: number of outer iterations.
        optimizer: builds a ``torch.optim`` optimizer for ``[θ]`` (e.g.
            ``lambda p: torch.optim.SGD(p, lr=1e-4)``).
        generator: stream for the perturbations.
        data_generator: stream for data and fresh inner states (default: ``generator``).
        theta: starting point (default: ``system.initial_theta()``).
        state: estimator state to continue from (default: ``estimator.init``).
        callback: called as ``callback(step, theta, estimate)`` after every update.
    """
    start = system.initial_theta() if theta is None else theta
    param = nn.Parameter(start.detach().clone())
    opt = optimizer([param])
    data_gen = data_generator or generator
    if state is None:
        state = estimator.init(system, param.detach(), generator=data_gen)
    thetas, losses, inner = [param.detach().clone()], [], 0
    for index in range(steps):
        estimate, state = estimator.step(
            system, param.detach(), state, generator=generator, data_generator=data_gen
        )
        opt.zero_grad(set_to_none=False)
        param.grad = estimate.grad.to(param.dtype).clone()
        opt.step()
        thetas.append(param.detach().clone())
        losses.append(float(estimate.loss))
        inner += estimate.steps
        if callback is not None:
            callback(index, param.detach(), estimate)
    return MetaTrainResult(param.detach().clone(), torch.stack(thetas), losses, inner, state)


def full_meta_loss(
    system: UnrolledSystem,
    thetas: Tensor,
    *,
    generator: torch.Generator,
    episodes: int = 1,
    steps: int | None = None,
) -> Tensor:
    """The un-truncated meta-loss ``Σ_t L_t`` of each row of ``thetas``, batched.

    Args:
        system: the unrolled system.
        thetas: ``[M, d]`` (or ``[d]``) meta-parameters, evaluated in one batched unroll.
        generator: stream for fresh states and data.
        episodes: independent episodes averaged per row.
        steps: steps to unroll (default: the system's horizon; required if it has none).

    Returns:
        ``[M]`` (or scalar) mean over episodes of the summed loss.
    """
    single = thetas.dim() == 1
    rows = thetas.reshape(-1, system.theta_dim)
    length = steps if steps is not None else horizon_of(system, "full_meta_loss")
    count = rows.shape[0] * episodes
    layout = Layout(count, range(count))
    start = layout.fresh_states(system, generator)
    t0 = torch.zeros(count, dtype=torch.long, device=rows.device)
    with torch.no_grad():
        window = unroll(
            system, start, t0, rows.repeat(episodes, 1), length, layout=layout, generator=generator
        )
    totals = window.losses.sum(dim=1).reshape(episodes, -1).mean(dim=0)
    return totals[0] if single else totals


@dataclass(frozen=True)
class EstimateStats:
    """Independent repeated estimates: their mean, standard error and the samples."""

    mean: Tensor
    stderr: Tensor
    samples: Tensor


def estimate_statistics(
    system: UnrolledSystem,
    estimator: GradientEstimator,
    theta: Tensor,
    *,
    repeats: int,
    windows: int,
    generator: torch.Generator,
) -> EstimateStats:
    """``repeats`` independent samples, each the **sum** of ``windows`` consecutive estimates.

    Each sample starts the estimator afresh (``estimator.init``) and sums its estimates over
    ``windows`` calls at the fixed ``theta``. For a truncated estimator on a finite system,
    ``windows = T / K`` makes each sample an estimate of the full-episode gradient; for
    full-episode estimators use ``windows = 1``.
    """
    if repeats < 2 or windows < 1:
        raise ConfigError(f"need repeats >= 2 and windows >= 1, got {repeats}, {windows}")
    samples = []
    for _ in range(repeats):
        state = estimator.init(system, theta, generator=generator)
        total = torch.zeros_like(theta)
        for _ in range(windows):
            estimate, state = estimator.step(system, theta, state, generator=generator)
            total = total + estimate.grad
        samples.append(total)
    stacked = torch.stack(samples)
    stderr = stacked.std(dim=0, unbiased=True) / math.sqrt(repeats)
    return EstimateStats(stacked.mean(dim=0), stderr, stacked)


@dataclass(frozen=True)
class EstimateReport:
    """What :func:`estimate_on_system` measured (for printing)."""

    system: str
    estimator: str
    theta: Tensor
    windows: int
    steps_per_sample: int
    stats: EstimateStats


def estimate_on_system(
    system_name: str,
    estimator_name: str,
    *,
    theta: list[float] | None = None,
    repeats: int = 20,
    windows: int | None = None,
    seed: int = 0,
    device: str = "auto",
    system_options: dict[str, Any] | None = None,
    **options: Any,
) -> EstimateReport:
    """Run a named estimator on a named system and summarize repeated estimates.

    ``windows`` defaults to one whole episode (``T/K`` windows for truncated estimators,
    1 for whole-episode ones, 1 window for never-ending systems).

    Raises:
        UnknownNameError: an unknown system or estimator name.
        ConfigError: options an estimator does not take, or a θ of the wrong length.
    """
    from metalab.core.device import resolve_device
    from metalab.core.seeding import make_generator
    from metalab.lopt.registry import make_estimator, make_system

    resolved = resolve_device(device)
    system = make_system(system_name, device=resolved, **(system_options or {}))
    estimator = make_estimator(estimator_name, **options)
    point = system.initial_theta() if theta is None else torch.tensor(theta, device=resolved)
    if point.shape != (system.theta_dim,):
        raise ConfigError(f"θ must have {system.theta_dim} values for {system_name}, got {theta}")
    whole = estimator.name in ("full-es", "bptt")
    if not whole and system.horizon is not None and estimator.truncation > system.horizon:
        raise ConfigError(
            f"truncation K = {estimator.truncation} is longer than an episode of {system_name} "
            f"({system.horizon} steps); use K <= {system.horizon}"
        )
    if windows is None:
        horizon = system.horizon
        windows = 1 if whole or horizon is None else max(1, horizon // estimator.truncation)
    stats = estimate_statistics(
        system,
        estimator,
        point,
        repeats=repeats,
        windows=windows,
        generator=make_generator(seed, "noise", device="cpu"),
    )
    per = (system.horizon or 0) if whole else estimator.truncation
    return EstimateReport(system_name, estimator.name, point, windows, windows * per, stats)
