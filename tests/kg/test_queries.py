"""Query trees, the 14 BetaE structures, BetaE tuples and the named JSON form."""

from __future__ import annotations

import pytest

from metalab.core.errors import MetalabError, UnknownNameError
from metalab.kg import (
    STRUCTURES,
    Anchor,
    Intersection,
    Negation,
    Projection,
    QueryFormatError,
    Union,
    Vocabulary,
    from_betae,
    query_from_json,
    query_to_json,
    structure_name,
    to_betae,
)

# BetaE's query_name_dict (snap-stanford/KGReasoning), written out by hand.
E, R, N, U = "e", "r", "n", "u"
BETAE_NAMES = {
    (E, (R,)): "1p",
    (E, (R, R)): "2p",
    (E, (R, R, R)): "3p",
    ((E, (R,)), (E, (R,))): "2i",
    ((E, (R,)), (E, (R,)), (E, (R,))): "3i",
    (((E, (R,)), (E, (R,))), (R,)): "ip",
    ((E, (R, R)), (E, (R,))): "pi",
    ((E, (R,)), (E, (R,)), (U,)): "2u",
    (((E, (R,)), (E, (R,)), (U,)), (R,)): "up",
    ((E, (R,)), (E, (R, N))): "2in",
    ((E, (R,)), (E, (R,)), (E, (R, N))): "3in",
    (((E, (R,)), (E, (R, N))), (R,)): "inp",
    ((E, (R, R)), (E, (R, N))): "pin",
    ((E, (R, R, N)), (E, (R,))): "pni",
}


def test_the_14_structures_are_betae_s() -> None:
    assert len(STRUCTURES) == 14
    assert {to_betae(t): n for n, t in STRUCTURES.items()} == BETAE_NAMES
    for shape, name in BETAE_NAMES.items():
        assert structure_name(from_betae(shape)) == name


def test_grounded_betae_tuples_round_trip() -> None:
    pin = Intersection(
        (Projection(3, Projection(0, Anchor(5))), Negation(Projection(2, Anchor(1))))
    )
    assert to_betae(pin) == ((5, (0, 3)), (1, (2, -2)))
    assert from_betae(((5, (0, 3)), (1, (2, -2)))) == pin
    up = Projection(4, Union((Projection(0, Anchor(1)), Projection(2, Anchor(3)))))
    assert to_betae(up) == (((1, (0,)), (3, (2,)), (-1,)), (4,))
    assert from_betae(to_betae(up)) == up
    assert structure_name(up) == "up" and structure_name(pin) == "pin"


def test_named_json_round_trips_and_reports_bad_input() -> None:
    ents, rels = Vocabulary(("a", "b")), Vocabulary(("p", "p^-1"), "relation")
    query = Intersection((Projection(0, Anchor(0)), Negation(Projection(1, Anchor(1)))))
    data = query_to_json(query, ents, rels)
    assert data == ["and", ["p", "p", ["e", "a"]], ["not", ["p", "p^-1", ["e", "b"]]]]
    assert query_from_json(data, ents, rels) == query
    with pytest.raises(UnknownNameError, match="did you mean a"):
        query_from_json(["p", "p", ["e", "aa"]], ents, rels)
    with pytest.raises(UnknownNameError, match="query operator"):
        query_from_json(["xor", ["e", "a"], ["e", "b"]], ents, rels)
    with pytest.raises(QueryFormatError, match="malformed 'and'"):
        query_from_json(["and", ["e", "a"]], ents, rels)
    with pytest.raises(MetalabError):
        from_betae(("x",))
