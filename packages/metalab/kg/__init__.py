"""metalab.kg: knowledge graphs, BetaE-style complex-query sets and pykeen link predictors.

The pieces CQD's solvers build on (Arakelyan et al. 2021):

- graphs: :func:`load_graph` (pykeen's bundled ``nations``/``kinships``/``umls`` or a folder
  of TSV triples), :class:`Vocabulary`, reciprocal relations (``2k``/``2k+1``);
- queries: the 14 BetaE structures as trees (:data:`STRUCTURES`), BetaE-style generation with
  easy/hard answers (:func:`generate_queries`), a documented JSON-lines format
  (:func:`save_query_set`, :func:`load_query_set`), BetaE/Query2Box pickles through a
  restricted unpickler (:func:`safe_load_pickle`), statistics (:func:`query_set_stats`);
- link predictors through pykeen (:func:`train_link_predictor`, default ComplEx-N3) with
  the batched scoring interface :class:`LinkPredictor` (``score_tails`` etc.), saved as
  weights + JSON metadata;
- evaluation: filtered ranks of the BetaE protocol (:func:`rank_answers`,
  :func:`evaluate_link_prediction`).

Names are re-exported lazily so that ``metalab kg --help`` does not import torch or pykeen.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "graphs": [
        "BUNDLED_DATASETS",
        "INVERSE_SUFFIX",
        "SPLITS",
        "GraphFileError",
        "KnowledgeGraph",
        "Vocabulary",
        "inverse_relation",
        "load_graph",
        "read_triples_file",
        "with_reciprocals",
    ],
    "queries": [
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
    ],
    "generation": ["GenerationReport", "GraphIndex", "GroundedQuery", "generate_queries"],
    "querysets": [
        "QUERY_SET_FORMAT",
        "QuerySet",
        "format_stats_table",
        "load_query_set",
        "query_set_stats",
        "save_query_set",
    ],
    "betae": [
        "ALLOWED_GLOBALS",
        "RestrictedUnpickler",
        "UnsafePickleError",
        "load_betae_folder",
        "safe_load_pickle",
    ],
    "predictors": [
        "DEFAULT_MEMORY_BUDGET",
        "LinkPredictor",
        "PredictorConfig",
        "build_pykeen_model",
        "resolve_model_class",
    ],
    "training": [
        "PREDICTOR_FORMAT",
        "load_link_predictor",
        "save_link_predictor",
        "train_link_predictor",
    ],
    "evaluation": [
        "HITS_AT",
        "AnswerRanks",
        "answer_masks",
        "evaluate_link_prediction",
        "filtered_ranks",
        "metrics_by_structure",
        "query_metrics",
        "rank_answers",
    ],
    "workflows": ["generate_query_set"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "ALLOWED_GLOBALS",
    "BUNDLED_DATASETS",
    "DEFAULT_MEMORY_BUDGET",
    "HITS_AT",
    "HOLE",
    "INVERSE_SUFFIX",
    "PREDICTOR_FORMAT",
    "QUERY_SET_FORMAT",
    "SPLITS",
    "STRUCTURES",
    "STRUCTURE_NAMES",
    "Anchor",
    "AnswerRanks",
    "GenerationReport",
    "GraphFileError",
    "GraphIndex",
    "GroundedQuery",
    "Intersection",
    "KnowledgeGraph",
    "LinkPredictor",
    "Negation",
    "PredictorConfig",
    "Projection",
    "Query",
    "QueryFormatError",
    "QuerySet",
    "RestrictedUnpickler",
    "Union",
    "UnsafePickleError",
    "Vocabulary",
    "answer_masks",
    "build_pykeen_model",
    "evaluate_link_prediction",
    "filtered_ranks",
    "format_stats_table",
    "from_betae",
    "generate_queries",
    "generate_query_set",
    "inverse_relation",
    "load_betae_folder",
    "load_graph",
    "load_link_predictor",
    "load_query_set",
    "metrics_by_structure",
    "query_from_json",
    "query_metrics",
    "query_set_stats",
    "query_to_json",
    "rank_answers",
    "read_triples_file",
    "resolve_model_class",
    "safe_load_pickle",
    "save_link_predictor",
    "save_query_set",
    "structure_name",
    "template_of",
    "to_betae",
    "train_link_predictor",
    "with_reciprocals",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'metalab.kg' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"metalab.kg.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # static re-exports for type checkers and IDEs
    from metalab.kg.betae import (
        ALLOWED_GLOBALS,
        RestrictedUnpickler,
        UnsafePickleError,
        load_betae_folder,
        safe_load_pickle,
    )
    from metalab.kg.evaluation import (
        HITS_AT,
        AnswerRanks,
        answer_masks,
        evaluate_link_prediction,
        filtered_ranks,
        metrics_by_structure,
        query_metrics,
        rank_answers,
    )
    from metalab.kg.generation import GenerationReport, GraphIndex, GroundedQuery, generate_queries
    from metalab.kg.graphs import (
        BUNDLED_DATASETS,
        INVERSE_SUFFIX,
        SPLITS,
        GraphFileError,
        KnowledgeGraph,
        Vocabulary,
        inverse_relation,
        load_graph,
        read_triples_file,
        with_reciprocals,
    )
    from metalab.kg.predictors import (
        DEFAULT_MEMORY_BUDGET,
        LinkPredictor,
        PredictorConfig,
        build_pykeen_model,
        resolve_model_class,
    )
    from metalab.kg.queries import (
        HOLE,
        STRUCTURE_NAMES,
        STRUCTURES,
        Anchor,
        Intersection,
        Negation,
        Projection,
        Query,
        QueryFormatError,
        Union,
        from_betae,
        query_from_json,
        query_to_json,
        structure_name,
        template_of,
        to_betae,
    )
    from metalab.kg.querysets import (
        QUERY_SET_FORMAT,
        QuerySet,
        format_stats_table,
        load_query_set,
        query_set_stats,
        save_query_set,
    )
    from metalab.kg.training import (
        PREDICTOR_FORMAT,
        load_link_predictor,
        save_link_predictor,
        train_link_predictor,
    )
    from metalab.kg.workflows import generate_query_set
