"""The syntax tree of a search query.

Every node is a frozen, slotted dataclass carrying ``start`` and ``end``: the character
offsets (from 0, end exclusive) of the text it was parsed from. Offsets are left out of
equality, so a query and the same query printed back by :func:`assay.query.to_text`
compare equal.

Nodes that name an attribute are generic in what the attribute is: the parser gives an
:class:`Attribute` (the name as written), :func:`assay.query.resolve` replaces it with a
typed facet. :data:`Node` is the parsed tree, ``Expr[Facet]`` the resolved one.

Patterns (:attr:`Term.text` of a bare word, :attr:`Wildcard.pattern`) are globs: an
unescaped ``*`` is any run of characters, ``?`` exactly one, and a backslash makes the
next ``*``, ``?`` or ``\\`` literal. Any other text in a tree is literal.

Example::

    parse('@status:error -"timed out"')
    # And((Comparison(Attribute('@status'), '=', Value('error')),
    #      Not(Term('timed out', phrase=True))))
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from enum import Enum
from typing import Generic, Literal, Protocol, TypeAlias, TypeVar

Operator = Literal["=", ">", ">=", "<", "<="]
"""How a :class:`Comparison` compares: ``=`` is the plain ``@attr:value``."""

OPERATORS: tuple[Operator, ...] = ("=", ">", ">=", "<", "<=")

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_DURATION = re.compile(rf"({_NUMBER.pattern})(ns|us|ms|s|m|h)", re.ASCII)
_NANOSECONDS_PER_UNIT = {
    "ns": 1,
    "us": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_LARGEST_DURATION = 2**63  # nanoseconds in a signed 64-bit column: about 292 years

A = TypeVar("A")


class Named(Protocol):
    """Anything with a ``name``: an :class:`Attribute` or a facet."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Attribute:
    """An attribute as written, unescaped: ``@trace.total_tokens``, ``run_iteration``."""

    name: str
    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Value:
    """A literal value after ``attr:`` (or a range bound), with its parsed forms.

    ``text`` is the value unescaped (without quotes); the other forms are derived from it
    and are ``None`` when the text is not of that form.
    """

    text: str
    quoted: bool = field(default=False, compare=False, kw_only=True)
    """Whether it was written in double quotes (only how it is printed depends on it)."""
    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)
    number: float | None = field(init=False)
    """The text as a finite number (``12``, ``-0.5``, ``1e3``), else ``None``."""
    duration: int | None = field(init=False)
    """Nanoseconds, for a number with a unit ``ns us ms s m h`` (``1.5s``), else ``None``."""
    boolean: bool | None = field(init=False)
    """``True``/``False`` for the text ``true``/``false`` (any case), else ``None``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "number", parse_number(self.text))
        object.__setattr__(self, "duration", parse_duration(self.text))
        lowered = self.text.lower()
        boolean = True if lowered == "true" else False if lowered == "false" else None
        object.__setattr__(self, "boolean", boolean)


@dataclass(frozen=True, slots=True)
class Term:
    """Free text: a bare word (a glob pattern) or a ``"quoted phrase"`` (literal)."""

    text: str
    phrase: bool = False
    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Comparison(Generic[A]):
    """``@attr:value`` (operator ``=``) or ``@attr:>value`` and the other orderings."""

    attribute: A
    operator: Operator
    value: Value
    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Range(Generic[A]):
    """``@attr:[low TO high]``, bounds included; a ``None`` bound (``*``) is open."""

    attribute: A
    low: Value | None
    high: Value | None
    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Wildcard(Generic[A]):
    """``@attr:pa*rn``: the whole value matches a glob with at least one wildcard."""

    attribute: A
    pattern: str
    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Exists(Generic[A]):
    """``@attr:*``: the attribute has a value."""

    attribute: A
    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Not(Generic[A]):
    """``-x`` or ``NOT x``."""

    operand: Expr[A]
    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class And(Generic[A]):
    """All operands match (``a b``, ``a AND b``). At least two, none of them an ``And``."""

    operands: tuple[Expr[A], ...]
    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Or(Generic[A]):
    """Any operand matches (``a OR b``). At least two, none of them an ``Or``."""

    operands: tuple[Expr[A], ...]
    start: int = field(default=0, compare=False, kw_only=True)
    end: int = field(default=0, compare=False, kw_only=True)


Expr: TypeAlias = (
    Term | Comparison[A] | Range[A] | Wildcard[A] | Exists[A] | Not[A] | And[A] | Or[A]
)
"""Any node, with attributes of type ``A``."""

Leaf: TypeAlias = Comparison[A] | Range[A] | Wildcard[A] | Exists[A]
"""A node that tests one attribute."""

Node: TypeAlias = Expr[Attribute]
"""A parsed query (what :func:`assay.query.parse` returns, unless the query is empty)."""


def walk(node: Expr[A]) -> Iterator[Expr[A]]:
    """Every node of the tree, parents before children, left to right."""
    stack: list[Expr[A]] = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, Not):
            stack.append(current.operand)
        elif isinstance(current, And | Or):
            stack.extend(reversed(current.operands))


def parse_number(text: str) -> float | None:
    """``text`` as a finite number, or ``None``: ``"12"``, ``"-0.5"``, ``"1e3"``."""
    if _NUMBER.fullmatch(text) is None:
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def parse_duration(text: str) -> int | None:
    """``text`` as whole nanoseconds when it is a number with a unit, else ``None``.

    Units: ``ns us ms s m h`` (``m`` is minutes). ``"1.5s"`` is 1,500,000,000.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    magnitude = abs(float(match.group(1)))
    if not magnitude < _LARGEST_DURATION:  # also catches inf, before any scaling
        return None
    # Decimal, so that 0.1s is exactly 100000000 and not one off.
    with localcontext(Context(prec=60)):
        nanoseconds = round(Decimal(match.group(1)) * _NANOSECONDS_PER_UNIT[match.group(2)])
    return nanoseconds if abs(nanoseconds) < _LARGEST_DURATION else None


class GlobToken(Enum):
    """A wildcard in a glob pattern."""

    ANY = "*"
    """Any run of characters, the empty one included."""
    ONE = "?"
    """Exactly one character."""


def glob_segments(pattern: str) -> tuple[str | GlobToken, ...]:
    """A glob as literal text runs and wildcards: ``'a*b\\?'`` → ``('a', ANY, 'b?')``."""
    segments: list[str | GlobToken] = []
    literal: list[str] = []
    characters = iter(pattern)
    for character in characters:
        if character == "\\":
            literal.append(next(characters, "\\"))
        elif character in "*?":
            if literal:
                segments.append("".join(literal))
                literal = []
            segments.append(GlobToken(character))
        else:
            literal.append(character)
    if literal:
        segments.append("".join(literal))
    return tuple(segments)


def glob_has_wildcard(pattern: str) -> bool:
    """Whether a glob has an unescaped ``*`` or ``?``."""
    return any(isinstance(segment, GlobToken) for segment in glob_segments(pattern))


def glob_escape(text: str) -> str:
    """The glob that matches exactly ``text``."""
    return re.sub(r"([*?\\])", r"\\\1", text)


def glob_literal(pattern: str) -> str:
    """The text of a glob with its escapes removed (wildcards kept as characters)."""
    return "".join(
        segment.value if isinstance(segment, GlobToken) else segment
        for segment in glob_segments(pattern)
    )


def glob_regex(pattern: str) -> str:
    """A Python regular expression equivalent to the glob (use ``re.DOTALL``)."""
    parts: list[str] = []
    for segment in glob_segments(pattern):
        if segment is GlobToken.ANY:
            parts.append(".*")
        elif segment is GlobToken.ONE:
            parts.append(".")
        else:
            parts.append(re.escape(segment))
    return "".join(parts)
