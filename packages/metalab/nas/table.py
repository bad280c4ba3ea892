"""Read ground-truth tables: the shipped digits tables and user-supplied exports.

Two JSON formats are accepted (never pickles — the NAS-Bench-201 ``.pth`` release is a
pickle and is refused; export it to JSON with its API instead):

* ``metalab-nas-bench/1`` — written by :func:`metalab.nas.bench.build_table`:
  ``{"format", "space", "ops", "recipe", "seeds", "command", "results": {cell string:
  {"test_acc": {seed: acc}, "val_acc": ..., "seconds": ...}}, ...}``; each key is one
  representative of a functionally distinct cell.
* a plain export: ``{"space": "nb201", "accuracies": {cell string: acc or [acc, ...]}}``,
  e.g. from the NAS-Bench-201 API:
  ``{api.arch(i): api.get_more_info(i, "cifar10", hp="200")["test-accuracy"] for i in
  range(len(api))}``.

A cell's accuracy is the mean over seeds; a cell missing from the table is looked up by
its functional-equivalence key, so one representative per distinct cell suffices.
Ranks count every cell of the space (duplicates included, like NAS-Bench-201's 15 625).
"""

from __future__ import annotations

import json
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from metalab.core.errors import ConfigError, MetalabError
from metalab.nas.space import Cell, SearchSpace, make_space

__all__ = [
    "TABLE_FORMAT",
    "BenchTable",
    "check_results",
    "in_seed_order",
    "load_table",
    "shipped_table_path",
]

TABLE_FORMAT = "metalab-nas-bench/1"
_PICKLE_SUFFIXES = {".pth", ".pt", ".pkl", ".pickle"}


def check_results(obj: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """The ``results`` of a build file, checked entry by entry (one-line errors).

    Each entry must map ``test_acc`` / ``val_acc`` / ``seconds`` to ``{seed: number}``.
    """
    results = obj.get("results", {})
    if not isinstance(results, dict):
        raise ConfigError(f"{source}: 'results' is not a mapping of cell -> entry")
    for cell, entry in results.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: results[{cell!r}] is not an entry (got {entry!r:.40})")
        for field in ("test_acc", "val_acc", "seconds"):
            values = entry.get(field, {})
            numbers = isinstance(values, dict) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()
            )
            if not numbers:
                raise ConfigError(
                    f"{source}: results[{cell!r}][{field!r}] is not a mapping of seed -> number"
                )
    return results


V = TypeVar("V")


def in_seed_order(values: dict[str, V], seeds: Any) -> dict[str, V]:
    """``{seed: value}`` in the order of a build's ``seeds`` (workers finish in any order).

    Seeds the list does not hold, or a ``seeds`` that is not a list, keep their order last.
    """
    order = {str(s): i for i, s in enumerate(seeds)} if isinstance(seeds, list) else {}
    return dict(sorted(values.items(), key=lambda item: order.get(item[0], len(order))))


class BenchTable:
    """Ground-truth accuracy of the cells of one space, with ranks and regret."""

    def __init__(
        self,
        space: SearchSpace,
        accuracies: dict[str, list[float]],
        *,
        meta: dict[str, Any] | None = None,
        source: str = "",
    ) -> None:
        self.space = space
        self.meta = dict(meta or {})
        self.source = source
        self.seed_accuracies: dict[str, list[float]] = {}
        by_key: dict[str, list[float]] = {}
        for text, accs in accuracies.items():
            cell = space.parse(text)
            self.seed_accuracies[cell.to_string()] = list(accs)
            by_key.setdefault(space.canonical(cell), []).append(float(np.mean(accs)))
        self._by_key = {key: float(np.mean(values)) for key, values in by_key.items()}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, obj: Any, *, source: str = "") -> BenchTable:
        """Build from a parsed JSON object in either accepted format."""
        if not isinstance(obj, dict) or "space" not in obj:
            raise ConfigError(f"{source}: not a ground-truth table (no 'space' field)")
        space = make_space(str(obj["space"]))
        if obj.get("format") == TABLE_FORMAT:
            accs = {
                cell: [
                    float(v) for v in in_seed_order(entry["test_acc"], obj.get("seeds")).values()
                ]
                for cell, entry in check_results(obj, source).items()
                if entry.get("test_acc")
            }
            meta = {k: v for k, v in obj.items() if k != "results"}
        elif isinstance(obj.get("accuracies"), dict):
            accs = {
                cell: _as_list(value, source, cell) for cell, value in obj["accuracies"].items()
            }
            meta = {k: v for k, v in obj.items() if k != "accuracies"}
        else:
            raise ConfigError(
                f"{source}: unknown table format; expected format {TABLE_FORMAT!r} or an "
                "'accuracies' mapping"
            )
        return cls(space, accs, meta=meta, source=source)

    @classmethod
    def load(cls, path: str | Path) -> BenchTable:
        """Read a JSON table (pickled files are refused).

        Raises:
            MetalabError: missing, pickled, invalid JSON, or not a table.
        """
        target = Path(path)
        if target.suffix.lower() in _PICKLE_SUFFIXES:
            raise ConfigError(
                f"{target}: pickled files are not read (they can run code); export the "
                "accuracies to JSON (see metalab.nas.table)"
            )
        if not target.is_file():
            raise MetalabError(f"table file {str(target)!r} does not exist")
        try:
            obj = json.loads(target.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{target}: not valid JSON ({exc})") from None
        return cls.from_dict(obj, source=str(target))

    # ------------------------------------------------------------------ queries
    @property
    def complete(self) -> bool:
        """Whether every distinct cell has an entry (stored flag for built tables)."""
        if "complete" in self.meta:
            return bool(self.meta["complete"])
        return len(self._by_key) == len(self.space.distinct_cells())

    def accuracy(self, cell: Cell | str) -> float:
        """Mean test accuracy of ``cell`` (exact string first, then functional key).

        Raises:
            ConfigError: the cell (and every equivalent one) is missing from the table.
        """
        parsed = self.space.parse(cell) if isinstance(cell, str) else cell
        text = parsed.to_string()
        if text in self.seed_accuracies:
            return float(np.mean(self.seed_accuracies[text]))
        key = self.space.canonical(parsed)
        if key not in self._by_key:
            raise ConfigError(f"cell {text} is not in the table {self.source or ''}".rstrip())
        return self._by_key[key]

    @cached_property
    def _all_accuracies(self) -> np.ndarray:
        """Accuracy of every cell of the space that the table covers, sorted descending."""
        values = []
        for cell in self.space.all_cells():
            key = self.space.canonical(cell)
            text = cell.to_string()
            if text in self.seed_accuracies:
                values.append(float(np.mean(self.seed_accuracies[text])))
            elif key in self._by_key:
                values.append(self._by_key[key])
        return np.sort(np.asarray(values))[::-1]

    @property
    def num_ranked(self) -> int:
        """How many cells of the space the ranks count."""
        return len(self._all_accuracies)

    def rank(self, cell: Cell | str) -> int:
        """1 + the number of cells of the space with a strictly higher accuracy."""
        acc = self.accuracy(cell)
        return 1 + int(np.sum(self._all_accuracies > acc + 1e-12))

    def percentile(self, cell: Cell | str) -> float:
        """Percentage of the space's cells with accuracy ≤ this cell's."""
        acc = self.accuracy(cell)
        return 100.0 * float(np.mean(self._all_accuracies <= acc + 1e-12))

    @property
    def best_accuracy(self) -> float:
        """The highest accuracy in the table."""
        return float(self._all_accuracies[0])

    def best_cell(self) -> str:
        """The string of a cell with the highest mean accuracy."""
        return max(self.seed_accuracies, key=lambda c: float(np.mean(self.seed_accuracies[c])))

    def regret(self, cell: Cell | str) -> float:
        """Best accuracy minus this cell's accuracy."""
        return self.best_accuracy - self.accuracy(cell)

    def summary(self) -> dict[str, Any]:
        """Counts and accuracy statistics (for ``metalab nas bench show``)."""
        accs = self._all_accuracies
        seeds = [len(v) for v in self.seed_accuracies.values()]
        return {
            "space": self.space.name,
            "source": self.source,
            "entries": len(self.seed_accuracies),
            "cells_ranked": len(accs),
            "complete": self.complete,
            "seeds_per_entry": min(seeds) if seeds else 0,
            "best": float(accs[0]) if len(accs) else float("nan"),
            "median": float(np.median(accs)) if len(accs) else float("nan"),
            "worst": float(accs[-1]) if len(accs) else float("nan"),
            "best_cell": self.best_cell() if seeds else "",
            "train_seconds": self.meta.get("train_seconds"),
            "command": self.meta.get("command"),
        }


def _as_list(value: Any, source: str, cell: str) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (int, float)) for v in values):
        raise ConfigError(f"{source}: accuracy of {cell} must be a number or list of numbers")
    return [float(v) for v in values]


def shipped_table_path(space: str) -> Path:
    """Where the table of ``space`` ships inside the package (``metalab/nas/data``)."""
    return Path(str(resources.files("metalab.nas") / "data" / f"{space}.json"))


def load_table(name_or_path: str | Path) -> BenchTable:
    """A shipped table by space name (``skip-conv3``) or a JSON file by path.

    Raises:
        MetalabError: no table ships for that space and no such file exists.
    """
    text = str(name_or_path)
    shipped = shipped_table_path(text) if "/" not in text and not text.endswith(".json") else None
    if shipped is not None and shipped.is_file():
        return BenchTable.load(shipped)
    if Path(text).is_dir():
        raise MetalabError(f"{text!r} is a folder; give a table's JSON file or a space name")
    if Path(text).is_file() or shipped is None:
        return BenchTable.load(text)
    available = sorted(p.stem for p in shipped.parent.glob("*.json"))
    raise MetalabError(
        f"no ground-truth table ships for {text!r} (shipped: {', '.join(available) or 'none'}); "
        f"build one with `metalab nas bench build --space {text}` and pass its path"
    )
