"""Transactions: the writes of a block of code, committed together through the writer or not at all.

``with kiln.transaction():`` (in a plain thread) or ``async with kiln.transaction():``
opens one; inside a request's write method (PUT, POST, PATCH, DELETE) one is
already open. ``Table.records`` calls join the current transaction, which a
context variable holds. Its writes are collected, not applied: when the block
ends without an exception they go to the database's writer as one job, applied
atomically in one nested transaction and durable before the block is left. An
exception discards them all.

Reads go through short LMDB read transactions, one per ``get`` or ``search``
chunk, never one held for the whole block (a read held open would keep the
database's resize lock, which the writer needs to grow the map while this very
block waits for it). So each read sees one consistent snapshot, but two reads
may see different commits of other writers. ``records.get`` and
``records.search`` also see this transaction's own pending writes
(read-your-writes), without the server-set ``@createdTime``/``@updatedTime``
until the commit; a search reads the records of a relationship as committed.

A read-modify-write is last-writer-wins: another writer may change a record
between your read and your commit. To refuse that, pass the version you read as
``if_version``; the commit then raises :class:`~kiln.errors.PreconditionFailed`
and writes nothing.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from kiln.errors import TransactionError
from kiln.storage.database import Database
from kiln.storage.operations import Delete, Insert, Patch, Put, Write, WriteResult
from kiln.storage.writer import Writer
from kiln.types import Key, Record

_current: ContextVar[Transaction | None] = ContextVar("kiln_transaction", default=None)


class Transaction:
    """The pending writes of one database, and what they make each key look like.

    Args:
        user: who writes, for the audit log.
    """

    def __init__(self, user: str | None = None):
        self.user = user
        self.database: Database | None = None
        self.writer: Writer | None = None
        self.operations: list[Write] = []
        self.pending: dict[tuple[str, Key], Record | None] = {}
        """The records this transaction wrote by (table, key); None where it deleted one."""
        self.closed = False

    def join(self, database: Database, writer: Writer) -> None:
        """Make ``database`` this transaction's database, unless it already has another.

        Raises:
            TransactionError: the transaction has ended, or writes another database.
        """
        if self.closed:
            raise TransactionError(
                "this transaction has ended; its writes were committed or discarded",
                hint="open a new one with `with kiln.transaction():`",
            )
        if self.database is None:
            self.database, self.writer = database, writer
        elif self.database is not database:
            raise TransactionError(
                f"one transaction writes one database: this one writes {self.database.name!r}, "
                f"not {database.name!r}",
                hint="use a transaction per database; their commits are not atomic together",
            )

    def add(self, operation: Put | Insert | Patch | Delete, after: Record | None) -> None:
        """Queue ``operation``; ``after`` is the record it leaves at its key (None: deleted).

        A patch of a record this transaction cannot see (``after`` None) leaves the
        key's view alone: the commit reports the missing record.
        """
        self.operations.append(operation)
        if operation.key is None:
            return
        if after is not None or isinstance(operation, Delete):
            self.pending[(operation.table, operation.key)] = after

    def written(self, database: Database, table: str) -> dict[Key, Record | None]:
        """The keys of ``table`` (in ``database``) this transaction wrote, with the record it
        left at each (None: deleted)."""
        if database is not self.database:
            return {}
        return {key: record for (name, key), record in self.pending.items() if name == table}

    def commit_sync(self) -> list[WriteResult]:
        """Apply every pending write as one writer job, blocking this thread until durable."""
        self.closed = True
        if self.writer is None:  # join() sets it with the first operation
            return []
        return self.writer.execute_sync(self.operations, self.user).results

    async def commit(self) -> list[WriteResult]:
        """Apply every pending write as one writer job; returns once it is durable."""
        self.closed = True
        if self.writer is None:  # join() sets it with the first operation
            return []
        return (await self.writer.execute(self.operations, self.user)).results

    def discard(self) -> None:
        """Drop every pending write."""
        self.closed = True
        self.operations.clear()
        self.pending.clear()


def current() -> Transaction | None:
    """The transaction the running code is in, or None."""
    return _current.get()


class TransactionBlock:
    """``kiln.transaction()``: a block whose ``records`` writes commit together at its end.

    Use ``with`` in a plain thread and ``async with`` in async code. Inside a
    transaction already open, the block joins it (the outer one commits).
    """

    def __init__(self, user: str | None = None):
        self._user = user
        self._transaction: Transaction | None = None
        self._token: Token[Transaction | None] | None = None

    def _open(self) -> Transaction:
        outer = _current.get()
        if outer is not None:
            return outer
        self._transaction = Transaction(self._user)
        self._token = _current.set(self._transaction)
        return self._transaction

    def _close(self) -> Transaction | None:
        transaction = self._transaction
        if self._token is not None:
            _current.reset(self._token)
        self._transaction = self._token = None
        return transaction

    def __enter__(self) -> Transaction:
        _refuse_event_loop("with kiln.transaction()", "async with kiln.transaction():")
        return self._open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        transaction = self._close()
        if transaction is None:
            return
        if exc_type is None:
            transaction.commit_sync()
        else:
            transaction.discard()

    async def __aenter__(self) -> Transaction:
        return self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        transaction = self._close()
        if transaction is None:
            return
        if exc_type is None:
            await transaction.commit()
        else:
            transaction.discard()


def transaction(user: str | None = None) -> TransactionBlock:
    """A block whose ``Table.records`` writes commit together, atomically and durably.

    >>> block = transaction()  # then `with block:` in a thread, `async with block:` in async code

    Args:
        user: who writes, for the audit log.

    Raises:
        TransactionError: ``with`` on the event loop's thread (it would block the loop), or a
            second database touched in one transaction.
        KilnError: at the end of the block, the first write that could not apply (a stale
            ``if_version``, a missing record, an existing key); nothing was written.
    """
    return TransactionBlock(user)


def _refuse_event_loop(what: str, instead: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise TransactionError(
        f"{what} blocks until the write is durable, which would stall the event loop",
        hint=f"in async code use `{instead}`; in a request's write method one is already open",
    )


def run_alone(database: Database, writer: Writer, operation: Write, user: str | None) -> Any:
    """Commit one write on its own, blocking this thread until durable; its result.

    Raises:
        TransactionError: called on the event loop's thread.
    """
    _refuse_event_loop(
        "a records write outside a transaction", "async with kiln.transaction(): ..."
    )
    [result] = writer.execute_sync([operation], user).results
    return result
