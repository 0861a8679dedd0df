"""The audit log: one entry per committed write, keyed by the write's version.

Entries are appended in the same LMDB transaction as the record they describe,
so the log and the data never disagree. Real-time delivery, catch-up on
subscribe and replication all read this one log.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import lmdb

from kiln.storage.records import pack_value, unpack_value
from kiln.types import Key, Record, Version

Kind = Literal["put", "patch", "delete", "message"]
"""What an entry records: a write of a record, or a message published to it (not data)."""

_VERSION_KEY = struct.Struct(">Q")
_PRUNED_MARK = b"audit:pruned"
"""The ``meta`` store key holding the newest version pruned from the log (absent: none)."""


# Not frozen, though never changed: made for every write, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class AuditEntry:
    """One committed write: which record, what happened, the record after it and who did it."""

    version: Version
    table: str
    key: Key
    kind: Kind
    record: Record | None
    patch: Record | None = None
    user: str | None = None


def version_key(version: Version) -> bytes:
    """The audit store key of a version (8 bytes, big-endian, so entries sort by version)."""
    return _VERSION_KEY.pack(version)


def _entry(raw_key: bytes | memoryview, raw_value: bytes | memoryview) -> AuditEntry:
    table, key, kind, record, patch, user = unpack_value(raw_value)
    return AuditEntry(_VERSION_KEY.unpack(raw_key)[0], table, key, kind, record, patch, user)


class AuditLog:
    """Appends, reads and prunes entries in one database's audit store.

    Args:
        store: the ``audit`` store.
        meta: the ``meta`` store, where the newest pruned version is kept.
    """

    def __init__(self, store: lmdb._Database, meta: lmdb._Database):
        self.store = store
        self.meta = meta

    def append(self, txn: lmdb.Transaction, entry: AuditEntry) -> None:
        """Add ``entry``, newer than every entry logged, in the transaction making the change."""
        txn.put(version_key(entry.version), _packed(entry), db=self.store, append=True)

    def insert(self, txn: lmdb.Transaction, entry: AuditEntry) -> None:
        """Add ``entry`` wherever its version sorts: a message, versioned when it was sent,
        is logged after writes with newer versions may have been.

        Another worker process's clock may have given an entry the same version; the
        message then takes the next free one, and nothing logged is replaced.
        """
        packed = _packed(entry)
        version = entry.version
        while not txn.put(version_key(version), packed, db=self.store, overwrite=False):
            version += 1

    def prune(self, txn: lmdb.Transaction, before: Version, limit: int) -> int:
        """Delete up to ``limit`` of the oldest entries older than ``before``; returns how many.

        The newest version deleted is remembered (:meth:`pruned_through`), so a reader
        asking for history from before it learns that some is gone.
        """
        cursor = txn.cursor(db=self.store)
        deleted = 0
        newest = 0
        cursor.first()
        while deleted < limit:
            raw_key = cursor.key()  # empty once the cursor ran off the end
            if not raw_key or _VERSION_KEY.unpack(raw_key)[0] >= before:
                break
            newest = _VERSION_KEY.unpack(raw_key)[0]
            cursor.delete()  # moves to the next entry
            deleted += 1
        if deleted:
            txn.put(_PRUNED_MARK, version_key(newest), db=self.meta)
        return deleted

    def pruned_through(self, txn: lmdb.Transaction) -> Version:
        """The newest version pruned from the log, or 0 when nothing was."""
        raw = txn.get(_PRUNED_MARK, db=self.meta)
        return 0 if raw is None else _VERSION_KEY.unpack(raw)[0]

    def first_version(self, txn: lmdb.Transaction) -> Version:
        """The oldest entry's version, or 0 for an empty log."""
        cursor = txn.cursor(db=self.store)
        return _VERSION_KEY.unpack(cursor.key())[0] if cursor.first() else 0

    def last_version(self, txn: lmdb.Transaction) -> Version:
        """The newest entry's version, or 0 for an empty log."""
        cursor = txn.cursor(db=self.store)
        return _VERSION_KEY.unpack(cursor.key())[0] if cursor.last() else 0

    def read(self, txn: lmdb.Transaction, after: Version = 0) -> Iterator[AuditEntry]:
        """The entries newer than ``after``, oldest first."""
        cursor = txn.cursor(db=self.store)
        if not cursor.set_range(version_key(after + 1)):
            return
        for raw_key, raw_value in cursor:
            yield _entry(raw_key, raw_value)

    def read_back(self, txn: lmdb.Transaction, through: Version) -> Iterator[AuditEntry]:
        """The entries not newer than ``through``, newest first."""
        cursor = txn.cursor(db=self.store)
        found = cursor.prev() if cursor.set_range(version_key(through + 1)) else cursor.last()
        while found:
            yield _entry(cursor.key(), cursor.value())
            found = cursor.prev()


def _packed(entry: AuditEntry) -> bytes:
    return pack_value((entry.table, entry.key, entry.kind, entry.record, entry.patch, entry.user))
