"""CQD-Beam and exact max-product inference over query trees, batched over queries.

CQD (Arakelyan et al. 2021, Sec. 3, Eq. 3) answers ``?T : ∃V. ⊥_i ⊤_j φ(e_ij)`` with
φ = sigmoid(link predictor score). Both solvers here evaluate the query tree bottom-up,
one ``[Q, N]`` fuzzy set per node over the entity the node denotes:

- ``Anchor(c)``: 1 at ``c``, 0 elsewhere;
- ``Projection(r, sub)``: ``s(t) = max_h s_sub(h) ⊤ φ(h, r, t)``;
- ``Intersection``: ``⊤`` of the arguments; ``Union``: max (= DNF's max over branches,
  default) or the t-conorm ⊥; ``Negation``: ``1 − s`` (CQD^A).

**Beam** (CQD-Beam, Sec. 3.2) follows the reference algorithm: the first atom keeps the top-``k``
entities, and every branch keeps the top-``k`` tails of its own scores, so a chain of ``v``
variables has up to ``k^v`` branches; the last atom scores all ``N`` entities and takes the max
over branches. Many branches reach the same entity, so the candidates are deduplicated before
each hop: each unique entity is expanded once with its best branch value (exact for monotone
t-norms: the other branches through it can only score lower), which gives the reference's
scores with at most ``min(k^v, N)`` instead of ``k^v`` scorings per hop, batched over queries.
Intersections combine full ``[Q, N]`` sets and the next hop takes their top-``k`` (2i/3i are
exact). A union (``union = "max"``) is the reference's disjunctive normal form: the next hop
expands every disjunct's own candidates (its beam, or the top-``k`` of its scores) at that
disjunct's value, so ``up`` keeps up to ``2k`` heads, as DNF's two ``2p`` branches do.
Projections from an anchor score only the anchor.
**Exact** takes the max over all heads with per-relation score matrices (QTO's max-product
dynamic programming, Bai et al. 2023) when they fit the memory budget; it is the true
optimum of CQD's objective, so beam ≤ exact and beam = exact for ``k = N``.

The argmax heads are kept, so every answer has an explanation (:mod:`metalab.kg.explanations`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from metalab.core.errors import ConfigError
from metalab.kg.predictors import LinkPredictor
from metalab.kg.queries import (
    Anchor,
    Intersection,
    Negation,
    Projection,
    Query,
    template_of,
)
from metalab.kg.tnorms import TNorm, make_tnorm, negation

__all__ = ["SOLVERS", "NodeTrace", "Solution", "SolverConfig", "solve"]

SOLVERS = ("beam", "co", "exact")


@dataclass(frozen=True)
class SolverConfig:
    """Settings of the query solvers.

    Attributes:
        solver: ``beam`` (CQD-Beam), ``exact`` (max-product over full relation matrices) or
            ``co`` (CQD-CO, :func:`metalab.kg.co.solve_co`).
        k: beam width (candidates kept per variable); CQD tuned 4…128 per structure.
        tnorm: ``product`` (CQD's best), ``godel`` or ``lukasiewicz``.
        union: ``max`` (max over DNF branches, CQD-Beam) or ``tconorm`` (the dual of ``tnorm``).
        sigmoid: φ = sigmoid(score) (default; without it unions collapse, see the paper notes).
        memory_budget: bytes allowed for the exact solver's relation matrices and for each
            ``[Q, k, N]`` block of beam scores.
        co_steps: CQD-CO's maximum Adam steps (stops early when the loss changes ≤ 1e-9).
        co_lr: CQD-CO's Adam learning rate.
        co_regularizer: CQD-CO's N3 weight on the variable embeddings (tuned per structure).
    """

    solver: str = "beam"
    k: int = 16
    tnorm: str = "product"
    union: str = "max"
    sigmoid: bool = True
    memory_budget: int = 512 * 2**20
    co_steps: int = 1000
    co_lr: float = 0.1
    co_regularizer: float = 0.01

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            from metalab.core.errors import UnknownNameError

            raise UnknownNameError("solver", self.solver, SOLVERS)
        if self.k < 1:
            raise ConfigError(f"k must be ≥ 1, got {self.k}")
        if self.union not in ("max", "tconorm"):
            raise ConfigError(f"union must be 'max' or 'tconorm', got {self.union!r}")
        if self.co_steps < 1 or self.co_lr <= 0 or self.co_regularizer < 0:
            raise ConfigError("co_steps must be ≥ 1, co_lr > 0 and co_regularizer ≥ 0")
        make_tnorm(self.tnorm)


@dataclass
class NodeTrace:
    """The evaluated fuzzy set of one tree node for a batch of same-structure queries.

    Attributes:
        node: ``anchor``, ``projection``, ``and``, ``or`` or ``not``.
        scores: ``[Q, N]`` truth value of every entity for this node.
        children: traces of the child nodes.
        relations: ``[Q]`` query relation ids (projections).
        anchors: ``[Q]`` entity ids (anchors).
        heads: ``[Q, N]`` the best head entity per tail (projections).
        branch: ``[Q, N]`` the best argument per entity (``or`` with ``union="max"``).
        beam: ``[Q, N]`` beam projections: the value of each entity kept in some branch's
            top-k (``-inf`` for the others); the next hop expands exactly these entities.
        beam_heads: ``[Q, N]`` the best head per kept entity among the branches keeping it.
        beam_branch: ``[Q, N]`` the best argument per kept entity (beam ``or``): a union's
            beam is the union of its disjuncts' own candidates (DNF), each at its own value.
        from_beam: this projection expanded its child's ``beam`` (not a top-k of its scores).
    """

    node: str
    scores: Tensor
    children: list[NodeTrace] = field(default_factory=list)
    relations: Tensor | None = None
    anchors: Tensor | None = None
    heads: Tensor | None = None
    branch: Tensor | None = None
    beam: Tensor | None = None
    beam_heads: Tensor | None = None
    beam_branch: Tensor | None = None
    from_beam: bool = False


@dataclass
class Solution:
    """Answer scores of a list of queries and the traces that explain them.

    Attributes:
        scores: ``[Q, N]`` answer scores (CQD's objective per candidate answer).
        traces: per query, its structure group's trace and its row in that group.
    """

    scores: Tensor
    traces: list[tuple[NodeTrace, int]]
    config: SolverConfig


class _Evaluator:
    def __init__(self, predictor: LinkPredictor, config: SolverConfig) -> None:
        self.p, self.c = predictor, config
        self.t: TNorm = make_tnorm(config.tnorm)
        self.n = predictor.num_entities
        self.matrices: dict[int, Tensor] = {}

    def phi(self, raw: Tensor) -> Tensor:
        return torch.sigmoid(raw) if self.c.sigmoid else raw

    def run(self, nodes: list[Query]) -> NodeTrace:
        first = nodes[0]
        if isinstance(first, Anchor):
            ids = torch.tensor([q.entity for q in nodes], device=self.p.device)  # type: ignore[union-attr]
            scores = torch.zeros(len(nodes), self.n, device=self.p.device)
            scores[torch.arange(len(nodes)), ids] = 1.0
            return NodeTrace("anchor", scores, anchors=ids)
        if isinstance(first, Projection):
            return self.project(nodes)
        if isinstance(first, Negation):
            child = self.run([q.arg for q in nodes])  # type: ignore[union-attr]
            return NodeTrace("not", negation(child.scores), [child])
        parts = [self.run([q.args[i] for q in nodes]) for i in range(len(first.args))]  # type: ignore[union-attr]
        if isinstance(first, Intersection):
            scores = parts[0].scores
            for part in parts[1:]:
                scores = self.t.tnorm(scores, part.scores)
            return NodeTrace("and", scores, parts)
        if self.c.union == "max":
            best, branch = torch.stack([p.scores for p in parts]).max(0)
            if self.c.solver == "exact":
                return NodeTrace("or", best, parts, branch=branch)
            beam, beam_branch = torch.stack([self._kept(p) for p in parts]).max(0)
            return NodeTrace("or", best, parts, branch=branch, beam=beam, beam_branch=beam_branch)
        scores = parts[0].scores
        for part in parts[1:]:
            scores = self.t.tconorm(scores, part.scores)
        return NodeTrace("or", scores, parts)

    def _kept(self, part: NodeTrace) -> Tensor:
        """The candidates a DNF disjunct passes on: its beam, or the top-k of its scores."""
        if part.beam is not None:
            return part.beam
        top_v, top_i = part.scores.topk(min(self.c.k, self.n), dim=1)
        return torch.full_like(part.scores, float("-inf")).scatter_(1, top_i, top_v)

    def project(self, nodes: list[Query]) -> NodeTrace:
        rel = torch.tensor([q.relation for q in nodes], device=self.p.device)  # type: ignore[union-attr]
        child = self.run([q.arg for q in nodes])  # type: ignore[union-attr]
        valid = None
        if child.anchors is not None:  # anchored atom: exact with one scoring per query
            heads, values = child.anchors[:, None], child.scores.new_ones(len(nodes), 1)
        elif self.c.solver == "exact":
            return self._project_exact(rel, child)
        elif child.beam is not None:  # every unique entity of the child's k^v branches
            width = int(torch.isfinite(child.beam).sum(1).max())
            values, heads = child.beam.topk(width, dim=1)
            valid = torch.isfinite(values)
        else:
            values, heads = child.scores.topk(min(self.c.k, self.n), dim=1)
        best, head, beam, beam_head = self._combine(rel, heads, values, valid)
        return NodeTrace(
            "projection",
            best,
            [child],
            relations=rel,
            heads=head,
            beam=beam,
            beam_heads=beam_head,
            from_beam=child.beam is not None,
        )

    def _combine(
        self, rel: Tensor, heads: Tensor, values: Tensor, valid: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Max over branches ``values[:, j] ⊤ φ(heads[:, j], r, ·)``, and each branch's top-k.

        Returns the best value and head per tail over all branches (the answer scores when
        this is the last hop), and the same restricted to tails in some branch's top-k (the
        candidates of the next hop; ``-inf`` elsewhere), chunked over queries.
        """
        q, k = heads.shape
        step = max(1, self.c.memory_budget // (k * self.n * 4 * 4))
        outs: list[list[Tensor]] = [[], [], [], []]
        for s in range(0, q, step):
            h, v = heads[s : s + step], values[s : s + step]
            raw = self.p.score_tails(h.reshape(-1), rel[s : s + step].repeat_interleave(k))
            combined = self.t.tnorm(v[:, :, None], self.phi(raw).view(h.shape[0], k, self.n))
            if valid is not None:
                combined = combined.masked_fill(~valid[s : s + step, :, None], float("-inf"))
            value, arg = combined.max(1)
            top_v, top_i = combined.topk(min(self.c.k, self.n), dim=2)
            kept = torch.full_like(combined, float("-inf")).scatter_(2, top_i, top_v)
            beam_value, beam_arg = kept.max(1)
            for out, part in zip(
                outs, (value, h.gather(1, arg), beam_value, h.gather(1, beam_arg)), strict=True
            ):
                out.append(part)
        best, head, beam, beam_head = (torch.cat(o) for o in outs)
        return best, head, beam, beam_head

    def _project_exact(self, rel: Tensor, child: NodeTrace) -> NodeTrace:
        needed = {int(r) for r in rel.unique()} - set(self.matrices)
        size = (len(self.matrices) + len(needed)) * self.n * self.n * 4
        if size > self.c.memory_budget:
            raise ConfigError(
                f"exact solver needs {size / 2**20:.0f} MiB of relation matrices, more than the "
                f"memory budget ({self.c.memory_budget / 2**20:.0f} MiB); use --solver beam"
            )
        for r in sorted(needed):
            self.matrices[r] = self.phi(self.p.relation_matrix(r))
        step = max(1, self.c.memory_budget // (self.n * self.n * 4 * 3))
        best, head = [], []
        for s in range(0, rel.shape[0], step):
            mats = torch.stack([self.matrices[int(r)] for r in rel[s : s + step]])
            combined = self.t.tnorm(child.scores[s : s + step, :, None], mats)
            value, arg = combined.max(1)
            best.append(value)
            head.append(arg)
        return NodeTrace(
            "projection", torch.cat(best), [child], relations=rel, heads=torch.cat(head)
        )


def solve(
    predictor: LinkPredictor, queries: Sequence[Query], config: SolverConfig | None = None
) -> Solution:
    """Score every entity as the answer of each query (CQD's objective), batched per structure.

    Queries with the same tree structure are evaluated together as one batch.

    Args:
        predictor: the link predictor (trained on single triples only).
        queries: grounded query trees (any tree shape; query relation ids).
        config: solver settings (default: CQD-Beam, k = 16, product t-norm, sigmoid).

    Returns:
        The ``[Q, N]`` answer scores and per-query traces for explanations.

    Raises:
        ConfigError: the exact solver's matrices exceed the memory budget.
    """
    config = config or SolverConfig()
    if config.solver == "co":
        from metalab.kg.co import solve_co

        return solve_co(predictor, queries, config)
    if not queries:
        raise ConfigError("no queries to answer")
    groups: dict[Query, list[int]] = defaultdict(list)
    for index, query in enumerate(queries):
        groups[template_of(query)].append(index)
    evaluator = _Evaluator(predictor, config)
    scores = torch.empty(len(queries), predictor.num_entities, device=predictor.device)
    traces: list[tuple[NodeTrace, int] | None] = [None] * len(queries)
    with torch.no_grad():
        for indices in groups.values():
            trace = evaluator.run([queries[i] for i in indices])
            scores[indices] = trace.scores
            for row, i in enumerate(indices):
                traces[i] = (trace, row)
    return Solution(scores, [t for t in traces if t is not None], config)
