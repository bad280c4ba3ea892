"""Cell search spaces, cell strings and functional-equivalence canonicalization.

A cell is a DAG over ``n_inputs`` input nodes and ``n_nodes`` intermediate nodes; every
intermediate node sums one operation from every earlier node.

* NAS-Bench-201 (Dong & Yang 2020, Sec. 2.1): 1 input node, 3 intermediate nodes, 6 edges,
  output = the last node. A cell string lists, per intermediate node, ``op~source`` for
  each of its in-edges: ``|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...~0|...~1|...~2|``.
* DARTS (Liu et al. 2019, Sec. 2.1): 2 input nodes (the two previous cells), 4 intermediate
  nodes, 14 edges, output = concatenation of the intermediate nodes. A selected DARTS cell
  keeps 2 in-edges per node and is written the same way with 2 entries per group.

Two cells are functionally identical when they compute the same expression: an edge out
of a node that is always zero (all its in-edges ``none`` or dead) is dead and pruned, and
each node's sum is commutative. On NAS-Bench-201 this leaves 8 765 of 15 625 cells and,
without pooling, 1 948 of 4 096 (the counts quoted in ``papers/nas.md``); every cell of
the 2-operation ``{skip, conv 3×3}`` space is distinct (64).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from class_resolver import ClassResolver

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.nas.ops import DARTS_OPS, NB201_OPS

__all__ = [
    "Cell",
    "DartsSpace",
    "NB201FourOpSpace",
    "NB201Space",
    "SearchSpace",
    "SkipConv3Space",
    "Topology",
    "canonical_key",
    "live_edges",
    "make_space",
    "space_names",
    "space_resolver",
]

Edge = tuple[int, int]


@dataclass(frozen=True)
class Topology:
    """The DAG of a cell: ``n_inputs`` input nodes, then ``n_nodes`` intermediate nodes.

    ``concat_output`` is True for DARTS cells (output = concatenation of the intermediate
    nodes) and False for NAS-Bench-201 cells (output = the last node).
    """

    n_inputs: int
    n_nodes: int
    concat_output: bool

    @cached_property
    def edges(self) -> list[Edge]:
        """All ``(source, target)`` edges, grouped by target node, sources ascending."""
        first = self.n_inputs
        return [(i, j) for j in range(first, first + self.n_nodes) for i in range(j)]

    def in_edges(self, node: int) -> list[int]:
        """Indices (into :attr:`edges`) of the edges entering ``node``."""
        return self._in_edges.get(node, [])

    @cached_property
    def _in_edges(self) -> dict[int, list[int]]:
        table: dict[int, list[int]] = {}
        for k, (_, j) in enumerate(self.edges):
            table.setdefault(j, []).append(k)
        return table

    @property
    def intermediate(self) -> range:
        """The intermediate node indices."""
        return range(self.n_inputs, self.n_inputs + self.n_nodes)


NB201_TOPOLOGY = Topology(n_inputs=1, n_nodes=3, concat_output=False)
DARTS_TOPOLOGY = Topology(n_inputs=2, n_nodes=4, concat_output=True)


@dataclass(frozen=True)
class Cell:
    """A discrete cell: per intermediate node, its kept in-edges as ``(op, source)`` pairs."""

    nodes: tuple[tuple[tuple[str, int], ...], ...]

    def to_string(self) -> str:
        """The NAS-Bench-201-style string ``|op~src|...|+|...|``."""
        return "+".join(
            "|" + "|".join(f"{op}~{src}" for op, src in node) + "|" for node in self.nodes
        )

    def __str__(self) -> str:
        return self.to_string()

    @classmethod
    def from_string(cls, text: str) -> Cell:
        """Parse a cell string (structure only; :meth:`SearchSpace.parse` validates it).

        Raises:
            ConfigError: the string is not of the form ``|op~src|...|+|...|``.
        """
        nodes = []
        for group in text.strip().split("+"):
            if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
                raise ConfigError(f"malformed cell string {text!r}: group {group!r}")
            entries = []
            for item in group[1:-1].split("|"):
                op, sep, src = item.partition("~")
                if not sep or not src.isdigit() or not op:
                    raise ConfigError(f"malformed cell string {text!r}: entry {item!r}")
                entries.append((op, int(src)))
            nodes.append(tuple(entries))
        return cls(tuple(nodes))

    def edge_ops(self, topology: Topology) -> dict[Edge, str]:
        """Map ``(source, target)`` → operation for the edges this cell keeps."""
        return {
            (src, topology.n_inputs + k): op
            for k, node in enumerate(self.nodes)
            for op, src in node
        }


def live_edges(cell: Cell, topology: Topology) -> dict[Edge, str]:
    """The edges of ``cell`` that carry a signal: not ``none`` and out of a non-zero node.

    A node is zero when none of its in-edges is live (input nodes never are). Dead edges
    are left out of discrete networks, so functionally identical cells build identical
    networks (a ReLU-Conv-BN of zeros would otherwise output BN's learned bias).
    """
    zero = {i: False for i in range(topology.n_inputs)}
    live: dict[Edge, str] = {}
    for k, node in enumerate(cell.nodes):
        target = topology.n_inputs + k
        for op, src in node:
            if op != "none" and not zero[src]:
                live[(src, target)] = op
        zero[target] = not any(j == target for _, j in live)
    return live


def canonical_key(cell: Cell, topology: Topology) -> str:
    """A string equal for two cells exactly when they are functionally identical.

    Each node becomes the sorted sum of its live terms ``op(source expression)``; ``none``
    edges and edges out of an all-zero node are dropped (dead); a node with no live term
    is ``0``. Skip connections are kept as terms (``skip(a) + b`` is not merged into
    ``a + b``), matching the distinct-cell counts of ``papers/nas.md``.
    """
    expr: dict[int, str] = {i: f"x{i}" for i in range(topology.n_inputs)}
    for k, node in enumerate(cell.nodes):
        terms = sorted(
            f"{op}({expr[src]})" for op, src in node if op != "none" and expr[src] != "0"
        )
        expr[topology.n_inputs + k] = "[" + "+".join(terms) + "]" if terms else "0"
    if topology.concat_output:
        return ",".join(expr[j] for j in topology.intermediate)
    return expr[topology.n_inputs + topology.n_nodes - 1]


class SearchSpace:
    """A cell topology with a list of candidate operations (``none`` first when present)."""

    name: ClassVar[str]
    ops: ClassVar[tuple[str, ...]]
    topology: ClassVar[Topology]
    #: in-edges each intermediate node keeps after selection (``None``: all of them).
    keep_inputs: ClassVar[int | None] = None

    @property
    def edges(self) -> list[Edge]:
        """The supernet's edges (every earlier node to every intermediate node)."""
        return self.topology.edges

    @property
    def num_cells(self) -> int:
        """How many discrete cells the space holds (NAS-Bench-201 topology only)."""
        return len(self.ops) ** len(self.edges)

    def op_index(self, op: str) -> int:
        """Position of ``op`` in :attr:`ops` (raises ``UnknownNameError`` when absent)."""
        if op not in self.ops:
            raise UnknownNameError(f"operation of space {self.name}", op, self.ops)
        return self.ops.index(op)

    def cell_from_choices(
        self, choices: Sequence[int], alive: Sequence[bool] | None = None
    ) -> Cell:
        """The cell with op ``ops[choices[e]]`` on edge ``e`` (``alive[e]`` False: dropped)."""
        kept = alive if alive is not None else [True] * len(self.edges)
        nodes = []
        for j in self.topology.intermediate:
            nodes.append(
                tuple(
                    (self.ops[choices[k]], i)
                    for k, (i, jj) in enumerate(self.edges)
                    if jj == j and kept[k]
                )
            )
        return Cell(tuple(nodes))

    def parse(self, text: str) -> Cell:
        """Parse and validate a cell string of this space.

        Raises:
            ConfigError: malformed, wrong node count, bad sources or in-edge counts.
            UnknownNameError: an operation that is not in this space.
        """
        cell = Cell.from_string(text)
        self.validate(cell)
        return cell

    def validate(self, cell: Cell) -> None:
        """Check that ``cell`` belongs to this space (see :meth:`parse`)."""
        top = self.topology
        if len(cell.nodes) != top.n_nodes:
            raise ConfigError(
                f"cell {cell} has {len(cell.nodes)} nodes; space {self.name} has {top.n_nodes}"
            )
        for k, node in enumerate(cell.nodes):
            target = top.n_inputs + k
            sources = [src for _, src in node]
            for op, src in node:
                self.op_index(op)
                if src >= target:
                    raise ConfigError(f"cell {cell}: node {target} cannot take input from {src}")
            if len(set(sources)) != len(sources):
                raise ConfigError(f"cell {cell}: node {target} lists an input twice")
            want = self.keep_inputs if self.keep_inputs is not None else target
            if len(sources) != min(want, target):
                raise ConfigError(
                    f"cell {cell}: node {target} needs {min(want, target)} inputs, "
                    f"has {len(sources)}"
                )

    def canonical(self, cell: Cell) -> str:
        """The functional-equivalence key of ``cell`` (see :func:`canonical_key`)."""
        return canonical_key(cell, self.topology)

    def all_cells(self) -> Iterator[Cell]:
        """Every discrete cell, in lexicographic order of per-edge op indices."""
        if self.keep_inputs is not None:
            raise ConfigError(f"space {self.name} is too large to enumerate")
        for choices in itertools.product(range(len(self.ops)), repeat=len(self.edges)):
            yield self.cell_from_choices(choices)

    def distinct_cells(self) -> dict[str, Cell]:
        """Canonical key → the first cell (in :meth:`all_cells` order) with that key."""
        distinct: dict[str, Cell] = {}
        for cell in self.all_cells():
            distinct.setdefault(self.canonical(cell), cell)
        return distinct


class NB201Space(SearchSpace):
    """NAS-Bench-201: 4 nodes, 6 edges, 5 operations, 15 625 cells (8 765 distinct)."""

    name = "nb201"
    ops = NB201_OPS
    topology = NB201_TOPOLOGY


class NB201FourOpSpace(SearchSpace):
    """NAS-Bench-201 without pooling: 4 operations, 4 096 cells (1 948 distinct)."""

    name = "nb201-4op"
    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
    topology = NB201_TOPOLOGY


class SkipConv3Space(SearchSpace):
    """The 2-operation ``{skip, conv 3×3}`` NAS-Bench-201 cell: 64 cells, all distinct."""

    name = "skip-conv3"
    ops = ("skip_connect", "nor_conv_3x3")
    topology = NB201_TOPOLOGY


class DartsSpace(SearchSpace):
    """DARTS: 2 input nodes, 4 intermediate nodes, 14 edges, 8 operations, 2 inputs kept."""

    name = "darts"
    ops = DARTS_OPS
    topology = DARTS_TOPOLOGY
    keep_inputs = 2


space_resolver: ClassResolver[SearchSpace] = ClassResolver(
    [NB201Space, NB201FourOpSpace, SkipConv3Space, DartsSpace],
    base=SearchSpace,
    synonyms={"nb201-4op": NB201FourOpSpace, "skip-conv3": SkipConv3Space},
)


def space_names() -> list[str]:
    """The registered spaces' names."""
    return sorted(cls.name for cls in space_resolver)


def make_space(name: str) -> SearchSpace:
    """The search space called ``name`` (``nb201``, ``nb201-4op``, ``skip-conv3``, ``darts``).

    Raises:
        UnknownNameError: no such space (close names are suggested).
    """
    matches = [cls for cls in space_resolver if cls.name == name]
    if not matches:
        try:
            matches = [space_resolver.lookup(name)]
        except (KeyError, ValueError):
            raise UnknownNameError("search space", name, space_names()) from None
    return matches[0]()
