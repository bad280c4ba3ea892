"""Complex queries as trees: the 14 BetaE structures, BetaE tuples and readable JSON.

A query is a tree of :class:`Anchor` (a constant entity), :class:`Projection` (follow a
relation), :class:`Intersection`, :class:`Union` and :class:`Negation` nodes over entity
and *query relation* ids (``2k`` = relation ``k``, ``2k+1`` = its inverse). Its answers are
the entities the root denotes (BetaE, Ren & Leskovec 2020, Sec. 3; CQD Eq. 1 with
disjunctions in normal form).

The 14 structures (:data:`STRUCTURES`) are BetaE's; their tuple form (e.g. ``2p`` =
``('e', ('r', 'r'))``, grounded ``(e, (r1, r2))`` with ``-2`` for negation and ``-1`` for
union) is what BetaE/Query2Box pickles hold (:func:`to_betae`, :func:`from_betae`).

The JSON form names entities and relations (a nested list, one operator first):
``["e", ENTITY]``, ``["p", RELATION, SUB]``, ``["and", SUB, SUB, ...]``,
``["or", SUB, SUB, ...]``, ``["not", SUB]``. Example (``pi``):
``["and", ["p", "r2", ["p", "r1", ["e", "a"]]], ["p", "r3", ["e", "b"]]]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from metalab.core.errors import MetalabError, UnknownNameError
from metalab.kg.graphs import Vocabulary

__all__ = [
    "HOLE",
    "STRUCTURES",
    "STRUCTURE_NAMES",
    "Anchor",
    "Intersection",
    "Negation",
    "Projection",
    "Query",
    "QueryFormatError",
    "Union",
    "from_betae",
    "query_from_json",
    "query_to_json",
    "structure_name",
    "template_of",
    "to_betae",
]

HOLE = -1  # an ungrounded anchor or relation in a structure template


class QueryFormatError(MetalabError):
    """A query (JSON or BetaE tuple) is malformed."""


@dataclass(frozen=True)
class Anchor:
    """A constant entity."""

    entity: int


@dataclass(frozen=True)
class Projection:
    """The entities reached from ``arg`` by query relation ``relation``."""

    relation: int
    arg: Query


@dataclass(frozen=True)
class Intersection:
    """Entities denoted by every argument."""

    args: tuple[Query, ...]


@dataclass(frozen=True)
class Union:
    """Entities denoted by some argument."""

    args: tuple[Query, ...]


@dataclass(frozen=True)
class Negation:
    """Entities not denoted by ``arg`` (the complement within all entities)."""

    arg: Query


Query = Anchor | Projection | Intersection | Union | Negation


def _p(arg: Query, *, hops: int = 1) -> Query:
    for _ in range(hops):
        arg = Projection(HOLE, arg)
    return arg


_A = Anchor(HOLE)
STRUCTURES: dict[str, Query] = {
    "1p": _p(_A),
    "2p": _p(_A, hops=2),
    "3p": _p(_A, hops=3),
    "2i": Intersection((_p(_A), _p(_A))),
    "3i": Intersection((_p(_A), _p(_A), _p(_A))),
    "ip": _p(Intersection((_p(_A), _p(_A)))),
    "pi": Intersection((_p(_A, hops=2), _p(_A))),
    "2u": Union((_p(_A), _p(_A))),
    "up": _p(Union((_p(_A), _p(_A)))),
    "2in": Intersection((_p(_A), Negation(_p(_A)))),
    "3in": Intersection((_p(_A), _p(_A), Negation(_p(_A)))),
    "inp": _p(Intersection((_p(_A), Negation(_p(_A))))),
    "pin": Intersection((_p(_A, hops=2), Negation(_p(_A)))),
    "pni": Intersection((Negation(_p(_A, hops=2)), _p(_A))),
}
STRUCTURE_NAMES: dict[Query, str] = {template: name for name, template in STRUCTURES.items()}


def template_of(query: Query) -> Query:
    """The structure of ``query``: the same tree with every entity and relation a :data:`HOLE`."""
    if isinstance(query, Anchor):
        return _A
    if isinstance(query, Projection):
        return Projection(HOLE, template_of(query.arg))
    if isinstance(query, Negation):
        return Negation(template_of(query.arg))
    return type(query)(tuple(template_of(a) for a in query.args))


def structure_name(query: Query) -> str | None:
    """The BetaE name of ``query``'s structure, or ``None`` for other trees.

    Conjunctions and disjunctions commute, so ``a & !b`` and ``!b & a`` are both ``2in``:
    every ordering of their arguments is tried against the templates.
    """
    for variant in _orderings(query):
        name = STRUCTURE_NAMES.get(template_of(variant))
        if name is not None:
            return name
    return None


def _orderings(query: Query) -> Iterator[Query]:
    """``query`` with the arguments of every intersection and union in each possible order."""
    if isinstance(query, (Intersection, Union)):
        choices = [list(_orderings(arg)) for arg in query.args]
        for combination in itertools.product(*choices):
            for order in itertools.permutations(combination):
                yield type(query)(tuple(order))
    elif isinstance(query, Projection):
        for arg in _orderings(query.arg):
            yield Projection(query.relation, arg)
    elif isinstance(query, Negation):
        for arg in _orderings(query.arg):
            yield Negation(arg)
    else:
        yield query


# ---------------------------------------------------------------------- BetaE tuples
def to_betae(query: Query) -> Any:
    """The BetaE/Query2Box tuple of a grounded query (templates give the ``'e'/'r'`` form)."""
    grounded = not _has_holes(query)
    if isinstance(query, (Projection, Negation, Anchor)):
        ops: list[Any] = []
        node: Query = query
        while isinstance(node, (Projection, Negation)):
            if isinstance(node, Projection):
                ops.append(node.relation if grounded else "r")
                node = node.arg
            else:
                ops.append(-2 if grounded else "n")
                node = node.arg
        base = (node.entity if grounded else "e") if isinstance(node, Anchor) else to_betae(node)
        return (base, tuple(reversed(ops))) if ops else base
    parts = tuple(to_betae(a) for a in query.args)
    if isinstance(query, Union):
        return (*parts, (-1 if grounded else "u",))
    return parts


def _has_holes(query: Query) -> bool:
    if isinstance(query, Anchor):
        return query.entity == HOLE
    if isinstance(query, Projection):
        return query.relation == HOLE or _has_holes(query.arg)
    if isinstance(query, Negation):
        return _has_holes(query.arg)
    return any(_has_holes(a) for a in query.args)


def from_betae(data: Any) -> Query:
    """Parse a grounded BetaE/Query2Box query tuple (or an ``'e'/'r'/'n'/'u'`` structure)."""
    if not isinstance(data, (tuple, list)) or len(data) < 2:
        raise QueryFormatError(f"not a BetaE query: {data!r}")
    last = data[-1]
    if isinstance(last, (tuple, list)) and all(_is_op(x) for x in last):
        if len(last) == 1 and last[0] in (-1, "u"):
            return Union(tuple(from_betae(part) for part in data[:-1]))
        if len(data) != 2:
            raise QueryFormatError(f"not a BetaE query: {data!r}")
        node: Query = _betae_base(data[0])
        for op in last:
            node = (
                Negation(node)
                if op in (-2, "n")
                else Projection(HOLE if op == "r" else int(op), node)
            )
        return node
    return Intersection(tuple(from_betae(part) for part in data))


def _is_op(x: Any) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool) and x >= -2) or x in ("r", "n", "u")


def _betae_base(data: Any) -> Query:
    if data == "e":
        return _A
    if isinstance(data, int) and not isinstance(data, bool) and data >= 0:
        return Anchor(int(data))
    return from_betae(data)


# ---------------------------------------------------------------------- JSON with names
def query_to_json(query: Query, entities: Vocabulary, relations: Vocabulary) -> list[Any]:
    """The named nested-list form of ``query`` (see the module docstring)."""
    if isinstance(query, Anchor):
        return ["e", entities.name(query.entity)]
    if isinstance(query, Projection):
        return ["p", relations.name(query.relation), query_to_json(query.arg, entities, relations)]
    if isinstance(query, Negation):
        return ["not", query_to_json(query.arg, entities, relations)]
    op = "and" if isinstance(query, Intersection) else "or"
    return [op, *(query_to_json(a, entities, relations) for a in query.args)]


def query_from_json(data: Any, entities: Vocabulary, relations: Vocabulary) -> Query:
    """Parse the named nested-list form (:class:`QueryFormatError`/``UnknownNameError`` if bad)."""
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise QueryFormatError(f"expected [operator, ...], got {_short(data)}")
    op, rest = data[0], data[1:]
    if op == "e" and len(rest) == 1 and isinstance(rest[0], str):
        return Anchor(entities.id(rest[0]))
    if op == "p" and len(rest) == 2 and isinstance(rest[0], str):
        return Projection(relations.id(rest[0]), query_from_json(rest[1], entities, relations))
    if op == "not" and len(rest) == 1:
        return Negation(query_from_json(rest[0], entities, relations))
    if op in ("and", "or") and len(rest) >= 2:
        args = tuple(query_from_json(a, entities, relations) for a in rest)
        return Intersection(args) if op == "and" else Union(args)
    if op not in ("e", "p", "not", "and", "or"):
        raise UnknownNameError("query operator", op, ("e", "p", "and", "or", "not"))
    raise QueryFormatError(f"malformed {op!r} node: {_short(data)}")


def _short(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 60 else text[:57] + "..."
