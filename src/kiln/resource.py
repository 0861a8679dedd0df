"""The Resource seam: one method table that every protocol calls.

A protocol adapter turns a request into a :class:`RequestTarget` and calls
:func:`invoke`, which asks the resource's permission hook and then its method.
A method returns a value (200), an iterator (streamed), ``None`` (404 for a read,
204 for a write) or a :class:`Response` for full control, and raises the errors
of :mod:`kiln.errors`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from kiln.errors import BadRequest, Forbidden, KilnError, MethodNotAllowed, NotFound
from kiln.keypath import key_to_segment, parse_key
from kiln.query import Query
from kiln.query.binder import bind
from kiln.query.executor import Results, matching_keys
from kiln.query.planner import Limits, plan_query
from kiln.query.relationships import related_tables
from kiln.records import RecordsAttribute, search, validated
from kiln.schema import Schema, TableDef
from kiln.storage.database import Database
from kiln.storage.keys import encode_key
from kiln.storage.operations import Delete, DeleteMatching, Insert, Patch, Put, Write
from kiln.storage.table import TableStore
from kiln.storage.writer import Writer
from kiln.transaction import transaction
from kiln.types import Key, Record, Version

SEAM_METHODS = ("get", "put", "post", "patch", "delete")
"""The methods of the seam that HTTP reaches, in the order ``Allow`` lists them."""

PERMISSION_OF = {
    "get": "allow_read",
    "put": "allow_update",
    "post": "allow_insert",
    "patch": "allow_update",
    "delete": "allow_delete",
}
"""Which permission hook guards each seam method."""

SIGNATURES = {
    "get": ("self", "target"),
    "put": ("self", "target", "data"),
    "post": ("self", "target", "data"),
    "patch": ("self", "target", "data"),
    "delete": ("self", "target"),
    "publish": ("self", "target", "message"),
    "subscribe": ("self", "target"),
    "connect": ("self", "target", "incoming"),
    "allow_read": ("self", "target"),
    "allow_insert": ("self", "target"),
    "allow_update": ("self", "target"),
    "allow_delete": ("self", "target"),
}
"""The one parameter list of each seam method and permission hook (``publish``,
``subscribe`` and ``connect`` are reserved for the real-time protocols)."""

_TARGET_ONLY = frozenset({"get", "delete"})
_WRITES = frozenset({"put", "post", "patch", "delete"})
_ALWAYS_STORABLE_LENGTH = 127
"""A string key this much shorter never exceeds LMDB's 511-byte key limit (4 bytes a char)."""


class Context(NamedTuple):
    """Who is asking and with which headers; ``response_headers`` collects headers to send.

    Immutable like every per-request object here; a NamedTuple rather than a frozen
    dataclass because it is built on every request and costs a quarter as much.
    """

    user: str | None
    headers: Mapping[str, str]
    response_headers: dict[str, str]


class RequestTarget(NamedTuple):
    """What a request points at.

    ``id`` is the record's key, or None for the collection (``is_collection``) or
    the resource itself. ``if_version`` carries an ``If-Match`` precondition.
    """

    path: str
    id: Key | None
    is_collection: bool
    query: Query
    context: Context
    if_version: Version | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """A result with its status and headers chosen by the resource; ``body`` is encoded."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


class Resource:
    """The base of every endpoint. Define any of the seam methods, sync or async.

    A sync method runs on the event loop's thread, so it must be quick (no
    blocking I/O); an async one is awaited. ``path`` names the route (the
    class name by default) and ``exported = False`` keeps a class off the
    routes; both apply to the class that sets them, not to its subclasses.

    Permission hooks return True here, and tables do not override them yet: the
    security issue fills them from roles.
    """

    path: ClassVar[str] = ""
    exported: ClassVar[bool] = True

    def allow_read(self, target: RequestTarget) -> bool:
        """May ``target.context.user`` read this?"""
        return True

    def allow_insert(self, target: RequestTarget) -> bool:
        """May ``target.context.user`` create records here?"""
        return True

    def allow_update(self, target: RequestTarget) -> bool:
        """May ``target.context.user`` change records here?"""
        return True

    def allow_delete(self, target: RequestTarget) -> bool:
        """May ``target.context.user`` delete records here?"""
        return True

    def parse_id(self, text: str) -> Key:
        """The id named by the (percent-decoded) rest of the path after ``/<path>/``."""
        return text

    def allowed_methods(self, target: RequestTarget) -> tuple[str, ...]:
        """The HTTP methods this resource answers at ``target``, as ``Allow`` lists them."""
        methods = [name.upper() for name in SEAM_METHODS if callable(getattr(self, name, None))]
        if "GET" in methods:
            methods.insert(methods.index("GET") + 1, "HEAD")
        return (*methods, "OPTIONS")


async def invoke(resource: Resource, method: str, target: RequestTarget, data: Any = None) -> Any:
    """Call ``method`` of ``resource`` after its permission hook; await it if it is async.

    Raises:
        MethodNotAllowed: the resource does not define ``method``.
        Forbidden: the permission hook said no.

    A write method runs inside a transaction: the ``records`` writes it makes commit
    together after it returns, or not at all if it raises.
    """
    handler = getattr(resource, method, None)
    if handler is None or method not in SEAM_METHODS:
        raise MethodNotAllowed(
            f"{target.path} does not answer {method.upper()}",
            allow=resource.allowed_methods(target),
        )
    hook = PERMISSION_OF[method]
    if not getattr(resource, hook)(target):
        raise Forbidden(f"{hook.removeprefix('allow_')} is not allowed on {target.path}")
    if method in _WRITES:
        async with transaction(target.context.user):
            return await _awaited(_call(handler, method, target, data))
    result = _call(handler, method, target, data)  # reads: no extra coroutine on the hot path
    if inspect.iscoroutine(result) or isinstance(result, asyncio.Future):
        return await result
    return result


def _call(handler: Any, method: str, target: RequestTarget, data: Any) -> Any:
    """The method's return value: a result, or an awaitable of one for an async method."""
    return handler(target) if method in _TARGET_ONLY else handler(target, data)


async def _awaited(result: Any) -> Any:
    """``result`` itself, or what it resolves to when a method was async."""
    if inspect.iscoroutine(result) or isinstance(result, asyncio.Future):
        return await result
    return result


class Table(Resource):
    """A table of the schema served as a resource: records by key, the collection, writes.

    One instance serves every request; it holds no per-request state.
    """

    definition: ClassVar[TableDef]
    schema: ClassVar[Schema]
    database: ClassVar[Database]
    store: ClassVar[TableStore]
    writer: ClassVar[Writer]
    limits: ClassVar[Limits] = Limits()
    records: ClassVar[RecordsAttribute] = RecordsAttribute()
    """``Dog.records``: get, put, create, patch, delete and search from code
    (:mod:`kiln.records`)."""
    computed_functions: ClassVar[dict[str, Callable[[Record], Any]]]
    """The functions registered with :meth:`computed`, by attribute; one dict per table,
    shared with its subclasses. :func:`kiln.app.load_app` hands them to the storage."""

    @classmethod
    def computed(
        cls, attribute: str
    ) -> Callable[[Callable[[Record], Any]], Callable[[Record], Any]]:
        """Register the function deriving the ``@computed`` ``attribute`` from a record::

            @tables.Person.computed("fullName")
            def full_name(record):
                return f"{record['first']} {record['last']}"

        The function gets the stored record (a dict, computed attributes left out)
        and must not change it; it runs on the writer's thread for an ``@indexed``
        attribute, so it must be quick and pure.

        Raises:
            KilnError: the schema does not declare ``attribute`` ``@computed``, or it
                has a function already.
        """
        definition = cls.definition
        declared = definition.attributes.get(attribute)
        if declared is None or not declared.computed:
            listed = ", ".join(f"`{name}`" for name in definition.computed)
            what = "has no attribute" if declared is None else "does not declare @computed"
            raise KilnError(
                f"{definition.name}.computed({attribute!r}): {cls.schema.file} {what} "
                f"`{attribute}` in `type {definition.name}`",
                hint=(f"its computed attributes are {listed}; " if listed else "")
                + f"declare it as `{attribute}: String @computed` in `type {definition.name}`",
            )
        functions = cls.computed_functions
        if attribute in functions:
            raise KilnError(
                f"{definition.name}.{attribute} has a computed function already "
                f"({functions[attribute].__name__})",
                hint="register one function per computed attribute; remove the other",
            )

        def register(function: Callable[[Record], Any]) -> Callable[[Record], Any]:
            if not callable(function):
                raise KilnError(
                    f"{definition.name}.computed({attribute!r}) decorates "
                    f"{type(function).__name__}, not a function",
                    hint="decorate `def name(record): return ...`",
                )
            functions[attribute] = function
            return function

        return register

    def get(self, target: RequestTarget) -> Record | Iterator[Record] | None:
        """The record at ``target.id``; for the collection, the query's results as a stream.

        ``explain()`` in the query answers the plan and its counts instead.
        """
        if target.is_collection:
            query = self._bound(target)
            if query.explain:
                return self.search(query, estimate=True).explain()
            return self.search(query)
        with self.database.read() as txn:
            found = self.store.get(txn, target.id)
        if found is None:
            return None
        version, record = found
        target.context.response_headers["ETag"] = f'"{version}"'
        return record

    async def put(self, target: RequestTarget, data: Any) -> None:
        """Replace the record at ``target.id`` with ``data`` (creating it if absent)."""
        key = self._record_key(target, "PUT")
        record = self._validated(data, key, partial=False)
        await self._write(Put(self.definition.name, key, record, target.if_version), target)

    async def post(self, target: RequestTarget, data: Any) -> Response:
        """Create a record in the collection, with the key from ``data`` or a generated one."""
        if not target.is_collection:
            raise MethodNotAllowed(
                f"POST creates records at the collection URL /{self.path}/, "
                f"not at {target.path}; use PUT to write one record",
                allow=self.allowed_methods(target),
            )
        record = self._validated(data, None, partial=False)
        key = record.pop(self.definition.primary_key, None)
        if key is not None:
            self._addressable(key)
        [result] = await self._write(Insert(self.definition.name, key, record), target)
        location = f"/{self.path}/{key_to_segment(result.key)}"
        return Response(201, {"Location": location, "ETag": f'"{result.version}"'}, result.record)

    async def patch(self, target: RequestTarget, data: Any) -> None:
        """Merge the attributes in ``data`` into the stored record at ``target.id``."""
        key = self._record_key(target, "PATCH")
        changes = self._validated(data, key, partial=True)
        changes.pop(self.definition.primary_key, None)
        await self._write(Patch(self.definition.name, key, changes, target.if_version), target)

    async def delete(self, target: RequestTarget) -> dict[str, int] | None:
        """Delete the record at ``target.id``, or every record the collection's query matches.

        A query's matches are chosen and deleted in one writer transaction.

        Raises:
            BadRequest: a DELETE of the collection without conditions.
        """
        if target.is_collection:
            query = self._bound(target)
            if query.explain:
                raise BadRequest(
                    "explain() shows how a GET would run; a DELETE does not take it",
                    hint=f"send GET /{self.path}/?...&explain() to see the plan first",
                )
            if query.where is None:
                raise BadRequest(
                    f"DELETE /{self.path}/ needs conditions to choose the records to delete",
                    hint="to delete every record on purpose, name them with a condition every "
                    f"record matches: DELETE /{self.path}/?{self._every_key()}",
                )
            plan = plan_query(query, self.definition, self.store, self.database.read, self.limits)
            store, max_rows, database = self.store, self.limits.max_sort_rows, self.database
            write = DeleteMatching(
                self.definition.name,
                lambda txn: matching_keys(plan, store, txn, max_rows, database),
            )
            return {"deleted": len(await self._write(write, target))}
        key = self._record_key(target, "DELETE")
        await self._write(Delete(self.definition.name, key, target.if_version), target)
        return None

    def _every_key(self) -> str:
        """A condition on the primary key that every record matches, as a URL query."""
        key = self.definition.primary_key
        if self.definition.primary_key_type in ("ID", "String"):
            return f"{key}=sw="
        if self.definition.primary_key_type == "Float":
            return f"{key}=ge=-1e308"
        return f"{key}=ge=-9223372036854775808"

    def search(self, query: Query, *, estimate: bool = False) -> Results:
        """The records matching the bound ``query``, streamed in short read transactions.

        Args:
            query: a query bound to this table (:func:`kiln.query.binder.bind`).
            estimate: count the driving index range even when there is no choice to make.

        Raises:
            BadRequest: no index can drive the query (and ``query.allowScans`` is off).
        """
        return search(type(self), query, estimate=estimate)

    def _bound(self, target: RequestTarget) -> Query:
        """The collection query of ``target`` bound to this table, dot paths through its
        relationships."""
        relationships = related_tables(self.schema, self.definition)
        return bind(target.query, self.definition, self.schema, relationships=relationships)

    def _record_key(self, target: RequestTarget, method: str) -> Key:
        if target.id is None:
            raise MethodNotAllowed(
                f"{method} needs a record URL like /{self.path}/<id>, not the collection",
                allow=self.allowed_methods(target),
            )
        return target.id

    def _validated(self, data: Any, key: Key | None, *, partial: bool) -> Record:
        return validated(self.definition, self.schema, data, key, partial=partial)

    async def _write(self, operation: Write, target: RequestTarget) -> list[Any]:
        receipt = await self.writer.execute([operation], target.context.user)
        return receipt.results

    def parse_id(self, text: str) -> Key:
        """The key named by ``text``, of the primary key's type.

        Raises:
            NotFound: ``text`` cannot be a key of this table (``abc`` for an Int key).
            BadRequest: the key is too long to store.
        """
        key_type = self.definition.primary_key_type
        try:
            key = parse_key(text, key_type)
        except ValueError as error:
            raise NotFound(
                f"no {self.definition.name} record has the key {text!r}: "
                f"its keys are {key_type} ({error})"
            ) from None
        return self._storable(key)

    def _addressable(self, key: Key) -> Key:
        """``key`` itself, once a URL can name it: POST must not create what GET cannot reach."""
        if isinstance(key, str) and (not key or key.endswith("/")):
            raise BadRequest(
                f"the {self.definition.primary_key} {key!r} cannot be a key: no URL could "
                "name it (keys are not empty and do not end with '/'); choose another or "
                "leave it out to generate one"
            )
        return self._storable(key)

    def allowed_methods(self, target: RequestTarget) -> tuple[str, ...]:
        """A collection answers reads and POST; a record answers reads and the other writes."""
        if target.is_collection:
            return ("GET", "HEAD", "POST", "DELETE", "OPTIONS")
        if target.id is None:
            return ("GET", "HEAD", "OPTIONS")
        return ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS")

    def _storable(self, key: Key) -> Key:
        """``key`` itself, once it is known to fit in the key store."""
        if not isinstance(key, str) or len(key) < _ALWAYS_STORABLE_LENGTH:
            return key  # numbers are range-checked already; short strings always fit
        try:
            encode_key(key)
        except ValueError as error:
            raise BadRequest(
                f"the {self.definition.primary_key} {str(key)[:40]!r}... cannot be stored: "
                f"{error}; use a shorter key"
            ) from None
        return key


def table_class(
    definition: TableDef,
    schema: Schema,
    database: Database,
    writer: Writer,
    limits: Limits | None = None,
) -> type:
    """A :class:`Table` subclass bound to one table's storage and query limits, named after it."""
    return type(
        definition.name,
        (Table,),
        {
            "__doc__": f"The {definition.name} table.",
            "path": definition.export_name or definition.name,
            "definition": definition,
            "schema": schema,
            "database": database,
            "store": database.tables[definition.name],
            "writer": writer,
            "limits": limits or Limits(),
            "computed_functions": {},
        },
    )
