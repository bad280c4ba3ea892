"""Throughput of metalab.kg's vectorized paths against simple baselines.

1. Scoring: ``LinkPredictor.score_tails`` on a batch of (head, relation) pairs vs a Python loop
   scoring one pair per call (ComplEx, random weights; FB15k-237's size by default).
2. Filtered ranking (BetaE protocol): ``rank_answers`` on a batch of queries vs the reference
   evaluation of KGReasoning (argsort every score row, then a Python loop over queries).
3. Answer sets: ``GraphIndex.answers`` (numpy masks over edge lists) vs BetaE's Python-set
   ``achieve_answer`` style evaluation, for BetaE-style queries generated on UMLS (``--quick``)
   or on a random graph of FB15k-237's size.

Usage: python benchmarks/bench_kg.py [--quick] [--device auto|cpu|cuda[:N]]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from _timing import timed
from metalab.core.device import describe_device, resolve_device
from metalab.kg import (
    Anchor,
    GraphIndex,
    Intersection,
    KnowledgeGraph,
    LinkPredictor,
    Negation,
    PredictorConfig,
    Projection,
    Vocabulary,
    build_pykeen_model,
    generate_queries,
    load_graph,
    rank_answers,
)


def _best_times(
    fast: Callable[[], object], slow: Callable[[], object], *, device: torch.device, repeat: int = 5
) -> tuple[float, float]:
    """Best wall time of each function over ``repeat`` interleaved runs (after a warm-up).

    Interleaving keeps both measurements under the same load on a shared machine.
    """
    fast(), slow()
    pairs = [
        (timed(fast, device, warmup=False), timed(slow, device, warmup=False))
        for _ in range(repeat)
    ]
    return min(p[0] for p in pairs), min(p[1] for p in pairs)


def bench_scoring(args: argparse.Namespace, device: torch.device) -> tuple[str, float, float]:
    entities, relations, dim = (2000, 50, 200) if args.quick else (14505, 237, 1000)
    config = PredictorConfig(dim=dim)
    model = build_pykeen_model(
        config, num_entities=entities, num_relations=relations, random_seed=0
    )
    predictor = LinkPredictor(
        model.to(device),
        entities=Vocabulary(tuple(f"e{i}" for i in range(entities))),
        relations=Vocabulary(tuple(f"r{i}" for i in range(relations)), "relation"),
        config=config,
    )
    gen = torch.Generator().manual_seed(0)
    batch = 256 if args.quick else 1024
    heads = torch.randint(0, entities, (batch,), generator=gen)
    rels = torch.randint(0, 2 * relations, (batch,), generator=gen)
    loop_n = min(batch, 64)

    def batched() -> object:
        return predictor.score_tails(heads, rels)

    def loop() -> object:
        return [predictor.score_tails(heads[i : i + 1], rels[i : i + 1]) for i in range(loop_n)]

    fast_s, slow_s = _best_times(batched, loop, device=device)
    fast, slow = batch / fast_s, loop_n / slow_s
    name = f"score_tails ComplEx N={entities} d={dim} (rows/s)"
    return name, fast, slow


def _reference_ranks(scores: torch.Tensor, easy: list, hard: list) -> list[torch.Tensor]:
    """The reference evaluation of KGReasoning: argsort every row, then a loop over queries."""
    num_rows, num_entities = scores.shape
    order = torch.argsort(scores, dim=1, descending=True)
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(num_entities).expand(num_rows, num_entities))
    out = []
    for i in range(num_rows):
        answers = list(easy[i]) + list(hard[i])
        ranks, index = torch.sort(position[i, answers])
        is_hard = torch.tensor([False] * len(easy[i]) + [True] * len(hard[i]))[index]
        out.append((ranks - torch.arange(len(answers)) + 1)[is_hard].double())
    return out


def bench_ranking(args: argparse.Namespace, device: torch.device) -> tuple[str, float, float]:
    rows, entities = (256, 2000) if args.quick else (1024, 14505)
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(rows, entities, generator=gen)  # continuous: no ties
    picks = [torch.randperm(entities, generator=gen)[:11].tolist() for _ in range(rows)]
    easy, hard = [p[:3] for p in picks], [p[3:] for p in picks]
    ours = rank_answers(scores.to(device), easy, hard)
    reference = _reference_ranks(scores, easy, hard)
    for i in (0, rows - 1):  # same filtered ranks, one query at a time
        mine = ours.ranks[ours.query == i].sort().values
        assert torch.equal(mine, reference[i].sort().values)

    def vectorized() -> object:
        return rank_answers(scores.to(device), easy, hard)

    def loop() -> object:
        return _reference_ranks(scores, easy, hard)

    answers = sum(map(len, hard))
    fast_s, slow_s = _best_times(vectorized, loop, device=device)
    fast, slow = answers / fast_s, answers / slow_s
    return f"rank_answers vs KGReasoning's loop, N={entities} (answers/s)", fast, slow


def _set_answers(out_edges: dict, query: object, num_entities: int) -> set[int]:
    """BetaE's achieve_answer: Python sets and per-entity adjacency dicts."""
    if isinstance(query, Anchor):
        return {query.entity}
    if isinstance(query, Projection):
        result: set[int] = set()
        for e in _set_answers(out_edges, query.arg, num_entities):
            result |= out_edges.get((e, query.relation), set())
        return result
    if isinstance(query, Negation):
        return set(range(num_entities)) - _set_answers(out_edges, query.arg, num_entities)
    parts = [_set_answers(out_edges, a, num_entities) for a in query.args]  # type: ignore[attr-defined]
    return set.intersection(*parts) if isinstance(query, Intersection) else set.union(*parts)


def _synthetic_graph(entities: int, relations: int, edges: int) -> KnowledgeGraph:
    """A random graph of FB15k-237's size (edges split 90/5/5 into train/valid/test)."""
    gen = torch.Generator().manual_seed(2)
    triples = torch.stack(
        [
            torch.randint(0, entities, (edges,), generator=gen),
            torch.randint(0, relations, (edges,), generator=gen),
            torch.randint(0, entities, (edges,), generator=gen),
        ],
        dim=1,
    ).unique(dim=0)
    triples = triples[torch.randperm(len(triples), generator=gen)]
    a, b = int(0.9 * len(triples)), int(0.95 * len(triples))
    return KnowledgeGraph(
        "synthetic",
        Vocabulary(tuple(f"e{i}" for i in range(entities))),
        Vocabulary(tuple(f"r{i}" for i in range(relations)), "relation"),
        train=triples[:a],
        valid=triples[a:b],
        test=triples[b:],
    )


def bench_answers(args: argparse.Namespace) -> tuple[str, float, float]:
    graph = load_graph("umls") if args.quick else _synthetic_graph(14505, 237, 310_000)
    per = 20 if args.quick else 50
    queries, _ = generate_queries(
        graph, per_structure=per, generator=torch.Generator().manual_seed(0)
    )
    triples = graph.graph("test")
    index = GraphIndex(triples, graph.num_entities)
    out_edges: dict[tuple[int, int], set[int]] = {}
    for h, r, t in triples.tolist():
        out_edges.setdefault((h, r), set()).add(t)
    for q in queries:  # both evaluators agree
        assert set(np.flatnonzero(index.answers(q.query)).tolist()) == _set_answers(
            out_edges, q.query, graph.num_entities
        )

    def vectorized() -> object:
        return [index.answers(q.query) for q in queries]

    def sets() -> object:
        return [_set_answers(out_edges, q.query, graph.num_entities) for q in queries]

    fast_s, slow_s = _best_times(vectorized, sets, device=torch.device("cpu"))
    fast, slow = len(queries) / fast_s, len(queries) / slow_s
    return f"answer sets, 14 structures, {graph.name} (queries/s)", fast, slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds on 2 cores)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; quick={args.quick}")
    print(f"{'benchmark':<60}{'vectorized':>14}{'baseline':>12}{'ratio':>9}")
    for name, fast, slow in (
        bench_scoring(args, device),
        bench_ranking(args, device),
        bench_answers(args),
    ):
        print(f"{name:<60}{fast:>14.1f}{slow:>12.1f}{fast / slow:>8.1f}x")


if __name__ == "__main__":
    main()
