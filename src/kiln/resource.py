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
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NamedTuple, cast

from kiln.auth.access import access_of, check_write, denied, readable_query
from kiln.auth.roles import TableAccess, User
from kiln.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HTTPError,
    KilnError,
    MethodNotAllowed,
    NotFound,
)
from kiln.keypath import REPLACEMENT, key_problem, key_to_segment, parse_key, shown_key
from kiln.query import Query, Selection
from kiln.query.binder import bind
from kiln.query.executor import Results, matching_keys, selected
from kiln.query.planner import Limits, plan_query
from kiln.query.relationships import related_tables
from kiln.realtime import ChangeBus, Event, Subscription, Topic
from kiln.records import RecordsAttribute, generated_key, queue, search, validated
from kiln.schema import Schema, TableDef
from kiln.storage.database import Database
from kiln.storage.operations import (
    Delete,
    DeleteMatching,
    Insert,
    Operation,
    Patch,
    Put,
    UniqueTaken,
    WriteResult,
)
from kiln.storage.table import TableStore
from kiln.storage.writer import Writer
from kiln.transaction import current, transaction
from kiln.types import Key, Precondition, Record, Version

SEAM_METHODS = ("get", "put", "post", "patch", "delete")
"""The methods of the seam that HTTP reaches, in the order ``Allow`` lists them."""

PERMISSION_OF = {
    "get": "allow_read",
    "put": "allow_update",
    "post": "allow_insert",
    "patch": "allow_update",
    "delete": "allow_delete",
    "subscribe": "allow_subscribe",
    "connect": "allow_subscribe",
    "publish": "allow_publish",
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
    "allow_subscribe": ("self", "target"),
    "allow_publish": ("self", "target"),
}
"""The one parameter list of each seam method and permission hook."""

_TARGET_ONLY = frozenset({"get", "delete", "subscribe"})
_WRITES = frozenset({"put", "post", "patch", "delete"})


class Context(NamedTuple):
    """Who is asking and with which headers; ``response_headers`` collects headers to send.

    Immutable like every per-request object here; a NamedTuple rather than a frozen
    dataclass because it is built on every request and costs a quarter as much.
    """

    user: User | None
    """Who asks: a name (None when anonymous) and a role; None without credentials when
    no ``anonymous`` role is declared."""
    headers: Mapping[str, str]
    response_headers: dict[str, str]


class SubscribeOptions(NamedTuple):
    """Where a subscription starts: a replay from the audit log, or the current records.

    ``since`` replays the events newer than that version (``startTime``,
    ``Last-Event-ID``); ``previous_count`` the last that-many events; otherwise
    the subscription starts with the current record(s) unless ``current`` is False.
    """

    since: Version | None = None
    previous_count: int | None = None
    current: bool = True

    @property
    def starts_with_current(self) -> bool:
        """Whether the history is the current records, in key order (not a replay, which
        comes in version order, each write a point to resume after)."""
        return self.since is None and self.previous_count is None and self.current


class RequestTarget(NamedTuple):
    """What a request points at.

    ``id`` is the record's key, or None for the collection (``is_collection``) or
    the resource itself; for a collection subscription it may be an id prefix
    ending in ``/`` (``/Dog/abc/`` listens to the ids that start with ``abc/``).
    ``if_version`` carries an ``If-Match`` precondition and ``subscription`` the
    start of a subscription.
    """

    path: str
    id: Key | None
    is_collection: bool
    query: Query
    context: Context
    if_version: Precondition | None = None
    subscription: SubscribeOptions = SubscribeOptions()


@dataclass(frozen=True, slots=True)
class Response:
    """A result with its status and headers chosen by the resource.

    ``body`` is encoded in the negotiated format, except bytes or text sent with a
    ``Content-Type`` header of the resource's own, which go out as they are (an
    HTML page, an image).
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


class Resource:
    """The base of every endpoint. Define any of the seam methods, sync or async.

    A sync method runs on the event loop's thread, so it must be quick (no
    blocking I/O); an async one is awaited. ``path`` names the route (the
    class name by default) and ``exported = False`` keeps a class off the
    routes; both apply to the class that sets them, not to its subclasses.

    Permission hooks allow any authenticated user here (a request with valid
    credentials or token); override them to decide otherwise. Tables answer them
    from the roles of ``config.yaml``.
    """

    path: ClassVar[str] = ""
    exported: ClassVar[bool] = True
    bus: ClassVar[ChangeBus | None] = None
    """The app's change bus, set when the app loads (one app per process)."""

    def allow_read(self, target: RequestTarget) -> bool:
        """May ``target.context.user`` read this?"""
        return _authenticated(target)

    def allow_insert(self, target: RequestTarget) -> bool:
        """May ``target.context.user`` create records here?"""
        return _authenticated(target)

    def allow_update(self, target: RequestTarget) -> bool:
        """May ``target.context.user`` change records here?"""
        return _authenticated(target)

    def allow_delete(self, target: RequestTarget) -> bool:
        """May ``target.context.user`` delete records here?"""
        return _authenticated(target)

    def allow_subscribe(self, target: RequestTarget) -> bool:
        """May ``target.context.user`` subscribe here (Server-Sent Events, WebSocket, MQTT)?"""
        return _authenticated(target)

    def allow_publish(self, target: RequestTarget) -> bool:
        """May ``target.context.user`` publish messages here?"""
        return _authenticated(target)

    def subscribe(self, target: RequestTarget) -> Subscription:
        """The messages published to ``target`` (a plain resource stores nothing to replay).

        Override it to filter or enrich: return any (async) iterator of
        :class:`~kiln.realtime.Event` objects or plain values (sent as messages).
        """
        return _bus(self).subscribe(_topic("/" + self.path, target), None)

    def publish(self, target: RequestTarget, message: Any) -> None:
        """Deliver ``message`` to the subscribers of ``target`` without storing anything."""
        _bus(self).publish("/" + self.path, target.id, message, None)

    def connect(self, target: RequestTarget, incoming: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A two-way connection (WebSocket): what to send, given what the client sends.

        By default: the subscription of ``target``, while each incoming message is
        published to ``target`` (when :meth:`allow_publish` says yes). Override it
        for chat, presence and other two-way apps.
        """
        return _two_way(self, target, incoming)

    def parse_id(self, text: str) -> Key:
        """The id named by the (percent-decoded) rest of the path after ``/<path>/``."""
        return text

    def allowed_methods(self, target: RequestTarget) -> tuple[str, ...]:
        """The HTTP methods this resource answers at ``target``, as ``Allow`` lists them."""
        methods = [name.upper() for name in SEAM_METHODS if callable(getattr(self, name, None))]
        if "GET" in methods:
            methods.insert(methods.index("GET") + 1, "HEAD")
        return (*methods, "OPTIONS")


async def invoke(
    resource: Resource,
    method: str,
    target: RequestTarget,
    data: Any = None,
    *,
    authorized: bool = False,
) -> Any:
    """Call ``method`` of ``resource`` after its permission hook (unless the caller asked it
    already: ``authorized``); await it if it is async.

    Raises:
        MethodNotAllowed: the resource does not define ``method``.
        Unauthorized: the permission hook said no to a request without credentials.
        Forbidden: the permission hook said no to a user, or a table's write names an
            attribute the user's role may not write.

    A write method runs inside a transaction: the ``records`` writes it makes, and
    those of a table's own methods it calls (``super().put(target, data)``), commit
    together after it returns, or not at all if it raises. A table's own write method
    called here directly is one writer job, so it runs without one.
    """
    handler = getattr(resource, method, None)
    if handler is None or method not in PERMISSION_OF:
        raise MethodNotAllowed(
            f"{target.path} does not answer {method.upper()}",
            allow=resource.allowed_methods(target),
        )
    if not authorized:
        authorize(resource, method, target)
    if method in _WRITES:
        if isinstance(resource, Table) and method != "delete":
            permission = "insert" if method == "post" else "update"
            user, table = target.context.user, resource.definition
            check_write(user, table, permission, data, replaces=method == "put")
        if getattr(handler, "__func__", None) in _OWN_WRITES:
            return await _call(handler, method, target, data)
        try:
            async with transaction(user_name(target)):
                return await _awaited(_call(handler, method, target, data))
        except UniqueTaken as taken:  # a write of the method's, committed with the transaction
            raise _as_told(taken, target) from None
    result = _call(handler, method, target, data)  # reads: no extra coroutine on the hot path
    if inspect.iscoroutine(result) or isinstance(result, asyncio.Future):
        return await result
    return result


def authorize_first(resource: Resource, method: str, target: RequestTarget) -> bool:
    """Ask the permission hook of ``method`` before a protocol reads or decodes the data
    for it, so a client that may not write costs nothing of what it sends; pass the
    result to :func:`invoke` as ``authorized``. False when ``resource`` has no such
    method (:func:`invoke` then refuses it with 405).

    Raises:
        HTTPError: the hook said no, as :func:`authorize`.
    """
    if not callable(getattr(resource, method, None)):
        return False
    authorize(resource, method, target)
    return True


def _as_told(taken: UniqueTaken, target: RequestTarget) -> Conflict:
    """``taken`` as the user of ``target`` may hear it: without the record holding the
    value when the user's role may not read the attribute (it would tell who has it)."""
    readable = access_of(target.context.user, taken.table).readable
    return taken if readable is None or taken.attribute in readable else taken.without_holder()


def authorize(resource: Resource, method: str, target: RequestTarget) -> None:
    """Ask the permission hook guarding ``method`` (a seam method); refuse if it says no.

    Raises:
        Unauthorized: it said no to a request without credentials (``WWW-Authenticate``).
        Forbidden: it said no to a user; the detail names the permission the role lacks,
            or the hook of resources.py that refused what the role grants.
    """
    hook = PERMISSION_OF[method]
    if getattr(resource, hook)(target):
        return
    user = target.context.user
    permission = hook.removeprefix("allow_")
    what = target.path
    refuser = _overridden_hook(resource, hook)
    if isinstance(resource, Table):
        what = f"`{resource.definition.name}`"
        granted = _TABLE_PERMISSION.get(hook, permission)  # subscribing reads; publishing updates
        if not getattr(access_of(user, resource.definition.name), granted):
            raise denied(user, granted, what)  # the role lacks it
    if refuser is not None and user is not None and user.authenticated:
        raise Forbidden(
            f"`{type(resource).__name__}.{refuser}` refused `{permission}` on {target.path}",
            hint=f"a rule of the app's resources.py, not of the role: see {refuser} there",
        )
    raise denied(user, permission, what)


def _overridden_hook(resource: Resource, hook: str) -> str | None:
    """The hook of ``resource``'s class that decides ``hook`` and is the app's own: ``hook``
    itself, or for a table's real-time hooks the one they ask (``allow_read`` decides
    ``allow_subscribe``); None when kiln's own rule decided."""
    base = Table if isinstance(resource, Table) else Resource
    cls = type(resource)
    if getattr(cls, hook) is not getattr(base, hook):
        return hook
    asked = _ASKED_HOOK.get(hook) if base is Table else None
    if asked is not None and getattr(cls, asked) is not getattr(base, asked):
        return asked
    return None


_TABLE_PERMISSION = {"allow_subscribe": "read", "allow_publish": "update"}
"""The role permission a table's real-time hooks stand for (what a refusal names)."""

_ASKED_HOOK = {"allow_subscribe": "allow_read", "allow_publish": "allow_update"}
"""The hook a table's real-time hook asks (:meth:`Table.allow_subscribe`)."""


def user_name(target: RequestTarget) -> str | None:
    """The name of the user ``target`` comes from, for the audit log; None if anonymous."""
    user = target.context.user
    return None if user is None else user.name


def _authenticated(target: RequestTarget) -> bool:
    """Whether the request proved who it is: a plain resource's default permission."""
    user = target.context.user
    return user is not None and user.name is not None


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
    shared with its subclasses and with its store (:func:`table_class`)."""
    related: ClassVar[dict[str, TableDef]]
    """Relationship name → the table it leads to: what the binder takes for dot paths."""

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
                has a function already; from the decorator, the function is async or
                cannot be called with the record alone.
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
            _check_computed_function(function, f"{definition.name}.computed({attribute!r})")
            functions[attribute] = function
            return function

        return register

    def get(self, target: RequestTarget) -> Any:
        """The record at ``target.id``; for the collection, the query's results as a stream.

        ``explain()`` in the query answers the plan and its counts instead; ``select()``
        on a record URL shapes the record as it shapes each record of a collection.
        """
        if target.is_collection:
            query = self._bound(target)
            if query.explain:
                return self.search(query, estimate=True).explain()
            results = self.search(query)
            access = self._access(target)
            if query.select is None and access.readable is not None:  # else it sees all
                results.view = access.view
            return results
        if target.query.select is not None:
            return self._selected(target)
        with self.database.read() as txn:
            found = self.store.get(txn, target.id)
        if found is None:
            return None
        version, record = found
        target.context.response_headers["ETag"] = f'"{version}"'
        return self._access(target).view(record)

    def _selected(self, target: RequestTarget) -> Any:
        """The record at ``target.id`` shaped by the URL's ``select()``, or None if absent.

        Computed attributes it names are derived and relationships read, as for the
        collection. The ETag is the record's unless the answer holds related records.
        A selected value that is null answers 204: a 200 needs a body to encode.
        """
        relationships = self.related
        query = self._readable(target, Query(select=target.query.select))  # conditions ignored
        bound = bind(query, self.definition, self.schema, relationships=relationships)
        selection = cast(Selection, bound.select)  # binding keeps the selection it was given
        with self.database.read() as txn:
            found = self.store.get(txn, target.id)
            if found is None:
                return None
            version, record = found
            result = selected(selection, self.store, self.database, txn, record)
        if not any(item.name in self.definition.relationships for item in selection.fields):
            target.context.response_headers["ETag"] = f'"{version}"'
        return Response(204) if result is None else result

    async def put(self, target: RequestTarget, data: Any) -> None:
        """Replace the record at ``target.id`` with ``data`` (creating it if absent, when the
        user may insert: else 403)."""
        key = self._record_key(target, "PUT")
        record = self._validated(data, key, partial=False)
        may_create = self.allow_insert(target)  # else only an existing record is replaced
        put = Put(self.definition.name, key, record, target.if_version, may_create)
        await self._write(put, target)

    async def post(self, target: RequestTarget, data: Any) -> Response:
        """Create a record in the collection, with the key from ``data`` or a generated one.

        In a transaction a missing key is generated now, as ``records.create`` does, and
        the answer has no ETag (the version exists once the transaction commits).
        """
        if not target.is_collection:
            raise MethodNotAllowed(
                f"POST creates records at the collection URL /{self.path}/, "
                f"not at {target.path}; use PUT to write one record",
                allow=self.allowed_methods(target),
            )
        primary_key = self.definition.primary_key
        record = self._validated(data, None, partial=False)
        key = record.pop(primary_key, None)
        if key is not None:
            self._addressable(key)
        elif current() is not None:
            key = generated_key(type(self))  # the answer names it before the commit
        results = await self._write(Insert(self.definition.name, key, record), target)
        if not results:  # joined a transaction: the version exists once it commits
            location = f"/{self.path}/{key_to_segment(key)}"
            return Response(201, {"Location": location}, {**record, primary_key: key})
        [result] = results
        location = f"/{self.path}/{key_to_segment(result.key)}"
        record = self._access(target).view(result.record)
        return Response(201, {"Location": location, "ETag": f'"{result.version}"'}, record)

    async def patch(self, target: RequestTarget, data: Any) -> None:
        """Merge the attributes in ``data`` into the stored record at ``target.id``."""
        key = self._record_key(target, "PATCH")
        changes = self._validated(data, key, partial=True)
        changes.pop(self.definition.primary_key, None)
        await self._write(Patch(self.definition.name, key, changes, target.if_version), target)

    async def delete(self, target: RequestTarget) -> dict[str, int] | None:
        """Delete the record at ``target.id``, or every record the collection's query matches.

        A query's matches are chosen and deleted in one writer transaction; in a
        transaction, they are chosen now (its own writes included) and deleted at its
        commit, which fails with 404 if one of them is gone by then.

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
            if current() is not None:
                primary_key = self.definition.primary_key
                keys = [found[primary_key] for found in self.search(replace(query, select=None))]
                for key in keys:
                    queue(type(self), Delete(self.definition.name, key))
                return {"deleted": len(keys)}
            database = self.database
            plan = plan_query(
                query, self.definition, self.store, database.read, self.limits, database=database
            )
            store, max_rows = self.store, self.limits.max_sort_rows
            write = DeleteMatching(
                self.definition.name,
                lambda txn: matching_keys(plan, store, txn, max_rows, database),
            )
            receipt = await self.writer.execute([write], user_name(target))
            return {"deleted": len(receipt.results)}
        key = self._record_key(target, "DELETE")
        await self._write(Delete(self.definition.name, key, target.if_version), target)
        return None

    def subscribe(self, target: RequestTarget) -> Subscription | AsyncIterator[Event]:
        """The changes of the record, id prefix or collection at ``target``, after its
        current record(s) or a replay from the audit log (``target.subscription``).

        A role that may read only some attributes gets every record event with the
        others left out (messages are not records: they go out as published).
        """
        options = target.subscription
        subscription = _bus(self).subscribe(
            _topic(self.definition.name, target),
            self.definition.database,
            since=options.since,
            previous_count=options.previous_count,
            current=options.current,
        )
        access = access_of(target.context.user, self.definition.name)
        if access.readable is None:
            return subscription
        return _viewed(subscription, access.view)

    def publish(self, target: RequestTarget, message: Any) -> None:
        """Deliver ``message`` to the subscribers of the record at ``target``; the record
        stays as it is (the message is logged, not stored as data).

        Raises:
            MethodNotAllowed: ``target`` is not a record.
        """
        key = self._record_key(target, "publishing")
        _bus(self).publish(self.definition.name, key, message, self.definition.database)

    def allow_read(self, target: RequestTarget) -> bool:
        """Whether the user's role grants ``read`` on this table (``roles`` in config.yaml)."""
        return self._access(target).read

    def allow_insert(self, target: RequestTarget) -> bool:
        """Whether the user's role grants ``insert`` on this table."""
        return self._access(target).insert

    def allow_update(self, target: RequestTarget) -> bool:
        """Whether the user's role grants ``update`` on this table."""
        return self._access(target).update

    def allow_delete(self, target: RequestTarget) -> bool:
        """Whether the user's role grants ``delete`` on this table."""
        return self._access(target).delete

    def _access(self, target: RequestTarget) -> TableAccess:
        """What the user of ``target`` may do with this table."""
        return access_of(target.context.user, self.definition.name)

    def allow_subscribe(self, target: RequestTarget) -> bool:
        """Subscribing reads: it is allowed to whoever may read."""
        return self.allow_read(target)

    def allow_publish(self, target: RequestTarget) -> bool:
        """Publishing a message to a record is allowed to whoever may change it."""
        return self.allow_update(target)

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
        relationships = self.related
        query = self._readable(target, target.query)
        return bind(query, self.definition, self.schema, relationships=relationships)

    def _readable(self, target: RequestTarget, query: Query) -> Query:
        """``query`` checked against what the user may read, ``select()`` narrowed to it
        (before binding, so that no error names a hidden attribute)."""
        relationships = self.related
        return readable_query(target.context.user, self.definition, relationships, query)

    def _record_key(self, target: RequestTarget, method: str) -> Key:
        if target.id is None:
            raise MethodNotAllowed(
                f"{method} needs a record URL like /{self.path}/<id>, not the collection",
                allow=self.allowed_methods(target),
            )
        return target.id

    def _validated(self, data: Any, key: Key | None, *, partial: bool) -> Record:
        return validated(self.definition, self.schema, data, key, partial=partial)

    async def _write(self, operation: Operation, target: RequestTarget) -> list[WriteResult]:
        """Commit ``operation`` as one writer job, its results; in a transaction, add it
        there instead (committed with the transaction's other writes) and return []."""
        if queue(type(self), operation):
            return []
        try:
            return (await self.writer.execute([operation], user_name(target))).results
        except UniqueTaken as taken:
            raise _as_told(taken, target) from None

    def parse_id(self, text: str) -> Key:
        """The key named by ``text``, of the primary key's type.

        Raises:
            NotFound: ``text`` cannot be a key of this table (``abc`` for an Int key).
            BadRequest: the key is too long to store, or its %-escapes are not UTF-8.
        """
        if REPLACEMENT in text:
            raise BadRequest(
                f"the key in {self.path}/{text} is not UTF-8 text once its %-escapes are "
                "decoded (or holds U+FFFD, which kiln cannot tell from an escape that is not "
                "UTF-8); percent-encode the UTF-8 bytes of the key"
            )
        key_type = self.definition.primary_key_type
        try:
            key = parse_key(text, key_type)
        except ValueError as error:
            raise NotFound(
                f"no {self.definition.name} record has the key {shown_key(text)}, and none can: "
                f"its keys are {key_type} ({error})"
            ) from None
        problem = key_problem(key)
        if problem is not None:
            raise BadRequest(
                f"{shown_key(text)} cannot be a {self.definition.name} key: {problem}; "
                "use a shorter key"
            )
        return key

    def _addressable(self, key: Key) -> Key:
        """``key`` itself, once a URL can name it and the store hold it: POST must not create
        what GET cannot reach."""
        problem = key_problem(key)
        if problem is not None:
            raise BadRequest(
                f"the {self.definition.primary_key} {shown_key(key)} cannot be a key: {problem}; "
                "choose another or leave it out to generate one"
            )
        return key

    def allowed_methods(self, target: RequestTarget) -> tuple[str, ...]:
        """A collection answers reads and POST; a record answers reads and the other writes."""
        if target.is_collection:
            return ("GET", "HEAD", "POST", "DELETE", "OPTIONS")
        if target.id is None:
            return ("GET", "HEAD", "OPTIONS")
        return ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS")


def as_written(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` without its annotations, for a message: the parameters as written,
    ``*`` and ``/`` included."""
    return signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
        return_annotation=signature.empty,
    )


def _check_computed_function(function: Callable[..., Any], registering: str) -> None:
    """``function`` can derive a computed value: kiln calls it with the record alone and
    does not await it.

    Raises:
        KilnError: it is async, or cannot be called with one positional argument.
    """
    name = getattr(function, "__name__", type(function).__name__)
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise KilnError(
            f"{registering} decorates async {name}, but kiln calls it on the writer's thread "
            "and never awaits it",
            hint=f"make it a plain `def {name}(record): return ...` that computes the value",
        )
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin that tells no signature: take it as it is
        return
    try:
        signature.bind(None)
    except TypeError:
        raise KilnError(
            f"{registering} decorates {name}{as_written(signature)}, but kiln calls it with "
            "one argument, the record",
            hint=f"define it as `def {name if name.isidentifier() else 'compute'}(record): "
            "return ...`",
        ) from None


def _bus(resource: Resource) -> ChangeBus:
    bus = resource.bus
    if bus is None:
        raise KilnError(
            f"{type(resource).__name__} has no change bus: real-time methods work in a "
            "served app (kiln run, kiln dev)",
        )
    return bus


def _topic(channel: str, target: RequestTarget) -> Topic:
    """The topic a subscription target names: a record, an id prefix or the collection."""
    if not target.is_collection:
        return Topic(channel, target.id)
    return Topic(channel, None, target.id if isinstance(target.id, str) else None)


async def _viewed(
    subscription: Subscription, view: Callable[[Record], Record]
) -> AsyncIterator[Event]:
    """The events of ``subscription`` with each record (and patch) narrowed by ``view``."""
    try:
        async for event in subscription:
            if event.type in ("put", "patch", "delete") and isinstance(event.value, dict):
                patch = None if event.patch is None else view(event.patch)
                event = Event(event.type, event.id, event.version, view(event.value), patch)
            yield event
    finally:
        subscription.close()


async def _two_way(
    resource: Resource, target: RequestTarget, incoming: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """The default :meth:`Resource.connect`: the subscription out, incoming messages published.

    A message the user may not publish (or one sent to a collection URL, where
    tables take none) is answered with an ``error`` event; the connection stays open.
    """
    outgoing = await _awaited(resource.subscribe(target))
    merged: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)  # a slow client backs up outgoing
    ended = object()

    async def pump() -> None:
        try:
            async for event in outgoing:
                await merged.put(event)
        except Exception as error:  # a subscribe override failed: raised to the adapter
            await merged.put(error)
        await merged.put(ended)

    async def forward() -> None:
        async for message in incoming:
            try:
                authorize(resource, "publish", target)
                await _awaited(resource.publish(target, message))
            except HTTPError as error:  # refused (or a collection URL): say so, carry on
                await merged.put(Event("error", target.id, 0, error.detail))

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(pump()), loop.create_task(forward())]
    try:
        while (event := await merged.get()) is not ended:
            if isinstance(event, Exception):
                raise event
            yield event
    finally:
        for task in tasks:
            task.cancel()
        # The pump may be inside ``outgoing`` still: closing it before the pump has
        # stopped would fail ("aclose(): asynchronous generator is already running").
        await asyncio.gather(*tasks, return_exceptions=True)
        close = getattr(outgoing, "aclose", None)
        if close is not None:
            await close()


_OWN_WRITES = frozenset({Table.put, Table.post, Table.patch, Table.delete})
"""A table's own write methods: :func:`invoke` calls them without a transaction (each is
one writer job), but they join one that a method overriding them opened."""


def table_class(
    definition: TableDef,
    schema: Schema,
    database: Database,
    writer: Writer,
    limits: Limits | None = None,
) -> type:
    """A :class:`Table` subclass bound to one table's storage and query limits, named after it.

    Its ``computed_functions`` is its store's own dict, so a function registered while
    ``resources.py`` imports derives (and indexes) every write made after that.
    """
    store = database.tables[definition.name]
    return type(
        definition.name,
        (Table,),
        {
            "__doc__": f"The {definition.name} table.",
            "path": definition.export_name or definition.name,
            "definition": definition,
            "schema": schema,
            "database": database,
            "store": store,
            "writer": writer,
            "limits": limits or Limits(),
            "computed_functions": store.computed,
            "related": related_tables(schema, definition),
        },
    )
