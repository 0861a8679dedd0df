"""What a query is, independent of how it was written: a condition tree plus select, sort, limit.

The URL syntax (:mod:`kiln.query.parser`) is one front end; Python code
(``Table.search``), subscriptions and the operations API build the same objects.
A :class:`Query` straight from a parser is *unbound*: attribute paths are as
written and values are text (with an optional forced type). Binding it to a
table (:func:`kiln.query.binder.bind`) checks every attribute against the schema
and converts every value to the attribute's declared type; the planner and the
executor only ever see bound queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Comparator = Literal["eq", "ne", "gt", "ge", "lt", "le", "sw", "ew", "ct"]
"""``eq`` ``==``/``=``; ``ne`` ``!=``/``=ne=``; ``gt ge lt le`` ranges; ``sw`` starts with
(``=sw=`` or ``==value*``); ``ew`` ends with; ``ct`` contains."""

ValueType = Literal["number", "string", "boolean", "date", "null"]
"""A type forced in the URL with a prefix (``number:5``) or the literal ``null``."""


# Not frozen, though never changed: made for every query, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Condition:
    """``path comparator value``: one test on an attribute (a dot path through relationships).

    ``value`` is the text as written (percent-decoded once) while unbound, and the
    attribute's typed value once bound; ``forced`` is the type a prefix forced, if
    any. ``position`` is the 1-based character position in the query string, for
    error messages.
    """

    path: tuple[str, ...]
    comparator: Comparator
    value: Any
    forced: ValueType | None = None
    position: int = 0

    def with_value(self, value: Any) -> Condition:
        """This condition comparing with ``value`` instead (a typed copy of the text)."""
        return Condition(self.path, self.comparator, value, self.forced, self.position)


@dataclass(frozen=True, slots=True)
class And:
    """Every item matches."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """At least one item matches."""

    items: tuple[Node, ...]


Node = Condition | And | Or
"""A node of the condition tree."""


@dataclass(frozen=True, slots=True)
class Field:
    """One selected attribute; ``nested`` selects inside a relationship (``owner{name,city}``)."""

    name: str
    nested: Selection | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """What each result looks like.

    ``object``: objects with ``fields`` (``select(a,b)``, and ``select(a,)`` for one);
    ``value``: the bare value of the single field (``select(a)``);
    ``array``: arrays of the fields' values (``select([a,b])``).
    """

    fields: tuple[Field, ...]
    shape: Literal["object", "value", "array"] = "object"


@dataclass(frozen=True, slots=True)
class SortKey:
    """One sort criterion: an attribute path, ascending unless ``descending``."""

    path: tuple[str, ...]
    descending: bool = False
    position: int = 0


# Not frozen, though never changed: made for every query, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Query:
    """What a collection request asks for.

    ``where`` is None for every record; the results are the slice ``[start, end)``
    of the matching records in ``sort`` order (key order when ``sort`` is empty).
    ``explain`` asks for the plan instead of the records.
    """

    where: Node | None = None
    select: Selection | None = None
    sort: tuple[SortKey, ...] = ()
    start: int = 0
    end: int | None = None
    explain: bool = False

    def with_where(self, where: Node | None) -> Query:
        """This query with ``where`` as its conditions (built directly: on every request,
        ``dataclasses.replace`` costs several times as much)."""
        return Query(where, self.select, self.sort, self.start, self.end, self.explain)
