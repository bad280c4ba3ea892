"""Hand-designed optimizers as :class:`~metalab.lopt.interfaces.OptimizerArch` es.

SGD with momentum and Adam (Kingma & Ba 2015, Alg. 1) written as batched pure functions
whose weights ``θ`` are their hyperparameters in unconstrained coordinates, so a
learning-rate grid is a population of ``θ`` rows advanced in one call and ES/PES can tune
them like any learned optimizer (the "learnable-hyperparameter baselines" of Metz et al.
2020). Column 0 of ``θ`` is always ``log lr`` (see :func:`with_learning_rates`).

- :class:`SGDMArch`: ``θ = [log lr, logit μ]``; ``v ← μ v + g``, ``p ← p − lr v``
  (``torch.optim.SGD(momentum=μ)``).
- :class:`AdamArch`: ``θ = [log lr, logit β1, logit β2, log ε]``; bias-corrected moments,
  ``p ← p − lr m̂ / (√v̂ + ε)`` (``torch.optim.Adam``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import Tensor

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.lopt.interfaces import LossFeatures, OptimizerArch
from metalab.lopt.mlp_lopt import Segments
from metalab.lopt.systems import State

__all__ = [
    "BASELINE_ARCHS",
    "AdamArch",
    "SGDMArch",
    "baseline_names",
    "make_baseline",
    "with_learning_rates",
]


def _logit(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ConfigError(f"a momentum/β must lie strictly between 0 and 1, got {p}")
    return math.log(p) - math.log1p(-p)


def _log(x: float, what: str) -> float:
    if x <= 0:
        raise ConfigError(f"{what} must be > 0, got {x}")
    return math.log(x)


def _column(theta: Tensor, i: int) -> Tensor:
    return theta[:, i].unsqueeze(1)


class SGDMArch(OptimizerArch):
    """SGD with heavy-ball momentum; ``θ = [log lr, logit momentum]``.

    Args:
        lr: default learning rate of :meth:`init_theta`.
        momentum: default momentum of :meth:`init_theta`.
    """

    name = "sgdm"
    state_grad_powers = MappingProxyType({"velocity": 1})
    uses_validation_loss = False

    def __init__(self, lr: float = 0.1, momentum: float = 0.9) -> None:
        self.defaults = (_log(lr, "lr"), _logit(momentum))

    @property
    def theta_dim(self) -> int:
        """2: log learning rate, logit momentum."""
        return 2

    @staticmethod
    def theta(
        lr: float = 0.1, momentum: float = 0.9, *, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """``θ`` ``[2]`` for these hyperparameters."""
        return torch.tensor([_log(lr, "lr"), _logit(momentum)], dtype=dtype)

    def init_theta(self, *, generator: torch.Generator) -> Tensor:
        """The default hyperparameters (deterministic; ``generator`` is unused)."""
        return torch.tensor(self.defaults)

    def init_state(self, params: Tensor, segments: Segments) -> State:
        """Zero velocity ``[P, N]``."""
        return {"velocity": torch.zeros_like(params)}

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
        """``v ← μ v + g``; ``p ← p − lr · v`` for every particle."""
        lr, mu = torch.exp(_column(theta, 0)), torch.sigmoid(_column(theta, 1))
        velocity = mu * state["velocity"] + grads
        return params - lr * velocity, {"velocity": velocity}


class AdamArch(OptimizerArch):
    """Adam; ``θ = [log lr, logit β1, logit β2, log ε]``.

    The bias correction uses the state's own step counters, one per tensor (so it does not
    depend on the caller's ``t`` convention, restarts with :meth:`init_state`, and — as
    ``torch.optim.Adam`` counts per parameter — is right for a tensor that
    ``LearnedOptimizer`` first steps late, e.g. a head that joins the loss later).

    Args:
        lr, beta1, beta2, eps: defaults of :meth:`init_theta` (``torch.optim.Adam``'s).
    """

    name = "adam"
    state_grad_powers = MappingProxyType({"m": 1, "v": 2})
    uses_validation_loss = False

    def __init__(
        self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        self.defaults = (_log(lr, "lr"), _logit(beta1), _logit(beta2), _log(eps, "eps"))

    @property
    def theta_dim(self) -> int:
        """4: log lr, logit β1, logit β2, log ε."""
        return 4

    @staticmethod
    def theta(
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``θ`` ``[4]`` for these hyperparameters."""
        values = [_log(lr, "lr"), _logit(beta1), _logit(beta2), _log(eps, "eps")]
        return torch.tensor(values, dtype=dtype)

    def init_theta(self, *, generator: torch.Generator) -> Tensor:
        """The default hyperparameters (deterministic; ``generator`` is unused)."""
        return torch.tensor(self.defaults)

    def init_state(self, params: Tensor, segments: Segments) -> State:
        """Zero moments ``[P, N]`` and zero per-tensor step counters ``[P, S]``."""
        zeros = torch.zeros_like(params)
        counts = params.new_zeros(params.shape[0], len(segments.sizes))
        return {"m": zeros, "v": zeros.clone(), "count": counts}

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
        """Kingma & Ba (2015), Algorithm 1, for every particle."""
        lr, eps = torch.exp(_column(theta, 0)), torch.exp(_column(theta, 3))
        beta1, beta2 = torch.sigmoid(_column(theta, 1)), torch.sigmoid(_column(theta, 2))
        count = state["count"] + 1
        m = beta1 * state["m"] + (1 - beta1) * grads
        v = beta2 * state["v"] + (1 - beta2) * grads * grads
        # per tensor [P, S], then per entry [P, N]: each entry's tensor's bias correction
        correction1 = (1 - beta1**count)[:, segments.index]
        root_correction2 = (1 - beta2**count).sqrt()[:, segments.index]
        denom = v.sqrt() / root_correction2 + eps
        new_params = params - (lr / correction1) * m / denom
        return new_params, {"m": m, "v": v, "count": count}


BASELINE_ARCHS: list[type[OptimizerArch]] = [SGDMArch, AdamArch]
_BY_NAME = {cls.name: cls for cls in BASELINE_ARCHS}


def baseline_names() -> list[str]:
    """``["adam", "sgdm"]``."""
    return sorted(_BY_NAME)


def make_baseline(name: str) -> OptimizerArch:
    """A baseline arch by name (``"adam"`` or ``"sgdm"``) with its default hyperparameters."""
    if name not in _BY_NAME:
        raise UnknownNameError("baseline optimizer", name, _BY_NAME)
    return _BY_NAME[name]()


def with_learning_rates(theta: Tensor, lrs: Sequence[float] | Tensor) -> Tensor:
    """A population ``[G, D]``: ``theta`` ``[D]`` repeated with column 0 set to ``log lr``."""
    lrs_t = torch.as_tensor(lrs, dtype=theta.dtype, device=theta.device).flatten()
    if lrs_t.numel() == 0 or bool((lrs_t <= 0).any()):
        raise ConfigError(f"a learning-rate grid needs positive values, got {lrs_t.tolist()}")
    rows = theta.reshape(1, -1).repeat(len(lrs_t), 1)
    rows[:, 0] = torch.log(lrs_t)
    return rows
