"""Throughput of the batched task zoo: inner steps/s, batched vs a Python loop over particles.

For each task, one "inner step" is a forward+backward of one particle's minibatch. Prints
the batched path's throughput, the per-particle loop's, and their ratio; for MLPs also the
hand-written backward against the generic ``vmap(grad_and_value)`` path.

    .venv/bin/python benchmarks/bench_lopt_tasks.py --quick --device cpu
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from metalab.core.device import resolve_device
from metalab.lopt.interfaces import Task
from metalab.lopt.task_zoo import ConvTask, MLPTask, ModuleTask, QuadraticTask

__all__ = ["main"]


def _rate(fn: Callable[[int], object], steps: int, particles: int, device: torch.device) -> float:
    fn(0)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for t in range(steps):
        fn(t)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * particles / (time.perf_counter() - start)


def _bench(task: Task, particles: int, steps: int, device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    params = task.init_params(particles, generator=gen)
    batches = task.sample_batches(particles, steps, generator=gen)

    def batched(t: int) -> object:
        return task.loss_and_grad(params, {k: v[t] for k, v in batches.items()})

    def looped(t: int) -> object:
        return [
            task.loss_and_grad(params[p : p + 1], {k: v[t, p : p + 1] for k, v in batches.items()})
            for p in range(particles)
        ]

    fast = _rate(batched, steps, particles, device)
    slow = _rate(looped, steps, particles, device)
    line = f"{task.name:36s} P={particles:3d}  batched {fast:9.0f} steps/s  loop {slow:9.0f}"
    line += f"  ratio {fast / slow:5.1f}x"
    if isinstance(task, MLPTask):

        def generic(t: int) -> object:
            return ModuleTask.loss_and_grad(task, params, {k: v[t] for k, v in batches.items()})

        line += f"  (hand-written vs vmap: {fast / _rate(generic, steps, particles, device):.1f}x)"
    print(line)


def main() -> None:
    """Parse arguments and print one line per task."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--particles", type=int, default=16)
    args = parser.parse_args()
    device = resolve_device(args.device)
    steps = 10 if args.quick else 100
    tasks: list[Task] = [
        MLPTask("digits", width=32, depth=1, device=device),
        MLPTask("mnist", width=48, depth=1, batch_size=128, device=device),
        ConvTask(channels=8, device=device),
        QuadraticTask(dim=64, device=device),
    ]
    for task in tasks:
        _bench(task, args.particles, steps, device)


if __name__ == "__main__":
    main()
