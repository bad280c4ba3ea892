"""PES throughput: a per-parameter MLP learned optimizer training a 64→32→10 MLP on digits.

One inner step = one particle's forward+backward of its minibatch (batch 64) plus one
learned-optimizer update. Prints inner steps per second of PES (K = 10) at several numbers
of antithetic pairs, vectorized over particles (median over timed windows, with the range) vs a
Python loop over particles, and the ratio.
Target (issue #3): >= 3600 inner steps/s at 32 pairs on a 2-core CPU.

    python benchmarks/pes_throughput.py [--quick] [--device auto] [--threads N] [--before]

``--before`` also times the same PES run with the learned-optimizer update as it was before
the feature-major rewrite (row-major ``[P, N, H]`` activations, split+cat normalization),
interleaving the two window by window so both see the same machine load.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor

from _timing import synchronize
from metalab.core.device import describe_device, resolve_device
from metalab.lopt import PES, Layout, unroll
from metalab.lopt.mlp_lopt import BETAS, NUM_PARAM_FEATURES, MLPLOptShapes, time_features
from metalab.lopt.systems import State
from metalab.lopt.tasks import LearnedOptimizerSystem


def row_major_lopt_step(
    theta: Tensor, params: Tensor, grads: Tensor, moments: Tensor, t: Tensor, sizes: list[int]
) -> tuple[Tensor, Tensor]:
    """The update before the rewrite (same numbers up to float rounding), kept as a baseline."""
    betas = torch.tensor(BETAS, dtype=params.dtype, device=params.device)
    moments = betas * moments + (1.0 - betas) * grads.unsqueeze(-1)
    features = torch.cat([params.unsqueeze(-1), grads.unsqueeze(-1), moments], dim=-1)
    pieces = torch.split(features, sizes, dim=1)
    features = torch.cat(
        [p * torch.rsqrt(p.pow(2).mean(dim=1, keepdim=True) + 1e-12) for p in pieces], dim=1
    )
    w = MLPLOptShapes().unflatten(theta)
    time_bias = torch.baddbmm(
        w["b1"].unsqueeze(1), time_features(t).unsqueeze(1), w["w1"][:, NUM_PARAM_FEATURES:]
    )
    hidden = torch.bmm(features, w["w1"][:, :NUM_PARAM_FEATURES]).add_(time_bias).relu_()
    hidden = torch.bmm(hidden, w["w2"]).add_(w["b2"].unsqueeze(1)).relu_()
    out = torch.baddbmm(w["b3"].unsqueeze(1), hidden, w["w3"])
    step = out[..., 0] * torch.exp(0.001 * out[..., 1]) * 0.001
    return params - step, moments


class RowMajorSystem(LearnedOptimizerSystem):
    """The same system stepping with :func:`row_major_lopt_step` (the "before" column)."""

    def step(
        self, state: State, theta: Tensor, t: Tensor, data: State | None
    ) -> tuple[State, Tensor]:
        """Task gradient, then the baseline update."""
        assert data is not None
        x, y = self.task.x[data["index"]], self.task.y[data["index"]]
        loss, grads = self.task.loss_and_grad(state["params"], x, y)
        sizes = self.task.segments.sizes.tolist()
        params, moments = row_major_lopt_step(
            theta, state["params"], grads, state["moments"], t, sizes
        )
        return {"params": params, "moments": moments}, loss


def before_after(
    systems: tuple[LearnedOptimizerSystem, LearnedOptimizerSystem], pairs: int, k: int, windows: int
) -> tuple[float, float]:
    """Inner steps/s of PES with the baseline and the current update, windows interleaved."""
    theta = systems[0].initial_theta()
    estimator = PES(pairs=pairs, sigma=0.01, truncation=k, nan_loss=1e3, loss_clip=1e3)
    states, spent = [], [0.0, 0.0]
    for system in systems:
        gen = torch.Generator().manual_seed(0)
        state = estimator.init(system, theta, generator=gen)
        _, state = estimator.step(system, theta, state, generator=gen)  # warm-up
        states.append((state, gen))
    for _ in range(windows):
        for i, system in enumerate(systems):
            state, gen = states[i]
            synchronize(system.device)
            start = time.perf_counter()
            _, state = estimator.step(system, theta, state, generator=gen)
            synchronize(system.device)
            spent[i] += time.perf_counter() - start
            states[i] = (state, gen)
    steps = 2 * pairs * k * windows
    return steps / spent[0], steps / spent[1]


def vectorized(system: LearnedOptimizerSystem, pairs: int, k: int, windows: int) -> list[float]:
    """Inner steps/s of each timed PES.step window, all 2·pairs particles in one batched unroll.

    Per-window rates, so the table can show the median and the spread: on a shared 2-core
    machine a single total over all windows swings by 2× from one run to the next.
    """
    theta = system.initial_theta()
    estimator = PES(pairs=pairs, sigma=0.01, truncation=k, nan_loss=1e3, loss_clip=1e3)
    gen = torch.Generator().manual_seed(0)
    state = estimator.init(system, theta, generator=gen)
    _, state = estimator.step(system, theta, state, generator=gen)  # warm-up
    rates = []
    for _ in range(windows):
        synchronize(system.device)
        start = time.perf_counter()
        _, state = estimator.step(system, theta, state, generator=gen)
        synchronize(system.device)
        rates.append(2 * pairs * k / (time.perf_counter() - start))
    return rates


def looped(system: LearnedOptimizerSystem, pairs: int, k: int, windows: int) -> float:
    """Inner steps/s when each particle is unrolled by itself (the per-particle loop)."""
    theta = system.initial_theta().unsqueeze(0)
    gen = torch.Generator().manual_seed(0)
    one = Layout(1, range(1))
    states = [one.fresh_states(system, gen) for _ in range(2 * pairs)]
    t = torch.zeros(1, dtype=torch.long, device=system.device)
    unroll(system, states[0], t, theta, k, layout=one, generator=gen)  # warm-up
    synchronize(system.device)
    start = time.perf_counter()
    for _ in range(windows):
        for i in range(2 * pairs):
            states[i] = unroll(system, states[i], t, theta, k, layout=one, generator=gen).state
    synchronize(system.device)
    return 2 * pairs * k * windows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda[:N]")
    parser.add_argument("--quick", action="store_true", help="fewer windows and pair counts")
    parser.add_argument("--pairs", type=int, nargs="*", default=None, help="pair counts")
    parser.add_argument("--truncation", type=int, default=10, help="window length K")
    parser.add_argument("--windows", type=int, default=None, help="timed windows per setting")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-loop", action="store_true", help="skip the per-particle loop")
    parser.add_argument(
        "--before", action="store_true", help="also time the pre-rewrite update (interleaved)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs_list = args.pairs or ([8, 32] if args.quick else [8, 32, 128])
    windows = args.windows or (4 if args.quick else 10)
    system = LearnedOptimizerSystem(horizon=1000, device=device)
    print(
        f"device: {describe_device(device)}; threads: {torch.get_num_threads()}; "
        f"K = {args.truncation}; {windows} timed windows; task 64→32→10 MLP, batch 64"
    )
    if args.before:
        baseline = RowMajorSystem(horizon=1000, device=device)
        print(f"{'pairs':>6} {'before steps/s':>15} {'after steps/s':>14} {'speed-up':>9}")
        for pairs in pairs_list:
            old, new = before_after((baseline, system), pairs, args.truncation, windows)
            print(f"{pairs:>6} {old:>15.0f} {new:>14.0f} {new / old:>8.2f}x")
    print(
        f"{'pairs':>6} {'vectorized steps/s (median; window range)':>43} "
        f"{'loop steps/s':>13} {'ratio':>7}"
    )
    for pairs in pairs_list:
        rates = vectorized(system, pairs, args.truncation, windows)
        fast = statistics.median(rates)
        spread = f"{fast:.0f} ({min(rates):.0f}-{max(rates):.0f})"
        if args.no_loop:
            print(f"{pairs:>6} {spread:>43} {'-':>13} {'-':>7}")
            continue
        slow = looped(system, pairs, args.truncation, max(1, windows // 2))
        print(f"{pairs:>6} {spread:>43} {slow:>13.0f} {fast / slow:>6.1f}x")


if __name__ == "__main__":
    main()
