"""The shared training core used by every research subpackage.

Devices, seeds, run folders, checkpoints, figures, populations, distributed helpers, a
training loop and the claims runner.

Names are re-exported lazily so that ``import metalab.core.errors`` (used by the CLI at
start-up) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metalab.core.lazy import lazy_exports

_EXPORTS = {
    "errors": [
        "ConfigError",
        "DeviceError",
        "ExperimentFileError",
        "MetalabError",
        "UnknownNameError",
        "closest_names",
        "first_line",
    ],
    "device": ["describe_device", "resolve_device"],
    "seeding": ["derive_seed", "make_generator", "seed_everything"],
    "runs": ["Run", "resolve_runs_root"],
    "checkpoint": ["atomic_write_bytes", "atomic_write_json", "load_checkpoint", "save_checkpoint"],
    "progress": ["progress_enabled"],  # the function progress(): metalab.core.progress
    "stats": ["LogLogFit", "fit_loglog"],
    "figures": ["plot_curves", "plot_heatmap", "plot_loglog_fit"],
    "population": [
        "antithetic_perturbations",
        "module_params",
        "population_forward",
        "population_loss",
        "population_size",
        "stack_params",
    ],
    "distributed": [
        "DistContext",
        "all_reduce_mean",
        "all_reduce_sum",
        "init_distributed",
        "is_rank0",
        "rank0_print",
        "shard_range",
        "shutdown_distributed",
    ],
    "training": [
        "EpochRecord",
        "accuracy",
        "evaluate_loss",
        "random_shift",
        "train_supervised",
    ],
    "config": ["build_config", "config_to_dict"],
    "specs": ["Check", "Spec", "discover_specs", "find_spec", "load_spec", "resolve_params"],
    "claims": [
        "CheckResult",
        "Outcome",
        "RunConfig",
        "evaluate_checks",
        "run_spec",
        "runner_params",
    ],
    "environment": ["environment_info", "git_commit"],
}

__all__ = [
    "Check",
    "CheckResult",
    "ConfigError",
    "DeviceError",
    "DistContext",
    "EpochRecord",
    "ExperimentFileError",
    "LogLogFit",
    "MetalabError",
    "Outcome",
    "Run",
    "RunConfig",
    "Spec",
    "UnknownNameError",
    "accuracy",
    "all_reduce_mean",
    "all_reduce_sum",
    "antithetic_perturbations",
    "atomic_write_bytes",
    "atomic_write_json",
    "build_config",
    "closest_names",
    "config_to_dict",
    "derive_seed",
    "describe_device",
    "discover_specs",
    "environment_info",
    "evaluate_checks",
    "evaluate_loss",
    "find_spec",
    "first_line",
    "fit_loglog",
    "git_commit",
    "init_distributed",
    "is_rank0",
    "load_checkpoint",
    "load_spec",
    "make_generator",
    "module_params",
    "plot_curves",
    "plot_heatmap",
    "plot_loglog_fit",
    "population_forward",
    "population_loss",
    "population_size",
    "progress_enabled",
    "random_shift",
    "rank0_print",
    "resolve_device",
    "resolve_params",
    "resolve_runs_root",
    "run_spec",
    "runner_params",
    "save_checkpoint",
    "seed_everything",
    "shard_range",
    "shutdown_distributed",
    "stack_params",
    "train_supervised",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # static re-exports for type checkers and IDEs
    from metalab.core.checkpoint import (
        atomic_write_bytes,
        atomic_write_json,
        load_checkpoint,
        save_checkpoint,
    )
    from metalab.core.claims import (
        CheckResult,
        Outcome,
        RunConfig,
        evaluate_checks,
        run_spec,
        runner_params,
    )
    from metalab.core.config import build_config, config_to_dict
    from metalab.core.device import describe_device, resolve_device
    from metalab.core.distributed import (
        DistContext,
        all_reduce_mean,
        all_reduce_sum,
        init_distributed,
        is_rank0,
        rank0_print,
        shard_range,
        shutdown_distributed,
    )
    from metalab.core.environment import environment_info, git_commit
    from metalab.core.errors import (
        ConfigError,
        DeviceError,
        ExperimentFileError,
        MetalabError,
        UnknownNameError,
        closest_names,
        first_line,
    )
    from metalab.core.figures import plot_curves, plot_heatmap, plot_loglog_fit
    from metalab.core.population import (
        antithetic_perturbations,
        module_params,
        population_forward,
        population_loss,
        population_size,
        stack_params,
    )
    from metalab.core.progress import progress_enabled
    from metalab.core.runs import Run, resolve_runs_root
    from metalab.core.seeding import derive_seed, make_generator, seed_everything
    from metalab.core.specs import Check, Spec, discover_specs, find_spec, load_spec, resolve_params
    from metalab.core.stats import LogLogFit, fit_loglog
    from metalab.core.training import (
        EpochRecord,
        accuracy,
        evaluate_loss,
        random_shift,
        train_supervised,
    )
