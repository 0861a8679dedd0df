"""One LMDB environment per database, holding its tables, their indexes and its audit log.

Store names inside an environment: ``t:<table>`` for a table's records (encoded
primary key → stored record), ``i:<table>:<attribute>`` for each ``@indexed``
attribute (a dupsort store: encoded value → encoded primary key) and ``audit``
for the audit log. The number of stores is derived from the schema.
"""

from __future__ import annotations

import threading
from pathlib import Path

import lmdb

from kiln.schema import TableDef
from kiln.storage.audit import AuditLog
from kiln.storage.clock import HybridClock
from kiln.storage.table import TableStore

MAX_MAP_SIZE = 1 << 40
"""The map never grows past 1 TiB; a write that needs more fails with a clear error."""

_SPARE_STORES = 4


class ReadTransaction:
    """A short read transaction, held under the database's resize lock (a context manager).

    LMDB remaps the file when the map grows, which would pull the pages from under
    a reader of the same process, so every read transaction holds the resize lock
    and the writer takes it to grow the map. Read transactions are microseconds
    long and never span an ``await``, so the lock is never held for long.
    """

    __slots__ = ("_env", "_lock", "_txn")

    def __init__(self, env: lmdb.Environment, lock: threading.RLock):
        self._env = env
        self._lock = lock
        self._txn: lmdb.Transaction | None = None

    def __enter__(self) -> lmdb.Transaction:
        self._lock.acquire()
        try:
            self._txn = self._env.begin(buffers=True)
        except BaseException:
            self._lock.release()
            raise
        return self._txn

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._txn is not None:
                self._txn.abort()
        finally:
            self._lock.release()


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
        self._resize_lock = threading.RLock()
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

    def read(self) -> ReadTransaction:
        """A short read transaction whose values are zero-copy buffers into the map.

        Use it as ``with database.read() as txn:``, for synchronous work only: never
        across an ``await``.
        """
        return ReadTransaction(self.env, self._resize_lock)

    def grow(self) -> None:
        """Double the map size; called by the writer after LMDB reported the map full."""
        current = self.env.info()["map_size"]
        if current >= MAX_MAP_SIZE:
            raise lmdb.MapFullError(
                f"database {self.name!r} reached the largest map size kiln allows "
                f"({MAX_MAP_SIZE} bytes)"
            )
        with self._resize_lock:
            self.env.set_mapsize(min(current * 2, MAX_MAP_SIZE))

    def close(self) -> None:
        """Close the environment; every write must have been committed before."""
        self.env.close()
