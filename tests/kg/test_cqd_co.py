"""CQD-CO: unions in disjunctive normal form, and the optimizer against the exact optimum."""

from __future__ import annotations

import pytest
import torch

from metalab.core.errors import ConfigError
from metalab.kg import SolverConfig, parse_query, solve
from metalab.kg.co import disjuncts, solve_co
from metalab.kg.queries import Anchor, Intersection, Negation, Projection, Union

A, B, C, D = (Projection(r, Anchor(e)) for r, e in ((0, 1), (2, 3), (4, 5), (6, 7)))


def test_disjuncts_of_union_free_query_is_the_query() -> None:
    chain = Projection(8, Intersection((A, Negation(B))))
    assert disjuncts(chain) == [chain]


def test_disjuncts_distribute_projection_and_intersection_over_union() -> None:
    assert disjuncts(Projection(8, Union((A, B)))) == [Projection(8, A), Projection(8, B)]
    both = disjuncts(Intersection((Union((A, B)), Union((C, D)))))
    assert both == [Intersection(pair) for pair in ((A, C), (A, D), (B, C), (B, D))]
    assert disjuncts(Union((A, Union((B, C))))) == [A, B, C]


def test_disjuncts_of_negated_union_is_conjunction_of_negations() -> None:
    assert disjuncts(Negation(Union((A, B)))) == [Intersection((Negation(A), Negation(B)))]


def test_disjuncts_refuses_an_exponential_normal_form() -> None:
    huge = Intersection(tuple(Union((A, B)) for _ in range(7)))  # 2^7 = 128 disjuncts
    with pytest.raises(ConfigError, match="disjuncts"):
        disjuncts(huge)


@pytest.mark.parametrize("union", ["max", "tconorm"])
def test_co_union_combines_its_disjuncts_answer_scores(tiny_predictor, union) -> None:
    """``up`` = max (or probabilistic sum) of its two 2p disjuncts, each with its own variable."""
    rel = tiny_predictor.query_relations
    up = parse_query(
        "(treaties(usa, ?y) | embassy(china, ?y)) & intergovorgs(?y, ?x)",
        tiny_predictor.entities,
        rel,
    ).query
    config = SolverConfig("co", co_steps=20, union=union)
    whole = solve_co(tiny_predictor, [up], config, generator=torch.Generator().manual_seed(3))
    parts = solve_co(
        tiny_predictor, disjuncts(up), config, generator=torch.Generator().manual_seed(3)
    ).scores
    expected = parts.max(0).values if union == "max" else parts[0] + parts[1] - parts[0] * parts[1]
    assert torch.allclose(whole.scores[0], expected, atol=1e-6)


def test_unregularized_co_reaches_the_discrete_optimum_on_chains(tiny_predictor) -> None:
    """CO relaxes the variables from entities to all embeddings, so without N3 its best answer
    score reaches (up to optimizer tolerance) at least the exact max-product optimum."""
    rel = tiny_predictor.query_relations
    chains = [
        parse_query(q, tiny_predictor.entities, rel).query
        for q in (
            "treaties(usa, ?y) & embassy(?y, ?x)",
            "embassy(china, ?y) & intergovorgs(?y, ?x)",
            "treaties(uk, ?y) & embassy(?y, ?z) & intergovorgs(?z, ?x)",
        )
    ]
    exact = solve(tiny_predictor, chains, SolverConfig("exact")).scores.max(1).values
    co = solve(tiny_predictor, chains, SolverConfig("co", co_steps=300, co_regularizer=0.0))
    assert bool((co.scores.max(1).values >= exact - 1e-3).all())


@pytest.mark.parametrize(
    ("inner", "positive"),
    [
        ("treaties(usa, ?y) & embassy(?y, ?x)", "intergovorgs(china, ?x)"),
        ("embassy(uk, ?y) & treaties(?y, ?x)", "embassy(india, ?x)"),
    ],
)
def test_co_negated_subquery_means_there_is_no_such_variable(
    tiny_predictor, inner, positive
) -> None:
    """pni: ``!(∃y. φ(y, x)) & ψ(x)`` scores ``ψ(x)·(1 − φ_CO(x))``: ?y is fitted to make the
    *inner* φ true (as CO answers φ on its own), not to make it false, which scored ~ψ(x)."""
    rel = tiny_predictor.query_relations
    parse = lambda text: parse_query(text, tiny_predictor.entities, rel).query  # noqa: E731
    config = SolverConfig("co", co_steps=300, co_regularizer=0.0)
    pni = solve(tiny_predictor, [parse(f"!({inner}) & {positive}")], config).scores[0]
    alone = solve(tiny_predictor, [parse(inner)], config).scores[0]
    psi = solve(tiny_predictor, [parse(positive)], SolverConfig("exact")).scores[0]
    assert torch.allclose(pni, psi * (1 - alone), atol=0.08)
    assert float((pni / psi).min()) < 0.5  # the old CO left every answer near ψ(x)
