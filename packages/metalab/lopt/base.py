"""The estimator protocol: small ``init``/``step`` functions over explicit ``NamedTuple`` state.

Following optax, an estimator object holds only its options; everything that changes
from one outer step to the next (persistent particle states, step counters, PES's
accumulated perturbations) lives in a ``NamedTuple`` of tensors that the caller threads
through ``step`` and can checkpoint with ``torch.save(state._asdict())``.

Particles are split over ``torch.distributed`` ranks when a process group is active:
every rank draws the whole population's noise and data from the same seeded generators
and keeps its own slice (:func:`metalab.core.distributed.shard_range`), and the partial
gradient sums are added with :func:`metalab.core.distributed.all_reduce_sum`, so two
processes produce the estimate one process would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from metalab.core.distributed import all_reduce_sum, shard_range
from metalab.core.errors import ConfigError
from metalab.lopt.systems import Layout, UnrolledSystem, clean_losses

__all__ = ["Estimate", "GradientEstimator", "horizon_of", "world"]


class Estimate(NamedTuple):
    """One gradient estimate.

    Attributes:
        grad: ``[d]`` estimate of ``∇_θ`` of the (smoothed) meta-objective.
        loss: mean over all particles of the loss summed over the unrolled steps.
        steps: inner steps this process took (particles x unrolled steps).
    """

    grad: Tensor
    loss: Tensor
    steps: int


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the active process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GradientEstimator(ABC):
    """Base class: common options and the finishing step (all-reduce, clip).

    Args:
        truncation: window length ``K`` (steps unrolled per estimate).
        loss_clip: clip each step's loss from above at this value (``None``: no clipping).
        nan_loss: replace NaN/inf step losses by this large finite value (``None``: keep).
        grad_clip: rescale the estimate to at most this L2 norm (``None``: no clipping).
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        truncation: int = 10,
        loss_clip: float | None = None,
        nan_loss: float | None = None,
        grad_clip: float | None = None,
    ) -> None:
        if truncation < 1:
            raise ConfigError(f"truncation K must be >= 1, got {truncation}")
        if grad_clip is not None and grad_clip <= 0:
            raise ConfigError(f"grad_clip must be > 0, got {grad_clip}")
        self.truncation = truncation
        self.loss_clip, self.nan_loss, self.grad_clip = loss_clip, nan_loss, grad_clip

    @abstractmethod
    def init(self, system: UnrolledSystem, theta: Tensor, *, generator: torch.Generator) -> Any:
        """The estimator's initial state (a ``NamedTuple`` of tensors)."""

    @abstractmethod
    def step(
        self,
        system: UnrolledSystem,
        theta: Tensor,
        state: Any,
        *,
        generator: torch.Generator,
        data_generator: torch.Generator | None = None,
    ) -> tuple[Estimate, Any]:
        """One estimate of ``∇_θ`` at ``theta`` (``[d]``) and the next state.

        Args:
            system: the unrolled system.
            theta: current meta-parameters ``[d]`` (not modified).
            state: the estimator state from :meth:`init` or the previous ``step``.
            generator: stream for the perturbations ε.
            data_generator: stream for the system's data and fresh episode states
                (defaults to ``generator``).
        """

    # ------------------------------------------------------------------ helpers
    def _layout(self, total: int, copies: int) -> Layout:
        rank, size = world()
        if total < size:
            raise ConfigError(f"{self.name}: {total} particles cannot be split over {size} ranks")
        return Layout(total, shard_range(total, rank, size), copies)

    def _clean(self, losses: Tensor) -> Tensor:
        return clean_losses(losses, nan_loss=self.nan_loss, loss_clip=self.loss_clip)

    def _finish(self, grad_sum: Tensor, loss_sum: Tensor, count: int, steps: int) -> Estimate:
        """All-reduce the partial sums over ranks, normalize the loss, clip the gradient."""
        packed = torch.cat([grad_sum.detach().reshape(-1), loss_sum.detach().reshape(1)])
        all_reduce_sum(packed)
        grad, loss = packed[:-1].reshape(grad_sum.shape), packed[-1] / count
        if self.grad_clip is not None:
            norm = torch.linalg.vector_norm(grad)
            grad = grad * torch.clamp(self.grad_clip / (norm + 1e-12), max=1.0)
        return Estimate(grad, loss, steps)


def horizon_of(system: UnrolledSystem, who: str) -> int:
    """The finite episode length, or a :class:`ConfigError` naming the estimator."""
    if system.horizon is None:
        raise ConfigError(f"{who} unrolls whole episodes but the system never ends (horizon=None)")
    return system.horizon
