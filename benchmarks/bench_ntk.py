"""Throughput of batched averaged SGD on the two-layer NTK network vs a Python loop over lanes.

Lanes are (seed, horizon, width) runs; the batched path advances all of them with one set of
tensor ops per step (metalab.ntk.NetworkASGD), the baseline steps each lane's network in
turn. Prints lane-steps per second and the speed-up. The kernel learner is timed too: the
exact block recursion (metalab.ntk.blocked, a seed's lanes sharing its stream) against the
step-by-step KernelASGD of run_asgd (one stream per lane), both on S² (degree-16 features).
"""

from __future__ import annotations

import argparse

import torch

from _timing import timed
from metalab.core.device import resolve_device
from metalab.ntk import Lanes, NetworkASGD, augment_inputs, make_activation, sample_sphere
from metalab.ntk.asgd import DataStream, KernelASGD, run_asgd
from metalab.ntk.blocked import run_kernel_blocked
from metalab.ntk.spectrum import ntk_spectrum


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


def _kernel(seeds: int, lanes: int, steps: int) -> tuple[float, float]:
    """Lane-steps per second of (step-by-step, blocked) kernel ASGD, ``seeds × lanes`` runs."""
    mu = ntk_spectrum(make_activation("swish"), dim=3, max_degree=24).mu
    count = seeds * lanes
    coef = torch.zeros(count, 289, dtype=torch.float64)
    coef[:, 1:4] = 0.2
    setup = Lanes(
        torch.full((count,), steps),
        torch.full((count,), 1e-3, dtype=torch.float64),
        torch.full((count,), 0.2, dtype=torch.float64),
        coef,
        torch.full((count,), 2),
    )
    gen = torch.Generator().manual_seed(0)
    learner = {"kernel": KernelASGD(mu, dim=3, feature_degree=16)}
    looped = timed(
        lambda: run_asgd(learner, setup, DataStream(3, 16, 0.5), generator=gen),
        torch.device("cpu"),
        warmup=False,
    )
    blocked = timed(
        lambda: run_kernel_blocked(
            mu,
            coef[:lanes],
            lam=setup.lam[:lanes],
            eta=setup.eta[:lanes],
            horizon=setup.horizon[:lanes],
            seeds=seeds,
            dim=3,
            feature_degree=16,
            noise_half_width=0.5,
            generator=gen,
        ),
        torch.device("cpu"),
        warmup=False,
    )
    return count * steps / looped, count * steps / blocked


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
    for seeds, lanes in ((12, 2), (12, 14)):
        step_rate, block_rate = _kernel(seeds, lanes, 500 if args.quick else 3000)
        print(
            f"kernel S² seeds={seeds:2d} lanes/seed={lanes:2d}: blocked {block_rate:10.0f} "
            f"lane-steps/s, step-by-step {step_rate:10.0f} lane-steps/s, "
            f"speed-up {block_rate / step_rate:5.1f}x"
        )


if __name__ == "__main__":
    main()
