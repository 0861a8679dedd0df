"""HTTP caching against a real server: ETag, Last-Modified, 304 and 412.

A record's ETag is its version; ``If-None-Match`` naming it (or ``*``, or a list
holding it, weakly compared) answers 304 without a body; ``If-Match`` with a
stale version refuses every kind of write with 412 and changes nothing.
"""

from __future__ import annotations

import itertools
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  age: Int
}
"""

PROBLEM = "application/problem+json"
_ids = itertools.count(1)


def stored(http: httpx.Client, body: dict[str, Any]) -> tuple[str, str]:
    """Write a new Dog; returns its path and its ETag."""
    path = f"/Dog/{next(_ids)}"
    assert http.put(path, json=body).status_code == 204
    return path, http.get(path).headers["etag"]


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == status


def test_a_record_carries_etag_and_last_modified_from_its_version(http: httpx.Client) -> None:
    before = time.time()
    path, etag = stored(http, {"name": "Rex"})
    after = time.time()
    response = http.get(path)
    version = int(etag.strip('"'))
    modified = parsedate_to_datetime(response.headers["last-modified"])
    assert modified.timestamp() == (version >> 16) // 1000
    assert int(before) - 1 <= modified.timestamp() <= after + 1


@pytest.mark.parametrize(
    "condition",
    ["{etag}", "*", '"1", {etag}, "2"', "W/{etag}", '"1",{etag}'],
)
def test_if_none_match_with_the_current_etag_is_304(http: httpx.Client, condition: str) -> None:
    path, etag = stored(http, {"name": "Cached"})
    for method in ("GET", "HEAD"):
        response = http.request(
            method, path, headers={"if-none-match": condition.format(etag=etag)}
        )
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert "last-modified" in response.headers


@pytest.mark.parametrize("condition", ['"1"', '"1", "2"', 'W/"nope"'])
def test_if_none_match_with_another_etag_is_200(http: httpx.Client, condition: str) -> None:
    path, etag = stored(http, {"name": "Fresh"})
    response = http.get(path, headers={"if-none-match": condition})
    assert response.status_code == 200
    assert response.json()["name"] == "Fresh"
    assert response.headers["etag"] == etag


def test_a_stale_etag_gets_the_new_record(http: httpx.Client) -> None:
    path, old = stored(http, {"name": "v1"})
    assert http.put(path, json={"name": "v2"}).status_code == 204
    response = http.get(path, headers={"if-none-match": old})
    assert response.status_code == 200
    assert response.json()["name"] == "v2"
    assert response.headers["etag"] != old
    assert http.get(path, headers={"if-none-match": response.headers["etag"]}).status_code == 304


def test_if_none_match_star_on_a_missing_record_is_404(http: httpx.Client) -> None:
    assert_problem(http.get(f"/Dog/{next(_ids)}", headers={"if-none-match": "*"}), 404)


@pytest.mark.parametrize(
    ("method", "body"),
    [("PUT", {"name": "lost"}), ("PATCH", {"age": 9}), ("DELETE", None)],
)
def test_a_write_with_a_stale_if_match_is_412_and_changes_nothing(
    http: httpx.Client, method: str, body: dict[str, Any] | None
) -> None:
    path, stale = stored(http, {"name": "v1"})
    assert http.put(path, json={"name": "v2"}).status_code == 204
    current = http.get(path)
    response = http.request(method, path, json=body, headers={"if-match": stale})
    assert_problem(response, 412)
    after = http.get(path)
    assert after.json() == current.json()
    assert after.headers["etag"] == current.headers["etag"]

    fresh = http.request(method, path, json=body, headers={"if-match": current.headers["etag"]})
    assert fresh.status_code == 204
    assert http.get(path).headers.get("etag") != current.headers["etag"]


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_if_match_on_a_missing_record_is_412(http: httpx.Client, method: str) -> None:
    path = f"/Dog/{next(_ids)}"
    body = {"age": 1} if method == "PATCH" else None
    assert_problem(http.request(method, path, json=body, headers={"if-match": "*"}), 412)
    assert http.get(path).status_code == 404


@pytest.mark.parametrize("listed", ['"1", {etag}', '{etag},"2"', '"1", W/"3", {etag}'])
def test_an_if_match_list_holding_the_current_etag_matches(http: httpx.Client, listed: str) -> None:
    path, etag = stored(http, {"name": "listed"})
    response = http.put(
        path, json={"name": "changed"}, headers={"if-match": listed.format(etag=etag)}
    )
    assert response.status_code == 204, response.text
    assert http.get(path).json()["name"] == "changed"


@pytest.mark.parametrize(
    ("condition", "words"),
    [
        ('"1", "2"', "not at any of the versions 1, 2"),
        ("W/{etag}", "any version the precondition names"),
        ('"0{version}"', "any version the precondition names"),
        ("garbage", 'an ETag is a quoted number like "123"'),
    ],
)
def test_an_if_match_without_the_current_strong_etag_is_412_and_says_why(
    http: httpx.Client, condition: str, words: str
) -> None:
    path, etag = stored(http, {"name": "kept"})
    header = condition.format(etag=etag, version=etag.strip('"'))
    response = http.put(path, json={"name": "lost"}, headers={"if-match": header})
    assert_problem(response, 412)
    assert words in response.json()["detail"]
    after = http.get(path)
    assert after.json()["name"] == "kept"
    assert after.headers["etag"] == etag
