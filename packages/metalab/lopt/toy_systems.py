"""Small unrolled systems from the PES paper, plus a linear-quadratic one with a known gradient.

* :class:`InfluenceBalancing` — Tallec & Ollivier (2017), used in Vicol et al. (2021),
  Sec. 5.1: ``s_{t+1} = A s_t + θ v``; short truncations see the wrong sign of θ's influence.
* :class:`ToyRegression` — Vicol et al. (2021), Sec. 5.2: a linear learning-rate schedule
  for SGD on a 2-D function, whose meta-loss surface is chaotic.
* :class:`LinearQuadratic` — linear dynamics and a quadratic loss: the meta-loss is a
  quadratic in θ, so its Gaussian smoothing has the same gradient as the un-smoothed one,
  which has a closed form (used by the tests and the ``pes-unbiased`` theory check).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.lopt.systems import State, UnrolledSystem

__all__ = ["InfluenceBalancing", "LinearQuadratic", "ToyRegression", "linear_quadratic_loss"]


def _shift_matrix(n: int, decay: float, coupling: float, device: torch.device) -> Tensor:
    return decay * torch.eye(n, device=device) + coupling * torch.diag(
        torch.ones(n - 1, device=device), 1
    )


class InfluenceBalancing(UnrolledSystem):
    """``s_{t+1} = A s_t + θ v`` with ``A = ½I + ½U``, ``v = [+1]*10 + [−1]*13`` (Sec. 5.1).

    The loss ``½ (s[0] − 1)²`` is taken at the end of each window (the paper's protocol);
    in the long run ``s[0] = −6θ``, so the optimum is ``θ* = −1/6``.

    Args:
        n: state size (23 in the paper); ``positive`` of the entries of ``v`` are +1.
        positive: how many leading entries of ``v`` are +1 (10 in the paper).
        theta0: starting meta-parameter (0.5).
        horizon: ``None`` (never-ending, the paper) or a finite episode length.
        loss_every_step: take the loss at every step instead of at each window's end.
        device: where the tensors live.
    """

    def __init__(
        self,
        *,
        n: int = 23,
        positive: int = 10,
        theta0: float = 0.5,
        horizon: int | None = None,
        loss_every_step: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        if n < 1 or not 0 <= positive <= n:
            raise ConfigError(f"influence balancing needs n >= 1 and 0 <= positive <= n, got {n}")
        self.device = torch.device(device)
        self.n, self.theta0, self.horizon = n, theta0, horizon
        self.loss_at_window_end = not loss_every_step
        self.a_t = _shift_matrix(n, 0.5, 0.5, self.device).T.contiguous()
        self.v = torch.tensor([1.0] * positive + [-1.0] * (n - positive), device=self.device)

    @property
    def theta_dim(self) -> int:
        """One meta-parameter."""
        return 1

    def initial_theta(self) -> Tensor:
        """``θ₀`` (0.5 in the paper)."""
        return torch.tensor([self.theta0], device=self.device)

    def init_state(self, num: int, *, generator: torch.Generator) -> State:
        """``s_0 = ones(n)`` for every particle (deterministic)."""
        return {"s": torch.ones(num, self.n, device=self.device)}

    def step(
        self, state: State, theta: Tensor, t: Tensor, data: State | None
    ) -> tuple[State, Tensor]:
        """One linear step for all particles; loss ``½(s[0] − 1)²`` of the new state."""
        s = state["s"] @ self.a_t + theta[:, :1] * self.v
        return {"s": s}, 0.5 * (s[:, 0] - 1.0) ** 2

    def optimum(self) -> float:
        """``θ*`` solving ``s[0] = 1`` at the fixed point ``s = (I − A)^{-1} v θ``."""
        a = self.a_t.T.double().cpu()
        steady = torch.linalg.solve(torch.eye(self.n, dtype=a.dtype) - a, self.v.double().cpu())
        return float(1.0 / steady[0])


class ToyRegression(UnrolledSystem):
    """SGD on ``f(x) = √(x0²+5) − √5 + sin²(x1)·e^{−5x0²} + ¼|x1 − 100|`` (Sec. 5.2).

    The learning rate follows ``lr_t = e^{θ0}(T−t)/T + e^{θ1} t/T``; SGD uses weight decay
    1e-10; ``x_0 = (1, 1)``; the meta-objective is ``Σ_{t<T} f(x_{t+1})`` with ``T = 100``.
    """

    def __init__(
        self,
        *,
        horizon: int = 100,
        theta0: tuple[float, float] = (-4.0, -4.0),
        weight_decay: float = 1e-10,
        device: torch.device | str = "cpu",
    ) -> None:
        if horizon < 1:
            raise ConfigError(f"toy regression needs horizon >= 1, got {horizon}")
        self.device = torch.device(device)
        self.length, self.theta0, self.weight_decay = horizon, theta0, weight_decay
        self.horizon = horizon

    @property
    def theta_dim(self) -> int:
        """Two meta-parameters: log initial and log final learning rate."""
        return 2

    def initial_theta(self) -> Tensor:
        """``(−4, −4)`` in the paper."""
        return torch.tensor(self.theta0, device=self.device)

    def init_state(self, num: int, *, generator: torch.Generator) -> State:
        """``x_0 = (1, 1)`` for every particle."""
        return {"x": torch.ones(num, 2, device=self.device)}

    @staticmethod
    def objective(x: Tensor) -> Tensor:
        """``f(x)`` for a batch ``[P, 2]``."""
        x0, x1 = x[:, 0], x[:, 1]
        return (
            torch.sqrt(x0**2 + 5.0)
            - math.sqrt(5.0)
            + torch.sin(x1) ** 2 * torch.exp(-5.0 * x0**2)
            + 0.25 * torch.abs(x1 - 100.0)
        )

    @staticmethod
    def objective_grad(x: Tensor) -> Tensor:
        """Closed-form ``∇f(x)`` (differentiable, so TBPTT can backprop through it)."""
        x0, x1 = x[:, 0], x[:, 1]
        bump = torch.exp(-5.0 * x0**2)
        g0 = x0 / torch.sqrt(x0**2 + 5.0) - 10.0 * x0 * torch.sin(x1) ** 2 * bump
        g1 = torch.sin(2.0 * x1) * bump + 0.25 * torch.sign(x1 - 100.0)
        return torch.stack([g0, g1], dim=1)

    def step(
        self, state: State, theta: Tensor, t: Tensor, data: State | None
    ) -> tuple[State, Tensor]:
        """One SGD step with the scheduled learning rate; loss ``f(x_{t+1})``."""
        x = state["x"]
        frac = (t.to(x.dtype) / self.length).unsqueeze(1)
        lr = torch.exp(theta[:, :1]) * (1.0 - frac) + torch.exp(theta[:, 1:2]) * frac
        x = x - lr * (self.objective_grad(x) + self.weight_decay * x)
        return {"x": x}, self.objective(x)


class LinearQuadratic(UnrolledSystem):
    """``s_{t+1} = A s_t + θ``, ``L_t = ½‖s_{t+1} − 1‖²``, ``A = aI + cU``, ``s_0 = 0``.

    The full meta-loss is quadratic in θ, so its Gaussian-smoothed gradient equals its
    exact gradient (:func:`linear_quadratic_loss` gives both in closed form).
    """

    def __init__(
        self,
        *,
        dim: int = 3,
        horizon: int = 12,
        decay: float = 0.9,
        coupling: float = -0.5,
        theta0: float = 0.3,
        device: torch.device | str = "cpu",
    ) -> None:
        if dim < 1 or horizon < 1:
            raise ConfigError(f"linear-quadratic needs dim, horizon >= 1, got {dim}, {horizon}")
        self.device = torch.device(device)
        self.dim, self.length, self.theta0 = dim, horizon, theta0
        self.horizon = horizon
        self.a = _shift_matrix(dim, decay, coupling, self.device)

    @property
    def theta_dim(self) -> int:
        """``dim`` meta-parameters (a constant drive per state coordinate)."""
        return self.dim

    def initial_theta(self) -> Tensor:
        """``θ₀`` in every coordinate."""
        return torch.full((self.dim,), self.theta0, device=self.device)

    def init_state(self, num: int, *, generator: torch.Generator) -> State:
        """``s_0 = 0``."""
        return {"s": torch.zeros(num, self.dim, device=self.device)}

    def step(
        self, state: State, theta: Tensor, t: Tensor, data: State | None
    ) -> tuple[State, Tensor]:
        """One linear step; loss ``½‖s − 1‖²`` of the new state."""
        s = state["s"] @ self.a.T + theta
        return {"s": s}, 0.5 * ((s - 1.0) ** 2).sum(dim=1)


def linear_quadratic_loss(system: LinearQuadratic, theta: Tensor) -> tuple[float, Tensor]:
    """Closed-form full-episode loss and gradient of :class:`LinearQuadratic` (float64).

    ``s_t = M_t θ`` with ``M_t = Σ_{i<t} A^i``, so ``L = Σ_t ½‖M_t θ − 1‖²`` and
    ``∇L = Σ_t M_tᵀ (M_t θ − 1)``.
    """
    a = system.a.double().cpu()
    th = theta.double().cpu()
    m = torch.zeros_like(a)
    power = torch.eye(system.dim, dtype=a.dtype)
    loss, grad = 0.0, torch.zeros_like(th)
    for _ in range(system.length):
        m = m + power
        power = power @ a
        residual = m @ th - 1.0
        loss += 0.5 * float(residual @ residual)
        grad = grad + m.T @ residual
    return loss, grad
