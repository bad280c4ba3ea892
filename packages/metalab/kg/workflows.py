"""End-to-end helpers behind the CLI: generate a query set, find a model's graph."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.core.seeding import make_generator
from metalab.kg.generation import check_split_edges, generate_queries
from metalab.kg.graphs import BUNDLED_DATASETS, SPLITS, KnowledgeGraph, load_graph
from metalab.kg.predictors import LinkPredictor
from metalab.kg.querysets import QuerySet, check_output_folder, save_query_set

__all__ = ["generate_query_set", "model_graph"]


def model_graph(
    predictor: LinkPredictor, dataset: str | None, model: str | os.PathLike[str]
) -> KnowledgeGraph:
    """The graph ``dataset`` (default: the one the model was trained on), checked against it.

    Known/predicted edge labels and filtered ranks are only meaningful when both the entity
    and the relation vocabularies are the model's, so any difference is refused here.

    Raises:
        ConfigError: the model names no graph, its graph folder no longer exists, or the
            graph's vocabularies differ from the model's.
    """
    source = str(predictor.metadata.get("dataset_source", "") or "")
    name = dataset or source.removeprefix("pykeen:")
    if not name:
        raise ConfigError(f"{os.fspath(model)}: metadata names no dataset; pass --dataset")
    moved = dataset is None and not source.startswith("pykeen:") and not os.path.isdir(name)
    if moved and name.lower() not in BUNDLED_DATASETS:
        raise ConfigError(
            f"the graph folder {name} that model {os.fspath(model)} was trained on no "
            "longer exists; pass --dataset with its new location"
        )
    graph = load_graph(name)
    if graph.entities != predictor.entities or graph.relations != predictor.relations:
        which = "entities" if graph.entities != predictor.entities else "relations"
        raise ConfigError(
            f"the model's vocabularies do not match graph {name!r} (other {which} than "
            f"model {os.fspath(model)})"
        )
    return graph


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
    if out is not None:
        check_output_folder(Path(out))
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
