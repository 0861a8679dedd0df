"""CORS over HTTP: answering preflights, and adding the headers to every answer for an origin.

The policy (which origins) is :class:`kiln.auth.cors.Cors`; this module puts it
on the wire for the REST adapter.
"""

from __future__ import annotations

from typing import Any

from kiln.auth.cors import Cors


def is_preflight(method: str, headers: Any) -> bool:
    """Whether a request is a CORS preflight: ``OPTIONS`` with ``Access-Control-Request-Method``."""
    return method == "OPTIONS" and "access-control-request-method" in headers


def preflight(cors: Cors, scope: Any, protocol: Any) -> int:
    """Answer a preflight: 204, with the CORS headers when its origin is allowed.

    ``protocol`` adds the headers every answer to the origin gets (:func:`with_cors`);
    without them (an origin not in ``http.cors``) the browser refuses the request it
    asked about. The preflight needs no credentials: browsers send none.
    """
    origin = scope.headers.get("origin")
    headers = [("allow", "GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS")]
    if origin is not None and cors.origin_allowed(origin):
        headers += cors.preflight_headers()
    protocol.response_empty(204, headers)
    return 204


class WithHeaders:
    """An RSGI HTTP protocol that adds ``headers`` to whichever response is sent through it."""

    def __init__(self, protocol: Any, headers: list[tuple[str, str]]):
        self._protocol = protocol
        self._headers = headers

    async def __call__(self) -> bytes:
        """The whole request body."""
        return await self._protocol()

    def __aiter__(self) -> Any:
        """The request body in chunks."""
        return self._protocol.__aiter__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send a response without a body."""
        self._protocol.response_empty(status, [*headers, *self._headers])

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Send a response with ``body``."""
        self._protocol.response_bytes(status, [*headers, *self._headers], body)

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        """Send a response with a text ``body``."""
        self._protocol.response_str(status, [*headers, *self._headers], body)

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Any:
        """Start a streamed response; returns its transport."""
        return self._protocol.response_stream(status, [*headers, *self._headers])


def with_cors(cors: Cors, origin: str, protocol: Any) -> Any:
    """``protocol``, adding the CORS headers to its response when ``origin`` is allowed."""
    if not cors.origin_allowed(origin):
        return protocol
    return WithHeaders(protocol, cors.headers(origin))
