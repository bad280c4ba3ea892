"""A small first-order query language for tree-shaped complex queries (CQD's Eq. 1).

Grammar (whitespace is free; ``#`` starts nothing special)::

    query    := [ VAR ":" ] formula
    formula  := conj ( ("|" | "or") conj )*                 disjunction
    conj     := literal ( ("&" | "and" | ",") literal )*     conjunction
    literal  := ("!" | "not") literal | "(" formula ")" | atom
    atom     := RELATION "(" term "," term ")"                RELATION(subject, object)
    term     := VAR | ENTITY
    VAR      := "?" NAME                                     e.g. ?x, ?answer
    ENTITY, RELATION := NAME | "quoted name" | 'quoted name'
    NAME     := one or more of letters, digits and _ - . / ^ ~ + @

Variables are existentially quantified except the answer variable: the one named in the
head ``?x :``, or, without a head, the only variable that never occurs as an atom's
subject. ``r^-1(a, ?x)`` is the inverse relation and means ``r(?x, a)``. The atoms must
form a tree around the answer variable (no cycles, every variable connected to it, every
branch ending in an anchor entity). A negation or a parenthesized disjunction may only
share the variable it constrains with the rest of the query; its other variables are
local to it (``!(r(a, ?y) & s(?y, ?x))`` is ``¬∃y``). See ``QUERIES.md`` for one example per
BetaE structure.

:func:`parse_query` converts the text to the tree of :mod:`metalab.kg.queries`
(:class:`~metalab.kg.queries.Projection`, ``Intersection``, ``Union``, ``Negation``,
``Anchor``) and records the user's variable names for explanations; the syntax nodes and
the checks of what CQD cannot answer (no variable, cycles) are in :mod:`.query_syntax`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from metalab.core.errors import closest_names
from metalab.kg.graphs import Vocabulary, inverse_relation
from metalab.kg.queries import Anchor, Intersection, Negation, Projection, Query, Union
from metalab.kg.query_syntax import (
    Atom,
    Disjunction,
    Literal,
    Negated,
    QuerySyntaxError,
    atoms_of,
    check_acyclic,
    check_variables,
    default_answer,
    flat_literals,
    quoted_name,
    variables_of,
)

__all__ = ["ParsedQuery", "QuerySyntaxError", "parse_query"]

_TOKEN = re.compile(
    r"\s*(?:(?P<var>\?[\w\-./^~+@]+)|(?P<name>[\w\-./^~+@]+)|\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'"
    r"|(?P<op>[()!&|,:]))"
)


@dataclass(frozen=True)
class ParsedQuery:
    """A parsed query: the tree, the answer variable and the variable of each projection.

    Attributes:
        query: the :mod:`metalab.kg.queries` tree (its root denotes the answers).
        answer: the answer variable's name (``?x``).
        variables: tree path (child indices from the root) of each projection → its
            variable name; the root projection's path is ``()``.
    """

    query: Query
    answer: str
    variables: dict[tuple[int, ...], str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Token:
    kind: str  # var | name | op | end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            start = len(text) - len(text[pos:].lstrip())
            raise QuerySyntaxError(f"unexpected character {text[start]!r}", text, start)
        kind = next(k for k in ("var", "name", "dq", "sq", "op") if match.group(k) is not None)
        start = match.start(kind) - (1 if kind in ("dq", "sq") else 0)
        value = match.group(kind)
        tokens.append(_Token("name" if kind in ("dq", "sq") else kind, value, start))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str, entities: Vocabulary, relations: Vocabulary) -> None:
        self.text, self.entities, self.relations = text, entities, relations
        self.tokens, self.i = _tokenize(text), 0

    def error(self, message: str, token: _Token | None = None) -> QuerySyntaxError:
        token = token or self.tokens[self.i]
        return QuerySyntaxError(message, self.text, token.pos)

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self, kind: str, text: str | None = None, what: str = "") -> _Token:
        token = self.peek()
        if token.kind != kind or (text is not None and token.text != text):
            found = "end of query" if token.kind == "end" else repr(token.text)
            raise self.error(f"expected {what or repr(text)}, found {found}")
        self.i += 1
        return token

    def at(self, *texts: str) -> bool:
        token = self.peek()
        return token.kind in ("op", "name") and token.text in texts

    def head(self) -> str | None:
        if self.peek().kind == "var" and self.tokens[self.i + 1].text == ":":
            name = self.take("var").text
            self.take("op", ":")
            return name
        return None

    def formula(self) -> Disjunction:
        pos = self.peek().pos
        disjuncts = [self.conj()]
        while self.at("|", "or"):
            self.i += 1
            disjuncts.append(self.conj())
        return Disjunction(tuple(disjuncts), pos)

    def conj(self) -> tuple[Literal, ...]:
        literals = [self.literal()]
        while self.at("&", "and", ","):
            self.i += 1
            literals.append(self.literal())
        return tuple(literals)

    def literal(self) -> Literal:
        token = self.peek()
        if self.at("!", "not") and not self._is_atom_start():
            self.i += 1
            return Negated(Disjunction(((self.literal(),),), token.pos), token.pos)
        if token.kind == "op" and token.text == "(":
            self.i += 1
            inner = self.formula()
            self.take("op", ")")
            return inner
        return self.atom()

    def _is_atom_start(self) -> bool:
        nxt = self.tokens[self.i + 1]
        token = self.peek()
        return token.kind == "name" and token.text in self.relations and nxt.text == "("

    def atom(self) -> Atom:
        token = self.take("name", what="a relation name, '!' or '('")
        relation = self.lookup(token, self.relations)
        self.take("op", "(")
        subject = self.term()
        self.take("op", ",")
        obj = self.term()
        self.take("op", ")")
        return Atom(relation, subject, obj, token.pos)

    def term(self) -> str | int:
        token = self.peek()
        if token.kind == "var":
            self.i += 1
            return token.text
        return self.lookup(
            self.take("name", what="a variable (?x) or an entity name"), self.entities
        )

    def lookup(self, token: _Token, vocabulary: Vocabulary) -> int:
        if token.text in vocabulary:
            return vocabulary.id(token.text)
        close = _suggestions(token.text, vocabulary.names)
        shown = [quoted_name(name) or name for name in close]
        quoted = any(s != n for s, n in zip(shown, close, strict=True))
        quote = " (quote names with spaces)" if quoted else ""
        hint = f"; did you mean {', '.join(shown)}{quote}?" if close else ""
        raise self.error(f"unknown {vocabulary.kind} {token.text!r}{hint}", token)


def _suggestions(text: str, names: Sequence[str]) -> list[str]:
    """Up to 3 names close to ``text``: same name in other case first, then close spellings."""
    folded: dict[str, list[str]] = {}
    for name in names:
        folded.setdefault(name.lower(), []).append(name)
    same = folded.get(text.lower(), [])
    near = [n for key in closest_names(text.lower(), folded) for n in folded[key]]
    return list(dict.fromkeys(same + closest_names(text, names) + near))[:3]


def parse_query(text: str, entities: Vocabulary, relations: Vocabulary) -> ParsedQuery:
    """Parse ``text`` (grammar in the module docstring) into a query tree.

    Args:
        text: the query.
        entities: entity names.
        relations: *query* relation names (``r`` and ``r^-1`` alternating, ids ``2k``/``2k+1``,
            e.g. :attr:`metalab.kg.LinkPredictor.query_relations`).

    Raises:
        QuerySyntaxError: malformed text, unknown names (with the closest known ones), a
            query without a variable, or one that is not a tree around its answer variable
            (a cycle is named by its variables); the message gives the column.
    """
    parser = _Parser(text, entities, relations)
    answer = parser.head()
    formula = parser.formula()
    parser.take("end", what="end of query ('&', '|' or ')' may be missing)")
    literals = flat_literals(formula)
    check_variables(formula, text, entities, relations)
    if answer is not None and not any(answer in variables_of(lit) for lit in literals):
        raise QuerySyntaxError(f"answer variable {answer} occurs in no atom", text, 0)
    check_acyclic(formula, text)
    if answer is None:
        answer = default_answer(literals, text)
    builder = _Builder(text)
    query = builder.formula(formula, answer, ())
    if builder.used != len(atoms_of(formula)):
        raise QuerySyntaxError("some atoms are not connected to the answer variable", text, 0)
    return ParsedQuery(query, answer, builder.variables)


class _Builder:
    """Orient every atom towards the answer variable and build the query tree."""

    def __init__(self, text: str) -> None:
        self.text, self.used = text, 0
        self.variables: dict[tuple[int, ...], str] = {}

    def fail(self, message: str, pos: int) -> QuerySyntaxError:
        return QuerySyntaxError(message, self.text, pos)

    def formula(self, formula: Disjunction, var: str, path: tuple[int, ...]) -> Query:
        if len(formula.disjuncts) == 1:
            return self.conj(formula.disjuncts[0], var, path)
        return Union(tuple(self.conj(c, var, (*path, i)) for i, c in enumerate(formula.disjuncts)))

    def conj(self, literals: tuple[Literal, ...], var: str, path: tuple[int, ...]) -> Query:
        groups = _components(list(literals), var)
        for group in groups:
            if not any(var in variables_of(lit) for lit in group):
                raise self.fail(f"this part is not connected to {var}", group[0].pos)
        if len(groups) == 1:
            return self.component(groups[0], var, path)
        return Intersection(tuple(self.component(g, var, (*path, i)) for i, g in enumerate(groups)))

    def component(self, group: list[Literal], var: str, path: tuple[int, ...]) -> Query:
        touching = [lit for lit in group if var in variables_of(lit)]
        if len(touching) > 1:
            raise self.fail(f"the query is not a tree: a cycle passes through {var}", group[0].pos)
        lit, rest = touching[0], [g for g in group if g is not touching[0]]
        if isinstance(lit, (Negated, Disjunction)):
            if rest:
                raise self.fail(
                    f"a negation or disjunction may share only {var} with the rest", lit.pos
                )
            if isinstance(lit, Negated):
                return Negation(self.formula(lit.body, var, (*path, 0)))
            return self.formula(lit, var, path)
        self.used += 1
        if lit.object == var and lit.subject == var:
            raise self.fail(f"atom relates {var} to itself", lit.pos)
        if lit.object == var:
            relation, other = lit.relation, lit.subject
        else:
            relation, other = inverse_relation(lit.relation), lit.object
        self.variables[path] = var
        if isinstance(other, int):
            if rest:
                raise self.fail("internal: anchored atom with dependants", lit.pos)
            return Projection(relation, Anchor(other))
        if not rest:
            raise self.fail(f"variable {other} is not anchored to any entity", lit.pos)
        return Projection(relation, self.conj(tuple(rest), other, (*path, 0)))


def _components(literals: list[Literal], var: str) -> list[list[Literal]]:
    """Groups of literals connected through variables other than ``var``."""
    groups: list[tuple[set[str], list[Literal]]] = []
    for lit in literals:
        names = variables_of(lit) - {var}
        merged = [g for g in groups if g[0] & names]
        for g in merged:
            groups.remove(g)
        new = (names.union(*(g[0] for g in merged)), [x for g in merged for x in g[1]] + [lit])
        groups.append(new)
    order = {id(lit): i for i, lit in enumerate(literals)}
    out = [sorted(g[1], key=lambda x: order[id(x)]) for g in groups]
    return sorted(out, key=lambda g: order[id(g[0])])
