"""Tensor-level Net2Net operations: the random mapping, replicated and split weights, identities.

Chen, Goodfellow & Shlens (2016), Sec. 3. Net2WiderNet widens layer ``i`` from ``n`` to ``q``
units with the mapping ``g(j) = j`` for ``j < n`` and ``g(j) ~ Uniform{0..n-1}`` otherwise
(Eq. 6), replicates incoming weights ``U(i)[:, j] = W(i)[:, g(j)]`` (Eq. 7) and divides the
outgoing ones by the replication count ``U(i+1)[j, :] = W(i+1)[g(j), :] / |{x: g(x)=g(j)}|``
(Eq. 8). Net2DeeperNet inserts ``U(i) = I`` (Sec. 3.2). Every function here is vectorized over
units (``index_select`` / ``index_add``), never a Python loop over them.
"""

from __future__ import annotations

from typing import Literal, cast, get_args

import torch
from torch import Tensor, nn

from metalab.core.errors import ConfigError

__all__ = [
    "NoiseKind",
    "check_noise_kind",
    "identity_batchnorm",
    "identity_conv2d",
    "identity_linear",
    "perturb_identity",
    "replica_counts",
    "split_incoming",
    "wider_mapping",
]

NoiseKind = Literal["gaussian", "zero_sum"]


def check_noise_kind(kind: str) -> NoiseKind:
    """``kind`` as a :data:`NoiseKind`, or a one-line :class:`ConfigError` naming the choices."""
    if kind not in get_args(NoiseKind):
        kinds = " or ".join(repr(k) for k in get_args(NoiseKind))
        raise ConfigError(f"unknown noise kind: noise_kind must be {kinds}, got {kind!r}")
    return cast(NoiseKind, kind)


def wider_mapping(
    old: int, new: int, *, generator: torch.Generator, balanced: bool = False
) -> Tensor:
    """The mapping ``g`` of Eq. 6 from ``new`` units onto ``old`` ones (a CPU int64 tensor).

    Args:
        old: current number of units ``n``.
        new: widened number of units ``q >= n``.
        generator: random stream for the replicated units.
        balanced: replicate every unit equally often (``g(j) = j mod n``, ``q`` a multiple of
            ``n``); needed when a LayerNorm over the units sits between the two layers, since
            only an equal replication keeps the mean and variance over units unchanged.

    Raises:
        ConfigError: ``new < old``, ``old < 1``, or ``balanced`` with ``new`` not a multiple.
    """
    if old < 1 or new < old:
        raise ConfigError(f"cannot widen {old} units to {new}: the new width must be >= {old}")
    if balanced:
        if new % old:
            raise ConfigError(
                f"a LayerNorm over the widened units needs new width {new} to be a multiple of "
                f"{old} (equal replication keeps its mean and variance); try {new - new % old}"
                f" or {new + old - new % old}"
            )
        return torch.arange(new) % old
    extra = torch.randint(0, old, (new - old,), generator=generator, device=generator.device)
    return torch.cat([torch.arange(old), extra.cpu()])


def replica_counts(mapping: Tensor, old: int) -> Tensor:
    """``|{x : g(x) = g(j)}|`` for every new unit ``j`` (the divisor of Eq. 8)."""
    counts = torch.bincount(mapping, minlength=old)
    return counts[mapping]


def split_incoming(
    weight: Tensor,
    mapping: Tensor,
    *,
    noise: float = 0.0,
    noise_kind: NoiseKind = "gaussian",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Widen the input axis (dim 1) of a consumer's weight by Eq. 8; return it and the noise.

    ``weight`` has shape ``(out, n, *rest)`` (a Linear after reshaping, a Conv2d as is); the
    result has shape ``(out, q, *rest)``. Noise of standard deviation ``noise * std(weight)``
    is added to the outgoing weights of replicated units only (units kept alone are left
    untouched, as in the Keras example). With ``noise_kind="zero_sum"`` the noise is centred
    within each replica group, so the replicas' contributions still sum to the original one:
    the function is preserved exactly while the replicas' symmetry is broken.
    """
    old = weight.shape[1]
    counts = replica_counts(mapping, old).to(weight.device)
    index = mapping.to(weight.device)
    shape = (1, -1) + (1,) * (weight.dim() - 2)
    widened = weight.index_select(1, index) / counts.view(shape).to(weight.dtype)
    if noise == 0.0:
        return widened, torch.zeros_like(widened)
    if noise < 0:
        raise ConfigError(f"noise must be >= 0, got {noise}")
    if generator is None:
        raise ConfigError("noise > 0 needs a generator (explicit randomness)")
    # Drawn in float32 whatever the weights' dtype, so a float64 replay sees the same stream.
    draw = torch.randn(widened.shape, generator=generator, device=generator.device).to(weight.dtype)
    scale = noise * float(weight.std()) if weight.numel() > 1 else noise
    perturbation = draw.to(weight.device) * scale * (counts > 1).view(shape).to(weight.dtype)
    if noise_kind == "zero_sum":
        group_sum = torch.zeros_like(weight).index_add_(1, index, perturbation)
        perturbation = perturbation - (
            group_sum
            / torch.bincount(index, minlength=old).clamp(min=1).view(shape).to(weight.dtype)
        ).index_select(1, index)
    else:
        check_noise_kind(noise_kind)
    return widened + perturbation, perturbation


def identity_linear(features: int, *, like: nn.Linear) -> nn.Linear:
    """A ``features -> features`` Linear initialized to the identity (Net2DeeperNet, Sec. 3.2)."""
    layer = nn.Linear(
        features, features, bias=True, device=like.weight.device, dtype=like.weight.dtype
    )
    with torch.no_grad():
        layer.weight.copy_(
            torch.eye(features, device=layer.weight.device, dtype=layer.weight.dtype)
        )
        nn.init.zeros_(layer.bias)
    return layer


def identity_conv2d(channels: int, *, kernel_size: int, like: nn.Conv2d) -> nn.Conv2d:
    """A size-preserving identity convolution: centre tap ``k // 2`` is 1, padding ``k // 2``.

    (erogol/Net2Net put the tap at ``k // 2 + 1``, which shifts the image by one pixel.)

    Raises:
        ConfigError: an even ``kernel_size`` (no centre tap, the size cannot be preserved).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"the identity kernel needs an odd kernel_size, got {kernel_size}")
    layer = nn.Conv2d(
        channels,
        channels,
        kernel_size,
        padding=kernel_size // 2,
        bias=True,
        device=like.weight.device,
        dtype=like.weight.dtype,
    )
    centre = kernel_size // 2
    with torch.no_grad():
        layer.weight.zero_()
        eye = torch.eye(channels, device=layer.weight.device, dtype=layer.weight.dtype)
        layer.weight[:, :, centre, centre] = eye
        nn.init.zeros_(layer.bias)  # type: ignore[arg-type]
    return layer


def identity_batchnorm(
    channels: int, *, conv: bool, like: Tensor, inputs: Tensor | None = None, eps: float = 1e-5
) -> nn.BatchNorm1d | nn.BatchNorm2d:
    """A BatchNorm that computes the identity in eval mode (Net2DeeperNet with BN, Sec. 3.2).

    The running statistics are the mean and (biased) variance of ``inputs`` per channel when
    given (estimated on training data, so the layer is also close to the identity in train
    mode), else 0 and 1; the scale ``sqrt(var + eps)`` and shift ``mean`` undo the
    normalization exactly.
    """
    cls = nn.BatchNorm2d if conv else nn.BatchNorm1d
    layer = cls(channels, eps=eps, device=like.device, dtype=like.dtype)
    with torch.no_grad():
        if inputs is not None:
            dims = [d for d in range(inputs.dim()) if d != 1]
            mean = inputs.mean(dim=dims).to(like.dtype)
            var = inputs.var(dim=dims, unbiased=False).to(like.dtype)
        else:
            mean = torch.zeros(channels, device=like.device, dtype=like.dtype)
            var = torch.ones(channels, device=like.device, dtype=like.dtype)
        for buffer, value in (("running_mean", mean), ("running_var", var)):
            getattr(layer, buffer).copy_(value)
        layer.weight.copy_(torch.sqrt(var + eps))
        layer.bias.copy_(mean)
    return layer


def perturb_identity(
    layer: nn.Linear | nn.Conv2d,
    *,
    reference: Tensor,
    noise: float,
    generator: torch.Generator | None,
) -> float:
    """Add Gaussian noise of std ``noise * std(reference)`` to an identity layer's weight.

    Breaks the symmetry of a Net2DeeperNet identity (``reference`` is the weight of the layer
    it follows, which sets the scale); returns the Frobenius norm of the noise.

    Raises:
        ConfigError: negative noise, or noise without a generator.
    """
    if noise < 0:
        raise ConfigError(f"noise must be >= 0, got {noise}")
    if noise == 0:
        return 0.0
    if generator is None:
        raise ConfigError("noise > 0 needs a generator (explicit randomness)")
    weight: Tensor = layer.weight
    # Drawn in float32 whatever the weights' dtype, so a float64 replay sees the same stream.
    draw = torch.randn(weight.shape, generator=generator, device=generator.device).to(weight.dtype)
    perturbation = draw.to(weight.device) * noise * float(reference.detach().std())
    with torch.no_grad():
        weight.add_(perturbation)
    return float(perturbation.norm())
