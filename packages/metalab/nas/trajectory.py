"""One DARTS search followed epoch by epoch: α, supernet accuracy and selected cells.

After every epoch the magnitude-selected cell is read off α and looked up in the
ground-truth table; at chosen epochs DARTS-PT runs on a copy of the supernet, so the
ground-truth accuracy of both methods' selections can be followed over the search
(Wang et al. 2021, Fig. 1/5 setting).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from metalab.core.errors import ConfigError
from metalab.core.seeding import make_generator
from metalab.nas.data import DigitsSplits, load_digits_splits
from metalab.nas.search import DartsSearch, SearchConfig
from metalab.nas.selection import MagnitudeSelection, PerturbationSelection, make_selection
from metalab.nas.table import BenchTable

__all__ = ["Trajectory", "follow_search", "search_and_select"]


@dataclass
class Trajectory:
    """Per-epoch record of one search (epochs count from 1)."""

    alphas: list[list[list[float]]] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    magnitude_cells: list[str] = field(default_factory=list)
    magnitude_acc: list[float] = field(default_factory=list)
    pt_epochs: list[int] = field(default_factory=list)
    pt_cells: list[str] = field(default_factory=list)
    pt_acc: list[float] = field(default_factory=list)
    pt_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for ``run.stage``)."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Trajectory:
        """Inverse of :meth:`to_dict`."""
        return cls(**obj)


def follow_search(
    config: SearchConfig,
    table: BenchTable,
    data: DigitsSplits,
    *,
    seed: int,
    pt_epochs: list[int],
    pt: PerturbationSelection,
    fixed_alpha: bool = False,
    device: torch.device | str = "cpu",
    log: Callable[..., None] | None = None,
) -> Trajectory:
    """Run a DARTS (or fixed-α) search of ``config.epochs`` epochs and record its course.

    Args:
        config: the search; ``config.space`` must be the table's space.
        table: ground truth for the selected cells.
        data: digits splits (train for w, val for α and for PT).
        seed: the search seed (supernet init, batch order, PT edge order).
        pt_epochs: epochs after which DARTS-PT selects a cell (0 = before training).
        pt: the perturbation rule (its fine-tuning budget).
        fixed_alpha: keep α uniform (the fixed-α variant).
        device: where the supernet lives.
        log: called as ``log(step, **metrics)`` after every epoch.
    """
    config = replace(
        config, fixed_alpha=fixed_alpha, order="first" if fixed_alpha else config.order
    )
    search = DartsSearch(
        config, data=data, generator=make_generator(seed, "nas/search"), device=device
    )
    traj = Trajectory()
    magnitude = MagnitudeSelection()
    for epoch in range(config.epochs + 1):
        if epoch > 0:
            loss = search.train_epoch()
            cell = magnitude.select(search, generator=search.generator).cell
            traj.alphas.append(search.alphas().tolist())
            traj.val_acc.append(search.val_accuracy())
            traj.magnitude_cells.append(cell.to_string())
            traj.magnitude_acc.append(table.accuracy(cell))
            if log is not None:
                log(
                    epoch,
                    seed=seed,
                    train_loss=loss,
                    supernet_val_acc=traj.val_acc[-1],
                    magnitude_gt_acc=traj.magnitude_acc[-1],
                )
        if epoch in pt_epochs:
            chosen = pt.select(search, generator=make_generator(seed, f"nas/pt/{epoch}"))
            traj.pt_epochs.append(epoch)
            traj.pt_cells.append(chosen.cell.to_string())
            traj.pt_acc.append(table.accuracy(chosen.cell))
            traj.pt_seconds.append(chosen.seconds)
            if log is not None:
                log(epoch, seed=seed, pt_gt_acc=traj.pt_acc[-1])
    return traj


def search_and_select(
    config: SearchConfig,
    *,
    selection: str,
    seed: int,
    table: BenchTable | None = None,
    tune_epochs: int = 5,
    tune_lr: float = 0.0025,
    split_seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Search ``config.epochs`` epochs, select a cell, and look it up in ``table`` (if any).

    The library form of ``metalab nas search``. ``selection`` is ``magnitude`` or
    ``perturbation``; ``config.fixed_alpha`` gives the fixed-α variant (which needs
    perturbation selection, α being uniform).

    Raises:
        ConfigError: magnitude selection with fixed α, or a table of another space.
    """
    if config.fixed_alpha and selection == "magnitude":
        raise ConfigError("--fixed-alpha keeps α uniform; select with --selection perturbation")
    if table is not None and table.space.name != config.space:
        raise ConfigError(f"table is for space {table.space.name}, not {config.space}")
    rule = make_selection(
        selection,
        **({"tune_epochs": tune_epochs, "tune_lr": tune_lr} if selection != "magnitude" else {}),
    )
    data = load_digits_splits(split_seed=split_seed, device=device)
    search = DartsSearch(
        config, data=data, generator=make_generator(seed, "nas/search"), device=device
    )
    started = time.perf_counter()
    for _ in range(config.epochs):
        search.train_epoch()
    search_seconds = time.perf_counter() - started
    chosen = rule.select(search, generator=make_generator(seed, f"nas/pt/{config.epochs}"))
    result: dict[str, Any] = {
        "space": config.space,
        "selection": rule.name,
        "fixed_alpha": config.fixed_alpha,
        "cell": chosen.cell.to_string(),
        "supernet_val_acc": search.val_accuracy(),
        "search_seconds": search_seconds,
        "selection_seconds": chosen.seconds,
        "alphas": search.alphas().tolist(),
    }
    if table is not None:
        result |= {
            "gt_accuracy": table.accuracy(chosen.cell),
            "gt_rank": table.rank(chosen.cell),
            "gt_cells": table.num_ranked,
            "gt_best": table.best_accuracy,
        }
    return result
