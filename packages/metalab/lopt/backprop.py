"""Gradient estimators by automatic differentiation through the unroll: TBPTT and full BPTT.

* **TBPTT** differentiates each window of ``K`` steps and detaches the state between
  windows — cheap but biased (it ignores how θ shaped the window's starting state).
* **Full BPTT** differentiates whole episodes; exact for the un-smoothed objective, memory
  ``O(T)``, and unstable on chaotic dynamics (Vicol et al. 2021, Sec. 2).

Both average over ``streams`` independent inner runs (split across ranks when a process
group is active).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.base import Estimate, GradientEstimator, horizon_of
from metalab.lopt.systems import Layout, State, UnrolledSystem, Window, unroll

__all__ = ["TBPTT", "FullBPTT", "FullBPTTState", "TBPTTState"]


class TBPTTState(NamedTuple):
    """The streams' (detached) inner states and step indices."""

    state: State
    t: Tensor
    iteration: Tensor


class FullBPTTState(NamedTuple):
    """Full BPTT keeps no inner state; only the number of estimates made."""

    iteration: Tensor


class _Backprop(GradientEstimator):
    """Shared options: the number of independent streams.

    Args:
        streams: independent inner runs averaged per estimate.
        truncation, loss_clip, nan_loss, grad_clip: see :class:`GradientEstimator`.
    """

    def __init__(
        self,
        *,
        streams: int = 1,
        truncation: int = 10,
        loss_clip: float | None = None,
        nan_loss: float | None = None,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__(
            truncation=truncation, loss_clip=loss_clip, nan_loss=nan_loss, grad_clip=grad_clip
        )
        if streams < 1:
            raise ConfigError(f"{self.name} needs streams >= 1, got {streams}")
        self.streams = streams

    def _differentiate(
        self,
        system: UnrolledSystem,
        theta: Tensor,
        start: State,
        t0: Tensor,
        steps: int,
        *,
        layout: Layout,
        generator: torch.Generator,
    ) -> tuple[Estimate, Window]:
        leaf = theta.detach().clone().requires_grad_(True)
        thetas = leaf.unsqueeze(0).expand(layout.local, -1)
        with torch.enable_grad():
            window = unroll(system, start, t0, thetas, steps, layout=layout, generator=generator)
            total = self._clean(window.losses).sum()
            if total.requires_grad:
                (grad,) = torch.autograd.grad(total, leaf, allow_unused=True)
            else:
                grad = None
        grad_sum = torch.zeros_like(leaf) if grad is None else grad
        detached = Window(
            {k: v.detach() for k, v in window.state.items()},
            window.t,
            window.losses.detach(),
            window.resets,
        )
        estimate = self._finish(
            grad_sum / self.streams, total.detach(), self.streams, layout.local * steps
        )
        return estimate, detached


class TBPTT(_Backprop):
    """Truncated backpropagation through time over windows of ``K`` steps."""

    name = "tbptt"

    def init(
        self, system: UnrolledSystem, theta: Tensor, *, generator: torch.Generator
    ) -> TBPTTState:
        """Fresh episode states for every stream at ``t = 0``."""
        layout = self._layout(self.streams, copies=1)
        return TBPTTState(
            layout.fresh_states(system, generator),
            torch.zeros(layout.local, dtype=torch.long, device=theta.device),
            torch.zeros((), dtype=torch.long),
        )

    def step(
        self,
        system: UnrolledSystem,
        theta: Tensor,
        state: TBPTTState,
        *,
        generator: torch.Generator,
        data_generator: torch.Generator | None = None,
    ) -> tuple[Estimate, TBPTTState]:
        """Backprop through one window, then keep the (detached) state for the next."""
        layout = self._layout(self.streams, copies=1)
        estimate, window = self._differentiate(
            system,
            theta,
            state.state,
            state.t,
            self.truncation,
            layout=layout,
            generator=data_generator or generator,
        )
        return estimate, TBPTTState(window.state, window.t, state.iteration + 1)


class FullBPTT(_Backprop):
    """Backpropagation through whole episodes from fresh states (needs a finite horizon).

    The ``truncation`` option is unused (the window is the whole episode).
    """

    name = "bptt"

    def init(
        self, system: UnrolledSystem, theta: Tensor, *, generator: torch.Generator
    ) -> FullBPTTState:
        """Check the system has finite episodes."""
        horizon_of(system, self.name)
        return FullBPTTState(torch.zeros((), dtype=torch.long))

    def step(
        self,
        system: UnrolledSystem,
        theta: Tensor,
        state: FullBPTTState,
        *,
        generator: torch.Generator,
        data_generator: torch.Generator | None = None,
    ) -> tuple[Estimate, FullBPTTState]:
        """Backprop through ``T`` steps from fresh states."""
        horizon = horizon_of(system, self.name)
        data_gen = data_generator or generator
        layout = self._layout(self.streams, copies=1)
        start = layout.fresh_states(system, data_gen)
        t0 = torch.zeros(layout.local, dtype=torch.long, device=theta.device)
        estimate, _ = self._differentiate(
            system, theta, start, t0, horizon, layout=layout, generator=data_gen
        )
        return estimate, FullBPTTState(state.iteration + 1)
