"""One LMDB environment per database, holding its tables, their indexes and its audit log.

Store names inside an environment: ``t:<table>`` for a table's records (encoded
primary key → stored record), ``i:<table>:<attribute>`` for each ``@indexed``
attribute (a dupsort store: encoded value → encoded primary key) and ``audit``
for the audit log. The number of stores is derived from the schema.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from kiln.schema import TableDef
from kiln.storage.audit import AuditLog
from kiln.storage.clock import HybridClock
from kiln.storage.table import TableStore

MAX_MAP_SIZE = 1 << 40
"""The map never grows past 1 TiB; a write that needs more fails with a clear error."""

_SPARE_STORES = 4


class ReadGate:
    """Lets the writer resize the memory map only while no read transaction is open.

    LMDB remaps the file on a resize, which would pull the pages from under a
    reader of the same process, so readers register here and a resize waits for
    them to finish (and holds new ones back for the few milliseconds it takes).
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the gate open for one read transaction."""
        with self._condition:
            while self._resizing:
                self._condition.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                if not self._readers:
                    self._condition.notify_all()

    @contextmanager
    def resizing(self) -> Iterator[None]:
        """Wait for every reader to finish and keep new ones out until the block ends."""
        with self._condition:
            self._resizing = True
            while self._readers:
                self._condition.wait()
        try:
            yield
        finally:
            with self._condition:
                self._resizing = False
                self._condition.notify_all()


class Database:
    """An open LMDB environment with one :class:`TableStore` per table of the database.

    Args:
        name: the database name (``data`` unless ``@table(database:)`` says otherwise).
        path: the environment's directory (created if absent).
        tables: the definitions of the tables that live in this database.
        map_size: the initial map size in bytes; it doubles whenever a write needs more.
        clock: the process's clock, which must stay ahead of every stored version.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        tables: list[TableDef],
        *,
        map_size: int,
        clock: HybridClock,
    ):
        self.name = name
        self.path = path
        self.clock = clock
        self.gate = ReadGate()
        path.mkdir(parents=True, exist_ok=True)
        store_count = sum(1 + len(table.indexed) for table in tables) + 1 + _SPARE_STORES
        self.env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=store_count,
            subdir=True,
            sync=True,
            metasync=True,
            max_spare_txns=4,
        )
        self.tables: dict[str, TableStore] = {
            table.name: TableStore(table, self.env) for table in tables
        }
        self.audit = AuditLog(self.env.open_db(b"audit"))
        with self.env.begin() as txn:
            clock.observe(self.audit.last_version(txn))

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A short read transaction whose values are zero-copy buffers into the map.

        Keep it open only for synchronous work: never across an ``await``.
        """
        with self.gate.reading(), self.env.begin(buffers=True) as txn:
            yield txn

    def grow(self) -> None:
        """Double the map size; called by the writer after LMDB reported the map full."""
        current = self.env.info()["map_size"]
        if current >= MAX_MAP_SIZE:
            raise lmdb.MapFullError(
                f"database {self.name!r} reached the largest map size kiln allows "
                f"({MAX_MAP_SIZE} bytes)"
            )
        with self.gate.resizing():
            self.env.set_mapsize(min(current * 2, MAX_MAP_SIZE))

    def close(self) -> None:
        """Close the environment; every write must have been committed before."""
        self.env.close()
