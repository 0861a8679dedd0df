"""Wire formats against a real server: JSON, CBOR, MessagePack in and out, CSV out.

Round trips cover the awkward types (Date, Bytes, BigInt beyond 64 bits, Long,
nested objects, lists) for every pair of formats; collections are parsed back
from each streamed form; negotiation, 406, 415 and malformed bodies are checked.
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import cbor2
import httpx
import msgpack
import pytest

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  born: Date
  photo: Bytes
  chip: BigInt
  steps: Long
  tags: [String]
  address: Address
  extra: Any
}

type Item @table @export {
  id: Int @primaryKey
  label: String
  at: Date
}

type Address {
  street: String
  postcode: String!
}
"""

AUTH = ("admin", "admin-password")
PROBLEM = "application/problem+json"
JSON_TYPE, CBOR_TYPE, MSGPACK_TYPE = "application/json", "application/cbor", "application/x-msgpack"
FORMATS = (JSON_TYPE, CBOR_TYPE, MSGPACK_TYPE)
DOG_COLUMNS = ["id", "name", "born", "photo", "chip", "steps", "tags", "address", "extra"]
ITEMS = 300

BORN = datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
PHOTO = bytes(range(256))
CHIP = 2**70 + 12345
STEPS = 2**62 + 7

_ids = itertools.count(5000)


def new_id() -> int:
    return next(_ids)


def _msgpack_ext(code: int, data: bytes) -> Any:
    assert code == 1, f"unexpected extension type {code}"
    return int.from_bytes(data, "big", signed=True)


def _msgpack_pack_default(value: Any) -> Any:
    if isinstance(value, int):
        size = (value.bit_length() + 8) // 8
        return msgpack.ExtType(1, value.to_bytes(size, "big", signed=True))
    raise TypeError(type(value))


ENCODE: dict[str, Callable[[Any], bytes]] = {
    JSON_TYPE: lambda value: json.dumps(value, default=_json_default).encode(),
    CBOR_TYPE: lambda value: cbor2.dumps(value, datetime_as_timestamp=True),
    MSGPACK_TYPE: lambda value: msgpack.packb(value, datetime=True, default=_msgpack_pack_default),
}

DECODE: dict[str, Callable[[bytes], Any]] = {
    JSON_TYPE: json.loads,
    CBOR_TYPE: cbor2.loads,
    MSGPACK_TYPE: lambda data: msgpack.unpackb(
        data, timestamp=3, ext_hook=_msgpack_ext, strict_map_key=False
    ),
}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(type(value))


def sample(dog_id: int) -> dict[str, Any]:
    return {
        "id": dog_id,
        "name": "Typed",
        "born": BORN,
        "photo": PHOTO,
        "chip": CHIP,
        "steps": STEPS,
        "tags": ["a", "b"],
        "address": {"street": "High St", "postcode": "N1"},
        "extra": {"nested": [1, {"deep": True}], "negative": -(2**80)},
    }


def normalized(record: dict[str, Any]) -> dict[str, Any]:
    """A decoded record with JSON's strings turned back into dates and bytes."""
    record = dict(record)
    if isinstance(record.get("born"), str):
        record["born"] = datetime.fromisoformat(record["born"])
    if isinstance(record.get("photo"), str):
        record["photo"] = base64.b64decode(record["photo"])
    return record


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    body = response.json()
    assert body["status"] == status
    return body


@pytest.fixture(scope="module")
def items(kiln_server: Any) -> list[dict[str, Any]]:
    """``ITEMS`` Item records, more than one scan chunk, each with a Date."""
    records = []
    with httpx.Client(base_url=kiln_server.url, auth=AUTH, timeout=10) as client:
        for n in range(ITEMS):
            at = f"2024-05-01T10:00:{n % 60:02d}Z"
            response = client.put(f"/Item/{n}", json={"label": f'item, "{n}"', "at": at})
            assert response.status_code == 204
            records.append({"label": f'item, "{n}"', "at": at, "id": n})
    return records


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("sent", "received"), itertools.product(FORMATS, FORMATS))
def test_round_trip_of_awkward_types(http: httpx.Client, sent: str, received: str) -> None:
    dog_id = new_id()
    record = sample(dog_id)
    response = http.put(
        f"/Dog/{dog_id}", content=ENCODE[sent](record), headers={"content-type": sent}
    )
    assert response.status_code == 204, response.text
    got = http.get(f"/Dog/{dog_id}", headers={"accept": received})
    assert got.status_code == 200
    assert got.headers["content-type"] == received
    assert got.headers["vary"].startswith("Accept")
    assert normalized(DECODE[received](got.content)) == record


def test_cbor_wire_types(http: httpx.Client) -> None:
    """A Date is tag 1 (epoch seconds); a BigInt beyond 64 bits a bignum (tags 2/3)."""
    dog_id = new_id()
    http.put(f"/Dog/{dog_id}", json=json.loads(ENCODE[JSON_TYPE](sample(dog_id))))
    body = http.get(f"/Dog/{dog_id}", headers={"accept": CBOR_TYPE}).content
    assert b"\xc1\xfb" + struct.pack(">d", BORN.timestamp()) in body  # tag 1, a double
    assert b"\xc2\x49" + CHIP.to_bytes(9, "big") in body  # tag 2, 9 bytes
    assert b"\xc3\x4a" + (2**80 - 1).to_bytes(10, "big") in body  # tag 3: -1 - n
    assert b"\x59\x01\x00" + PHOTO in body  # a byte string of 256 bytes
    assert cbor2.loads(body)["steps"] == STEPS


def test_msgpack_wire_types(http: httpx.Client) -> None:
    """A Date is the timestamp extension, Bytes ``bin``, a BigInt extension type 1."""
    dog_id = new_id()
    http.put(f"/Dog/{dog_id}", json=json.loads(ENCODE[JSON_TYPE](sample(dog_id))))
    body = http.get(f"/Dog/{dog_id}", headers={"accept": MSGPACK_TYPE}).content
    raw = msgpack.unpackb(body, timestamp=0)
    assert isinstance(raw["born"], msgpack.Timestamp)
    assert raw["born"].to_datetime() == BORN
    assert raw["chip"] == msgpack.ExtType(1, CHIP.to_bytes(9, "big", signed=True))
    assert raw["photo"] == PHOTO
    assert raw["steps"] == STEPS


def test_msgpack_big_ints_may_be_sent_as_decimal_text(http: httpx.Client) -> None:
    dog_id = new_id()
    body = msgpack.packb({"name": "Text", "chip": str(CHIP)})
    response = http.put(f"/Dog/{dog_id}", content=body, headers={"content-type": MSGPACK_TYPE})
    assert response.status_code == 204, response.text
    assert http.get(f"/Dog/{dog_id}").json()["chip"] == CHIP


def test_msgpack_alias_media_type(http: httpx.Client) -> None:
    dog_id = new_id()
    body = msgpack.packb({"name": "Alias"})
    response = http.put(
        f"/Dog/{dog_id}", content=body, headers={"content-type": "application/msgpack"}
    )
    assert response.status_code == 204, response.text
    got = http.get(f"/Dog/{dog_id}", headers={"accept": "application/msgpack"})
    assert got.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(got.content) == {"id": dog_id, "name": "Alias"}


def test_post_in_cbor_answers_in_cbor(http: httpx.Client) -> None:
    dog_id = new_id()
    response = http.post(
        "/Dog/",
        content=cbor2.dumps({"id": dog_id, "name": "Posted", "born": BORN}),
        headers={"content-type": CBOR_TYPE, "accept": CBOR_TYPE},
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == CBOR_TYPE
    assert cbor2.loads(response.content) == {"id": dog_id, "name": "Posted", "born": BORN}


def _doubling(levels: int) -> list[Any]:
    """A list holding the same list twice per level: 2**levels leaves when resolved."""
    value: list[Any] = ["x"]
    for _ in range(levels):
        value = [value, value]
    return value


@pytest.mark.parametrize(
    ("body", "tag"),
    [
        (cbor2.dumps({"name": "Bomb", "extra": _doubling(40)}, value_sharing=True), 28),
        (cbor2.dumps({"name": "Bomb", "extra": ["y" * 60_000] * 150}, string_referencing=True), 25),
        # a decimal fraction of a 400 KB number: seconds of quadratic arithmetic per body
        (cbor2.dumps({"name": "Bomb", "extra": cbor2.CBORTag(4, [-3, 7**470_000])}), 4),
    ],
    ids=["shared-values", "string-references", "decimal-fraction"],
)
def test_cbor_references_are_refused_before_they_expand(
    kiln_server: Any, http: httpx.Client, body: bytes, tag: int
) -> None:
    """A few hundred bytes of CBOR references stand for 2**40 values (shared values) or
    gigabytes of text (string references), and a fraction of huge numbers takes seconds
    to compute: refused while decoding, with or without credentials, and the server
    answers the next request at once."""
    dog_id = new_id()
    headers = {"content-type": CBOR_TYPE}
    with httpx.Client(base_url=kiln_server.url, timeout=10) as anonymous:
        refused = anonymous.put(f"/Dog/{dog_id}", content=body, headers=headers)
    assert refused.status_code == 401  # refused before the body is even read
    answer = http.put(f"/Dog/{dog_id}", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert f"(CBOR tag {tag}), which kiln does not read" in answer.json()["detail"]
    assert http.get(f"/Dog/{dog_id}").status_code == 404
    assert http.get("/_health").status_code == 200


# --------------------------------------------------------------------------- CSV


def test_a_record_as_csv_has_the_declared_attributes_in_schema_order(
    http: httpx.Client,
) -> None:
    dog_id = new_id()
    record = json.loads(ENCODE[JSON_TYPE](sample(dog_id)))
    record["undeclared"] = "left out"
    http.put(f"/Dog/{dog_id}", json=record)
    response = http.get(f"/Dog/{dog_id}", headers={"accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    header, row = list(csv.reader(io.StringIO(response.text)))
    assert header == DOG_COLUMNS
    cells = dict(zip(header, row, strict=True))
    assert cells["id"] == str(dog_id)
    assert datetime.fromisoformat(cells["born"]) == BORN
    assert cells["born"].endswith("Z")
    assert base64.b64decode(cells["photo"]) == PHOTO
    assert cells["chip"] == str(CHIP)
    assert json.loads(cells["tags"]) == ["a", "b"]
    assert json.loads(cells["address"]) == {"street": "High St", "postcode": "N1"}
    assert json.loads(cells["extra"]) == {"nested": [1, {"deep": True}], "negative": -(2**80)}


def test_missing_attributes_are_empty_csv_cells(http: httpx.Client) -> None:
    dog_id = new_id()
    http.put(f"/Dog/{dog_id}", json={"name": "Sparse"})
    rows = list(
        csv.reader(io.StringIO(http.get(f"/Dog/{dog_id}", headers={"accept": "text/csv"}).text))
    )
    assert rows == [DOG_COLUMNS, [str(dog_id), "Sparse", "", "", "", "", "", "", ""]]


def test_a_collection_streams_as_csv_rows(http: httpx.Client, items: list[dict[str, Any]]) -> None:
    response = http.get("/Item/", headers={"accept": "text/csv", "accept-encoding": "identity"})
    assert response.status_code == 200
    assert response.headers.get("content-length")  # under one 64 KiB chunk: sent whole
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["id", "label", "at"]
    assert rows == [
        {"id": str(item["id"]), "label": item["label"], "at": item["at"]} for item in items
    ]


def test_csv_bodies_are_not_read(http: httpx.Client) -> None:
    dog_id = new_id()
    response = http.put(
        f"/Dog/{dog_id}", content=b"id,name\n1,x\n", headers={"content-type": "text/csv"}
    )
    body = assert_problem(response, 415)
    assert CBOR_TYPE in body["detail"]
    assert http.get(f"/Dog/{dog_id}").status_code == 404


# --------------------------------------------------------------------------- streamed collections


def test_a_collection_streams_as_a_json_array(
    http: httpx.Client, items: list[dict[str, Any]]
) -> None:
    response = http.get("/Item/", headers={"accept": JSON_TYPE, "accept-encoding": "identity"})
    assert response.headers.get("content-length")  # under one 64 KiB chunk: sent whole
    assert response.headers["vary"] == "Accept"
    assert response.json() == items


def test_a_collection_streams_as_an_indefinite_cbor_array(
    http: httpx.Client, items: list[dict[str, Any]]
) -> None:
    response = http.get("/Item/", headers={"accept": CBOR_TYPE, "accept-encoding": "identity"})
    assert response.headers.get("content-length")  # under one 64 KiB chunk: sent whole
    assert response.headers["content-type"] == CBOR_TYPE
    body = response.content
    assert (body[0], body[-1]) == (0x9F, 0xFF)
    decoded = cbor2.loads(body)
    assert [{**record, "at": record["at"].isoformat()} for record in decoded] == [
        {**item, "at": item["at"].replace("Z", "+00:00")} for item in items
    ]


def test_a_collection_streams_as_concatenated_msgpack(
    http: httpx.Client, items: list[dict[str, Any]]
) -> None:
    response = http.get("/Item/", headers={"accept": MSGPACK_TYPE, "accept-encoding": "identity"})
    assert response.headers.get("content-length")  # under one 64 KiB chunk: sent whole
    assert response.content[0] & 0xF0 == 0x80  # a fixmap: the first record, no array header
    unpacker = msgpack.Unpacker(timestamp=3)
    unpacker.feed(response.content)
    decoded = list(unpacker)
    assert len(decoded) == ITEMS
    assert [record["id"] for record in decoded] == [item["id"] for item in items]
    assert decoded[5]["at"] == datetime.fromisoformat(items[5]["at"])


@pytest.mark.parametrize("accept", [JSON_TYPE, CBOR_TYPE, MSGPACK_TYPE, "text/csv"])
def test_an_empty_collection_in_every_format(http: httpx.Client, accept: str) -> None:
    response = http.get("/Item/?limit(0)", headers={"accept": accept})
    assert response.status_code == 200
    expected = {JSON_TYPE: b"[]", CBOR_TYPE: b"\x9f\xff", MSGPACK_TYPE: b""}
    assert response.content == expected.get(accept, b"id,label,at\r\n")


# --------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, JSON_TYPE),
        ("*/*", JSON_TYPE),
        ("application/*", JSON_TYPE),
        ("text/*", "text/csv"),
        ("application/json;q=0.5, application/cbor", CBOR_TYPE),
        ("application/cbor;q=0, application/*", JSON_TYPE),
        ("application/json;q=0, application/*;q=0.8", CBOR_TYPE),
        ("*/*;q=0.1, text/csv", "text/csv"),
        ("text/html, application/x-msgpack;q=0.3", MSGPACK_TYPE),
        ("APPLICATION/CBOR", CBOR_TYPE),
    ],
)
def test_accept_is_negotiated_with_q_values_and_wildcards(
    http: httpx.Client, accept: str | None, chosen: str
) -> None:
    dog_id = new_id()
    http.put(f"/Dog/{dog_id}", json={"name": "Negotiated"})
    headers = {} if accept is None else {"accept": accept}
    response = http.get(f"/Dog/{dog_id}", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == chosen
    assert response.headers["vary"] == "Accept"


@pytest.mark.parametrize("accept", ["text/html", "application/json;q=0", "image/*, text/plain"])
def test_an_accept_nothing_satisfies_is_406(http: httpx.Client, accept: str) -> None:
    dog_id = new_id()
    http.put(f"/Dog/{dog_id}", json={"name": "Unacceptable"})
    body = assert_problem(http.get(f"/Dog/{dog_id}", headers={"accept": accept}), 406)
    for media_type in (JSON_TYPE, CBOR_TYPE, MSGPACK_TYPE, "text/csv"):
        assert media_type in body["detail"]
    assert_problem(http.get("/Dog/", headers={"accept": accept}), 406)


def test_a_post_refused_with_406_writes_nothing(http: httpx.Client) -> None:
    dog_id = new_id()
    response = http.post(
        "/Dog/", json={"id": dog_id, "name": "Nope"}, headers={"accept": "text/html"}
    )
    assert_problem(response, 406)
    assert http.get(f"/Dog/{dog_id}").status_code == 404


def test_errors_stay_problem_json_whatever_the_accept(http: httpx.Client) -> None:
    for accept in (CBOR_TYPE, MSGPACK_TYPE, "text/csv"):
        assert_problem(http.get(f"/Dog/{new_id()}", headers={"accept": accept}), 404)


# --------------------------------------------------------------------------- bad bodies


@pytest.mark.parametrize(
    ("content_type", "raw", "words"),
    [
        (CBOR_TYPE, b"\xa1\x64name", "CBOR"),
        (CBOR_TYPE, cbor2.dumps({"name": "x"}) + b"\x00", "follow"),
        (CBOR_TYPE, b"", "empty"),
        (CBOR_TYPE, b"\xff", "CBOR"),
        (MSGPACK_TYPE, b"\x81\xa4name", "MessagePack"),
        (MSGPACK_TYPE, msgpack.packb({"name": "x"}) + b"\x01", "trailing"),
        (MSGPACK_TYPE, b"\xc1", "MessagePack"),
        (MSGPACK_TYPE, b"", "empty"),
    ],
)
def test_malformed_binary_bodies_are_400(
    http: httpx.Client, content_type: str, raw: bytes, words: str
) -> None:
    dog_id = new_id()
    response = http.put(f"/Dog/{dog_id}", content=raw, headers={"content-type": content_type})
    body = assert_problem(response, 400)
    assert words in body["detail"]
    assert http.get(f"/Dog/{dog_id}").status_code == 404


@pytest.mark.parametrize(
    ("content_type", "raw", "where"),
    [
        (CBOR_TYPE, cbor2.dumps({"name": "x", "extra": {1, 2}}), "$.extra"),
        (CBOR_TYPE, cbor2.dumps({"name": "x", "extra": {1: "a"}}), "$.extra"),
        (MSGPACK_TYPE, msgpack.packb({"name": "x", "extra": msgpack.ExtType(9, b"?")}), "9"),
        (MSGPACK_TYPE, msgpack.packb({"name": "x", "extra": {1: "a"}}), "$.extra"),
    ],
)
def test_values_a_record_cannot_hold_are_400(
    http: httpx.Client, content_type: str, raw: bytes, where: str
) -> None:
    dog_id = new_id()
    response = http.put(f"/Dog/{dog_id}", content=raw, headers={"content-type": content_type})
    body = assert_problem(response, 400)
    assert where in body["detail"]
    assert http.get(f"/Dog/{dog_id}").status_code == 404


@pytest.mark.parametrize("content_type", [CBOR_TYPE, MSGPACK_TYPE])
def test_binary_bodies_are_validated_like_json(http: httpx.Client, content_type: str) -> None:
    dog_id = new_id()
    raw = ENCODE[content_type]({"born": "someday", "steps": "many", "tags": [1]})
    response = http.put(f"/Dog/{dog_id}", content=raw, headers={"content-type": content_type})
    body = assert_problem(response, 400)
    assert {error["path"] for error in body["errors"]} == {
        "$.name",
        "$.born",
        "$.steps",
        "$.tags[0]",
    }
    assert http.get(f"/Dog/{dog_id}").status_code == 404


@pytest.mark.parametrize("content_type", ["application/xml", "text/plain", "application/cbor2"])
def test_an_unknown_content_type_is_415_naming_the_supported_ones(
    http: httpx.Client, content_type: str
) -> None:
    dog_id = new_id()
    response = http.put(f"/Dog/{dog_id}", content=b"{}", headers={"content-type": content_type})
    body = assert_problem(response, 415)
    for media_type in (JSON_TYPE, CBOR_TYPE, MSGPACK_TYPE):
        assert media_type in body["detail"]
    assert http.get(f"/Dog/{dog_id}").status_code == 404


def test_csv_columns_follow_select(http: httpx.Client) -> None:
    key = 7_000_001
    assert http.put(f"/Dog/{key}", json={"name": "Csv", "breed": "pug"}).status_code == 204
    for query, header, row in (
        ("select(name,breed)", ["name", "breed"], ["Csv", "pug"]),
        ("select(name)", ["name"], ["Csv"]),
        ("select([breed,name])", ["breed", "name"], ["pug", "Csv"]),
    ):
        response = http.get(f"/Dog/?id={key}&{query}", headers={"Accept": "text/csv"})
        assert response.status_code == 200, response.text
        lines = list(csv.reader(io.StringIO(response.text)))
        assert lines == [header, row], (query, lines)
