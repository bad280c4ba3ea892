"""Runner for ``lopt-batch-size-adaptation`` and the effective learning rate it measures.

``lopt-batch-size-adaptation`` (Metz 2020, Sec. 5: learned optimizers "adapt as the
problem hyperparameters (e.g. batch size) change"): the learned optimizer trains the same
held-out MLP at several batch sizes; its **effective learning rate** — the Adam learning
rate that would give the same update norm, ``‖Δp_t‖ / ‖m̂_t/(√v̂_t+ε)‖`` with Adam's
default moments of the gradients it saw, geometric mean over steps — is compared with a
fixed-learning-rate Adam (tuned once at ``reference_batch``; its effective rate is that
constant by definition) and with Adam tuned at every batch size. An optimizer that
normalizes its inputs but does not adapt takes relatively *larger* steps when gradients
are noisy (small batches), so a positive log-log slope of effective rate vs batch size is
a learned behaviour, not an artefact.

Weights (``weights``): as for ``lopt-vs-tuned-baselines``
(:func:`metalab.lopt.experiments_lopt_general.resolve_weights`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metalab.core import Run, RunConfig
from metalab.core.claims import runner_params
from metalab.core.config import at_least, bounded, non_negative, nonempty
from metalab.core.errors import ConfigError
from metalab.core.figures import plot_curves
from metalab.lopt.evaluation import DEFAULT_GRIDS, tune_baseline
from metalab.lopt.experiments_lopt_general import resolve_weights
from metalab.lopt.experiments_toy import single_thread
from metalab.lopt.interfaces import LossFeatures, OptimizerArch, Task

__all__ = ["BatchSizeParams", "batch_size_adaptation", "effective_learning_rate"]


@torch.no_grad()
def effective_learning_rate(
    task: Task,
    arch: OptimizerArch,
    theta: Tensor,
    steps: int,
    *,
    generator: torch.Generator,
    val_every: int = 1,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[float, float]:
    """Train ``task`` with ``arch(θ)``; return (effective Adam learning rate, final test loss).

    The effective rate at step ``t`` is ``‖Δp_t‖ / ‖m̂_t / (√v̂_t + ε)‖`` with Adam's
    bias-corrected moments of the gradients seen (Kingma & Ba 2015, Alg. 1); the result is
    its geometric mean over the steps. Initialization and minibatches are drawn from
    ``generator`` in the same order as :func:`metalab.lopt.evaluation.train_task`, so a
    baseline tuned with a generator of the same seed sees the same data.
    """
    device = task.segments.index.device
    params = task.init_params(1, generator=generator).to(device)
    batches = task.sample_batches(1, steps, generator=generator)
    state = arch.init_state(params, task.segments)
    theta = theta.reshape(1, -1).to(device, params.dtype)
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    log_rates = torch.zeros((), dtype=torch.float64)
    val: Tensor | None = None
    for t in range(steps):
        loss, grads = task.loss_and_grad(params, {k: x[t] for k, x in batches.items()})
        if t % val_every == 0:
            val = task.validation_loss(params, generator=generator)
        m = betas[0] * m + (1 - betas[0]) * grads
        v = betas[1] * v + (1 - betas[1]) * grads * grads
        adam = (m / (1 - betas[0] ** (t + 1))) / ((v / (1 - betas[1] ** (t + 1))).sqrt() + eps)
        step = torch.full((1,), t, dtype=torch.long, device=device)
        new, state = arch.step(
            theta, params, grads, state, step, task.segments, LossFeatures(loss, val)
        )
        rate = (new - params).norm() / adam.norm().clamp_min(1e-30)
        log_rates += rate.clamp_min(1e-30).log().double().cpu()
        params = new
    return math.exp(float(log_rates) / steps), float(task.test_loss(params)[0])


@dataclass
class BatchSizeParams:
    """``lopt-batch-size-adaptation`` settings (the task is an MLP on each dataset)."""

    weights: str = "default"
    datasets: list[str] = nonempty(lambda: ["digits", "mnist"])
    width: int = at_least(1, 96)
    depth: int = non_negative(1)  # 0: a linear classifier
    activation: str = "relu"
    batch_sizes: list[int] = nonempty(lambda: [8, 32, 128, 512], ge=1)
    reference_batch: int = at_least(1, 32)
    steps: int = at_least(1, 1000)
    adam_grid: list[float] = bounded(default_factory=list, gt=0)  # empty: the default grid
    val_every: int = at_least(1, 1)
    control: bool = True


@runner_params(BatchSizeParams)
def batch_size_adaptation(config: RunConfig, run: Run) -> dict[str, float]:
    """Effective step size and final loss vs batch size: learned, fixed-lr Adam, tuned Adam.

    With ``control`` the same arch with *untrained* (initial) weights is measured too, so
    the slope a trained optimizer shows can be told apart from its architecture's.
    """
    from metalab.lopt.task_zoo import MLPTask

    p = config.typed(BatchSizeParams)
    if p.reference_batch not in p.batch_sizes or len(p.batch_sizes) < 2:
        raise ConfigError("batch_sizes needs >= 2 sizes and must contain reference_batch")
    arch, theta, described = resolve_weights(p.weights, generator=config.generator("init"))
    control = arch.init_theta(generator=config.generator("control")) if p.control else None
    run.log(weights=p.weights, described=described)
    grid = list(p.adam_grid or DEFAULT_GRIDS["adam"])
    metrics: dict[str, float] = {}
    figures: dict[str, dict[str, tuple[list[float], list[float]]]] = {"lr": {}, "loss": {}}
    for dataset in p.datasets:
        rows = []
        for batch in p.batch_sizes:
            task = MLPTask(
                dataset,
                width=p.width,
                depth=p.depth,
                activation=p.activation,
                batch_size=batch,
                device=config.torch_device,
            )
            compute = functools.partial(
                _batch_row, config.seed, p, task, arch, theta, control, grid
            )
            rows.append(run.stage(f"{dataset}-b{batch}", compute))
        _dataset_metrics(metrics, figures, dataset, p, grid, rows)
    keys = ["learned_lr_slope", "tuned_adam_lr_slope", "learned_loss_slope"]
    keys += ["fixed_adam_loss_slope"] + (["untrained_lr_slope"] if p.control else [])
    for key in keys:
        metrics[key] = sum(metrics[f"{d}.{key}"] for d in p.datasets) / len(p.datasets)
    if p.control:
        metrics["learned_minus_untrained_lr_slope"] = (
            metrics["learned_lr_slope"] - metrics["untrained_lr_slope"]
        )
    _plot_batch(run, figures)
    return metrics


def _batch_row(
    seed: int,
    p: BatchSizeParams,
    task: Task,
    arch: OptimizerArch,
    theta: Tensor,
    control: Tensor | None,
    grid: list[float],
) -> dict[str, Any]:
    """One batch size: the learned (and untrained) optimizer's rate and loss, Adam's grid."""
    from metalab.lopt.baselines import make_baseline

    def measure(weights: Tensor) -> tuple[float, float]:
        generator = torch.Generator().manual_seed(seed)
        return effective_learning_rate(
            task, arch, weights, p.steps, generator=generator, val_every=p.val_every
        )

    with single_thread():
        rate, final = measure(theta)
        row: dict[str, Any] = {"rate": rate, "final": final}
        if control is not None:
            row["control_rate"], row["control_final"] = measure(control)
        tuned = tune_baseline(
            task,
            make_baseline("adam"),
            grid,
            p.steps,
            generator=torch.Generator().manual_seed(seed),
        )
    row["grid"] = tuned.grid_losses.tolist()
    return row


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx = torch.tensor(xs, dtype=torch.float64).log()
    ly = torch.tensor(ys, dtype=torch.float64).clamp_min(1e-30).log()
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


def _dataset_metrics(
    metrics: dict[str, float],
    figures: dict[str, dict[str, tuple[list[float], list[float]]]],
    dataset: str,
    p: BatchSizeParams,
    grid: list[float],
    rows: list[dict[str, Any]],
) -> None:
    sizes = [float(b) for b in p.batch_sizes]
    ref = rows[p.batch_sizes.index(p.reference_batch)]["grid"]
    fixed = min(range(len(grid)), key=lambda i: _finite(ref[i]))
    tuned = [min(range(len(grid)), key=lambda i: _finite(r["grid"][i])) for r in rows]
    rates = [r["rate"] for r in rows]
    learned_loss = [r["final"] for r in rows]
    fixed_loss = [_finite(r["grid"][fixed]) for r in rows]
    tuned_loss = [_finite(r["grid"][i]) for r, i in zip(rows, tuned, strict=True)]
    tuned_lr = [grid[i] for i in tuned]
    metrics[f"{dataset}.fixed_adam_lr"] = grid[fixed]
    if "control_rate" in rows[0]:
        control = [r["control_rate"] for r in rows]
        metrics[f"{dataset}.untrained_lr_slope"] = _slope(sizes, control)
        figures["lr"][f"{dataset}: untrained (effective)"] = (sizes, control)
        for b, r in zip(p.batch_sizes, rows, strict=True):
            metrics[f"{dataset}.b{b}.untrained_lr"] = r["control_rate"]
            metrics[f"{dataset}.b{b}.untrained_loss"] = r["control_final"]
    metrics[f"{dataset}.learned_lr_slope"] = _slope(sizes, rates)
    metrics[f"{dataset}.tuned_adam_lr_slope"] = _slope(sizes, tuned_lr)
    metrics[f"{dataset}.learned_loss_slope"] = _slope(sizes, learned_loss)
    metrics[f"{dataset}.fixed_adam_loss_slope"] = _slope(sizes, fixed_loss)
    for b, rate, values in zip(
        p.batch_sizes,
        rates,
        zip(learned_loss, fixed_loss, tuned_loss, tuned_lr, strict=True),
        strict=True,
    ):
        metrics[f"{dataset}.b{b}.learned_lr"] = rate
        for key, value in zip(
            ("learned_loss", "fixed_adam_loss", "tuned_adam_loss", "tuned_adam_lr"),
            values,
            strict=True,
        ):
            metrics[f"{dataset}.b{b}.{key}"] = value
    figures["lr"][f"{dataset}: learned (effective)"] = (sizes, rates)
    figures["lr"][f"{dataset}: Adam tuned per batch"] = (sizes, tuned_lr)
    figures["lr"][f"{dataset}: Adam fixed"] = (sizes, [grid[fixed]] * len(sizes))
    figures["loss"][f"{dataset}: learned"] = (sizes, learned_loss)
    figures["loss"][f"{dataset}: Adam fixed lr"] = (sizes, fixed_loss)
    figures["loss"][f"{dataset}: Adam tuned per batch"] = (sizes, tuned_loss)


def _finite(value: Any) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else math.inf


def _plot_batch(run: Run, figures: dict[str, dict[str, tuple[list[float], list[float]]]]) -> None:
    labels = {"lr": "(effective) Adam learning rate", "loss": "final test loss"}
    for key, name in (("lr", "effective_lr_vs_batch"), ("loss", "final_loss_vs_batch")):
        title = f"{labels[key]} vs batch size (Metz et al. 2020, Sec. 5)"
        plot_curves(
            run.figure_path(f"{name}.png"), figures[key], xlabel="batch size",
            ylabel=labels[key], logx=True, logy=True, title=title,
        )  # fmt: skip
