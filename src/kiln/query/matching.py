"""What a bound condition tree means for one record, and the order sort() puts records in.

Comparisons are type-aware: a value only compares with a value of its own kind
(numbers with numbers, dates with dates, text with text, booleans with
booleans); across kinds nothing is equal and no range matches, and null never
matches a range. A condition on a list matches when any element matches; ``ne``
is the negation of ``eq`` (no element equals). ``sw``, ``ew`` and ``ct`` test text.

>>> from kiln.query.model import Condition
>>> matches(Condition(("tags",), "eq", "a"), {"tags": ["b", "a"]})
True
>>> matches(Condition(("age",), "gt", 3), {"age": None})
False
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import msgspec

from kiln.query.model import And, Condition, Node, Or, SortKey
from kiln.types import Record

_MISSING = object()


def value_at(record: Record, path: tuple[str, ...]) -> Any:
    """The value at a dot ``path`` inside ``record`` (through nested objects), None if absent.

    A path through a relationship is resolved before the record gets here (the
    relationships issue adds that); through nested objects it is read here.
    """
    value: Any = record.get(path[0])
    for name in path[1:]:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _kind(value: Any) -> int:
    """Which values ``value`` compares with: 1 booleans, 2 numbers, 3 dates, 4 text, 0 none."""
    if value is None:
        return 0
    cls = type(value)
    if cls is bool:
        return 1
    if cls is str:
        return 4
    if isinstance(value, datetime.datetime):
        return 3
    if isinstance(value, int | float):
        return 2 if value == value else 0  # NaN compares with nothing
    return 0


def _compare_one(comparator: str, item: Any, wanted: Any) -> bool:
    """``item comparator wanted`` for one scalar ``item``; False across kinds."""
    kind = _kind(item)
    if kind == 0 or kind != _kind(wanted):
        return False
    if comparator == "eq":
        return bool(item == wanted)
    if comparator == "gt":
        return bool(item > wanted)
    if comparator == "ge":
        return bool(item >= wanted)
    if comparator == "lt":
        return bool(item < wanted)
    if comparator == "le":
        return bool(item <= wanted)
    if kind != 4:
        return False
    if comparator == "sw":
        return bool(item.startswith(wanted))
    if comparator == "ew":
        return bool(item.endswith(wanted))
    return bool(wanted in item)  # ct


def _test(comparator: str, value: Any, wanted: Any) -> bool:
    if comparator == "ne":
        return not _test("eq", value, wanted)
    if wanted is None:
        # ``=null``: the attribute is absent, null or an empty list (no element at all).
        return comparator == "eq" and (value is None or value == [])
    if isinstance(value, list):
        return any(_compare_one(comparator, item, wanted) for item in value)
    return _compare_one(comparator, value, wanted)


def matches(node: Node | None, record: Record) -> bool:
    """Whether ``record`` satisfies the bound condition tree ``node`` (None: every record)."""
    if node is None:
        return True
    if isinstance(node, Condition):
        return _test(node.comparator, value_at(record, node.path), node.value)
    if isinstance(node, And):
        return all(matches(item, record) for item in node.items)
    if isinstance(node, Or):
        return any(matches(item, record) for item in node.items)
    raise TypeError(f"not a condition node: {node!r}")


# --------------------------------------------------------------------------- order


class _Descending:
    """Wraps a sort value so that it sorts in the opposite order."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]


_json = msgspec.json.Encoder()


def sort_value(value: Any) -> tuple[int, Any]:
    """A value's place in sort order: booleans, then numbers and dates, then text, then others.

    Numbers and dates share a rank (a date as epoch milliseconds), as in an index.
    """
    kind = _kind(value)
    if kind == 1:
        return (1, value)
    if kind == 2:
        return (2, value)
    if kind == 3:
        return (2, value.timestamp() * 1000)
    if kind == 4:
        return (3, value)
    return (4, _json.encode(value))


def sort_key(keys: tuple[SortKey, ...]) -> Callable[[Record], tuple[Any, ...]]:
    """The key function that sorts records by ``keys``: nulls last in either direction.

    Python's sorts are stable, so records that tie keep the order they came in.
    """

    def key(record: Record) -> tuple[Any, ...]:
        parts: list[Any] = []
        for sort in keys:
            value = value_at(record, sort.path)
            if value is None:
                parts.append((1, None))
                continue
            place = sort_value(value)
            parts.append((0, _Descending(place) if sort.descending else place))
        return tuple(parts)

    return key
