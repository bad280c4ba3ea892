"""A miniature NAS-Bench-201: every functionally distinct cell trained with a fixed recipe.

NAS-Bench-201 (Dong & Yang 2020) trains all 15 625 cells of its space with one recipe so
that any search method can be judged by the true accuracy (and rank) of the cell it
selects. Here the same is done on scikit-learn digits (recipe piloted in ``papers/nas.md``):
:func:`build_table` trains each functionally distinct cell (:func:`canonical_key`) for
every seed, saving progress atomically to a JSON file so a build can be split over runs
and resumes where it stopped. :mod:`metalab.nas.table` reads the file.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from metalab.core.checkpoint import atomic_write_json
from metalab.core.errors import ConfigError
from metalab.core.parallel import map_unordered
from metalab.core.progress import progress
from metalab.core.seeding import make_generator
from metalab.core.training import accuracy, train_supervised
from metalab.nas.data import DigitsSplits, load_digits_splits, seeded_init
from metalab.nas.network import discrete_network
from metalab.nas.space import Cell, SearchSpace, make_space
from metalab.nas.table import TABLE_FORMAT, BenchTable, check_results, in_seed_order

__all__ = ["CellResult", "TrainRecipe", "build_table", "merge_tables", "train_cell"]


@dataclass(frozen=True)
class TrainRecipe:
    """The fixed training recipe of every cell (``papers/nas.md``, digits pilot).

    Stem conv 3×3 with ``channels`` channels + BN, ``n_cells`` cells, BN-ReLU-pool-linear;
    SGD with Nesterov momentum, cosine learning rate over ``epochs``, batch ``batch_size``,
    on the digits split ``split_seed`` (train 1 000 / val 400 / test 397).
    """

    channels: int = 8
    n_cells: int = 2
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    split_seed: int = 0

    def __post_init__(self) -> None:
        """A recipe that cannot train (no epochs, no channels) would write untrained cells."""
        for name in ("channels", "n_cells", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"recipe.{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"recipe.lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"recipe.momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"recipe.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class CellResult:
    """One trained cell: test and validation accuracy and wall time."""

    test_acc: float
    val_acc: float
    seconds: float


def train_cell(
    space: SearchSpace,
    cell: Cell,
    *,
    recipe: TrainRecipe,
    seed: int,
    data: DigitsSplits | None = None,
    device: torch.device | str = "cpu",
) -> CellResult:
    """Train ``cell`` with ``recipe`` from seed ``seed`` (init and batch order).

    The seed's streams do not depend on the cell, so all cells of one seed start from
    comparable draws, as in NAS-Bench-201 (one seed per full sweep).
    """
    started = time.perf_counter()
    data = data or load_digits_splits(split_seed=recipe.split_seed, device=device)
    with seeded_init(make_generator(seed, "nas/bench-init")):
        model = discrete_network(
            space,
            cell,
            channels=recipe.channels,
            n_cells=recipe.n_cells,
            num_classes=data.num_classes,
        ).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=True,
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    train_supervised(
        model,
        data.train,
        optimizer=optimizer,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        generator=make_generator(seed, "nas/bench-data"),
        on_epoch=lambda record: schedule.step(),
    )
    return CellResult(
        test_acc=accuracy(model, *data.test),
        val_acc=accuracy(model, *data.val),
        seconds=time.perf_counter() - started,
    )


def _fresh_table(space: SearchSpace, recipe: TrainRecipe, seeds: list[int], command: str) -> dict:
    return {
        "format": TABLE_FORMAT,
        "space": space.name,
        "ops": list(space.ops),
        "recipe": asdict(recipe),
        "seeds": seeds,
        "command": command,
        "torch": torch.__version__,
        "num_cells": space.num_cells,
        "num_distinct": None,
        "complete": False,
        "train_seconds": 0.0,
        "results": {},
    }


def _resume(path: Path, fresh: dict) -> dict:
    """The stored build at ``path`` if it is the same space, recipe and seeds."""
    if not path.is_file():
        return fresh
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); delete it to start over") from None
    for key in ("format", "space", "ops", "recipe", "seeds"):
        if stored.get(key) != fresh[key]:
            differs = _difference(stored.get(key), fresh[key])
            raise ConfigError(
                f"{path} holds a build with another {key} ({differs}); use another --out or "
                "delete it"
            )
    return stored


def _difference(stored: object, wanted: object) -> str:
    """``stored vs wanted``, for a recipe only the fields that differ (``epochs 2 vs 3``)."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        keys = [k for k in {**stored, **wanted} if stored.get(k) != wanted.get(k)]
        return ", ".join(f"{k} {stored.get(k)!r} vs {wanted.get(k)!r}" for k in keys)
    return f"{stored!r} vs {wanted!r}"


def _record(table: dict, cell: Cell, seed: int, result: CellResult) -> None:
    """Store one trained pair, replacing the cell's entry whole.

    The table is saved on the way out of an interrupt, so a pair must never be half stored
    (a test accuracy without its validation accuracy would be skipped on resume for good).
    """
    entry = table["results"].get(cell.to_string(), {})
    values = {"test_acc": result.test_acc, "val_acc": result.val_acc}
    values["seconds"] = round(result.seconds, 3)
    table["results"][cell.to_string()] = {
        field: in_seed_order({**entry.get(field, {}), str(seed): value}, table["seeds"])
        for field, value in values.items()
    }
    table["train_seconds"] += result.seconds


def build_table(
    space: SearchSpace,
    path: str | Path,
    *,
    recipe: TrainRecipe | None = None,
    seeds: list[int] | None = None,
    device: torch.device | str = "cpu",
    max_seconds: float | None = None,
    command: str = "",
    save_every: float = 20.0,
    cells: list[Cell] | None = None,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    threads: int = 1,
) -> BenchTable:
    """Train every functionally distinct cell of ``space`` for each seed into ``path``.

    Resumable: ``(cell, seed)`` pairs already in ``path`` are skipped. With
    ``max_seconds`` the build stops (saving) after that much wall time; run it again to
    continue. ``cells`` restricts this call to (the representatives of) those cells, e.g.
    to split a build by hand; ``shard=(k, n)`` trains only the distinct cells whose index
    is ``k`` mod ``n`` (run ``n`` processes into ``n`` files, then :func:`merge_tables`).
    ``workers > 1`` trains that many pairs at once in worker processes of ``threads``
    torch threads each, into the one file (the script must then guard its body with
    ``if __name__ == "__main__":``). The table is marked ``complete`` once every pair is
    trained.

    Raises:
        ConfigError: fewer than 2 seeds, or ``path`` holds a different build.
    """
    recipe = recipe or TrainRecipe()
    seeds = list(seeds if seeds is not None else [0, 1])
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"a ground-truth table needs >= 2 distinct seeds, got {seeds}")
    if not 0 <= shard[0] < shard[1]:
        raise ConfigError(f"shard must be k/n with 0 <= k < n, got {shard[0]}/{shard[1]}")
    target = Path(path)
    table = _resume(target, _fresh_table(space, recipe, seeds, command))
    distinct = space.distinct_cells()
    table["num_distinct"] = len(distinct)
    wanted = (
        list(distinct.values())[shard[0] :: shard[1]]
        if cells is None
        else list({space.canonical(c): distinct[space.canonical(c)] for c in cells}.values())
    )
    todo = [
        (cell, seed)
        for cell in wanted
        for seed in seeds
        if str(seed) not in table["results"].get(cell.to_string(), {}).get("test_acc", {})
    ]
    started = last_save = time.perf_counter()
    trained = map_unordered(
        _train_pair,
        [(space, cell, recipe, seed, str(device)) for cell, seed in todo],
        workers=workers,
        threads=threads,
        stop=lambda: max_seconds is not None and time.perf_counter() - started > max_seconds,
        labels=[f"{cell.to_string()} seed {seed}" for cell, seed in todo],
    )
    try:
        for index, result in progress(trained, desc=f"bench {space.name}", total=len(todo)):
            _record(table, *todo[index], result)
            if time.perf_counter() - last_save > save_every:
                atomic_write_json(target, table)
                last_save = time.perf_counter()
    finally:
        trained.close()  # stops the workers if the loop ended early
        _in_cell_order(table, distinct)  # workers finish in any order
        table["complete"] = all(
            len(table["results"].get(c.to_string(), {}).get("test_acc", {})) == len(seeds)
            for c in distinct.values()
        )
        atomic_write_json(target, table)
    return BenchTable.from_dict(table, source=str(target))


def _in_cell_order(table: dict, distinct: dict[str, Cell]) -> None:
    """Results in the space's cell order, as a one-process build writes them.

    Ties in ``best_cell`` and ``show --top`` go to the first stored cell.
    """
    position = {cell.to_string(): i for i, cell in enumerate(distinct.values())}
    table["results"] = dict(
        sorted(table["results"].items(), key=lambda item: position.get(item[0], len(position)))
    )


def _train_pair(
    space: SearchSpace, cell: Cell, recipe: TrainRecipe, seed: int, device: str
) -> CellResult:
    """One ``(cell, seed)`` of a build (module level: worker processes run it)."""
    data = _digits(recipe.split_seed, device)
    return train_cell(space, cell, recipe=recipe, seed=seed, data=data, device=device)


@functools.lru_cache(maxsize=2)
def _digits(split_seed: int, device: str) -> DigitsSplits:
    """The digits splits, loaded once per process."""
    return load_digits_splits(split_seed=split_seed, device=device)


def merge_tables(paths: list[str | Path], out: str | Path) -> BenchTable:
    """Merge partial builds (e.g. shards) of one space, recipe and seeds into ``out``.

    Raises:
        ConfigError: no inputs, or inputs of different spaces, recipes or seeds.
    """
    if not paths:
        raise ConfigError("merge needs at least one table file")
    merged: dict | None = None
    for path in paths:
        try:
            part = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read a table ({exc})") from None
        if not isinstance(part, dict):
            raise ConfigError(f"{path}: not a build file (a JSON object is expected)")
        check_results(part, str(path))
        if merged is None:
            merged = dict(part, results=dict(part.get("results", {})))
            continue
        for key in ("format", "space", "ops", "recipe", "seeds"):
            if part.get(key) != merged.get(key):
                raise ConfigError(f"{path}: another {key} than {paths[0]}; cannot merge")
        for cell, entry in part.get("results", {}).items():
            into = merged["results"].setdefault(
                cell, {"test_acc": {}, "val_acc": {}, "seconds": {}}
            )
            for field in ("test_acc", "val_acc", "seconds"):
                into[field].update(entry.get(field, {}))
        merged["train_seconds"] = merged.get("train_seconds", 0.0) + part.get("train_seconds", 0.0)
    assert merged is not None
    space = make_space(str(merged.get("space")))
    merged["complete"] = all(
        len(merged["results"].get(c.to_string(), {}).get("test_acc", {})) == len(merged["seeds"])
        for c in space.distinct_cells().values()
    )
    atomic_write_json(out, merged)
    return BenchTable.from_dict(merged, source=str(out))
