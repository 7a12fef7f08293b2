"""Printing a query tree back as query text.

``parse(to_text(node)) == node`` for every well-formed tree (offsets aside, which equality
ignores): ``And`` and ``Or`` with at least two operands, none nested directly in its own
kind, bare words and wildcard patterns non-empty. Parenthesization, spacing and escapes
are normalized, so the text may differ from what was parsed.
"""

from __future__ import annotations

from typing import Final, TypeVar

from assay.query.ast import (
    And,
    Comparison,
    Exists,
    Expr,
    Named,
    Not,
    Or,
    Range,
    Term,
    Value,
    Wildcard,
)

N = TypeVar("N", bound=Named)

_SPECIAL: Final = frozenset('()"\\:[]<>=')
_KEYWORDS: Final = frozenset({"AND", "OR", "NOT", "TO"})


def to_text(node: Expr[N] | None) -> str:
    """The query text of a tree (parsed or resolved); ``""`` for ``None``.

    Example::

        >>> to_text(parse('@a:( x OR "y z" )  -b'))
        '@a:(x OR "y z") -b'
    """
    return "" if node is None else _expr(node, 0)


# Binding strength: an operand binding less tightly than its place needs parentheses.
_OR, _AND, _NOT = 1, 2, 3


def _expr(node: Expr[N], context: int) -> str:
    if isinstance(node, Or):
        values = _value_list(node)
        if values is not None:
            return values
        text = " OR ".join(_expr(operand, _OR) for operand in node.operands)
        return f"({text})" if context > _OR else text
    if isinstance(node, And):
        text = " ".join(_expr(operand, _AND) for operand in node.operands)
        return f"({text})" if context > _AND else text
    if isinstance(node, Not):
        return "-" + _expr(node.operand, _NOT)
    if isinstance(node, Term):
        return _phrase(node.text) if node.phrase else _word(node.text)
    return f"{_name(node.attribute.name)}:{_value_form(node)}"


def _value_list(node: Or[N]) -> str | None:
    """``@a:(x OR y)`` when every operand tests the same attribute, else ``None``."""
    names: set[str] = set()
    forms: list[str] = []
    for operand in node.operands:
        if not isinstance(operand, Comparison | Range | Wildcard | Exists):
            return None
        names.add(operand.attribute.name)
        forms.append(_value_form(operand))
    if len(names) != 1:
        return None
    return f"{_name(names.pop())}:({' OR '.join(forms)})"


def _value_form(node: Comparison[N] | Range[N] | Wildcard[N] | Exists[N]) -> str:
    if isinstance(node, Comparison):
        operator = "" if node.operator == "=" else node.operator
        return operator + _value(node.value)
    if isinstance(node, Range):
        return f"[{_bound(node.low)} TO {_bound(node.high)}]"
    if isinstance(node, Wildcard):
        return _escape(node.pattern, glob=True)
    return "*"


def _bound(value: Value | None) -> str:
    return "*" if value is None else _value(value)


def _value(value: Value) -> str:
    if value.quoted or not value.text:
        return _phrase(value.text)
    return _escape(value.text, glob=False)


def _word(pattern: str) -> str:
    text = _escape(pattern, glob=True)
    # A bare "@name" is refused by the parser (it looks like a forgotten value).
    return "\\" + text if text.startswith("@") else text


def _name(name: str) -> str:
    return _escape(name, glob=False)


def _phrase(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _escape(text: str, *, glob: bool) -> str:
    """``text`` as a bare word: specials escaped; a glob's own escapes and wildcards kept."""
    out: list[str] = []
    characters = iter(text)
    for character in characters:
        if glob and character == "\\":
            out.append(character + next(characters, "\\"))
        elif glob and character in "*?":
            out.append(character)
        elif character in _SPECIAL or character in "*?" or character.isspace():
            out.append("\\" + character)
        else:
            out.append(character)
    escaped = "".join(out)
    if escaped.startswith("-") or escaped in _KEYWORDS:
        return "\\" + escaped
    return escaped
