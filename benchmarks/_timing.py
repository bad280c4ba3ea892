"""Wall-clock timing shared by the benchmark scripts.

CUDA kernels run asynchronously, so every measurement synchronizes the device before the
clock starts and before it stops; on a CPU the synchronization is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

__all__ = ["synchronize", "timed"]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], object], device: torch.device, *, repeats: int = 1, warmup: bool = True
) -> float:
    """Mean wall time in seconds of one ``fn()`` call over ``repeats`` calls.

    With ``warmup`` one untimed call comes first (lazy initialization, allocator, caches).
    """
    if warmup:
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats
