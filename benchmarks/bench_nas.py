"""DARTS-PT and DARTS speed: perturbation evaluation in one vmap, and the supernet's step.

Table 1, DARTS-PT perturbation evaluation: all of an edge's perturbed supernets in one
vmap vs a loop.

One DARTS-PT decision evaluates the supernet on the whole validation split once per
candidate operation (its mixing weight set to 0). The batched path stacks the candidates'
mixing weights and runs them in one ``torch.func.vmap`` per validation batch
(``metalab.nas.perturbation_scores(..., batched=True)``); the baseline runs the supernet
once per candidate. Prints candidate evaluations per second and the speed-up, per space.

Table 2, a DARTS training step (forward and backward of a 64-image batch, w and α
gradients): the supernet's forward that shares work across each node's outgoing edges vs
the per-edge reference forward (``per_edge=True``). Prints steps per second and the ratio.
"""

from __future__ import annotations

import argparse

import torch

from _timing import timed
from metalab.core.device import resolve_device
from metalab.nas import Supernet, make_space, perturbation_scores


def _time(
    space_name: str,
    *,
    channels: int,
    n_cells: int,
    n_val: int,
    repeats: int,
    batched: bool,
    device: torch.device,
) -> tuple[float, int]:
    space = make_space(space_name)
    gen = torch.Generator().manual_seed(0)
    model = Supernet(space, channels=channels, n_cells=n_cells, num_classes=10, generator=gen).to(
        device
    )
    x = torch.rand(n_val, 1, 8, 8, generator=gen).to(device)
    y = torch.randint(0, 10, (n_val,), generator=gen).to(device)
    base = model.mixing_weights().detach()
    n_ops = len(space.ops)
    candidates = base.unsqueeze(0).repeat(n_ops, 1, 1)
    candidates[torch.arange(n_ops), 0, torch.arange(n_ops)] = 0.0
    perturbation_scores(model, candidates, (x[:64], y[:64]), batched=batched)  # warm-up

    def evaluate() -> None:
        perturbation_scores(model, candidates, (x, y), batch_size=64, batched=batched)

    return timed(evaluate, device, repeats=repeats, warmup=False) * repeats, repeats * n_ops


def _step_time(
    space_name: str, *, channels: int, n_cells: int, repeats: int, per_edge: bool, device
) -> float:
    gen = torch.Generator().manual_seed(0)
    space = make_space(space_name)
    model = Supernet(space, channels=channels, n_cells=n_cells, num_classes=10, generator=gen)
    model = model.to(device)
    x = torch.rand(64, 1, 8, 8, generator=gen).to(device)
    y = torch.randint(0, 10, (64,), generator=gen).to(device)

    def step() -> None:
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x, per_edge=per_edge), y).backward()

    return timed(step, device, repeats=repeats)


def _step_table(cases: list[tuple[str, int, int]], repeats: int, device: torch.device) -> None:
    header = ("space", "C", "cells", "shared step/s", "per-edge step/s", "ratio")
    print("{:>11} {:>3} {:>5} {:>14} {:>16} {:>6}".format(*header))
    for name, channels, n_cells in cases:
        common = dict(channels=channels, n_cells=n_cells, repeats=repeats, device=device)
        fast = _step_time(name, per_edge=False, **common)
        slow = _step_time(name, per_edge=True, **common)
        print(
            f"{name:>11} {channels:>3} {n_cells:>5} {1 / fast:>14.2f} {1 / slow:>16.2f}"
            f" {slow / fast:>6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="a few seconds on a CPU")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 5
    cases = [("skip-conv3", 8, 2), ("nb201", 8, 2), ("nb201", 16, 5), ("darts", 8, 2)]
    if args.quick:
        cases = cases[:2] + cases[3:]
    print(f"device {device}, threads {torch.get_num_threads()}, 400 validation images")
    header = ("space", "C", "cells", "vmap eval/s", "loop eval/s", "ratio")
    print("{:>11} {:>3} {:>5} {:>12} {:>12} {:>6}".format(*header))
    for name, channels, n_cells in cases:
        common = dict(channels=channels, n_cells=n_cells, n_val=400, repeats=repeats, device=device)
        fast, count = _time(name, batched=True, **common)
        slow, _ = _time(name, batched=False, **common)
        print(
            f"{name:>11} {channels:>3} {n_cells:>5} {count / fast:>12.2f} {count / slow:>12.2f}"
            f" {slow / fast:>6.2f}"
        )
    print("\nDARTS step, batch 64 (forward + backward)")
    step_cases = [("nb201-4op", 8, 5), ("nb201", 8, 5), ("darts", 8, 2)]
    _step_table(step_cases[:1] + step_cases[2:] if args.quick else step_cases, 10 * repeats, device)


if __name__ == "__main__":
    main()
