"""Errors as HTTP responses: every error body is an RFC 9457 problem document.

This is the one place an exception becomes an HTTP status. An exception that
is not a :class:`~kiln.errors.HTTPError` is a server failure: it is logged with a
fresh error id, and the client gets a 500 that quotes that id and nothing else.
"""

from __future__ import annotations

import logging
import uuid

import msgspec

from kiln.errors import HTTPError, InternalServerError

PROBLEM_TYPE = "application/problem+json"

log = logging.getLogger("kiln.http")
_encoder = msgspec.json.Encoder()


def as_http_error(error: BaseException) -> HTTPError:
    """``error`` itself when it is an :class:`HTTPError`, else a logged 500 with an error id."""
    if isinstance(error, HTTPError):
        return error
    error_id = uuid.uuid4().hex[:12]
    log.error("error %s: unhandled %s", error_id, type(error).__name__, exc_info=error)
    return InternalServerError(
        f"the server failed while answering (error id {error_id}); "
        "the server log has the details under that id"
    )


def problem_body(error: HTTPError) -> bytes:
    """The problem document of ``error``: type, title, status, detail and field errors."""
    document: dict[str, object] = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if error.hint:
        document["hint"] = error.hint
    if error.errors:
        document["errors"] = [{"path": item.path, "message": item.message} for item in error.errors]
    return _encoder.encode(document)


def problem_response(error: BaseException) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body answering ``error``."""
    http_error = as_http_error(error)
    headers = [("content-type", PROBLEM_TYPE), *http_error.headers.items()]
    return http_error.status, headers, problem_body(http_error)
