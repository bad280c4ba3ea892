"""The CQD query language: QUERIES.md examples, tree building, inverse atoms and errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metalab.kg import Vocabulary, load_graph
from metalab.kg.queries import Anchor, Intersection, Negation, Projection, structure_name
from metalab.kg.query_language import QuerySyntaxError, parse_query
from metalab.kg.query_syntax import quoted_name

QUERIES_MD = Path(__file__).parents[2] / "packages" / "metalab" / "kg" / "QUERIES.md"


def md_examples() -> list[tuple[str, str]]:
    rows = re.findall(r"^\| (\w+) +\| `(.+)` \|$", QUERIES_MD.read_text(), flags=re.M)
    return [(name, text.replace("\\|", "|")) for name, text in rows]


@pytest.fixture(scope="module")
def vocab():
    graph = load_graph("nations")
    return graph.entities, graph.query_relations


def test_markdown_has_all_14_structures() -> None:
    assert [name for name, _ in md_examples()] == [
        "1p", "2p", "3p", "2i", "3i", "ip", "pi", "2u", "up", "2in", "3in", "inp", "pin", "pni",
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "text"), md_examples())
def test_markdown_examples_parse_to_their_structure(vocab, name: str, text: str) -> None:
    parsed = parse_query(text, *vocab)
    assert structure_name(parsed.query) == name
    assert parsed.answer == "?x"


def test_tree_ids_and_inverse_atoms(vocab) -> None:
    entities, relations = vocab
    usa, china = entities.id("usa"), entities.id("china")
    treaties, embassy = relations.id("treaties"), relations.id("embassy")
    with pytest.raises(QuerySyntaxError, match="not anchored"):  # no head: the answer is ?y
        parse_query("treaties(usa, ?y) & embassy(?x, ?y)", *vocab)
    parsed = parse_query("?x : treaties(usa, ?y) & embassy(?x, ?y)", *vocab)
    assert parsed.query == Projection(embassy + 1, Projection(treaties, Anchor(usa)))
    assert parsed.variables == {(): "?x", (0,): "?y"}
    same = parse_query("?x: treaties^-1(?x, usa), not embassy(china, ?x)", *vocab).query
    assert same == Intersection(
        (Projection(treaties, Anchor(usa)), Negation(Projection(embassy, Anchor(china))))
    )
    quoted = parse_query("'treaties'(\"usa\", ?x)", *vocab).query
    assert quoted == Projection(treaties, Anchor(usa))


def test_custom_trees_beyond_betae(vocab) -> None:
    four = "treaties(usa, ?a) & embassy(?a, ?b) & treaties(?b, ?c) & embassy(?c, ?x)"
    query = parse_query(four, *vocab).query
    depth = 0
    while isinstance(query, Projection):
        depth, query = depth + 1, query.arg
    assert depth == 4
    assert isinstance(query, Anchor)
    mixed = parse_query("?x : treaties(usa, ?x) & (embassy(china, ?x) | embassy(uk, ?x))", *vocab)
    assert structure_name(mixed.query) is None


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("treaties(usaa, ?x)", 10, "unknown entity 'usaa'; did you mean usa"),
        ("treaty(usa, ?x)", 1, "unknown relation 'treaty'; did you mean treaties"),
        ("treaties(usa ?x)", 14, "expected ','"),
        ("treaties(usa, ?x) $", 19, "unexpected character"),
        ("treaties(usa, ?x) &", 20, "expected a relation name"),
        ("treaties(usa, ?x) & (embassy(uk, ?x)", 37, "expected ')'"),
        ("treaties(?y, ?x)", 1, "not anchored"),
        (
            "treaties(usa, ?x) & embassy(?y, ?x) & embassy(uk, ?y) & treaties(?y, ?x)",
            57,
            "the query is not a tree: its atoms form a cycle ?y - ?x - ?y",
        ),
        ("treaties(usa, ?y) & embassy(uk, ?x)", 1, "answer variable"),
        ("?x : treaties(usa, ?x) & embassy(uk, ?y)", 26, "not connected"),
        ("?z : treaties(usa, ?x)", 1, "occurs in no atom"),
    ],
)
def test_errors_are_one_line_with_column(vocab, text: str, column: int, message: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(text, *vocab)
    text_error = str(info.value)
    assert "\n" not in text_error
    assert text_error.startswith(f"query error at column {column}:"), text_error
    assert message in text_error


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("2in", "!embassy(china, ?x) & treaties(usa, ?x)"),
        ("pni", "intergovorgs(uk, ?x) & !(treaties(usa, ?y) & embassy(?y, ?x))"),
        ("pin", "!intergovorgs(uk, ?x) & treaties(usa, ?y) & embassy(?y, ?x)"),
        ("3in", "!intergovorgs(uk, ?x) & embassy(china, ?x) & treaties(usa, ?x)"),
    ],
)
def test_structure_is_recognised_in_any_argument_order(vocab, name: str, text: str) -> None:
    assert structure_name(parse_query(text, *vocab).query) == name


def test_a_four_hop_chain_has_no_betae_name(vocab) -> None:
    four = "treaties(usa, ?a) & embassy(?a, ?b) & treaties(?b, ?c) & embassy(?c, ?x)"
    assert structure_name(parse_query(four, *vocab).query) is None


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("treaties(usa, china)", 1, "query has no variable; put one where the answers go, e.g. "
         "treaties(usa, ?x) (the answer variable is the one named in a '?x :' head"),
        ("?x : treaties(usa, china)", 6, "query has no variable"),
        ("treaties(usa, china) & !embassy(uk, china)", 1, "query has no variable"),
        ("?x : treaties(usa, china) & embassy(uk, ?x)", 6, "atom has no variable"),
    ],
)  # fmt: skip
def test_a_query_without_variable_says_so(vocab, text: str, column: int, message: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(text, *vocab)
    assert str(info.value).startswith(f"query error at column {column}: {message}"), info.value


@pytest.mark.parametrize(
    ("text", "example"),
    [
        ('"it\'s"(usa, uk)', '"it\'s"(usa, ?x)'),  # a single quote: suggest double quotes
        ("'say \"hi\"'(usa, uk)", "'say \"hi\"'(usa, ?x)"),
        ("'new rel'(\"o'hare\", uk)", "'new rel'(\"o'hare\", ?x)"),
        ("r(usa, uk)", "r(usa, ?x)"),
    ],
)
def test_the_no_variable_example_is_a_query_that_parses(text: str, example: str) -> None:
    entities = Vocabulary(("usa", "uk", "o'hare"))
    names = ("it's", 'say "hi"', "new rel", "r")
    relations = Vocabulary(tuple(n + s for n in names for s in ("", "^-1")), "relation")
    with pytest.raises(QuerySyntaxError, match=f"e.g. {re.escape(example)} ") as info:
        parse_query(text, entities, relations)
    assert "\n" not in str(info.value)
    assert parse_query(example, entities, relations).answer == "?x"


def test_a_name_with_both_quote_kinds_gets_no_example() -> None:
    assert quoted_name("""a'b"c""") == ""  # the tokenizer has no escapes: it cannot be written
    assert quoted_name("a b") == "'a b'" and quoted_name("a.b-c") == "a.b-c"


@pytest.mark.parametrize(
    ("text", "column", "cycle"),
    [
        # without a head every variable of a cycle is a subject: named as a cycle, not as a
        # missing answer variable
        ("treaties(usa, ?x) & embassy(?x, ?y) & treaties(?y, ?x)", 39, "?y - ?x - ?y"),
        ("treaties(usa, ?y) & embassy(?y, ?z) & intergovorgs(?z, ?x) & treaties(?y, ?x)",
         62, "?y - ?z - ?x - ?y"),
        ("?x : treaties(usa, ?y) & treaties(?y, ?x) & embassy(?y, ?x)", 45, "?y - ?x - ?y"),
        ("treaties(usa, ?x) & !(embassy(?x, ?y) & embassy(?y, ?x))", 41, "?y - ?x - ?y"),
        ("?x : treaties(usa, ?y) & embassy(?y, ?x) & !intergovorgs(?y, ?x)", 44, "?x - ?y - ?x"),
        ("?x : treaties(usa, ?y) & embassy(?y, ?x) & (treaties(?y, ?x) | embassy(?x, ?y))",
         45, "?x - ?y - ?x"),
    ],
)  # fmt: skip
def test_a_cyclic_query_is_named_not_a_tree(vocab, text: str, column: int, cycle: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(text, *vocab)
    assert str(info.value) == (
        f"query error at column {column}: the query is not a tree: its atoms form a cycle {cycle}"
    )


def test_an_atom_on_one_variable_is_a_cycle_of_length_one(vocab) -> None:
    with pytest.raises(QuerySyntaxError, match=r"not a tree: the atom relates \?x to itself"):
        parse_query("treaties(?x, ?x)", *vocab)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("treaties(usa, ?y) & embassy(?y, ?x) & intergovorgs(usa, ?x)", "pi"),  # anchor twice
        ("(treaties(usa, ?y) | embassy(usa, ?y)) & intergovorgs(?y, ?x)", "up"),
        ("!(treaties(usa, ?y) & embassy(?y, ?x)) & intergovorgs(usa, ?x)", "pni"),
    ],
)
def test_shared_anchors_and_local_variables_are_no_cycle(vocab, text: str, name: str) -> None:
    assert structure_name(parse_query(text, *vocab).query) == name


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("knows(Bob Smith, ?x)", "did you mean 'Bob Smith' (quote names with spaces)?"),
        ("knows('bob smith', ?x)", "did you mean 'Bob Smith' (quote names with spaces)?"),
        ("knows(ALICE, ?x)", "did you mean alice?"),
        ("KNOWS(alice, ?x)", "did you mean knows"),
    ],
)
def test_name_hints_are_case_insensitive_and_quoted_when_needed(text: str, hint: str) -> None:
    entities = Vocabulary(("alice", "Bob Smith", "carol"), kind="entity")
    relations = Vocabulary(("knows", "knows^-1"), kind="relation")
    with pytest.raises(QuerySyntaxError, match=re.escape(hint)):
        parse_query(text, entities, relations)
