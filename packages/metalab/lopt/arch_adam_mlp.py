"""Adam with a learned learning-rate schedule plus a learned per-parameter MLP correction.

A per-parameter MLP optimizer has to *learn* per-coordinate step normalization before it
can compete with Adam, and CPU-scale ES does not get it there (the MLP default loses to
tuned Adam on 9 of 10 held-out tasks). Metz et al. 2020 and VeLO instead feed Adam-like
normalized quantities to the learned part. This architecture keeps Adam's direction as a
fixed backbone and learns what is cheap to learn with ES:

    step = exp(s₀ + Σᵢ sᵢ · tanh(t/τᵢ − 1)) · m̂/(√v̂ + ε)  +  MLP step (Metz et al. 2019)

``s`` (12 weights) is a log learning-rate schedule over the MLP optimizer's 11 time
features; the MLP (:mod:`metalab.lopt.mlp_lopt`, 1 762 weights) adds a per-parameter
correction. With ``s = [log lr, 0, …]`` and a zero MLP output layer the update is exactly
Adam at ``lr`` (tested against ``torch.optim.Adam``); :meth:`AdamMLPArch.init_theta`
starts there, with the MLP's output scaled by ``init_scale`` so ES perturbations of every
weight matter. Adam's first moment is the MLP's own β = 0.9 momentum feature, so the only
extra state is the second moment and a step counter.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import torch
from torch import Tensor

from metalab.lopt.interfaces import (
    LossFeatures,
    OptimizerArch,
    check_arch_scales,
    check_arch_sizes,
)
from metalab.lopt.mlp_lopt import (
    BETAS,
    TIMESCALES,
    MLPLOptShapes,
    Segments,
    init_mlp_lopt,
    mlp_lopt_step,
    time_features,
)
from metalab.lopt.systems import State

__all__ = ["SCHEDULE_DIM", "AdamMLPArch"]

SCHEDULE_DIM = 1 + len(TIMESCALES)
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
_M1 = BETAS.index(_BETA1)


class AdamMLPArch(OptimizerArch):
    """Adam (β = 0.9, 0.999) at a learned log-lr schedule + the per-parameter MLP's step.

    ``θ = [s (12) | MLP weights]``.

    Args:
        hidden: width of the MLP's two hidden layers.
        lr: Adam learning rate of :meth:`init_theta` (``s₀ = log lr``).
        init_scale: output-layer scale of the initial MLP (0: exactly Adam at ``lr``).
    """

    name = "adam-mlp"
    state_grad_powers = MappingProxyType({"moments": 1, "v": 2})
    uses_validation_loss = False

    def __init__(self, hidden: int = 32, lr: float = 0.01, init_scale: float = 0.1) -> None:
        check_arch_sizes("adam-mlp", hidden=hidden)
        check_arch_scales("adam-mlp", positive=True, lr=lr)
        check_arch_scales("adam-mlp", init_scale=init_scale)
        self.shapes = MLPLOptShapes(hidden)
        self.lr, self.init_scale = float(lr), float(init_scale)

    @property
    def theta_dim(self) -> int:
        """12 schedule weights + 1762 MLP weights for ``hidden = 32``."""
        return SCHEDULE_DIM + self.shapes.size

    def init_theta(self, *, generator: torch.Generator) -> Tensor:
        """Adam at ``lr`` (flat schedule) plus a random MLP, output scaled by ``init_scale``."""
        schedule = torch.zeros(SCHEDULE_DIM)
        schedule[0] = math.log(self.lr)
        mlp = init_mlp_lopt(self.shapes, generator=generator, scale=self.init_scale)
        return torch.cat([schedule, mlp])

    def init_state(self, params: Tensor, segments: Segments) -> State:
        """Zero momenta ``[P, N, 6]``, second moment ``[P, N]`` and per-tensor counts ``[P, S]``.

        Counting steps per tensor (as ``torch.optim.Adam`` counts per parameter) keeps the
        bias correction right for a parameter that ``LearnedOptimizer`` first steps late.
        """
        return {
            "moments": params.new_zeros(*params.shape, len(BETAS)),
            "v": torch.zeros_like(params),
            "count": params.new_zeros(params.shape[0], len(segments.sizes)),
        }

    def step(
        self,
        theta: Tensor,
        params: Tensor,
        grads: Tensor,
        state: State,
        t: Tensor,
        segments: Segments,
        losses: LossFeatures | None = None,
    ) -> tuple[Tensor, State]:
        """Adam's bias-corrected step at the scheduled rate, then the MLP's step."""
        schedule, mlp_theta = theta[:, :SCHEDULE_DIM], theta[:, SCHEDULE_DIM:]
        after_mlp, moments = mlp_lopt_step(
            mlp_theta, params, grads, state["moments"], t, segments, self.shapes
        )
        count = state["count"] + 1
        v = torch.lerp(grads * grads, state["v"], _BETA2)  # β₂·v + (1 − β₂)·g²
        k = count[:, segments.index]  # [P, N]: each entry's tensor's step count
        m_hat = moments[..., _M1] / (1 - _BETA1**k)
        direction = m_hat / (_safe_sqrt(v / (1 - _BETA2**k)) + _EPS)
        log_lr = schedule[:, 0] + (time_features(t).to(theta.dtype) * schedule[:, 1:]).sum(-1)
        new_params = after_mlp - torch.exp(log_lr).unsqueeze(1) * direction
        return new_params, {"moments": moments, "v": v, "count": count}


def _safe_sqrt(x: Tensor) -> Tensor:
    """``√x`` with a zero (not infinite) derivative at 0, so backprop through steps stays finite."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)
