"""Multi-process scale-out over ``torch.distributed``, launched by ``torchrun``.

A script calls :func:`init_distributed` once: under ``torchrun`` it joins the process
group (gloo on CPU, nccl on CUDA); run plainly it is a world of one and every helper
degrades to a no-op, so the same code runs on a laptop and on a cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from metalab.core.errors import ConfigError

__all__ = [
    "DistContext",
    "all_reduce_mean",
    "all_reduce_sum",
    "init_distributed",
    "is_rank0",
    "rank0_print",
    "shard_range",
    "shutdown_distributed",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank, backend and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def init_distributed(device: str | torch.device = "cpu") -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Args:
        device: ``"cpu"`` (gloo) or ``"cuda"`` (nccl; each rank takes GPU ``LOCAL_RANK``).
    """
    wanted = torch.device(device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistContext(device=wanted)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if wanted.type == "cuda":
        wanted = torch.device("cuda", local_rank)
        torch.cuda.set_device(wanted)
    backend = "nccl" if wanted.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(
        rank=rank, world_size=world, local_rank=local_rank, backend=backend, device=wanted
    )


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place, and return it (identity in a world of one)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over all ranks, in place, and return it."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def is_rank0() -> bool:
    """True on rank 0 and in a world of one: the process that logs and writes files."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def rank0_print(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only."""
    if is_rank0():
        print(*args, **kwargs)


def shard_range(total: int, rank: int, world_size: int) -> range:
    """The contiguous slice of ``range(total)`` that ``rank`` owns (sizes differ by ≤ 1)."""
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} outside world of size {world_size}")
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def shutdown_distributed() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
