"""Runners for ``lopt-vs-tuned-baselines`` and ``lopt-batch-size-adaptation``.

- ``lopt-vs-tuned-baselines`` (VeLO, Metz et al. 2022, Fig. 1; Metz 2020, Sec. 4): the
  shipped default learned optimizer, **untuned**, against Adam and SGD-momentum whose
  learning rates are tuned *per task* by grid search, on the fixed held-out tasks, with
  :func:`metalab.lopt.evaluation.evaluate_task` (one stage per task, so a long run resumes).
- ``lopt-batch-size-adaptation`` (Metz 2020, Sec. 5: learned optimizers "adapt as the
  problem hyperparameters (e.g. batch size) change"): the learned optimizer trains the same
  held-out MLP at several batch sizes; its **effective learning rate** — the Adam learning
  rate that would give the same update norm, ``‖Δp_t‖ / ‖m̂_t/(√v̂_t+ε)‖`` with Adam's
  default moments of the gradients it saw, geometric mean over steps — is compared with a
  fixed-learning-rate Adam (tuned once at ``reference_batch``; its effective rate is that
  constant by definition) and with Adam tuned at every batch size. An optimizer that
  normalizes its inputs but does not adapt takes relatively *larger* steps when gradients
  are noisy (small batches), so a positive log-log slope of effective rate vs batch size is
  a learned behaviour, not an artefact.

Weights (``weights`` parameter): ``"default"`` (the packaged optimizer), a weights-file path,
or ``"init:ARCH"`` (an *untrained* random optimizer of that arch — plumbing checks only).
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from metalab.core import Run, RunConfig
from metalab.core.claims import runner_params
from metalab.core.config import at_least, bounded, non_negative, nonempty
from metalab.core.errors import ConfigError
from metalab.core.figures import plot_curves
from metalab.lopt.evaluation import (
    DEFAULT_GRIDS,
    BaselineResult,
    EvaluationReport,
    TaskResult,
    evaluate_task,
    plot_speedup_fraction,
    tune_baseline,
)
from metalab.lopt.experiments_toy import single_thread
from metalab.lopt.interfaces import LossFeatures, OptimizerArch, Task

__all__ = [
    "BaselinesParams",
    "BatchSizeParams",
    "batch_size_adaptation",
    "effective_learning_rate",
    "resolve_weights",
    "vs_tuned_baselines",
]


def resolve_weights(spec: str, *, generator: torch.Generator) -> tuple[OptimizerArch, Tensor, str]:
    """``(arch, θ, description)`` for ``"default"``, a weights path, or ``"init:ARCH"``."""
    from metalab.lopt.arch_registry import make_arch
    from metalab.lopt.weights import load_weights

    if spec.startswith("init:"):
        arch = make_arch(spec[5:])
        return arch, arch.init_theta(generator=generator), f"untrained random {spec[5:]}"
    weights = load_weights(None if spec == "default" else spec)
    made = weights.provenance.get("command", "unknown command")
    return weights.build_arch(), weights.theta, f"{weights.arch} weights from {made!r}"


@dataclass
class BaselinesParams:
    """``lopt-vs-tuned-baselines`` settings (empty grids: :data:`DEFAULT_GRIDS`)."""

    weights: str = "default"
    tasks: str = "held-out"
    steps: int = at_least(1, 1000)
    baselines: list[str] = nonempty(lambda: ["adam", "sgdm"])
    adam_grid: list[float] = bounded(default_factory=list, gt=0)  # empty: the default grid
    sgdm_grid: list[float] = bounded(default_factory=list, gt=0)  # empty: the default grid
    horizon_factor: float = at_least(1, 2.0)
    eval_every: int = non_negative(0)  # 0: about 20 evaluations per run


@runner_params(BaselinesParams)
def vs_tuned_baselines(config: RunConfig, run: Run) -> dict[str, float]:
    """Untuned learned optimizer vs per-task tuned Adam / SGD-momentum on held-out tasks."""
    from metalab.lopt.task_families import task_set

    p = config.typed(BaselinesParams)
    arch, theta, described = resolve_weights(p.weights, generator=config.generator("init"))
    run.log(weights=p.weights, described=described, theta_dim=arch.theta_dim)
    grids = {**DEFAULT_GRIDS}
    if p.adam_grid:
        grids["adam"] = tuple(p.adam_grid)
    if p.sgdm_grid:
        grids["sgdm"] = tuple(p.sgdm_grid)
    results = []
    for task in task_set(p.tasks, config.torch_device):

        def compute(task: Task = task) -> dict[str, Any]:
            with single_thread():
                result = evaluate_task(
                    arch,
                    theta,
                    task,
                    p.steps,
                    baselines=p.baselines,
                    grids=grids,
                    seed=config.seed,
                    horizon_factor=p.horizon_factor,
                    eval_every=p.eval_every or None,
                )
            return asdict(result)

        results.append(_task_result(run.stage(f"task-{task.name}", compute)))
    report = EvaluationReport(p.steps, p.horizon_factor, results)
    (run.dir / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=1))
    plot_speedup_fraction(report, run.figure_path("fraction_vs_speedup.png"))
    _plot_task_curves(run, report)
    return _baseline_metrics(report, p.baselines)


def _task_result(data: dict[str, Any]) -> TaskResult:
    """Rebuild a :class:`TaskResult` from its stored JSON form (``None`` → NaN)."""
    data = _nan(data)
    baselines = {k: BaselineResult(**v) for k, v in data.pop("baselines").items()}
    return TaskResult(**data, baselines=baselines)


def _nan(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan(v) for v in value]
    return value


def _ratio(learned: float, baseline: float) -> float:
    """``learned / baseline`` with a baseline that reached exactly 0 giving inf (or 1 if both)."""
    if baseline == 0.0:
        return 1.0 if learned == 0.0 else math.inf
    return learned / baseline


def _baseline_metrics(report: EvaluationReport, baselines: list[str]) -> dict[str, float]:
    metrics: dict[str, float] = {"tasks": float(len(report.tasks))}
    for name in baselines:
        ratios = [_ratio(r.learned_final, r.baselines[name].final) for r in report.tasks]
        finite = [x for x in ratios if math.isfinite(x)]
        metrics[f"fraction_matching_{name}"] = report.fraction_matching(name)
        metrics[f"fraction_loss_le_{name}"] = sum(x <= 1.0 for x in finite) / len(ratios)
        metrics[f"worst_speedup_{name}"] = report.worst_speedup(name)
        metrics[f"median_speedup_{name}"] = float(statistics.median(report.speedups(name)))
        metrics[f"worst_loss_ratio_{name}"] = (
            max(finite) if len(finite) == len(ratios) else math.inf
        )
        for r in report.tasks:
            b = r.baselines[name]
            metrics[f"{r.task}.{name}_final"] = b.final
            metrics[f"{r.task}.{name}_lr"] = b.lr
            metrics[f"{r.task}.speedup_{name}"] = b.speedup
    for r in report.tasks:
        metrics[f"{r.task}.learned_final"] = r.learned_final
    return metrics


def _plot_task_curves(run: Run, report: EvaluationReport) -> None:
    """Log test loss relative to tuned Adam's final loss, every task on one plot."""
    curves = {}
    for r in report.tasks:
        ref = r.baselines["adam"].final if "adam" in r.baselines else 1.0
        ys = [v / ref if math.isfinite(v) and ref > 0 else math.nan for v in r.learned_curve]
        curves[r.task] = ([s / r.steps for s in r.eval_steps], ys)
    plot_curves(
        run.figure_path("learned_vs_tuned_adam_curves.png"),
        curves,
        xlabel="fraction of the training run",
        ylabel="learned test loss / tuned Adam's final test loss",
        logy=True,
        title="Learned optimizer (untuned) on held-out tasks",
        hlines={"tuned Adam's final loss": 1.0},
    )


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
