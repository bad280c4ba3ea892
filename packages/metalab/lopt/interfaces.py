"""The two contracts of the learned-optimizer line: optimizer architectures and inner tasks.

An :class:`OptimizerArch` is an optimizer written as a *pure, batched* function of its
weights ``θ``: every particle ``p`` of a population carries its own ``θ[p]``, its own flat
parameter vector ``params[p]`` and its own optimizer state, so ES/PES can perturb ``θ``
and advance all perturbed optimizers in one call (Metz et al. 2019/2020). The same
function with ``P = 1`` drives :class:`torch.optim.Optimizer` wrappers over ordinary
``nn.Module`` parameters, and hand-designed optimizers (SGD-momentum, Adam) are archs
whose ``θ`` are their log learning rate and momenta, so a learning-rate grid is a
population too.

A :class:`Task` is an inner problem over flat parameters ``[P, N]`` whose tensors are the
segments of :class:`~metalab.lopt.segments.Segments` (for per-tensor statistics): it
initializes parameters, draws minibatches and returns loss and gradient for all particles
at once. A :class:`TaskFamily` samples tasks by name and seed, so meta-training and
held-out evaluation sets are fixed and comparable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from metalab.lopt.mlp_lopt import Segments
from metalab.lopt.systems import State

__all__ = [
    "LossFeatures",
    "OptimizerArch",
    "Task",
    "TaskFamily",
    "check_arch_scales",
    "check_arch_sizes",
]


def check_arch_sizes(arch: str, **sizes: object) -> None:
    """Refuse non-integer or non-positive layer sizes with one line (they come from CLIs/files)."""
    from metalab.core.errors import ConfigError

    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{arch} optimizer option {key} must be an integer >= 1, got {value!r}"
            )


def check_arch_scales(arch: str, *, positive: bool = False, **scales: object) -> None:
    """Refuse scales that are not finite real numbers ``>= 0`` (``> 0`` with ``positive``)."""
    import math

    from metalab.core.errors import ConfigError

    for key, value in scales.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            ok = False
        else:
            ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
        if not ok:
            bound = "> 0" if positive else ">= 0"
            raise ConfigError(
                f"{arch} optimizer option {key} must be a number {bound}, got {value!r}"
            )


class LossFeatures(NamedTuple):
    """Loss signals an optimizer may condition on (the hierarchical optimizer does).

    Attributes:
        train: ``[P]`` minibatch training loss at the parameters being updated.
        val: ``[P]`` most recent validation loss, or ``None`` when the caller has none.
    """

    train: Tensor
    val: Tensor | None = None


class OptimizerArch(ABC):
    """An optimizer as a batched pure function ``(θ, params, grads, state) -> (params, state)``.

    Attributes:
        name: registry name (``"mlp"``, ``"hierarchical"``, ``"adam-mlp"``, ``"adam"``, ``"sgdm"``).
        state_grad_powers: for per-entry state keys that accumulate the gradient, the
            power of the gradient they hold (momenta 1, second moments 2). Tools that
            move state between parameters (Net2Net's widening) scale by it; a key not
            listed is one they must not carry.
        uses_validation_loss: whether :meth:`step` reads ``losses.val`` (callers skip the
            validation pass for archs that ignore it).
        uses_training_loss: whether :meth:`step` conditions on ``losses.train``, so that
            ``LearnedOptimizer.step`` refuses to run it without a loss (its ``losses=None``
            inputs were never seen in meta-training).
    """

    name: str = ""
    state_grad_powers: ClassVar[Mapping[str, int]] = MappingProxyType({})
    uses_validation_loss: bool = True
    uses_training_loss: bool = False

    @property
    @abstractmethod
    def theta_dim(self) -> int:
        """Number of optimizer weights ``D``."""

    @abstractmethod
    def init_theta(self, *, generator: torch.Generator) -> Tensor:
        """Initial optimizer weights ``[D]`` (random for learned archs, defaults for baselines)."""

    @abstractmethod
    def init_state(self, params: Tensor, segments: Segments) -> State:
        """Optimizer state for ``params`` ``[P, N]`` (each tensor's leading dimension ``P``)."""

    @abstractmethod
    def step(
        self,
        theta: Tensor,
        params: Tensor,
        grads: Tensor,
        state: State,
        t: Tensor,
        segments: Segments,
        losses: LossFeatures | None = None,
    ) -> tuple[Tensor, State]:
        """One update for every particle.

        Args:
            theta: ``[P, D]`` optimizer weights, one row per particle.
            params: ``[P, N]`` flat parameters.
            grads: ``[P, N]`` their gradients.
            state: the optimizer state from :meth:`init_state` or the previous step.
            t: ``[P]`` step index within each particle's inner training.
            segments: which entries of ``params`` form which tensor.
            losses: loss features (archs that ignore them accept ``None``).

        Returns:
            ``(new_params, new_state)``.
        """


class Task(ABC):
    """An inner training problem over flat parameter vectors, batched over particles.

    Attributes:
        name: a stable name (``"mlp-digits-w32-d2-relu-b64"`` style) used in reports.
        segments: tensor layout of the flat parameter vector.
    """

    name: str = ""
    segments: Segments

    @property
    def num_params(self) -> int:
        """``N``, the length of a flat parameter vector."""
        return int(self.segments.sizes.sum())

    @abstractmethod
    def init_params(self, num: int, *, generator: torch.Generator) -> Tensor:
        """``num`` freshly initialized parameter vectors ``[num, N]``."""

    @abstractmethod
    def sample_batches(self, num: int, steps: int, *, generator: torch.Generator) -> State:
        """Training minibatches for ``num`` particles: tensors ``[steps, num, ...]``."""

    @abstractmethod
    def loss_and_grad(self, params: Tensor, batch: State) -> tuple[Tensor, Tensor]:
        """Minibatch loss ``[P]`` and gradient ``[P, N]``; ``batch`` is one step's slice."""

    @abstractmethod
    def validation_loss(self, params: Tensor, *, generator: torch.Generator) -> Tensor:
        """Loss ``[P]`` on a validation minibatch disjoint from the training data."""

    @abstractmethod
    def test_loss(self, params: Tensor) -> Tensor:
        """Full-data evaluation loss ``[P]`` (what evaluation reports and compares)."""


class TaskFamily(ABC):
    """A distribution over tasks with a fixed, named meta-train / held-out split."""

    name: str = ""

    @abstractmethod
    def sample(self, *, generator: torch.Generator, device: torch.device) -> Task:
        """One task drawn from the meta-training distribution."""

    @abstractmethod
    def held_out(self, device: torch.device) -> list[Task]:
        """The fixed held-out test tasks (never seen in meta-training)."""
