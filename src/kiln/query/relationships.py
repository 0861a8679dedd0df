"""Relationships at read time: the related records of a record, dot-path conditions, selections.

Everything here runs inside one read transaction (``with database.read() as
txn``) and reads through the :class:`~kiln.storage.table.TableStore` of each
table:

- :func:`resolve` gives a record's related record(s) for one
  :class:`~kiln.schema.Relationship`: ``from:`` is a primary-key get per key
  (in the key list's order), ``to:`` a lookup in the target's index.
- :func:`matches` evaluates a bound condition tree like
  :func:`kiln.query.matching.matches`, and follows dot paths through
  relationships with *inner-join* semantics: ``owner.name=Ann`` matches when a
  related record matches, never when there is none.
- :func:`with_related` fills a record's selected relationships in
  (``select(name,owner{name,city})``) with *left-join* semantics: a missing
  owner gives ``None`` (an empty list for a ``many`` relationship).

The cost: related records are resolved per record, after the driving index has
fetched it. A dot-path condition never drives a query (no index holds
``owner.name``), so ``GET /Dog/?owner.name=Ann`` alone walks every Dog (it needs
``query.allowScans``) and reads each dog's owner: one primary-key get per key
for ``from:``, one index lookup for ``to:``. Combine it with a condition on an
``@indexed`` attribute of the table itself to narrow the walk. Nothing is
cached across records: two dogs of one owner read that owner twice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import lmdb

from kiln.query import matching
from kiln.query.model import And, Condition, Field, Node, Or, Selection
from kiln.schema import Relationship, Schema, TableDef
from kiln.storage.database import Database
from kiln.storage.table import TableStore
from kiln.types import Record

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
    keys = held if isinstance(held, list) else []
    found = (_get(target, txn, key) for key in keys)
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


def matches(
    database: Database, txn: lmdb.Transaction, table: TableDef, node: Node | None, record: Record
) -> bool:
    """Whether ``record`` of ``table`` satisfies the bound condition tree ``node``.

    A condition whose path starts with a relationship (``owner.name``) matches when
    at least one related record matches the rest of the path (``name``): inner-join
    semantics, so a record without an owner never matches, not even ``owner.name!=Ann``.
    Paths may go through several relationships. Every other condition is
    :func:`kiln.query.matching.matches`'s.
    """
    if node is None:
        return True
    if isinstance(node, And):
        return all(matches(database, txn, table, item, record) for item in node.items)
    if isinstance(node, Or):
        return any(matches(database, txn, table, item, record) for item in node.items)
    relationship = table.relationships.get(node.path[0])
    if relationship is None or len(node.path) == 1:
        return matching.matches(node, record)
    target = database.tables[relationship.target].definition
    rest: Condition = replace(node, path=node.path[1:])
    related = _as_list(resolve(database, txn, table, relationship, record))
    return any(matches(database, txn, target, rest, item) for item in related)


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
