"""Throughput of evaluating P parameter sets of one MLP: ``population_loss`` vs a Python loop.

Each member is a 64-32-10 MLP evaluated on the same digits-sized batch; one "evaluation" is
one member's forward pass and loss. Prints evaluations per second for both paths and the ratio.

    python benchmarks/bench_population.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from _timing import timed
from metalab.core.device import resolve_device
from metalab.core.population import module_params, population_loss, stack_params


def bench(population: int, device: torch.device, repeats: int) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).to(device)
    members = []
    for _ in range(population):
        members.append(
            {
                k: torch.randn(v.shape, generator=gen).to(device) * 0.1
                for k, v in module_params(model).items()
            }
        )
    stacked = stack_params(members)
    x = torch.randn(64, 64, generator=gen).to(device)
    y = torch.randint(0, 10, (64,), generator=gen).to(device)

    def vectorized() -> torch.Tensor:
        with torch.no_grad():
            return population_loss(model, stacked, F.cross_entropy, x, y)

    def looped() -> torch.Tensor:
        with torch.no_grad():
            return torch.stack(
                [F.cross_entropy(functional_call(model, m, (x,)), y) for m in members]
            )

    assert torch.allclose(vectorized(), looped(), atol=1e-5)
    return timed(vectorized, device, repeats=repeats), timed(looped, device, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    args = parser.parse_args()
    device = resolve_device(args.device)
    sizes = [8, 64] if args.quick else [8, 64, 256, 1024]
    repeats = 3 if args.quick else 10
    print(f"population_loss vs Python loop, 64-32-10 MLP, batch 64, device {device}")
    print(f"{'P':>6} {'vmap evals/s':>14} {'loop evals/s':>14} {'ratio':>7}")
    for population in sizes:
        vec, loop = bench(population, device, repeats)
        rates = f"{population / vec:>14,.0f} {population / loop:>14,.0f}"
        print(f"{population:>6} {rates} {loop / vec:>6.1f}x")


if __name__ == "__main__":
    main()
