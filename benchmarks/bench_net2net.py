"""Throughput of Net2WiderNet: vectorized (index_select / index_add) vs a per-unit Python loop.

The loop is the reference implementations' way (soumith/net2net.torch, the Keras example):
one iteration per new unit copying its incoming row and splitting its outgoing column.
Both paths are checked to give the same tensors before timing. Also times the model-level
``widen`` / ``deepen`` (fx trace + deep copy + rewrite) on an MLP and a CNN.

    python benchmarks/bench_net2net.py --quick --device cpu [--threads 1]

On a CPU shared with other jobs, torch's multi-threaded kernels can stall on their
barriers; ``--threads 1`` shows the single-core numbers.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor

from _timing import timed
from metalab.core.device import describe_device, resolve_device
from metalab.net2net import (
    deepen,
    mlp,
    replica_counts,
    small_cnn,
    split_incoming,
    widen,
    wider_mapping,
)


def widen_loop(
    w_in: Tensor, b_in: Tensor, w_out: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Eqs. 7-8 one new unit at a time."""
    mapping = g.tolist()
    counts = [0] * w_in.shape[0]
    for j in mapping:
        counts[j] += 1
    new_in = w_in.new_empty((len(mapping), *w_in.shape[1:]))
    new_b = b_in.new_empty(len(mapping))
    new_out = w_out.new_empty((w_out.shape[0], len(mapping), *w_out.shape[2:]))
    for j, source in enumerate(mapping):
        new_in[j] = w_in[source]
        new_b[j] = b_in[source]
        new_out[:, j] = w_out[:, source] / counts[source]
    return new_in, new_b, new_out


def widen_vectorized(
    w_in: Tensor, b_in: Tensor, w_out: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Eqs. 7-8 as the library does them: one index_select per tensor."""
    index = g.to(w_in.device)
    widened, _ = split_incoming(w_out, g)
    return w_in.index_select(0, index), b_in.index_select(0, index), widened


def bench_pair(
    name: str,
    shapes: tuple[tuple[int, ...], tuple[int, ...]],
    new: int,
    device: torch.device,
    repeats: int,
) -> None:
    gen = torch.Generator().manual_seed(0)
    w_in = torch.randn(shapes[0], generator=gen).to(device)
    w_out = torch.randn(shapes[1], generator=gen).to(device)
    b_in = torch.randn(shapes[0][0], generator=gen).to(device)
    g = wider_mapping(shapes[0][0], new, generator=gen)
    assert replica_counts(g, shapes[0][0]).min() >= 1
    for a, b in zip(
        widen_loop(w_in, b_in, w_out, g), widen_vectorized(w_in, b_in, w_out, g), strict=True
    ):
        torch.testing.assert_close(a, b)
    loop = timed(lambda: widen_loop(w_in, b_in, w_out, g), device, repeats=max(3, repeats // 5))
    vec = timed(lambda: widen_vectorized(w_in, b_in, w_out, g), device, repeats=repeats)
    print(
        f"{name:<34} loop {loop * 1e3:9.2f} ms  vectorized {vec * 1e3:8.3f} ms  "
        f"({new / vec:,.0f} units/s)  speed-up x{loop / vec:,.1f}"
    )


def bench_models(device: torch.device, repeats: int) -> None:
    gen = torch.Generator().manual_seed(0)
    net = mlp(784, [512, 512], 10).to(device).eval()
    cnn = small_cnn(3, [64, 128], 10, image_size=32, hidden=256).to(device).eval()
    cases = {
        "widen(mlp, fc1 512->1024)": lambda: widen(net, "fc1", 1024, noise=0.01, generator=gen),
        "deepen(mlp, after fc1)": lambda: deepen(net, "fc1"),
        "widen(cnn, conv2 128->256 +flatten)": lambda: widen(cnn, "conv2", 256, generator=gen),
        "deepen(cnn, after conv1, +BN)": lambda: deepen(cnn, "conv1"),
    }
    for name, fn in cases.items():
        print(
            f"{name:<38} {timed(fn, device, repeats=repeats) * 1e3:8.2f} ms per call "
            "(trace + copy + rewrite)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="smaller layers, fewer repeats")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op CPU threads (0: torch's default)"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}")
    repeats = 5 if args.quick else 20
    scale = 1 if args.quick else 4
    n = 256 * scale
    bench_pair(f"Linear {n}->{2 * n} (+next {n}x{n})", ((n, n), (n, n)), 2 * n, device, repeats)
    c = 64 * scale
    bench_pair(
        f"Conv2d {c}->{2 * c} ch (3x3, +next)", ((c, c, 3, 3), (c, c, 3, 3)), 2 * c, device, repeats
    )
    bench_models(device, repeats)


if __name__ == "__main__":
    main()
