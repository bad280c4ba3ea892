"""Evaluate an optimizer on tasks against per-task tuned Adam and SGD-momentum (VeLO, Fig. 1).

For every task, the learned optimizer (untuned) trains the task for ``steps`` steps; each
baseline trains it with every learning rate of a grid *as one population* (one batched
run, all rows from the same initialization and the same minibatches) for
``horizon_factor × steps`` steps, and the learning rate with the lowest **validation loss
at step ``steps``** is kept (one validation minibatch, the same rows for every grid point:
the test split is never used to choose a learning rate).
The **speed-up** over a tuned baseline is ``s / steps`` where ``s`` is the first
evaluation step at which the tuned baseline's test loss reaches the learned optimizer's
final test loss (Metz et al. 2022, VeLO: "steps the baseline needs to reach the learned
optimizer's loss"). Conventions: if the baseline never reaches it within
``horizon_factor × steps`` steps the speed-up is reported as that cap with
``censored=True`` (a lower bound); a non-finite learned final loss gives speed-up 0.
``speed-up ≥ 1`` means the learned optimizer matches or beats the tuned baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.core.worker_pool import torch_threads
from metalab.lopt.baselines import make_baseline, with_learning_rates
from metalab.lopt.interfaces import LossFeatures, OptimizerArch, Task
from metalab.lopt.speedups import plot_speedup_fraction, speedup
from metalab.lopt.systems import State

__all__ = [
    "DEFAULT_GRIDS",
    "BaselineResult",
    "EvaluationReport",
    "TaskResult",
    "TrainCurves",
    "TunedBaseline",
    "evaluate",
    "evaluate_named_task",
    "evaluate_task",
    "plot_speedup_fraction",
    "speedup",
    "train_task",
    "tune_baseline",
]

DEFAULT_GRIDS: dict[str, tuple[float, ...]] = {
    "adam": tuple(10.0 ** (e / 2) for e in range(-8, -1)),  # 1e-4 … 1e-1
    "sgdm": tuple(10.0 ** (e / 2) for e in range(-6, 1)),  # 1e-3 … 1
}


class TrainCurves(NamedTuple):
    """Loss curves of one batched training run.

    Attributes:
        train: ``[P, steps]`` minibatch training loss before each update.
        test: ``[P, K]`` test loss at ``eval_steps``.
        eval_steps: ``[K]`` steps (``0`` = initialization) at which the test loss was taken.
        val: ``[P, K]`` validation loss at ``eval_steps`` (one validation minibatch per
            evaluation step, the same rows for every particle): what tuning selects on.
    """

    train: Tensor
    test: Tensor
    eval_steps: Tensor
    val: Tensor


def _eval_steps(length: int, every: int, extra: Sequence[int] = ()) -> list[int]:
    return sorted({0, length, *range(every, length + 1, every), *(s for s in extra if s <= length)})


def _child_generator(generator: torch.Generator) -> torch.Generator:
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=generator.device).manual_seed(seed)


@torch.no_grad()
def train_task(
    task: Task,
    arch: OptimizerArch,
    theta: Tensor,
    steps: int,
    *,
    generator: torch.Generator,
    eval_every: int | None = None,
    eval_at: Sequence[int] = (),
    val_every: int = 1,
) -> TrainCurves:
    """Train ``task`` with every row of ``theta`` ``[P, D]`` in one batched run.

    All rows start from the same initialization and see the same minibatches (drawn from
    ``generator``). As in meta-training, an arch that reads the validation loss is fed a
    fresh one (one validation minibatch at the parameters about to be updated) every
    ``val_every`` steps in :class:`~metalab.lopt.interfaces.LossFeatures`; every
    evaluation step also records one, for tuning.

    Args:
        task: the inner problem.
        arch: the optimizer.
        theta: ``[P, D]`` (or ``[D]`` for one row) optimizer weights.
        steps: training steps.
        generator: randomness of initialization, minibatches and validation batches.
        eval_every: test-loss period (default ``max(1, steps // 20)``).
        eval_at: extra steps at which to take the test loss.
        val_every: validation-feature period (meta-training's default: every step).
    """
    if steps < 1 or val_every < 1:
        raise ConfigError(f"steps and val_every must be >= 1, got {steps} and {val_every}")
    device = task.segments.index.device
    theta = theta.reshape(-1, arch.theta_dim).to(device)
    num = theta.shape[0]
    points = _eval_steps(steps, eval_every or max(1, steps // 20), eval_at)
    wanted = set(points)
    params = task.init_params(1, generator=generator).expand(num, -1).clone()
    batches = _shared_batches(task, num, steps, generator)
    val_generator = _child_generator(generator)
    state = arch.init_state(params, task.segments)
    train = torch.empty(num, steps, device=device)
    test: list[Tensor] = []
    vals: list[Tensor] = []
    val = None
    for t in range(steps + 1):
        feed = t < steps and arch.uses_validation_loss and t % val_every == 0
        if feed or t in wanted:
            fresh = task.validation_loss(params, generator=val_generator)
            val = fresh if feed else val
        if t in wanted:
            test.append(task.test_loss(params))
            vals.append(fresh)
        if t == steps:
            break
        loss, grads = task.loss_and_grad(params, {k: v[t] for k, v in batches.items()})
        train[:, t] = loss
        step = torch.full((num,), t, device=device, dtype=torch.long)
        losses = LossFeatures(train=loss, val=val)
        params, state = arch.step(theta, params, grads, state, step, task.segments, losses)
    return TrainCurves(
        train, torch.stack(test, dim=1), torch.tensor(points), torch.stack(vals, dim=1)
    )


def _shared_batches(task: Task, num: int, steps: int, generator: torch.Generator) -> State:
    """One particle's minibatches ``[steps, 1, ...]`` viewed as ``[steps, num, ...]``."""
    batches = task.sample_batches(1, steps, generator=generator)
    return {k: v.expand(-1, num, *v.shape[2:]) for k, v in batches.items()}


class TunedBaseline(NamedTuple):
    """A baseline tuned by grid search on one task.

    Attributes:
        lr: the chosen learning rate.
        best: its position in the grid.
        grid_losses: ``[G]`` validation loss at the tuning step per grid point (``inf`` = diverged).
        curves: the whole population's curves (row ``best`` is the tuned run).
    """

    lr: float
    best: int
    grid_losses: Tensor
    curves: TrainCurves

    def test_at(self, step: int) -> float:
        """The tuned run's test loss at ``step`` (one of ``curves.eval_steps``)."""
        return float(self.curves.test[self.best, self.curves.eval_steps.tolist().index(step)])


def tune_baseline(
    task: Task,
    arch: OptimizerArch,
    grid: Sequence[float],
    steps: int,
    *,
    generator: torch.Generator,
    run_steps: int | None = None,
    eval_every: int | None = None,
) -> TunedBaseline:
    """Grid-search the learning rate of a baseline arch as one population.

    The run lasts ``run_steps`` (default ``steps``); the grid point with the lowest
    **validation** loss at step ``steps`` wins (non-finite losses count as ``inf``; ties: the
    first). The test split plays no part in the choice.
    """
    theta = with_learning_rates(arch.init_theta(generator=torch.Generator()), grid)
    curves = train_task(
        task,
        arch,
        theta,
        run_steps or steps,
        generator=generator,
        eval_every=eval_every or max(1, steps // 20),
        eval_at=(steps,),
    )
    column = int((curves.eval_steps == steps).nonzero()[0, 0])
    losses = curves.val[:, column]
    losses = torch.where(torch.isfinite(losses), losses, math.inf)
    index = int(torch.argmin(losses))
    return TunedBaseline(float(grid[index]), index, losses, curves)


@dataclass
class BaselineResult:
    """A tuned baseline on one task: learning rate, final test loss, curve, speed-up."""

    lr: float
    final: float
    curve: list[float]
    speedup: float
    censored: bool


@dataclass
class TaskResult:
    """One task's evaluation: the learned optimizer's curves and every tuned baseline."""

    task: str
    steps: int
    eval_steps: list[int]
    learned_curve: list[float]
    learned_train: list[float]
    learned_final: float
    baselines: dict[str, BaselineResult] = field(default_factory=dict)


def _baseline_result(tuned: TunedBaseline, target: float, steps: int) -> BaselineResult:
    points = tuned.curves.eval_steps.tolist()
    curve = tuned.curves.test[tuned.best].tolist()
    value, censored = speedup(target, points, curve, steps)
    return BaselineResult(tuned.lr, tuned.test_at(steps), curve, value, censored)


def evaluate_task(
    arch: OptimizerArch,
    theta: Tensor,
    task: Task,
    steps: int,
    *,
    baselines: Sequence[str] = ("adam", "sgdm"),
    grids: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    horizon_factor: float = 2.0,
    eval_every: int | None = None,
) -> TaskResult:
    """Evaluate one task (see the module docstring); every run is seeded with ``seed``."""
    grids = {**DEFAULT_GRIDS, **(grids or {})}
    if not math.isfinite(horizon_factor) or horizon_factor < 1:
        raise ConfigError(f"horizon_factor must be >= 1, got {horizon_factor}")
    every = eval_every or max(1, steps // 20)
    learned = train_task(
        task,
        arch,
        theta.reshape(1, -1),
        steps,
        generator=torch.Generator().manual_seed(seed),
        eval_every=every,
    )
    final = float(learned.test[0, -1])
    result = TaskResult(
        task.name,
        steps,
        learned.eval_steps.tolist(),
        learned.test[0].tolist(),
        learned.train[0].tolist(),
        final,
    )
    for name in baselines:
        if name not in grids:
            raise ConfigError(f"no learning-rate grid for baseline {name!r}")
        tuned = tune_baseline(
            task,
            make_baseline(name),
            grids[name],
            steps,
            generator=torch.Generator().manual_seed(seed),
            run_steps=math.ceil(horizon_factor * steps),
            eval_every=every,
        )
        result.baselines[name] = _baseline_result(tuned, final, steps)
    return result


@dataclass
class EvaluationReport:
    """Per-task results and the summary statistics of an evaluation."""

    steps: int
    horizon_factor: float
    tasks: list[TaskResult]

    def speedups(self, baseline: str = "adam") -> list[float]:
        """Speed-up over the tuned ``baseline`` on every task."""
        return [r.baselines[baseline].speedup for r in self.tasks if baseline in r.baselines]

    def fraction_matching(self, baseline: str = "adam") -> float:
        """Fraction of tasks where the learned optimizer matches or beats the tuned baseline."""
        values = self.speedups(baseline)
        return sum(v >= 1.0 for v in values) / len(values) if values else math.nan

    def worst_speedup(self, baseline: str = "adam") -> float:
        """The smallest speed-up over the tuned baseline."""
        return min(self.speedups(baseline), default=math.nan)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (non-finite numbers become ``None``)."""
        return _json_safe(asdict(self))


def evaluate_named_task(
    arch: OptimizerArch,
    theta: Tensor,
    tasks: str,
    name: str,
    steps: int,
    *,
    device: str,
    **options: Any,
) -> TaskResult:
    """:func:`evaluate_task` on task ``name`` of the task set ``tasks``, on one thread.

    A worker process can run it: tasks hold closures that do not pickle, their names do.
    ``options`` are :func:`evaluate_task`'s keywords.
    """
    from metalab.lopt.task_families import task_set

    task = next(t for t in task_set(tasks, device) if t.name == name)
    with torch_threads(1):
        return evaluate_task(arch, theta, task, steps, **options)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def evaluate(
    arch: OptimizerArch,
    theta: Tensor,
    tasks: Sequence[Task],
    steps: int,
    *,
    baselines: Sequence[str] = ("adam", "sgdm"),
    grids: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    horizon_factor: float = 2.0,
    eval_every: int | None = None,
) -> EvaluationReport:
    """Train every task with ``arch(θ)`` (untuned) and with tuned baselines; compare.

    Args:
        arch: the optimizer under test.
        theta: its weights ``[D]``.
        tasks: e.g. :func:`metalab.lopt.task_families.held_out_tasks`.
        steps: training steps of the learned optimizer (and the tuning horizon).
        baselines: baseline names (``"adam"``, ``"sgdm"``).
        grids: learning-rate grids per baseline (default :data:`DEFAULT_GRIDS`).
        seed: seed of initialization and minibatches (the same for every optimizer).
        horizon_factor: baselines run ``horizon_factor × steps`` steps to measure speed-ups
            up to that factor.
        eval_every: test-loss period (default ``steps // 20``).
    """
    if not tasks:
        raise ConfigError("evaluate needs at least one task")
    results = [
        evaluate_task(
            arch,
            theta,
            task,
            steps,
            baselines=baselines,
            grids=grids,
            seed=seed,
            horizon_factor=horizon_factor,
            eval_every=eval_every,
        )
        for task in tasks
    ]
    return EvaluationReport(steps, horizon_factor, results)
