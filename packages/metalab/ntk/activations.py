"""Activations of the two-layer NTK model, with their derivatives, in a name registry.

Nitanda & Suzuki (2021), Assumption (A1), ask for a smooth activation with bounded
``σ''`` (sigmoid, tanh, swish ``u / (1 + e^{−su})``); ReLU is kept for comparison (its
NTK has a closed form). The derivative is written out so the batched SGD step needs no
autograd; :func:`torch.func.grad` checks it in the tests.
"""

from __future__ import annotations

import torch
from class_resolver import ClassResolver
from torch import Tensor

from metalab.core.errors import ConfigError, UnknownNameError

__all__ = [
    "Activation",
    "ReLU",
    "Sigmoid",
    "Swish",
    "Tanh",
    "activation_names",
    "activation_resolver",
    "make_activation",
]


class Activation:
    """An elementwise activation ``σ`` with its derivative ``σ'``."""

    name = "activation"
    smooth = True

    def __call__(self, u: Tensor) -> Tensor:
        """``σ(u)``."""
        raise NotImplementedError

    def derivative(self, u: Tensor) -> Tensor:
        """``σ'(u)``."""
        raise NotImplementedError

    def value_and_derivative(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``(σ(u), σ'(u))`` sharing work where possible (the SGD hot path calls this)."""
        return self(u), self.derivative(u)

    def describe(self) -> str:
        """Short label, e.g. ``swish(s=20)``."""
        return self.name


class Swish(Activation):
    """``σ(u) = u · sigmoid(s u)``; smooth, and ReLU as ``s → ∞`` (paper, Corollary 2)."""

    name = "swish"

    def __init__(self, sharpness: float = 20.0) -> None:
        if not sharpness > 0:
            raise ConfigError(f"swish sharpness must be positive, got {sharpness}")
        self.sharpness = float(sharpness)

    def __call__(self, u: Tensor) -> Tensor:
        """``σ(u)``."""
        return u * torch.sigmoid(self.sharpness * u)

    def derivative(self, u: Tensor) -> Tensor:
        """``σ'(u)``."""
        return self.value_and_derivative(u)[1]

    def value_and_derivative(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``(σ(u), σ'(u))``."""
        z = self.sharpness * u
        sig = torch.sigmoid(z)
        return u * sig, sig * (1 + z * (1 - sig))

    def describe(self) -> str:
        """Short label."""
        return f"swish(s={self.sharpness:g})"


class Tanh(Activation):
    """``σ = tanh``."""

    name = "tanh"

    def __call__(self, u: Tensor) -> Tensor:
        """``σ(u)``."""
        return torch.tanh(u)

    def derivative(self, u: Tensor) -> Tensor:
        """``σ'(u)``."""
        return 1 - torch.tanh(u) ** 2


class Sigmoid(Activation):
    """``σ = 1 / (1 + e^{−u})``."""

    name = "sigmoid"

    def __call__(self, u: Tensor) -> Tensor:
        """``σ(u)``."""
        return torch.sigmoid(u)

    def derivative(self, u: Tensor) -> Tensor:
        """``σ'(u)``."""
        sig = torch.sigmoid(u)
        return sig * (1 - sig)


class ReLU(Activation):
    """``σ(u) = max(u, 0)``: outside Assumption (A1), kept as the comparison case."""

    name = "relu"
    smooth = False

    def __call__(self, u: Tensor) -> Tensor:
        """``σ(u)``."""
        return torch.clamp_min(u, 0)

    def derivative(self, u: Tensor) -> Tensor:
        """``σ'(u)``."""
        return (u > 0).to(u.dtype)


activation_resolver: ClassResolver[Activation] = ClassResolver(
    [Swish, Tanh, Sigmoid, ReLU], base=Activation
)


def activation_names() -> list[str]:
    """Names accepted by :func:`make_activation`."""
    return sorted(cls.name for cls in activation_resolver)


def make_activation(name: str, *, sharpness: float | None = None) -> Activation:
    """Build the activation called ``name`` (``sharpness`` applies to swish only).

    Raises:
        UnknownNameError: ``name`` is not registered (close names are suggested).
        ConfigError: ``sharpness`` given for an activation that has none, or not positive.
    """
    try:
        cls = activation_resolver.lookup(name)
    except (KeyError, ValueError):
        raise UnknownNameError("activation", name, activation_names()) from None
    if cls is Swish:
        return Swish() if sharpness is None else Swish(sharpness)
    if sharpness is not None:
        raise ConfigError(f"activation {name!r} takes no sharpness (only swish does)")
    return cls()
