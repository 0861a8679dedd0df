"""The one error hierarchy of kiln.

Every error kiln raises on purpose is a :class:`KilnError`. Errors a client
caused are :class:`HTTPError` subclasses, one per status kiln answers; errors in
an application's files are :class:`SchemaError`, :class:`ConfigError` or
:class:`ResourceError`, which carry the file, line and column. Turning an error
into a response happens in one place per protocol (``kiln.http.problems`` for
HTTP).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import ClassVar

__all__ = [
    "BadGateway",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "FieldError",
    "Forbidden",
    "GatewayTimeout",
    "HTTPError",
    "InternalServerError",
    "KilnError",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ResourceError",
    "SchemaError",
    "TooManyRequests",
    "TransactionError",
    "Unauthorized",
    "UnknownTable",
    "UnsupportedMediaType",
    "ValidationError",
]


class KilnError(Exception):
    """Root of every error kiln raises on purpose.

    Args:
        message: what went wrong, in one sentence.
        hint: what to do about it, when kiln knows.
        where: the place it happened (a file position, a field path, a key).
    """

    def __init__(self, message: str, *, hint: str | None = None, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text}\n  hint: {self.hint}" if self.hint else text


@dataclass(frozen=True, slots=True)
class FieldError:
    """One violation inside a request body: the field's path (``$.owner.name``) and why."""

    path: str
    message: str


_RENAMED = {413: "Content Too Large", 422: "Unprocessable Content"}
"""Reason phrases RFC 9110 renamed, which Python's ``HTTPStatus`` has only from 3.13."""


class HTTPError(KilnError):
    """An error a client caused (or a server failure), answered with ``status``.

    Args:
        status: the HTTP status code.
        detail: a sentence for the client: what was wrong and what to send instead.
        errors: the field violations, when the request body had any.
        headers: extra response headers (``Allow``, ``Retry-After``, ...).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: tuple[FieldError, ...] | list[FieldError] = (),
        headers: dict[str, str] | None = None,
        hint: str | None = None,
    ):
        super().__init__(detail, hint=hint)
        self.status = status
        self.detail = detail
        self.errors = tuple(errors)
        self.headers = dict(headers or {})

    @property
    def title(self) -> str:
        """The standard reason phrase of the status (RFC 9110's, whatever the Python)."""
        try:
            return _RENAMED.get(self.status) or HTTPStatus(self.status).phrase
        except ValueError:
            return "Error"


class _StatusError(HTTPError):
    """An :class:`HTTPError` whose status is fixed by its class."""

    status_code: ClassVar[int] = 500

    def __init__(
        self,
        detail: str,
        *,
        errors: tuple[FieldError, ...] | list[FieldError] = (),
        headers: dict[str, str] | None = None,
        hint: str | None = None,
    ):
        super().__init__(self.status_code, detail, errors=errors, headers=headers, hint=hint)


class BadRequest(_StatusError):
    """400: the request is malformed or its values are invalid."""

    status_code = 400


class ValidationError(BadRequest):
    """400: a record failed validation against the schema; ``errors`` lists every violation."""


class Unauthorized(_StatusError):
    """401: credentials are missing or wrong."""

    status_code = 401


class Forbidden(_StatusError):
    """403: the user may not do this."""

    status_code = 403


class NotFound(_StatusError):
    """404: no such route or record."""

    status_code = 404


class MethodNotAllowed(_StatusError):
    """405: the resource does not answer this method; ``Allow`` lists those it does."""

    status_code = 405

    def __init__(self, detail: str, *, allow: tuple[str, ...] | list[str]):
        super().__init__(detail, headers={"Allow": ", ".join(allow)})
        self.allow = tuple(allow)


class NotAcceptable(_StatusError):
    """406: no representation matches the request's ``Accept``."""

    status_code = 406


class Conflict(_StatusError):
    """409: the write conflicts with what is stored (an existing key, a unique value)."""

    status_code = 409


class PreconditionFailed(_StatusError):
    """412: a precondition (``If-Match``) no longer holds."""

    status_code = 412


class PayloadTooLarge(_StatusError):
    """413: the body is larger than ``http.maxBodySize``."""

    status_code = 413


class UnsupportedMediaType(_StatusError):
    """415: the body's ``Content-Type`` is not one kiln reads."""

    status_code = 415


class TooManyRequests(_StatusError):
    """429: too many attempts; ``Retry-After`` says when to try again."""

    status_code = 429


class InternalServerError(_StatusError):
    """500: kiln or the application failed; the detail carries an error id for the log."""

    status_code = 500


class BadGateway(_StatusError):
    """502: an upstream source answered badly."""

    status_code = 502


class GatewayTimeout(_StatusError):
    """504: an upstream source did not answer in time."""

    status_code = 504


class _FileError(KilnError):
    """An error at a position in one of the application's files."""

    def __init__(
        self,
        message: str,
        *,
        file: str,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
    ):
        where = file
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(message, hint=hint, where=where)
        self.file = file
        self.line = line
        self.column = column


class SchemaError(_FileError):
    """A mistake in ``schema.graphql``; ``str()`` reads ``schema.graphql:LINE:COL: message``."""


class ConfigError(_FileError):
    """A mistake in ``config.yaml``, an environment override or a command-line option."""


class ResourceError(_FileError):
    """A mistake in ``resources.py``; ``str()`` reads ``resources.py:LINE: message``."""


class UnknownTable(KilnError, AttributeError):
    """``kiln.tables`` has no table of that name; an AttributeError, as a missing attribute is.

    Args:
        message: which name was asked for and which tables there are.
        name: the name asked for.
    """

    def __init__(self, message: str, *, name: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.name = name


class TransactionError(KilnError):
    """A transaction was misused: a second database in one, a sync one on the event loop, or
    a write after it ended."""
