"""Cross-origin access (CORS): which web origins' pages may call the server, and the headers.

``http.cors`` lists the allowed origins (``*`` for any); by default none, so a
browser lets no other site's page read kiln's answers. An allowed origin is
echoed in ``Access-Control-Allow-Origin`` (with ``Vary: Origin``), and a
preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered with
the methods and headers kiln accepts. WebSocket upgrades have no preflight: the
WebSocket adapter refuses an ``Origin`` that :meth:`Cors.origin_allowed` rejects.
"""

from __future__ import annotations

from collections.abc import Iterable

ALLOWED_METHODS = "GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = (
    "authorization, content-type, accept, accept-encoding, if-match, if-none-match, "
    "prefer, last-event-id"
)
EXPOSED_HEADERS = "etag, last-modified, location, content-range, preference-applied, retry-after"
MAX_AGE = "600"
"""Seconds a browser may reuse a preflight's answer."""


class Cors:
    """The cross-origin policy of ``http.cors``: an allow-list of origins."""

    def __init__(self, origins: Iterable[str]):
        origins = tuple(origins)
        self.any = "*" in origins
        self.origins = frozenset(origin for origin in origins if origin != "*")

    def origin_allowed(self, origin: str | None, host: str | None = None) -> bool:
        """Whether a page from ``origin`` (an ``Origin`` header's value) may call kiln.

        A request without ``Origin`` is not cross-origin, so it is allowed, as is a page
        kiln served itself: ``origin`` is ``http(s)://`` + ``host`` (the request's
        ``Host``). The literal ``null`` is allowed only when every origin is (``*``).
        """
        if origin is None or self.any:
            return True
        origin = origin.lower()
        if host is not None and origin.partition("://")[2] == host.lower():
            return True
        return origin in self.origins

    def headers(self, origin: str) -> list[tuple[str, str]]:
        """The headers an answer to an allowed ``origin`` carries."""
        return [
            ("access-control-allow-origin", origin),
            ("access-control-expose-headers", EXPOSED_HEADERS),
            ("vary", "Origin"),
        ]

    def preflight_headers(self) -> list[tuple[str, str]]:
        """The headers a preflight of an allowed origin gets on top of :meth:`headers`."""
        return [
            ("access-control-allow-methods", ALLOWED_METHODS),
            ("access-control-allow-headers", ALLOWED_HEADERS),
            ("access-control-max-age", MAX_AGE),
        ]
