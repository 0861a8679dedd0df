"""Values and keys kiln cannot keep faithfully, against a real server: each is a 400 that
names it, and nothing is written.

JSON cannot carry NaN, Infinity or a number of more digits than Python turns into text,
but CBOR and MessagePack can; a stored one would break every JSON read of its record
and of the whole collection. An HTTP server decodes a %-escape that is not UTF-8 to
U+FFFD, so two different URLs would name one record. A date whose offset takes it past
year 9999 in UTC, and a type that contains itself sent hundreds deep, used to be 500s.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import cbor2
import httpx
import msgpack
import pytest

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String
  chip: BigInt
  born: Date
  extra: Any
  node: Node
}

type Owner @table @export {
  code: String @primaryKey
  name: String
}

type Big @table @export {
  id: BigInt @primaryKey
  name: String
}

type Node { next: Node  value: Int }
"""

PROBLEM = "application/problem+json"
CBOR, MSGPACK = "application/cbor", "application/x-msgpack"
HUGE = 10**5000

_ids = itertools.count(1)


def refused(response: httpx.Response) -> dict[str, Any]:
    """The problem body of a 400."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    return response.json()


def paths(problem: dict[str, Any]) -> set[str]:
    return {error["path"] for error in problem.get("errors", [])}


def _msgpack_big(value: int) -> msgpack.ExtType:
    return msgpack.ExtType(1, value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True))


@pytest.mark.parametrize(
    ("content_type", "body", "path"),
    [
        (CBOR, cbor2.dumps({"chip": HUGE}), "$.chip"),
        (MSGPACK, msgpack.packb({"chip": _msgpack_big(HUGE)}), "$.chip"),
        (CBOR, cbor2.dumps({"extra": {"a": math.nan, "b": [1]}}), "$.extra.a"),
        (CBOR, cbor2.dumps({"extra": [-HUGE]}), "$.extra[0]"),
        (MSGPACK, msgpack.packb({"extra": {"x": [math.inf]}}), "$.extra.x[0]"),
        (CBOR, cbor2.dumps({"undeclared": math.inf}), "$.undeclared"),
        (CBOR, cbor2.dumps({"extra": cbor2.CBORTag(0, "9999-12-31T23:00:00-05:00")}), "$.extra"),
    ],
)
def test_what_only_binary_formats_carry_is_refused_and_reads_keep_working(
    http: httpx.Client, content_type: str, body: bytes, path: str
) -> None:
    dog = f"/Dog/{next(_ids)}"
    problem = refused(http.put(dog, content=body, headers={"content-type": content_type}))
    assert paths(problem) == {path}
    assert http.get(dog).status_code == 404
    assert http.get("/Dog/").status_code == 200


def test_a_bigint_of_4300_digits_round_trips(http: httpx.Client) -> None:
    dog = f"/Dog/{next(_ids)}"
    chip = -(10**4300 - 1)
    response = http.put(dog, content=cbor2.dumps({"chip": chip}), headers={"content-type": CBOR})
    assert response.status_code == 204, response.text
    assert http.get(dog).json()["chip"] == chip


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"extra": {"a": 1e400}}', "the number at byte 16 (1e400) is too large"),
        (b'{"name": "1e999", "chip": -' + b"9" * 5001 + b"}", "at byte 26 has 5,001 digits"),
    ],
    ids=["float", "digits"],
)
def test_a_json_number_too_large_to_read_is_named_by_its_byte(
    http: httpx.Client, raw: bytes, words: str
) -> None:
    dog = f"/Dog/{next(_ids)}"
    problem = refused(http.put(dog, content=raw, headers={"content-type": "application/json"}))
    assert words in problem["detail"]
    assert http.get(dog).status_code == 404


@pytest.mark.parametrize("born", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00"])
def test_a_date_whose_offset_leaves_the_years_1_to_9999_is_400(
    http: httpx.Client, born: str
) -> None:
    dog = f"/Dog/{next(_ids)}"
    problem = refused(http.put(dog, json={"born": born}))
    assert paths(problem) == {"$.born"}
    assert http.get(dog).status_code == 404


def test_a_type_that_contains_itself_sent_hundreds_deep_is_400(http: httpx.Client) -> None:
    node = '{"next": ' * 500 + '{"value": 1}' + "}" * 500
    dog = f"/Dog/{next(_ids)}"
    body = f'{{"node": {node}}}'.encode()
    problem = refused(http.put(dog, content=body, headers={"content-type": "application/json"}))
    assert "too deep to check" in problem["detail"]
    assert http.get(dog).status_code == 404


@pytest.mark.parametrize("escape", ["%FF", "%FE", "a%C3", "%EF%BF%BD"])
def test_a_key_that_is_not_utf8_once_decoded_is_400(http: httpx.Client, escape: str) -> None:
    problem = refused(http.put(f"/Owner/{escape}", json={"name": "nobody"}))
    assert "not UTF-8" in problem["detail"]
    assert http.get("/Owner/").json() == []


def test_a_utf8_escaped_key_is_one_record(http: httpx.Client) -> None:
    assert http.put("/Owner/caf%C3%A9", json={"name": "Café"}).status_code == 204
    assert http.get("/Owner/caf%C3%A9").json() == {"name": "Café", "code": "café"}
    assert http.delete("/Owner/caf%C3%A9").status_code == 204


def test_post_refuses_a_key_holding_the_replacement_character(http: httpx.Client) -> None:
    problem = refused(http.post("/Owner/", json={"code": "x\ufffd", "name": "nobody"}))
    assert "U+FFFD" in problem["detail"]
    assert http.get("/Owner/").json() == []


def test_a_body_key_unlike_the_urls_is_told_with_the_other_mistakes(http: httpx.Client) -> None:
    dog = next(_ids)
    problem = refused(http.put(f"/Dog/{dog}", json={"id": dog + 1, "name": 5, "born": "x"}))
    assert paths(problem) == {"$.id", "$.name", "$.born"}
    [mismatch] = [error for error in problem["errors"] if error["path"] == "$.id"]
    assert f"differs from the URL's ({dog})" in mismatch["message"]
    assert http.get(f"/Dog/{dog}").status_code == 404


def test_a_key_mismatch_shows_its_values_as_json(http: httpx.Client) -> None:
    problem = refused(http.put("/Owner/x", json={"code": None, "name": "n"}))
    assert "the body's code (null) differs from the URL's (\"x\")" in problem["detail"]
    assert http.get("/Owner/x").status_code == 404


def test_a_key_too_large_for_the_key_store_is_400_on_every_path(http: httpx.Client) -> None:
    huge = 10**700
    for response in (
        http.get(f"/Big/{huge}"),
        http.put(f"/Big/{huge}", json={"name": "x"}),
        http.post("/Big/", json={"id": huge, "name": "x"}),
        http.post("/Big/", json={"id": str(huge), "name": "x"}),
    ):
        assert "the key store cannot hold it" in refused(response)["detail"]
    assert http.get("/Big/").json() == []
    assert http.put(f"/Big/{10**600}", json={"name": "fits"}).status_code == 204
