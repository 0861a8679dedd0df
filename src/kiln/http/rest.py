"""The REST adapter: an HTTP request → (resource, target, method, body) → an HTTP response.

It translates and does nothing else: permission checks and data access happen
behind :func:`kiln.resource.invoke`. Every URL the server answers is decided in
:meth:`RestHandler.route`.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import msgspec

from kiln.app import App
from kiln.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from kiln.http.description import describe_table, health
from kiln.http.problems import problem_response
from kiln.query import Query, parse_query
from kiln.resource import Context, RequestTarget, Resource, Response, Table, invoke
from kiln.types import MATCH_ANY, Version

METHOD_OF = {
    "GET": "get",
    "HEAD": "get",
    "PUT": "put",
    "POST": "post",
    "PATCH": "patch",
    "DELETE": "delete",
}
"""HTTP method → seam method."""

READS = frozenset({"GET", "HEAD"})
JSON_TYPE = "application/json"
_JSON_HEADERS = [("content-type", JSON_TYPE)]
_STREAM_FLUSH_BYTES = 64 * 1024
_NO_QUERY = Query()

access_log = logging.getLogger("kiln.access")
_encoder = msgspec.json.Encoder()


def _json_body(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("the body is empty; send a JSON object")
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise BadRequest(f"the body is not valid JSON: {_json_problem(body, error)}") from None
    except RecursionError:
        raise BadRequest(
            "the body nests arrays or objects too deeply to read; flatten it"
        ) from None


def _json_problem(body: bytes, error: msgspec.DecodeError) -> str:
    """What is wrong with ``body``, with a position where msgspec's message lacks one."""
    problem = str(error)
    if "truncated" not in problem:
        return problem
    try:  # msgspec says "truncated" both for a cut-off body and for a lone surrogate escape
        json.loads(body)
    except json.JSONDecodeError as stdlib_error:
        return f"{stdlib_error.msg} (byte {stdlib_error.pos})"
    except UnicodeDecodeError as decode_error:
        return f"it is not UTF-8 (byte {decode_error.start})"
    return "it contains an unpaired surrogate escape (such as \\ud800); send whole UTF-16 pairs"


def _if_match(value: str | None) -> Version | None:
    """The version an ``If-Match`` header asks for.

    ``*`` matches any existing version; a tag that is no version of kiln's (0) matches none.
    """
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return MATCH_ANY
    tag = value.removeprefix("W/").strip('"')
    return int(tag) if tag.isdigit() else 0


async def _stream_json(transport: Any, records: Iterable[Any] | AsyncIterator[Any]) -> None:
    """Send ``records`` as one JSON array, flushing every ~64 KiB."""
    parts: list[bytes] = [b"["]
    size = 1
    first = True

    async def flush() -> None:
        nonlocal parts, size
        await transport.send_bytes(b"".join(parts))
        parts, size = [], 0

    async def each() -> AsyncIterator[Any]:
        if isinstance(records, AsyncIterator):
            async for record in records:
                yield record
        else:
            for record in records:
                yield record

    async for record in each():
        encoded = _encoder.encode(record)
        parts.append(encoded if first else b"," + encoded)
        first = False
        size += len(encoded) + 1
        if size >= _STREAM_FLUSH_BYTES:
            await flush()
    parts.append(b"]")
    await flush()


class RestHandler:
    """Answers HTTP requests for one loaded :class:`App` (the RSGI ``__rsgi__`` callable)."""

    def __init__(self, app: App):
        self.app = app
        self.routes: Mapping[str, Resource] = app.routes
        self.max_body_size = app.config.http.max_body_size
        self.log_access = app.config.http.access_log

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        """The RSGI entry point: one HTTP request."""
        if scope.proto != "http":
            protocol.close(1003)
            return
        started = time.perf_counter()
        try:
            status = await self.handle(scope, protocol)
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
        """Route and answer one request; returns the status sent."""
        method = scope.method
        resource, target = self.route(scope)
        if resource is None:
            return self._health(protocol, method)
        if method == "OPTIONS":
            allow = ", ".join(resource.allowed_methods(target))
            protocol.response_empty(204, [("allow", allow)])
            return 204
        if target.id is None and not target.is_collection:
            return self._describe(protocol, method, resource, target)
        seam_method = METHOD_OF.get(method)
        if seam_method is None:
            raise MethodNotAllowed(
                f"{method} is not a method kiln answers", allow=resource.allowed_methods(target)
            )
        data = None
        if method not in READS and seam_method != "delete":
            data = _json_body(await self._read_body(scope, protocol))
        result = await invoke(resource, seam_method, target, data)
        return await self._respond(protocol, method, seam_method, target, result)

    def route(self, scope: Any) -> tuple[Resource | None, RequestTarget]:
        """The resource and target a request names; (None, ...) for ``/_health``.

        Raises:
            NotFound: no route, or an id the resource cannot have.
        """
        path = scope.path
        name, slash, rest = path[1:].partition("/")
        resource = self.routes.get(name)
        if resource is None:
            if path == "/_health":
                return None, RequestTarget(path, None, False, _NO_QUERY, Context(None, {}, {}))
            routes = ", ".join(f"/{route}/" for route in self.routes) or "none"
            raise NotFound(f"no resource at {path}; the routes are: {routes}")
        query = parse_query(scope.query_string) if scope.query_string else _NO_QUERY
        headers = scope.headers
        context = Context(None, headers, {})
        if not slash:
            return resource, RequestTarget(path, None, False, query, context)
        if not rest:
            return resource, RequestTarget(path, None, True, query, context)
        if rest.endswith("/"):
            raise NotFound(
                f"no resource at {path}: collections by id prefix are not served yet; "
                f"a record id cannot end with '/'"
            )
        key = resource.parse_id(rest)
        if_version = _if_match(headers.get("if-match"))
        return resource, RequestTarget(path, key, False, query, context, if_version)

    async def _read_body(self, scope: Any, protocol: Any) -> bytes:
        content_type = scope.headers.get("content-type", JSON_TYPE)
        if content_type.split(";")[0].strip().lower() != JSON_TYPE:
            hint = (
                " (curl -d sends that type: add -H 'Content-Type: application/json' or use --json)"
                if content_type.startswith("application/x-www-form-urlencoded")
                else ""
            )
            raise UnsupportedMediaType(
                f"kiln reads bodies of type {JSON_TYPE}, not {content_type!r}{hint}; "
                f"send Content-Type: {JSON_TYPE}"
            )
        limit = self.max_body_size
        too_large = PayloadTooLarge(
            f"the body is larger than http.maxBodySize ({limit} bytes); "
            "send less or raise the setting"
        )
        declared = scope.headers.get("content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                raise too_large
            return await protocol()
        chunks: list[bytes] = []
        size = 0
        async for chunk in protocol:
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _health(self, protocol: Any, method: str) -> int:
        if method == "OPTIONS":
            protocol.response_empty(204, [("allow", "GET, HEAD, OPTIONS")])
            return 204
        if method not in READS:
            raise MethodNotAllowed("/_health only answers reads", allow=("GET", "HEAD", "OPTIONS"))
        return self._send(protocol, method, 200, _JSON_HEADERS, health(self.app))

    def _describe(self, protocol: Any, method: str, resource: Resource, target: Any) -> int:
        if method not in READS or not isinstance(resource, Table):
            raise MethodNotAllowed(
                f"{target.path} describes the resource; add a '/' for its records ({target.path}/)",
                allow=("GET", "HEAD", "OPTIONS"),
            )
        return self._send(protocol, method, 200, _JSON_HEADERS, describe_table(resource))

    async def _respond(
        self, protocol: Any, method: str, seam_method: str, target: RequestTarget, result: Any
    ) -> int:
        """Turn a seam method's result into the response; the one place status is decided."""
        extra = list(target.context.response_headers.items())
        if type(result) is dict:
            return self._send(protocol, method, 200, [*_JSON_HEADERS, *extra], result)
        if isinstance(result, Response):
            headers = [*_JSON_HEADERS, *result.headers.items(), *extra]
            if result.body is None:
                protocol.response_empty(result.status, headers)
                return result.status
            return self._send(protocol, method, result.status, headers, result.body)
        if result is None:
            if seam_method == "get":
                raise NotFound(f"no record at {target.path}")
            protocol.response_empty(204, extra)
            return 204
        headers = [*_JSON_HEADERS, *extra]
        if isinstance(result, Iterator | AsyncIterator) or inspect.isgenerator(result):
            if method == "HEAD":
                protocol.response_empty(200, headers)
                return 200
            await _stream_json(protocol.response_stream(200, headers), result)
            return 200
        return self._send(protocol, method, 200, headers, result)

    @staticmethod
    def _send(protocol: Any, method: str, status: int, headers: list[Any], value: Any) -> int:
        body = _encoder.encode(value)
        if method == "HEAD":
            protocol.response_empty(status, [*headers, ("content-length", str(len(body)))])
        else:
            protocol.response_bytes(status, headers, body)
        return status
