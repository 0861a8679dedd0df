"""The catalog: what a database's environment holds, as of the schema it was last opened with.

It lives in the environment's ``meta`` store, one entry per stored table, keyed
``table:<stored name>`` (the ``t:<stored name>`` of its records) and holding a
MessagePack map::

    {"name": "Dog", "state": "active", "primaryKey": ["id", "Int"],
     "attributes": {"id": "Int", "name": "String!", "breed": "String"},
     "indexes": {"breed": "ready"}, "computed": {"fullName": 1}}

``state`` is ``active`` or ``removed`` (the table left the schema; its stores are
kept). An index is ``building`` from the moment kiln starts filling it until the
transaction that writes its last entries marks it ``ready``, so an index found
``building`` at start-up was interrupted and is built again. ``computed`` holds
the ``@computed(version:)`` of each computed attribute: an index built with
another version is built again (``computed`` is absent from entries written
before kiln knew the directive).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import lmdb

from kiln.errors import SchemaError
from kiln.schema import TableDef
from kiln.storage.records import pack_value, unpack_value

IndexState = Literal["building", "ready"]
TableState = Literal["active", "removed"]

META_STORE = b"meta"
"""The name of the catalog's store inside each environment."""

_PREFIX = b"table:"


def records_store(table: str) -> bytes:
    """The name of the store of a table's records (``table`` is its stored name)."""
    return f"t:{table}".encode()


def index_store(table: str, attribute: str) -> bytes:
    """The name of the (dupsort) store of one ``@indexed`` attribute."""
    return f"i:{table}:{attribute}".encode()


@dataclass(frozen=True, slots=True)
class TableEntry:
    """One stored table as the catalog describes it.

    ``table`` is the stored name (``@table(table:)``, the type name by default),
    ``name`` the type name it was last declared with; ``attributes`` maps each
    declared attribute to its SDL type (``[String!]``), ``indexes`` each indexed
    attribute to its state.
    """

    table: str
    name: str
    primary_key: str
    primary_key_type: str
    attributes: dict[str, str]
    indexes: dict[str, IndexState]
    state: TableState = "active"
    computed: dict[str, int] = field(default_factory=dict)

    def stores(self) -> list[bytes]:
        """The names of every store this table owns: its records and its indexes."""
        return [records_store(self.table)] + [index_store(self.table, a) for a in self.indexes]

    def with_index(self, attribute: str, state: IndexState) -> TableEntry:
        """This entry with ``attribute``'s index in ``state``."""
        return replace(self, indexes={**self.indexes, attribute: state})


def describe(definition: TableDef, indexes: dict[str, IndexState]) -> TableEntry:
    """The catalog entry of a declared table whose indexes are in the given states."""
    return TableEntry(
        table=definition.table,
        name=definition.name,
        primary_key=definition.primary_key,
        primary_key_type=definition.primary_key_type,
        attributes={name: str(a.type) for name, a in definition.attributes.items()},
        indexes=dict(indexes),
        computed={
            name: a.computed_version for name, a in definition.attributes.items() if a.computed
        },
    )


def check_primary_keys(
    env: lmdb.Environment, tables: list[TableDef], entries: dict[str, TableEntry], file: str
) -> None:
    """Refuse a declared table whose records are stored by another primary key.

    A table without records may change its key freely.

    Raises:
        SchemaError: at the table's declaration, saying how to start fresh or drop the data.
    """
    for table in tables:
        entry = entries.get(table.table)
        if entry is None or (entry.primary_key, entry.primary_key_type) == (
            table.primary_key,
            table.primary_key_type,
        ):
            continue
        count = record_count(env, table.table)
        if count == 0:
            continue
        raise SchemaError(
            f"the primary key of `{table.name}` is now `{table.primary_key}: "
            f"{table.primary_key_type}`, but its {count} stored records are keyed by "
            f"`{entry.primary_key}: {entry.primary_key_type}`; kiln does not re-key records",
            file=file,
            line=table.line or None,
            column=table.column or None,
            hint=(
                f"either start fresh under a new name (rename the type, or give it "
                f'`@table(table: "{table.table}2")`), or delete the old records: remove '
                f"`type {table.name}` from {file}, run `kiln drop APP_DIR {table.name}`, "
                "then declare it again with the new key"
            ),
        )


def record_count(env: lmdb.Environment, table: str) -> int:
    """How many records the stored table ``table`` holds (0 when it has no store)."""
    try:
        store = env.open_db(records_store(table), create=False)
    except lmdb.NotFoundError:
        return 0
    with env.begin() as txn:
        return txn.stat(store)["entries"]


class Catalog:
    """Reads and writes the catalog entries in one environment's ``meta`` store.

    Write methods take a write transaction; they never commit.
    """

    def __init__(self, env: lmdb.Environment, *, create: bool = True):
        self.store = env.open_db(META_STORE, create=create)

    def read(self, txn: lmdb.Transaction) -> dict[str, TableEntry]:
        """Every entry, by stored table name."""
        entries = {}
        cursor = txn.cursor(db=self.store)
        found = cursor.set_range(_PREFIX)
        while found and bytes(cursor.key()).startswith(_PREFIX):
            entry = _decode(bytes(cursor.key())[len(_PREFIX) :].decode(), cursor.value())
            entries[entry.table] = entry
            found = cursor.next()
        return entries

    def get(self, txn: lmdb.Transaction, table: str) -> TableEntry | None:
        """The entry of the stored table ``table``, or None."""
        raw = txn.get(_PREFIX + table.encode(), db=self.store)
        return None if raw is None else _decode(table, raw)

    def put(self, txn: lmdb.Transaction, entry: TableEntry) -> None:
        """Write (or replace) ``entry``."""
        value = {
            "name": entry.name,
            "state": entry.state,
            "primaryKey": [entry.primary_key, entry.primary_key_type],
            "attributes": entry.attributes,
            "indexes": entry.indexes,
            "computed": entry.computed,
        }
        txn.put(_PREFIX + entry.table.encode(), pack_value(value), db=self.store)

    def delete(self, txn: lmdb.Transaction, table: str) -> None:
        """Remove the entry of the stored table ``table``."""
        txn.delete(_PREFIX + table.encode(), db=self.store)


def _decode(table: str, raw: bytes | memoryview) -> TableEntry:
    value = unpack_value(raw)
    primary_key, primary_key_type = value["primaryKey"]
    return TableEntry(
        table=table,
        name=value["name"],
        primary_key=primary_key,
        primary_key_type=primary_key_type,
        attributes=dict(value["attributes"]),
        indexes=dict(value["indexes"]),
        state=value["state"],
        computed=dict(value.get("computed", {})),
    )
