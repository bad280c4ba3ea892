"""CQD-Beam and exact inference by value against brute force, and exact explanations."""

from __future__ import annotations

import pytest
import torch

from metalab.core.errors import ConfigError, UnknownNameError
from metalab.kg import (
    SolverConfig,
    explain,
    known_edges,
    parse_query,
    rescore_explanation,
    solve,
)
from metalab.kg.queries import Anchor, Intersection, Negation, Projection, Union

POSITIVE = [
    "treaties(usa, ?x)",
    "treaties(usa, ?y) & embassy(?y, ?x)",
    "treaties(usa, ?y) & embassy(?y, ?z) & intergovorgs(?z, ?x)",
    "treaties(usa, ?x) & embassy(china, ?x) & intergovorgs(uk, ?x)",
    "treaties(usa, ?y) & embassy(china, ?y) & intergovorgs(?y, ?x)",
    "treaties(usa, ?y) & embassy(?y, ?x) & intergovorgs(uk, ?x)",
    "(treaties(usa, ?y) | embassy(china, ?y)) & intergovorgs(?y, ?x)",
]
NEGATED = [
    "treaties(usa, ?x) & !embassy(china, ?x)",
    "treaties(usa, ?y) & !embassy(china, ?y) & intergovorgs(?y, ?x)",
    "!(treaties(usa, ?y) & embassy(?y, ?x)) & intergovorgs(uk, ?x)",
]


def phi_matrices(predictor) -> torch.Tensor:
    """[R, N, N] sigmoid truth of every triple, one relation matrix at a time."""
    mats = [predictor.relation_matrix(r) for r in range(predictor.num_query_relations)]
    return torch.sigmoid(torch.stack(mats))


def brute(query, m: torch.Tensor, tnorm) -> torch.Tensor:
    """Reference fuzzy set of a query tree, Python recursion with all heads."""
    n = m.shape[1]
    if isinstance(query, Anchor):
        return torch.nn.functional.one_hot(torch.tensor(query.entity), n).float()
    if isinstance(query, Projection):
        return tnorm(brute(query.arg, m, tnorm)[:, None], m[query.relation]).max(0).values
    if isinstance(query, Negation):
        return 1 - brute(query.arg, m, tnorm)
    parts = [brute(a, m, tnorm) for a in query.args]
    if isinstance(query, Union):
        return torch.stack(parts).max(0).values
    out = parts[0]
    for p in parts[1:]:
        out = tnorm(out, p)
    return out


TNORMS = {
    "product": lambda a, b: a * b,
    "godel": torch.minimum,
    "lukasiewicz": lambda a, b: torch.clamp(a + b - 1, min=0),
}


@pytest.fixture(scope="module")
def parsed(tiny_predictor):
    rel = tiny_predictor.query_relations
    return [parse_query(q, tiny_predictor.entities, rel) for q in POSITIVE + NEGATED]


@pytest.mark.parametrize("tnorm", sorted(TNORMS))
def test_exact_and_full_beam_equal_brute_force(tiny_predictor, parsed, tnorm: str) -> None:
    m = phi_matrices(tiny_predictor)
    queries = [p.query for p in parsed]
    want = torch.stack([brute(q, m, TNORMS[tnorm]) for q in queries])
    n = tiny_predictor.num_entities
    for config in (SolverConfig("exact", tnorm=tnorm), SolverConfig("beam", k=n, tnorm=tnorm)):
        got = solve(tiny_predictor, queries, config).scores
        assert torch.allclose(got, want, atol=1e-5), config


def test_beam_below_exact_and_monotone_in_k(tiny_predictor, parsed) -> None:
    queries = [p.query for p in parsed[: len(POSITIVE)]]
    exact = solve(tiny_predictor, queries, SolverConfig("exact")).scores
    previous = None
    for k in (1, 2, 4, 8, tiny_predictor.num_entities):
        beam = solve(tiny_predictor, queries, SolverConfig("beam", k=k)).scores
        assert bool((beam <= exact + 1e-6).all())
        if previous is not None:
            assert bool((beam >= previous - 1e-6).all())
        previous = beam
    assert torch.allclose(previous, exact, atol=1e-5)
    small = solve(tiny_predictor, queries[1:3], SolverConfig("beam", k=1)).scores
    assert bool((small < exact[1:3] - 1e-4).any())  # a narrow beam does lose something here


def test_batching_equals_one_query_at_a_time(tiny_predictor) -> None:
    g = torch.Generator().manual_seed(0)
    n, r = tiny_predictor.num_entities, tiny_predictor.num_query_relations
    queries = []
    for _ in range(12):
        a, r1, r2, r3 = (int(torch.randint(0, b, (), generator=g)) for b in (n, r, r, r))
        chain = Projection(r3, Projection(r2, Projection(r1, Anchor(a))))
        queries.append(Intersection((chain, Projection(r2, Anchor((a + 1) % n)))))
    config = SolverConfig("beam", k=3)
    batch = solve(tiny_predictor, queries, config).scores
    single = torch.cat([solve(tiny_predictor, [q], config).scores for q in queries])
    assert torch.allclose(batch, single, atol=1e-6)


@pytest.mark.parametrize(
    ("solver", "k", "tnorm", "union"),
    [
        ("beam", 2, "product", "max"),
        ("beam", 4, "godel", "tconorm"),
        ("beam", 3, "lukasiewicz", "max"),
        ("exact", 1, "product", "tconorm"),
    ],
)
def test_explanations_rescore_exactly(tiny_predictor, nations, parsed, solver, k, tnorm, union):
    config = SolverConfig(solver, k=k, tnorm=tnorm, union=union)
    solution = solve(tiny_predictor, [p.query for p in parsed], config)
    known = known_edges(nations)
    for index, p in enumerate(parsed):
        for answer in solution.scores[index].topk(4).indices.tolist():
            ex = explain(
                tiny_predictor, solution, index, answer, variables=p.variables, known=known
            )
            assert rescore_explanation(tiny_predictor, ex, config) == ex.score  # exactly
            assert ex.score == pytest.approx(ex.solver_score, abs=1e-5)
            assert ex.assignment[p.answer] == answer
            for atom in ex.atoms:
                assert atom.known == ((atom.head, atom.relation, atom.tail) in known)


def test_explanation_of_a_chain_by_hand(tiny_predictor) -> None:
    rel, ent = tiny_predictor.query_relations, tiny_predictor.entities
    p = parse_query("treaties(usa, ?y) & embassy(?y, ?x)", ent, rel)
    solution = solve(tiny_predictor, [p.query], SolverConfig("exact"))
    answer = int(solution.scores[0].argmax())
    ex = explain(tiny_predictor, solution, 0, answer, variables=p.variables)
    y = ex.assignment["?y"]
    first, second = ex.atoms
    assert (first.head, first.relation, first.tail) == (ent.id("usa"), rel.id("treaties"), y)
    assert (second.head, second.relation, second.tail) == (y, rel.id("embassy"), answer)
    assert ex.score == pytest.approx(first.truth * second.truth, rel=1e-6)
    m = phi_matrices(tiny_predictor)
    path = m[rel.id("treaties"), ent.id("usa")] * m[rel.id("embassy"), :, answer]
    assert int(path.argmax()) == y  # the explanation is the best intermediate entity
    assert all(a.known is None and not a.negated for a in ex.atoms)


def test_bad_settings(tiny_predictor) -> None:
    q = [Projection(2, Projection(0, Anchor(0)))]
    with pytest.raises(ConfigError, match="memory budget"):
        solve(tiny_predictor, q, SolverConfig("exact", memory_budget=100))
    with pytest.raises(UnknownNameError):
        SolverConfig("bem")
    with pytest.raises(ConfigError):
        SolverConfig(k=0)
    with pytest.raises(ConfigError):
        solve(tiny_predictor, [], SolverConfig())


def test_co_is_exact_without_variables_and_deterministic(tiny_predictor, parsed) -> None:
    from metalab.kg import solve_co

    queries = [p.query for p in parsed]
    config = SolverConfig("co", co_steps=30)
    co = solve(tiny_predictor, queries, config).scores
    exact = solve(tiny_predictor, queries, SolverConfig("exact")).scores
    assert torch.allclose(co[0], exact[0], atol=1e-5)  # 1p: no variable to optimize
    assert bool(((co >= 0) & (co <= 1)).all())
    again = solve_co(tiny_predictor, queries, config, generator=torch.Generator().manual_seed(0))
    again_scores = again.scores
    assert torch.equal(co, again_scores)
    with pytest.raises(ConfigError, match="no explanations"):
        explain(tiny_predictor, solve(tiny_predictor, queries[1:2], config), 0, 0)


def test_co_optimization_raises_the_objective(tiny_predictor, parsed) -> None:
    """More Adam steps reach a higher best answer score on chains (CQD-CO maximizes it)."""
    chains = [parsed[1].query, parsed[2].query]
    few = solve(tiny_predictor, chains, SolverConfig("co", co_steps=1)).scores.max(1).values
    many = solve(tiny_predictor, chains, SolverConfig("co", co_steps=100)).scores.max(1).values
    assert bool((many > few + 1e-3).all())


def plain_beam_chain(predictor, anchor: int, relations: list[int], k: int) -> torch.Tensor:
    """The reference CQD-Beam for one chain query: k^v branches, no deduplication."""
    branches = [(anchor, torch.tensor(1.0))]
    for hop, r in enumerate(relations):
        heads = torch.tensor([h for h, _ in branches])
        phi = torch.sigmoid(predictor.score_tails(heads, torch.full_like(heads, r)))
        values = torch.stack([v for _, v in branches])[:, None] * phi
        if hop == len(relations) - 1:
            return values.max(0).values
        top_v, top_i = values.topk(k, dim=1)
        branches = [(int(top_i[b, j]), top_v[b, j]) for b in range(len(branches)) for j in range(k)]
    raise AssertionError("unreachable")


@pytest.mark.parametrize("k", [1, 3, 5])
def test_beam_equals_the_reference_algorithm_on_chains(tiny_predictor, k: int) -> None:
    g = torch.Generator().manual_seed(1)
    n, r = tiny_predictor.num_entities, tiny_predictor.num_query_relations
    queries, want = [], []
    for hops in (2, 3, 2, 3):
        anchor = int(torch.randint(0, n, (), generator=g))
        rels = [int(x) for x in torch.randint(0, r, (hops,), generator=g)]
        query = Anchor(anchor)
        for rel in rels:
            query = Projection(rel, query)
        queries.append(query)
        want.append(plain_beam_chain(tiny_predictor, anchor, rels, k))
    got = solve(tiny_predictor, queries, SolverConfig("beam", k=k)).scores
    assert torch.allclose(got, torch.stack(want), atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_beam_union_is_the_reference_dnf(tiny_predictor, k: int) -> None:
    """``up`` = max of its two DNF ``2p`` disjuncts, each with its own top-k (reference CQD)."""
    g = torch.Generator().manual_seed(2)
    n, r = tiny_predictor.num_entities, tiny_predictor.num_query_relations
    queries, want = [], []
    for _ in range(4):
        a1, a2 = (int(x) for x in torch.randint(0, n, (2,), generator=g))
        r1, r2, r3 = (int(x) for x in torch.randint(0, r, (3,), generator=g))
        queries.append(
            Projection(r3, Union((Projection(r1, Anchor(a1)), Projection(r2, Anchor(a2)))))
        )
        left = plain_beam_chain(tiny_predictor, a1, [r1, r3], k)
        right = plain_beam_chain(tiny_predictor, a2, [r2, r3], k)
        want.append(torch.maximum(left, right))
    got = solve(tiny_predictor, queries, SolverConfig("beam", k=k)).scores
    assert torch.allclose(got, torch.stack(want), atol=1e-6)
