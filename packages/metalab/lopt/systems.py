"""The unrolled-system interface every gradient estimator consumes.

An unrolled computation graph (Vicol et al. 2021, Sec. 2) has an inner state ``s_t``, a
transition ``s_{t+1} = f(s_t, x_t; θ)`` and a loss ``L_t`` per step; the meta-objective is
``Σ_t L_t`` over an episode of ``horizon`` steps (or a never-ending stream). A user
implements :class:`UnrolledSystem` once — the initial state, one *batched* step over the
particle dimension, the episode length and optional per-step data — and :func:`unroll`
advances all particles ``K`` steps together, resetting each one whose episode ends (also
in the middle of a window) and reporting where it did so that estimators can credit the
losses after a reset correctly.

Randomness (fresh episode states, minibatches) is drawn for the *whole* population from
an explicit generator and then sliced to the rows this process owns (:class:`Layout`), so
a population split over ``torchrun`` ranks sees exactly the numbers one process would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Layout", "State", "UnrolledSystem", "Window", "clean_losses", "unroll"]

State = dict[str, Tensor]


class UnrolledSystem(ABC):
    """An inner optimization (or dynamical system) unrolled under meta-parameters ``θ``.

    Subclasses set :attr:`horizon` (episode length ``T``; ``None`` = never ends) and
    implement the four abstract members. ``θ`` is a flat vector of :attr:`theta_dim`
    meta-parameters; every batched method receives one row of it per particle.

    Attributes:
        horizon: episode length ``T`` or ``None`` for a never-ending system.
        loss_at_window_end: when true only the last step of each window carries a loss
            (the influence-balancing protocol of Tallec & Ollivier 2017 / Vicol et al.).
        device: where the system's tensors live.
    """

    horizon: int | None = None
    loss_at_window_end: bool = False
    device: torch.device = torch.device("cpu")

    @property
    @abstractmethod
    def theta_dim(self) -> int:
        """Number of meta-parameters ``d``."""

    @abstractmethod
    def initial_theta(self) -> Tensor:
        """The meta-parameters to start meta-training from, shape ``[d]``."""

    @abstractmethod
    def init_state(self, num: int, *, generator: torch.Generator) -> State:
        """``num`` fresh episode states, each tensor with leading dimension ``num``."""

    @abstractmethod
    def step(
        self, state: State, theta: Tensor, t: Tensor, data: State | None
    ) -> tuple[State, Tensor]:
        """Advance every particle one step, batched over the leading dimension ``P``.

        Args:
            state: the particles' states, leading dimension ``P``.
            theta: ``[P, d]`` meta-parameters, one row per particle.
            t: ``[P]`` step index of each particle within its episode.
            data: this step's data (leading dimension ``P``) or ``None``.

        Returns:
            ``(new_state, loss)`` with ``loss`` of shape ``[P]`` (the step's ``L_t``).
        """

    def sample_data(self, num: int, steps: int, *, generator: torch.Generator) -> State | None:
        """Per-step data for ``num`` streams: tensors of shape ``[steps, num, ...]`` or ``None``."""
        return None

    def episode_end(self, state: State, t: Tensor) -> Tensor:
        """``[P]`` true where a particle's episode ends after step ``t`` (``state`` is post-step).

        The default is a fixed :attr:`horizon`; systems whose episode lengths vary (sampled
        truncation horizons, kept in the state) override it.
        """
        assert self.horizon is not None
        return t + 1 >= self.horizon


@dataclass(frozen=True)
class Layout:
    """Which particles this process holds.

    The population has ``total`` streams (antithetic pairs, or TBPTT streams); this
    process owns ``rows`` of them and holds ``copies`` particles per stream (2 for ES
    pairs, ordered ``[+ rows..., − rows...]``; both members of a pair share their fresh
    states and data).
    """

    total: int
    rows: range
    copies: int = 1

    @property
    def local(self) -> int:
        """Number of particles this process holds: ``len(rows) * copies``."""
        return len(self.rows) * self.copies

    def take(self, tensor: Tensor, dim: int = 0) -> Tensor:
        """This process's rows of a tensor drawn for all ``total`` streams, tiled ``copies``x."""
        mine = tensor.narrow(dim, self.rows.start, len(self.rows))
        return torch.cat([mine] * self.copies, dim=dim) if self.copies > 1 else mine

    def fresh_states(self, system: UnrolledSystem, generator: torch.Generator) -> State:
        """Fresh episode states for this process's particles (drawn for the whole population)."""
        return {
            k: self.take(v) for k, v in system.init_state(self.total, generator=generator).items()
        }

    def data(self, system: UnrolledSystem, steps: int, generator: torch.Generator) -> State | None:
        """Per-step data ``[steps, local, ...]`` for this process's particles, or ``None``."""
        data = system.sample_data(self.total, steps, generator=generator)
        return None if data is None else {k: self.take(v, dim=1) for k, v in data.items()}


class Window(NamedTuple):
    """What :func:`unroll` returns for one window of ``K`` steps."""

    state: State
    t: Tensor
    losses: Tensor
    resets: Tensor


def unroll(
    system: UnrolledSystem,
    state: State,
    t: Tensor,
    theta: Tensor,
    steps: int,
    *,
    layout: Layout,
    generator: torch.Generator,
) -> Window:
    """Advance all particles ``steps`` steps under their rows of ``theta`` in batched calls.

    A particle whose episode ends at step ``j`` (``t + 1 == horizon``) gets a fresh state
    after that step's loss is recorded, and ``resets[:, j]`` is set (estimators keep all
    particles in phase, so fresh states are drawn identically on every rank).

    ``state`` has leading dimension ``layout.local``, ``t`` is ``[P]``, ``theta`` is
    ``[P, d]`` (it may require grad: the unroll is differentiable); ``generator`` draws
    fresh states and per-step data. Returns the new state and ``t``, ``losses [P, K]`` and
    ``resets [P, K]``.
    """
    data = layout.data(system, steps, generator)
    losses, resets = [], []
    for j in range(steps):
        state, loss = system.step(
            state, theta, t, None if data is None else {k: v[j] for k, v in data.items()}
        )
        if system.loss_at_window_end and j < steps - 1:
            loss = torch.zeros_like(loss.detach())  # no graph: backward skips these steps
        if system.horizon is None:
            t = t + 1
            losses.append(loss)
            continue
        done = system.episode_end(state, t)
        if bool(done.all()):  # fresh states may differ in shape (a new task); no mixing needed
            fresh = layout.fresh_states(system, generator)
            state = {k: v.to(state[k].dtype) if k in state else v for k, v in fresh.items()}
        elif bool(done.any()):
            fresh = layout.fresh_states(system, generator)
            state = {k: _where_rows(done, fresh[k], v) for k, v in state.items()}
        t = torch.where(done, torch.zeros_like(t), t + 1)
        losses.append(loss)
        resets.append(done)
    stacked = torch.stack(losses, dim=1)
    ended = (
        torch.stack(resets, dim=1)
        if resets
        else torch.zeros(stacked.shape, dtype=torch.bool, device=stacked.device)
    )
    return Window(state, t, stacked, ended)


def _where_rows(rows: Tensor, new: Tensor, old: Tensor) -> Tensor:
    shape = (rows.shape[0],) + (1,) * (old.dim() - 1)
    return torch.where(rows.reshape(shape), new.to(old.dtype), old)


def clean_losses(
    losses: Tensor, *, nan_loss: float | None = None, loss_clip: float | None = None
) -> Tensor:
    """Replace NaN/inf losses by ``nan_loss`` and clip losses above ``loss_clip``.

    Unstable inner training (exploding learned optimizers, chaotic schedules) produces
    NaN or huge losses that would poison every ES estimate in the batch; learned
    optimization practice maps them to a large finite loss and clips the rest.
    """
    if nan_loss is not None:
        losses = torch.nan_to_num(losses, nan=nan_loss, posinf=nan_loss, neginf=-nan_loss)
    if loss_clip is not None:
        losses = losses.clamp(max=loss_clip)
    return losses
