"""Bind a parsed :class:`Query` to a table: check every attribute, type every value.

:func:`bind` is the step between :mod:`kiln.query.parser` and the planner. It
checks each attribute a condition, ``select()`` or ``sort()`` names against the
table's declared attributes (the primary key included) and converts each
condition's text to the attribute's declared type:

- ``Int``, ``Long``, ``BigInt`` → ``int``; ``Float`` → ``float``; ``Boolean`` →
  ``bool`` (``true``/``false``); ``Date`` → an aware UTC ``datetime`` (ISO-8601 or
  epoch milliseconds); ``ID``, ``String`` → ``str``; ``Any`` → an ``int`` or
  ``float`` when the text is a number, a ``bool`` for ``true``/``false``, else ``str``.
- A list attribute (``tags: [String]``) converts to its item type; the executor
  matches the condition when any element matches.
- A forced prefix wins over the declared type: ``number:`` → ``int``/``float``,
  ``string:`` → ``str``, ``boolean:``, ``date:``, and ``null`` → ``None`` (only
  with ``=``/``==``/``!=``).
- ``=sw=``, ``=ew=``, ``=ct=`` (and ``==text*``) compare text: their value must
  convert to a ``str`` (on an ``Any`` attribute the text is kept as it is).
- Dot paths (``owner.name``) go through ``relationships`` (relationship name →
  target table): the rest of the path is bound against the target table, one hop.
  ``sort()`` may only go through a relationship to one record (not a list).
- Undeclared attributes: an error on an ``@sealed`` table. Other tables' records
  may carry them, so a condition on one is allowed when its value has a type
  prefix or is ``null`` (so a typo like ``nmae=Ann`` still fails loudly);
  ``select()`` may name them; ``sort()`` may not.

Bytes and object-typed attributes cannot be compared in a condition.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kiln.errors import BadRequest
from kiln.query.model import And, Condition, Field, Node, Or, Query, Selection, SortKey
from kiln.schema import Attribute, Schema, TableDef

__all__ = ["bind"]

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TEXT_COMPARATORS = {"sw": "=sw=", "ew": "=ew=", "ct": "=ct="}


def bind(
    query: Query,
    table: TableDef,
    schema: Schema,
    *,
    relationships: Mapping[str, TableDef] | None = None,
) -> Query:
    """``query`` checked against ``table``, with every condition value typed.

    Args:
        query: an unbound query from :func:`~kiln.query.parser.parse_query`.
        table: the table the query runs over.
        schema: the schema ``table`` comes from (for nested object types).
        relationships: relationship name → target table, for dot paths; None for none.

    Returns:
        A new :class:`Query` whose condition values have their attributes' types
        (paths, select and sort unchanged).

    Raises:
        BadRequest: an unknown attribute (listing the known ones, closest first), a
            value that does not convert, or a text comparator on a non-text value.
    """
    scope = _Scope.of_table(table, schema, relationships or {})
    where = None if query.where is None else scope.node(query.where)
    if query.select is not None:
        scope.check_selection(query.select)
    for key in query.sort:
        scope.check_sort_key(key)
        relationship = table.relationships.get(key.path[0])
        if relationship is not None and relationship.many:
            raise _at(
                key.position,
                f"cannot sort by `{'.'.join(key.path)}`: `{key.path[0]}` relates each "
                f"{table.name} to several {relationship.target} records; sort through a "
                "relationship to one record instead",
            )
    return query.with_where(where)


def _at(position: int, message: str) -> BadRequest:
    """A 400 whose detail starts with the query position, when it is known."""
    return BadRequest(f"query position {position}: {message}" if position else message)


# --------------------------------------------------------------------------- conversions


class _Unconvertible(Exception):
    """Raised by a converter; ``expected`` says what the text should have been."""

    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


def _to_int(text: str) -> int:
    if _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # more digits than sys.get_int_max_str_digits()
            pass
    raise _Unconvertible("a whole number, like 42")


def _to_float(text: str) -> float:
    if _DECIMAL.fullmatch(text):
        number = float(text)
        if math.isfinite(number):
            return number
    raise _Unconvertible("a finite number, like 4.5")


def _to_number(text: str) -> int | float:
    return _to_int(text) if _INTEGER.fullmatch(text) else _to_float(text)


def _to_bool(text: str) -> bool:
    if text in ("true", "false"):
        return text == "true"
    raise _Unconvertible("true or false")


def _to_date(text: str) -> datetime:
    expected = "an ISO-8601 date like 2024-05-01T10%3A00%3A00Z, or epoch milliseconds"
    try:
        if _INTEGER.fullmatch(text):
            return _EPOCH + timedelta(milliseconds=int(text))
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise _Unconvertible(expected) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _to_text(text: str) -> str:
    return text


def _to_any(text: str) -> Any:
    if _DECIMAL.fullmatch(text):
        try:
            return _to_number(text)
        except _Unconvertible:
            return text
    if text in ("true", "false"):
        return text == "true"
    return text


_SCALARS: dict[str, Callable[[str], Any]] = {
    "ID": _to_text,
    "String": _to_text,
    "Int": _to_int,
    "Long": _to_int,
    "BigInt": _to_int,
    "Float": _to_float,
    "Boolean": _to_bool,
    "Date": _to_date,
    "Any": _to_any,
}
_FORCED: dict[str, Callable[[str], Any]] = {
    "number": _to_number,
    "string": _to_text,
    "boolean": _to_bool,
    "date": _to_date,
}


# --------------------------------------------------------------------------- scopes


# Not frozen, though never changed: made for every query, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class _Scope:
    """The attributes a name may refer to: a table's (with its relationships) or a nested type's."""

    name: str
    attributes: Mapping[str, Attribute]
    sealed: bool
    relationships: Mapping[str, TableDef]
    schema: Schema

    @classmethod
    def of_table(
        cls, table: TableDef, schema: Schema, relationships: Mapping[str, TableDef]
    ) -> _Scope:
        return cls(table.name, table.attributes, table.sealed, relationships, schema)

    def unknown(self, name: str, position: int, advice: str, *, where: str = "") -> BadRequest:
        """The "unknown attribute" error: the known names (closest first), then ``advice``."""
        known = [*self.attributes, *self.relationships]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        ordered = close + [other for other in known if other not in close]
        guess = f"; did you mean `{close[0]}`?" if close else "."
        return _at(
            position,
            f"unknown attribute `{name}` of {self.name}{where}{guess} "
            f"The attributes of {self.name} are: {', '.join(ordered)}. {advice}",
        )

    def target(self, path: tuple[str, ...], position: int) -> _Scope:
        """The scope of the relationship ``path[0]``, for a dot path."""
        first = path[0]
        related = self.relationships.get(first)
        if related is not None:
            return _Scope.of_table(related, self.schema, {})
        if first in self.attributes:
            raise _at(
                position,
                f"`{'.'.join(path)}`: `{first}` is not a relationship of {self.name}; "
                "dot paths go through @relationship attributes",
            )
        raise self.unknown(first, position, "Dot paths go through @relationship attributes.")

    def declared(self, path: tuple[str, ...], position: int) -> tuple[_Scope, Attribute | None]:
        """The scope and attribute ``path`` names; None for an undeclared one (unsealed scope)."""
        if len(path) > 1:
            return self.target(path, position).declared(path[1:], position)
        name = path[0]
        attribute = self.attributes.get(name)
        if attribute is not None:
            return self, attribute
        if name in self.relationships:
            raise _at(
                position,
                f"`{name}` is a relationship of {self.name}; name one of its attributes, "
                f"like `{name}.{self.relationships[name].primary_key}`",
            )
        if self.sealed:
            raise self.unknown(name, position, f"{self.name} is @sealed.")
        return self, None

    # ----------------------------------------------------------------- conditions

    def node(self, node: Node) -> Node:
        if isinstance(node, Condition):
            return self.condition(node)
        items = tuple(self.node(item) for item in node.items)
        return And(items) if isinstance(node, And) else Or(items)

    def condition(self, condition: Condition) -> Condition:
        path, position = condition.path, condition.position
        scope, attribute = self.declared(path, position)
        label = ".".join(path)
        value = scope.value(condition, attribute, label)
        comparator = condition.comparator
        if comparator in _TEXT_COMPARATORS and not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise _at(
                position,
                f"{_TEXT_COMPARATORS[comparator]} compares text, but the value for `{label}` "
                f"is {kind}; use it on String, ID or Any attributes, or write string:VALUE",
            )
        return condition.with_value(value)

    def value(self, condition: Condition, attribute: Attribute | None, label: str) -> Any:
        text, forced, position = condition.value, condition.forced, condition.position
        if forced == "null":
            if condition.comparator not in ("eq", "ne"):
                raise _at(position, f"`{label}` can only be compared with null by = or !=")
            return None
        if forced is not None:
            convert, expected = _FORCED[forced], f"a {forced}"
        elif attribute is None:
            raise self.unknown(
                label.rpartition(".")[2],
                position,
                f"{self.name} is not @sealed, so records may carry other attributes: "
                f"to query one, give the value a type, like {label}=string:{text}",
            )
        else:
            type_ref = attribute.type
            if type_ref.name not in _SCALARS:
                raise _at(
                    position,
                    f"`{label}` is {type_ref}, which a condition cannot compare; "
                    "query a String, ID, number, Boolean, Date or Any attribute",
                )
            if type_ref.name == "Any" and condition.comparator in _TEXT_COMPARATORS:
                return text
            convert, expected = _SCALARS[type_ref.name], type_ref.name
        try:
            return convert(text)
        except _Unconvertible as error:
            raise _at(
                position,
                f"`{label}` expects {expected} ({error.expected}), got {text!r}",
            ) from None

    # ----------------------------------------------------------------- select, sort

    def check_selection(self, selection: Selection) -> None:
        for field in selection.fields:
            self.check_field(field)

    def check_field(self, field: Field) -> None:
        name = field.name
        attribute = self.attributes.get(name)
        if field.nested is None:
            if attribute is None and name not in self.relationships and self.sealed:
                raise self.unknown(name, 0, f"{self.name} is @sealed.", where=" in select()")
            return
        related = self.relationships.get(name)
        if related is not None:
            _Scope.of_table(related, self.schema, {}).check_selection(field.nested)
        elif attribute is not None:
            nested_type = self.schema.types.get(attribute.type.name)
            if nested_type is None:
                raise BadRequest(
                    f"select(): `{name}` is {attribute.type}, not an object; "
                    f"only relationships and object attributes take {{...}}: write `{name}`"
                )
            _Scope(
                nested_type.name, nested_type.attributes, nested_type.sealed, {}, self.schema
            ).check_selection(field.nested)
        elif self.sealed:
            raise self.unknown(name, 0, f"{self.name} is @sealed.", where=" in select()")

    def check_sort_key(self, key: SortKey) -> None:
        scope, attribute = self.declared(key.path, key.position)
        if attribute is None:
            raise scope.unknown(
                key.path[-1], key.position, "sort() needs a declared attribute.", where=" in sort()"
            )
        if attribute.type.name not in _SCALARS and attribute.type.name != "Bytes":
            raise _at(
                key.position,
                f"cannot sort by `{'.'.join(key.path)}`, an object ({attribute.type}); "
                "sort by a scalar attribute",
            )
