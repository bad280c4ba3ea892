"""Gradient estimators for unrolled computation graphs and learned optimizers.

Implements full ES, truncated ES, PES (Vicol et al. 2021), TBPTT and full BPTT over a
common :class:`UnrolledSystem` interface, the PES paper's toy systems and experiments.

Example:
    >>> import torch
    >>> from metalab.lopt import PES, InfluenceBalancing, meta_train
    >>> system = InfluenceBalancing()
    >>> result = meta_train(system, PES(pairs=10, sigma=0.1, truncation=1), steps=5,
    ...     optimizer=lambda p: torch.optim.SGD(p, lr=1e-4),
    ...     generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metalab.core.lazy import lazy_exports

# module -> names; imported on first use so that `metalab lopt --help` does not import torch
_EXPORTS = {
    "backprop": ["TBPTT", "FullBPTT", "FullBPTTState", "TBPTTState"],
    "base": ["Estimate", "GradientEstimator"],
    "es": ["PES", "FullES", "FullESState", "PESState", "TruncatedES", "TruncatedESState"],
    "mlp_lopt": ["MLPLOptShapes", "Segments", "init_mlp_lopt", "mlp_lopt_step"],
    "registry": [
        "estimator_names",
        "estimator_resolver",
        "make_estimator",
        "make_system",
        "system_names",
        "system_resolver",
    ],
    "systems": ["Layout", "State", "UnrolledSystem", "Window", "clean_losses", "unroll"],
    "tasks": [
        "DigitsMLP",
        "LearnedOptimizerSystem",
        "ScheduledSGDSystem",
        "load_digits_tensors",
        "load_mnist_split",
    ],
    "toy_systems": [
        "InfluenceBalancing",
        "LinearQuadratic",
        "ToyRegression",
        "linear_quadratic_loss",
    ],
    "training": [
        "EstimateReport",
        "EstimateStats",
        "MetaTrainResult",
        "estimate_on_system",
        "estimate_statistics",
        "full_meta_loss",
        "meta_train",
    ],
}

__all__ = [
    "PES",
    "TBPTT",
    "DigitsMLP",
    "Estimate",
    "EstimateReport",
    "EstimateStats",
    "FullBPTT",
    "FullBPTTState",
    "FullES",
    "FullESState",
    "GradientEstimator",
    "InfluenceBalancing",
    "Layout",
    "LearnedOptimizerSystem",
    "LinearQuadratic",
    "MLPLOptShapes",
    "MetaTrainResult",
    "PESState",
    "ScheduledSGDSystem",
    "Segments",
    "State",
    "TBPTTState",
    "ToyRegression",
    "TruncatedES",
    "TruncatedESState",
    "UnrolledSystem",
    "Window",
    "clean_losses",
    "estimate_on_system",
    "estimate_statistics",
    "estimator_names",
    "estimator_resolver",
    "full_meta_loss",
    "init_mlp_lopt",
    "linear_quadratic_loss",
    "load_digits_tensors",
    "load_mnist_split",
    "make_estimator",
    "make_system",
    "meta_train",
    "mlp_lopt_step",
    "system_names",
    "system_resolver",
    "unroll",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # static re-exports for type checkers and IDEs
    from metalab.lopt.backprop import TBPTT, FullBPTT, FullBPTTState, TBPTTState
    from metalab.lopt.base import Estimate, GradientEstimator
    from metalab.lopt.es import PES, FullES, FullESState, PESState, TruncatedES, TruncatedESState
    from metalab.lopt.mlp_lopt import MLPLOptShapes, Segments, init_mlp_lopt, mlp_lopt_step
    from metalab.lopt.registry import (
        estimator_names,
        estimator_resolver,
        make_estimator,
        make_system,
        system_names,
        system_resolver,
    )
    from metalab.lopt.systems import Layout, State, UnrolledSystem, Window, clean_losses, unroll
    from metalab.lopt.tasks import (
        DigitsMLP,
        LearnedOptimizerSystem,
        ScheduledSGDSystem,
        load_digits_tensors,
        load_mnist_split,
    )
    from metalab.lopt.toy_systems import (
        InfluenceBalancing,
        LinearQuadratic,
        ToyRegression,
        linear_quadratic_loss,
    )
    from metalab.lopt.training import (
        EstimateReport,
        EstimateStats,
        MetaTrainResult,
        estimate_on_system,
        estimate_statistics,
        full_meta_loss,
        meta_train,
    )
