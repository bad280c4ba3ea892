"""Filtered ranking metrics of the BetaE protocol (Ren & Leskovec 2020, Sec. 5; CQD, Sec. 5).

For a query with easy answers ``E`` (reachable on the smaller graph) and hard answers ``H``
(reachable only on the larger one), each hard answer ``a`` is ranked among all entities
after removing every *other* answer (``E ∪ H`` minus ``a``): its *filtered rank*. Ties are
broken as pykeen's "realistic" rank, the mean of the optimistic and pessimistic ranks:

    rank(a) = 1 + #{e ∉ E ∪ H : s(e) > s(a)} + ½ · #{e ∉ E ∪ H : s(e) = s(a)}.

A query's MRR and Hits@k average ``1/rank`` and ``[rank ≤ k]`` over its hard answers; a
structure's numbers average over its queries (the BetaE/CQD tables). Link prediction
(:func:`evaluate_link_prediction`) uses the same ranks with every known triple filtered,
averaged over test triples and both directions (the usual "filtered, both sides" MRR).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metalab.core.errors import ConfigError
from metalab.kg.graphs import KnowledgeGraph, with_reciprocals
from metalab.kg.predictors import LinkPredictor

__all__ = [
    "HITS_AT",
    "AnswerRanks",
    "answer_masks",
    "evaluate_link_prediction",
    "filtered_ranks",
    "metrics_by_structure",
    "query_metrics",
    "rank_answers",
]

HITS_AT = (1, 3, 10)
_METRICS = ("mrr", *(f"hits@{k}" for k in HITS_AT))


@dataclass(frozen=True)
class AnswerRanks:
    """Filtered ranks of hard answers: ``ranks[i]`` of ``entity[i]``, answer of ``query[i]``."""

    ranks: torch.Tensor
    query: torch.Tensor
    entity: torch.Tensor
    num_queries: int


def filtered_ranks(
    scores: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    filter_mask: torch.Tensor,
    *,
    chunk_bytes: int = 16 * 2**20,
) -> torch.Tensor:
    """Realistic filtered rank of entity ``targets[i]`` in score row ``rows[i]``.

    Rows with few targets compare each target's score with its row; when rows hold more
    than a handful of targets on average, each row is sorted once and every target is
    located by binary search (the cost of BetaE's reference evaluation's argsort, without
    its Python loop over queries). Both give the same ranks.

    Args:
        scores: ``[B, N]`` scores (higher is better).
        rows: ``[A]`` row index of each target.
        targets: ``[A]`` entity id of each target.
        filter_mask: ``[B, N]`` True for entities removed from the ranking (all answers of
            the row; the target itself may be included, it is never counted against itself).
        chunk_bytes: size of the ``[chunk, N]`` blocks processed at once.

    Returns:
        ``[A]`` float64 ranks ≥ 1.
    """
    if scores.shape != filter_mask.shape:
        raise ConfigError(
            f"scores {tuple(scores.shape)} and filter {tuple(filter_mask.shape)} differ"
        )
    filter_mask = filter_mask.to(scores.device)
    rows, targets = rows.to(scores.device), targets.to(scores.device)
    if rows.numel() == 0:
        return torch.empty(0, dtype=torch.float64, device=scores.device)
    masked = scores.masked_fill(filter_mask, float("-inf"))  # filtered entities never count
    own = scores[rows, targets]
    itself = (~filter_mask[rows, targets]).long()  # an unfiltered target ties with itself
    step = max(1, chunk_bytes // (4 * max(1, scores.shape[1])))
    per_row = rows.numel() / max(1, int(torch.unique(rows).numel()))
    count = _count_by_search if per_row > _SORT_ABOVE else _count_by_comparison
    greater, at_least = count(masked, rows, own, step)
    return 1.0 + greater.double() + 0.5 * (at_least - greater - itself).double()


_SORT_ABOVE = 6  # targets per row above which sorting each row beats comparing (measured)


def _count_by_comparison(
    masked: torch.Tensor, rows: torch.Tensor, own: torch.Tensor, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``#{e: s_e > own}`` and ``#{e: s_e ≥ own}`` per target, comparing gathered rows."""
    greater, at_least = [], []
    for start in range(0, rows.shape[0], step):
        block, value = masked[rows[start : start + step]], own[start : start + step, None]
        greater.append((block > value).sum(1))
        at_least.append((block >= value).sum(1))
    return torch.cat(greater), torch.cat(at_least)


def _count_by_search(
    masked: torch.Tensor, rows: torch.Tensor, own: torch.Tensor, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same counts from each used row sorted once and a batched binary search."""
    used, local = torch.unique(rows, return_inverse=True)
    order = torch.argsort(local, stable=True)
    sizes = torch.bincount(local, minlength=used.numel())
    first = torch.cumsum(sizes, 0) - sizes
    slot = torch.arange(rows.numel(), device=rows.device) - first.repeat_interleave(sizes)
    values = own.new_full((used.numel(), int(sizes.max())), float("inf"))
    values[local[order], slot] = own[order]
    greater, at_least = torch.empty_like(rows), torch.empty_like(rows)
    n = masked.shape[1]
    for start in range(0, used.numel(), step):
        ordered = masked[used[start : start + step]].sort(dim=1).values
        part = values[start : start + step]
        pick = (local[order] >= start) & (local[order] < start + step)
        cells = (local[order][pick] - start, slot[pick])
        greater[order[pick]] = n - torch.searchsorted(ordered, part, right=True)[cells]
        at_least[order[pick]] = n - torch.searchsorted(ordered, part)[cells]
    return greater, at_least


def answer_masks(
    answers: Sequence[Sequence[int]], num_entities: int, *, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``[len(answers), num_entities]`` boolean mask with ``mask[i, a]`` for ``a in answers[i]``."""
    mask = torch.zeros(len(answers), num_entities, dtype=torch.bool, device=device)
    rows = [i for i, ans in enumerate(answers) for _ in ans]
    cols = [int(a) for ans in answers for a in ans]
    if cols and (min(cols) < 0 or max(cols) >= num_entities):
        raise ConfigError(f"answer ids must lie in [0, {num_entities})")
    mask[torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)] = True
    return mask


def rank_answers(
    scores: torch.Tensor, easy: Sequence[Sequence[int]], hard: Sequence[Sequence[int]]
) -> AnswerRanks:
    """Filtered ranks of every hard answer of a batch of queries (BetaE protocol).

    Args:
        scores: ``[Q, N]`` answer scores of ``Q`` queries.
        easy: easy answer ids per query (filtered, not ranked).
        hard: hard answer ids per query (ranked; other answers filtered).
    """
    if not (scores.shape[0] == len(easy) == len(hard)):
        raise ConfigError("scores, easy and hard must describe the same number of queries")
    num_entities = scores.shape[1]
    hard_mask = answer_masks(hard, num_entities, device=scores.device)
    filter_mask = hard_mask | answer_masks(easy, num_entities, device=scores.device)
    rows, targets = hard_mask.nonzero(as_tuple=True)
    ranks = filtered_ranks(scores, rows, targets, filter_mask)
    return AnswerRanks(ranks.cpu(), rows.cpu(), targets.cpu(), scores.shape[0])


def query_metrics(ranks: AnswerRanks) -> dict[str, torch.Tensor]:
    """Per-query MRR and Hits@k (averaged over each query's hard answers); NaN with none."""
    count = torch.zeros(ranks.num_queries, dtype=torch.float64).index_add_(
        0, ranks.query, torch.ones_like(ranks.ranks)
    )
    values = {"mrr": 1.0 / ranks.ranks}
    values.update({f"hits@{k}": (ranks.ranks <= k).double() for k in HITS_AT})
    return {
        name: torch.zeros(ranks.num_queries, dtype=torch.float64).index_add_(0, ranks.query, v)
        / count
        for name, v in values.items()
    }


def metrics_by_structure(
    structures: Sequence[str], per_query: dict[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Mean of each per-query metric per structure (queries without hard answers skipped)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(structures):
        groups[name].append(index)
    table = {}
    for name, indices in groups.items():
        idx = torch.tensor(indices, dtype=torch.long)
        row = {m: per_query[m][idx] for m in _METRICS}
        valid = ~torch.isnan(row["mrr"])
        table[name] = {
            m: float(v[valid].mean()) if valid.any() else float("nan") for m, v in row.items()
        }
        table[name]["queries"] = float(valid.sum())
    return table


def evaluate_link_prediction(
    predictor: LinkPredictor, graph: KnowledgeGraph, *, split: str = "test", batch_size: int = 256
) -> dict[str, float]:
    """Filtered link-prediction metrics on ``split``, both directions (1p, tails and heads).

    Every (head, query relation) pair of the split's triples and their reciprocals is scored
    once; each true tail is ranked with all other known tails (train ∪ valid ∪ test) removed.
    MRR/Hits average over triples and both directions; ``query_mrr`` averages per
    (head, relation) query first, as BetaE does for its 1p queries.

    Args:
        predictor: a :class:`~metalab.kg.predictors.LinkPredictor`.
        graph: the :class:`~metalab.kg.graphs.KnowledgeGraph` it was trained on.
        split: ``valid`` or ``test``.
        batch_size: queries scored at once.

    Raises:
        ConfigError: the vocabularies differ from the model's, or ``split`` has no triples
            (a user's graph folder may ship an empty valid or test file).
    """
    if graph.entities != predictor.entities or graph.relations != predictor.relations:
        raise ConfigError(f"the model's vocabularies do not match graph {graph.name!r}")
    if graph.split(split).shape[0] == 0:
        where = f" ({graph.source})" if graph.source else ""
        raise ConfigError(
            f"graph {graph.name!r}{where} has no {split} triples; nothing to evaluate"
        )
    targets = with_reciprocals(graph.split(split))
    known = graph.graph("test")
    queries, inverse = torch.unique(targets[:, :2], dim=0, return_inverse=True)
    all_ranks, all_query = [], []
    for start in range(0, queries.shape[0], batch_size):
        batch = queries[start : start + batch_size]
        scores = predictor.score_tails(batch[:, 0], batch[:, 1])
        filter_mask = _known_tails(batch, known, graph.num_entities).to(scores.device)
        member = (inverse >= start) & (inverse < start + batch.shape[0])
        rows = inverse[member] - start
        ranks = filtered_ranks(scores, rows, targets[member, 2], filter_mask)
        all_ranks.append(ranks.cpu())
        all_query.append(inverse[member])
    ranks = torch.cat(all_ranks)
    result = {"mrr": float((1.0 / ranks).mean())}
    result.update({f"hits@{k}": float((ranks <= k).double().mean()) for k in HITS_AT})
    per_query = query_metrics(
        AnswerRanks(ranks, torch.cat(all_query), ranks.new_zeros(0).long(), queries.shape[0])
    )
    result["query_mrr"] = float(per_query["mrr"].mean())
    result["triples"] = float(targets.shape[0] // 2)
    return result


def _known_tails(batch: torch.Tensor, known: torch.Tensor, num_entities: int) -> torch.Tensor:
    """``[B, N]`` mask of tails t with (h, r, t) in ``known`` for each (h, r) row of ``batch``."""
    base = int(max(int(known[:, 1].max()), int(batch[:, 1].max()))) + 1
    key_batch, key_known = batch[:, 0] * base + batch[:, 1], known[:, 0] * base + known[:, 1]
    order = torch.argsort(key_batch)
    pos = torch.searchsorted(key_batch[order], key_known).clamp(max=batch.shape[0] - 1)
    hit = key_batch[order][pos] == key_known
    mask = torch.zeros(batch.shape[0], num_entities, dtype=torch.bool)
    mask[order[pos[hit]], known[hit, 2]] = True
    return mask
