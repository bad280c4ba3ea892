"""The per-parameter MLP learned optimizer as an :class:`~metalab.lopt.interfaces.OptimizerArch`.

A thin adapter over :func:`metalab.lopt.mlp_lopt.mlp_lopt_step` (Metz et al. 2019): the
state is the six momenta per parameter; loss features are not used by this architecture.
"""

from __future__ import annotations

from types import MappingProxyType

import torch
from torch import Tensor

from metalab.lopt.interfaces import (
    LossFeatures,
    OptimizerArch,
    check_arch_scales,
    check_arch_sizes,
)
from metalab.lopt.mlp_lopt import BETAS, MLPLOptShapes, Segments, init_mlp_lopt, mlp_lopt_step
from metalab.lopt.systems import State

__all__ = ["MLPArch"]


class MLPArch(OptimizerArch):
    """19 features → ``hidden`` → ``hidden`` → 2 per parameter; step ``d·exp(0.001 m)·0.001``.

    Args:
        hidden: width of the two hidden layers (32 in the paper).
        init_scale: output-layer scale of a random initial optimizer.
    """

    name = "mlp"
    state_grad_powers = MappingProxyType({"moments": 1})
    uses_validation_loss = False

    def __init__(self, hidden: int = 32, init_scale: float = 1.0) -> None:
        check_arch_sizes("mlp", hidden=hidden)
        check_arch_scales("mlp", init_scale=init_scale)
        self.shapes = MLPLOptShapes(hidden)
        self.init_scale = init_scale

    @property
    def theta_dim(self) -> int:
        """1762 weights for ``hidden = 32``."""
        return self.shapes.size

    def init_theta(self, *, generator: torch.Generator) -> Tensor:
        """LeCun-normal hidden layers, zero biases, output layer scaled by ``init_scale``."""
        return init_mlp_lopt(self.shapes, generator=generator, scale=self.init_scale)

    def init_state(self, params: Tensor, segments: Segments) -> State:
        """Zero momenta ``[P, N, 6]``."""
        return {"moments": params.new_zeros(*params.shape, len(BETAS))}

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
        """One MLP-optimizer update for every particle (loss features ignored)."""
        new_params, moments = mlp_lopt_step(
            theta, params, grads, state["moments"], t, segments, self.shapes
        )
        return new_params, {"moments": moments}
