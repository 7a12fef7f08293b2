"""Parsing search queries: Datadog's search syntax, as the experiment records view uses it.

The syntax, by example:

- free text: ``paris`` (a word; ``par*s`` and ``pari?`` are wildcards), ``"new york"``
  (a phrase; ``*`` and ``?`` are literal inside quotes);
- attributes: ``@status:error``, ``@meta.input.city:"New York"``, tags without ``@``:
  ``run_iteration:1``, ``difficulty:hard``;
- comparisons and ranges: ``@trace.total_tokens:>1000`` (also ``>=``, ``<``, ``<=``),
  ``@duration:[100ms TO 1.5s]`` (inclusive; ``*`` leaves a side open);
- wildcards and existence: ``@meta.error.type:*Timeout*``, ``@meta.output.answer:*``;
- boolean logic: implicit ``AND`` between terms, ``OR``, ``-term`` and ``NOT term``,
  parentheses, and value lists ``@evaluations.custom.sentiment:(positive OR neutral)``;
  ``AND``, ``OR``, ``NOT`` and ``TO`` are keywords only in capitals;
- escapes: a backslash makes the next character literal (``a\\:b``, ``new\\ york``,
  ``\\*``); ``(``, ``)``, ``"``, ``\\``, ``:``, ``[``, ``]``, ``<``, ``>``, ``=`` and
  whitespace must be escaped (or quoted) to be part of a word or value.

``parse`` raises :class:`assay.errors.QueryError` and nothing else, whatever the text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from typing import Final

import lark
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from assay.errors import QueryError
from assay.query.ast import (
    And,
    Attribute,
    Comparison,
    Exists,
    Node,
    Not,
    Operator,
    Or,
    Range,
    Term,
    Value,
    Wildcard,
    glob_has_wildcard,
    glob_literal,
)

MAX_DEPTH: Final = 50
"""How deeply parentheses and negations may nest."""

_GRAMMAR: Final = r"""
start: or_expr

or_expr: and_expr (OR and_expr)*
and_expr: unary (AND? unary)*
unary: (NOT | MINUS)* atom
atom: LPAR or_expr RPAR
    | ATTRIBUTE COLON OP? VALUE -> attribute_bare
    | ATTRIBUTE COLON OP? PHRASE -> attribute_quoted
    | ATTRIBUTE COLON LBRACKET low TO high RBRACKET -> attribute_range
    | ATTRIBUTE COLON LPAR v_or RPAR -> attribute_group
    | WORD -> word
    | PHRASE -> phrase

// Value lists: what may follow "attr:(". No "-" for exclusion here: a value may start
// with one (negative numbers). The value forms are spelled out twice, after "attr:" and
// in lists, so that LALR keeps their states apart: the lexer then knows which terminals
// can come next ("-y" after "@a:x" is an exclusion, inside "@a:(x -y)" a value).
v_or: v_and (OR v_and)*
v_and: v_unary (AND? v_unary)*
v_unary: NOT* v_atom
v_atom: LPAR v_or RPAR -> v_group
      | OP? VALUE -> v_bare
      | OP? PHRASE -> v_quoted
      | LBRACKET low TO high RBRACKET -> v_range
low: VALUE | PHRASE
high: VALUE | PHRASE

_CHAR: /[^\s()"\\:\[\]<>=]/ | /\\[\s\S]/
_FIRST: /[^\s()"\\:\[\]<>=\-]/ | /\\[\s\S]/

ATTRIBUTE.2: _FIRST _CHAR* /(?=:)/
WORD: _FIRST _CHAR*
VALUE: _CHAR+
PHRASE: /"(?:[^"\\]|\\[\s\S])*"/
OP: /[<>]=?/
COLON: ":"
LPAR: "("
RPAR: ")"
LBRACKET: "["
RBRACKET: "]"
MINUS: "-"
AND: "AND"
OR: "OR"
NOT: "NOT"
TO: "TO"

%ignore /\s+/
"""

_PARSER: Final = lark.Lark(_GRAMMAR, parser="lalr", lexer="contextual", propagate_positions=True)

_ESCAPE = re.compile(r"\\([\s\S])")


def parse(text: str) -> Node | None:
    """The syntax tree of a query; ``None`` for an empty (or all-whitespace) query.

    Raises :class:`QueryError` with the position of the first problem::

        >>> parse("@a:(x OR y))")
        Traceback (most recent call last):
        assay.errors.QueryError: Unexpected ')' at position 11; there is no '(' for it to close
          @a:(x OR y))
                     ^
    """
    if not isinstance(text, str):
        raise QueryError(f"A query is text, not {type(text).__name__}", query=repr(text))
    if not text.strip():
        return None
    return _parsed(text)


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> Node:
    """Kept per text: the tree is frozen, and a page of results (the UI, a paging client)
    asks the same query again and again, where parsing costs as much as an indexed count."""
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as error:
        raise _syntax_error(text, error) from None
    except LarkError as error:  # pragma: no cover - lark raises UnexpectedInput for bad text
        raise QueryError(f"Cannot parse the query ({error})", query=text) from None
    body = tree.children[0]
    assert isinstance(body, lark.Tree)
    return _Builder(text).or_expr(body, 0)


class _Builder:
    """Turns lark's parse tree into the AST, checking what the grammar cannot."""

    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, message: str, position: int) -> QueryError:
        return QueryError(message, query=self.text, position=position)

    def or_expr(self, tree: lark.Tree[lark.Token], depth: int) -> Node:
        return _join(Or, [self.and_expr(child, depth) for child in _subtrees(tree)])

    def and_expr(self, tree: lark.Tree[lark.Token], depth: int) -> Node:
        return _join(And, [self.unary(child, depth) for child in _subtrees(tree)])

    def unary(self, tree: lark.Tree[lark.Token], depth: int) -> Node:
        *negations, atom = tree.children
        assert isinstance(atom, lark.Tree)
        self.check_depth(depth + len(negations), _meta_start(tree))
        node = self.atom(atom, depth + len(negations))
        for token in reversed(negations):
            assert isinstance(token, lark.Token)
            node = Not(node, start=_start(token), end=node.end)
        return node

    def atom(self, tree: lark.Tree[lark.Token], depth: int) -> Node:
        children = tree.children
        if tree.data == "atom":
            opening, inner, closing = children
            assert isinstance(inner, lark.Tree)
            assert isinstance(opening, lark.Token) and isinstance(closing, lark.Token)
            self.check_depth(depth + 1, _start(opening))
            return _widen(self.or_expr(inner, depth + 1), opening, closing)
        token = children[0]
        assert isinstance(token, lark.Token)
        if tree.data == "phrase":
            return Term(_unquote(token), phrase=True, start=_start(token), end=_end(token))
        if tree.data == "word":
            if token in ("AND", "OR"):
                raise self.error(
                    f"Unexpected '{token}' at position {_start(token)}; {token} goes "
                    f"between two terms (write \\{token} to search for the word)",
                    _start(token),
                )
            if token.startswith("@"):
                raise self.error(
                    f"'{token}' is an attribute without a value; write {token}:value "
                    f"({token}:* for any value), or \\{token} to search for the text",
                    _start(token),
                )
            return Term(_glob(token), start=_start(token), end=_end(token))
        assert tree.data.startswith("attribute_"), tree.data
        name = _ESCAPE.sub(r"\1", token)
        if glob_has_wildcard(_glob(token)):
            raise self.error(
                f"Wildcards are not allowed in attribute names ('{token}'); "
                "escape a literal '*' or '?' with a backslash",
                _start(token),
            )
        attribute = Attribute(name, start=_start(token), end=_end(token))
        form = tree.data.removeprefix("attribute_")
        node = self.value(attribute, form, children[2:], depth)
        return replace(node, start=attribute.start)

    def v_or(self, attribute: Attribute, tree: lark.Tree[lark.Token], depth: int) -> Node:
        parts = [self.v_and(attribute, child, depth) for child in _subtrees(tree)]
        return _join(Or, parts)

    def v_and(self, attribute: Attribute, tree: lark.Tree[lark.Token], depth: int) -> Node:
        parts = [self.v_unary(attribute, child, depth) for child in _subtrees(tree)]
        return _join(And, parts)

    def v_unary(self, attribute: Attribute, tree: lark.Tree[lark.Token], depth: int) -> Node:
        *negations, atom = tree.children
        assert isinstance(atom, lark.Tree)
        self.check_depth(depth + len(negations), _meta_start(tree))
        node = self.v_atom(attribute, atom, depth + len(negations))
        for token in reversed(negations):
            assert isinstance(token, lark.Token)
            node = Not(node, start=_start(token), end=node.end)
        return node

    def v_atom(self, attribute: Attribute, tree: lark.Tree[lark.Token], depth: int) -> Node:
        return self.value(attribute, tree.data.removeprefix("v_"), tree.children, depth)

    def value(
        self,
        attribute: Attribute,
        form: str,
        children: list[lark.Tree[lark.Token] | lark.Token],
        depth: int,
    ) -> Node:
        """What follows ``attr:`` (or stands in a value list), in one of the four forms."""
        first, last = children[0], children[-1]
        assert isinstance(first, lark.Token) and isinstance(last, lark.Token)
        start, end = _start(first), _end(last)
        if form == "group":
            inner = children[1]
            assert isinstance(inner, lark.Tree)
            self.check_depth(depth + 1, start)
            return _widen(self.v_or(attribute, inner, depth + 1), first, last)
        if form == "range":
            low, high = children[1], children[3]
            assert isinstance(low, lark.Tree) and isinstance(high, lark.Tree)
            return Range(attribute, self.bound(low), self.bound(high), start=start, end=end)
        operator: Operator = _operator(first) if len(children) == 2 else "="
        if form == "quoted":
            value = Value(_unquote(last), quoted=True, start=_start(last), end=end)
            return Comparison(attribute, operator, value, start=start, end=end)
        assert form == "bare", form
        if last in ("AND", "OR", "NOT"):
            raise self.error(
                f"Unexpected '{last}' at position {_start(last)}; to match the value "
                f'{last}, write \\{last} or "{last}"',
                _start(last),
            )
        pattern = _glob(last)
        if glob_has_wildcard(pattern):
            if operator != "=":
                raise self.error(
                    f"'{operator}' compares with a number or a text, not a pattern "
                    f"('{last}'); escape a literal '*' or '?' with a backslash",
                    _start(last),
                )
            if pattern == "*":
                return Exists(attribute, start=start, end=end)
            return Wildcard(attribute, pattern, start=start, end=end)
        value = Value(glob_literal(pattern), start=_start(last), end=end)
        return Comparison(attribute, operator, value, start=start, end=end)

    def bound(self, tree: lark.Tree[lark.Token]) -> Value | None:
        token = tree.children[0]
        assert isinstance(token, lark.Token)
        start, end = _start(token), _end(token)
        if token.type == "PHRASE":
            return Value(_unquote(token), quoted=True, start=start, end=end)
        pattern = _glob(token)
        if pattern == "*":
            return None
        if glob_has_wildcard(pattern):
            raise self.error(f"A range bound is a value or '*', not a pattern ('{token}')", start)
        return Value(glob_literal(pattern), start=start, end=end)

    def check_depth(self, depth: int, position: int) -> None:
        if depth > MAX_DEPTH:
            raise self.error(
                f"The query nests parentheses and negations more than {MAX_DEPTH} deep",
                position,
            )


def _subtrees(tree: lark.Tree[lark.Token]) -> list[lark.Tree[lark.Token]]:
    return [child for child in tree.children if isinstance(child, lark.Tree)]


def _join(kind: type[And[Attribute]] | type[Or[Attribute]], parts: list[Node]) -> Node:
    """One node for ``parts``: itself if alone, else ``kind`` with nested ``kind`` flattened."""
    if len(parts) == 1:
        return parts[0]
    operands: list[Node] = []
    for part in parts:
        if isinstance(part, kind):
            operands.extend(part.operands)
        else:
            operands.append(part)
    return kind(tuple(operands), start=parts[0].start, end=parts[-1].end)


def _widen(node: Node, opening: lark.Token, closing: lark.Token) -> Node:
    """A group's node spans its parentheses; a lone term keeps its own span."""
    if isinstance(node, And | Or):
        return replace(node, start=_start(opening), end=_end(closing))
    return node


def _operator(token: lark.Token) -> Operator:
    text = str(token)
    if text == ">":
        return ">"
    if text == ">=":
        return ">="
    if text == "<":
        return "<"
    assert text == "<=", text
    return "<="


def _glob(token: lark.Token) -> str:
    """A bare word as a glob: escapes of ``*``, ``?`` and ``\\`` kept, others removed."""
    return _ESCAPE.sub(
        lambda match: match.group(0) if match.group(1) in "*?\\" else match.group(1), token
    )


def _unquote(token: lark.Token) -> str:
    return _ESCAPE.sub(r"\1", token[1:-1])


def _start(token: lark.Token) -> int:
    return token.start_pos or 0


def _end(token: lark.Token) -> int:
    return token.end_pos or 0


def _meta_start(tree: lark.Tree[lark.Token]) -> int:
    return 0 if tree.meta.empty else tree.meta.start_pos


# --- Syntax errors -------------------------------------------------------------------

_EXPECTED: Final = {
    "VALUE": "a value",
    "TO": "TO, as in [1 TO 5]",
    "RBRACKET": "']'",
    "RPAR": "')'",
}


def _syntax_error(text: str, error: UnexpectedInput) -> QueryError:
    if isinstance(error, UnexpectedToken):
        return _unexpected_token(text, error)
    if isinstance(error, UnexpectedCharacters):
        return _unexpected_character(text, error)
    position = error.pos_in_stream if isinstance(error.pos_in_stream, int) else None
    return QueryError("Cannot parse the query", query=text, position=position)


def _unexpected_token(text: str, error: UnexpectedToken) -> QueryError:
    token = error.token
    expected = set(error.expected)
    if token.type == "$END":
        position = len(text.rstrip())
        message = f"Unexpected end of query at position {position}"
        if "RPAR" in expected and (opening := _unclosed_parenthesis(text)) is not None:
            hint = f"expected ')' to close the '(' at position {opening}"
        else:
            hint = _expectation(expected) or "expected a search term"
        return QueryError(f"{message}; {hint}", query=text, position=position)
    position = _start(token)
    shown = str(token) if len(token) <= 30 else f"{token[:27]}..."
    message = f"Unexpected {shown!r} at position {position}"
    if token.type == "COLON":
        message += "; escape it as '\\:' or put the value in double quotes"
    elif token.type in ("AND", "OR"):
        message += f"; {token} goes between two terms"
    elif token.type == "OP" and "OP" not in expected:
        message += "; comparisons follow the colon, as in @trace.total_tokens:>1000"
    elif token.type == "RPAR" and "RPAR" not in expected and "VALUE" not in expected:
        message += "; there is no '(' for it to close"
    elif token.type == "LBRACKET" and "LBRACKET" not in expected:
        message += "; a range follows an attribute, as in @duration:[100ms TO 2s]"
    elif expectation := _expectation(expected):
        message += f"; {expectation}"
    return QueryError(message, query=text, position=position)


def _unexpected_character(text: str, error: UnexpectedCharacters) -> QueryError:
    position = error.pos_in_stream if isinstance(error.pos_in_stream, int) else len(text)
    character = text[position] if position < len(text) else ""
    if character == '"':
        message = (
            f"Unterminated quoted phrase starting at position {position}; "
            "close it with '\"' (or escape the quote as '\\\"')"
        )
    elif character == "\\":
        message = f"Trailing backslash at position {position}; write '\\\\' for a literal backslash"
    else:
        message = f"Unexpected {character!r} at position {position}"
        if character in "=<>":
            message += f"; escape it as '\\{character}' or put the value in double quotes"
        elif hint := _expectation(set(error.allowed or ())):
            message += f"; {hint}"
    return QueryError(message, query=text, position=position)


def _expectation(expected: set[str]) -> str | None:
    for terminal, description in _EXPECTED.items():
        if terminal in expected:
            return f"expected {description}"
    return None


def _unclosed_parenthesis(text: str) -> int | None:
    """The position of the last '(' left open, skipping escapes and quoted phrases."""
    open_at: list[int] = []
    position, quoted = 0, False
    while position < len(text):
        character = text[position]
        if character == "\\":
            position += 1
        elif character == '"':
            quoted = not quoted
        elif not quoted and character == "(":
            open_at.append(position)
        elif not quoted and character == ")" and open_at:
            open_at.pop()
        position += 1
    return open_at[-1] if open_at else None
