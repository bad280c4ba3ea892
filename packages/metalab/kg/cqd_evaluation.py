"""Per-structure MRR/Hits of a CQD solver on a query set (BetaE protocol, CQD Table 2).

Every query of the split is answered by the solver (batched per structure), each hard
answer is ranked among all entities with the other easy and hard answers filtered out
(:func:`metalab.kg.rank_answers`), and MRR/Hits@k are averaged per query, then per structure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metalab.core.errors import ConfigError
from metalab.kg.evaluation import HITS_AT, metrics_by_structure, query_metrics, rank_answers
from metalab.kg.generation import GroundedQuery
from metalab.kg.predictors import LinkPredictor
from metalab.kg.querysets import QuerySet
from metalab.kg.solvers import SolverConfig, solve

__all__ = ["evaluate_queries", "format_structure_table"]

_ORDER = ("1p", "2p", "3p", "2i", "3i", "ip", "pi", "2u", "up", "2in", "3in", "inp", "pin", "pni")


def evaluate_queries(
    predictor: LinkPredictor,
    query_set: QuerySet,
    config: SolverConfig | None = None,
    *,
    split: str = "test",
    structures: Sequence[str] | None = None,
    batch_size: int = 256,
) -> dict[str, dict[str, float]]:
    """Filtered MRR/Hits@1,3,10 per structure of one solver on ``query_set[split]``.

    Args:
        predictor: the link predictor (its entity names must match the query set's).
        query_set: queries with easy/hard answers (:func:`metalab.kg.load_query_set`).
        config: solver settings (default CQD-Beam, k = 16).
        split: which split to evaluate.
        structures: evaluate only these structures (default: all present).
        batch_size: queries solved together.

    Returns:
        ``{structure: {"mrr", "hits@1", "hits@3", "hits@10", "queries"}}``.

    Raises:
        ConfigError: unknown split or structure, mismatching vocabularies or no queries.
    """
    if split not in query_set.splits:
        raise ConfigError(f"query set has no split {split!r} (has {sorted(query_set.splits)})")
    if query_set.entities.names != predictor.entities.names:
        raise ConfigError("the query set's entities differ from the model's (other dataset?)")
    present = {q.structure for q in query_set.splits[split]}
    missing = sorted(set(structures or ()) - present)
    if missing:
        has = ", ".join(sorted(present))
        raise ConfigError(f"structure(s) {', '.join(missing)} not in split {split!r} (has {has})")
    queries: list[GroundedQuery] = [
        q for q in query_set.splits[split] if structures is None or q.structure in structures
    ]
    if not queries:
        raise ConfigError(f"no queries to evaluate in split {split!r}")
    per_query: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(queries), batch_size):
        part = queries[start : start + batch_size]
        scores = solve(predictor, [q.query for q in part], config).scores.cpu()
        metrics = query_metrics(
            rank_answers(scores, [q.easy for q in part], [q.hard for q in part])
        )
        for name, values in metrics.items():
            per_query.setdefault(name, []).append(values)
    table = metrics_by_structure(
        [q.structure for q in queries], {k: torch.cat(v) for k, v in per_query.items()}
    )
    return {s: table[s] for s in sorted(table, key=_rank)}


def _rank(name: str) -> tuple[int, str]:
    return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)


def format_structure_table(tables: dict[str, dict[str, dict[str, float]]]) -> str:
    """A text table: one row per solver and metric, one column per structure (CQD Table 2)."""
    structures: list[str] = sorted({s for t in tables.values() for s in t}, key=_rank)
    header = f"{'solver':<10} {'metric':<8}" + "".join(f"{s:>7}" for s in structures) + "    avg"
    lines = [header]
    for solver, table in tables.items():
        for metric in ("mrr", *(f"hits@{k}" for k in HITS_AT)):
            values = [table.get(s, {}).get(metric, float("nan")) for s in structures]
            cells = "".join(f"{v:7.3f}" for v in values)
            finite = [v for v in values if v == v]
            avg = sum(finite) / len(finite) if finite else float("nan")
            lines.append(f"{solver:<10} {metric:<8}{cells}{avg:7.3f}")
    counts = next(iter(tables.values()))
    lines.append(
        f"{'':<10} {'queries':<8}"
        + "".join(f"{int(counts.get(s, {}).get('queries', 0)):>7}" for s in structures)
    )
    return "\n".join(lines)
