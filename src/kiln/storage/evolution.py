"""Schema evolution in storage: compare the declared tables with the catalog, then change stores.

Start-up runs these steps before any writer serves (a changed primary key was
already refused when the :class:`Database` opened):

1. :func:`plan` compares the declared tables with the catalog, writing nothing.
2. :func:`commit` applies the plan in one write transaction: it deletes the stores
   of indexes no longer declared, marks new indexes, and those of ``@computed``
   attributes whose version changed, ``building`` (``ready`` at once on an empty
   table), marks tables that left the schema ``removed`` (their stores
   stay) and records the new attribute types.
3. :func:`build_index` fills each ``building`` index from the records, a batch per
   transaction; the transaction of the last batch marks it ``ready``.

A crash at any point leaves a catalog the next start carries on from: a
``building`` index is built again from scratch, and records are never written.
:func:`stored_tables` and :func:`drop_table` serve ``kiln drop`` on a stopped app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import lmdb

from kiln.schema import TableDef
from kiln.storage.catalog import (
    IndexState,
    TableEntry,
    describe,
    index_store,
    record_count,
    records_store,
)
from kiln.storage.database import Database, open_environment

BATCH_SIZE = 5000
"""Records indexed per write transaction while building an index."""

Progress = Callable[[str, str, int, int], None]
"""Told ``(table, attribute, done, total)`` as an index is built: at 0, then after each batch."""


@dataclass(frozen=True, slots=True)
class TypeChange:
    """An attribute whose declared type changed (SDL spellings, ``Int`` → ``String!``)."""

    table: str
    attribute: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What start-up changes in one database: the catalog before and after, and the steps."""

    stored: dict[str, TableEntry]
    entries: dict[str, TableEntry]
    build: tuple[tuple[str, str], ...]
    """(type name, attribute) of each index to build."""
    drop: tuple[tuple[str, str], ...]
    """(stored table, attribute) of each index store to delete."""
    retyped: tuple[TypeChange, ...]
    removed: tuple[TableEntry, ...]
    """Tables no longer declared, whose stores are kept."""
    restored: tuple[str, ...]
    """Type names of tables declared again after they were removed."""

    @property
    def changes_catalog(self) -> bool:
        """Whether :func:`commit` has anything to write."""
        return self.entries != self.stored


def plan(tables: list[TableDef], stored: dict[str, TableEntry]) -> Plan:
    """Compare the declared ``tables`` with the catalog entries ``stored``."""
    entries: dict[str, TableEntry] = {}
    build: list[tuple[str, str]] = []
    drop: list[tuple[str, str]] = []
    retyped: list[TypeChange] = []
    restored: list[str] = []
    for table in tables:
        old = stored.get(table.table)
        old_indexes = old.indexes if old is not None else {}
        old_versions = old.computed if old is not None else {}
        indexes: dict[str, IndexState] = {
            a: "ready" if _still_ready(table, a, old_indexes, old_versions) else "building"
            for a in table.indexed
        }
        entry = describe(table, indexes)
        entries[table.table] = entry
        build.extend((table.name, a) for a, state in indexes.items() if state == "building")
        drop.extend((table.table, a) for a in old_indexes if a not in indexes)
        if old is None:
            continue
        if old.state == "removed":
            restored.append(table.name)
        for name, new_type in entry.attributes.items():
            old_type = old.attributes.get(name)
            if old_type is not None and old_type != new_type and name != table.primary_key:
                retyped.append(TypeChange(table.name, name, old_type, new_type))
    removed = []
    for name, old in stored.items():
        if name not in entries:
            entries[name] = replace(old, state="removed")
            removed.append(entries[name])
    return Plan(
        stored, entries, tuple(build), tuple(drop), tuple(retyped), tuple(removed), tuple(restored)
    )


def _still_ready(
    table: TableDef, attribute: str, indexes: dict[str, IndexState], versions: dict[str, int]
) -> bool:
    """Whether the stored index of ``attribute`` is complete and holds what it declares now."""
    if indexes.get(attribute) != "ready":
        return False
    declared = table.attributes[attribute]
    return not declared.computed or versions.get(attribute) == declared.computed_version


def commit(database: Database, plan: Plan) -> list[tuple[str, str]]:
    """Apply ``plan``'s catalog and index-store changes in one durable write transaction.

    Returns:
        The (type name, attribute) of each index left ``building``: those on tables
        that hold records, to fill with :func:`build_index`.
    """
    while True:
        try:
            with database.env.begin(write=True) as txn:
                building = _commit(database, txn, plan)
            database.sync()
            return building
        except lmdb.MapFullError:
            database.grow()


def _commit(database: Database, txn: lmdb.Transaction, plan: Plan) -> list[tuple[str, str]]:
    for table, attribute in plan.drop:
        try:
            store = database.env.open_db(
                index_store(table, attribute), txn=txn, create=False, dupsort=True
            )
        except lmdb.NotFoundError:
            continue
        txn.drop(store, delete=True)
    entries = dict(plan.entries)
    pending = []
    for name, attribute in plan.build:
        store = database.tables[name]
        table = store.definition.table
        if store.count(txn) == 0:
            store.clear_index(txn, attribute)
            entries[table] = entries[table].with_index(attribute, "ready")
        else:
            pending.append((name, attribute))
    for table, entry in entries.items():
        if plan.stored.get(table) != entry:
            database.catalog.put(txn, entry)
    return pending


def build_index(
    database: Database, name: str, attribute: str, progress: Progress, batch_size: int = BATCH_SIZE
) -> None:
    """Fill the index of ``attribute`` of table ``name`` from its records, then mark it ready.

    The index is emptied first (a build cut short leaves a partial one), then filled
    ``batch_size`` records per transaction; the transaction of the last batch
    marks the index ``ready`` in the catalog, and a sync puts that on disk.
    """
    store = database.tables[name]
    with database.read() as txn:
        total = store.count(txn)
    progress(name, attribute, 0, total)
    after: bytes | None = None
    done = 0
    finished = False
    while not finished:
        try:
            with database.env.begin(write=True) as txn:
                if after is None:
                    store.clear_index(txn, attribute)
                chunk = store.scan(txn, after, batch_size)
                store.add_to_index(txn, attribute, chunk)
                finished = len(chunk) < batch_size
                if finished:
                    entry = database.catalog.get(txn, store.definition.table)
                    if entry is None:
                        raise RuntimeError(f"table {name!r} has no catalog entry; commit first")
                    database.catalog.put(txn, entry.with_index(attribute, "ready"))
        except lmdb.MapFullError:
            database.grow()
            continue
        if chunk:  # the last, empty batch only marks the index ready
            after = chunk[-1][0]
            done += len(chunk)
            progress(name, attribute, min(done, total), total)
    database.sync()


@dataclass(frozen=True, slots=True)
class StoredTable:
    """A table found in a data folder's catalog, and how many records it holds."""

    database: str
    entry: TableEntry
    records: int


def stored_tables(data_dir: Path, *, map_size: int) -> list[StoredTable]:
    """Every table the catalogs under ``data_dir`` (one folder per database) list."""
    found = []
    for folder in sorted(p for p in data_dir.glob("*") if (p / "data.mdb").is_file()):
        env, _catalog, entries = open_environment(folder, set(), map_size=map_size)
        try:
            for entry in entries.values():
                found.append(StoredTable(folder.name, entry, record_count(env, entry.table)))
        finally:
            env.close()
    return found


def drop_table(data_dir: Path, table: StoredTable, *, map_size: int) -> None:
    """Delete the stores and the catalog entry of ``table``, in one durable transaction.

    The app must be stopped, and ``table`` no longer declared in its schema.
    """
    env, catalog, _entries = open_environment(data_dir / table.database, set(), map_size=map_size)
    try:
        while True:
            try:
                with env.begin(write=True) as txn:
                    for name in table.entry.stores():
                        is_index = name != records_store(table.entry.table)
                        try:
                            store = env.open_db(name, txn=txn, create=False, dupsort=is_index)
                        except lmdb.NotFoundError:
                            continue
                        txn.drop(store, delete=True)
                    catalog.delete(txn, table.entry.table)
                break
            except lmdb.MapFullError:  # LMDB reopens a map no bigger than its data
                env.set_mapsize(env.info()["map_size"] * 2)
        env.sync(True)
    finally:
        env.close()
