"""Registries of estimators and unrolled systems: configs and the CLI name them by string.

``estimator_resolver.lookup("pes")`` gives :class:`~metalab.lopt.es.PES`; a misspelt name
raises :class:`~metalab.core.errors.UnknownNameError` with suggestions (through
:func:`make_estimator` / :func:`make_system`), and an option an estimator does not take
raises :class:`~metalab.core.errors.ConfigError`.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, TypeVar

from class_resolver import ClassResolver

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.lopt.backprop import TBPTT, FullBPTT
from metalab.lopt.base import GradientEstimator
from metalab.lopt.es import PES, FullES, TruncatedES
from metalab.lopt.systems import UnrolledSystem
from metalab.lopt.tasks import LearnedOptimizerSystem, ScheduledSGDSystem
from metalab.lopt.toy_systems import InfluenceBalancing, LinearQuadratic, ToyRegression

__all__ = [
    "estimator_names",
    "estimator_resolver",
    "make_estimator",
    "make_system",
    "system_names",
    "system_resolver",
]

T = TypeVar("T")

estimator_resolver: ClassResolver[GradientEstimator] = ClassResolver(
    [FullES, TruncatedES, PES, TBPTT, FullBPTT],
    base=GradientEstimator,  # type: ignore[type-abstract]
    synonyms={"bptt": FullBPTT, "es": FullES, "tes": TruncatedES},
)
system_resolver: ClassResolver[UnrolledSystem] = ClassResolver(
    [
        InfluenceBalancing,
        ToyRegression,
        LinearQuadratic,
        LearnedOptimizerSystem,
        ScheduledSGDSystem,
    ],
    base=UnrolledSystem,  # type: ignore[type-abstract]
)


def estimator_names() -> list[str]:
    """The canonical (dash-separated) names of the registered estimators."""
    return sorted(cls.name for cls in estimator_resolver)


def system_names() -> list[str]:
    """The dash-separated names of the registered systems."""
    return sorted(_dashed(cls.__name__) for cls in system_resolver)


def make_estimator(name: str, **options: Any) -> GradientEstimator:
    """Build the estimator called ``name`` with ``options`` (``None`` values are dropped)."""
    return _make(estimator_resolver, name, "estimator", estimator_names(), options)


def make_system(name: str, **options: Any) -> UnrolledSystem:
    """Build the unrolled system called ``name`` with ``options`` (``None`` values dropped)."""
    return _make(system_resolver, name, "system", system_names(), options)


def _make(resolver: ClassResolver[T], name: str, kind: str, known: list[str], options: Any) -> T:
    try:
        cls = resolver.lookup(name)
    except (KeyError, ValueError):
        raise UnknownNameError(kind, name, known) from None
    given = {k: v for k, v in options.items() if v is not None}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    extra = sorted(set(given) - accepted)
    if extra:
        takes = ", ".join(sorted(accepted))
        raise ConfigError(f"{kind} {name!r} does not take {', '.join(extra)}; it takes {takes}")
    return cls(**given)


def _dashed(camel: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", camel).lower()
