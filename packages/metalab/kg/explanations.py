"""Explanations of CQD answers: the variable assignment behind each answer, atom by atom.

The best branch of CQD-Beam (or the argmax of exact inference) for an answer is an
assignment of every variable; its atoms with their truth values φ = sigmoid(score), marked
as known training edges or as predicted (missing) links, *are* the explanation
(Arakelyan et al. 2021, Sec. 5, "Explaining answers"). :func:`rescore_explanation`
recomputes the score from the atoms alone: each atom is scored on its own with
:meth:`~metalab.kg.LinkPredictor.score_triples` and combined with the t-norm as the tree
says, which reproduces :attr:`Explanation.score` exactly. The solver's ranking score uses
batched scoring and agrees with it up to float round-off (≈1e-6).

A negated sub-formula of several atoms, ``¬(A ∧ B)``, is worth ``1 − t(A, B)``, not a
combination of ``1 − φ(A)`` and ``1 − φ(B)``, so :attr:`Explanation.parts` keeps it as one
:class:`NegatedGroup` with its inner value: the score can be rebuilt from what is shown.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from metalab.core.errors import ConfigError
from metalab.kg.predictors import LinkPredictor
from metalab.kg.solvers import NodeTrace, Solution, SolverConfig
from metalab.kg.tnorms import make_tnorm

__all__ = [
    "ExplainedAtom",
    "Explanation",
    "ExplanationNode",
    "NegatedGroup",
    "explain",
    "rescore_explanation",
]


@dataclass(frozen=True)
class ExplainedAtom:
    """One atom ``relation(head, tail)`` of an explanation (query relation ids)."""

    head: int
    relation: int
    tail: int
    truth: float
    known: bool | None
    negated: bool


@dataclass(frozen=True)
class NegatedGroup:
    """``¬(…)`` over several atoms: ``value`` is the un-negated inner truth, worth ``1 − value``."""

    value: float
    parts: list[ExplainedAtom | NegatedGroup]


Part = ExplainedAtom | NegatedGroup


@dataclass
class ExplanationNode:
    """A node of the explained query tree at the entity chosen for it."""

    node: str
    entity: int
    variable: str | None = None
    relation: int | None = None
    children: list[ExplanationNode] = field(default_factory=list)


@dataclass
class Explanation:
    """Why ``answer`` scored ``score``: the assignment, the atoms and the tree they form."""

    answer: int
    score: float
    solver_score: float
    assignment: dict[str, int]
    atoms: list[ExplainedAtom]
    tree: ExplanationNode
    parts: list[Part] = field(default_factory=list)  # atoms, negated groups kept whole

    def to_json(self, predictor: LinkPredictor) -> dict[str, Any]:
        """A JSON-able dict with entity and relation names.

        ``atoms`` lists atoms and, for ``¬`` over several atoms, ``{"negated": true, "value":
        inner truth, "atoms": [...]}`` groups (the group counts ``1 − value``).
        """
        ent, rel = predictor.entities, predictor.query_relations

        def part(a: Part) -> dict[str, Any]:
            if isinstance(a, NegatedGroup):
                return {"negated": True, "value": a.value, "atoms": [part(p) for p in a.parts]}
            return {
                "head": ent.name(a.head),
                "relation": rel.name(a.relation),
                "tail": ent.name(a.tail),
                "truth": a.truth,
                "edge": "unknown" if a.known is None else "known" if a.known else "predicted",
                "negated": a.negated,
            }

        return {
            "answer": ent.name(self.answer),
            "score": self.score,
            "solver_score": self.solver_score,
            "assignment": {v: ent.name(e) for v, e in self.assignment.items()},
            "atoms": [part(a) for a in self.parts],
        }


def _build(
    trace: NodeTrace,
    row: int,
    entity: int,
    path: tuple[int, ...],
    names: dict[Any, str],
    beam: bool = False,
) -> ExplanationNode:
    node = ExplanationNode(trace.node, entity, variable=names.get(path))
    if trace.node == "anchor":
        return node
    if trace.node == "projection":
        assert trace.relations is not None
        node.relation = int(trace.relations[row])
        heads = trace.beam_heads if beam else trace.heads
        assert heads is not None
        head = int(heads[row, entity])
        child = _build(trace.children[0], row, head, (*path, 0), names, trace.from_beam)
        node.children = [child]
    elif trace.node == "or" and trace.branch is not None:
        from_beam = beam and trace.beam_branch is not None
        i = int((trace.beam_branch if from_beam else trace.branch)[row, entity])  # type: ignore[index]
        sub_beam = from_beam and trace.children[i].beam is not None
        child = _build(trace.children[i], row, entity, (*path, i), names, sub_beam)
        node.children = [child]
        node.variable = str(i)  # which disjunct was chosen
    else:
        node.children = [
            _build(c, row, entity, (*path, i), names) for i, c in enumerate(trace.children)
        ]
    return node


def _truth(predictor: LinkPredictor, config: SolverConfig, h: int, r: int, t: int) -> float:
    one = torch.tensor([h]), torch.tensor([r]), torch.tensor([t])
    raw = predictor.score_triples(*one)
    return float((torch.sigmoid(raw) if config.sigmoid else raw)[0])


def _value(
    predictor: LinkPredictor,
    config: SolverConfig,
    node: ExplanationNode,
    atoms: list[ExplainedAtom] | None,
    known: set[tuple[int, int, int]] | None,
    negated: bool = False,
    parts: list[Part] | None = None,
) -> torch.Tensor:
    """Truth value of ``node`` at its entity, from its atoms (appended to ``atoms``).

    ``parts`` receives the same atoms, with each ``¬`` over several atoms as one group.
    """
    t = make_tnorm(config.tnorm)
    if node.node == "anchor":
        return torch.tensor(1.0)
    if node.node == "projection":
        child = node.children[0]
        assert node.relation is not None
        below = _value(predictor, config, child, atoms, known, negated, parts)
        phi = _truth(predictor, config, child.entity, node.relation, node.entity)
        if atoms is not None:
            edge = (child.entity, node.relation, node.entity)
            is_known = None if known is None else edge in known
            atoms.append(ExplainedAtom(*edge, phi, is_known, negated))
            if parts is not None:
                parts.append(ExplainedAtom(*edge, phi, is_known, False))
        return t.tnorm(below, torch.tensor(phi))
    if node.node == "not":
        inner: list[Part] = []
        value = _value(predictor, config, node.children[0], atoms, known, not negated, inner)
        if parts is not None:
            first = inner[0] if len(inner) == 1 else None  # ¬A alone stays one atom
            parts.append(
                dataclasses.replace(first, negated=True)
                if isinstance(first, ExplainedAtom)
                else NegatedGroup(float(value), inner)
            )
        return 1.0 - value
    values = [_value(predictor, config, c, atoms, known, negated, parts) for c in node.children]
    out = values[0]
    for v in values[1:]:
        out = t.tnorm(out, v) if node.node == "and" else t.tconorm(out, v)
    return out


def rescore_explanation(
    predictor: LinkPredictor, explanation: Explanation, config: SolverConfig
) -> float:
    """Recompute an explanation's score from its atoms alone (equals ``explanation.score``)."""
    return float(_value(predictor, config, explanation.tree, None, None))


def explain(
    predictor: LinkPredictor,
    solution: Solution,
    query_index: int,
    answer: int,
    *,
    variables: dict[tuple[int, ...], str] | None = None,
    known: set[tuple[int, int, int]] | None = None,
) -> Explanation:
    """The explanation of ``answer`` for query ``query_index`` of ``solution``.

    Args:
        predictor: the predictor the solution was computed with.
        solution: the output of :func:`metalab.kg.solvers.solve`.
        query_index: which query.
        answer: the answer entity id.
        variables: tree path → variable name (from :func:`metalab.kg.parse_query`);
            unnamed variables are called ``?v<path>``.
        known: training edges as (head, query relation, tail) ids (with reciprocals), to
            mark each atom known or predicted; ``None`` leaves it unknown.
    """
    if not solution.traces:
        raise ConfigError(
            f"the {solution.config.solver} solver gives no explanations; use beam or exact"
        )
    trace, row = solution.traces[query_index]
    tree = _build(trace, row, int(answer), (), dict(variables or {}))
    atoms: list[ExplainedAtom] = []
    parts: list[Part] = []
    score = float(_value(predictor, solution.config, tree, atoms, known, parts=parts))
    assignment: dict[str, int] = {}
    _assign(tree, (), variables or {}, assignment)
    return Explanation(
        int(answer),
        score,
        float(solution.scores[query_index, int(answer)]),
        assignment,
        atoms,
        tree,
        parts,
    )


def _assign(
    node: ExplanationNode,
    path: tuple[int, ...],
    names: dict[tuple[int, ...], str],
    out: dict[str, int],
) -> None:
    if node.node == "projection":
        name = names.get(path) or "?v" + "".join(str(i) for i in path)
        out.setdefault(name, node.entity)
    for i, child in enumerate(node.children):
        index = int(node.variable) if node.node == "or" and node.variable is not None else i
        _assign(child, (*path, index), names, out)
