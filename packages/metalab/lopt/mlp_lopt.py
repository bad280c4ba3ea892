"""The per-parameter MLP learned optimizer (Metz et al. 2019; learned_optimization ``MLPLOpt``).

For every scalar parameter the optimizer reads 19 features — the parameter, its gradient
and 6 momenta (β ∈ {.1, .5, .9, .99, .999, .9999}), each normalized by its RMS over the
parameter's tensor, plus 11 time features ``tanh(t/τ − 1)`` — and an MLP 19→32→32→2
outputs ``(d, m)``; the update is ``p ← p − d · exp(0.001·m) · 0.001``.

Everything is batched over particles ``P``: ``θ`` is ``[P, D]`` (one learned optimizer per
particle, ``D = 1762``), parameters are flat ``[P, N]`` vectors whose tensors are the
segments of :class:`Segments`. The time features are the same for all parameters of a
particle, so their first-layer contribution is a per-particle bias (exact, and 19→8 fewer
multiply-adds per parameter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "BETAS",
    "HIDDEN",
    "NUM_FEATURES",
    "TIMESCALES",
    "MLPLOptShapes",
    "Segments",
    "init_mlp_lopt",
    "mlp_lopt_step",
]

BETAS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
HIDDEN = 32
NUM_PARAM_FEATURES = 2 + len(BETAS)
NUM_FEATURES = NUM_PARAM_FEATURES + len(TIMESCALES)


@dataclass(frozen=True)
class Segments:
    """Which entries of a flat parameter vector belong to which tensor.

    Attributes:
        index: ``[N]`` tensor id of each entry.
        sizes: ``[S]`` number of entries per tensor.
    """

    index: Tensor
    sizes: Tensor

    @classmethod
    def from_shapes(cls, shapes: list[tuple[int, ...]], device: torch.device) -> Segments:
        """Segments of the flat concatenation of tensors with these shapes."""
        sizes = torch.tensor([math.prod(s) for s in shapes], device=device)
        index = torch.repeat_interleave(torch.arange(len(shapes), device=device), sizes)
        return cls(index, sizes)

    def rms(self, features: Tensor, dim: int = -1) -> Tensor:
        """Per-tensor RMS of ``features`` along ``dim`` (length N): that dim becomes ``S``."""
        pieces = torch.split(features, self.sizes.tolist(), dim=dim)
        means = [piece.pow(2).mean(dim=dim, keepdim=True) for piece in pieces]
        return torch.cat(means, dim=dim).add(1e-12).sqrt()

    def normalize(self, features: Tensor, dim: int = -1) -> Tensor:
        """``features`` divided by their per-tensor RMS along ``dim`` (loops over tensors only)."""
        pieces = torch.split(features, self.sizes.tolist(), dim=dim)
        scaled = [p * torch.rsqrt(p.pow(2).mean(dim=dim, keepdim=True) + 1e-12) for p in pieces]
        return torch.cat(scaled, dim=dim)


@dataclass(frozen=True)
class MLPLOptShapes:
    """Layout of the flat meta-parameter vector ``θ`` of the MLP learned optimizer."""

    hidden: int = HIDDEN

    @property
    def parts(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of each weight, in their order within ``θ``."""
        h = self.hidden
        return [
            ("w1", (NUM_FEATURES, h)),
            ("b1", (h,)),
            ("w2", (h, h)),
            ("b2", (h,)),
            ("w3", (h, 2)),
            ("b3", (2,)),
        ]

    @property
    def size(self) -> int:
        """``D``, the number of meta-parameters (1762 for hidden = 32)."""
        return sum(math.prod(shape) for _, shape in self.parts)

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """Views ``{name: [P, *shape]}`` of a ``[P, D]`` batch of optimizers."""
        out, start = {}, 0
        for name, shape in self.parts:
            n = math.prod(shape)
            out[name] = theta[:, start : start + n].reshape(theta.shape[0], *shape)
            start += n
        return out


def init_mlp_lopt(
    shapes: MLPLOptShapes | None = None, *, generator: torch.Generator, scale: float = 1.0
) -> Tensor:
    """A random learned optimizer ``[D]``: LeCun-normal hidden layers, zero biases.

    The output layer is scaled by ``scale`` (small values start near "no update").
    """
    shapes = shapes or MLPLOptShapes()
    pieces = []
    for name, shape in shapes.parts:
        if name.startswith("b"):
            pieces.append(torch.zeros(math.prod(shape)))
            continue
        std = 1.0 / math.sqrt(shape[0]) * (scale if name == "w3" else 1.0)
        pieces.append(torch.randn(math.prod(shape), generator=generator) * std)
    return torch.cat(pieces)


def time_features(t: Tensor) -> Tensor:
    """``tanh(t/τ − 1)`` for the 11 timescales: ``[P] -> [P, 11]``."""
    scales = torch.tensor(TIMESCALES, dtype=torch.float32, device=t.device)
    return torch.tanh(t.to(torch.float32).unsqueeze(-1) / scales - 1.0)


def mlp_lopt_step(
    theta: Tensor,
    params: Tensor,
    grads: Tensor,
    moments: Tensor,
    t: Tensor,
    segments: Segments,
    shapes: MLPLOptShapes | None = None,
) -> tuple[Tensor, Tensor]:
    """One learned-optimizer update for every particle.

    Args:
        theta: ``[P, D]`` optimizer weights per particle.
        params: ``[P, N]`` flat inner parameters.
        grads: ``[P, N]`` their gradients.
        moments: ``[P, N, 6]`` momentum accumulators.
        t: ``[P]`` inner step index (for the time features).
        segments: the tensors of the flat parameter vector (for RMS normalization).
        shapes: layout of ``θ``.

    Returns:
        ``(new_params, new_moments)``.
    """
    shapes = shapes or MLPLOptShapes()
    betas = torch.tensor(BETAS, dtype=params.dtype, device=params.device)
    moments = betas * moments + (1.0 - betas) * grads.unsqueeze(-1)
    features = torch.cat([params.unsqueeze(-1), grads.unsqueeze(-1), moments], dim=-1)
    features = segments.normalize(features, dim=1)  # [P, N, 8]
    w = shapes.unflatten(theta)
    w1 = w["w1"]  # [P, 19, H]
    time_bias = torch.baddbmm(
        w["b1"].unsqueeze(1), time_features(t).unsqueeze(1), w1[:, NUM_PARAM_FEATURES:]
    )  # [P, 1, H]: the time features' share of layer 1
    # [P, N, H] activations (tall row-major bmm is the fast layout on CPU) with in-place
    # bias and ReLU: fresh allocations of these big tensors cost more than the arithmetic.
    hidden = torch.bmm(features, w1[:, :NUM_PARAM_FEATURES]).add_(time_bias).relu_()
    hidden = torch.bmm(hidden, w["w2"]).add_(w["b2"].unsqueeze(1)).relu_()
    out = torch.baddbmm(w["b3"].unsqueeze(1), hidden, w["w3"])  # [P, N, 2]
    step = out[..., 0] * torch.exp(0.001 * out[..., 1]) * 0.001
    return params - step, moments
