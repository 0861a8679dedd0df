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

Kind = Literal["put", "patch", "delete"]

_VERSION_KEY = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
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


class AuditLog:
    """Appends and reads entries in one database's audit store."""

    def __init__(self, store: lmdb._Database):
        self.store = store

    def append(self, txn: lmdb.Transaction, entry: AuditEntry) -> None:
        """Add ``entry`` inside the write transaction that makes the change."""
        value = pack_value(
            (entry.table, entry.key, entry.kind, entry.record, entry.patch, entry.user)
        )
        txn.put(version_key(entry.version), value, db=self.store, append=True)

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
            table, key, kind, record, patch, user = unpack_value(raw_value)
            yield AuditEntry(_VERSION_KEY.unpack(raw_key)[0], table, key, kind, record, patch, user)
