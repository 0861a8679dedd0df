"""Write operations, and how each one is applied inside the writer's transaction.

Operations are plain data, so a request can describe its writes, hand them to
the writer thread and have them applied against the newest state there: a
``Patch`` merges onto the latest record and an ``if_version`` precondition is
checked at the moment of the write, not when the request arrived.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lmdb

from kiln.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from kiln.schema import TableDef
from kiln.storage.audit import AuditEntry, Kind
from kiln.storage.database import Database
from kiln.storage.table import TableStore
from kiln.types import MATCH_ANY, MATCH_NONE, Key, Precondition, Record, Version, version_millis


# Not frozen, though never changed: made for every write, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Put:
    """Replace (or create, unless not ``may_create``) the whole record at ``key``."""

    table: str
    key: Key
    record: Record
    if_version: Precondition | None = None
    may_create: bool = True
    """False when the writer may only replace (a role without ``insert``): an absent
    record is then refused, checked at the moment of the write."""


# Not frozen, though never changed: made for every write, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Insert:
    """Create a record; ``key`` None means generate one. An existing key is a conflict."""

    table: str
    key: Key | None
    record: Record


# Not frozen, though never changed: made for every write, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Patch:
    """Merge ``changes`` into the stored record at ``key``, which must exist."""

    table: str
    key: Key
    changes: Record
    if_version: Precondition | None = None


# Not frozen, though never changed: made for every write, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Delete:
    """Delete the record at ``key``, which must exist."""

    table: str
    key: Key
    if_version: Precondition | None = None


Operation = Put | Insert | Patch | Delete


@dataclass(frozen=True, slots=True)
class DeleteMatching:
    """Delete every record of ``table`` whose key ``select`` picks in the writer's transaction.

    ``select`` reads through the same transaction the deletes are made in, so no
    write can slip between choosing the records and deleting them (DELETE by query).
    """

    table: str
    select: Callable[[lmdb.Transaction], list[Key]]


# Not frozen, though never changed: made for every write, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class LogMessage:
    """Log a message published to a record; no record changes (a message is not data)."""

    entry: AuditEntry


# Not frozen, though never changed: made for every write, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class PruneLog:
    """Delete up to ``limit`` of the oldest audit entries older than version ``before``."""

    before: Version
    limit: int


Write = Operation | DeleteMatching | LogMessage | PruneLog
"""What a writer job holds: record operations, those that expand into some, and log upkeep."""


def perform(
    database: Database, txn: lmdb.Transaction, write: Write, user: str | None
) -> list[WriteResult]:
    """Carry out ``write`` in ``txn``; the results of the record operations it made.

    Raises:
        KilnError: as :func:`apply`, before anything of that operation is written.
    """
    if isinstance(write, LogMessage):
        database.audit.insert(txn, write.entry)
        return []
    if isinstance(write, PruneLog):
        database.audit.prune(txn, write.before, write.limit)
        return []
    if isinstance(write, DeleteMatching):
        operations: Sequence[Operation] = [Delete(write.table, key) for key in write.select(txn)]
    else:
        operations = (write,)
    return [apply(database, txn, operation, user)[0] for operation in operations]


# Not frozen, though never changed: made for every write, and a frozen dataclass's
# __init__ costs five times as much. Compared and hashed by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class WriteResult:
    """What one operation did: the key, the new version, the record after it (None if deleted)."""

    key: Key
    version: Version
    record: Record | None
    created: bool


def _server_time(definition: TableDef, attribute: str, version: Version) -> Any:
    millis = version_millis(version)
    type_name = definition.attributes[attribute].type.name
    if type_name == "Date":
        return datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.UTC)
    return float(millis) if type_name == "Float" else millis


def _stamped(
    definition: TableDef, record: Record, previous: Record | None, version: Version
) -> Record:
    """``record`` with the server-set time attributes filled in."""
    created = definition.created_time
    if created is not None:
        record[created] = (
            previous[created]
            if previous is not None and created in previous
            else _server_time(definition, created, version)
        )
    updated = definition.updated_time
    if updated is not None:
        record[updated] = _server_time(definition, updated, version)
    return record


def _check_version(
    definition: TableDef, key: Key, stored: Version | None, expected: Precondition | None
) -> None:
    if expected is None or (expected == MATCH_ANY and stored is not None):
        return
    if isinstance(expected, frozenset):
        if stored in expected:
            return
        found = "does not exist" if stored is None else f"is at version {stored}"
        listed = ", ".join(str(version) for version in sorted(expected))
        raise PreconditionFailed(
            f"{definition.name} {key!r} {found}, not at any of the versions {listed}; "
            "read it again and retry with its current ETag"
        )
    if expected == MATCH_NONE:
        if stored is not None:
            raise PreconditionFailed(
                f"{definition.name} {key!r} exists already (If-None-Match: *); "
                "leave the header out to replace it"
            )
        return
    if stored != expected:
        found = "does not exist" if stored is None else f"is at version {stored}"
        if expected == MATCH_ANY:
            wanted = "any version"
        elif expected == 0:  # what an If-Match that names no version of kiln's becomes
            wanted = 'any version the precondition names (an ETag is a quoted number like "123")'
        else:
            wanted = f"version {expected}"
        raise PreconditionFailed(
            f"{definition.name} {key!r} {found}, not at {wanted}; "
            "read it again and retry with its current ETag"
        )


class UniqueTaken(Conflict):
    """409: another record holds a ``@unique`` value; the detail names that record.

    ``table`` and ``attribute`` name what was taken, so that a caller can tell the
    refusal without the holder to a user who may not read the attribute
    (:meth:`without_holder`). Set after construction: the exception crosses processes
    pickled, which rebuilds it from its message and restores its attributes.
    """

    table = ""
    attribute = ""

    def without_holder(self) -> Conflict:
        """The same refusal naming neither the record that holds the value nor the value."""
        return Conflict(
            f"{self.table}.{self.attribute} is @unique and another {self.table} already has "
            f"the {self.attribute} sent; send another {self.attribute}"
        )


def _check_unique(
    store: TableStore, txn: lmdb.Transaction, key: Key, record: Record, previous: Record | None
) -> None:
    """Refuse ``record`` when a ``@unique`` value of it is already another record's."""
    definition = store.definition
    for attribute in definition.unique:
        value = record.get(attribute)
        if value is None or (previous is not None and previous.get(attribute) == value):
            continue
        holder = store.holder(txn, attribute, value, key)
        if holder is not None:
            taken = UniqueTaken(
                f"{definition.name}.{attribute} is @unique and {definition.name} {holder!r} "
                f"already has {attribute} {value!r}; send another {attribute}, or change "
                "or delete that record first"
            )
            taken.table, taken.attribute = definition.name, attribute
            raise taken


_LARGEST_KEY = {"Int": 2**31 - 1, "Long": 2**63 - 1}
"""The largest generated key of each bounded integer key type."""


def _generated_key(store: TableStore, txn: lmdb.Transaction) -> Key:
    definition = store.definition
    key_type = definition.primary_key_type
    if key_type in ("ID", "String"):
        return str(uuid.uuid4())
    key = store.next_integer_key(txn)
    largest = _LARGEST_KEY.get(key_type)
    if largest is not None and key > largest:
        raise Conflict(
            f"{definition.name} has no {key_type} key left after {largest} to generate; "
            "send a key of your own",
        )
    return key


def apply(
    database: Database, txn: lmdb.Transaction, operation: Operation, user: str | None
) -> tuple[WriteResult, AuditEntry]:
    """Apply one operation in ``txn`` and append its audit entry.

    Raises:
        KilnError: the operation cannot apply (a missing record, an existing key, a stale
            version). These are raised before anything is written, so the writer may apply
            a single operation without a nested transaction; keep it so.
    """
    store = database.tables[operation.table]
    definition = store.definition
    key = operation.key
    if key is None:
        key = _generated_key(store, txn)
    current = store.get(txn, key)
    stored_version, previous = current if current is not None else (None, None)
    if not isinstance(operation, Insert):
        _check_version(definition, key, stored_version, operation.if_version)
    version = database.clock.now()
    kind: Kind = "put"
    patch = None
    if isinstance(operation, Delete):
        if previous is None:
            raise NotFound(f"{definition.name} {key!r} does not exist")
        store.remove(txn, key, previous)
        record = None
        kind = "delete"
    else:
        if isinstance(operation, Put) and previous is None and not operation.may_create:
            raise Forbidden(
                f"{definition.name} {key!r} does not exist, and creating it takes the `insert` "
                f"permission on `{definition.name}`",
                hint="PUT replaces records that exist; ask for a role that grants insert to "
                "create one",
            )
        if isinstance(operation, Insert) and previous is not None:
            raise Conflict(
                f"{definition.name} {key!r} already exists; "
                "use PUT to replace it or leave the key out to generate one"
            )
        if isinstance(operation, Patch):
            if previous is None:
                raise NotFound(f"{definition.name} {key!r} does not exist; PUT creates it")
            record = {**previous, **operation.changes}
            kind, patch = "patch", dict(operation.changes)
        else:
            record = dict(operation.record)
        record[definition.primary_key] = key
        record = _stamped(definition, record, previous, version)
        _check_unique(store, txn, key, record, previous)
        store.store(txn, key, version, record, previous)
    entry = AuditEntry(version, definition.name, key, kind, record, patch, user)
    database.audit.append(txn, entry)
    result = WriteResult(key, version, record, created=previous is None and record is not None)
    return result, entry
