"""One LMDB environment per database, holding its tables, their indexes and its audit log.

Store names inside an environment: ``t:<table>`` for a table's records (encoded
primary key → stored record), ``i:<table>:<attribute>`` for each ``@indexed``
attribute (a dupsort store: encoded value → encoded primary key), ``audit`` for
the audit log and ``meta`` for the catalog (:mod:`kiln.storage.catalog`). LMDB
fixes the number of stores when it opens an environment, so it is derived from
the schema, the catalog and the stores already on disk: a table that left the
schema keeps its stores, and they must still be openable.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import lmdb

from kiln.schema import TableDef
from kiln.storage.audit import AuditLog
from kiln.storage.catalog import (
    META_STORE,
    Catalog,
    TableEntry,
    check_primary_keys,
    index_store,
    records_store,
)
from kiln.storage.clock import HybridClock
from kiln.storage.table import TableStore

MAX_MAP_SIZE = 1 << 40
"""The map never grows past 1 TiB; a write that needs more fails with a clear error."""

_SPARE_STORES = 4
_AUDIT_STORE = b"audit"
_ERRNO_OF = {os.strerror(number): number for number in errno.errorcode}
"""An OS error's number by its text (py-lmdb reports OS errors as text only)."""


class UnusableDatabase(OSError):
    """LMDB cannot open a database's folder (``filename``): the system refuses it
    (``errno`` set), or its files are not LMDB's (:class:`ForeignFiles`), or LMDB cannot
    read them (another version's, or damaged: ``errno`` 0)."""


class ForeignFiles(UnusableDatabase):
    """A database's folder holds files that are not an LMDB environment."""


def open_lmdb(path: Path, **options: object) -> lmdb.Environment:
    """``lmdb.open(path, **options)``, raising :class:`UnusableDatabase` for what LMDB
    refuses, so that every store kiln keeps in the data folder fails alike."""
    try:
        return lmdb.open(str(path), **options)
    except lmdb.InvalidError as error:
        reason = str(error).removeprefix(f"{path}: ")
        message = f"its files are not an LMDB database kiln can open ({reason})"
        raise ForeignFiles(0, message, str(path)) from None
    except lmdb.Error as error:
        reason = str(error).removeprefix(f"{path}: ")
        number = _ERRNO_OF.get(reason, 0)
        if not number:
            reason = f"LMDB cannot read its files ({reason})"
        raise UnusableDatabase(number, reason, str(path)) from None


def open_environment(
    path: Path, stores: set[bytes], *, map_size: int
) -> tuple[lmdb.Environment, Catalog, dict[str, TableEntry]]:
    """Open (creating) the environment at ``path`` with room for every store it may open.

    Room is made for ``stores``, the audit log and the catalog, every store already
    on disk, every store the catalog lists, and a few spares. Returns the
    environment, its catalog and the catalog's entries. Raises
    :class:`UnusableDatabase` when LMDB cannot open the folder.

    A commit syncs its pages but not the meta page that makes them current
    (``metasync=False``): the next commit's sync, or :meth:`Database.sync`, puts that
    page on disk. LMDB writes the meta page only after the pages are synced, so a
    crash can only lose the last commits, never leave a broken tree, and the writer
    acknowledges a commit only after such a sync (:mod:`kiln.storage.writer`).
    Whoever commits outside the writer syncs before saying the write is done.
    """
    path.mkdir(parents=True, exist_ok=True)
    wanted = stores | {_AUDIT_STORE, META_STORE}
    max_dbs = len(wanted) + _SPARE_STORES
    while True:
        env = open_lmdb(
            path,
            map_size=map_size,
            max_dbs=max_dbs,
            subdir=True,
            sync=True,
            metasync=False,
            max_spare_txns=4,
        )
        try:
            with env.begin() as txn:  # the main store lists the named ones
                existing = {bytes(name) for name, _value in txn.cursor()}
            catalog = Catalog(env)
            with env.begin() as txn:
                entries = catalog.read(txn)
        except lmdb.MapFullError:  # a map too small for the catalog (storage.mapSize): grow it
            env.close()
            map_size *= 2
            continue
        except BaseException:
            env.close()
            raise
        known = wanted | existing
        for entry in entries.values():
            known.update(entry.stores())
        if len(known) + _SPARE_STORES <= max_dbs:
            return env, catalog, entries
        env.close()  # rare: more stores on disk than the schema declares
        max_dbs = len(known) + _SPARE_STORES


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
        schema_file: the schema's file name, for errors.

    Raises:
        SchemaError: a table's primary key differs from the one its records are stored
            by; nothing has been written.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        tables: list[TableDef],
        *,
        map_size: int,
        clock: HybridClock,
        schema_file: str = "schema.graphql",
    ):
        self.name = name
        self.path = path
        self.clock = clock
        self._resize_lock = threading.RLock()
        self._sync_lock = threading.Lock()
        stores = {records_store(table.table) for table in tables}
        stores.update(index_store(t.table, a) for t in tables for a in t.indexed)
        self.env, self.catalog, entries = open_environment(path, stores, map_size=map_size)
        try:
            check_primary_keys(self.env, tables, entries, schema_file)
        except BaseException:
            self.env.close()
            raise
        while True:
            try:  # creating a store writes to the map: one set too small (storage.mapSize) grows
                self.tables: dict[str, TableStore] = {
                    table.name: TableStore(table, self.env) for table in tables
                }
                self.audit = AuditLog(self.env.open_db(_AUDIT_STORE), self.catalog.store)
                break
            except lmdb.MapFullError:
                self.grow()
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
        with self._resize_lock, self._sync_lock:
            self.env.set_mapsize(min(current * 2, MAX_MAP_SIZE))

    def sync(self) -> None:
        """Put every commit made so far on disk, meta page included (:func:`open_environment`).

        It takes turns with :meth:`grow` (LMDB refuses a sync while the map is being
        resized), not with readers: they must not wait for a disk.
        """
        with self._sync_lock:
            self.env.sync(True)

    def close(self) -> None:
        """Sync and close the environment; every write must have been committed before.

        Taken under the resize lock, so no read transaction of another thread is
        open while the map goes away.
        """
        with self._resize_lock, self._sync_lock:
            self.env.sync(True)
            self.env.close()
