"""Evolution-strategies estimators with antithetic pairs: full ES, truncated ES and PES.

All three perturb ``θ`` by ``±σε`` with ``ε ~ N(0, I)`` and estimate the gradient of the
Gaussian-smoothed objective ``E_ε[L(θ + σε)]`` (Vicol et al. 2021, Eqs. 3–5):

* **full ES** unrolls whole episodes: ``g = Σ_pairs (L⁺ − L⁻) ε / (2σN)``;
* **truncated ES** starts every window from a shared state with fresh ε — biased,
  because it ignores θ's influence on the state the window starts from;
* **PES** keeps every particle's state and the sum ``ξ`` of all perturbations it has
  received in its episode: ``g = Σ_pairs (L⁺ − L⁻) ξ / (2σN)`` (Eq. 6), unbiased.

``ξ`` is kept in units of ε (standard normal), so the paper's ``ε ~ N(0, σ²I)`` form
``(L⁺ − L⁻) ξ / (2σ²)`` reads ``(L⁺ − L⁻) ξ / (2σ)`` here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.base import Estimate, GradientEstimator, horizon_of
from metalab.lopt.systems import Layout, State, UnrolledSystem, unroll

__all__ = ["PES", "FullES", "FullESState", "PESState", "TruncatedES", "TruncatedESState"]


class FullESState(NamedTuple):
    """Full ES keeps no particle state; only the number of estimates made."""

    iteration: Tensor


class TruncatedESState(NamedTuple):
    """The shared (unperturbed) inner state every window starts from, and its step index."""

    state: State
    t: Tensor
    iteration: Tensor


class PESState(NamedTuple):
    """PES's persistent ``±`` particle states, their step indices and accumulators ``ξ``.

    ``state`` tensors and ``t`` have ``2n`` rows ordered ``[+ pairs, − pairs]``; ``xi`` is
    ``[n, d]`` (this process's ``n`` pairs).
    """

    state: State
    t: Tensor
    xi: Tensor
    iteration: Tensor


class _AntitheticES(GradientEstimator):
    """Shared machinery: perturbations, pair differences and the gradient sum.

    Args:
        pairs: number of antithetic pairs ``N`` (``2N`` particles).
        sigma: perturbation scale ``σ``.
        truncation, loss_clip, nan_loss, grad_clip: see :class:`GradientEstimator`.
    """

    def __init__(
        self,
        *,
        pairs: int = 8,
        sigma: float = 0.1,
        truncation: int = 10,
        loss_clip: float | None = None,
        nan_loss: float | None = None,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__(
            truncation=truncation, loss_clip=loss_clip, nan_loss=nan_loss, grad_clip=grad_clip
        )
        if pairs < 1:
            raise ConfigError(f"{self.name} needs pairs >= 1, got {pairs}")
        if not sigma > 0:
            raise ConfigError(f"{self.name} needs sigma > 0, got {sigma}")
        self.pairs, self.sigma = pairs, sigma

    def _pairs_layout(self) -> Layout:
        return self._layout(self.pairs, copies=2)

    def _perturb(
        self, theta: Tensor, layout: Layout, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """This process's ``ε`` rows ``[n, d]`` and the particles' ``θ ± σε`` ``[2n, d]``."""
        eps = torch.randn(
            (layout.total, theta.shape[0]), generator=generator, device=generator.device
        )
        eps = eps.narrow(0, layout.rows.start, len(layout.rows)).to(theta)
        center = theta.detach().unsqueeze(0)
        return eps, torch.cat([center + self.sigma * eps, center - self.sigma * eps])

    def _differences(self, losses: Tensor, n: int) -> Tensor:
        """``L⁺ − L⁻`` per pair (any trailing shape), after NaN handling and clipping."""
        clean = self._clean(losses)
        return clean[:n] - clean[n:]

    def _estimate(self, grad_sum: Tensor, losses: Tensor, steps: int) -> Estimate:
        scale = 1.0 / (2.0 * self.sigma * self.pairs)
        return self._finish(grad_sum * scale, self._clean(losses).sum(), 2 * self.pairs, steps)


class FullES(_AntitheticES):
    """Full-unroll antithetic ES: every estimate runs whole episodes from fresh states.

    Unbiased for the smoothed full-episode objective; needs a finite ``horizon``. The
    ``truncation`` option is unused (the window is the whole episode).
    """

    name = "full-es"

    def init(
        self, system: UnrolledSystem, theta: Tensor, *, generator: torch.Generator
    ) -> FullESState:
        """Check the system has finite episodes; no particle state is needed."""
        horizon_of(system, self.name)
        return FullESState(torch.zeros((), dtype=torch.long))

    def step(
        self,
        system: UnrolledSystem,
        theta: Tensor,
        state: FullESState,
        *,
        generator: torch.Generator,
        data_generator: torch.Generator | None = None,
    ) -> tuple[Estimate, FullESState]:
        """Unroll ``T`` steps under ``θ ± σε`` from fresh states; ``g = Σ ΔL ε / (2σN)``."""
        horizon = horizon_of(system, self.name)
        data_gen = data_generator or generator
        layout = self._pairs_layout()
        eps, thetas = self._perturb(theta, layout, generator)
        start = layout.fresh_states(system, data_gen)
        t0 = torch.zeros(layout.local, dtype=torch.long, device=theta.device)
        window = unroll(system, start, t0, thetas, horizon, layout=layout, generator=data_gen)
        delta = self._differences(window.losses, len(layout.rows)).sum(dim=1)
        estimate = self._estimate(delta @ eps, window.losses, layout.local * horizon)
        return estimate, FullESState(state.iteration + 1)


class TruncatedES(_AntitheticES):
    """Truncated antithetic ES: windows of ``K`` steps from a shared state, fresh ε each time.

    After the estimate the shared state advances ``K`` steps under the unperturbed ``θ``
    (as in the reference code). Biased: the state's dependence on θ is ignored.
    """

    name = "truncated-es"

    def init(
        self, system: UnrolledSystem, theta: Tensor, *, generator: torch.Generator
    ) -> TruncatedESState:
        """A fresh shared state at ``t = 0``."""
        shared = Layout(1, range(1))
        return TruncatedESState(
            shared.fresh_states(system, generator),
            torch.zeros(1, dtype=torch.long, device=theta.device),
            torch.zeros((), dtype=torch.long),
        )

    def step(
        self,
        system: UnrolledSystem,
        theta: Tensor,
        state: TruncatedESState,
        *,
        generator: torch.Generator,
        data_generator: torch.Generator | None = None,
    ) -> tuple[Estimate, TruncatedESState]:
        """Estimate from one window, then advance the shared state under ``θ``."""
        data_gen = data_generator or generator
        layout = self._pairs_layout()
        eps, thetas = self._perturb(theta, layout, generator)
        start = {k: v.expand(layout.local, *v.shape[1:]) for k, v in state.state.items()}
        t0 = state.t.expand(layout.local)
        window = unroll(
            system, start, t0, thetas, self.truncation, layout=layout, generator=data_gen
        )
        delta = self._differences(window.losses, len(layout.rows)).sum(dim=1)
        estimate = self._estimate(delta @ eps, window.losses, layout.local * self.truncation)
        shared = unroll(
            system,
            state.state,
            state.t,
            theta.detach().unsqueeze(0),
            self.truncation,
            layout=Layout(1, range(1)),
            generator=data_gen,
        )
        return estimate, TruncatedESState(shared.state, shared.t, state.iteration + 1)


class PES(_AntitheticES):
    """Persistent evolution strategies (Vicol et al. 2021, Alg. 2, Eq. 6).

    Each ``±`` particle keeps its own inner state across windows, and each pair keeps
    ``ξ``, the sum of the ε it has received since its episode began. A window's loss
    difference is credited to ``ξ + ε``. When a particle's episode ends inside a window,
    the losses up to and including the last step of the old episode are credited to
    ``ξ + ε``, the losses after the reset to the window's ``ε`` only (the new episode has
    seen no other perturbation), and ``ξ`` restarts from ``ε`` (or 0 if the reset was the
    window's last step).
    """

    name = "pes"

    def init(
        self, system: UnrolledSystem, theta: Tensor, *, generator: torch.Generator
    ) -> PESState:
        """Fresh episode states for every particle (shared within a pair), ``ξ = 0``."""
        layout = self._pairs_layout()
        return PESState(
            layout.fresh_states(system, generator),
            torch.zeros(layout.local, dtype=torch.long, device=theta.device),
            torch.zeros(len(layout.rows), theta.shape[0], dtype=theta.dtype, device=theta.device),
            torch.zeros((), dtype=torch.long),
        )

    def step(
        self,
        system: UnrolledSystem,
        theta: Tensor,
        state: PESState,
        *,
        generator: torch.Generator,
        data_generator: torch.Generator | None = None,
    ) -> tuple[Estimate, PESState]:
        """Unroll every particle ``K`` steps from its own state and credit ``ΔL`` to ``ξ``."""
        data_gen = data_generator or generator
        layout = self._pairs_layout()
        n = len(layout.rows)
        eps, thetas = self._perturb(theta, layout, generator)
        window = unroll(
            system, state.state, state.t, thetas, self.truncation, layout=layout, generator=data_gen
        )
        delta = self._differences(window.losses, n)  # [n, K]
        grad_sum, xi = self.credit(delta, window.resets[:n], state.xi, eps)
        estimate = self._estimate(grad_sum, window.losses, layout.local * self.truncation)
        return estimate, PESState(window.state, window.t, xi, state.iteration + 1)

    @staticmethod
    def credit(delta: Tensor, resets: Tensor, xi: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Credit a window's loss differences to the perturbations that caused them.

        Args:
            delta: ``[n, K]`` per-step ``L⁺ − L⁻``.
            resets: ``[n, K]`` true where a pair's episode ended after that step.
            xi: ``[n, d]`` accumulated perturbations before the window.
            eps: ``[n, d]`` the window's perturbations.

        Returns:
            ``(Σ_pairs ΔL_old·(ξ + ε) + ΔL_new·ε, ξ_next)``: steps up to the first reset
            belong to the old episode; later steps saw only ``ε``.
        """
        ended = resets.long()
        old_episode = (torch.cumsum(ended, dim=1) - ended) == 0
        delta_old = (delta * old_episode).sum(dim=1)
        delta_new = (delta * ~old_episode).sum(dim=1)
        grad_sum = delta_old @ (xi + eps) + delta_new @ eps
        restarted = torch.where(resets[:, -1:], torch.zeros_like(eps), eps)
        return grad_sum, torch.where(resets.any(dim=1, keepdim=True), restarted, xi + eps)
