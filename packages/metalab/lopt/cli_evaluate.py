"""``metalab lopt evaluate``: a learned optimizer against per-task tuned Adam and SGD-momentum.

Each task is :func:`metalab.lopt.evaluation.evaluate_named_task` (one thread), the tasks
side by side in worker processes; torch is imported inside the command body so ``metalab --help``
stays fast.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from metalab.cli.options import FINITE_FLOAT
from metalab.core.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

    from metalab.lopt.evaluation import EvaluationReport
    from metalab.lopt.interfaces import OptimizerArch

__all__ = ["evaluate", "resolve_weights"]


def resolve_weights(spec: str) -> tuple[OptimizerArch, Tensor]:
    """``(arch, θ)`` from a weights file path, ``default`` or ``baseline:NAME`` (defaults).

    Raises:
        ConfigError / UnknownNameError: a missing or invalid file or an unknown baseline.
    """
    from metalab.lopt.baselines import make_baseline

    if spec.startswith("baseline:"):
        import torch

        arch = make_baseline(spec.partition(":")[2])
        return arch, arch.init_theta(generator=torch.Generator())
    from metalab.lopt.weights import load_weights

    weights = load_weights(None if spec == "default" else spec)
    return weights.build_arch(), weights.theta


def _fmt_speedup(value: float, censored: bool) -> str:
    return (">=" if censored else "") + f"{value:.2f}x"


def _table(report: EvaluationReport, baselines: list[str]) -> list[str]:
    width = max(len(r.task) for r in report.tasks)
    head = f"{'task':<{width}}  {'learned':>9}" + "".join(
        f"  {'tuned ' + b:>11}" for b in baselines
    )
    head += "".join(f"  {'vs ' + b:>9}" for b in baselines)
    lines = [head]
    for r in report.tasks:
        row = f"{r.task:<{width}}  {r.learned_final:>9.4g}"
        row += "".join(f"  {r.baselines[b].final:>11.4g}" for b in baselines)
        row += "".join(
            f"  {_fmt_speedup(r.baselines[b].speedup, r.baselines[b].censored):>9}"
            for b in baselines
        )
        lines.append(row)
    return lines


def _parse_baselines(text: str) -> list[str]:
    from metalab.lopt.baselines import baseline_names

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in baseline_names()]
    if unknown or not names:
        raise ConfigError(f"--baselines must list names from {baseline_names()}, got {text!r}")
    return names


@click.command(name="evaluate")
@click.argument("weights")
@click.option(
    "--tasks",
    "task_spec",
    default="held-out",
    show_default=True,
    help="held-out (all held-out tasks) or a task family's held-out tasks.",
)
@click.option("--steps", type=int, default=200, show_default=True, help="Training steps per task.")
@click.option(
    "--baselines", default="adam,sgdm", show_default=True, help="Tuned baselines, comma-separated."
)
@click.option(
    "--horizon-factor",
    type=FINITE_FLOAT,
    default=2.0,
    show_default=True,
    help="Baselines run this many times --steps (largest measurable speed-up).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda[:N]")
@click.option(
    "--workers",
    type=int,
    default=0,
    show_default=True,
    help="Processes training tasks side by side (0: one per CPU core); each task uses one thread.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write report.json and the speed-up figure here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def evaluate(
    weights: str,
    task_spec: str,
    steps: int,
    baselines: str,
    horizon_factor: float,
    seed: int,
    device: str,
    workers: int,
    out: Path | None,
    as_json: bool,
) -> None:
    """Train held-out tasks with WEIGHTS (a weights file, `default` or `baseline:adam`).

    Compares with Adam and SGD-momentum whose learning rates are grid-searched per task;
    prints each task's final test loss and the speed-up (steps the tuned baseline needs
    to reach the learned optimizer's final loss / steps; >= marks a lower bound).
    """
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    if not horizon_factor >= 1:
        raise ConfigError(f"--horizon-factor must be >= 1, got {horizon_factor}")
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0: one per CPU core), got {workers}")
    names = _parse_baselines(baselines)
    from metalab.core.device import resolve_device
    from metalab.core.parallel import default_workers, map_unordered
    from metalab.lopt.evaluation import (
        EvaluationReport,
        evaluate_named_task,
        plot_speedup_fraction,
    )
    from metalab.lopt.task_families import task_set

    torch_device = resolve_device(device)
    arch, theta = resolve_weights(weights)  # read once: every task sees the same weights
    tasks = [task.name for task in task_set(task_spec, torch_device)]
    if not tasks:
        raise ConfigError(f"--tasks {task_spec!r} holds no task")
    evaluate_one = functools.partial(
        evaluate_named_task,
        arch,
        theta,
        task_spec,
        steps=steps,
        device=str(torch_device),
        baselines=names,
        seed=seed,
        horizon_factor=horizon_factor,
    )
    results = dict(
        map_unordered(
            evaluate_one,
            [(name,) for name in tasks],
            workers=workers or default_workers(1, torch_device),
            threads=1,
            labels=[f"task {name}" for name in tasks],
        )
    )
    report = EvaluationReport(steps, horizon_factor, [results[i] for i in range(len(tasks))])
    summary = _summary(report, names)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps({**report.to_dict(), "summary": summary}))
        plot_speedup_fraction(report, out / "speedup_fraction.png")
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "summary": summary}))
        return
    for line in _table(report, names):
        click.echo(line)
    click.echo(
        "vs X: steps tuned X needs to first reach the learned final test loss / --steps\n"
        "(>= : not reached in --horizon-factor x --steps; an early dip counts even if X ends"
        " higher)"
    )
    for name in names:
        click.echo(
            f"matches or beats tuned {name} on {summary[name]['fraction']:.0%} of "
            f"{len(report.tasks)} tasks (worst speed-up {summary[name]['worst']:.2f}x)"
        )


def _summary(report: EvaluationReport, names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        worst = report.worst_speedup(name)
        out[name] = {
            "fraction": report.fraction_matching(name),
            "worst": worst if math.isfinite(worst) else None,
        }
    return out
