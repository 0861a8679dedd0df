"""The REST adapter against a real ``kiln run`` server: records, collections, types, errors.

One server serves the whole module; every test makes its own records with fresh
keys (from :func:`new_id` / :func:`new_key`), so the tests pass in any order.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from conftest import KilnServer, free_port, write_app

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String @indexed
  age: Int
  born: Date
  photo: Bytes
  chip: BigInt
  steps: Long
  weight: Float
  tags: [String]
  address: Address
  created: Long @createdTime
  updated: Long @updatedTime
}

type Owner @table @export {
  id: ID @primaryKey
  name: String
  city: String @indexed
}

type Visit @table @export @sealed {
  id: ID @primaryKey
  dogId: Int!
  reason: String!
  costCents: Long
}

type Tick @table @export {
  id: Int @primaryKey
  n: Int
}

type Address {
  street: String
  postcode: String!
}
"""

MAX_BODY = 2048
CONFIG = f"http:\n  maxBodySize: {MAX_BODY}\n"

PROBLEM = "application/problem+json"
HIGH_WATER = 1_000_000_000
"""A Dog key above every key :func:`new_id` hands out, so generated keys never collide."""

AUTH = ("admin", "admin-password")
"""The credentials of conftest's ``http`` client, for the module-scoped setup clients."""

_ids = itertools.count(1000)


def new_id() -> int:
    """A Dog key no other test uses."""
    return next(_ids)


def new_key(prefix: str = "k") -> str:
    """An Owner/Visit key no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module", autouse=True)
def high_water(kiln_server: Any) -> None:
    """Store a Dog far above the counter's keys: POST-generated keys land above it."""
    response = httpx.put(
        f"{kiln_server.url}/Dog/{HIGH_WATER}", json={"name": "High Water"}, auth=AUTH, timeout=10
    )
    assert response.status_code == 204


def put(http: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    return http.put(path, json=body, headers=headers)


def get_json(http: httpx.Client, path: str) -> Any:
    response = http.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def snapshot(http: httpx.Client, table: str, key: str | int) -> tuple[Any, int, Any]:
    """The table's records and the one record at ``key`` (status, body), for before/after."""
    collection = get_json(http, f"/{table}/")
    record = http.get(f"/{table}/{key}")
    return collection, record.status_code, record.json()


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem with ``status``; returns the document."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def allow_of(response: httpx.Response) -> set[str]:
    return {method.strip() for method in response.headers["allow"].split(",")}


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- GET / HEAD


def test_get_returns_the_record_with_its_etag(http: httpx.Client) -> None:
    dog_id = new_id()
    assert put(http, f"/Dog/{dog_id}", {"name": "Rex", "breed": "lab", "age": 3}).status_code == 204
    response = http.get(f"/Dog/{dog_id}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert re.fullmatch(r'"[0-9]+"', response.headers["etag"])
    body = response.json()
    assert body["id"] == dog_id
    assert (body["name"], body["breed"], body["age"]) == ("Rex", "lab", 3)


def test_get_of_a_missing_record_is_404(http: httpx.Client) -> None:
    assert_problem(http.get(f"/Dog/{new_id()}"), 404)


def test_head_answers_like_get_without_a_body(http: httpx.Client) -> None:
    dog_id = new_id()
    put(http, f"/Dog/{dog_id}", {"name": "Quiet"})
    got = http.get(f"/Dog/{dog_id}")
    head = http.head(f"/Dog/{dog_id}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["content-type"] == got.headers["content-type"]
    assert int(head.headers["content-length"]) == len(got.content)

    missing = http.head(f"/Dog/{new_id()}")
    assert missing.status_code == 404
    assert missing.content == b""

    collection = http.head("/Dog/")
    assert collection.status_code == 200
    assert collection.content == b""


# --------------------------------------------------------------------------- PUT


def test_put_replaces_the_whole_record(http: httpx.Client) -> None:
    dog_id = new_id()
    path = f"/Dog/{dog_id}"
    assert put(http, path, {"name": "Rex", "breed": "lab", "age": 3, "extra": 1}).status_code == 204
    assert put(http, path, {"name": "Rex II"}).status_code == 204
    body = get_json(http, path)
    assert body["name"] == "Rex II"
    for gone in ("breed", "age", "extra"):
        assert gone not in body


def test_put_creates_an_absent_record(http: httpx.Client) -> None:
    dog_id = new_id()
    assert http.get(f"/Dog/{dog_id}").status_code == 404
    response = put(http, f"/Dog/{dog_id}", {"name": "New"})
    assert response.status_code == 204
    assert response.content == b""
    assert get_json(http, f"/Dog/{dog_id}")["name"] == "New"


def test_put_with_a_matching_key_in_the_body_is_fine(http: httpx.Client) -> None:
    dog_id = new_id()
    assert put(http, f"/Dog/{dog_id}", {"id": dog_id, "name": "Same"}).status_code == 204
    assert get_json(http, f"/Dog/{dog_id}")["id"] == dog_id


def test_put_with_a_different_key_in_the_body_is_400_and_writes_nothing(
    http: httpx.Client,
) -> None:
    dog_id, other = new_id(), new_id()
    put(http, f"/Dog/{dog_id}", {"name": "Keep"})
    before = snapshot(http, "Dog", dog_id)
    assert_problem(put(http, f"/Dog/{dog_id}", {"id": other, "name": "Changed"}), 400)
    assert snapshot(http, "Dog", dog_id) == before
    assert http.get(f"/Dog/{other}").status_code == 404


def test_put_if_match_stale_is_412_and_current_is_204(http: httpx.Client) -> None:
    dog_id = new_id()
    path = f"/Dog/{dog_id}"
    put(http, path, {"name": "v1"})
    stale = http.get(path).headers["etag"]
    put(http, path, {"name": "v2"})
    current = http.get(path).headers["etag"]
    assert current != stale

    before = snapshot(http, "Dog", dog_id)
    assert_problem(put(http, path, {"name": "lost update"}, **{"If-Match": stale}), 412)
    assert snapshot(http, "Dog", dog_id) == before

    assert put(http, path, {"name": "v3"}, **{"If-Match": current}).status_code == 204
    assert get_json(http, path)["name"] == "v3"
    assert http.get(path).headers["etag"] != current


def test_if_match_star_means_any_existing_version(http: httpx.Client) -> None:
    """RFC 9110 §13.1.1: ``If-Match: *`` holds whenever the record exists."""
    dog_id = new_id()
    path = f"/Dog/{dog_id}"
    assert_problem(put(http, path, {"name": "absent"}, **{"If-Match": "*"}), 412)
    assert http.get(path).status_code == 404
    put(http, path, {"name": "v1"})
    assert put(http, path, {"name": "v2"}, **{"If-Match": "*"}).status_code == 204
    assert get_json(http, path)["name"] == "v2"


# --------------------------------------------------------------------------- POST


def test_post_generates_the_next_integer_key(http: httpx.Client) -> None:
    largest = max(record["id"] for record in get_json(http, "/Dog/"))
    above = largest + 10
    put(http, f"/Dog/{above}", {"name": "Top"})
    response = http.post("/Dog/", json={"name": "Next", "breed": "pug"})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/Dog/{above + 1}"
    body = response.json()
    assert body["id"] == above + 1
    assert (body["name"], body["breed"]) == ("Next", "pug")
    assert get_json(http, f"/Dog/{above + 1}") == body
    second = http.post("/Dog/", json={"name": "After"})
    assert second.json()["id"] == above + 2


def test_post_generates_a_uuid_for_an_id_key(http: httpx.Client) -> None:
    response = http.post("/Owner/", json={"name": "Ann", "city": "Oslo"})
    assert response.status_code == 201, response.text
    body = response.json()
    key = body["id"]
    assert isinstance(key, str)
    assert str(uuid.UUID(key)) == key
    assert response.headers["location"] == f"/Owner/{key}"
    assert get_json(http, response.headers["location"]) == body
    assert body["name"] == "Ann"


def test_post_uses_the_key_in_the_body_and_conflicts_if_it_exists(http: httpx.Client) -> None:
    dog_id = new_id()
    response = http.post("/Dog/", json={"id": dog_id, "name": "Chosen"})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/Dog/{dog_id}"
    assert response.json()["id"] == dog_id

    before = snapshot(http, "Dog", dog_id)
    assert_problem(http.post("/Dog/", json={"id": dog_id, "name": "Again"}), 409)
    assert snapshot(http, "Dog", dog_id) == before


def test_post_to_a_record_url_is_405_with_allow(http: httpx.Client) -> None:
    dog_id = new_id()
    response = http.post(f"/Dog/{dog_id}", json={"name": "Nope"})
    assert_problem(response, 405)
    assert "POST" not in allow_of(response)
    assert {"GET", "PUT"} <= allow_of(response)
    assert http.get(f"/Dog/{dog_id}").status_code == 404


# --------------------------------------------------------------------------- PATCH / DELETE


def test_patch_merges_the_given_attributes(http: httpx.Client) -> None:
    dog_id = new_id()
    path = f"/Dog/{dog_id}"
    put(http, path, {"name": "Rex", "breed": "lab", "address": {"postcode": "N1"}})
    response = http.patch(path, json={"age": 4, "breed": "collie"})
    assert response.status_code == 204
    body = get_json(http, path)
    assert (body["name"], body["breed"], body["age"]) == ("Rex", "collie", 4)
    assert body["address"] == {"postcode": "N1"}


def test_patch_of_a_missing_record_is_404_and_creates_nothing(http: httpx.Client) -> None:
    dog_id = new_id()
    assert_problem(http.patch(f"/Dog/{dog_id}", json={"name": "Ghost"}), 404)
    assert http.get(f"/Dog/{dog_id}").status_code == 404


def test_patch_with_a_stale_etag_is_412(http: httpx.Client) -> None:
    dog_id = new_id()
    path = f"/Dog/{dog_id}"
    put(http, path, {"name": "v1"})
    stale = http.get(path).headers["etag"]
    http.patch(path, json={"age": 1})
    before = snapshot(http, "Dog", dog_id)
    assert_problem(http.patch(path, json={"age": 2}, headers={"If-Match": stale}), 412)
    assert snapshot(http, "Dog", dog_id) == before


def test_delete_removes_the_record_and_a_missing_one_is_404(http: httpx.Client) -> None:
    dog_id = new_id()
    path = f"/Dog/{dog_id}"
    put(http, path, {"name": "Bye"})
    response = http.delete(path)
    assert response.status_code == 204
    assert response.content == b""
    assert http.get(path).status_code == 404
    assert dog_id not in {record["id"] for record in get_json(http, "/Dog/")}
    assert_problem(http.delete(path), 404)


# --------------------------------------------------------------------------- collections


@pytest.fixture(scope="module")
def ticks(kiln_server: Any) -> list[dict[str, Any]]:
    """300 Tick records (more than one 256-record scan chunk), keys 0..299."""
    with httpx.Client(base_url=kiln_server.url, auth=AUTH, timeout=10) as client:

        def write(n: int) -> int:
            return client.put(f"/Tick/{n}", json={"n": n * 10}).status_code

        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(write, range(300))) == {204}
    return [{"n": n * 10, "id": n} for n in range(300)]


def test_collection_is_a_streamed_json_array_in_key_order(
    http: httpx.Client, ticks: list[dict[str, Any]]
) -> None:
    response = http.get("/Tick/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("content-length")  # under one 64 KiB chunk: sent whole
    assert response.json() == ticks


def test_collection_orders_integer_keys_numerically(http: httpx.Client) -> None:
    ids = [new_id() for _ in range(5)]
    for dog_id in [ids[3], ids[0], ids[4], -ids[2], ids[1]]:
        put(http, f"/Dog/{dog_id}", {"name": f"d{dog_id}"})
    keys = [record["id"] for record in get_json(http, "/Dog/")]
    assert keys == sorted(keys)
    assert {ids[0], ids[1], ids[3], ids[4], -ids[2]} <= set(keys)
    assert get_json(http, f"/Dog/{-ids[2]}")["id"] == -ids[2]


@pytest.mark.parametrize(
    ("query", "start", "end"),
    [
        ("limit(5)", 0, 5),
        ("limit(0)", 0, 0),
        ("limit(3,7)", 3, 7),
        ("limit(4,4)", 4, 4),
        ("limit(250,270)", 250, 270),
        ("limit(255,258)", 255, 258),
        ("limit(299,400)", 299, 300),
        ("limit(1000)", 0, 300),
        ("limit(500,600)", 300, 300),
    ],
)
def test_limit_slices_the_collection(
    http: httpx.Client, ticks: list[dict[str, Any]], query: str, start: int, end: int
) -> None:
    assert get_json(http, f"/Tick/?{query}") == ticks[start:end]


@pytest.mark.parametrize(
    ("query", "position"),
    [
        ("limit(a)", 1),
        ("limit(5,2)", 1),
        ("limit(1,2,3)", 1),
        ("limit(-1)", 1),
        ("foo(1)", 1),
        ("limit(1)&foo(1)", 10),
        ("limit(2)&limit(x", 10),
    ],
)
def test_a_malformed_query_is_400_naming_the_position(
    http: httpx.Client, query: str, position: int
) -> None:
    body = assert_problem(http.get(f"/Dog/?{query}"), 400)
    match = re.match(r"query position ([0-9]+):", body["detail"])
    assert match is not None, body["detail"]
    assert int(match.group(1)) == position


# --------------------------------------------------------------------------- description, OPTIONS


def test_get_without_slash_describes_the_table(http: httpx.Client) -> None:
    put(http, f"/Dog/{new_id()}", {"name": "Counted"})
    description = get_json(http, "/Dog")
    assert description["name"] == "Dog"
    assert description["table"] == "Dog"
    assert isinstance(description["database"], str) and description["database"]
    assert description["path"] == "/Dog/"
    assert description["primaryKey"] == "id"
    assert description["sealed"] is False
    assert description["recordCount"] == len(get_json(http, "/Dog/"))
    attributes = {attribute["name"]: attribute for attribute in description["attributes"]}
    assert list(attributes)[:3] == ["id", "name", "breed"]
    assert attributes["name"]["type"] == "String!"
    assert attributes["name"]["required"] is True
    assert attributes["breed"]["indexed"] is True
    assert attributes["breed"]["required"] is False
    assert attributes["age"]["indexed"] is False
    assert attributes["tags"]["type"] == "[String]"
    assert attributes["address"]["type"] == "Address"
    assert attributes["created"].get("createdTime") is True
    assert attributes["updated"].get("updatedTime") is True
    for attribute in attributes.values():
        assert {"name", "type", "indexed", "required"} <= set(attribute)

    sealed = get_json(http, "/Visit")
    assert sealed["sealed"] is True
    assert sealed["primaryKey"] == "id"


def test_writes_to_the_description_url_are_405(http: httpx.Client) -> None:
    before = get_json(http, "/Dog/")
    for method in ("PUT", "POST", "PATCH", "DELETE"):
        response = http.request(method, "/Dog", json={"name": "x"})
        assert_problem(response, 405)
        assert "GET" in allow_of(response)
        assert method not in allow_of(response)
    assert get_json(http, "/Dog/") == before


def test_options_lists_the_allowed_methods(http: httpx.Client) -> None:
    record = http.options(f"/Dog/{new_id()}")
    assert record.status_code == 204
    assert {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"} <= allow_of(record)
    assert "POST" not in allow_of(record)

    collection = http.options("/Dog/")
    assert collection.status_code == 204
    assert {"GET", "HEAD", "POST", "OPTIONS"} <= allow_of(collection)
    assert "PUT" not in allow_of(collection)


def test_options_of_the_description_agrees_with_its_405(http: httpx.Client) -> None:
    """OPTIONS /Dog must not advertise methods that /Dog answers with 405."""
    options = http.options("/Dog")
    assert options.status_code == 204
    refused = http.put("/Dog", json={"name": "x"})
    assert refused.status_code == 405
    assert allow_of(options) == allow_of(refused)


def test_health(http: httpx.Client) -> None:
    response = http.get("/_health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and body["version"]
    tables = {table for names in body["databases"].values() for table in names}
    assert {"Dog", "Owner", "Visit", "Tick"} <= tables


# --------------------------------------------------------------------------- server-set times


def test_created_and_updated_time_are_set_by_the_server(http: httpx.Client) -> None:
    dog_id = new_id()
    path = f"/Dog/{dog_id}"
    started = now_ms()
    put(http, path, {"name": "Timed", "created": 5, "updated": 6})
    first = get_json(http, path)
    assert started - 1000 <= first["created"] <= now_ms() + 1000
    assert first["updated"] == first["created"]
    assert isinstance(first["created"], int)

    time.sleep(0.01)
    put(http, path, {"name": "Replaced", "created": 7, "updated": 8})
    second = get_json(http, path)
    assert second["created"] == first["created"]
    assert second["updated"] > first["updated"]

    time.sleep(0.01)
    http.patch(path, json={"age": 2, "created": 9, "updated": 10})
    third = get_json(http, path)
    assert third["created"] == first["created"]
    assert third["updated"] > second["updated"]


def test_post_sets_the_times_and_returns_them(http: httpx.Client) -> None:
    started = now_ms()
    response = http.post("/Dog/", json={"name": "Posted", "created": 1, "updated": 2})
    body = response.json()
    assert response.status_code == 201
    assert started - 1000 <= body["created"] <= now_ms() + 1000
    assert body["updated"] == body["created"]


# --------------------------------------------------------------------------- wire types


def test_types_on_the_wire(http: httpx.Client) -> None:
    dog_id = new_id()
    photo = bytes(range(256))
    big = 2**70 + 1
    sent = {
        "name": "Typed",
        "born": "2020-01-02T00:00:00Z",
        "photo": base64.b64encode(photo).decode(),
        "chip": big,
        "steps": 2**53 + 1,
        "weight": 12,
        "tags": ["a", "b"],
        "address": {"street": "High St", "postcode": "N1"},
    }
    assert put(http, f"/Dog/{dog_id}", sent).status_code == 204
    response = http.get(f"/Dog/{dog_id}")
    assert '"born":"2020-01-02T00:00:00Z"' in response.text
    assert f'"chip":{big}' in response.text
    assert f'"steps":{2**53 + 1}' in response.text
    body = response.json()
    assert base64.b64decode(body["photo"]) == photo
    assert body["chip"] == big
    assert body["steps"] == 2**53 + 1
    assert body["weight"] == 12.0
    assert isinstance(body["weight"], float)
    assert body["tags"] == ["a", "b"]
    assert body["address"] == {"street": "High St", "postcode": "N1"}


@pytest.mark.parametrize(
    "born",
    [
        "2020-01-02T00:00:00Z",
        "2020-01-02",
        "2020-01-02T01:00:00+01:00",
        "2020-01-01T19:00:00-05:00",
        1577923200000,
    ],
)
def test_dates_are_accepted_as_iso_or_epoch_ms_and_sent_as_utc(
    http: httpx.Client, born: Any
) -> None:
    dog_id = new_id()
    assert put(http, f"/Dog/{dog_id}", {"name": "Dated", "born": born}).status_code == 204
    assert get_json(http, f"/Dog/{dog_id}")["born"] == "2020-01-02T00:00:00Z"


@pytest.mark.parametrize(
    ("chip", "expected"),
    [
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("-98765432109876543210987", -98765432109876543210987),
        (-(2**80), -(2**80)),
        (2**64 - 1, 2**64 - 1),
        ("42", 42),
    ],
)
def test_bigint_is_an_exact_json_number(http: httpx.Client, chip: Any, expected: int) -> None:
    dog_id = new_id()
    assert put(http, f"/Dog/{dog_id}", {"name": "Chipped", "chip": chip}).status_code == 204
    response = http.get(f"/Dog/{dog_id}")
    assert f'"chip":{expected}' in response.text
    assert response.json()["chip"] == expected


def test_bytes_round_trip_as_base64(http: httpx.Client) -> None:
    dog_id = new_id()
    data = b"\xfb\xff\xfe\x00kiln"
    encoded = base64.b64encode(data).decode()
    assert "+" in encoded or "/" in encoded
    put(http, f"/Dog/{dog_id}", {"name": "Bytes", "photo": encoded})
    assert get_json(http, f"/Dog/{dog_id}")["photo"] == encoded
    http.patch(f"/Dog/{dog_id}", json={"photo": "AAEC"})
    assert get_json(http, f"/Dog/{dog_id}")["photo"] == "AAEC"


# --------------------------------------------------------------------------- keys in URLs


def test_int_keys_are_decimal(http: httpx.Client) -> None:
    dog_id = new_id()
    put(http, f"/Dog/{dog_id}", {"name": "Decimal"})
    assert get_json(http, f"/Dog/{dog_id}")["id"] == dog_id
    assert_problem(http.get("/Dog/abc"), 404)
    assert_problem(http.get("/Dog/1.5"), 404)
    assert_problem(http.put("/Dog/abc", json={"name": "x"}), 404)


def test_string_keys_with_slash_and_percent_are_percent_encoded(http: httpx.Client) -> None:
    key = f"a/b%c-{uuid.uuid4().hex[:8]}"
    segment = key.replace("%", "%25").replace("/", "%2F")
    assert put(http, f"/Owner/{segment}", {"name": "Slashed"}).status_code == 204
    body = get_json(http, f"/Owner/{segment}")
    assert body["id"] == key
    assert body["name"] == "Slashed"
    assert any(record["id"] == key for record in get_json(http, "/Owner/"))

    posted_key = f"x/y%z-{uuid.uuid4().hex[:8]}"
    response = http.post("/Owner/", json={"id": posted_key, "name": "Posted"})
    assert response.status_code == 201
    assert response.headers["location"] == "/Owner/" + posted_key.replace("%", "%25").replace(
        "/", "%2F"
    )
    assert get_json(http, response.headers["location"])["id"] == posted_key


PATH_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2}")
"""One character of an RFC 3986 path segment (``pchar``), percent-escapes included."""


@pytest.mark.parametrize("special", ["a?b", "a#b", "a b", "a?x=1&y", "ä/ö"])
def test_post_location_always_leads_back_to_the_record(http: httpx.Client, special: str) -> None:
    """The Location header is a valid URL path naming exactly the created record."""
    key = f"{special}-{uuid.uuid4().hex[:8]}"
    response = http.post("/Owner/", json={"id": key, "name": "Odd"})
    assert response.status_code == 201
    location = response.headers["location"]
    assert location.startswith("/Owner/")
    segment = location.removeprefix("/Owner/")
    assert PATH_SEGMENT.sub("", segment) == "", f"not a valid path segment: {location!r}"
    assert unquote(segment) == key
    assert get_json(http, location)["id"] == key


# --------------------------------------------------------------------------- validation


def test_every_violation_is_reported_together_and_nothing_is_written(
    http: httpx.Client,
) -> None:
    dog_id = new_id()
    before = snapshot(http, "Dog", dog_id)
    bad = {"age": "old", "born": "someday", "weight": "heavy", "address": {"street": 5}}
    body = assert_problem(put(http, f"/Dog/{dog_id}", bad), 400)
    assert isinstance(body["errors"], list)
    for error in body["errors"]:
        assert set(error) == {"path", "message"}
        assert isinstance(error["message"], str) and error["message"]
    paths = {error["path"] for error in body["errors"]}
    assert paths == {
        "$.name",
        "$.age",
        "$.born",
        "$.weight",
        "$.address.street",
        "$.address.postcode",
    }
    assert snapshot(http, "Dog", dog_id) == before


def test_patch_is_validated_too(http: httpx.Client) -> None:
    dog_id = new_id()
    put(http, f"/Dog/{dog_id}", {"name": "Valid", "age": 1})
    before = snapshot(http, "Dog", dog_id)
    body = assert_problem(http.patch(f"/Dog/{dog_id}", json={"age": 2.5, "name": None}), 400)
    assert {error["path"] for error in body["errors"]} == {"$.age", "$.name"}
    assert snapshot(http, "Dog", dog_id) == before


def test_a_sealed_table_rejects_undeclared_attributes(http: httpx.Client) -> None:
    key = new_key("visit")
    before = snapshot(http, "Visit", key)
    body = assert_problem(
        put(http, f"/Visit/{key}", {"dogId": 1, "reason": "x", "colour": "red", "mood": 1}), 400
    )
    assert {error["path"] for error in body["errors"]} == {"$.colour", "$.mood"}
    assert snapshot(http, "Visit", key) == before
    assert put(http, f"/Visit/{key}", {"dogId": 1, "reason": "checkup"}).status_code == 204


def test_missing_required_attributes_are_400(http: httpx.Client) -> None:
    key = new_key("visit")
    before = snapshot(http, "Visit", key)
    body = assert_problem(put(http, f"/Visit/{key}", {"costCents": 5}), 400)
    assert {error["path"] for error in body["errors"]} == {"$.dogId", "$.reason"}
    assert_problem(http.post("/Visit/", json={"reason": "no dog"}), 400)
    assert snapshot(http, "Visit", key) == before


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "x",}',
        b'{"name" "x"}',
        b'{"name": "x"} trailing',
        b'{"name": tru}',
        b'{"name": "x"',
        b"{",
    ],
)
def test_malformed_json_is_400_naming_the_position(http: httpx.Client, raw: bytes) -> None:
    dog_id = new_id()
    put(http, f"/Dog/{dog_id}", {"name": "Intact"})
    before = snapshot(http, "Dog", dog_id)
    response = http.put(f"/Dog/{dog_id}", content=raw, headers={"content-type": "application/json"})
    body = assert_problem(response, 400)
    assert re.search(r"(byte|position|offset|column|char)\D{0,3}[0-9]+", body["detail"]), body[
        "detail"
    ]
    assert snapshot(http, "Dog", dog_id) == before


def test_an_empty_body_is_400(http: httpx.Client) -> None:
    dog_id = new_id()
    for raw in (b"", b"   \n"):
        response = http.put(
            f"/Dog/{dog_id}", content=raw, headers={"content-type": "application/json"}
        )
        assert_problem(response, 400)
    assert_problem(
        http.post("/Dog/", content=b"", headers={"content-type": "application/json"}), 400
    )
    assert http.get(f"/Dog/{dog_id}").status_code == 404


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "application/json5"],
)
def test_a_non_json_content_type_is_415(http: httpx.Client, content_type: str) -> None:
    dog_id = new_id()
    response = http.put(
        f"/Dog/{dog_id}", content=b'{"name": "x"}', headers={"content-type": content_type}
    )
    assert_problem(response, 415)
    assert http.get(f"/Dog/{dog_id}").status_code == 404


def test_json_content_type_parameters_are_accepted(http: httpx.Client) -> None:
    dog_id = new_id()
    response = http.put(
        f"/Dog/{dog_id}",
        content=b'{"name": "charset"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 204
    assert get_json(http, f"/Dog/{dog_id}")["name"] == "charset"


def body_of_size(size: int) -> bytes:
    """A valid Dog body of exactly ``size`` bytes."""
    frame = b'{"name": "' + b'"}'
    return frame[:-2] + b"x" * (size - len(frame)) + frame[-2:]


def chunked(data: bytes, piece: int = 500) -> Iterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


def test_a_body_at_the_limit_is_accepted(http: httpx.Client) -> None:
    dog_id = new_id()
    data = body_of_size(MAX_BODY)
    headers = {"content-type": "application/json"}
    assert http.put(f"/Dog/{dog_id}", content=data, headers=headers).status_code == 204
    assert http.put(f"/Dog/{dog_id}", content=chunked(data), headers=headers).status_code == 204
    assert len(get_json(http, f"/Dog/{dog_id}")["name"]) == MAX_BODY - 12


def test_a_body_over_the_limit_is_413(http: httpx.Client) -> None:
    dog_id = new_id()
    put(http, f"/Dog/{dog_id}", {"name": "Small"})
    before = snapshot(http, "Dog", dog_id)
    data = body_of_size(MAX_BODY + 1)
    headers = {"content-type": "application/json"}
    declared = http.put(f"/Dog/{dog_id}", content=data, headers=headers)
    assert "content-length" in declared.request.headers
    assert assert_problem(declared, 413)["title"] == "Content Too Large"  # RFC 9110's name
    streamed = http.put(f"/Dog/{dog_id}", content=chunked(data), headers=headers)
    assert "content-length" not in streamed.request.headers
    assert_problem(streamed, 413)
    assert snapshot(http, "Dog", dog_id) == before


def test_a_client_that_leaves_mid_body_is_logged_as_499_not_as_an_error(tmp_path: Path) -> None:
    """A client that goes away before its whole body arrived gets nothing and leaves no
    error in the log: the access log says 499 (nginx's "client closed request"), nothing
    is written, and the server serves on."""
    server = KilnServer(
        write_app(tmp_path / "app", SCHEMA, CONFIG),
        tmp_path / "data",
        free_port(),
        env={"KILN_HTTP_ACCESSLOG": "true"},
    )
    server.start()
    try:
        credentials = base64.b64encode(":".join(AUTH).encode()).decode()
        head = (
            "PUT /Dog/310 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Basic {credentials}\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n"
        )
        part = b'{"name": "partial body"'  # 23 of the 100 bytes announced
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            client.sendall(head.encode() + part)
            client.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 10
        while "PUT /Dog/310 " not in server.log():
            assert time.monotonic() < deadline, f"the request was never logged:\n{server.log()}"
            time.sleep(0.05)
        with httpx.Client(base_url=server.url, auth=AUTH, timeout=10) as http:
            assert http.get("/Dog/310").status_code == 404
            assert http.put("/Dog/310", json={"name": "Whole"}).status_code == 204
    finally:
        server.stop()
    log = server.log()
    assert re.search(r"kiln\.access: PUT /Dog/310 499 ", log), log
    assert "ERROR" not in log and "Traceback" not in log, log


# --------------------------------------------------------------------------- routing errors


def test_unknown_routes_are_404(http: httpx.Client) -> None:
    for path in ("/Cat/", "/Cat/1", "/", "/dog/1", "/Dog/1/"):
        assert_problem(http.get(path), 404)


def test_unsupported_methods_are_405_with_allow(http: httpx.Client) -> None:
    before = get_json(http, "/Dog/")
    trace = http.request("TRACE", "/Dog/1")
    assert_problem(trace, 405)
    assert "GET" in allow_of(trace)
    assert "TRACE" not in allow_of(trace)

    for method in ("PUT", "PATCH"):
        response = http.request(method, "/Dog/", json={"name": "x"})
        assert_problem(response, 405)
        assert allow_of(response) == {"GET", "HEAD", "POST", "DELETE", "OPTIONS"}
    assert get_json(http, "/Dog/") == before


def test_put_of_an_array_on_the_collection_is_a_client_error(http: httpx.Client) -> None:
    before = get_json(http, "/Dog/")
    response = http.put("/Dog/", json=[{"id": new_id(), "name": "Batch"}])
    assert response.status_code in (400, 405)
    assert_problem(response, response.status_code)
    assert get_json(http, "/Dog/") == before


def test_non_object_bodies_are_400(http: httpx.Client) -> None:
    dog_id = new_id()
    for body in (None, [1, 2], "dog", 5, True):
        response = http.put(
            f"/Dog/{dog_id}",
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        assert_problem(response, 400)
    assert http.get(f"/Dog/{dog_id}").status_code == 404


# --------------------------------------------------------------------------- concurrency


def test_concurrent_puts_to_distinct_ids_all_land(http: httpx.Client) -> None:
    ids = [new_id() for _ in range(50)]

    def write(dog_id: int) -> int:
        return http.put(f"/Dog/{dog_id}", json={"name": f"c{dog_id}", "age": 1}).status_code

    with ThreadPoolExecutor(25) as pool:
        statuses = list(pool.map(write, ids))
    assert statuses == [204] * 50
    stored = {record["id"]: record for record in get_json(http, "/Dog/")}
    for dog_id in ids:
        assert stored[dog_id]["name"] == f"c{dog_id}"
        assert get_json(http, f"/Dog/{dog_id}")["name"] == f"c{dog_id}"


def test_concurrent_patches_of_one_record_all_land(http: httpx.Client) -> None:
    dog_id = new_id()
    path = f"/Dog/{dog_id}"
    put(http, path, {"name": "Target"})

    def patch(n: int) -> int:
        return http.patch(path, json={f"field{n}": n}).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(patch, range(20)))
    assert statuses == [204] * 20
    body = get_json(http, path)
    assert body["name"] == "Target"
    for n in range(20):
        assert body[f"field{n}"] == n


def test_post_refuses_keys_no_url_can_name(http: httpx.Client) -> None:
    for key in ("", "ends-with/"):
        response = http.post("/Owner/", json={"id": key, "name": "x"})
        assert response.status_code == 400, response.text
        assert "no URL could name it" in response.json()["detail"]
    assert http.get("/Owner/ends-with%2F").status_code == 404


def test_generated_int_keys_stop_at_the_int_range(http: httpx.Client) -> None:
    response = http.put("/Dog/2147483647", json={"name": "last"})
    assert response.status_code == 204, response.text
    response = http.post("/Dog/", json={"name": "one too many"})
    assert response.status_code == 409, response.text
    assert "no Int key left" in response.json()["detail"]
    assert http.delete("/Dog/2147483647").status_code == 204


def test_if_none_match_star_creates_only(http: httpx.Client) -> None:
    key = new_id()
    first = http.put(f"/Dog/{key}", json={"name": "first"}, headers={"If-None-Match": "*"})
    assert first.status_code == 204, first.text
    second = http.put(f"/Dog/{key}", json={"name": "second"}, headers={"If-None-Match": "*"})
    assert second.status_code == 412, second.text
    assert http.get(f"/Dog/{key}").json()["name"] == "first"


def test_an_unreadable_if_match_never_matches(http: httpx.Client) -> None:
    key = new_id()
    assert http.put(f"/Dog/{key}", json={"name": "kept"}).status_code == 204
    response = http.put(
        f"/Dog/{key}", json={"name": "lost"}, headers={"If-Match": '"\u00e9"'.encode()}
    )
    assert response.status_code == 412, response.text
    assert http.get(f"/Dog/{key}").json()["name"] == "kept"
