"""The configuration of a meta-training run (``metalab lopt meta-train``) and its checks.

:class:`MetaTrainConfig` is what a run's ``config.json`` stores; :func:`equivalent_command`
turns it back into the one-shot command line recorded as the weights' provenance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.lopt.arch_init import check_init
from metalab.lopt.meta_system import LOSS_SCALES, OBJECTIVES, WEIGHTINGS

__all__ = [
    "ESTIMATORS",
    "MetaTrainConfig",
    "check_outer",
    "check_outer_name",
    "equivalent_command",
]

ESTIMATORS = ("pes", "tes")


@dataclass
class MetaTrainConfig:
    """Everything that defines a meta-training run (stored in the run's ``config.json``).

    Attributes:
        arch: optimizer architecture name (``mlp``, ``hierarchical``).
        arch_options: keyword options of the architecture.
        tasks: task family name.
        estimator: ``pes`` or ``tes`` (truncated ES).
        steps: outer iterations.
        pairs: antithetic pairs ``N``.
        sigma: perturbation scale ``σ`` (learned_optimization: 0.01).
        truncation: window length ``K``.
        min_horizon: shortest sampled episode.
        max_horizon: longest sampled episode.
        val_every: validation-loss period in inner steps.
        outer: ``adam`` or ``learned:PATH`` (a saved learned optimizer trains ``θ``).
        outer_lr: Adam's learning rate on ``θ``.
        loss_clip: per-step training losses are clipped here (NaN/inf mapped to it).
        grad_clip: clip the ES estimate's L2 norm (``None``: no clipping).
        seed: seed of ``θ₀``, the perturbations and the task/data streams.
        checkpoint_every: outer steps between checkpoints.
        init: ``θ₀``: ``random`` or (mlp) ``momentum[:LR[:CLIP]]`` (:mod:`.arch_init`).
        objective: per-step meta-loss: ``train`` or ``validation`` (:class:`TaskTrainingSystem`).
        weighting: ``uniform`` or ``late`` (per-step losses weighted towards the episode's
            end, :class:`TaskTrainingSystem`).
        loss_scale: ``linear`` or ``log`` (per-step losses on a log scale, comparable
            across tasks, :class:`TaskTrainingSystem`).
    """

    arch: str = "mlp"
    arch_options: dict[str, Any] = field(default_factory=dict)
    tasks: str = "mlp-digits"
    estimator: str = "pes"
    steps: int = 100
    pairs: int = 8
    sigma: float = 0.01
    truncation: int = 10
    min_horizon: int = 50
    max_horizon: int = 500
    val_every: int = 1
    outer: str = "adam"
    outer_lr: float = 3e-3
    loss_clip: float = 10.0
    grad_clip: float | None = None
    seed: int = 0
    checkpoint_every: int = 10
    init: str = "random"
    objective: str = "train"
    weighting: str = "uniform"
    loss_scale: str = "linear"

    def check(self) -> None:
        """Raise :class:`ConfigError` (one line) on an impossible setting."""
        if self.estimator not in ESTIMATORS:
            raise UnknownNameError("estimator", self.estimator, ESTIMATORS)
        for name in (
            "steps",
            "pairs",
            "truncation",
            "min_horizon",
            "val_every",
            "checkpoint_every",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_horizon < self.min_horizon:
            raise ConfigError(f"max_horizon {self.max_horizon} < min_horizon {self.min_horizon}")
        if not (self.sigma > 0 and self.outer_lr > 0 and self.loss_clip > 0):
            raise ConfigError("sigma, outer_lr and loss_clip must be > 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(
                f"grad_clip must be > 0 (or unset: no clipping), got {self.grad_clip}"
            )
        if self.objective not in OBJECTIVES:
            raise UnknownNameError("objective", self.objective, OBJECTIVES)
        for name, known in (("weighting", WEIGHTINGS), ("loss_scale", LOSS_SCALES)):
            if getattr(self, name) not in known:
                raise UnknownNameError(name.replace("_", " "), getattr(self, name), known)
        check_init(self.init, self.arch)
        check_outer(self.outer)


def check_outer_name(spec: str) -> None:
    """``adam`` or ``learned:...`` (the file itself is checked by :func:`check_outer`)."""
    if spec != "adam" and not spec.startswith("learned:"):
        raise ConfigError(f"outer must be 'adam' or 'learned:PATH', got {spec!r}")


def check_outer(spec: str) -> None:
    """``adam``, or ``learned:PATH`` naming a readable learned-optimizer weights file."""
    check_outer_name(spec)
    if spec.startswith("learned:"):
        if not Path(spec[8:]).is_file():
            raise ConfigError(f"outer learned optimizer weights {spec[8:]!r} do not exist")
        from metalab.lopt.weights import load_weights

        load_weights(spec[8:])  # a file that is not a weights file fails here, not mid-run


def equivalent_command(config: MetaTrainConfig) -> str:
    """The one-shot ``metalab lopt meta-train`` command line that reproduces ``config``."""
    import shlex

    parts = ["metalab", "lopt", "meta-train"]
    for key, value in asdict(config).items():
        if key == "arch_options":
            parts += [f"--arch-option={k}={json.dumps(v)}" for k, v in value.items()]
        elif value is not None:
            parts.append(f"--{key.replace('_', '-')}={value}")
    return shlex.join(parts)
