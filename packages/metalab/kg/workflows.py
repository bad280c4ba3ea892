"""End-to-end helpers behind the CLI: generate and save a query set in one call."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.core.seeding import make_generator
from metalab.kg.generation import check_split_edges, generate_queries
from metalab.kg.graphs import SPLITS, KnowledgeGraph
from metalab.kg.querysets import QuerySet, save_query_set

__all__ = ["generate_query_set"]


def generate_query_set(
    graph: KnowledgeGraph,
    out: str | os.PathLike[str] | None,
    *,
    splits: Sequence[str] = ("valid", "test"),
    per_structure: int = 100,
    structures: Sequence[str] | None = None,
    max_answers: int | None = None,
    reciprocal: bool = True,
    max_attempts: int | None = None,
    seed: int = 0,
) -> QuerySet:
    """Generate BetaE-style queries for each split and save them to ``out`` (unless ``None``).

    Each split draws from its own stream ``make_generator(seed, "queries/<split>")``, so
    the test queries do not depend on whether valid queries were generated too.
    """
    if not splits:
        raise ConfigError(f"no split to generate; name at least one of {', '.join(SPLITS)}")
    for split in splits:
        if split not in SPLITS:
            raise UnknownNameError("split", split, SPLITS)
    if structures is not None and not structures:
        raise ConfigError("no query structure to generate; name at least one, or 'all'")
    if max_attempts is not None and max_attempts < 1:
        raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
    check_split_edges(graph, splits)  # before generating any split: refuse up front
    result, generation = {}, {}
    for split in splits:
        queries, report = generate_queries(
            graph,
            split=split,
            per_structure=per_structure,
            structures=structures,
            generator=make_generator(seed, f"queries/{split}"),
            max_answers=max_answers,
            reciprocal=reciprocal,
            max_attempts=max_attempts,
        )
        result[split] = queries
        generation[split] = dataclasses.asdict(report)
    meta = {"dataset": graph.name, "dataset_source": graph.source, "seed": seed}
    meta |= {"reciprocal": reciprocal, "max_answers": max_answers, "max_attempts": max_attempts}
    meta |= {"per_structure": per_structure, "generation": generation}
    query_set = QuerySet(graph.entities, graph.query_relations, result, meta)
    if out is not None:
        save_query_set(query_set, out, base_relations=graph.relations)
    return query_set
