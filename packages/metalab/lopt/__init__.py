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
    "mlp_lopt": ["MLPLOptShapes", "init_mlp_lopt", "mlp_lopt_step"],
    "segments": ["Segments"],
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
    "arch_mlp": ["MLPArch"],
    "arch_adam_mlp": ["AdamMLPArch"],
    "interfaces": ["LossFeatures", "OptimizerArch", "Task", "TaskFamily"],
    "arch_hierarchical": ["HierarchicalArch", "HierarchicalShapes"],
    "arch_registry": ["arch_class", "arch_names", "arch_resolver", "make_arch", "register_arch"],
    "weights": [
        "DEFAULT_WEIGHTS_PATH",
        "LoptWeights",
        "load_weights",
        "make_provenance",
        "save_weights",
    ],
    "optimizer": ["LearnedOptimizer"],
    "task_zoo": [
        "ConvTask",
        "DataSplits",
        "MLPTask",
        "ModuleTask",
        "QuadraticTask",
        "load_dataset",
    ],
    "task_families": [
        "HELD_OUT_NAMES",
        "ConvDigitsFamily",
        "GridFamily",
        "MLPDigitsFamily",
        "MLPMnistFamily",
        "MixedFamily",
        "QuadraticFamily",
        "TabularFamily",
        "family_names",
        "family_resolver",
        "held_out_tasks",
        "make_family",
        "task_set",
    ],
    "baselines": [
        "AdamArch",
        "SGDMArch",
        "BASELINE_ARCHS",
        "baseline_names",
        "make_baseline",
        "with_learning_rates",
    ],
    "evaluation": [
        "DEFAULT_GRIDS",
        "BaselineResult",
        "EvaluationReport",
        "TaskResult",
        "TrainCurves",
        "TunedBaseline",
        "evaluate",
        "evaluate_task",
        "plot_speedup_fraction",
        "speedup",
        "train_task",
        "tune_baseline",
    ],
    "meta_system": ["TaskTrainingSystem", "sample_log_uniform", "evaluate_thetas"],
    "meta_training": [
        "MetaTrainConfig",
        "LoptTrainingResult",
        "meta_train_lopt",
        "build_meta_system",
        "build_estimator",
        "make_outer_optimizer",
        "equivalent_command",
    ],
    "arch_init": ["mlp_theta_like_momentum", "make_init_theta"],
}

__all__ = [
    "BASELINE_ARCHS",
    "DEFAULT_GRIDS",
    "DEFAULT_WEIGHTS_PATH",
    "HELD_OUT_NAMES",
    "PES",
    "TBPTT",
    "AdamArch",
    "AdamMLPArch",
    "BaselineResult",
    "ConvDigitsFamily",
    "ConvTask",
    "DataSplits",
    "DigitsMLP",
    "Estimate",
    "EstimateReport",
    "EstimateStats",
    "EvaluationReport",
    "FullBPTT",
    "FullBPTTState",
    "FullES",
    "FullESState",
    "GradientEstimator",
    "GridFamily",
    "HierarchicalArch",
    "HierarchicalShapes",
    "InfluenceBalancing",
    "Layout",
    "LearnedOptimizer",
    "LearnedOptimizerSystem",
    "LinearQuadratic",
    "LoptTrainingResult",
    "LoptWeights",
    "LossFeatures",
    "MLPArch",
    "MLPDigitsFamily",
    "MLPLOptShapes",
    "MLPMnistFamily",
    "MLPTask",
    "MetaTrainConfig",
    "MetaTrainResult",
    "MixedFamily",
    "ModuleTask",
    "OptimizerArch",
    "PESState",
    "QuadraticFamily",
    "QuadraticTask",
    "SGDMArch",
    "ScheduledSGDSystem",
    "Segments",
    "State",
    "TBPTTState",
    "TabularFamily",
    "Task",
    "TaskFamily",
    "TaskResult",
    "TaskTrainingSystem",
    "ToyRegression",
    "TrainCurves",
    "TruncatedES",
    "TruncatedESState",
    "TunedBaseline",
    "UnrolledSystem",
    "Window",
    "arch_class",
    "arch_names",
    "arch_resolver",
    "baseline_names",
    "build_estimator",
    "build_meta_system",
    "clean_losses",
    "equivalent_command",
    "estimate_on_system",
    "estimate_statistics",
    "estimator_names",
    "estimator_resolver",
    "evaluate",
    "evaluate_task",
    "evaluate_thetas",
    "family_names",
    "family_resolver",
    "full_meta_loss",
    "held_out_tasks",
    "init_mlp_lopt",
    "linear_quadratic_loss",
    "load_dataset",
    "load_digits_tensors",
    "load_mnist_split",
    "load_weights",
    "make_arch",
    "make_baseline",
    "make_estimator",
    "make_family",
    "make_init_theta",
    "make_outer_optimizer",
    "make_provenance",
    "make_system",
    "meta_train",
    "meta_train_lopt",
    "mlp_lopt_step",
    "mlp_theta_like_momentum",
    "plot_speedup_fraction",
    "register_arch",
    "sample_log_uniform",
    "save_weights",
    "speedup",
    "system_names",
    "system_resolver",
    "task_set",
    "train_task",
    "tune_baseline",
    "unroll",
    "with_learning_rates",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # static re-exports for type checkers and IDEs
    from metalab.lopt.arch_adam_mlp import AdamMLPArch
    from metalab.lopt.arch_hierarchical import HierarchicalArch, HierarchicalShapes
    from metalab.lopt.arch_init import make_init_theta, mlp_theta_like_momentum
    from metalab.lopt.arch_mlp import MLPArch
    from metalab.lopt.arch_registry import (
        arch_class,
        arch_names,
        arch_resolver,
        make_arch,
        register_arch,
    )
    from metalab.lopt.backprop import TBPTT, FullBPTT, FullBPTTState, TBPTTState
    from metalab.lopt.base import Estimate, GradientEstimator
    from metalab.lopt.baselines import (
        BASELINE_ARCHS,
        AdamArch,
        SGDMArch,
        baseline_names,
        make_baseline,
        with_learning_rates,
    )
    from metalab.lopt.es import PES, FullES, FullESState, PESState, TruncatedES, TruncatedESState
    from metalab.lopt.evaluation import (
        DEFAULT_GRIDS,
        BaselineResult,
        EvaluationReport,
        TaskResult,
        TrainCurves,
        TunedBaseline,
        evaluate,
        evaluate_task,
        plot_speedup_fraction,
        speedup,
        train_task,
        tune_baseline,
    )
    from metalab.lopt.interfaces import LossFeatures, OptimizerArch, Task, TaskFamily
    from metalab.lopt.meta_system import TaskTrainingSystem, evaluate_thetas, sample_log_uniform
    from metalab.lopt.meta_training import (
        LoptTrainingResult,
        MetaTrainConfig,
        build_estimator,
        build_meta_system,
        equivalent_command,
        make_outer_optimizer,
        meta_train_lopt,
    )
    from metalab.lopt.mlp_lopt import MLPLOptShapes, init_mlp_lopt, mlp_lopt_step
    from metalab.lopt.optimizer import LearnedOptimizer
    from metalab.lopt.registry import (
        estimator_names,
        estimator_resolver,
        make_estimator,
        make_system,
        system_names,
        system_resolver,
    )
    from metalab.lopt.segments import Segments
    from metalab.lopt.systems import Layout, State, UnrolledSystem, Window, clean_losses, unroll
    from metalab.lopt.task_families import (
        HELD_OUT_NAMES,
        ConvDigitsFamily,
        GridFamily,
        MixedFamily,
        MLPDigitsFamily,
        MLPMnistFamily,
        QuadraticFamily,
        TabularFamily,
        family_names,
        family_resolver,
        held_out_tasks,
        make_family,
        task_set,
    )
    from metalab.lopt.task_zoo import (
        ConvTask,
        DataSplits,
        MLPTask,
        ModuleTask,
        QuadraticTask,
        load_dataset,
    )
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
    from metalab.lopt.weights import (
        DEFAULT_WEIGHTS_PATH,
        LoptWeights,
        load_weights,
        make_provenance,
        save_weights,
    )
