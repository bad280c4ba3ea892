"""BetaE-style generation on a hand-made graph whose answers are enumerated by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from metalab.core.errors import UnknownNameError
from metalab.kg import (
    STRUCTURES,
    Anchor,
    GraphIndex,
    Intersection,
    Negation,
    Projection,
    Union,
    generate_queries,
    structure_name,
)

P, PI, Q, QI, R, RI = range(6)  # query relation ids of the hand graph (p, p^-1, q, ...)


def _e(graph, name):
    return Anchor(graph.entities.id(name))


def _chain(graph, start, *rels):
    node = _e(graph, start)
    for rel in rels:
        node = Projection(rel, node)
    return node


def _hand_queries(g):
    """One query per structure with its answers on G_valid and G_test, worked out by hand."""
    bq, cq, aq = _chain(g, "b", Q), _chain(g, "c", Q), _chain(g, "a", Q)
    return {
        "1p": (bq, "f", "df"),  # b -q-> f (train), d (test)
        "2p": (_chain(g, "a", P, Q), "f", "df"),  # a -p-> b -q-> f | d
        "3p": (_chain(g, "a", P, P, P), "", "e"),  # a->b->c -p-> e (test)
        "2i": (Intersection((bq, cq)), "", "d"),
        "3i": (Intersection((bq, cq, _chain(g, "g", PI))), "", "d"),  # g <-p- d (valid)
        "ip": (Projection(Q, Intersection((_chain(g, "a", P), _chain(g, "e", P)))), "f", "df"),
        "pi": (Intersection((_chain(g, "a", P, Q), cq)), "", "d"),
        "2u": (Union((bq, _chain(g, "d", P))), "fg", "dfg"),
        "up": (Projection(Q, Union((_chain(g, "a", P), _chain(g, "g", PI)))), "f", "df"),
        "2in": (Intersection((bq, Negation(aq))), "f", "d"),  # a -q-> c | c, f (test)
        "3in": (Intersection((bq, cq, Negation(aq))), "", "d"),
        "inp": (
            Projection(Q, Intersection((_chain(g, "a", P), Negation(_chain(g, "c", P))))),
            "f",
            "df",
        ),
        "pin": (Intersection((_chain(g, "a", P, Q), Negation(aq))), "f", "d"),
        "pni": (Intersection((Negation(_chain(g, "e", P, P)), bq)), "f", "df"),
    }


def test_hand_enumerated_3in_of_the_gadget(hand_graph) -> None:
    valid = GraphIndex(hand_graph.graph("valid"), hand_graph.num_entities)
    test = GraphIndex(hand_graph.graph("test"), hand_graph.num_entities)
    query = Intersection(
        (
            _chain(hand_graph, "h", R),
            _chain(hand_graph, "i", R),
            Negation(_chain(hand_graph, "j", R)),
        )
    )
    assert _mask_names(hand_graph, valid.answers(query)) == "l"  # {k,l} ∩ {k,l,m} − {k}
    assert _mask_names(hand_graph, test.answers(query)) == "m"  # {k,l,m} ∩ {k,l,m} − {k,l}


def _mask_names(graph, mask):
    return "".join(graph.entities.name(i) for i in np.flatnonzero(mask))


def test_hand_enumerated_answers_of_all_14_structures(hand_graph) -> None:
    valid = GraphIndex(hand_graph.graph("valid"), hand_graph.num_entities)
    test = GraphIndex(hand_graph.graph("test"), hand_graph.num_entities)
    table = _hand_queries(hand_graph)
    assert set(table) == set(STRUCTURES)
    for name, (query, on_valid, on_test) in table.items():
        assert structure_name(query) == name
        assert _mask_names(hand_graph, valid.answers(query)) == on_valid, name
        assert _mask_names(hand_graph, test.answers(query)) == on_test, name


def _brute_answers(triples, query, entities):
    """An independent set-based evaluator (BetaE's achieve_answer, in plain Python)."""
    if isinstance(query, Anchor):
        return {query.entity}
    if isinstance(query, Projection):
        sub = _brute_answers(triples, query.arg, entities)
        return {t for h, r, t in triples if r == query.relation and h in sub}
    if isinstance(query, Negation):
        return set(entities) - _brute_answers(triples, query.arg, entities)
    parts = [_brute_answers(triples, a, entities) for a in query.args]
    return set.intersection(*parts) if isinstance(query, Intersection) else set.union(*parts)


def _chains_walk_back(query, previous=-1) -> bool:
    if isinstance(query, Anchor):
        return False
    if isinstance(query, Projection):
        back = previous >= 0 and query.relation // 2 == previous // 2 and query.relation != previous
        chained = isinstance(query.arg, (Projection, Negation))
        return back or _chains_walk_back(query.arg, query.relation if chained else -1)
    if isinstance(query, Negation):
        return _chains_walk_back(query.arg, previous)
    return any(_chains_walk_back(a) for a in query.args)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_generated_queries_obey_betae_rules_for_all_structures(hand_graph, split: str) -> None:
    queries, report = generate_queries(
        hand_graph,
        split=split,
        per_structure=10,
        generator=torch.Generator().manual_seed(0),
        max_attempts=1000,
    )
    entities = range(hand_graph.num_entities)
    full = {tuple(t) for t in hand_graph.graph(split).tolist()}
    small = {tuple(t) for t in hand_graph.graph("train" if split == "valid" else "valid").tolist()}
    assert len(set(queries)) == len(queries) and len({q.query for q in queries}) == len(queries)
    for q in queries:
        big, little = (
            _brute_answers(full, q.query, entities),
            _brute_answers(small, q.query, entities),
        )
        assert structure_name(q.query) == q.structure
        assert set(q.easy) == little and set(q.hard) == big - little and q.hard  # no hard: dropped
        if "n" in q.structure:
            assert little - big  # the negation removed an answer
        assert not _chains_walk_back(q.query)
        assert len(q.hard_missing_links) == len(q.hard) and min(q.hard_missing_links) >= 1
    if split == "test":  # the hand graph admits every structure on the test split
        assert all(report.accepted[name] >= 1 for name in STRUCTURES), report.accepted
    assert sum(report.accepted.values()) == len(queries)


def test_1p_test_queries_are_exactly_the_hand_enumerated_ones(hand_graph) -> None:
    queries, _ = generate_queries(
        hand_graph,
        split="test",
        per_structure=100,
        structures=["1p"],
        generator=torch.Generator().manual_seed(1),
        max_attempts=2000,
    )
    got = {
        (
            hand_graph.entities.name(q.query.arg.entity),
            q.query.relation,
            "".join(hand_graph.entities.name(e) for e in q.hard),
            "".join(hand_graph.entities.name(e) for e in q.easy),
        )
        for q in queries
    }
    # every test triple and its reciprocal, with the answers G_valid already has as easy ones
    assert got == {
        ("c", P, "e", ""),
        ("e", PI, "c", ""),
        ("b", Q, "d", "f"),
        ("d", QI, "b", "c"),
        ("e", Q, "g", ""),
        ("g", QI, "e", ""),
        ("a", Q, "f", "c"),
        ("f", QI, "a", "b"),
        ("h", R, "m", "kl"),
        ("m", RI, "h", "i"),
        ("j", R, "l", "k"),
        ("l", RI, "j", "hi"),
    }


def test_missing_links_count_the_test_edges_a_path_needs(hand_graph) -> None:
    full = hand_graph.graph("test")
    small = {tuple(t) for t in hand_graph.graph("valid").tolist()}
    missing = np.array([tuple(t) not in small for t in full.tolist()])
    index = GraphIndex(full, hand_graph.num_entities, missing=missing)
    g = hand_graph.entities.id("g")
    assert index.missing_links(_chain(hand_graph, "c", P, Q))[g] == 2  # c-p->e, e-q->g: both test
    two_p = index.missing_links(_chain(hand_graph, "b", Q, QI))
    assert [two_p[hand_graph.entities.id(x)] for x in "bac"] == [0, 1, 1]
    pin = _hand_queries(hand_graph)["pin"][0]
    assert index.missing_links(pin)[hand_graph.entities.id("d")] == 1


def test_generation_is_seeded_and_structures_use_independent_streams(hand_graph) -> None:
    def run(seed, structures=None):
        queries, _ = generate_queries(
            hand_graph,
            per_structure=5,
            structures=structures,
            generator=torch.Generator().manual_seed(seed),
            max_attempts=500,
        )
        return queries

    assert run(3) == run(3)
    assert run(3) != run(4)
    alone = run(3, ["2p"])
    assert [q for q in run(3) if q.structure == "2p"] == alone


def test_answer_cap_and_bad_arguments(hand_graph) -> None:
    capped, _ = generate_queries(
        hand_graph,
        per_structure=50,
        structures=["2u"],
        max_answers=1,
        generator=torch.Generator().manual_seed(0),
        max_attempts=500,
    )
    assert all(len(q.hard) <= 1 for q in capped)
    with pytest.raises(UnknownNameError, match="did you mean 2in"):
        generate_queries(hand_graph, structures=["2n"], generator=torch.Generator())
    with pytest.raises(UnknownNameError):
        generate_queries(hand_graph, split="dev", generator=torch.Generator())


def test_reciprocal_false_uses_forward_relations_only(hand_graph) -> None:
    queries, _ = generate_queries(
        hand_graph,
        per_structure=20,
        reciprocal=False,
        generator=torch.Generator().manual_seed(0),
        max_attempts=500,
    )

    def relations(q):
        if isinstance(q, Anchor):
            return []
        if isinstance(q, Projection):
            return [q.relation, *relations(q.arg)]
        if isinstance(q, Negation):
            return relations(q.arg)
        return list(itertools.chain.from_iterable(relations(a) for a in q.args))

    assert queries and all(r % 2 == 0 for q in queries for r in relations(q.query))
