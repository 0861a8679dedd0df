"""Every HTTP error kiln answers is an RFC 9457 problem document, and none changes stored data.

One parametrized test sends each bad request to a real server and checks the
status, the ``application/problem+json`` content type, the four members
(``type``, ``title``, ``status``, ``detail``) with their types, ``errors`` for
field errors and ``Allow`` for 405s; the tables are snapshotted before and after.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String @indexed
  age: Int
  born: Date
  created: Long @createdTime
  updated: Long @updatedTime
}

type Visit @table @export @sealed {
  id: ID @primaryKey
  dogId: Int!
  reason: String!
}
"""

MAX_BODY = 1024
CONFIG = "http:\n  maxBodySize: 1KiB\n"

AUTH = ("admin", "admin-password")
"""The credentials of conftest's ``http`` client, for the module-scoped seeding client."""

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}
STALE_ETAG = '"1"'
MISSING = 404404

POSITION = re.compile(r"(byte|position|offset|column|char)\D{0,3}[0-9]+")
QUERY_POSITION = re.compile(r"query position [0-9]+:")

Body = bytes | Callable[[], Iterator[bytes]] | None


def too_large() -> bytes:
    """A valid Dog body one byte over the limit."""
    return b'{"name": "' + b"x" * (MAX_BODY - 11) + b'"}'


def too_large_chunked() -> Iterator[bytes]:
    """The same body sent in pieces, so there is no Content-Length to check up front."""
    data = too_large()
    for start in range(0, len(data), 300):
        yield data[start : start + 300]


@dataclass(frozen=True)
class Case:
    """One bad request and what its problem response must look like."""

    name: str
    method: str
    path: str
    status: int | tuple[int, ...]
    body: Body = None
    headers: dict[str, str] = field(default_factory=dict)
    field_errors: bool = False
    allow: bool = False
    detail: re.Pattern[str] | None = None


def json_case(
    name: str, method: str, path: str, status: int | tuple[int, ...], body: bytes, **kw: Any
) -> Case:
    return Case(name, method, path, status, body, {**JSON, **kw.pop("headers", {})}, **kw)


CASES = [
    # routing
    Case("unknown-route", "GET", "/Cat/1", 404),
    Case("unknown-root", "GET", "/", 404),
    Case("missing-record", "GET", f"/Dog/{MISSING}", 404),
    Case("non-integer-id", "GET", "/Dog/abc", 404),
    Case("non-integer-id-put", "PUT", "/Dog/abc", 404, b'{"name": "x"}', JSON),
    Case("trailing-slash-id", "GET", "/Dog/1/", 404),
    # queries
    Case("query-limit-letters", "GET", "/Dog/?limit(a)", 400, detail=QUERY_POSITION),
    Case("query-limit-backwards", "GET", "/Dog/?limit(5,2)", 400, detail=QUERY_POSITION),
    Case("query-unknown-function", "GET", "/Dog/?foo(1)", 400, detail=QUERY_POSITION),
    Case("query-no-index", "GET", "/Dog/?name=x", 400, detail=re.compile("no index can drive")),
    Case("query-on-write", "PUT", "/Dog/1?limit(a)", 400, b'{"name": "q"}', JSON),
    # bodies
    json_case("json-trailing-comma", "PUT", "/Dog/1", 400, b'{"name": "x",}', detail=POSITION),
    json_case("json-missing-colon", "PUT", "/Dog/1", 400, b'{"name" "x"}', detail=POSITION),
    json_case("json-truncated", "PUT", "/Dog/1", 400, b'{"name": "x"', detail=POSITION),
    json_case("json-trailing-garbage", "POST", "/Dog/", 400, b'{"name": "x"} !', detail=POSITION),
    json_case("empty-body", "PUT", "/Dog/1", 400, b""),
    json_case("empty-body-post", "POST", "/Dog/", 400, b""),
    json_case("whitespace-body", "PATCH", "/Dog/1", 400, b"  \n "),
    json_case("null-body", "PUT", "/Dog/1", 400, b"null"),
    json_case("array-body", "PATCH", "/Dog/1", 400, b"[1, 2]"),
    Case("text-plain", "PUT", "/Dog/1", 415, b'{"name": "x"}', {"content-type": "text/plain"}),
    Case(
        "form-urlencoded",
        "POST",
        "/Dog/",
        415,
        b"name=x",
        {"content-type": "application/x-www-form-urlencoded"},
    ),
    json_case("too-large-declared", "PUT", "/Dog/1", 413, too_large()),
    Case("too-large-chunked", "PUT", "/Dog/1", 413, too_large_chunked, JSON),
    json_case("too-large-post", "POST", "/Dog/", 413, too_large()),
    # validation
    json_case("key-mismatch", "PUT", "/Dog/1", 400, b'{"id": 2, "name": "x"}'),
    json_case(
        "invalid-fields",
        "PUT",
        "/Dog/1",
        400,
        b'{"name": 5, "age": "old", "born": "someday"}',
        field_errors=True,
    ),
    json_case("required-missing", "PUT", "/Dog/1", 400, b'{"age": 3}', field_errors=True),
    json_case("required-null-patch", "PATCH", "/Dog/1", 400, b'{"name": null}', field_errors=True),
    json_case(
        "sealed-undeclared",
        "PUT",
        "/Visit/v1",
        400,
        b'{"dogId": 1, "reason": "x", "colour": "red"}',
        field_errors=True,
    ),
    json_case(
        "sealed-required-post", "POST", "/Visit/", 400, b'{"reason": "x"}', field_errors=True
    ),
    # state
    json_case(
        "stale-if-match", "PUT", "/Dog/1", 412, b'{"name": "x"}', headers={"If-Match": STALE_ETAG}
    ),
    json_case(
        "stale-if-match-patch",
        "PATCH",
        "/Dog/1",
        412,
        b'{"age": 9}',
        headers={"If-Match": STALE_ETAG},
    ),
    Case("stale-if-match-delete", "DELETE", "/Dog/1", 412, headers={"If-Match": STALE_ETAG}),
    json_case("post-existing-key", "POST", "/Dog/", 409, b'{"id": 1, "name": "dup"}'),
    json_case("patch-missing", "PATCH", f"/Dog/{MISSING}", 404, b'{"name": "x"}'),
    Case("delete-missing", "DELETE", f"/Dog/{MISSING}", 404),
    # methods
    json_case("post-to-record", "POST", "/Dog/1", 405, b'{"name": "x"}', allow=True),
    Case("trace", "TRACE", "/Dog/1", 405, allow=True),
    Case("trace-collection", "TRACE", "/Dog/", 405, allow=True),
    json_case("put-collection", "PUT", "/Dog/", 405, b'{"name": "x"}', allow=True),
    json_case("put-collection-array", "PUT", "/Dog/", (400, 405), b'[{"id": 3, "name": "x"}]'),
    Case("delete-collection", "DELETE", "/Dog/", 400),
    json_case("put-description", "PUT", "/Dog", 405, b'{"name": "x"}', allow=True),
    Case("delete-description", "DELETE", "/Dog", 405, allow=True),
    Case("delete-health", "DELETE", "/_health", 405, allow=True),
    json_case("post-health", "POST", "/_health", 405, b"{}", allow=True),
]


def snapshot(client: httpx.Client) -> dict[str, Any]:
    """Everything the bad requests could touch."""
    state = {}
    for path in ("/Dog/", "/Dog/1", "/Dog/2", f"/Dog/{MISSING}", "/Visit/", "/Visit/v1"):
        response = client.get(path)
        state[path] = (response.status_code, response.headers.get("etag"), response.json())
    return state


@pytest.fixture(scope="module")
def seeded(kiln_server: Any) -> None:
    """Dog 1 and 2 and Visit v1, which the cases aim at."""
    with httpx.Client(base_url=kiln_server.url, auth=AUTH, timeout=10) as client:
        for path, body in (
            ("/Dog/1", {"name": "One", "breed": "lab", "age": 1, "born": "2020-01-02"}),
            ("/Dog/2", {"name": "Two"}),
            ("/Visit/v1", {"dogId": 1, "reason": "checkup"}),
        ):
            assert client.put(path, json=body).status_code == 204


def test_case_names_are_unique() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_error_is_a_problem_document_and_changes_nothing(
    http: httpx.Client, seeded: None, case: Case
) -> None:
    before = snapshot(http)
    content = case.body() if callable(case.body) else case.body
    response = http.request(case.method, case.path, content=content, headers=case.headers)

    statuses = case.status if isinstance(case.status, tuple) else (case.status,)
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM
    problem = response.json()
    assert isinstance(problem, dict)
    for member in ("type", "title", "status", "detail"):
        assert member in problem, f"problem document lacks {member!r}: {problem}"
    assert isinstance(problem["type"], str) and problem["type"]
    assert isinstance(problem["title"], str) and problem["title"]
    assert type(problem["status"]) is int
    assert problem["status"] == response.status_code
    assert isinstance(problem["detail"], str) and problem["detail"].strip()

    if case.detail is not None:
        assert case.detail.search(problem["detail"]), problem["detail"]
    if case.field_errors:
        errors = problem.get("errors")
        assert isinstance(errors, list) and errors, problem
        for error in errors:
            assert set(error) == {"path", "message"}
            assert isinstance(error["path"], str) and error["path"].startswith("$")
            assert isinstance(error["message"], str) and error["message"]
    if case.allow or response.status_code == 405:
        allowed = {method.strip() for method in response.headers["allow"].split(",")}
        assert "OPTIONS" in allowed
        assert case.method not in allowed

    assert snapshot(http) == before
