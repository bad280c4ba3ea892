"""BetaE-style grounding of complex queries with easy and hard answers.

Follows the generator of BetaE (Ren & Leskovec 2020, App. A; ``create_queries.py`` of
snap-stanford/KGReasoning) on the nested graphs ``G_train ⊂ G_valid ⊂ G_test``:

1. pick an answer uniformly among the entities with an incoming edge in the split's graph;
2. ground the structure backwards from it: each projection picks a random incoming
   relation type of the current entity (never the inverse of the relation just chosen
   above it in the same chain, 40 tries) and a random head through it; the branches of an
   intersection or union share the answer and must not be identical; a negated branch is
   grounded like a positive one;
3. compute the answers on the split's graph (``full``) and on the graph before it
   (``small``); easy answers are ``small``, hard answers ``full − small``;
4. drop the query when ``full`` is empty, when it has no hard answer (valid/test splits),
   when a negation query's negation removes no answer (``small − full`` empty), when
   ``max(|full − small|, |small − full|)`` exceeds the optional cap, or when it repeats.

Each hard answer also records the fewest links outside the smaller graph that a grounding
reaching it needs (``hard_missing_links``): 1 means a single missing link explains it,
the measure of "Is complex query answering really complex?" (ICML 2025).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.kg.graphs import SPLITS, KnowledgeGraph
from metalab.kg.queries import (
    STRUCTURES,
    Anchor,
    Intersection,
    Negation,
    Projection,
    Query,
    template_of,
)

__all__ = [
    "GenerationReport",
    "GraphIndex",
    "GroundedQuery",
    "check_split_edges",
    "generate_queries",
]

_RELATION_TRIES = 40  # BetaE's retries for a relation that does not walk straight back


@dataclass(frozen=True)
class GroundedQuery:
    """A grounded query with its easy and hard answers (entity ids, sorted)."""

    structure: str
    query: Query
    easy: tuple[int, ...]
    hard: tuple[int, ...]
    hard_missing_links: tuple[int, ...] = ()


@dataclass
class GenerationReport:
    """What generation tried and why candidates were dropped, per structure."""

    accepted: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)


class GraphIndex:
    """Adjacency of one graph (query-relation id triples) for set evaluation and sampling."""

    def __init__(
        self,
        triples: torch.Tensor | np.ndarray,
        num_entities: int,
        *,
        missing: np.ndarray | None = None,
    ) -> None:
        data = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        self.num_entities = num_entities
        order = np.lexsort((data[:, 0], data[:, 1]))  # by relation, then head
        self.heads, self.rels, self.tails = data[order, 0], data[order, 1], data[order, 2]
        self.missing = None if missing is None else np.asarray(missing)[order].astype(np.int64)
        num_rel = int(self.rels.max()) + 1 if len(self.rels) else 0
        self._rel_start = np.searchsorted(self.rels, np.arange(num_rel + 1))
        self._build_in_groups(data)

    def _build_in_groups(self, data: np.ndarray) -> None:
        order = np.lexsort((data[:, 0], data[:, 1], data[:, 2]))  # by tail, relation, head
        t, r = data[order, 2], data[order, 1]
        self._in_heads = data[order, 0]
        new = np.ones(len(t), dtype=bool)
        new[1:] = (t[1:] != t[:-1]) | (r[1:] != r[:-1])
        starts = np.flatnonzero(new)
        self._group_lo, self._group_hi = starts, np.append(starts[1:], len(t))
        self._group_rel, group_tail = r[starts], t[starts]
        self._tail_first = np.searchsorted(group_tail, np.arange(self.num_entities + 1))
        self.answer_pool = np.flatnonzero(np.diff(self._tail_first) > 0)

    def _edges(self, relation: int) -> slice:
        if relation + 1 >= len(self._rel_start):
            return slice(0, 0)
        return slice(int(self._rel_start[relation]), int(self._rel_start[relation + 1]))

    def answers(self, query: Query) -> np.ndarray:
        """Boolean mask ``[N]`` of the entities ``query`` denotes on this graph."""
        if isinstance(query, Anchor):
            mask = np.zeros(self.num_entities, dtype=bool)
            mask[query.entity] = True
            return mask
        if isinstance(query, Projection):
            sub, edges = self.answers(query.arg), self._edges(query.relation)
            mask = np.zeros(self.num_entities, dtype=bool)
            mask[self.tails[edges][sub[self.heads[edges]]]] = True
            return mask
        if isinstance(query, Negation):
            return ~self.answers(query.arg)
        parts = [self.answers(a) for a in query.args]
        return (
            np.logical_and.reduce(parts)
            if isinstance(query, Intersection)
            else np.logical_or.reduce(parts)
        )

    def missing_links(self, query: Query) -> np.ndarray:
        """Fewest missing edges of a grounding that reaches each entity (``inf``: none).

        A min-plus evaluation of the query tree: projections add the edge's weight, the
        branches of an intersection add up (they share only the answer), unions take the
        minimum, and a negated branch must not reach the entity on this (full) graph.
        """
        if self.missing is None:
            raise ConfigError("this graph index has no missing-edge weights")
        if isinstance(query, Anchor):
            cost = np.full(self.num_entities, np.inf)
            cost[query.entity] = 0.0
            return cost
        if isinstance(query, Projection):
            sub, edges = self.missing_links(query.arg), self._edges(query.relation)
            cost = np.full(self.num_entities, np.inf)
            np.minimum.at(cost, self.tails[edges], sub[self.heads[edges]] + self.missing[edges])
            return cost
        if isinstance(query, Negation):
            return np.where(self.answers(query.arg), np.inf, 0.0)
        parts = [self.missing_links(a) for a in query.args]
        return np.sum(parts, axis=0) if isinstance(query, Intersection) else np.min(parts, axis=0)

    def ground(
        self, template: Query, answer: int, rng: np.random.Generator, previous: int = -1
    ) -> Query | None:
        """Ground ``template`` backwards so that ``answer`` is reachable; ``None`` if stuck."""
        if isinstance(template, Anchor):
            return Anchor(int(answer))
        if isinstance(template, Negation):
            arg = self.ground(template.arg, answer, rng, previous)
            return None if arg is None else Negation(arg)
        if isinstance(template, Projection):
            return self._ground_projection(template, answer, rng, previous)
        args = [self.ground(a, answer, rng) for a in template.args]
        if any(a is None for a in args):
            return None
        groups = Counter((template_of(t), a) for t, a in zip(template.args, args, strict=True))
        if max(groups.values()) > 1:  # two identical branches
            return None
        return type(template)(tuple(a for a in args if a is not None))

    def _ground_projection(
        self, template: Projection, answer: int, rng: np.random.Generator, previous: int
    ) -> Query | None:
        lo, hi = int(self._tail_first[answer]), int(self._tail_first[answer + 1])
        if lo == hi:
            return None
        for _ in range(_RELATION_TRIES):
            group = int(rng.integers(lo, hi))
            relation = int(self._group_rel[group])
            if previous < 0 or relation // 2 != previous // 2 or relation == previous:
                break
        else:
            return None
        head = int(self._in_heads[int(rng.integers(self._group_lo[group], self._group_hi[group]))])
        chained = isinstance(template.arg, (Projection, Negation))
        arg = self.ground(template.arg, head, rng, relation if chained else -1)
        return None if arg is None else Projection(relation, arg)


def _indices(graph: KnowledgeGraph, split: str, reciprocal: bool) -> tuple[GraphIndex, GraphIndex]:
    """Index of the split's graph (with missing-edge weights) and of the graph before it."""
    full = graph.graph(split, reciprocal=True)
    if split == "train":
        small = full[:0]
    else:
        small = graph.graph(SPLITS[SPLITS.index(split) - 1], reciprocal=True)
    if not reciprocal:
        full, small = full[full[:, 1] % 2 == 0], small[small[:, 1] % 2 == 0]
    missing = ~np.isin(_triple_keys(full, graph), _triple_keys(small, graph))
    return (
        GraphIndex(full, graph.num_entities, missing=missing),
        GraphIndex(small, graph.num_entities),
    )


def _triple_keys(triples: torch.Tensor, graph: KnowledgeGraph) -> np.ndarray:
    h, r, t = triples.numpy().astype(np.int64).T
    return (h * (2 * graph.num_relations) + r) * graph.num_entities + t


def _has_negation(query: Query) -> bool:
    if isinstance(query, Negation):
        return True
    if isinstance(query, Projection):
        return _has_negation(query.arg)
    if isinstance(query, Anchor):
        return False
    return any(_has_negation(a) for a in query.args)


def check_split_edges(graph: KnowledgeGraph, splits: Sequence[str]) -> None:
    """Refuse a split that adds no edge to the graph before it: its queries have no answer.

    A train query's answers are train edges; a valid or test query's hard answers are its
    split's edges missing from the graph before it (steps 3-4), so such a split would give
    an empty query set that evaluation then refuses. Checked before anything is generated.

    Raises:
        ConfigError: one line naming the graph and the split.
    """
    where = f" ({graph.source})" if graph.source else ""
    empty = [split for split in splits if graph.split(split).shape[0] == 0]
    if len(empty) > 1:  # name them all at once rather than one per try
        raise ConfigError(
            f"graph {graph.name!r}{where} has no {' or '.join(empty)} triples; nothing to "
            "generate (a split's queries get their hard answers from its own new edges)"
        )
    for split in splits:
        earlier = list(SPLITS[: SPLITS.index(split)])
        need = f"{split} edges" + (f" not in {' or '.join(earlier)}" if earlier else "")
        answers = "answers" if split == "train" else "hard answers"
        why = f"nothing to generate ({split} queries' {answers} come from {need})"
        triples = graph.split(split)
        if triples.shape[0] == 0:
            raise ConfigError(f"graph {graph.name!r}{where} has no {split} triples; {why}")
        before = graph.graph(earlier[-1], reciprocal=False) if earlier else triples[:0]
        if np.isin(_base_keys(triples, graph), _base_keys(before, graph)).all():
            raise ConfigError(
                f"graph {graph.name!r}{where}: every {split} triple is also in "
                f"{' or '.join(earlier)}; {why}"
            )


def _base_keys(triples: torch.Tensor, graph: KnowledgeGraph) -> np.ndarray:
    h, r, t = triples.numpy().astype(np.int64).T
    return (h * graph.num_relations + r) * graph.num_entities + t


def _check_arguments(
    split: str, per_structure: int, structures: Sequence[str] | None, max_answers: int | None
) -> list[str]:
    names = list(STRUCTURES) if structures is None else list(structures)
    for name in names:
        if name not in STRUCTURES:
            raise UnknownNameError("query structure", name, STRUCTURES)
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    if per_structure < 1 or (max_answers is not None and max_answers < 1):
        raise ConfigError("per_structure and max_answers must be ≥ 1")
    return names


def generate_queries(
    graph: KnowledgeGraph,
    *,
    split: str = "test",
    per_structure: int = 100,
    structures: Sequence[str] | None = None,
    generator: torch.Generator,
    max_answers: int | None = None,
    reciprocal: bool = True,
    max_attempts: int | None = None,
) -> tuple[list[GroundedQuery], GenerationReport]:
    """Generate up to ``per_structure`` queries of each structure for one split, BetaE-style.

    Args:
        graph: the knowledge graph.
        split: ``train`` (answers on G_train, all hard), ``valid`` or ``test``.
        per_structure: queries wanted per structure.
        structures: BetaE names (default: all 14).
        generator: the random stream; each structure draws from its own sub-stream, so
            adding a structure does not change the others' queries.
        max_answers: BetaE's cap on ``max(|hard|, |removed by negation|)``; ``None`` = no cap.
        reciprocal: walk inverse relations too (BetaE's graphs include them).
        max_attempts: candidates tried per structure (default ``200 · per_structure + 1000``);
            small graphs may run out of distinct queries first (see the report).

    Returns:
        The queries (structure by structure) and a :class:`GenerationReport`.

    Raises:
        ConfigError: bad arguments, or the split adds no edge (:func:`check_split_edges`).
    """
    names = _check_arguments(split, per_structure, structures, max_answers)
    check_split_edges(graph, [split])
    full, small = _indices(graph, split, reciprocal)
    base_seed = int(torch.randint(0, 2**62, (), generator=generator))
    report, out = GenerationReport(), []
    attempts = max_attempts if max_attempts is not None else 200 * per_structure + 1000
    for name in names:
        rng = np.random.default_rng([base_seed, SPLITS.index(split), list(STRUCTURES).index(name)])
        queries, tried, dropped = _generate_structure(
            name, full, small, split, per_structure, rng, max_answers, attempts
        )
        out.extend(queries)
        report.accepted[name], report.attempts[name], report.dropped[name] = (
            len(queries),
            tried,
            dropped,
        )
    return out, report


def _generate_structure(
    name: str,
    full: GraphIndex,
    small: GraphIndex,
    split: str,
    wanted: int,
    rng: np.random.Generator,
    max_answers: int | None,
    attempts: int,
) -> tuple[list[GroundedQuery], int, dict[str, int]]:
    template, seen, dropped = STRUCTURES[name], set(), Counter[str]()
    out: list[GroundedQuery] = []
    tried = 0
    while len(out) < wanted and tried < attempts and len(full.answer_pool):
        tried += 1
        query = full.ground(template, int(rng.choice(full.answer_pool)), rng)
        reason = "broken" if query is None else None
        if query is not None:
            big, little = full.answers(query), small.answers(query)
            reason = _drop_reason(
                _has_negation(template), big, little, split, max_answers, query in seen
            )
        if reason is not None or query is None:
            dropped[reason or "broken"] += 1
            continue
        seen.add(query)
        hard = np.flatnonzero(big & ~little)
        links = full.missing_links(query)[hard] if split != "train" else np.zeros(0)
        out.append(
            GroundedQuery(
                name,
                query,
                tuple(np.flatnonzero(little).tolist()),
                tuple(hard.tolist()),
                tuple(int(x) for x in links),
            )
        )
    return out, tried, dict(dropped)


def _drop_reason(
    negation: bool,
    big: np.ndarray,
    little: np.ndarray,
    split: str,
    max_answers: int | None,
    repeated: bool,
) -> str | None:
    """BetaE's rejection rules, in its order."""
    if not big.any():
        return "empty"
    if split != "train":
        if not (big & ~little).any():
            return "no_hard_answer"
        if negation and not (little & ~big).any():
            return "negation_no_effect"
    if (
        max_answers is not None
        and max(int((big & ~little).sum()), int((little & ~big).sum())) > max_answers
    ):
        return "too_many_answers"
    if repeated:
        return "duplicate"
    return None
