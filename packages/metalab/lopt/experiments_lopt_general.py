"""Runner for ``lopt-vs-tuned-baselines`` (and the weights resolution the lopt runners share).

- ``lopt-vs-tuned-baselines`` (VeLO, Metz et al. 2022, Fig. 1; Metz 2020, Sec. 4): the
  shipped default learned optimizer, **untuned**, against Adam and SGD-momentum whose
  learning rates are tuned *per task* by grid search, on the fixed held-out tasks, with
  :func:`metalab.lopt.evaluation.evaluate_task` (one stage per task, so a long run resumes).

Weights (``weights`` parameter): ``"default"`` (the packaged optimizer), a weights-file path,
or ``"init:ARCH"`` (an *untrained* random optimizer of that arch — plumbing checks only).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from metalab.core import Run, RunConfig
from metalab.core.claims import runner_params
from metalab.core.config import at_least, bounded, non_negative, nonempty
from metalab.core.figures import plot_curves
from metalab.core.parallel import StageJob, default_workers, run_stages
from metalab.lopt.evaluation import (
    DEFAULT_GRIDS,
    BaselineResult,
    EvaluationReport,
    TaskResult,
    evaluate_named_task,
    plot_speedup_fraction,
)
from metalab.lopt.interfaces import OptimizerArch

__all__ = [
    "BaselinesParams",
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
    workers: int = non_negative(0)  # processes evaluating tasks side by side (0: one per core)


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
    options = dict(
        device=str(config.torch_device),
        baselines=p.baselines,
        grids=grids,
        seed=config.seed,
        horizon_factor=p.horizon_factor,
        eval_every=p.eval_every or None,
    )
    jobs = [
        StageJob(
            f"task-{task.name}",
            _evaluate_stage,
            (arch, theta, p.tasks, task.name, p.steps),
            options,
        )
        for task in task_set(p.tasks, config.torch_device)
    ]  # θ read once: every task sees the same weights
    workers = p.workers or default_workers(1, config.torch_device)
    results = [_task_result(r) for r in run_stages(run, jobs, workers=workers, threads=1)]
    report = EvaluationReport(p.steps, p.horizon_factor, results)
    (run.dir / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=1))
    plot_speedup_fraction(report, run.figure_path("fraction_vs_speedup.png"))
    _plot_task_curves(run, report)
    return _baseline_metrics(report, p.baselines)


def _evaluate_stage(*args: Any, log: Callable[..., None], **options: Any) -> dict[str, Any]:
    """One held-out task's stage: :func:`evaluate_named_task`, stored as JSON."""
    return asdict(evaluate_named_task(*args, **options))


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
