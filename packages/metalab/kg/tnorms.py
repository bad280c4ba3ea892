"""Fuzzy-logic connectives of CQD: t-norms, their dual t-conorms and negation.

CQD (Arakelyan et al. 2021, Sec. 3, Eq. 3) scores a conjunction of atoms with a t-norm ⊤
and a disjunction with a t-conorm ⊥ over truth values φ ∈ [0, 1] (the sigmoid of the link
predictor's score). Negation is ``1 − φ`` (CQD^A, Arakelyan et al. 2023). The three
classical continuous t-norms are registered in :data:`tnorm_resolver`:

========== =================== ===============================
name       ⊤(a, b)             dual ⊥(a, b) = 1 − ⊤(1 − a, 1 − b)
========== =================== ===============================
godel      ``min(a, b)``       ``max(a, b)``
product    ``a · b``           ``a + b − a · b``
lukasiewicz ``max(0, a+b−1)``  ``min(1, a + b)``
========== =================== ===============================

All are commutative, associative, monotone, have 1 as identity (⊥: 0) and are tested
against these laws with hypothesis.
"""

from __future__ import annotations

import torch
from class_resolver import ClassResolver
from torch import Tensor

from metalab.core.errors import UnknownNameError

__all__ = [
    "Godel",
    "Lukasiewicz",
    "Product",
    "TNorm",
    "make_tnorm",
    "negation",
    "tnorm_names",
    "tnorm_resolver",
]


class TNorm:
    """A t-norm ``⊤`` with its dual t-conorm ``⊥`` (both elementwise on tensors)."""

    name = "tnorm"

    def tnorm(self, a: Tensor, b: Tensor) -> Tensor:
        """``a ⊤ b``."""
        raise NotImplementedError

    def tconorm(self, a: Tensor, b: Tensor) -> Tensor:
        """``a ⊥ b`` (the De Morgan dual ``1 − (1 − a) ⊤ (1 − b)``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Godel(TNorm):
    """Gödel (minimum) t-norm; its t-conorm is the maximum."""

    name = "godel"

    def tnorm(self, a: Tensor, b: Tensor) -> Tensor:
        """``min(a, b)``."""
        return torch.minimum(a, b)

    def tconorm(self, a: Tensor, b: Tensor) -> Tensor:
        """``max(a, b)``."""
        return torch.maximum(a, b)


class Product(TNorm):
    """Product t-norm; its t-conorm is the probabilistic sum (CQD's best, Table 3)."""

    name = "product"

    def tnorm(self, a: Tensor, b: Tensor) -> Tensor:
        """``a · b``."""
        return a * b

    def tconorm(self, a: Tensor, b: Tensor) -> Tensor:
        """``a + b − a · b``."""
        return a + b - a * b


class Lukasiewicz(TNorm):
    """Łukasiewicz t-norm ``max(0, a + b − 1)``; t-conorm the bounded sum ``min(1, a + b)``."""

    name = "lukasiewicz"

    def tnorm(self, a: Tensor, b: Tensor) -> Tensor:
        """``max(0, a + b − 1)``."""
        return torch.clamp(a + b - 1.0, min=0.0)

    def tconorm(self, a: Tensor, b: Tensor) -> Tensor:
        """``min(1, a + b)``."""
        return torch.clamp(a + b, max=1.0)


def negation(a: Tensor) -> Tensor:
    """Standard fuzzy negation ``1 − a`` (CQD^A's ¬)."""
    return 1.0 - a


tnorm_resolver: ClassResolver[TNorm] = ClassResolver([Godel, Product, Lukasiewicz], base=TNorm)


def tnorm_names() -> list[str]:
    """Names accepted by :func:`make_tnorm`."""
    return sorted(cls.name for cls in tnorm_resolver)


def make_tnorm(name: str) -> TNorm:
    """The t-norm called ``name`` (``godel``/``min``, ``product``/``prod``, ``lukasiewicz``).

    Raises:
        UnknownNameError: ``name`` is not registered (close names are suggested).
    """
    alias = {"min": "godel", "prod": "product", "luk": "lukasiewicz"}.get(name.lower(), name)
    if alias.lower() not in tnorm_names():
        raise UnknownNameError("t-norm", name, tnorm_names())
    return tnorm_resolver.make(alias.lower())
