"""Throughput of batched averaged SGD on the two-layer NTK network vs a Python loop over lanes.

Lanes are (seed, horizon, width) runs; the batched path advances all of them with one set of
tensor ops per step (metalab.ntk.NetworkASGD), the baseline steps each lane's network in
turn. Prints lane-steps per second and the speed-up.
"""

from __future__ import annotations

import argparse

import torch

from _timing import timed
from metalab.core.device import resolve_device
from metalab.ntk import Lanes, NetworkASGD, augment_inputs, make_activation, sample_sphere


def _lanes(count: int, width: int) -> Lanes:
    return Lanes(
        horizon=torch.full((count,), 10**6),
        lam=torch.full((count,), 1e-3, dtype=torch.float64),
        eta=torch.full((count,), 0.2, dtype=torch.float64),
        coef=torch.zeros(count, 1, dtype=torch.float64),
        width=torch.full((count,), width),
    )


def _time(
    learner: NetworkASGD, lanes: Lanes, steps: int, *, batched: bool, device: torch.device
) -> float:
    gen = torch.Generator().manual_seed(0)
    state = learner.init(lanes, generator=gen)
    state = type(state)(*(t.to(device) for t in state))
    x = sample_sphere(
        (steps, lanes.horizon.numel()), learner.dim, generator=gen, dtype=torch.float64
    )
    inputs = augment_inputs(x, learner.gamma).to(device)
    y = torch.rand(steps, lanes.horizon.numel(), generator=gen, dtype=torch.float64).to(device)
    singles = [
        learner.select(state, torch.tensor([i], device=device))
        for i in range(lanes.horizon.numel())
    ]

    def run_all_steps() -> None:
        for t in range(steps):
            if batched:
                learner.step(state, inputs[t], y[t])
            else:
                for i, single in enumerate(singles):  # the baseline: one lane at a time
                    learner.step(single, inputs[t, i : i + 1], y[t, i : i + 1])

    return timed(run_all_steps, device, warmup=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="a few seconds on a CPU")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    steps = 100 if args.quick else 1000
    learner = NetworkASGD(make_activation("swish"), dim=2, quadrature=8)
    print(f"device {device}, {torch.get_num_threads()} thread(s), {steps} steps")
    for count, width in (
        ((8, 512), (24, 2048)) if args.quick else ((8, 512), (24, 2048), (96, 2048))
    ):
        lanes = _lanes(count, width)
        batched = _time(learner, lanes, steps, batched=True, device=device)
        looped = _time(learner, lanes, steps, batched=False, device=device)
        rate, base = count * steps / batched, count * steps / looped
        print(
            f"lanes={count:3d} width={width:5d}: batched {rate:10.0f} lane-steps/s, "
            f"loop {base:10.0f} lane-steps/s, speed-up {looped / batched:5.1f}x"
        )


if __name__ == "__main__":
    main()
