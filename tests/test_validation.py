"""Tests for ``kiln.validation``: a record checked against its table definition."""

from __future__ import annotations

import copy
import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from kiln.errors import FieldError, ValidationError
from kiln.schema import Schema, parse_schema
from kiln.validation import validate_record

SCHEMA = parse_schema(
    """
    type Dog @table(table: "dogs") @export @sealed {
      id: Int @primaryKey
      name: String!
      breed: String @indexed
      age: Int
      weight: Float
      birthday: Date
      photo: Bytes
      tags: [String] @indexed
      address: Address
      created: Long @createdTime
      updated: Long! @updatedTime
    }
    type Address { street: String  zip: String!  geo: Geo }
    type Geo @sealed { lat: Float!  lon: Float! }

    type Thing @table {
      s: String
      i: ID
      int: Int
      long: Long
      big: BigInt
      f: Float
      ok: Boolean
      d: Date
      by: Bytes
      any: Any
      ints: [Int!]
      maybe: [Int]
      names: [String]!
      items: [Item!]
      tree: Tree
    }
    type Item { n: Int!  label: String }
    type Tree { value: Int  children: [Tree!] }

    type Keyed @table { code: String! @primaryKey  label: String! }
    """
)
DOG = SCHEMA.tables["Dog"]
THING = SCHEMA.tables["Thing"]

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


def thing(**values: Any) -> dict[str, Any]:
    """Validate a Thing record (``names`` is required, so it is filled in)."""
    return validate_record(THING, SCHEMA, {"names": [], **values})


def errors_of(table_name: str, data: object, *, partial: bool = False) -> list[FieldError]:
    """The field errors validating ``data`` raises."""
    with pytest.raises(ValidationError) as info:
        validate_record(SCHEMA.tables[table_name], SCHEMA, data, partial=partial)
    assert info.value.status == 400
    return list(info.value.errors)


def thing_error(attribute: str, value: Any) -> FieldError:
    """The one field error of a Thing record whose ``attribute`` is ``value``."""
    errors = errors_of("Thing", {"names": [], attribute: value})
    assert len(errors) == 1, errors
    return errors[0]


# --------------------------------------------------------------------------- whole records


def test_valid_record_is_converted_and_returned_in_input_order() -> None:
    data = {
        "tags": ["good", None],
        "name": "Rex",
        "age": 3.0,
        "weight": 30,
        "birthday": "2024-05-01T12:00:00+02:00",
        "photo": "aGk",
        "address": {"zip": "12345", "geo": {"lat": 1, "lon": 2.5}},
        "id": 7,
    }
    record = validate_record(DOG, SCHEMA, data)
    assert record == {
        "tags": ["good", None],
        "name": "Rex",
        "age": 3,
        "weight": 30.0,
        "birthday": datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        "photo": b"hi",
        "address": {"zip": "12345", "geo": {"lat": 1.0, "lon": 2.5}},
        "id": 7,
    }
    assert list(record) == list(data)
    assert type(record["age"]) is int
    assert type(record["weight"]) is float


def test_input_is_not_mutated() -> None:
    data = {
        "name": "Rex",
        "age": 3.0,
        "tags": ["a"],
        "address": {"zip": "1", "geo": {"lat": 1, "lon": 2}},
        "created": 5,
        "photo": "aGk=",
    }
    before = copy.deepcopy(data)
    record = validate_record(DOG, SCHEMA, data)
    assert data == before
    assert record is not data
    assert record["tags"] is not data["tags"]
    assert record["address"] is not data["address"]
    assert record["address"]["geo"] is not data["address"]["geo"]


def test_input_is_not_mutated_when_invalid() -> None:
    data = {"name": None, "age": "old", "address": {"zip": 5}}
    before = copy.deepcopy(data)
    with pytest.raises(ValidationError):
        validate_record(DOG, SCHEMA, data)
    assert data == before


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        ([1, 2], "an array"),
        ("Rex", '"Rex"'),
        (5, "5"),
        (None, "null"),
        (True, "true"),
    ],
)
def test_body_must_be_an_object(data: object, shown: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_record(DOG, SCHEMA, data)
    message = f"expected a JSON object with the attributes of Dog, got {shown}"
    assert info.value.errors == (FieldError("$", message),)
    assert info.value.detail == f"the body is not a Dog record: {message}"


def test_every_violation_is_reported_together() -> None:
    with pytest.raises(ValidationError) as info:
        validate_record(
            DOG,
            SCHEMA,
            {
                "age": "old",
                "weight": "heavy",
                "tags": ["ok", 5, "fine", True],
                "address": {"street": 1, "geo": {"lat": "north"}},
                "colour": "brown",
            },
        )
    err = info.value
    assert err.detail == "10 invalid fields in the Dog record"
    assert err.hint == "each entry of `errors` names a field and what to send instead"
    assert [e.path for e in err.errors] == [
        "$.age",
        "$.weight",
        "$.tags[1]",
        "$.tags[3]",
        "$.address.street",
        "$.address.geo.lat",
        "$.address.geo.lon",
        "$.address.zip",
        "$.colour",
        "$.name",
    ]


def test_error_messages_and_order() -> None:
    errors = errors_of(
        "Dog",
        {"age": "old", "tags": ["ok", 5], "address": {"street": 1}, "colour": "brown"},
    )
    assert errors == [
        FieldError(
            "$.age",
            '`age` expects Int (a whole number from -2147483648 to 2147483647), got "old"; '
            "send a number",
        ),
        FieldError("$.tags[1]", "`tags[1]` expects String (a string), got 5; send a string"),
        FieldError(
            "$.address.street", "`address.street` expects String (a string), got 1; send a string"
        ),
        FieldError("$.address.zip", "`address.zip` is required (String!); send a value"),
        FieldError(
            "$.colour",
            "`colour` is not an attribute of Dog (the table is @sealed); "
            "remove it, or declare it in `type Dog`",
        ),
        FieldError("$.name", "`name` is required (String!); send a value"),
    ]


def test_single_violation_detail() -> None:
    with pytest.raises(ValidationError) as info:
        validate_record(DOG, SCHEMA, {})
    assert info.value.detail == "1 invalid field in the Dog record"
    assert info.value.errors == (
        FieldError("$.name", "`name` is required (String!); send a value"),
    )


# --------------------------------------------------------------------------- required / partial


def test_required_missing_and_null() -> None:
    assert errors_of("Dog", {"name": None}) == [
        FieldError("$.name", "`name` is required (String!); send a value, not null")
    ]


def test_partial_allows_missing_required_attributes() -> None:
    assert validate_record(DOG, SCHEMA, {"age": 4}, partial=True) == {"age": 4}
    assert validate_record(DOG, SCHEMA, {}, partial=True) == {}


def test_partial_still_rejects_null_for_required() -> None:
    assert errors_of("Dog", {"name": None}, partial=True) == [
        FieldError("$.name", "`name` is required (String!); send a value, not null")
    ]


def test_partial_still_checks_types_and_nested_objects_whole() -> None:
    errors = errors_of("Dog", {"age": "x", "address": {"street": "Main"}}, partial=True)
    assert [e.path for e in errors] == ["$.age", "$.address.zip"]


def test_null_for_optional_attributes_is_kept() -> None:
    record = validate_record(DOG, SCHEMA, {"name": "Rex", "age": None, "address": None})
    assert record == {"name": "Rex", "age": None, "address": None}


def test_primary_key_is_never_required() -> None:
    keyed = SCHEMA.tables["Keyed"]
    assert validate_record(keyed, SCHEMA, {"label": "x"}) == {"label": "x"}
    assert validate_record(keyed, SCHEMA, {"label": "x", "code": None}) == {
        "label": "x",
        "code": None,
    }
    assert validate_record(keyed, SCHEMA, {"label": "x", "code": "a"})["code"] == "a"
    assert errors_of("Keyed", {"code": 5, "label": "x"}) == [
        FieldError("$.code", "`code` expects String (a string), got 5; send a string")
    ]


def test_implicit_id_accepts_a_client_key() -> None:
    assert thing(id="abc")["id"] == "abc"
    assert thing_error("id", 5).message == "`id` expects ID (a string), got 5; send a string"


def test_required_list() -> None:
    errors = errors_of("Thing", {})
    assert errors == [FieldError("$.names", "`names` is required ([String]!); send a value")]


# --------------------------------------------------------------------------- created / updated


def test_created_and_updated_are_dropped() -> None:
    record = validate_record(
        DOG, SCHEMA, {"name": "Rex", "created": "whenever", "updated": 123, "age": 1}
    )
    assert record == {"name": "Rex", "age": 1}


def test_required_updated_time_is_not_required_from_the_client() -> None:
    assert validate_record(DOG, SCHEMA, {"name": "Rex"}) == {"name": "Rex"}
    assert validate_record(DOG, SCHEMA, {"name": "Rex", "updated": None}) == {"name": "Rex"}


# --------------------------------------------------------------------------- sealed


def test_sealed_table_suggests_the_closest_name() -> None:
    assert errors_of("Dog", {"name": "Rex", "bread": "lab"}) == [
        FieldError(
            "$.bread",
            "`bread` is not an attribute of Dog (the table is @sealed); did you mean `breed`?",
        )
    ]


def test_sealed_table_odd_keys() -> None:
    errors = errors_of("Dog", {"name": "Rex", "two words": 1})
    assert errors[0].path == '$["two words"]'
    assert errors[0].message.startswith('`$["two words"]` is not an attribute of Dog')


def test_unsealed_keeps_undeclared_attributes_as_sent() -> None:
    nested = {"deep": [1, {"x": 2}]}
    record = thing(color="brown", extra=nested, items=[{"n": 1, "note": "kept"}])
    assert record["color"] == "brown"
    assert record["extra"] is nested
    assert record["items"] == [{"n": 1, "note": "kept"}]


def test_nested_unsealed_type_keeps_extra_attributes() -> None:
    record = validate_record(DOG, SCHEMA, {"name": "Rex", "address": {"zip": "1", "floor": 3}})
    assert record["address"] == {"zip": "1", "floor": 3}


def test_nested_sealed_type() -> None:
    errors = errors_of(
        "Dog", {"name": "Rex", "address": {"zip": "1", "geo": {"lat": 1, "lon": 2, "alt": 3}}}
    )
    assert errors == [
        FieldError(
            "$.address.geo.alt",
            "`address.geo.alt` is not an attribute of Geo (the type is @sealed); did you mean "
            "`lat`?",
        )
    ]


# --------------------------------------------------------------------------- strings and IDs


def test_string_and_id() -> None:
    assert thing(s="", i="abc") == {"names": [], "s": "", "i": "abc"}
    assert thing_error("s", 5) == FieldError(
        "$.s", "`s` expects String (a string), got 5; send a string"
    )
    assert thing_error("i", 5.5).message == "`i` expects ID (a string), got 5.5; send a string"
    assert thing_error("s", ["a"]).message.endswith("got an array; send a string")
    assert thing_error("s", {"a": 1}).message.endswith("got an object; send a string")
    assert thing_error("s", True).message.endswith("got true; send a string")


def test_long_values_are_truncated_in_messages() -> None:
    message = thing_error("int", "x" * 100).message
    assert f'got "{"x" * 37}..."; send a number' in message
    big = thing_error("long", 10**100).message
    assert "got a whole number of about 100 digits, which is out of range" in big


# --------------------------------------------------------------------------- Int / Long


@pytest.mark.parametrize("value", [0, 1, -1, INT_MIN, INT_MAX])
def test_int_accepted(value: int) -> None:
    assert thing(int=value)["int"] == value


def test_int_integral_float_becomes_int() -> None:
    result = thing(int=3.0)["int"]
    assert result == 3
    assert type(result) is int
    assert type(thing(int=-0.0)["int"]) is int


@pytest.mark.parametrize("value", [INT_MIN - 1, INT_MAX + 1, 2.0**31])
def test_int_out_of_range(value: float) -> None:
    assert thing_error("int", value).message == (
        f"`int` expects Int (a whole number from -2147483648 to 2147483647), "
        f"got {value!r}, which is out of range; send a number in that range, "
        "or declare the attribute as Long"
    )


def test_int_rejects() -> None:
    prefix = "`int` expects Int (a whole number from -2147483648 to 2147483647), got "
    assert thing_error("int", True).message == prefix + "true; send a number"
    assert thing_error("int", "3").message == prefix + '"3"; send a number'
    assert thing_error("int", 3.5).message == (
        prefix + "3.5, which is not a whole number; send a whole number"
    )
    assert thing_error("int", math.inf).message == (
        prefix + "Infinity, which is not a whole number; send a whole number"
    )
    assert thing_error("int", math.nan).message.startswith(prefix + "NaN")


@pytest.mark.parametrize("value", [LONG_MIN, LONG_MAX, 0, 2**40])
def test_long_accepted(value: int) -> None:
    assert thing(long=value)["long"] == value


def test_long_integral_float() -> None:
    assert thing(long=1e15)["long"] == 10**15


@pytest.mark.parametrize("value", [LONG_MIN - 1, LONG_MAX + 1])
def test_long_out_of_range(value: int) -> None:
    assert thing_error("long", value).message == (
        f"`long` expects Long (a whole number from {LONG_MIN} to {LONG_MAX}), got {value}, "
        "which is out of range; send a number in that range, or declare the attribute as BigInt"
    )


def test_long_rejects_inexact_floats_and_bools() -> None:
    message = thing_error("long", 1e17).message
    assert message.endswith(
        "got 1e+17, a decimal number too large to be exact; "
        "send it as a whole number without a decimal point"
    )
    assert thing_error("long", False).message.endswith("got false; send a number")


# --------------------------------------------------------------------------- BigInt


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (10**40, 10**40),
        (-(10**40), -(10**40)),
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("-42", -42),
        ("+42", 42),
        ("007", 7),
        (12.0, 12),
    ],
)
def test_bigint_accepted(value: Any, expected: int) -> None:
    result = thing(big=value)["big"]
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", ["12a", "", "1_000", " 1", "1.5", "١٢", "0x10"])
def test_bigint_rejects_strings(value: str) -> None:
    assert thing_error("big", value).message.endswith(
        ', which is not a whole number; send digits with an optional sign, like "-123"'
    )


def test_bigint_rejects_others() -> None:
    expect = "`big` expects BigInt (a whole number, or a string of decimal digits), got "
    assert thing_error("big", True).message == (
        expect + 'true; send a number or a string of digits like "-12345678901234567890"'
    )
    assert thing_error("big", 1.5).message == (
        expect + "1.5, which is not a whole number; send a whole number"
    )
    assert thing_error("big", 1e30).message.endswith(
        "send it as a whole number without a decimal point or as a string of digits"
    )
    assert "too many digits" in thing_error("big", "9" * 5000).message


# --------------------------------------------------------------------------- Float


@pytest.mark.parametrize(
    ("value", "expected"), [(1.5, 1.5), (0, 0.0), (-3, -3.0), (2**60, float(2**60))]
)
def test_float_accepted(value: float, expected: float) -> None:
    result = thing(f=value)["f"]
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(("value", "shown"), [(math.nan, "NaN"), (math.inf, "Infinity")])
def test_float_rejects_non_finite(value: float, shown: str) -> None:
    assert thing_error("f", value).message == (
        f"`f` expects Float (a finite number), got {shown}; "
        "send a finite number (NaN and Infinity cannot be stored)"
    )


def test_float_rejects_others() -> None:
    assert thing_error("f", "1.5").message == (
        '`f` expects Float (a finite number), got "1.5"; send a number'
    )
    assert thing_error("f", True).message.endswith("got true; send a number")
    assert "too large for a Float" in thing_error("f", 10**400).message


# --------------------------------------------------------------------------- Boolean


def test_boolean() -> None:
    assert thing(ok=True)["ok"] is True
    assert thing(ok=False)["ok"] is False
    for value, shown in ((1, "1"), ("true", '"true"'), (0, "0")):
        assert thing_error("ok", value).message == (
            f"`ok` expects Boolean (true or false), got {shown}; send true or false"
        )


# --------------------------------------------------------------------------- Date


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01T10:00:00.250-05:30", datetime(2024, 5, 1, 15, 30, 0, 250000, tzinfo=UTC)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (1714557600000, datetime(2024, 5, 1, 10, tzinfo=UTC)),
        (1714557600000.5, datetime(2024, 5, 1, 10, 0, 0, 500, tzinfo=UTC)),
        (-86400000, datetime(1969, 12, 31, tzinfo=UTC)),
        (datetime(2024, 5, 1, 10), datetime(2024, 5, 1, 10, tzinfo=UTC)),
        (
            datetime(2024, 5, 1, 10, tzinfo=timezone(timedelta(hours=1))),
            datetime(2024, 5, 1, 9, tzinfo=UTC),
        ),
        (date(2024, 5, 1), datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_date_accepted(value: Any, expected: datetime) -> None:
    result = thing(d=value)["d"]
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-05-01T25:00", ""])
def test_date_rejects_strings(value: str) -> None:
    assert thing_error("d", value).message.endswith(
        ', which is not an ISO-8601 date; send a string like "2024-05-01T10:00:00Z" or "2024-05-01"'
    )


def test_date_rejects_others() -> None:
    expect = "`d` expects Date (an ISO-8601 string or epoch milliseconds), got "
    send = 'send a string like "2024-05-01T10:00:00Z" or the milliseconds since 1970-01-01 UTC'
    assert thing_error("d", True).message == expect + "true; " + send
    assert thing_error("d", math.nan).message == expect + "NaN; " + send
    assert thing_error("d", [2024]).message == expect + "an array; " + send
    assert thing_error("d", 10**20).message == (
        expect + "100000000000000000000, which is outside the years 1 to 9999; "
        "send the milliseconds since 1970-01-01 UTC"
    )


# --------------------------------------------------------------------------- Bytes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("aGVsbG8=", b"hello"),
        ("aGVsbG8", b"hello"),
        ("aGk=", b"hi"),
        ("aGk", b"hi"),
        ("", b""),
        ("+/8=", b"\xfb\xff"),
        (b"raw", b"raw"),
        (bytearray(b"raw"), b"raw"),
        (memoryview(b"raw"), b"raw"),
    ],
)
def test_bytes_accepted(value: Any, expected: bytes) -> None:
    result = thing(by=value)["by"]
    assert result == expected
    assert type(result) is bytes


@pytest.mark.parametrize("value", ["@@@@", "a", "-_8=", "aGk=\n", "aGVsbG8===", "é"])
def test_bytes_rejects_invalid_base64(value: str) -> None:
    assert thing_error("by", value).message.endswith(
        ", which is not valid base64; send standard base64 (A-Z, a-z, 0-9, + and /; "
        "the = padding is optional)"
    )


def test_bytes_rejects_others() -> None:
    assert thing_error("by", 5).message == (
        "`by` expects Bytes (a base64 string), got 5; send the bytes base64-encoded"
    )


# --------------------------------------------------------------------------- Any


@pytest.mark.parametrize("value", [1, "x", [1, "a"], {"k": [None]}, True, 1.5, b"x"])
def test_any_accepts_anything(value: Any) -> None:
    assert thing(any=value)["any"] == value


# --------------------------------------------------------------------------- lists


def test_lists() -> None:
    record = thing(ints=[1, 2.0, -3], maybe=[None, 1], names=("a", None))
    assert record == {"names": ["a", None], "ints": [1, 2, -3], "maybe": [None, 1]}
    assert type(record["ints"][1]) is int


def test_list_rejects_non_arrays() -> None:
    assert thing_error("ints", 5) == FieldError(
        "$.ints", "`ints` expects [Int!] (an array), got 5; send an array"
    )
    assert thing_error("maybe", "1,2").message == (
        '`maybe` expects [Int] (an array), got "1,2"; send an array'
    )
    assert thing_error("ints", {"0": 1}).message.endswith("got an object; send an array")


def test_list_item_errors() -> None:
    errors = errors_of("Thing", {"names": [1, "ok"], "ints": [1, None, "x", 2**40]})
    assert errors == [
        FieldError("$.names[0]", "`names[0]` expects String (a string), got 1; send a string"),
        FieldError("$.ints[1]", "`ints[1]` is required (Int!); send a value, not null"),
        FieldError(
            "$.ints[2]",
            '`ints[2]` expects Int (a whole number from -2147483648 to 2147483647), got "x"; '
            "send a number",
        ),
        FieldError(
            "$.ints[3]",
            "`ints[3]` expects Int (a whole number from -2147483648 to 2147483647), "
            "got 1099511627776, which is out of range; send a number in that range, "
            "or declare the attribute as Long",
        ),
    ]


def test_list_of_objects() -> None:
    record = thing(items=[{"n": 1}, {"n": 2.0, "label": "two"}])
    assert record["items"] == [{"n": 1}, {"n": 2, "label": "two"}]
    errors = errors_of("Thing", {"names": [], "items": [{"n": 1}, {}, None, 5, {"n": "x"}]})
    assert [(e.path, e.message) for e in errors] == [
        ("$.items[1].n", "`items[1].n` is required (Int!); send a value"),
        ("$.items[2]", "`items[2]` is required (Item!); send a value, not null"),
        (
            "$.items[3]",
            "`items[3]` expects Item (an object), got 5; send an object with the attributes "
            "of Item",
        ),
        (
            "$.items[4].n",
            '`items[4].n` expects Int (a whole number from -2147483648 to 2147483647), got "x"; '
            "send a number",
        ),
    ]


# --------------------------------------------------------------------------- nested objects


def test_nested_object_rejects_non_objects() -> None:
    errors = errors_of("Dog", {"name": "Rex", "address": ["Main St"]})
    assert errors == [
        FieldError(
            "$.address",
            "`address` expects Address (an object), got an array; "
            "send an object with the attributes of Address",
        )
    ]


def test_recursive_type() -> None:
    tree = {"value": 1, "children": [{"value": 2, "children": [{"value": 3.0}]}]}
    assert thing(tree=tree)["tree"] == {
        "value": 1,
        "children": [{"value": 2, "children": [{"value": 3}]}],
    }
    errors = errors_of(
        "Thing", {"names": [], "tree": {"children": [{"children": [{"value": "deep"}]}]}}
    )
    assert [e.path for e in errors] == ["$.tree.children[0].children[0].value"]


# --------------------------------------------------------------------------- the cache


def test_validator_follows_a_reloaded_schema() -> None:
    first = parse_schema("type Pet @table { age: Int }")
    second = parse_schema("type Pet @table { age: String }")
    assert validate_record(first.tables["Pet"], first, {"age": 1}) == {"age": 1}
    assert validate_record(second.tables["Pet"], second, {"age": "one"}) == {"age": "one"}
    with pytest.raises(ValidationError):
        validate_record(first.tables["Pet"], first, {"age": "one"})


def test_empty_table_schema_object() -> None:
    schema = Schema(tables={}, types={})
    pet = parse_schema("type Pet @table @sealed").tables["Pet"]
    assert validate_record(pet, schema, {"id": "a"}) == {"id": "a"}


# --------------------------------------------------------------------------- what JSON cannot show


def test_a_bigint_of_more_digits_than_json_can_show_is_refused() -> None:
    assert thing(big=10**4299)["big"] == 10**4299
    assert thing(big=-(10**4299) - 1)["big"] == -(10**4299) - 1
    error = thing_error("big", 10**4300)
    assert error.path == "$.big"
    assert "more than 4,300 digits" in error.message
    assert "more than 4,300 digits" in thing_error("big", -(10**4300)).message


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        (math.nan, "$.any", "NaN, which JSON cannot carry"),
        ([1, {"x": math.inf}], "$.any[1].x", "Infinity, which JSON cannot carry"),
        ({"a b": [-math.inf]}, '$.any["a b"][0]', "-Infinity"),
        ({"n": 10**4300}, "$.any.n", "over the 4,300 a stored number may have"),
    ],
)
def test_any_refuses_what_json_cannot_carry_naming_where(value: Any, path: str, words: str) -> None:
    error = thing_error("any", value)
    assert error.path == path
    assert words in error.message


def test_any_reports_every_such_value_in_body_order() -> None:
    errors = errors_of("Thing", {"names": [], "any": [math.nan, 1, {"b": math.inf}, math.nan]})
    assert [error.path for error in errors] == ["$.any[0]", "$.any[2].b", "$.any[3]"]


def test_any_keeps_every_json_value_and_what_binary_formats_add() -> None:
    value = {
        "n": [1, -2.5, "x", None, True, {"deep": [[]]}],
        "at": datetime(2024, 1, 1, tzinfo=UTC),
    }
    assert thing(any=value)["any"] == value


def nested(levels: int, inner: Any = 1) -> Any:
    value = inner
    for _ in range(levels):
        value = [value]
    return value


def test_any_is_checked_all_the_way_down() -> None:
    error = thing_error("any", nested(400, math.nan))
    assert error.path == "$.any" + "[0]" * 400
    assert "NaN" in error.message


def test_any_nests_at_most_500_levels_so_it_can_be_read_back() -> None:
    assert thing(any=nested(500))["any"] == nested(500)
    error = thing_error("any", nested(501))
    assert error.path == "$.any" + "[0]" * 500
    assert "more than 500 levels deep" in error.message


@pytest.mark.parametrize("offset", [-5, 5])
def test_any_refuses_a_moment_its_offset_takes_out_of_the_years(offset: int) -> None:
    at = datetime(
        9999 if offset < 0 else 1,
        12 if offset < 0 else 1,
        31 if offset < 0 else 1,
        23 if offset < 0 else 0,
        tzinfo=timezone(timedelta(hours=offset)),
    )
    error = thing_error("any", {"at": at})
    assert error.path == "$.any.at"
    assert "outside the years 1 to 9999 in UTC" in error.message


def test_undeclared_attributes_of_an_unsealed_table_are_checked_like_any() -> None:
    errors = errors_of("Thing", {"names": [], "note": {"x": math.nan}, "big": 10**4300})
    assert {error.path for error in errors} == {"$.note.x", "$.big"}


def test_a_type_that_contains_itself_sent_too_deep_is_one_clear_error() -> None:
    tree: dict[str, Any] = {"value": 1}
    for _ in range(2000):
        tree = {"children": [tree]}
    errors = errors_of("Thing", {"names": [], "tree": tree})
    assert len(errors) == 1
    assert errors[0].path == "$"
    assert "too deep to check" in errors[0].message


@pytest.mark.parametrize("sent", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00"])
def test_a_date_whose_offset_leaves_the_years_1_to_9999_is_refused(sent: str) -> None:
    error = thing_error("d", sent)
    assert error.path == "$.d"
    assert "outside the years 1 to 9999 in UTC" in error.message
    moment = datetime.fromisoformat(sent)
    assert "outside the years 1 to 9999" in thing_error("d", moment).message
