"""The REST adapter: an HTTP request → (resource, target, method, body) → an HTTP response.

It translates and does nothing else: permission checks and data access happen
behind :func:`kiln.resource.invoke`, credentials are read by
:mod:`kiln.auth.authenticate` and ``/_auth/...`` is :mod:`kiln.http.tokens`. Every
other URL the server answers is decided in :meth:`RestHandler.route`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from granian.rsgi import ProtocolClosed

from kiln.app import App
from kiln.auth.access import access_of
from kiln.auth.roles import User
from kiln.errors import (
    BadRequest,
    Forbidden,
    HTTPError,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
)
from kiln.http import tokens, websocket
from kiln.http.caching import if_match_version, last_modified, not_modified
from kiln.http.compression import compress, compress_stream
from kiln.http.cross_origin import is_preflight, preflight, with_cors
from kiln.http.description import describe_table, health
from kiln.http.events import stream_events, subscribe_options, wants_events
from kiln.http.formats import JSON, Columns, Format, encode_if_small, encode_stream
from kiln.http.negotiation import content_coding, request_format, response_format
from kiln.http.problems import as_http_error, problem_response
from kiln.query import Query, parse_query
from kiln.query.executor import Results
from kiln.realtime import Event
from kiln.resource import (
    Context,
    RequestTarget,
    Resource,
    Response,
    Table,
    authorize,
    authorize_first,
    invoke,
)
from kiln.types import MATCH_NONE

METHOD_OF = {
    "GET": "get",
    "HEAD": "get",
    "PUT": "put",
    "POST": "post",
    "PATCH": "patch",
    "DELETE": "delete",
}
"""HTTP method → seam method."""

CREDENTIALS_RECHECK = 0.5
"""Seconds between checks that an open stream's user still holds (see
:meth:`RestHandler._while_credentials_hold`)."""

READS = frozenset({"GET", "HEAD"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing: answered to any origin (CORS decides what a page may read)."""
ANSWERED_WITH_A_BODY = frozenset({"get", "post"})
"""Seam methods whose result is a body: an ``Accept`` nothing satisfies is refused up front."""

CLIENT_CLOSED_REQUEST = 499
"""The status logged for a request whose client went away before its answer (nginx's
"client closed request"); nothing is sent."""

_NO_QUERY = Query()
_COUNT_APPLIED = ("preference-applied", "count=exact")

log = logging.getLogger("kiln.http")
access_log = logging.getLogger("kiln.access")


class RestHandler:
    """Answers HTTP requests for one loaded :class:`App` (the RSGI ``__rsgi__`` callable)."""

    def __init__(self, app: App):
        self.app = app
        self.routes: Mapping[str, Resource] = app.routes
        self.max_body_size = app.config.http.max_body_size
        self.compression_threshold = app.config.http.compression_threshold
        self.log_access = app.config.http.access_log
        self.authenticator = app.security.authenticator
        self.cors = app.security.cors

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        """The RSGI entry point: one HTTP request."""
        if scope.proto == "ws":
            await websocket.serve(
                protocol, lambda incoming: self._connect(scope, incoming), self.max_body_size
            )
            return
        started = time.perf_counter()
        origin = scope.headers.get("origin")
        if origin is not None:
            protocol = with_cors(self.cors, origin, protocol)
        try:
            status = await self.handle(scope, protocol)
        except _StreamFailed:
            status = 500
        except ProtocolClosed:  # granian's word that the connection is gone (mid-body, mid-stream)
            status = CLIENT_CLOSED_REQUEST
            log.debug("%s %s: the client went away before the answer", scope.method, scope.path)
        except Exception as error:
            status, headers, body = problem_response(error)
            protocol.response_bytes(status, headers, body)
        if self.log_access:
            access_log.info(
                "%s %s %d %.2fms",
                scope.method,
                scope.path,
                status,
                (time.perf_counter() - started) * 1000,
            )

    async def handle(self, scope: Any, protocol: Any) -> int:
        """Authenticate, route and answer one request; returns the status sent.

        ``/_health`` and ``/_auth/...`` (kiln's own) and CORS preflights need no credentials.
        """
        method = scope.method
        headers = scope.headers
        if is_preflight(method, headers):
            return preflight(self.cors, scope, protocol)
        origin = headers.get("origin")
        if (
            origin is not None
            and method not in SAFE_METHODS
            and not self.cors.origin_allowed(origin, headers.get("host"))
        ):
            # A "simple" cross-origin request (a form post, a fetch without Content-Type)
            # needs no preflight: the browser sends it and only hides the answer, so refuse
            # to act on it at all, before reading credentials or the body.
            raise Forbidden(
                f"pages from {origin} may not write here",
                hint="add the origin to http.cors in config.yaml",
            )
        path = scope.path
        if path.startswith("/_auth/"):
            return await tokens.answer(
                self.authenticator, scope, protocol, lambda: self._read_body(scope, protocol)
            )
        user = None
        if path != "/_health":
            user = await self.authenticator.authenticate(
                scope.headers.get("authorization"), scope.client, scope.headers.get("host") or ""
            )
        subscribing = method == "GET" and wants_events(scope.headers.get("accept"))
        resource, target = self.route(scope, user, subscribing=subscribing)
        if resource is None:
            return self._health(protocol, method, scope.headers)
        if subscribing:
            events = await invoke(resource, "subscribe", target)
            events = self._while_credentials_hold(events, scope, user)
            await stream_events(
                protocol,
                events,
                self.app.config.realtime.heartbeat,
                resumable=not target.subscription.starts_with_current,
            )
            return 200
        if method == "OPTIONS":
            allow = ", ".join(resource.allowed_methods(target))
            protocol.response_empty(204, [("allow", allow)])
            return 204
        if target.id is None and not target.is_collection and isinstance(resource, Table):
            return self._describe(protocol, method, resource, target)
        seam_method = METHOD_OF.get(method)
        if seam_method is None:
            raise MethodNotAllowed(
                f"{method} is not a method kiln answers", allow=resource.allowed_methods(target)
            )
        headers = target.context.headers
        accept = headers.get("accept")
        if seam_method in ANSWERED_WITH_A_BODY:
            fmt = response_format(accept)
        else:  # a write that answers with a body anyway falls back to JSON, not to a 406
            try:
                fmt = response_format(accept)
            except NotAcceptable:
                fmt = JSON
        data = None
        authorized = False
        if method not in READS and seam_method != "delete":
            authorized = authorize_first(resource, seam_method, target)
            reader = request_format(headers.get("content-type"))
            data = reader.decode(await self._read_body(scope, protocol))
        result = await invoke(resource, seam_method, target, data, authorized=authorized)
        return await self._respond(protocol, method, seam_method, target, result, fmt, resource)

    def route(
        self, scope: Any, user: User | None = None, *, subscribing: bool = False
    ) -> tuple[Resource | None, RequestTarget]:
        """The resource and target a request of ``user`` names; (None, ...) for ``/_health``.

        A ``subscribing`` request (Server-Sent Events, WebSocket) takes the
        subscription parameters instead of a query, and may name an id prefix
        (``/Dog/abc/``).

        Raises:
            NotFound: no route, or an id the resource cannot have.
            BadRequest: a subscribing request with query conditions.
        """
        path = scope.path
        name, slash, rest = path[1:].partition("/")
        resource = self.routes.get(name)
        if resource is None:
            if path == "/_health":
                return None, RequestTarget(path, None, False, _NO_QUERY, Context(None, {}, {}))
            routes = ", ".join(f"/{route}/" for route in self.routes) or "none"
            raise NotFound(f"no resource at {path}; the routes are: {routes}")
        headers = scope.headers
        context = Context(user, headers, {})
        if subscribing:
            return resource, _subscription_target(scope, resource, path, slash, rest, context)
        query = parse_query(scope.query_string) if scope.query_string else _NO_QUERY
        if not slash:
            return resource, RequestTarget(path, None, False, query, context)
        if not rest:
            return resource, RequestTarget(path, None, True, query, context)
        if rest.endswith("/"):
            raise NotFound(
                f"no resource at {path}: a record id cannot end with '/'; an id prefix "
                "like this names records only for a subscription (Server-Sent Events, "
                "WebSocket)"
            )
        key = resource.parse_id(rest)
        if_version = if_match_version(headers.get("if-match"))
        if if_version is None and "if-match" in headers:
            if_version = 0  # present but unreadable (granian gives None for non-ASCII): no match
        elif (
            if_version is None
            and scope.method not in READS
            and (headers.get("if-none-match") or "").strip() == "*"
        ):
            if_version = MATCH_NONE  # create only
        return resource, RequestTarget(path, key, False, query, context, if_version)

    async def _connect(self, scope: Any, incoming: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The events a WebSocket connection sends: its resource's ``connect``.

        Raises:
            Forbidden: a browser page of an origin ``http.cors`` does not allow.
        """
        origin = scope.headers.get("origin")
        if not self.cors.origin_allowed(origin, scope.headers.get("host")):
            raise Forbidden(
                f"pages from {origin} may not connect here",
                hint="add the origin to http.cors in config.yaml",
            )
        authorization = scope.headers.get("authorization")
        host = scope.headers.get("host") or ""
        user = await self.authenticator.authenticate(authorization, scope.client, host)
        resource, target = self.route(scope, user, subscribing=True)
        if resource is None:
            raise NotFound("/_health is not a subscription; connect to a record or collection")
        events = await invoke(resource, "connect", target, incoming)
        return self._while_credentials_hold(events, scope, user)

    async def _while_credentials_hold(
        self, events: AsyncIterator[Any], scope: Any, user: User | None
    ) -> AsyncIterator[Any]:
        """``events``, until the stream's user is removed, changes password or role.

        Checked before an event goes out, at most every :data:`CREDENTIALS_RECHECK`
        seconds (the check reads the credential cache and the store's epoch), so a
        revoked user stops hearing changes at once, not when it reconnects. The stream
        then ends with an ``error`` event.
        """
        authorization = scope.headers.get("authorization")
        loop = asyncio.get_running_loop()
        checked = loop.time()
        try:
            async for event in events:
                if user is not None and loop.time() - checked >= CREDENTIALS_RECHECK:
                    checked = loop.time()
                    try:
                        current = await self.authenticator.authenticate(
                            authorization, scope.client, scope.headers.get("host") or ""
                        )
                    except HTTPError:
                        current = None
                    if current != user:
                        yield Event(
                            "error",
                            None,
                            0,
                            "the credentials of this stream changed (the user was removed, "
                            "or its password or role changed); connect again",
                        )
                        return
                yield event
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def _read_body(self, scope: Any, protocol: Any) -> bytes:
        limit = self.max_body_size
        declared = scope.headers.get("content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                raise _too_large(limit)
            return await protocol()
        chunks: list[bytes] = []
        size = 0
        async for chunk in protocol:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _health(self, protocol: Any, method: str, headers: Mapping[str, str]) -> int:
        if method == "OPTIONS":
            protocol.response_empty(204, [("allow", "GET, HEAD, OPTIONS")])
            return 204
        if method not in READS:
            raise MethodNotAllowed("/_health only answers reads", allow=("GET", "HEAD", "OPTIONS"))
        return self._send(protocol, method, 200, [], health(self.app), JSON, None, headers)

    def _describe(self, protocol: Any, method: str, resource: Resource, target: Any) -> int:
        if method not in READS or not isinstance(resource, Table):
            raise MethodNotAllowed(
                f"{target.path} describes the resource; add a '/' for its records ({target.path}/)",
                allow=("GET", "HEAD", "OPTIONS"),
            )
        authorize(resource, "get", target)
        readable = access_of(target.context.user, resource.definition.name).readable
        description = describe_table(resource, readable)
        return self._send(
            protocol, method, 200, [], description, JSON, None, target.context.headers
        )

    async def _respond(
        self,
        protocol: Any,
        method: str,
        seam_method: str,
        target: RequestTarget,
        result: Any,
        fmt: Format,
        resource: Resource,
    ) -> int:
        """Turn a seam method's result into the response; the one place status is decided."""
        request_headers = target.context.headers
        extra = target.context.response_headers
        columns = _columns(resource, target) if fmt.tabular else None
        if type(result) is dict:
            etag = extra.get("ETag")
            if etag is not None:
                modified = last_modified(etag)
                if modified is not None:
                    extra["Last-Modified"] = modified
                if method in READS and not_modified(request_headers.get("if-none-match"), etag):
                    protocol.response_empty(304, [("vary", "Accept"), *extra.items()])
                    return 304
            headers = [("vary", "Accept"), *extra.items()]
            return self._send(protocol, method, 200, headers, result, fmt, columns, request_headers)
        if isinstance(result, Response):
            headers = [("vary", "Accept"), *result.headers.items(), *extra.items()]
            if result.body is None:
                protocol.response_empty(result.status, headers)
                return result.status
            status = result.status
            if isinstance(result.body, bytes | str) and _names_content_type(result.headers):
                body = result.body.encode() if isinstance(result.body, str) else result.body
                protocol.response_bytes(status, headers, body)  # sent as it is: an HTML page
                return status
            return self._send(
                protocol, method, status, headers, result.body, fmt, columns, request_headers
            )
        if result is None:
            if seam_method == "get":
                raise NotFound(f"no record at {target.path}")
            protocol.response_empty(204, list(extra.items()))
            return 204
        headers = [("vary", "Accept"), *extra.items()]
        if isinstance(result, Results) and _prefers_exact_count(request_headers):
            headers += [("content-range", _content_range(result)), _COUNT_APPLIED]
        if isinstance(result, Iterator | AsyncIterator) or inspect.isgenerator(result):
            if method == "HEAD":
                protocol.response_empty(200, [("content-type", fmt.content_type), *headers])
                return 200
            if not isinstance(result, AsyncIterator):
                body, result = encode_if_small(fmt, result, columns)
                if body is not None:
                    headers = [("content-type", fmt.content_type), *headers]
                    return self._send_body(protocol, "GET", 200, headers, body, request_headers)
            await self._stream(
                protocol, headers, encode_stream(fmt, result, columns), fmt, request_headers
            )
            return 200
        return self._send(protocol, method, 200, headers, result, fmt, columns, request_headers)

    def _send(
        self,
        protocol: Any,
        method: str,
        status: int,
        headers: list[tuple[str, str]],
        value: Any,
        fmt: Format,
        columns: Columns,
        request_headers: Mapping[str, str],
    ) -> int:
        """Encode ``value`` in ``fmt`` and send it, compressed when it is large enough."""
        headers = [("content-type", fmt.content_type), *headers]
        return self._send_body(
            protocol, method, status, headers, fmt.encode(value, columns), request_headers
        )

    def _send_body(
        self,
        protocol: Any,
        method: str,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        request_headers: Mapping[str, str],
    ) -> int:
        """Send an encoded ``body`` whole, compressed when it is large enough."""
        if len(body) > self.compression_threshold:
            coding = content_coding(request_headers.get("accept-encoding"))
            if coding is not None:
                body = compress(body, coding)
                headers += [("content-encoding", coding), ("vary", "Accept-Encoding")]
        if method == "HEAD":
            protocol.response_empty(status, [*headers, ("content-length", str(len(body)))])
        else:
            protocol.response_bytes(status, headers, body)
        return status

    async def _stream(
        self,
        protocol: Any,
        headers: list[tuple[str, str]],
        chunks: AsyncIterator[bytes],
        fmt: Format,
        request_headers: Mapping[str, str],
    ) -> None:
        """Send a collection: streamed (and compressed when the client allows) past one chunk.

        A result that fits in one chunk (most pages) goes out as one plain response
        with its length, which costs granian less than a chunked stream.
        """
        headers = [("content-type", fmt.content_type), *headers]
        first = await anext(chunks)
        second = await anext(chunks, None)
        if second is None:
            self._send_body(protocol, "GET", 200, headers, first, request_headers)
            return
        coding = content_coding(request_headers.get("accept-encoding"))
        failures: list[BaseException] = []
        rest = _guarded(chunks, fmt.broken, failures)
        pieces = _chained([first, second], rest)
        if coding is not None:
            pieces = compress_stream(pieces, coding)
            headers += [("content-encoding", coding), ("vary", "Accept-Encoding")]
        transport = protocol.response_stream(200, headers)
        async for chunk in pieces:
            await transport.send_bytes(chunk)
        if failures:
            raise _StreamFailed from failures[0]


async def _guarded(
    chunks: AsyncIterator[bytes], broken: bytes, failures: list[BaseException]
) -> AsyncIterator[bytes]:
    """``chunks``, ending with ``broken`` instead of an exception if the source fails.

    The status is sent by then, so the failure is logged (with an error id) and the
    body is made unreadable in its own format, still through the compressor, so the
    client cannot take a cut-off stream for the whole one.
    """
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as error:
        as_http_error(error)
        failures.append(error)
        yield broken


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body is larger than http.maxBodySize ({limit} bytes); send less or raise the setting"
    )


def _subscription_target(
    scope: Any, resource: Resource, path: str, slash: str, rest: str, context: Context
) -> RequestTarget:
    """The target of a subscribing request: a record, an id prefix or the collection."""
    options, conditions = subscribe_options(scope.query_string, scope.headers.get("last-event-id"))
    if conditions:
        raise BadRequest(
            f"a subscription to {path} takes no query conditions ({conditions!r}); its "
            "parameters are startTime, previousCount and omitCurrent",
            hint="subscribe to a record (/Dog/1), an id prefix (/Dog/abc/) or the collection "
            "(/Dog/), and filter the events in the client or in a subscribe() override",
        )
    if not slash:
        raise NotFound(
            f"{path} describes the resource; subscribe to its records at {path}/ or {path}/<id>"
        )
    if not rest:
        return RequestTarget(path, None, True, _NO_QUERY, context, None, options)
    if rest.endswith("/"):
        if isinstance(resource, Table) and resource.definition.primary_key_type not in (
            "ID",
            "String",
        ):
            raise NotFound(
                f"no id prefix {rest!r} in {path}: the keys of "
                f"{resource.definition.name} are {resource.definition.primary_key_type}, "
                "and only string keys have prefixes"
            )
        return RequestTarget(path, rest, True, _NO_QUERY, context, None, options)
    return RequestTarget(path, resource.parse_id(rest), False, _NO_QUERY, context, None, options)


class _StreamFailed(Exception):
    """A streamed response failed after its status was sent; it is logged already."""


def _names_content_type(headers: Mapping[str, str]) -> bool:
    """Whether a resource's response headers choose the content type themselves."""
    return any(name.lower() == "content-type" for name in headers)


def _prefers_exact_count(headers: Mapping[str, str]) -> bool:
    """Whether a ``Prefer`` header asks for ``count=exact``."""
    prefer = headers.get("prefer")
    if not prefer:
        return False
    return any(
        part.strip().replace(" ", "").lower() == "count=exact"
        for part in prefer.replace(";", ",").split(",")
    )


def _content_range(results: Results) -> str:
    """``items START-END/TOTAL`` (END inclusive) for a query's page; ``items */TOTAL`` if empty."""
    total = results.count()
    start, end = results.start, results.plan.query.end
    last = total if end is None else min(end, total)
    if last <= start:
        return f"items */{total}"
    return f"items {start}-{last - 1}/{total}"


def _columns(resource: Resource, target: RequestTarget) -> Columns:
    """CSV columns: the selected fields, else a table's stored attributes in schema order;
    of a table, only those the user's role may read.

    None for a resource that is not a table and selects nothing (its rows name their columns).
    """
    query = target.query
    if not isinstance(resource, Table):
        return None if query.select is None else tuple(item.name for item in query.select.fields)
    definition = resource.definition
    if query.select is not None:
        names = [item.name for item in query.select.fields]
    else:
        names = [name for name in definition.attributes if name not in definition.computed]
    readable = access_of(target.context.user, definition.name).readable
    return tuple(name for name in names if readable is None or name in readable)


async def _chained(head: list[bytes], tail: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in tail:
        yield chunk
