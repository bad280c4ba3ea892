"""Hand-designed starting points for the per-parameter MLP learned optimizer.

A randomly initialized MLP optimizer (Metz et al. 2019) takes steps unrelated to the
gradient and diverges on most tasks, so ES/PES first spends its budget learning to follow
the gradient at all. Metz et al. 2020 (Sec. 3) and learned_optimization's ``MLPLOpt``
instead start close to a sensible rule. :func:`mlp_theta_like_momentum` writes the weights
of the MLP ``19 → H → H → 2`` so that it computes, exactly,

    ``d = c · m̂_β``,  ``m = 0``,  step ``= d · exp(0) · 0.001 = lr · m̂_β``

where ``m̂_β`` is the β-momentum normalized by its RMS over the tensor (feature
``2 + BETAS.index(β)`` of :mod:`metalab.lopt.mlp_lopt`) and ``c = lr / 0.001``: per tensor,
a momentum step of RMS ``lr`` (a "normalized momentum" rule). Two hidden units carry
``relu(m̂)`` and ``relu(−m̂)`` through an identity second layer; all other weights are a
random MLP optimizer scaled by ``residual`` (so ES perturbations of every weight have an
effect), whose contribution to the step is small next to the momentum path.
:func:`make_init_theta` parses the ``--init`` option of ``metalab lopt meta-train``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.interfaces import OptimizerArch
from metalab.lopt.mlp_lopt import BETAS, MLPLOptShapes, init_mlp_lopt

__all__ = [
    "INIT_KINDS",
    "check_init",
    "initial_theta",
    "make_init_theta",
    "mlp_theta_like_momentum",
]

INIT_KINDS = ("random", "momentum")
_STEP_SCALE = 0.001  # the MLP optimizer's output scale (step = d · exp(0.001 m) · 0.001)
_DEFAULT_LR = 0.01


def mlp_theta_like_momentum(
    lr: float = _DEFAULT_LR,
    *,
    beta: float = 0.9,
    shapes: MLPLOptShapes | None = None,
    clip: float | None = None,
    residual: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MLP-optimizer weights ``[D]`` whose update is ``lr · clamp(m̂_β, −clip, clip)``.

    ``m̂_β = m_β / RMS_tensor(m_β)``; without ``clip`` the update is ``lr · m̂_β``. A small
    ``clip`` makes it a sign-of-momentum rule (every parameter moves by about
    ``lr · clip``, as in signSGD-momentum / Lion), which is per-parameter adaptive.

    Args:
        lr: RMS of each tensor's step (the ``c = lr / 0.001`` of the module docstring).
        clip: clamp ``m̂`` to ``[−clip, clip]`` (``None``: no clamp).
        beta: which momentum feature to follow (one of :data:`~metalab.lopt.mlp_lopt.BETAS`).
        shapes: layout of ``θ`` (hidden width ≥ 2).
        residual: scale of the random weights outside the momentum path (0: exactly zero);
            the output weights of the other units get ``residual`` times the usual scale.
        generator: randomness of those weights (required when ``residual > 0``).

    Raises:
        ConfigError: ``lr <= 0``, ``beta`` not a momentum feature, hidden width < 2,
            ``residual < 0``, or ``residual > 0`` without a generator.
    """
    shapes = shapes or MLPLOptShapes()
    if not lr > 0:
        raise ConfigError(f"the momentum init needs lr > 0, got {lr}")
    if beta not in BETAS:
        raise ConfigError(f"beta must be one of {BETAS}, got {beta}")
    units = 2 if clip is None else 4
    if shapes.hidden < units:
        raise ConfigError(f"this momentum init needs hidden >= {units}, got {shapes.hidden}")
    if clip is not None and not clip > 0:
        raise ConfigError(f"clip must be > 0, got {clip}")
    if residual < 0:
        raise ConfigError(f"residual must be >= 0, got {residual}")
    if residual > 0 and generator is None:
        raise ConfigError("a residual random part needs a generator")
    if residual > 0:
        assert generator is not None
        theta = init_mlp_lopt(shapes, generator=generator, scale=residual).unsqueeze(0)
        w = shapes.unflatten(theta)
        w["w1"].mul_(residual)
        w["w2"].mul_(residual)
    else:
        theta = torch.zeros(1, shapes.size)
        w = shapes.unflatten(theta)
    feature = 2 + BETAS.index(beta)  # [param, grad, m_0.1, m_0.5, m_0.9, ...]
    # h0 = relu(m̂), h1 = relu(−m̂) [, h2 = relu(m̂ − clip), h3 = relu(−m̂ − clip)]:
    # d = c·(h0 − h1 [− h2 + h3]) = c·m̂ [clamped to ±clip]
    paths = [(1.0, 0.0, 1.0), (-1.0, 0.0, -1.0)]
    if clip is not None:
        paths += [(1.0, -clip, -1.0), (-1.0, -clip, 1.0)]
    for unit, (sign, bias, out) in enumerate(paths):
        w["w1"][0, :, unit] = 0.0
        w["w1"][0, feature, unit] = sign
        w["b1"][0, unit] = bias
        w["w2"][0, :, unit] = 0.0
        w["w2"][0, unit, :] = 0.0
        w["w2"][0, unit, unit] = 1.0
        w["b2"][0, unit] = 0.0
        w["w3"][0, unit, 0] = out * lr / _STEP_SCALE
        w["w3"][0, unit, 1] = 0.0
    w["b3"].zero_()
    return theta[0]


def make_init_theta(
    spec: str, shapes: MLPLOptShapes | None = None, *, generator: torch.Generator
) -> Tensor | None:
    """``θ₀`` for ``--init``: ``None`` for ``random`` (the arch's own init), else momentum.

    ``spec`` is ``random``, ``momentum`` (lr 0.01, no clamp), ``momentum:LR`` or
    ``momentum:LR:CLIP`` (see :func:`mlp_theta_like_momentum`).

    Raises:
        ConfigError: an unknown kind or malformed numbers.
    """
    kind, *values = spec.split(":")
    if kind not in INIT_KINDS or (kind == "random" and values) or len(values) > 2:
        raise ConfigError(
            f"init must be 'random', 'momentum', 'momentum:LR' or 'momentum:LR:CLIP', got {spec!r}"
        )
    if kind == "random":
        return None
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise ConfigError(f"init {spec!r}: {values} are not numbers") from None
    lr = numbers[0] if numbers else _DEFAULT_LR
    clip = numbers[1] if len(numbers) > 1 else None
    return mlp_theta_like_momentum(lr, clip=clip, shapes=shapes, generator=generator)


def check_init(spec: str, arch: str) -> None:
    """Raise :class:`ConfigError` unless ``spec`` is a valid ``--init`` for arch name ``arch``."""
    if spec != "random" and arch != "mlp":
        raise ConfigError(f"init {spec!r} exists only for arch 'mlp'")
    make_init_theta(spec, generator=torch.Generator().manual_seed(0))


def initial_theta(spec: str, arch: OptimizerArch, *, generator: torch.Generator) -> Tensor:
    """``θ₀`` of ``arch`` for ``--init spec`` (``random``: ``arch.init_theta(generator)``)."""
    theta = make_init_theta(spec, getattr(arch, "shapes", None), generator=generator)
    return arch.init_theta(generator=generator) if theta is None else theta
