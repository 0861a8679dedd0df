"""``POST /_auth/token`` and ``POST /_auth/refresh``: bearer tokens over HTTP.

``/_auth/token`` takes ``{"username", "password"}`` and answers
``{access_token, refresh_token, token_type, expires_in}``; ``/_auth/refresh``
takes ``{"refresh_token"}`` and answers the same with a new access token. Both
need no other credentials and answer with ``Cache-Control: no-store``. A wrong
password counts as a failed login, and so does a ``username`` no user can have
(answered 400, naming the field, without a password check).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from kiln.auth.authenticate import Authenticator, NotAUserName
from kiln.errors import BadRequest, FieldError, MethodNotAllowed, NotFound, ValidationError
from kiln.http.formats import JSON

PATHS = ("/_auth/token", "/_auth/refresh")

_FIELDS = {"/_auth/token": ("username", "password"), "/_auth/refresh": ("refresh_token",)}
_ALLOW = ("POST", "OPTIONS")


async def answer(
    authenticator: Authenticator,
    scope: Any,
    protocol: Any,
    read_body: Callable[[], Awaitable[bytes]],
) -> int:
    """Answer a request to ``/_auth/...``; returns the status sent.

    Raises:
        NotFound: another path under ``/_auth/``.
        MethodNotAllowed: a method other than POST.
        BadRequest: the body is not a JSON object with the fields as text, or the user name
            is not one a user can have.
        Unauthorized: wrong credentials, or an invalid refresh token.
        TooManyRequests: too many failed logins.
    """
    path = scope.path
    fields = _FIELDS.get(path)
    if fields is None:
        raise NotFound(f"no resource at {path}; kiln's token endpoints are {', '.join(PATHS)}")
    if scope.method == "OPTIONS":
        protocol.response_empty(204, [("allow", ", ".join(_ALLOW))])
        return 204
    if scope.method != "POST":
        raise MethodNotAllowed(f"{path} only answers POST", allow=_ALLOW)
    body = _fields(await read_body(), fields)
    if path == "/_auth/token":
        try:
            user = await authenticator.login(body["username"], body["password"], scope.client)
        except NotAUserName as error:
            field = FieldError("$.username", f"`username` cannot be a user name: {error.hint}")
            raise _invalid([field], fields) from None
        issued = authenticator.tokens.issue(user)
    else:
        issued = authenticator.refresh(body["refresh_token"], scope.client)
    headers = [("content-type", JSON.content_type), ("cache-control", "no-store")]
    protocol.response_bytes(200, headers, JSON.encode(issued, None))
    return 200


def _fields(body: bytes, names: tuple[str, ...]) -> dict[str, str]:
    """The text fields ``names`` of a JSON object body."""
    example = _example(names)
    try:
        value = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError as error:
        raise BadRequest(f"the body is not valid JSON: {error}", hint=f"send {example}") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object", hint=f"send {example}")
    errors = [
        FieldError(f"$.{name}", f"`{name}` is required as text")
        for name in names
        if not isinstance(value.get(name), str)
    ]
    if errors:
        raise _invalid(errors, names)
    return {name: value[name] for name in names}


def _invalid(errors: list[FieldError], names: tuple[str, ...]) -> ValidationError:
    """The 400 answering a body whose fields ``errors`` are missing or invalid."""
    return ValidationError(
        f"{len(errors)} missing or invalid field{'s' if len(errors) > 1 else ''}",
        errors=errors,
        hint=f"send {_example(names)}",
    )


def _example(names: tuple[str, ...]) -> str:
    """A body with the fields ``names``, for hints."""
    return "{" + ", ".join(f'"{name}": "..."' for name in names) + "}"
