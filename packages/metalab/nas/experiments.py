"""Experiment runners (``experiments/nas/*.toml``): DARTS-PT claims against ground truth.

Every runner searches with DARTS (or fixed α) for several seeds on sklearn digits, selects
cells by α magnitude and/or perturbation (Wang et al. 2021), and looks the selected cells
up in a ground-truth table (the shipped ``skip-conv3`` table unless ``table`` names
another), reporting their true accuracy and rank among all cells of the space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metalab.core.claims import RunConfig, runner_params
from metalab.core.config import at_least, non_negative, nonempty, positive
from metalab.core.errors import ConfigError
from metalab.core.parallel import StageJob, default_workers, run_stages, torch_threads
from metalab.core.runs import Run
from metalab.nas.data import DigitsSplits, load_digits_splits
from metalab.nas.figures import plot_alpha_per_edge, plot_selected_accuracy
from metalab.nas.search import SearchConfig
from metalab.nas.selection import PerturbationSelection
from metalab.nas.table import BenchTable, load_table
from metalab.nas.trajectory import Trajectory, follow_search

__all__ = ["NasParams", "pt_fixed_alpha", "pt_vs_magnitude", "skip_domination"]


@dataclass
class NasParams:
    """Parameters shared by the three NAS experiments."""

    search: SearchConfig = field(default_factory=SearchConfig)
    table: str = ""  # "" = the shipped table of search.space
    seeds: list[int] = nonempty(lambda: [0, 1, 2])
    tune_epochs: int = non_negative(5)  # 0 = DARTS-PT without fine-tuning between edges
    tune_lr: float = positive(0.0025)
    # darts-skip-domination's PT checkpoints ([] = [search.epochs]); the runner checks they
    # lie in 1..search.epochs, a range no per-field bound can express
    pt_epochs: list[int] = field(default_factory=list)
    early_epoch: int = at_least(1, 5)
    split_seed: int = 0
    threads: int = non_negative(1)  # per process; 0 = leave torch's thread count
    # seeds searched at once; 0 = one per `threads` cores under the `metalab` command, one
    # process when called from Python (see metalab.core.parallel)
    workers: int = non_negative(0)


def _setup(config: RunConfig) -> tuple[NasParams, BenchTable]:
    p = config.typed(NasParams)
    table = load_table(p.table or p.search.space)
    if table.space.name != p.search.space:
        raise ConfigError(
            f"table {table.source} is for space {table.space.name}, not {p.search.space}"
        )
    recipe_split = table.meta.get("recipe", {}).get("split_seed", p.split_seed)
    if recipe_split != p.split_seed:
        raise ConfigError(f"split_seed {p.split_seed} differs from the table's {recipe_split}")
    if not p.seeds:
        raise ConfigError("params.seeds must list at least one seed")
    return p, table


@dataclass(frozen=True)
class _Searches:
    """One group of searches, a seed each: ``tag`` names their stages and metric lines."""

    tag: str
    pt_epochs: list[int]
    fixed_alpha: bool = False


def _trajectories(
    config: RunConfig, run: Run, p: NasParams, table: BenchTable, groups: list[_Searches]
) -> list[list[Trajectory]]:
    """Each group's trajectories (in ``p.seeds`` order), all seeds of all groups at once."""
    data = load_digits_splits(split_seed=p.split_seed, device=config.torch_device)
    pt = PerturbationSelection(tune_epochs=p.tune_epochs, tune_lr=p.tune_lr)
    jobs = [
        StageJob(
            f"{group.tag}-seed{seed}",
            _search_seed,
            (p.search, table, data),
            dict(
                seed=config.seed * 1000 + seed,
                pt_epochs=group.pt_epochs,
                pt=pt,
                fixed_alpha=group.fixed_alpha,
                device=config.torch_device,
                tag=group.tag,
            ),
        )
        for group in groups
        for seed in p.seeds
    ]
    workers = p.workers or default_workers(p.threads, config.torch_device)
    done = iter(run_stages(run, jobs, workers=workers, threads=p.threads))
    return [[Trajectory.from_dict(next(done)) for _ in p.seeds] for _ in groups]


def _search_seed(
    search: SearchConfig,
    table: BenchTable,
    data: DigitsSplits,
    *,
    tag: str,
    log: Callable[..., None],
    **options: Any,
) -> dict:
    """One seed's search as a stage (module level, so a worker process can run it)."""
    traj = follow_search(
        search, table, data, log=lambda step, **m: log(step, method=tag, **m), **options
    )
    return traj.to_dict()


def _stats(prefix: str, table: BenchTable, cells: list[str]) -> dict[str, float]:
    accs = [table.accuracy(c) for c in cells]
    ranks = [table.rank(c) for c in cells]
    return {
        f"{prefix}.acc_mean": float(np.mean(accs)),
        f"{prefix}.acc_min": float(np.min(accs)),
        f"{prefix}.rank_mean": float(np.mean(ranks)),
        f"{prefix}.rank_best": float(np.min(ranks)),
        f"{prefix}.regret_mean": table.best_accuracy - float(np.mean(accs)),
    }


def _figures(
    run: Run, table: BenchTable, trajs: list[Trajectory], *, label: str, magnitude: bool = True
) -> None:
    space = table.space
    plot_alpha_per_edge(
        run.figure_path(f"alpha_per_edge_{label}"),
        trajs[0].alphas,
        ops=space.ops,
        edges=space.edges,
        title=f"{label}: softmax(α) per edge (seed 0)",
    )
    epochs = list(range(1, len(trajs[0].magnitude_acc) + 1))
    curves = {}
    if magnitude:  # with α fixed uniform the magnitude cell is a tie-break, not a selection
        curves["magnitude"] = (epochs, np.mean([t.magnitude_acc for t in trajs], axis=0).tolist())
    if trajs[0].pt_epochs:
        curves["perturbation (DARTS-PT)"] = (
            trajs[0].pt_epochs,
            np.mean([t.pt_acc for t in trajs], axis=0).tolist(),
        )
    plot_selected_accuracy(
        run.figure_path(f"selected_accuracy_{label}"),
        curves,
        best=table.best_accuracy,
        title=f"{label}: true accuracy of the selected cell (mean of {len(trajs)} seeds)",
    )


def _table_metrics(table: BenchTable) -> dict[str, float]:
    return {"table.best_acc": table.best_accuracy, "table.cells": float(table.num_ranked)}


def _pt_vs_magnitude(
    config: RunConfig, run: Run, p: NasParams, table: BenchTable
) -> dict[str, float]:
    """Same supernets, magnitude vs perturbation selection (Wang et al. 2021, Tab. 1, 4)."""
    (trajs,) = _trajectories(config, run, p, table, [_Searches("darts", [p.search.epochs])])
    metrics = _table_metrics(table)
    metrics |= _stats("magnitude", table, [t.magnitude_cells[-1] for t in trajs])
    metrics |= _stats("perturbation", table, [t.pt_cells[-1] for t in trajs])
    metrics["pt_minus_magnitude_acc"] = (
        metrics["perturbation.acc_mean"] - metrics["magnitude.acc_mean"]
    )
    metrics["supernet_val_acc_mean"] = float(np.mean([t.val_acc[-1] for t in trajs]))
    metrics["pt_seconds_mean"] = float(np.mean([t.pt_seconds[-1] for t in trajs]))
    _figures(run, table, trajs, label="darts")
    return metrics


def _skip_domination(
    config: RunConfig, run: Run, p: NasParams, table: BenchTable
) -> dict[str, float]:
    """Skip connections take over α while the magnitude-selected cell gets worse (Sec. 3)."""
    if "skip_connect" not in table.space.ops:
        raise ConfigError(f"space {table.space.name} has no skip_connect")
    if not 1 <= p.early_epoch <= p.search.epochs:
        raise ConfigError(f"early_epoch must be in 1..{p.search.epochs}, got {p.early_epoch}")
    pt_epochs = p.pt_epochs or [p.search.epochs]
    outside = [e for e in pt_epochs if not 1 <= e <= p.search.epochs]
    if outside or len(set(pt_epochs)) < 2:
        raise ConfigError(
            f"pt_epochs must list at least two epochs in 1..{p.search.epochs} (DARTS-PT is "
            f"compared early vs late), got {pt_epochs}"
        )
    (trajs,) = _trajectories(config, run, p, table, [_Searches("darts", pt_epochs)])
    skip = table.space.ops.index("skip_connect")
    share = np.mean([np.asarray(t.alphas)[:, :, skip].mean(axis=1) for t in trajs], axis=0)
    mag = np.mean([t.magnitude_acc for t in trajs], axis=0)
    val = np.mean([t.val_acc for t in trajs], axis=0)
    pt_acc = np.mean([t.pt_acc for t in trajs], axis=0)
    early = p.early_epoch - 1
    skip_edges = [
        float(np.mean(np.argmax(np.asarray(t.alphas[-1]), axis=1) == skip)) for t in trajs
    ]
    metrics = _table_metrics(table) | {
        "skip_weight_early": float(share[early]),
        "skip_weight_final": float(share[-1]),
        "skip_weight_gain": float(share[-1] - share[early]),
        "skip_edge_frac_final": float(np.mean(skip_edges)),
        "supernet_val_early": float(val[early]),
        "supernet_val_final": float(val[-1]),
        "supernet_val_gain": float(val[-1] - val[early]),
        "magnitude.acc_early": float(mag[early]),
        "magnitude.acc_peak": float(mag.max()),
        "magnitude.acc_final": float(mag[-1]),
        "magnitude_acc_drop": float(mag.max() - mag[-1]),
        "perturbation.acc_first": float(pt_acc[0]),
        "perturbation.acc_final": float(pt_acc[-1]),
        "pt_acc_drop": float(pt_acc.max() - pt_acc[-1]),
        "pt_minus_magnitude_final": float(pt_acc[-1] - mag[-1]),
    }
    metrics |= _stats("magnitude", table, [t.magnitude_cells[-1] for t in trajs])
    metrics |= _stats("perturbation", table, [t.pt_cells[-1] for t in trajs])
    _figures(run, table, trajs, label="darts")
    return metrics


def _pt_fixed_alpha(
    config: RunConfig, run: Run, p: NasParams, table: BenchTable
) -> dict[str, float]:
    """Uniform α + perturbation selection vs DARTS's α-magnitude cell (Sec. 4.3, Tab. 4)."""
    darts, fixed = _trajectories(
        config,
        run,
        p,
        table,
        [_Searches("darts", []), _Searches("fixed-alpha", [p.search.epochs], fixed_alpha=True)],
    )
    metrics = _table_metrics(table)
    metrics |= _stats("darts", table, [t.magnitude_cells[-1] for t in darts])
    metrics |= _stats("fixed_alpha_pt", table, [t.pt_cells[-1] for t in fixed])
    metrics["fixed_minus_darts_acc"] = (
        metrics["fixed_alpha_pt.acc_mean"] - metrics["darts.acc_mean"]
    )
    _figures(run, table, darts, label="darts")
    _figures(run, table, fixed, label="fixed-alpha", magnitude=False)
    return metrics


_Impl = Callable[[RunConfig, Run, NasParams, BenchTable], dict[str, float]]


def _run(impl: _Impl, config: RunConfig, run: Run) -> dict[str, float]:
    p, table = _setup(config)
    with torch_threads(p.threads):
        return impl(config, run, p, table)


@runner_params(NasParams)
def pt_vs_magnitude(config: RunConfig, run: Run) -> dict[str, float]:
    """Experiment ``darts-pt-vs-magnitude`` (see :func:`_pt_vs_magnitude`)."""
    return _run(_pt_vs_magnitude, config, run)


@runner_params(NasParams)
def skip_domination(config: RunConfig, run: Run) -> dict[str, float]:
    """Experiment ``darts-skip-domination`` (see :func:`_skip_domination`)."""
    return _run(_skip_domination, config, run)


@runner_params(NasParams)
def pt_fixed_alpha(config: RunConfig, run: Run) -> dict[str, float]:
    """Experiment ``darts-pt-fixed-alpha`` (see :func:`_pt_fixed_alpha`)."""
    return _run(_pt_fixed_alpha, config, run)
