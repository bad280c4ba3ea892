"""Speed-up over a tuned baseline (VeLO's measure) and its summary figure.

The speed-up is ``s / steps``: ``s`` is the first step at which the baseline's curve
reaches the learned optimizer's final loss (Metz et al. 2022, VeLO, Fig. 1); the figure is
the fraction of tasks whose speed-up is at least ``x``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metalab.lopt.evaluation import EvaluationReport

__all__ = ["plot_speedup_fraction", "speedup"]


def speedup(
    target: float, eval_steps: Sequence[int], curve: Sequence[float], steps: int
) -> tuple[float, bool]:
    """``(s / steps, censored)``: ``s`` = first step where ``curve <= target``.

    Between two evaluation steps ``s`` is interpolated linearly (the curve crosses ``target``
    between its last value above and its first value at or below it). Returns
    ``(max(eval_steps) / steps, True)`` when the curve never reaches ``target`` and
    ``(0.0, False)`` when ``target`` is not finite.
    """
    if not math.isfinite(target):
        return 0.0, False
    previous: tuple[int, float] | None = None
    for s, value in zip(eval_steps, curve, strict=True):
        if math.isfinite(value) and value <= target:
            if previous is None or previous[1] == value:
                return s / steps, False
            s0, v0 = previous
            return (s0 + (s - s0) * (v0 - target) / (v0 - value)) / steps, False
        previous = (s, value) if math.isfinite(value) else None
    return max(eval_steps) / steps, True


def plot_speedup_fraction(
    report: EvaluationReport, path: str | os.PathLike[str], *, baselines: Sequence[str] = ()
) -> Path:
    """VeLO's summary figure: fraction of tasks with speed-up ≥ x over each tuned baseline."""
    from metalab.core.figures import plot_curves

    names = list(baselines) or sorted({n for r in report.tasks for n in r.baselines})
    curves = {}
    for name in names:
        values = sorted(max(v, 1e-2) for v in report.speedups(name))
        if not values:
            continue
        xs, ys = [min(values) / 2], [1.0]
        for x in sorted(set(values)):  # a step function: drops at every task's speed-up
            xs += [x, x]
            ys += [
                sum(v >= x for v in values) / len(values),
                sum(v > x for v in values) / len(values),
            ]
        curves[f"vs tuned {name}"] = ([*xs, max(values) * 2], [*ys, 0.0])
    return plot_curves(
        path,
        curves,
        xlabel="speed-up over tuned baseline (x)",
        ylabel="fraction of tasks with speed-up >= x",
        logx=True,
        title=f"{len(report.tasks)} tasks, {report.steps} steps",
        hlines={"half of the tasks": 0.5},
    )
