"""Relationships at read time: the related records of a record, dot-path conditions, selections.

Everything here runs inside one read transaction (``with database.read() as
txn``) and reads through the :class:`~kiln.storage.table.TableStore` of each
table:

- :func:`resolve` gives a record's related record(s) for one
  :class:`~kiln.schema.Relationship`: ``from:`` is a primary-key get per key
  (in the key list's order), ``to:`` a lookup in the target's index.
- :func:`matcher` turns a bound condition tree into a test of one record, like
  :func:`kiln.query.matching.matches`, that follows dot paths through
  relationships with *inner-join* semantics: ``owner.name=Ann`` matches when a
  related record matches, never when there is none.
- :func:`with_related` fills a record's selected relationships in
  (``select(name,owner{name,city})``) with *left-join* semantics: a missing
  owner gives ``None`` (an empty list for a ``many`` relationship).
- :func:`join_keys` gives the keys a dot-path condition joins on: the planner
  drives ``GET /Dog/?owner.name=Ann`` by walking Owner's ``name`` index, then
  Dog's ``ownerId`` index at each owner key found (see :mod:`kiln.query.planner`).

The cost: related records are resolved per record, after the driving index has
fetched it (a join-driven query checks each record it fetches again): one
primary-key get per key for ``from:``, one index lookup for ``to:``. A test from
:func:`matcher` reads and tests a ``from:`` key once however many records hold it
(the executor makes one per batch of records); selections read them per record.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, cast

import lmdb

from kiln.query import matching
from kiln.query.model import And, Condition, Field, Node, Or, Selection
from kiln.schema import Relationship, Schema, TableDef
from kiln.storage.database import Database
from kiln.storage.keys import encode_key
from kiln.storage.ranges import KeyRange, fetch, walk_index, walk_primary
from kiln.storage.table import TableStore
from kiln.types import Record

_CHUNK = 256
"""Related index entries or records read per step of :func:`join_keys`."""

Related = Record | list[Record] | None
"""What a relationship holds for one record: a record or None, or a list for ``many``."""


def related_tables(schema: Schema, table: TableDef) -> dict[str, TableDef]:
    """Relationship name → target table, for ``table``: what the binder takes for dot paths."""
    return {name: schema.tables[r.target] for name, r in table.relationships.items()}


def resolve(
    database: Database,
    txn: lmdb.Transaction,
    table: TableDef,
    relationship: Relationship,
    record: Record,
) -> Related:
    """The record(s) ``relationship`` of ``table`` relates ``record`` to.

    A ``from:`` relationship reads the target's records by the keys ``record``
    holds, skipping keys no record has; a ``to:`` relationship reads the target
    records whose attribute holds ``record``'s primary key, in their key order.

    Returns:
        The related record or None (many-to-one), or a list (``relationship.many``).
    """
    target = database.tables[relationship.target]
    if relationship.to_attribute is not None:
        key = record.get(table.primary_key)
        return target.find(txn, relationship.to_attribute, key) if _is_key(key) else []
    # Exactly one of the two attributes is set (the schema checks it).
    held = record.get(cast(str, relationship.from_attribute))
    if not relationship.many:
        return _get(target, txn, held)
    found = (_get(target, txn, key) for key in _keys(held))
    return [item for item in found if item is not None]


def _is_key(value: Any) -> bool:
    """Whether ``value`` can be a primary key (NaN and booleans cannot)."""
    return isinstance(value, int | float | str) and not isinstance(value, bool) and value == value


def _get(store: TableStore, txn: lmdb.Transaction, key: Any) -> Record | None:
    if not _is_key(key):
        return None
    found = store.get(txn, key)
    return None if found is None else found[1]


def _as_list(related: Related) -> list[Record]:
    if related is None:
        return []
    return related if isinstance(related, list) else [related]


# --------------------------------------------------------------------------- conditions


def matcher(
    database: Database, txn: lmdb.Transaction, table: TableDef, node: Node
) -> Callable[[Record], bool]:
    """The bound condition tree ``node`` as a test of one record of ``table``.

    A condition whose path starts with a relationship (``owner.name``) matches when
    at least one related record matches the rest of the path (``name``): inner-join
    semantics, so a record without an owner never matches, not even ``owner.name!=Ann``.
    Every other condition is :func:`kiln.query.matching.matches`'s. Related records
    are read in ``txn``; one reached through ``from:`` is read and tested once per
    key, for every record the test is given (so use one test per read transaction).
    """
    if isinstance(node, And | Or):
        tests = [matcher(database, txn, table, item) for item in node.items]
        if isinstance(node, And):
            return lambda record: all(test(record) for test in tests)
        return lambda record: any(test(record) for test in tests)
    relationship = table.relationships.get(node.path[0])
    if relationship is None or len(node.path) == 1:
        return partial(matching.matches, node)
    target = database.tables[relationship.target]
    rest = Condition(node.path[1:], node.comparator, node.value, node.forced, node.position)
    inner = matcher(database, txn, target.definition, rest)
    attribute = relationship.from_attribute
    if attribute is None:  # to: the related records hold this record's key
        return lambda record: any(
            inner(item) for item in _as_list(resolve(database, txn, table, relationship, record))
        )
    known: dict[Any, bool] = {}

    def linked(key: Any) -> bool:
        if not _is_key(key):
            return False
        hit = known.get(key)
        if hit is None:
            found = _get(target, txn, key)
            hit = known[key] = found is not None and inner(found)
        return hit

    if relationship.many:
        return lambda record: any(map(linked, _keys(record.get(attribute))))
    return lambda record: linked(record.get(attribute))


def _keys(held: Any) -> list[Any]:
    return held if isinstance(held, list) else []


# --------------------------------------------------------------------------- joins


def join_keys(
    database: Database,
    txn: lmdb.Transaction,
    relationship: Relationship,
    attribute: str,
    key_range: KeyRange,
    limit: int | None,
) -> list[bytes] | None:
    """The encoded keys joining records to the related records in ``key_range``, sorted.

    ``key_range`` is on the related table's index of ``attribute`` (or its records,
    when ``attribute`` is its primary key). For a ``from:`` relationship the keys are
    the related records' primary keys, which the ``from:`` attribute holds; for
    ``to:`` they are the keys the related records' ``to:`` attribute holds (primary
    keys of the relationship's own table).

    Returns:
        The distinct keys; None when the range holds more than ``limit`` related records.
    """
    target = database.tables[relationship.target]
    related = _keys_in(target, txn, attribute, key_range, limit)
    if related is None:
        return None
    if relationship.to_attribute is None:
        return sorted(related)
    linked: set[bytes] = set()
    for _key, record in fetch(txn, target.primary, sorted(related)):
        value = target.value(record, relationship.to_attribute)
        for item in value if isinstance(value, list) else [value]:
            if _is_key(item):
                try:
                    linked.add(encode_key(item))
                except ValueError:  # too long to be a primary key: it joins nothing
                    continue
    return sorted(linked)


def _keys_in(
    store: TableStore, txn: lmdb.Transaction, attribute: str, key_range: KeyRange, limit: int | None
) -> set[bytes] | None:
    """The encoded primary keys of ``store``'s records in ``key_range`` of ``attribute``'s
    index (or of the records); None when there are more than ``limit``."""
    keys: set[bytes] = set()
    primary = attribute == store.definition.primary_key
    after: Any = None
    while True:
        if primary:
            records = walk_primary(txn, store.primary, key_range, after, _CHUNK)
            chunk = [key for key, _record in records]
            after = chunk[-1] if chunk else None
        else:
            entries = walk_index(txn, store.indexes[attribute], key_range, after, _CHUNK)
            chunk = [key for _term, key in entries]
            after = entries[-1] if entries else None
        keys.update(chunk)
        if limit is not None and len(keys) > limit:
            return None
        if len(chunk) < _CHUNK:
            return keys


# --------------------------------------------------------------------------- selections


def with_related(
    database: Database,
    txn: lmdb.Transaction,
    table: TableDef,
    record: Record,
    selection: Selection,
) -> Record:
    """A copy of ``record`` with each relationship ``selection`` names filled in.

    A relationship selected bare (``select(owner)``) holds the whole related
    record(s); one with a nested selection (``owner{name,city}``) holds objects of
    just those fields, themselves resolved the same way (``owner{name,dogs{name}}``).
    A missing related record is None, or ``[]`` for a ``many`` relationship.
    The other fields are left as stored, for the executor to shape.
    """
    out = dict(record)
    for field in selection.fields:
        relationship = table.relationships.get(field.name)
        if relationship is not None:
            out[field.name] = _selected(database, txn, table, relationship, record, field)
    return out


def _selected(
    database: Database,
    txn: lmdb.Transaction,
    table: TableDef,
    relationship: Relationship,
    record: Record,
    field: Field,
) -> Related:
    related = resolve(database, txn, table, relationship, record)
    if field.nested is None or related is None:
        return related
    target = database.tables[relationship.target].definition
    if isinstance(related, list):
        return [project(database, txn, target, item, field.nested) for item in related]
    return project(database, txn, target, related, field.nested)


def project(
    database: Database,
    txn: lmdb.Transaction,
    table: TableDef,
    record: Record,
    selection: Selection,
) -> Record:
    """``record`` reduced to the fields ``selection`` names (absent ones None), related ones
    resolved: the shape of a nested selection like ``owner{name,city}``.

    A nested selection of an object attribute (``address{zip}``) keeps just those
    keys of the object.
    """
    out: Record = {}
    for field in selection.fields:
        relationship = table.relationships.get(field.name)
        if relationship is not None:
            out[field.name] = _selected(database, txn, table, relationship, record, field)
            continue
        value = record.get(field.name)
        if field.nested is not None and isinstance(value, dict):
            value = {item.name: value.get(item.name) for item in field.nested.fields}
        out[field.name] = value
    return out
