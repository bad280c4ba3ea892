"""CQD-CO: continuous optimization of relaxed variable embeddings (Arakelyan et al. 2021, Sec. 3.1).

Every variable of the query tree, the answer included, gets a free embedding per query
(initialized N(0, 1e-3²), complex for ComplEx). Atoms are scored with the link predictor's
interaction on embeddings (:meth:`~metalab.kg.LinkPredictor.score_embeddings`), combined with
the t-norm / max / ``1 − φ`` exactly as in :mod:`metalab.kg.solvers`, and the objective
minus an N3 penalty ``λ Σ |v|³`` on the variable embeddings is maximized with Adam (lr 0.1)
for up to ``co_steps`` steps, stopping when the loss changes by ≤ 1e-9. Then every entity is
scored as the answer with the other variables' embeddings fixed. All queries of one
structure are optimized together (their losses are summed; Adam is elementwise, so each
query's optimization is independent of the others').

Unions are evaluated in disjunctive normal form (Sec. 3: ``Q = ∨_i ∧_j e_ij``): ∃ distributes
over ∨, so each conjunctive disjunct is optimized with its *own* variable embeddings and the
answer scores of the disjuncts are combined with max (``union = "max"``, the discrete
solvers' semantics) or the t-conorm. One relaxed embedding shared by the branches of a union
(e.g. the ``V`` of ``up``) could sit at only one branch's optimum, so it would score the
other branch's answers as if that branch were absent.

CO answers have no discrete explanation (the variables are not entities); use the beam or
exact solver for explanations.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence

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
    Union,
    template_of,
)
from metalab.kg.solvers import Solution, SolverConfig
from metalab.kg.tnorms import TNorm, make_tnorm, negation

__all__ = ["disjuncts", "solve_co"]

_TOL = 1e-9
_CHUNK = 128  # queries optimized together (atoms on variables cost [chunk, chunk] scores)
_MAX_DISJUNCTS = 64
_SHADOW = -2  # last path index of a negation's own free target


def disjuncts(query: Query) -> list[Query]:
    """The union-free disjuncts of ``query``'s disjunctive normal form (CQD, Sec. 3).

    ``p(A ∨ B) = p(A) ∨ p(B)``, ``(A ∨ B) ∧ C = (A ∧ C) ∨ (B ∧ C)`` and
    ``¬(A ∨ B) = ¬A ∧ ¬B``; a query without unions is its own single disjunct.

    Raises:
        ConfigError: the normal form has more than 64 disjuncts.
    """
    if isinstance(query, Anchor):
        out: list[Query] = [query]
    elif isinstance(query, Projection):
        out = [Projection(query.relation, d) for d in disjuncts(query.arg)]
    elif isinstance(query, Negation):
        negated = [Negation(d) for d in disjuncts(query.arg)]
        out = [negated[0] if len(negated) == 1 else Intersection(tuple(negated))]
    elif isinstance(query, Union):
        out = [d for arg in query.args for d in disjuncts(arg)]
    else:
        out = [Intersection(c) for c in itertools.product(*map(disjuncts, query.args))]
    if len(out) > _MAX_DISJUNCTS:
        raise ConfigError(f"query has more than {_MAX_DISJUNCTS} disjuncts in normal form")
    return out


class _Relaxed:
    """Evaluates one batch of same-structure queries on variable embeddings."""

    def __init__(self, predictor: LinkPredictor, config: SolverConfig, nodes: list[Query]):
        self.p, self.c, self.nodes = predictor, config, nodes
        self.t: TNorm = make_tnorm(config.tnorm)
        self.ent = predictor.entity_embeddings().detach()
        self.vars: dict[tuple[int, ...], Tensor] = {}
        self.inner: dict[tuple[int, ...], Tensor] = {}  # un-negated value under each ``¬``
        self.fitting = False  # while optimizing, each ``¬`` also scores its own free target

    def variable(self, path: tuple[int, ...], generator: torch.Generator) -> Tensor:
        if path not in self.vars:
            shape = (len(self.nodes), *self.ent.shape[1:])
            real = torch.randn(shape, generator=generator, dtype=torch.float32) * 1e-3
            if self.ent.is_complex():
                imag = torch.randn(shape, generator=generator, dtype=torch.float32) * 1e-3
                value = torch.complex(real, imag)
            else:
                value = real
            self.vars[path] = value.to(self.ent.device).requires_grad_(True)
        return self.vars[path]

    def phi(self, raw: Tensor) -> Tensor:
        return torch.sigmoid(raw) if self.c.sigmoid else raw

    def value(
        self, nodes: list[Query], path: tuple[int, ...], target: Tensor | None, gen: torch.Generator
    ) -> Tensor:
        """``[Q]`` truth at the ``target`` embeddings, or ``[Q, N]`` over all entities."""
        first = nodes[0]
        if isinstance(first, Projection):
            rel = torch.tensor([q.relation for q in nodes], device=self.ent.device)  # type: ignore[union-attr]
            subs = [q.arg for q in nodes]  # type: ignore[union-attr]
            if isinstance(subs[0], Anchor):
                head = self.ent[torch.tensor([s.entity for s in subs], device=self.ent.device)]  # type: ignore[union-attr]
                below: Tensor | float = 1.0
            else:
                head = self.variable((*path, 0), gen)
                below = self.value(subs, (*path, 0), head, gen)
            phi = self.phi(self._scores(head, rel, target))
            below_t = torch.as_tensor(below, device=phi.device)
            if target is None and below_t.dim() == 1:
                below_t = below_t[:, None]
            return self.t.tnorm(below_t, phi)
        if isinstance(first, Negation):
            args = [q.arg for q in nodes]  # type: ignore[union-attr]
            if self.fitting and _binds_variables(first.arg):  # inner as its own query: _scopes
                shadow = self.variable((*path, _SHADOW), gen)
                self.inner[path] = self.value(args, (*path, 0), shadow, gen)
            return negation(self.value(args, (*path, 0), target, gen))
        parts = [  # an intersection: unions were expanded into disjuncts
            self.value([q.args[i] for q in nodes], (*path, i), target, gen)  # type: ignore[union-attr]
            for i in range(len(first.args))  # type: ignore[union-attr]
        ]
        out = parts[0]
        for part in parts[1:]:
            out = self.t.tnorm(out, part)
        return out

    def _scores(self, head: Tensor, rel: Tensor, target: Tensor | None) -> Tensor:
        if target is None:
            return self.p.score_embeddings(head, rel, self.ent)
        return torch.diagonal(self.p.score_embeddings(head, rel, target))


def _binds_variables(query: Query) -> bool:
    """Whether ``query`` has variables of its own (a projection of a non-anchor)."""
    if isinstance(query, Projection):
        return not isinstance(query.arg, Anchor)
    if isinstance(query, Negation):
        return _binds_variables(query.arg)
    return any(_binds_variables(arg) for arg in getattr(query, "args", ()))


def _scopes(relaxed: _Relaxed) -> dict[tuple[int, ...] | None, list[tuple[int, ...]]]:
    """Variable paths grouped by the negation whose ``∃`` binds them (``None``: the query's).

    ``¬(∃y. φ(y, x))`` is ``1 − max_y φ(y, x)``: a variable inside a negated sub-formula must
    make that *inner* formula true, not the whole objective (which would pick a ``y`` that
    makes φ false and score every answer near 1). The nearest enclosing ``¬`` binds it, and
    it is fitted to the inner formula with the negation's own free target (``_SHADOW``), as
    if ``φ`` were a query of its own: then ``1 − φ`` is scored with CO's usual fixed ``y``
    for every candidate, not a ``y`` fitted only to the relaxed answer.
    """
    groups: dict[tuple[int, ...] | None, list[tuple[int, ...]]] = defaultdict(list)
    for var in relaxed.vars:
        if var[-1] == _SHADOW:
            groups[var[:-1]].append(var)
            continue
        enclosing = [p for p in relaxed.inner if len(var) > len(p) and var[: len(p) + 1] == (*p, 0)]
        groups[max(enclosing, key=len) if enclosing else None].append(var)
    return groups


def _optimize(relaxed: _Relaxed, generator: torch.Generator) -> None:
    """Ascend the objective for free variables and each negation's inner formula for its own.

    A min-max: the answer and the positive part's variables maximize the whole objective,
    while the variables local to ``¬(…)`` maximize the un-negated ``(…)`` (:func:`_scopes`).
    """
    answer = relaxed.variable((-1,), generator)  # the answer variable
    relaxed.fitting = True
    relaxed.value(relaxed.nodes, (), answer, generator)  # creates every variable
    scopes = _scopes(relaxed)
    params = list(relaxed.vars.values())
    optimizer = torch.optim.Adam(params, lr=relaxed.c.co_lr)
    previous = float("inf")
    for _ in range(relaxed.c.co_steps):
        relaxed.inner = {}
        objective = relaxed.value(relaxed.nodes, (), answer, generator)
        total = 0.0
        for scope, paths in scopes.items():
            own = [relaxed.vars[p] for p in paths]
            goal = objective if scope is None else relaxed.inner[scope]
            n3 = sum(v.abs().pow(3).sum() for v in own)
            loss = -goal.sum() + relaxed.c.co_regularizer * n3
            grads = torch.autograd.grad(loss, own, retain_graph=True)
            for param, grad in zip(own, grads, strict=True):
                param.grad = grad
            total += float(loss.detach())
        optimizer.step()
        if abs(previous - total) <= _TOL:
            break
        previous = total
    relaxed.fitting = False


def solve_co(
    predictor: LinkPredictor,
    queries: Sequence[Query],
    config: SolverConfig | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Solution:
    """CQD-CO answer scores ``[Q, N]`` for any tree-shaped queries (no explanations).

    Each query is expanded into its DNF disjuncts (:func:`disjuncts`); every disjunct's
    variables are optimized on their own and the disjuncts' answer scores are combined with
    max (``config.union == "max"``) or the t-conorm.

    Args:
        predictor: a link predictor with single entity/relation embedding tables (ComplEx,
            DistMult, ...).
        queries: grounded query trees.
        config: solver settings (``tnorm``, ``union``, ``co_steps``, ``co_lr``,
            ``co_regularizer``).
        generator: seeds the variable initialization (default: seed 0).
    """
    config = config or SolverConfig(solver="co")
    if not queries:
        raise ConfigError("no queries to answer")
    generator = generator or torch.Generator().manual_seed(0)
    expanded = [disjuncts(q) for q in queries]
    parts = _solve_conjunctive(predictor, [d for ds in expanded for d in ds], config, generator)
    device = parts.device
    owner = torch.tensor([i for i, ds in enumerate(expanded) for _ in ds], device=device)
    position = torch.tensor([j for ds in expanded for j in range(len(ds))], device=device)
    scores = parts[position == 0].clone()  # every query's first disjunct, in query order
    tnorm = make_tnorm(config.tnorm)
    for j in range(1, int(position.max()) + 1):  # over disjunct positions, batched over queries
        rows, part = owner[position == j], parts[position == j]
        scores[rows] = (
            torch.maximum(scores[rows], part)
            if config.union == "max"
            else tnorm.tconorm(scores[rows], part)
        )
    return Solution(scores, [], config)


def _solve_conjunctive(
    predictor: LinkPredictor,
    queries: list[Query],
    config: SolverConfig,
    generator: torch.Generator,
) -> Tensor:
    """CO scores ``[Q, N]`` of union-free queries, optimized in same-structure chunks."""
    groups: dict[Query, list[int]] = defaultdict(list)
    for index, query in enumerate(queries):
        groups[template_of(query)].append(index)
    scores = torch.empty(len(queries), predictor.num_entities, device=predictor.device)
    chunks = [ids[s : s + _CHUNK] for ids in groups.values() for s in range(0, len(ids), _CHUNK)]
    for indices in chunks:
        relaxed = _Relaxed(predictor, config, [queries[i] for i in indices])
        with torch.enable_grad():
            _optimize(relaxed, generator)
        with torch.no_grad():
            fixed = relaxed.value(relaxed.nodes, (), None, generator)
        scores[indices] = fixed.float()
    return scores
