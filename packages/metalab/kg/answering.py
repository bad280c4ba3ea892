"""Answer one query written in the query language, with explanations (``metalab kg answer``).

:func:`answer_query` parses the text (:mod:`metalab.kg.query_language`), solves it
(:mod:`metalab.kg.solvers`; CQD-CO via :mod:`metalab.kg.co`), and explains the top answers
(:mod:`metalab.kg.explanations`). :func:`format_answers` prints them for people; ``to_json`` for
programs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metalab.core.errors import ConfigError
from metalab.kg.explanations import ExplainedAtom, Explanation, NegatedGroup, Part, explain
from metalab.kg.graphs import KnowledgeGraph
from metalab.kg.predictors import LinkPredictor
from metalab.kg.queries import structure_name
from metalab.kg.query_language import ParsedQuery, parse_query
from metalab.kg.solvers import SolverConfig, solve

__all__ = ["QueryAnswers", "answer_query", "format_answers", "known_edges"]


@dataclass
class QueryAnswers:
    """The top answers of one query, each with its score and (optionally) explanation."""

    text: str
    parsed: ParsedQuery
    config: SolverConfig
    answers: list[int]
    scores: list[float]
    explanations: list[Explanation] | None

    def to_json(self, predictor: LinkPredictor) -> dict[str, Any]:
        """A JSON-able dict with entity/relation names."""
        names = predictor.entities
        rows = []
        for rank, (entity, score) in enumerate(zip(self.answers, self.scores, strict=True), 1):
            row: dict[str, Any] = {"rank": rank, "entity": names.name(entity), "score": score}
            if self.explanations is not None:
                row["explanation"] = self.explanations[rank - 1].to_json(predictor)
            rows.append(row)
        return {
            "query": self.text,
            "answer_variable": self.parsed.answer,
            "structure": structure_name(self.parsed.query),
            "solver": self.config.solver,
            "k": self.config.k,
            "tnorm": self.config.tnorm,
            "answers": rows,
        }


def known_edges(graph: KnowledgeGraph, upto: str = "train") -> set[tuple[int, int, int]]:
    """Edges of ``G_upto`` as (head, query relation, tail) id triples, with reciprocals."""
    return {(int(h), int(r), int(t)) for h, r, t in graph.graph(upto).tolist()}


def answer_query(
    predictor: LinkPredictor,
    text: str,
    config: SolverConfig | None = None,
    *,
    top: int = 10,
    explain_answers: bool = False,
    known: set[tuple[int, int, int]] | None = None,
) -> QueryAnswers:
    """Parse, solve and (optionally) explain one query.

    Args:
        predictor: the link predictor.
        text: the query (see :mod:`metalab.kg.query_language`).
        config: solver settings (default CQD-Beam, k = 16, product t-norm).
        top: how many answers to return.
        explain_answers: attach an :class:`~metalab.kg.explanations.Explanation` to each answer.
        known: training edges, to mark explanation atoms as known or predicted.

    Raises:
        QuerySyntaxError: the text is malformed or names unknown entities/relations.
        ConfigError: ``top`` < 1, or the solver cannot run with these settings.
    """
    if top < 1:
        raise ConfigError(f"top must be ≥ 1, got {top}")
    config = config or SolverConfig()
    parsed = parse_query(text, predictor.entities, predictor.query_relations)
    solution = solve(predictor, [parsed.query], config)
    scores, ids = solution.scores[0].topk(min(top, predictor.num_entities))
    answers = [int(i) for i in ids]
    explanations = None
    if explain_answers:
        explanations = [
            explain(predictor, solution, 0, a, variables=parsed.variables, known=known)
            for a in answers
        ]
    return QueryAnswers(
        text, parsed, config, answers, [float(s) for s in scores.cpu()], explanations
    )


def _atom_text(atom: ExplainedAtom, predictor: LinkPredictor) -> str:
    ent, rel = predictor.entities, predictor.query_relations
    # shown as scored: r(?x, a) is answered as r^-1(a, ?x), whose φ is the reciprocal
    # relation's score, so printing it as r(x, a) would pair a φ with the wrong triple
    text = f"{rel.name(atom.relation)}({ent.name(atom.head)}, {ent.name(atom.tail)})"
    return f"NOT {text}" if atom.negated else text


def format_answers(result: QueryAnswers, predictor: LinkPredictor) -> str:
    """Human-readable answers, one per line, explanations indented below each."""
    structure = structure_name(result.parsed.query) or "custom tree"
    c = result.config
    lines = [
        f"query: {result.text}",
        f"answer variable {result.parsed.answer}; structure {structure}; solver {c.solver} "
        f"(k={c.k}, t-norm {c.tnorm}, union {c.union})",
    ]
    width = max(len(predictor.entities.name(a)) for a in result.answers)
    for rank, (entity, score) in enumerate(zip(result.answers, result.scores, strict=True), 1):
        lines.append(f"{rank:3d}. {predictor.entities.name(entity):<{width}}  {score:.4f}")
        if result.explanations is None:
            continue
        ex = result.explanations[rank - 1]
        assignment = ", ".join(
            f"{v} = {predictor.entities.name(e)}" for v, e in ex.assignment.items()
        )
        lines.append(f"       {assignment}  (explanation score {ex.score:.4f})")
        lines.extend(_part_lines(ex.parts, predictor, "       "))
    return "\n".join(lines)


def _part_lines(parts: list[Part], predictor: LinkPredictor, indent: str) -> list[str]:
    """Atoms one a line; ``¬`` over several atoms as one block worth ``1 − t(inner)``."""
    lines = []
    for part in parts:
        if isinstance(part, NegatedGroup):
            rebuilt = f"= 1 − {part.value:.4f} = {1 - part.value:.4f}"
            lines.append(f"{indent}{'NOT (':<{55 - len(indent)}} {rebuilt}")
            lines.extend(_part_lines(part.parts, predictor, indent + "  "))
            lines.append(f"{indent})")
            continue
        edge = "?" if part.known is None else "known" if part.known else "predicted"
        text = _atom_text(part, predictor)
        lines.append(f"{indent}{text:<{55 - len(indent)}} φ={part.truth:.4f}  {edge}")
    return lines
