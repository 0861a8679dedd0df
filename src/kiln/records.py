"""``Table.records``: programmatic access to a table's records from anywhere in the app.

``tables.Dog.records.get(1)``, ``.put(1, {...})``, ``.create({...})``, ``.patch(1, {...})``,
``.delete(1)`` and ``.search("breed=lab")``. The name is its own so it never collides
with the Resource seam (``get(self, target)`` and friends). Writes are validated as
REST writes are. Inside a transaction (a request's write method, or
``with kiln.transaction():``) writes join it and commit at its end; outside one,
each write is its own transaction, durable when the call returns (which blocks the
calling thread, so outside a transaction it is refused on the event loop's thread).
See :mod:`kiln.transaction` for what reads see and for ``if_version``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kiln.errors import BadRequest, FieldError, KilnError, NotFound, ValidationError
from kiln.keypath import key_problem, shown_key, unstorable
from kiln.query import Query, parse_query
from kiln.query.binder import bind
from kiln.query.executor import CHUNK, Results, Source
from kiln.query.planner import plan_query
from kiln.schema import Schema, TableDef
from kiln.storage.keys import encode_key
from kiln.storage.operations import Delete, Insert, Operation, Patch, Put, WriteResult
from kiln.transaction import current, run_alone
from kiln.types import Key, Record, Version
from kiln.validation import validate_record

if TYPE_CHECKING:
    from kiln.resource import Table


def validated(
    definition: TableDef, schema: Schema, data: Any, key: Key | None, *, partial: bool
) -> Record:
    """``data`` validated as a record of ``definition``, whose primary key, if given, is ``key``.

    Raises:
        ValidationError: ``data`` does not fit the table.
        BadRequest: the record's primary key differs from ``key``.
    """
    primary_key = definition.primary_key
    try:
        record = validate_record(definition, schema, data, partial=partial)
    except ValidationError as error:
        # Tell the key's mismatch in the same answer as the other mistakes.
        sent = data.get(primary_key) if key is not None and isinstance(data, dict) else None
        if sent is None or any(field.path == f"$.{primary_key}" for field in error.errors):
            raise
        checked = validate_record(definition, schema, {primary_key: sent}, partial=True)
        if checked[primary_key] == key:
            raise
        errors = [*error.errors, FieldError(f"$.{primary_key}", _differs(primary_key, sent, key))]
        raise ValidationError(
            f"{len(errors)} invalid fields in the {definition.name} record",
            errors=errors,
            hint=error.hint,
        ) from None
    if key is not None and primary_key in record and record[primary_key] != key:
        raise BadRequest(_differs(primary_key, record[primary_key], key))
    return record


def _differs(primary_key: str, sent: Any, key: Key) -> str:
    """Why a body's primary key that is not the URL's is refused (values shown as JSON)."""
    return (
        f"the body's {primary_key} ({_json(sent)}) differs from the URL's ({_json(key)}); "
        "leave it out or make them match"
    )


def _json(value: Any) -> str:
    """``value`` as JSON shows it, for a message (a key: text or a number)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def search(table: type[Table], query: Query, *, estimate: bool = False) -> Results:
    """The records of ``table`` matching the bound ``query``, streamed in short read
    transactions (what :meth:`kiln.resource.Table.search` runs).

    In a transaction the results are as if its writes so far were committed: the
    records it wrote replace the stored ones (related records are read as stored).
    """
    read = table.database.read
    plan = plan_query(
        query,
        table.definition,
        table.store,
        read,
        table.limits,
        database=table.database,
        estimate_all=estimate,
    )
    wanted = query.end if query.end is not None else CHUNK
    source = Source(table.store, read, first_chunk=max(1, wanted), database=table.database)
    transaction = current()
    if transaction is not None:
        written = transaction.written(table.database, table.definition.name)
        source.pending = {encode_key(key): record for key, record in written.items()}
    return Results(plan, source, table.limits.max_sort_rows)


def generated_key(table: type[Table]) -> Key:
    """A new key for ``table`` chosen before a commit: a UUID for ``ID``/``String`` keys,
    else one more than the largest stored key or key pending in the current transaction.

    Two transactions choosing at once may choose the same integer key; the later
    commit then fails with :class:`~kiln.errors.Conflict`.
    """
    definition = table.definition
    if definition.primary_key_type in ("ID", "String"):
        return str(uuid.uuid4())
    with table.database.read() as txn:
        key = table.store.next_integer_key(txn)
    transaction = current()
    if transaction is not None:
        for name, written in transaction.pending:
            if name == definition.name and isinstance(written, int) and written >= key:
                key = written + 1
    return key


def queue(table: type[Table], operation: Operation) -> bool:
    """Add ``operation`` on ``table`` to the current transaction; False when there is none.

    Raises:
        TransactionError: the transaction has ended, or writes another database.
    """
    transaction = current()
    if transaction is None:
        return False
    transaction.join(table.database, table.writer)
    transaction.add(operation, _after(table, operation))
    return True


def _after(table: type[Table], operation: Operation) -> Record | None:
    """The record ``operation`` leaves at its key as the transaction sees it; None for a
    delete, and for a patch of a record the transaction cannot see."""
    if isinstance(operation, Delete):
        return None
    if isinstance(operation, Patch):
        before = Records(table).get(operation.key)
        return None if before is None else {**before, **operation.changes}
    return {**operation.record, table.definition.primary_key: operation.key}


def _refuse_underived(table: type[Table]) -> None:
    """Refuse a write that an ``@indexed`` ``@computed`` attribute could not index yet: its
    function is not registered (a write at the top of resources.py, above the decorator)."""
    definition = table.definition
    for attribute in definition.computed:
        if attribute in definition.indexed and attribute not in table.computed_functions:
            raise KilnError(
                f"{definition.name}.{attribute} is @computed and @indexed, but no function "
                f"derives it yet, so this write to {definition.name} could not index it",
                hint=f"register `@tables.{definition.name}.computed({attribute!r})` in "
                f"resources.py above the code that writes {definition.name} records",
            )


def _url_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return quote(str(value), safe="")


class Records:
    """The records of one table class; ``Table.records`` gives one."""

    __slots__ = ("_table",)

    def __init__(self, table: type[Table]):
        self._table = table

    def get(self, id: Key) -> Record | None:
        """The record with key ``id`` (as this transaction left it), or None (also for an id
        no record can have: one the key store cannot hold)."""
        table = self._table
        if unstorable(id) is not None:
            return None
        transaction = current()
        if transaction is not None and transaction.database is table.database:
            pending = transaction.pending.get((table.definition.name, id), ...)
            if pending is not ...:
                return None if pending is None else dict(pending)
        with table.database.read() as txn:
            found = table.store.get(txn, id)
        return None if found is None else found[1]

    def put(self, id: Key, record: Mapping[str, Any], *, if_version: Version | None = None) -> None:
        """Replace (or create) the record with key ``id``.

        Raises:
            BadRequest: ``id`` is not of the primary key's type, or cannot be a new key
                (no URL could name it, or the store cannot hold it).
            ValidationError: ``record`` does not fit the table.
            PreconditionFailed: ``if_version`` is not the stored version (at commit, in a
                transaction); nothing is written.
        """
        definition = self._table.definition
        id = self._key(id, "put", new=True)
        data = validated(definition, self._table.schema, record, id, partial=False)
        self._write(Put(definition.name, id, data, if_version))

    def create(self, record: Mapping[str, Any]) -> Key:
        """Add a new record; returns its key, the record's own or a generated one.

        In a transaction an integer key is generated as one more than the largest
        stored or pending one; a concurrent create of the same key makes the later
        commit fail with :class:`~kiln.errors.Conflict` (nothing is overwritten).

        Raises:
            BadRequest: the record's key cannot be a new key (no URL could name it, or the
                store cannot hold it).
            Conflict: a record with that key exists (at commit, in a transaction).
        """
        definition = self._table.definition
        data = validated(definition, self._table.schema, record, None, partial=False)
        key = data.pop(definition.primary_key, None)
        problem = None if key is None else key_problem(key)
        if problem is not None:
            raise BadRequest(
                f"{definition.name}.records.create(...): the record's {definition.primary_key} "
                f"{shown_key(key)} cannot be a key: {problem}; choose another or leave it out to "
                "generate one"
            )
        if key is None and current() is not None:
            key = generated_key(self._table)
        result = self._write(Insert(definition.name, key, data))
        return key if result is None else result.key

    def patch(
        self, id: Key, changes: Mapping[str, Any], *, if_version: Version | None = None
    ) -> None:
        """Merge ``changes`` into the record with key ``id``, which must exist.

        Raises:
            BadRequest: ``id`` is not of the primary key's type.
            NotFound: no such record (at commit, in a transaction).
            PreconditionFailed: ``if_version`` is not the stored version.
        """
        definition = self._table.definition
        id = self._key(id, "patch")
        data = validated(definition, self._table.schema, changes, id, partial=True)
        data.pop(definition.primary_key, None)
        self._write(Patch(definition.name, id, data, if_version))

    def delete(self, id: Key, *, if_version: Version | None = None) -> None:
        """Delete the record with key ``id``, which must exist.

        Raises:
            BadRequest: ``id`` is not of the primary key's type.
            NotFound: no such record (at commit, in a transaction).
            PreconditionFailed: ``if_version`` is not the stored version.
        """
        self._write(Delete(self._table.definition.name, self._key(id, "delete"), if_version))

    def search(self, query: str | Mapping[str, Any] | Query) -> Iterator[Any]:
        """The records matching ``query``, as an iterator.

        ``query`` is the URL syntax (``"breed=lab&age=gt=3&sort(name)"``), a dict of
        equality conditions (``{"breed": "lab", "age": 3}``, every one must hold), or
        an unbound :class:`~kiln.query.Query`. In a transaction it sees the writes the
        transaction made before the call, as :meth:`get` does (the records of a
        relationship are read as committed); the order is then made in memory, so
        without ``limit()`` at most ``query.maxSortRows`` records may match.

        Raises:
            BadRequest: the query is malformed, names an unknown attribute, or no index
                can drive it.
        """
        if isinstance(query, str):
            parsed = parse_query(query)
        elif isinstance(query, Query):
            parsed = query
        else:
            text = "&".join(f"{quote(name, safe='')}={_url_value(v)}" for name, v in query.items())
            parsed = parse_query(text) if text else Query()
        table = self._table
        relationships = table.related
        bound = bind(parsed, table.definition, table.schema, relationships=relationships)
        return search(table, bound)

    def _key(self, id: Any, method: str, *, new: bool = False) -> Key:
        """``id`` as a key of this table (``3.0`` → ``3`` for an Int key); one that may
        make a ``new`` record must also be one a URL can name and the store hold (a
        stored record's own key, whatever it is, can still be patched and deleted).

        Raises:
            BadRequest: ``id`` is None or not of the primary key's type, or, when ``new``,
                cannot be a new record's key.
            NotFound: not ``new``, and the key store cannot hold ``id``.
        """
        definition = self._table.definition
        primary_key = definition.primary_key

        def call() -> str:
            return f"{definition.name}.records.{method}({shown_key(id)}, ...)"

        if id is None:
            raise BadRequest(f"{call()}: the id is None; give the record's key")
        try:
            key = validate_record(definition, self._table.schema, {primary_key: id}, partial=True)
        except ValidationError as error:
            message = error.errors[0].message if error.errors else error.message
            raise BadRequest(
                f"{call()}: the id is not a {definition.name} key: {message}",
            ) from None
        if new:
            problem = key_problem(key[primary_key])
            if problem is not None:
                raise BadRequest(f"{call()}: the id cannot be a key: {problem}; choose another")
        elif unstorable(key[primary_key]) is not None:
            raise NotFound(f"{call()}: no {definition.name} record can have that key")
        return key[primary_key]

    def _write(self, operation: Operation) -> WriteResult | None:
        """Queue ``operation`` in the current transaction, or commit it alone; its result
        when committed alone."""
        table = self._table
        _refuse_underived(table)
        if queue(table, operation):
            return None
        result: WriteResult = run_alone(table.database, table.writer, operation, None)
        return result


class RecordsAttribute:
    """The ``records`` class attribute of :class:`~kiln.resource.Table`."""

    def __get__(self, instance: object, owner: type[Table]) -> Records:
        return Records(owner)
