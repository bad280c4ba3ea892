"""PES throughput: a per-parameter MLP learned optimizer training a 64→32→10 MLP on digits.

One inner step = one particle's forward+backward of its minibatch (batch 64) plus one
learned-optimizer update. Prints inner steps per second of PES (K = 10) at several numbers
of antithetic pairs, vectorized over particles vs a Python loop over particles, and the ratio.
Target (issue #3): >= 3600 inner steps/s at 32 pairs on a 2-core CPU.

    python benchmarks/pes_throughput.py [--quick] [--device auto] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from _timing import synchronize
from metalab.core.device import describe_device, resolve_device
from metalab.lopt import PES, Layout, unroll
from metalab.lopt.tasks import LearnedOptimizerSystem


def vectorized(system: LearnedOptimizerSystem, pairs: int, k: int, windows: int) -> float:
    """Inner steps/s of PES.step with all 2·pairs particles in one batched unroll."""
    theta = system.initial_theta()
    estimator = PES(pairs=pairs, sigma=0.01, truncation=k, nan_loss=1e3, loss_clip=1e3)
    gen = torch.Generator().manual_seed(0)
    state = estimator.init(system, theta, generator=gen)
    _, state = estimator.step(system, theta, state, generator=gen)  # warm-up
    synchronize(system.device)
    start = time.perf_counter()
    for _ in range(windows):
        _, state = estimator.step(system, theta, state, generator=gen)
    synchronize(system.device)
    return 2 * pairs * k * windows / (time.perf_counter() - start)


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
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs_list = args.pairs or ([8, 32] if args.quick else [8, 32, 128])
    windows = args.windows or (2 if args.quick else 5)
    system = LearnedOptimizerSystem(horizon=1000, device=device)
    print(
        f"device: {describe_device(device)}; threads: {torch.get_num_threads()}; "
        f"K = {args.truncation}; {windows} timed windows; task 64→32→10 MLP, batch 64"
    )
    print(f"{'pairs':>6} {'vectorized steps/s':>19} {'loop steps/s':>13} {'ratio':>7}")
    for pairs in pairs_list:
        fast = vectorized(system, pairs, args.truncation, windows)
        if args.no_loop:
            print(f"{pairs:>6} {fast:>19.0f} {'-':>13} {'-':>7}")
            continue
        slow = looped(system, pairs, args.truncation, max(1, windows // 2))
        print(f"{pairs:>6} {fast:>19.0f} {slow:>13.0f} {fast / slow:>6.1f}x")


if __name__ == "__main__":
    main()
