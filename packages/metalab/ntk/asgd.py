"""One-pass averaged SGD (Algorithm 1 of Nitanda & Suzuki, 2021), batched over lanes.

For ``t = 0..T−1`` a fresh ``(x_t, y_t)`` is drawn and
``θ ← θ − η ∂_θ ½(g_θ(x_t) − y_t)² − ηλ(θ − θ⁰)``; the output is the model at the
parameter average ``θ̄ = (1/(T+1)) Σ_{t=0}^{T} θ^{(t)}``. λ depends on ``T`` (Corollary 1),
so every horizon is its own run: a *lane* is one (setting, seed, horizon[, width]) run,
all lanes advance together in one batched step, and a lane leaves the batch when its
horizon is reached (so the cost is ``Σ_lanes T_lane`` lane-steps, not ``L · max T``).

Learners (optax style: ``init``/``prepare``/``step`` over an explicit ``NamedTuple``
state): :class:`NetworkASGD` (the two-layer network) and :class:`KernelASGD` (the same
algorithm in the RKHS of the analytic NTK, in spectral coordinates ``ψ_j = √μ_j φ_j``).
Both see the same data stream. Excess risks are ``‖g − g_ρ‖²_{L²}``: closed form through the
harmonic coefficients for the kernel, exact quadrature on the sphere for the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.ntk.activations import Activation
from metalab.ntk.network import augment_inputs, network_forward, symmetric_init, width_mask
from metalab.ntk.sphere import basis_degrees, harmonic_basis, sample_sphere, sphere_quadrature

__all__ = [
    "ASGDResult",
    "DataStream",
    "KernelASGD",
    "KernelState",
    "Lanes",
    "Learner",
    "NetworkASGD",
    "NetworkState",
    "run_asgd",
    "stack_lanes",
]


class Lanes(NamedTuple):
    """Per-lane run settings (all shape ``(L,)`` except ``coef``: ``(L, J_target)``)."""

    horizon: Tensor  # int64 T
    lam: Tensor  # λ(T)
    eta: Tensor  # constant step size η
    coef: Tensor  # target coefficients c_j in the harmonic basis
    width: Tensor  # network width M (ignored by the kernel learner)


@dataclass(frozen=True)
class DataStream:
    """Fresh samples ``x ~ U(S^{d−1})``, ``y = g_ρ(x) + U[−a, a]`` for every lane."""

    dim: int
    max_degree: int  # harmonics computed per sample (≥ target and feature degrees)
    noise_half_width: float

    def draw(
        self, steps: int, coef: Tensor, *, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(x, basis, y)`` of shapes ``(C, L, d)``, ``(C, L, J)``, ``(C, L)``."""
        x = sample_sphere(
            (steps, coef.shape[0]), self.dim, generator=generator, dtype=torch.float64
        )
        basis = harmonic_basis(x, self.max_degree)
        values = (basis[..., : coef.shape[1]] * coef).sum(-1)
        noise = torch.rand(values.shape, generator=generator, dtype=torch.float64)
        return x, basis, values + (2 * noise - 1) * self.noise_half_width


class Learner(Protocol):
    """What :func:`run_asgd` needs from a learner."""

    def init(self, lanes: Lanes, *, generator: torch.Generator) -> Any:
        """The state of every lane at ``t = 0`` (sum of iterates initialised to ``θ⁰``)."""

    def prepare(self, state: Any, x: Tensor, basis: Tensor) -> Tensor:
        """Per-chunk input features (computed once for ``C`` steps)."""

    def step(self, state: Any, inputs: Tensor, y: Tensor) -> None:
        """One SGD step of every lane, in place; ``inputs`` and ``y`` are one time slice."""

    def select(self, state: Any, rows: Tensor) -> Any:
        """The state of the lanes ``rows`` only."""

    def risks(self, state: Any, steps: int, coef: Tensor) -> tuple[Tensor, Tensor]:
        """Excess risks ``(averaged iterate, last iterate)`` of every lane in ``state``."""


class KernelState(NamedTuple):
    """Spectral coordinates of ``f = Σ_j θ_j √μ_j φ_j``: current, running sum, step sizes."""

    theta: Tensor
    total: Tensor
    decay: Tensor
    lr: Tensor


class KernelASGD:
    """Averaged SGD in the RKHS of the analytic NTK, truncated at ``feature_degree``.

    Args:
        mu: NTK eigenvalue per degree (at least ``feature_degree + 1`` of them).
        dim: input dimension.
        feature_degree: highest harmonic degree kept (choose ``μ_K ≪ λ``).
    """

    def __init__(self, mu: np.ndarray, *, dim: int, feature_degree: int) -> None:
        degrees = basis_degrees(dim, feature_degree)
        self.sqrt_mu = torch.from_numpy(np.sqrt(np.clip(mu[degrees], 0.0, None)))
        self.size = degrees.size

    def init(self, lanes: Lanes, *, generator: torch.Generator) -> KernelState:
        """Initial state of every lane (see :class:`Learner`)."""
        zeros = torch.zeros((lanes.horizon.numel(), self.size), dtype=torch.float64)
        return KernelState(zeros, zeros.clone(), 1 - lanes.eta * lanes.lam, lanes.eta.clone())

    def prepare(self, state: KernelState, x: Tensor, basis: Tensor) -> Tensor:
        """Per-chunk inputs (see :class:`Learner`)."""
        return basis[..., : self.size] * self.sqrt_mu

    def step(self, state: KernelState, inputs: Tensor, y: Tensor) -> None:
        """One SGD step of every lane, in place."""
        err = (state.theta * inputs).sum(-1) - y
        state.theta.mul_(state.decay[:, None]).addcmul_(
            (state.lr * err)[:, None], inputs, value=-1.0
        )
        state.total.add_(state.theta)

    def select(self, state: KernelState, rows: Tensor) -> KernelState:
        """The state of lanes ``rows``."""
        return KernelState(*(t[rows] for t in state))

    def risks(self, state: KernelState, steps: int, coef: Tensor) -> tuple[Tensor, Tensor]:
        """Excess risks (averaged, last) of every lane."""

        def risk(theta: Tensor) -> Tensor:
            width = min(self.size, coef.shape[1])
            fitted = theta * self.sqrt_mu
            inside = ((fitted[:, :width] - coef[:, :width]) ** 2).sum(-1)
            return inside + (fitted[:, width:] ** 2).sum(-1) + (coef[:, width:] ** 2).sum(-1)

        return risk(state.total / (steps + 1)), risk(state.theta)


_FLUSH = 16  # iterates summed in the network's dtype before joining the float64 sum


class NetworkState(NamedTuple):
    """Batched parameters ``P`` (``(L, d+2, M)``), their running sum, and constants."""

    params: Tensor
    total: Tensor  # float64 running sum of the iterates, flushed from ``partial``
    partial: Tensor  # the last < _FLUSH iterates, summed in the network's own dtype
    pending: Tensor  # (L,): how many iterates ``partial`` holds (equal for every lane)
    anchor: Tensor  # ηλ P⁰: the pull towards the initialization
    decay: Tensor  # (L, 1, 1): 1 − ηλ
    lr: Tensor  # (L,): η
    mask: Tensor  # (L, M), or (L, 1) ones when every lane has the full width
    scale: Tensor  # (L,): 1/√M
    width: Tensor  # (L,)


class NetworkASGD:
    """Algorithm 1 on the two-layer network of :mod:`metalab.ntk.network` (all layers).

    The gradient is written out (``∂a = σ/√M``, ``∂b = aσ'x/√M``, ``∂c = γaσ'/√M``; checked
    against :func:`torch.func.grad` in the tests) so one step is ~20 batched tensor ops.
    """

    def __init__(
        self,
        activation: Activation,
        *,
        dim: int,
        radius: float = 1.0,
        gamma: float = 1.0,
        quadrature: int = 256,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if gamma <= 0:
            raise ConfigError(f"the bias scale γ must be positive (paper, A2), got {gamma}")
        self.activation, self.dim, self.radius, self.gamma = activation, dim, radius, gamma
        self.points, self.weights = sphere_quadrature(dim, quadrature, dtype=torch.float64)
        self.dtype = dtype

    def init(self, lanes: Lanes, *, generator: torch.Generator) -> NetworkState:
        """Initial state of every lane (see :class:`Learner`)."""
        widths = [int(m) for m in lanes.width]
        p0 = symmetric_init(widths, self.dim, radius=self.radius, generator=generator)
        rate = (lanes.eta * lanes.lam)[:, None, None]
        kind = self.dtype
        return NetworkState(
            # the running sum stays float64: ~10⁵ float32 additions of near-equal terms
            # round systematically (ulp(10⁵) ≈ 0.008), which biased the average at T = 10⁵;
            # only blocks of _FLUSH iterates are summed in float32 (relative error ~10⁻⁶)
            params=p0.to(kind).clone(),
            total=p0.double().clone(),
            partial=torch.zeros_like(p0, dtype=kind),
            pending=torch.zeros(len(widths), dtype=torch.int64),
            anchor=(rate * p0).to(kind),
            decay=(1 - rate).to(kind),
            lr=lanes.eta.to(kind),
            # one column (a no-op, skipped by step) when every lane has the full width
            mask=width_mask(widths, dtype=kind)
            if len(set(widths)) > 1
            else torch.ones((len(widths), 1), dtype=kind),
            scale=lanes.width.double().rsqrt().to(kind),
            width=lanes.width.clone(),
        )

    def prepare(self, state: NetworkState, x: Tensor, basis: Tensor) -> Tensor:
        """Per-chunk inputs (see :class:`Learner`)."""
        return augment_inputs(x, self.gamma).to(self.dtype)

    def step(self, state: NetworkState, inputs: Tensor, y: Tensor) -> None:
        """One SGD step of every lane, in place."""
        p = state.params  # (L, d+2, M); inputs v = (0, x, γ): (L, d+2)
        v = inputs.unsqueeze(-1)
        pre = torch.bmm(inputs[:, None, 1:], p[:, 1:]).squeeze(1)  # Bx + γc (v₀ = 0)
        act, dact = self.activation.value_and_derivative(pre)
        if state.mask.shape[-1] > 1:  # lanes of different widths: silence the padding
            act = act * state.mask
        a = p[:, 0]
        out = torch.linalg.vecdot(a, act)
        err = out * state.scale - y.to(p.dtype)
        g = (state.lr * err * state.scale).unsqueeze(-1)
        w = (a * dact).mul_(g).unsqueeze(1)
        torch.addcmul(state.anchor, p, state.decay, out=p)  # (1 − ηλ)θ + ηλθ⁰
        p[:, 0].addcmul_(g, act, value=-1.0)
        p.addcmul_(w, v, value=-1.0)
        state.partial.add_(p)  # a float64 add per step would cost a float32→64 copy too
        state.pending.add_(1)
        if int(state.pending[0]) >= _FLUSH:
            state.total.add_(state.partial)
            state.partial.zero_()
            state.pending.zero_()

    def select(self, state: NetworkState, rows: Tensor) -> NetworkState:
        """The state of lanes ``rows``."""
        return NetworkState(*(t[rows] for t in state))

    def risks(self, state: NetworkState, steps: int, coef: Tensor) -> tuple[Tensor, Tensor]:
        """Excess risks (averaged, last) of every lane."""
        degree = _degree_of(self.dim, coef.shape[1])
        truth = coef @ harmonic_basis(self.points, degree).T  # (L, Q)

        def risk(params: Tensor) -> Tensor:
            out = network_forward(
                params.double(), self.points, self.activation, gamma=self.gamma, widths=state.width
            )
            return ((out - truth) ** 2 * self.weights).sum(-1)

        return risk((state.total + state.partial) / (steps + 1)), risk(state.params)


def _degree_of(dim: int, size: int) -> int:
    degree = (size - 1) // 2 if dim == 2 else round(size**0.5) - 1
    if basis_degrees(dim, degree).size != size:
        raise ConfigError(f"{size} coefficients is not a full harmonic basis on S^{dim - 1}")
    return degree


@dataclass
class ASGDResult:
    """Excess risks per lane of one learner: averaged iterate and last iterate."""

    averaged: Tensor
    last: Tensor


def run_asgd(
    learners: Mapping[str, Learner],
    lanes: Lanes,
    stream: DataStream,
    *,
    generator: torch.Generator,
    chunk: int = 256,
) -> dict[str, ASGDResult]:
    """Run Algorithm 1 for every lane and every learner on one shared data stream.

    Raises:
        ConfigError: non-positive horizons or step sizes, or an unstable decay.
    """
    _validate(lanes)
    states = {name: lr.init(lanes, generator=generator) for name, lr in learners.items()}
    out = {
        name: ASGDResult(
            torch.full_like(lanes.lam, torch.nan), torch.full_like(lanes.lam, torch.nan)
        )
        for name in learners
    }
    active, t = torch.arange(lanes.horizon.numel()), 0
    for end in sorted({int(h) for h in lanes.horizon}):
        while t < end:
            size = min(chunk, end - t)
            x, basis, y = stream.draw(size, lanes.coef[active], generator=generator)
            inputs = {n: lr.prepare(states[n], x, basis) for n, lr in learners.items()}
            for i in range(size):
                for name, learner in learners.items():
                    learner.step(states[name], inputs[name][i], y[i])
            t += size
        done = lanes.horizon[active] == end
        for name, learner in learners.items():
            finished = learner.select(states[name], done)
            averaged, last = learner.risks(finished, end, lanes.coef[active[done]])
            out[name].averaged[active[done]], out[name].last[active[done]] = averaged, last
            states[name] = learner.select(states[name], ~done)
        active = active[~done]
    return out


def _validate(lanes: Lanes) -> None:
    if bool((lanes.horizon < 1).any()):
        raise ConfigError("every horizon T must be ≥ 1")
    if bool((lanes.eta <= 0).any()) or bool((lanes.lam < 0).any()):
        raise ConfigError("step sizes must be positive and λ non-negative")
    if bool((lanes.eta * lanes.lam >= 1).any()):
        raise ConfigError("ηλ must be < 1 (the pull towards the initialization would overshoot)")


def stack_lanes(rows: Sequence[Lanes]) -> Lanes:
    """Concatenate several lane sets (same target basis size)."""
    return Lanes(*(torch.cat(parts) for parts in zip(*rows, strict=True)))
