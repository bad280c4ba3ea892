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
- CQD (:mod:`~metalab.kg.tnorms`, :mod:`~metalab.kg.query_language`,
  :mod:`~metalab.kg.solvers`, :mod:`~metalab.kg.explanations`, :mod:`~metalab.kg.answering`):
  t-norms, a query language (``QUERIES.md``), CQD-Beam and exact max-product solvers batched
  over queries, CQD-CO (:func:`solve_co`), explanations of every answer
  (:func:`answer_query`) and per-structure MRR (:func:`evaluate_queries`);
- evaluation: filtered ranks of the BetaE protocol (:func:`rank_answers`,
  :func:`evaluate_link_prediction`).

Names are re-exported lazily so that ``metalab kg --help`` does not import torch or pykeen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metalab.core.lazy import lazy_exports

# module -> names; imported on first use so that `metalab kg --help` does not import torch
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
    "generation": [
        "GenerationReport",
        "GraphIndex",
        "GroundedQuery",
        "check_split_edges",
        "generate_queries",
    ],
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
    "tnorms": ["Godel", "Lukasiewicz", "Product", "TNorm", "make_tnorm", "negation", "tnorm_names"],
    "query_language": ["ParsedQuery", "QuerySyntaxError", "parse_query"],
    "solvers": ["SOLVERS", "Solution", "SolverConfig", "solve"],
    "explanations": ["ExplainedAtom", "Explanation", "explain", "rescore_explanation"],
    "answering": ["QueryAnswers", "answer_query", "format_answers", "known_edges"],
    "co": ["solve_co", "disjuncts"],
    "cqd_evaluation": ["evaluate_queries", "format_structure_table"],
}

__all__ = [
    "ALLOWED_GLOBALS",
    "BUNDLED_DATASETS",
    "DEFAULT_MEMORY_BUDGET",
    "HITS_AT",
    "HOLE",
    "INVERSE_SUFFIX",
    "PREDICTOR_FORMAT",
    "QUERY_SET_FORMAT",
    "SOLVERS",
    "SPLITS",
    "STRUCTURES",
    "STRUCTURE_NAMES",
    "Anchor",
    "AnswerRanks",
    "ExplainedAtom",
    "Explanation",
    "GenerationReport",
    "Godel",
    "GraphFileError",
    "GraphIndex",
    "GroundedQuery",
    "Intersection",
    "KnowledgeGraph",
    "LinkPredictor",
    "Lukasiewicz",
    "Negation",
    "ParsedQuery",
    "PredictorConfig",
    "Product",
    "Projection",
    "Query",
    "QueryAnswers",
    "QueryFormatError",
    "QuerySet",
    "QuerySyntaxError",
    "RestrictedUnpickler",
    "Solution",
    "SolverConfig",
    "TNorm",
    "Union",
    "UnsafePickleError",
    "Vocabulary",
    "answer_masks",
    "answer_query",
    "build_pykeen_model",
    "check_split_edges",
    "disjuncts",
    "evaluate_link_prediction",
    "evaluate_queries",
    "explain",
    "filtered_ranks",
    "format_answers",
    "format_stats_table",
    "format_structure_table",
    "from_betae",
    "generate_queries",
    "generate_query_set",
    "inverse_relation",
    "known_edges",
    "load_betae_folder",
    "load_graph",
    "load_link_predictor",
    "load_query_set",
    "make_tnorm",
    "metrics_by_structure",
    "negation",
    "parse_query",
    "query_from_json",
    "query_metrics",
    "query_set_stats",
    "query_to_json",
    "rank_answers",
    "read_triples_file",
    "rescore_explanation",
    "resolve_model_class",
    "safe_load_pickle",
    "save_link_predictor",
    "save_query_set",
    "solve",
    "solve_co",
    "structure_name",
    "template_of",
    "tnorm_names",
    "to_betae",
    "train_link_predictor",
    "with_reciprocals",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # static re-exports for type checkers and IDEs
    from metalab.kg.answering import QueryAnswers, answer_query, format_answers, known_edges
    from metalab.kg.betae import (
        ALLOWED_GLOBALS,
        RestrictedUnpickler,
        UnsafePickleError,
        load_betae_folder,
        safe_load_pickle,
    )
    from metalab.kg.co import disjuncts, solve_co
    from metalab.kg.cqd_evaluation import evaluate_queries, format_structure_table
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
    from metalab.kg.explanations import ExplainedAtom, Explanation, explain, rescore_explanation
    from metalab.kg.generation import (
        GenerationReport,
        GraphIndex,
        GroundedQuery,
        check_split_edges,
        generate_queries,
    )
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
    from metalab.kg.query_language import ParsedQuery, QuerySyntaxError, parse_query
    from metalab.kg.querysets import (
        QUERY_SET_FORMAT,
        QuerySet,
        format_stats_table,
        load_query_set,
        query_set_stats,
        save_query_set,
    )
    from metalab.kg.solvers import SOLVERS, Solution, SolverConfig, solve
    from metalab.kg.tnorms import (
        Godel,
        Lukasiewicz,
        Product,
        TNorm,
        make_tnorm,
        negation,
        tnorm_names,
    )
    from metalab.kg.training import (
        PREDICTOR_FORMAT,
        load_link_predictor,
        save_link_predictor,
        train_link_predictor,
    )
    from metalab.kg.workflows import generate_query_set
