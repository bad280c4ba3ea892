"""DARTS supernet search and perturbation-based architecture selection (DARTS-PT).

Liu et al. 2019 (DARTS), Wang et al. 2021 (DARTS-PT), judged against a miniature
NAS-Bench-201 (Dong & Yang 2020) on scikit-learn digits that ships with the package.

Names are imported lazily on first use, so the ``metalab nas`` command starts without
importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metalab.core.lazy import lazy_exports

_EXPORTS = {
    "bench": ["CellResult", "TrainRecipe", "build_table", "merge_tables", "train_cell"],
    "data": ["DigitsSplits", "load_digits_splits"],
    "network": ["CellNetwork", "Supernet", "discrete_network"],
    "ops": ["DARTS_OPS", "NB201_OPS", "make_op", "op_names"],
    "search": ["DartsSearch", "SearchConfig", "darts_epoch", "supernet_accuracy"],
    "selection": [
        "MagnitudeSelection",
        "PerturbationSelection",
        "SelectionResult",
        "SelectionRule",
        "magnitude_choices",
        "make_selection",
        "perturbation_scores",
        "selection_names",
        "selection_resolver",
    ],
    "space": [
        "Cell",
        "DartsSpace",
        "NB201FourOpSpace",
        "NB201Space",
        "SearchSpace",
        "SkipConv3Space",
        "Topology",
        "canonical_key",
        "make_space",
        "space_names",
        "space_resolver",
    ],
    "table": ["TABLE_FORMAT", "BenchTable", "load_table", "shipped_table_path"],
    "trajectory": ["Trajectory", "follow_search", "search_and_select"],
}

__all__ = [
    "DARTS_OPS",
    "NB201_OPS",
    "TABLE_FORMAT",
    "BenchTable",
    "Cell",
    "CellNetwork",
    "CellResult",
    "DartsSearch",
    "DartsSpace",
    "DigitsSplits",
    "MagnitudeSelection",
    "NB201FourOpSpace",
    "NB201Space",
    "PerturbationSelection",
    "SearchConfig",
    "SearchSpace",
    "SelectionResult",
    "SelectionRule",
    "SkipConv3Space",
    "Supernet",
    "Topology",
    "TrainRecipe",
    "Trajectory",
    "build_table",
    "canonical_key",
    "darts_epoch",
    "discrete_network",
    "follow_search",
    "load_digits_splits",
    "load_table",
    "magnitude_choices",
    "make_op",
    "make_selection",
    "make_space",
    "merge_tables",
    "op_names",
    "perturbation_scores",
    "search_and_select",
    "selection_names",
    "selection_resolver",
    "shipped_table_path",
    "space_names",
    "space_resolver",
    "supernet_accuracy",
    "train_cell",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # static re-exports for type checkers and IDEs
    from metalab.nas.bench import CellResult, TrainRecipe, build_table, merge_tables, train_cell
    from metalab.nas.data import DigitsSplits, load_digits_splits
    from metalab.nas.network import CellNetwork, Supernet, discrete_network
    from metalab.nas.ops import DARTS_OPS, NB201_OPS, make_op, op_names
    from metalab.nas.search import DartsSearch, SearchConfig, darts_epoch, supernet_accuracy
    from metalab.nas.selection import (
        MagnitudeSelection,
        PerturbationSelection,
        SelectionResult,
        SelectionRule,
        magnitude_choices,
        make_selection,
        perturbation_scores,
        selection_names,
        selection_resolver,
    )
    from metalab.nas.space import (
        Cell,
        DartsSpace,
        NB201FourOpSpace,
        NB201Space,
        SearchSpace,
        SkipConv3Space,
        Topology,
        canonical_key,
        make_space,
        space_names,
        space_resolver,
    )
    from metalab.nas.table import TABLE_FORMAT, BenchTable, load_table, shipped_table_path
    from metalab.nas.trajectory import Trajectory, follow_search, search_and_select
