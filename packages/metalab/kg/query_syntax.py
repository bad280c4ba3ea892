"""The syntax tree of the query language and the checks that it can be answered.

:mod:`metalab.kg.query_language` parses text into these nodes; before orienting the atoms
into a :mod:`metalab.kg.queries` tree it checks here what CQD cannot answer (Arakelyan et
al. 2021, Sec. 3: tree-shaped queries with one answer variable): a query without any
variable, an atom between two entities, and atoms that link variables in a cycle. Each is
named directly, with the column of the offending atom.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from metalab.kg.graphs import Vocabulary
from metalab.kg.queries import QueryFormatError

__all__ = [
    "Atom",
    "Disjunction",
    "Literal",
    "Negated",
    "QuerySyntaxError",
    "atoms_of",
    "check_acyclic",
    "check_variables",
    "default_answer",
    "flat_literals",
    "quoted_name",
    "variables_of",
]


class QuerySyntaxError(QueryFormatError):
    """A query text is malformed or names an unknown entity/relation (one line, column)."""

    def __init__(self, message: str, text: str, position: int) -> None:
        self.position = position
        super().__init__(f"query error at column {position + 1}: {message}")


@dataclass(frozen=True)
class Atom:
    """``relation(subject, object)`` as written; ``pos`` is the relation's column (0-based)."""

    relation: int
    subject: str | int  # variable name or entity id
    object: str | int
    pos: int


@dataclass(frozen=True)
class Negated:
    """``!literal`` or ``!(formula)``; its variables other than the constrained one are local."""

    body: Disjunction
    pos: int


@dataclass(frozen=True)
class Disjunction:
    """A formula: conjunctions (tuples of literals) joined by ``|``; one disjunct is no union."""

    disjuncts: tuple[tuple[Literal, ...], ...]
    pos: int


Literal = Atom | Negated | Disjunction


def flat_literals(formula: Disjunction) -> list[Literal]:
    """The top-level literals of every disjunct."""
    return [lit for conj in formula.disjuncts for lit in conj]


def atoms_of(node: Literal) -> list[Atom]:
    """Every atom under ``node``, nested negations and disjunctions included."""
    if isinstance(node, Atom):
        return [node]
    if isinstance(node, Negated):
        return atoms_of(node.body)
    return [a for conj in node.disjuncts for lit in conj for a in atoms_of(lit)]


def variables_of(node: Literal) -> set[str]:
    """The variable names of every atom under ``node``."""
    return {t for a in atoms_of(node) for t in (a.subject, a.object) if isinstance(t, str)}


def check_variables(
    formula: Disjunction, text: str, entities: Vocabulary, relations: Vocabulary
) -> None:
    """Refuse ground atoms: CQD ranks the entities of a variable, it does not check facts."""
    atoms = atoms_of(formula)
    ground = [a for a in atoms if not isinstance(a.subject, str) and not isinstance(a.object, str)]
    if len(ground) == len(atoms):
        first = atoms[0]
        relation = quoted_name(relations.names[first.relation])
        anchor = quoted_name(entities.names[int(first.subject)])
        example = f", e.g. {relation}({anchor}, ?x)" if relation and anchor else ""
        raise QuerySyntaxError(
            f"query has no variable; put one where the answers go{example}"
            " (the answer variable is the one named in a '?x :' head, or else the only"
            " variable never used as a subject)",
            text,
            first.pos,
        )
    if ground:
        raise QuerySyntaxError(
            "atom has no variable; every atom must involve a ?variable linked to the answer",
            text,
            ground[0].pos,
        )


def quoted_name(name: str) -> str:
    """``name`` as the tokenizer reads it back: bare, in '…' or "…" (it has no escapes).

    A name holding both quote characters cannot be written in a query: ``""``.
    """
    if re.fullmatch(r"[\w\-./^~+@]+", name):
        return name
    if "'" not in name:
        return f"'{name}'"
    return f'"{name}"' if '"' not in name else ""


def check_acyclic(formula: Disjunction, text: str) -> None:
    """Refuse a conjunction whose literals link variables in a cycle (CQD answers trees only).

    An atom links its two variables; a nested negation or disjunction links the variables it
    shares with its sibling literals. Checked before the answer variable is chosen, so a
    cyclic query is named as such rather than as one without a clear answer variable (in a
    cycle every variable is a subject).
    """
    for conj in formula.disjuncts:
        linked: dict[str, set[str]] = {}
        for index, lit in enumerate(conj):
            if isinstance(lit, Atom):
                ends = [t for t in (lit.subject, lit.object) if isinstance(t, str)]
            else:
                check_acyclic(lit.body if isinstance(lit, Negated) else lit, text)
                others = [variables_of(x) for i, x in enumerate(conj) if i != index]
                ends = sorted(variables_of(lit).intersection(set().union(*others)))
            for a, b in itertools.pairwise(ends):
                _link(linked, a, b, lit.pos, text)


def _link(linked: dict[str, set[str]], a: str, b: str, pos: int, text: str) -> None:
    """Record that a literal links ``a`` and ``b``; a second path between them is a cycle."""
    if a == b:
        raise QuerySyntaxError(
            f"the query is not a tree: the atom relates {a} to itself", text, pos
        )
    cycle = _path(linked, a, b)
    if cycle:
        names = " - ".join([*cycle, a])
        raise QuerySyntaxError(
            f"the query is not a tree: its atoms form a cycle {names}", text, pos
        )
    linked.setdefault(a, set()).add(b)
    linked.setdefault(b, set()).add(a)


def _path(linked: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """Variables on a path ``start`` … ``goal`` through ``linked`` (empty if none)."""
    previous = {start: start}
    frontier = [start]
    while frontier and goal not in previous:
        step = []
        for var in frontier:
            for other in sorted(linked.get(var, ())):
                if other not in previous:
                    previous[other] = var
                    step.append(other)
        frontier = step
    if goal not in previous:
        return []
    path = [goal]
    while path[-1] != start:
        path.append(previous[path[-1]])
    return path[::-1]


def default_answer(literals: list[Literal], text: str) -> str:
    """The answer variable of a query without a head: the only variable never a subject."""
    atoms = [a for lit in literals for a in atoms_of(lit)]
    subjects = {a.subject for a in atoms}
    order = [t for a in atoms for t in (a.subject, a.object) if isinstance(t, str)]
    candidates = list(dict.fromkeys(v for v in order if v not in subjects))
    if len(candidates) != 1:
        found = ", ".join(candidates) or "none"
        raise QuerySyntaxError(
            f"cannot tell the answer variable (objects never used as subjects: {found}); "
            "start the query with '?x :'",
            text,
            0,
        )
    return candidates[0]
