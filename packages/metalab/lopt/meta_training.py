"""Meta-training learned optimizers on task families with PES / truncated ES (Metz et al. 2020).

:func:`meta_train_lopt` is the outer loop behind ``metalab lopt meta-train``: it builds a
:class:`~metalab.lopt.meta_system.TaskTrainingSystem` (particles train sampled tasks with
an :class:`~metalab.lopt.interfaces.OptimizerArch` at ``θ ± σε``, episode lengths
log-uniform in ``[min_horizon, max_horizon]``), estimates ``∇θ`` of the summed training
loss with PES (Vicol et al. 2021, Eq. 6) or truncated ES, and updates ``θ`` with Adam — or
with a *learned* optimizer (``outer = "learned:PATH"``), Metz et al. 2020's "a learned
optimizer trains a learned optimizer". It runs inside a :class:`~metalab.core.Run`
folder: ``metrics.jsonl``, a checkpoint every ``checkpoint_every`` outer steps holding
everything that changes (``θ``, the outer optimizer's state, the estimator's particle
state, both random streams), so a resumed run continues bit-exactly; at the end the
weights, the learning-curve figure and a summary with the throughput.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metalab.core import Run
from metalab.core.figures import plot_curves
from metalab.core.seeding import make_generator
from metalab.lopt.arch_init import initial_theta
from metalab.lopt.base import GradientEstimator
from metalab.lopt.es import PES, PESState, TruncatedES, TruncatedESState
from metalab.lopt.interfaces import OptimizerArch, TaskFamily
from metalab.lopt.meta_config import (
    ESTIMATORS,
    MetaTrainConfig,
    check_outer_name,
    equivalent_command,
)
from metalab.lopt.meta_system import TaskTrainingSystem

__all__ = [
    "ESTIMATORS",
    "LoptTrainingResult",
    "MetaTrainConfig",
    "build_estimator",
    "build_meta_system",
    "equivalent_command",
    "make_arch_by_name",
    "make_family_by_name",
    "make_outer_optimizer",
    "meta_train_lopt",
]

_STATE_TYPES: dict[str, Any] = {"pes": PESState, "tes": TruncatedESState}
Echo = Callable[[str], None]


@dataclass
class LoptTrainingResult:
    """What :func:`meta_train_lopt` returns.

    Attributes:
        theta: final optimizer weights ``[D]``.
        curve: mean training loss per inner step of every outer step's window.
        inner_steps: inner steps taken in total (particles × unrolled steps).
        steps_per_second: inner steps per second of estimator + update time.
        weights: path of the saved weights file.
    """

    theta: Tensor
    curve: list[float]
    inner_steps: int
    steps_per_second: float
    weights: Path


def make_arch_by_name(name: str, options: dict[str, Any]) -> OptimizerArch:
    """The architecture registered as ``name`` (see :mod:`metalab.lopt.arch_registry`)."""
    from metalab.lopt.arch_registry import make_arch

    return make_arch(name, **options)


def make_family_by_name(name: str) -> TaskFamily:
    """The task family registered as ``name`` (see :mod:`metalab.lopt.task_families`)."""
    from metalab.lopt.task_families import make_family

    return make_family(name)


def build_meta_system(
    config: MetaTrainConfig, *, arch: OptimizerArch, family: TaskFamily, device: torch.device
) -> TaskTrainingSystem:
    """The :class:`TaskTrainingSystem` of ``config`` (``θ₀`` from the ``init`` stream)."""
    generator = make_generator(config.seed, "meta-train/init")
    return TaskTrainingSystem(
        arch,
        family,
        min_horizon=config.min_horizon,
        max_horizon=config.max_horizon,
        val_every=config.val_every,
        theta0=initial_theta(config.init, arch, generator=generator),
        device=device,
        objective=config.objective,
        weighting=config.weighting,
        loss_scale=config.loss_scale,
    )


def build_estimator(config: MetaTrainConfig) -> GradientEstimator:
    """PES or truncated ES with the config's pairs, σ, K and loss clipping."""
    cls = PES if config.estimator == "pes" else TruncatedES
    return cls(
        pairs=config.pairs,
        sigma=config.sigma,
        truncation=config.truncation,
        loss_clip=config.loss_clip,
        nan_loss=config.loss_clip,
        grad_clip=config.grad_clip,
    )


def make_outer_optimizer(spec: str, param: nn.Parameter, *, lr: float) -> torch.optim.Optimizer:
    """``adam`` → ``Adam(lr)``; ``learned:PATH`` → the learned optimizer saved at ``PATH``."""
    check_outer_name(spec)  # the file is read once, by LearnedOptimizer (which checks it)
    if spec == "adam":
        return torch.optim.Adam([param], lr=lr)
    from metalab.lopt.optimizer import LearnedOptimizer

    return LearnedOptimizer([param], weights=spec.split(":", 1)[1])


def meta_train_lopt(
    config: MetaTrainConfig,
    *,
    run: Run,
    device: torch.device | str = "cpu",
    arch: OptimizerArch | None = None,
    family: TaskFamily | None = None,
    echo: Echo | None = None,
    print_every: int = 10,
    command: str = "metalab.lopt.meta_train_lopt",
) -> LoptTrainingResult:
    """Meta-train ``config.arch`` on ``config.tasks``; resume from ``run``'s checkpoint if any.

    Args:
        config: the run's settings (validated with :meth:`MetaTrainConfig.check`).
        run: the run folder (a reopened one resumes from its latest checkpoint).
        device: where the inner training runs.
        arch: an architecture object (default: ``config.arch`` from the registry).
        family: a task family object (default: ``config.tasks`` from the registry).
        echo: called with a progress line every ``print_every`` outer steps.
        print_every: progress period.
        command: the command line recorded in the weights' provenance.

    Returns:
        The final ``θ``, the learning curve, throughput and where the weights went.
    """
    config.check()
    device = torch.device(device)
    arch = arch or make_arch_by_name(config.arch, config.arch_options)
    family = family or make_family_by_name(config.tasks)
    system = build_meta_system(config, arch=arch, family=family, device=device)
    estimator = build_estimator(config)
    loop = _Loop(config, system, estimator, device)
    loop.restore(run.load_checkpoint())
    while loop.step < config.steps:
        loop.advance()
        run.log(loop.step, window_loss=loop.curve[-1], inner_steps=loop.inner_steps)
        if echo is not None and (loop.step % print_every == 0 or loop.step == config.steps):
            echo(
                f"step {loop.step}/{config.steps}  loss/step {loop.curve[-1]:.4f}  "
                f"{loop.throughput:,.0f} inner steps/s"
            )
        if loop.step % config.checkpoint_every == 0 or loop.step == config.steps:
            run.save_checkpoint(loop.snapshot())
    return _finish(config, run, loop, command)


class _Loop:
    """The outer loop's mutable state: ``θ``, outer optimizer, estimator state, streams."""

    def __init__(
        self,
        config: MetaTrainConfig,
        system: TaskTrainingSystem,
        estimator: GradientEstimator,
        device: torch.device,
    ) -> None:
        self.config, self.system, self.estimator = config, system, estimator
        self.param = nn.Parameter(system.initial_theta())
        self.opt = make_outer_optimizer(config.outer, self.param, lr=config.outer_lr)
        self.noise = make_generator(config.seed, "meta-train/noise", device=device)
        self.data = make_generator(config.seed, "meta-train/data", device=device)
        self.state: Any = None
        self.step, self.inner_steps, self.seconds = 0, 0, 0.0
        self.curve: list[float] = []

    @property
    def throughput(self) -> float:
        """Inner steps per second so far (estimator + outer update time only)."""
        return self.inner_steps / max(self.seconds, 1e-9)

    def advance(self) -> None:
        """One estimate of ``∇θ`` and one outer update."""
        if self.state is None:
            self.state = self.estimator.init(self.system, self.param.detach(), generator=self.data)
        started = time.perf_counter()
        estimate, self.state = self.estimator.step(
            self.system,
            self.param.detach(),
            self.state,
            generator=self.noise,
            data_generator=self.data,
        )
        self.opt.zero_grad(set_to_none=False)
        self.param.grad = estimate.grad.to(self.param.dtype).clone()
        meta_loss = float(estimate.loss)
        self.opt.step(lambda: meta_loss)  # a learned outer optimizer reads it as its loss feature
        self.seconds += time.perf_counter() - started
        self.step += 1
        self.inner_steps += estimate.steps
        self.curve.append(float(estimate.loss) / self.config.truncation)

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly."""
        return {
            "step": self.step,
            "theta": self.param.detach(),
            "outer": self.opt.state_dict(),
            "estimator": dict(self.state._asdict()),
            "noise_rng": self.noise.get_state(),
            "data_rng": self.data.get_state(),
            "curve": torch.tensor(self.curve, dtype=torch.float64),
            "inner_steps": self.inner_steps,
            "seconds": self.seconds,
        }

    def restore(self, saved: dict[str, Any] | None) -> None:
        """Continue from a :meth:`snapshot` (no-op for a fresh run)."""
        if saved is None:
            return
        device = self.param.device
        with torch.no_grad():
            self.param.copy_(saved["theta"].to(device))
        self.opt.load_state_dict(saved["outer"])
        state_type = _STATE_TYPES[self.config.estimator]
        self.state = state_type(**_to_device(saved["estimator"], device))
        self.noise.set_state(saved["noise_rng"])
        self.data.set_state(saved["data_rng"])
        self.step, self.inner_steps = int(saved["step"]), int(saved["inner_steps"])
        self.seconds = float(saved["seconds"])
        self.curve = [float(x) for x in saved["curve"].tolist()]


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _finish(config: MetaTrainConfig, run: Run, loop: _Loop, command: str) -> LoptTrainingResult:
    theta = loop.param.detach().clone()
    weights = save_meta_trained(
        run.dir / "weights.pt",
        config,
        theta,
        command=command,
        inner_steps=loop.inner_steps,
        run_dir=str(run.dir),
    )
    curve = loop.curve
    window = max(1, len(curve) // 100)
    smooth = torch.tensor(curve).unfold(0, window, window).mean(dim=1).tolist()
    xs = [window * (i + 1) for i in range(len(smooth))]
    plot_curves(
        run.figure_path("meta_training.png"),
        {f"{config.estimator} ({config.arch} on {config.tasks})": (xs, smooth)},
        xlabel="outer iteration",
        ylabel="training loss per inner step (window mean)",
        title="Meta-training a learned optimizer (Metz et al. 2020)",
    )
    run.write_summary(
        {
            "steps": loop.step,
            "inner_steps": loop.inner_steps,
            "inner_steps_per_second": loop.throughput,
            "final_window_loss": sum(curve[-10:]) / max(1, len(curve[-10:])),
            "first_window_loss": sum(curve[:10]) / max(1, len(curve[:10])),
            "weights": str(weights),
        }
    )
    return LoptTrainingResult(theta, list(curve), loop.inner_steps, loop.throughput, weights)


def save_meta_trained(
    path: Path,
    config: MetaTrainConfig,
    theta: Tensor,
    *,
    command: str,
    inner_steps: int,
    run_dir: str,
) -> Path:
    """Save ``θ`` with :func:`metalab.lopt.weights.save_weights`; the config is provenance."""
    from metalab.lopt.weights import make_provenance, save_weights

    metadata = make_provenance(
        command=equivalent_command(config),
        invoked=command,
        steps=config.steps,
        estimator=config.estimator,
        tasks=config.tasks,
        inner_steps=inner_steps,
        run=run_dir,
        config=asdict(config),
    )
    return save_weights(
        path, theta, arch=config.arch, options=config.arch_options, provenance=metadata
    )
