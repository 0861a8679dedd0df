"""Tests for ``kiln.query.binder``: a parsed query checked against a table and typed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kiln.errors import BadRequest
from kiln.query import And, Condition, Field, Or, Query, Selection, parse_query
from kiln.query.binder import bind
from kiln.schema import parse_schema

SCHEMA = parse_schema(
    """
    type Dog @table @export {
      id: Int @primaryKey
      name: String @indexed
      code: ID
      age: Int
      long: Long
      big: BigInt
      weight: Float
      good: Boolean
      born: Date
      tags: [String]
      scores: [Int]
      misc: Any
      photo: Bytes
      address: Address
    }
    type Address { city: String }
    type Owner @table @sealed { id: ID @primaryKey  name: String  city: String }
    type Vet @table @sealed { id: ID @primaryKey  name: String }
    """
)
DOG = SCHEMA.tables["Dog"]
OWNER = SCHEMA.tables["Owner"]
VET = SCHEMA.tables["Vet"]


def bound(query_string: str, table: Any = DOG) -> Query:
    """``query_string`` bound to ``table``; Dog has the relationship ``owner``."""
    relationships = {"owner": OWNER} if table is DOG else None
    return bind(parse_query(query_string), table, SCHEMA, relationships=relationships)


def value(query_string: str, table: Any = DOG) -> Any:
    where = bound(query_string, table).where
    assert isinstance(where, Condition)
    return where.value


def detail(query_string: str, table: Any = DOG) -> str:
    with pytest.raises(BadRequest) as caught:
        bound(query_string, table)
    assert caught.value.status == 400
    return caught.value.detail


# --------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        ("id=7", 7),
        ("age=-3", -3),
        ("long=9007199254740993", 9007199254740993),
        ("big=123456789012345678901234567890", 123456789012345678901234567890),
        ("weight=4", 4.0),
        ("weight=4.5", 4.5),
        ("weight=-1e3", -1000.0),
        ("good=true", True),
        ("good=false", False),
        ("name=42", "42"),
        ("code=42", "42"),
        ("misc=42", 42),
        ("misc=4.5", 4.5),
        ("misc=true", True),
        ("misc=abc", "abc"),
        ("misc=1.2.3", "1.2.3"),
        ("tags=red", "red"),
        ("scores=9", 9),
    ],
)
def test_values_take_the_declared_type(query_string: str, expected: Any) -> None:
    result = value(query_string)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        ("born=2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("born=2024-05-01T10%3A00%3A00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("born=2024-05-01T12%3A00%3A00%2B02%3A00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("born=1000", datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=1)),
        ("born=-1000", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_dates_become_aware_utc_datetimes(query_string: str, expected: datetime) -> None:
    result = value(query_string)
    assert result == expected
    assert result.tzinfo is not None
    assert result.utcoffset() == UTC.utcoffset(None)


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        ("name=number:5", 5),
        ("name=number:5.5", 5.5),
        ("age=string:5", "5"),
        ("misc=string:true", "true"),
        ("name=boolean:false", False),
        ("name=date:0", datetime(1970, 1, 1, tzinfo=UTC)),
        ("age=null", None),
        ("name=string:null", "null"),
    ],
)
def test_a_forced_prefix_wins(query_string: str, expected: Any) -> None:
    result = value(query_string)
    assert result == expected
    assert type(result) is type(expected)


def test_binding_keeps_structure_paths_and_positions() -> None:
    query = bound("[age=gt=1&lt=5|name=x]&select(name)&limit(2)&sort(-age)")
    assert query.where == Or(
        (
            And(
                (
                    Condition(("age",), "gt", 1, None, 2),
                    Condition(("age",), "lt", 5, None, 11),
                )
            ),
            Condition(("name",), "eq", "x", None, 16),
        )
    )
    assert query.select == Selection((Field("name"),), "value")
    assert (query.start, query.end, query.sort[0].descending) == (0, 2, True)
    assert bound("").where is None


def test_text_comparators_keep_text() -> None:
    assert value("name=sw=12") == "12"
    assert value("misc=ct=12") == "12"
    assert value("code==ab*") == "ab"


def test_a_relationship_path_binds_against_the_target_table() -> None:
    where = bound("owner.name=Ann&owner.id=5").where
    assert where == And(
        (
            Condition(("owner", "name"), "eq", "Ann", None, 1),
            Condition(("owner", "id"), "eq", "5", None, 16),
        )
    )


def test_select_and_sort_accept_declared_names_and_relationships() -> None:
    query = bound("select(name,owner{name,city},address{city},extra)&sort(owner.name,-id)")
    assert query.select is not None and len(query.select.fields) == 4


def test_undeclared_attributes_of_an_unsealed_table_need_a_type() -> None:
    assert value("extra=string:x") == "x"
    assert value("extra=number:3") == 3
    assert value("extra=null") is None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        ("age=x", "query position 1: `age` expects Int (a whole number, like 42), got 'x'"),
        ("age=4.5", "query position 1: `age` expects Int (a whole number, like 42), got '4.5'"),
        (
            "weight=heavy",
            "query position 1: `weight` expects Float (a finite number, like 4.5), got 'heavy'",
        ),
        (
            "weight=1e999",
            "query position 1: `weight` expects Float (a finite number, like 4.5), got '1e999'",
        ),
        ("good=yes", "query position 1: `good` expects Boolean (true or false), got 'yes'"),
        (
            "born=soon",
            "query position 1: `born` expects Date (an ISO-8601 date like "
            "2024-05-01T10%3A00%3A00Z, or epoch milliseconds), got 'soon'",
        ),
        (
            "born=99999999999999999",
            "query position 1: `born` expects Date (an ISO-8601 date like "
            "2024-05-01T10%3A00%3A00Z, or epoch milliseconds), got '99999999999999999'",
        ),
        (
            "name=number:x",
            "query position 1: `name` expects a number (a finite number, like 4.5), got 'x'",
        ),
        ("name=boolean:1", "query position 1: `name` expects a boolean (true or false), got '1'"),
        ("scores=a", "query position 1: `scores` expects Int (a whole number, like 42), got 'a'"),
        (
            "age=sw=1",
            "query position 1: =sw= compares text, but the value for `age` is int; use it on "
            "String, ID or Any attributes, or write string:VALUE",
        ),
        (
            "name=ew=number:1",
            "query position 1: =ew= compares text, but the value for `name` is int; use it on "
            "String, ID or Any attributes, or write string:VALUE",
        ),
        (
            "good=ct=true",
            "query position 1: =ct= compares text, but the value for `good` is bool; use it on "
            "String, ID or Any attributes, or write string:VALUE",
        ),
        ("name=ct=null", "query position 1: `name` can only be compared with null by = or !="),
        ("age=gt=null", "query position 1: `age` can only be compared with null by = or !="),
        (
            "photo=x",
            "query position 1: `photo` is Bytes, which a condition cannot compare; query a "
            "String, ID, number, Boolean, Date or Any attribute",
        ),
        (
            "address=x",
            "query position 1: `address` is Address, which a condition cannot compare; query a "
            "String, ID, number, Boolean, Date or Any attribute",
        ),
        (
            "address.city=x",
            "query position 1: `address.city`: `address` is not a relationship of Dog; dot paths "
            "go through @relationship attributes",
        ),
        (
            "owner=1",
            "query position 1: `owner` is a relationship of Dog; name one of its attributes, like "
            "`owner.id`",
        ),
        (
            "select(age{x})",
            "select(): `age` is Int, not an object; only relationships and object attributes take "
            "{...}: write `age`",
        ),
        (
            "sort(address)",
            "query position 6: cannot sort by `address`, an object (Address); sort by a scalar "
            "attribute",
        ),
    ],
)
def test_error_details(query_string: str, expected: str) -> None:
    assert detail(query_string) == expected


def test_an_unknown_attribute_lists_the_attributes_closest_first() -> None:
    assert detail("age=1&nmae=Ann") == (
        "query position 7: unknown attribute `nmae` of Dog; did you mean `name`? "
        "The attributes of Dog are: name, id, code, age, long, big, weight, good, born, tags, "
        "scores, misc, photo, address, owner. Dog is not @sealed, so records may carry other "
        "attributes: to query one, give the value a type, like nmae=string:Ann"
    )


def test_a_sealed_table_refuses_undeclared_attributes_everywhere() -> None:
    assert detail("zzz=string:1", OWNER) == (
        "query position 1: unknown attribute `zzz` of Owner. "
        "The attributes of Owner are: id, name, city. Owner is @sealed."
    )
    assert detail("select(name,nmae)", OWNER) == (
        "unknown attribute `nmae` of Owner in select(); did you mean `name`? "
        "The attributes of Owner are: name, id, city. Owner is @sealed."
    )
    assert detail("owner.cty=x") == (
        "query position 1: unknown attribute `cty` of Owner; did you mean `city`? "
        "The attributes of Owner are: city, id, name. Owner is @sealed."
    )
    assert "unknown attribute `nmae` of Owner in select()" in detail("select(owner{nmae})")


def test_sort_needs_a_declared_attribute() -> None:
    assert detail("sort(+extra)") == (
        "query position 6: unknown attribute `extra` of Dog in sort(). The attributes of Dog "
        "are: id, name, code, age, long, big, weight, good, born, tags, scores, misc, photo, "
        "address, owner. sort() needs a declared attribute."
    )


def test_dot_paths_without_relationships_are_unknown_attributes() -> None:
    query = parse_query("owner.name=Ann")
    with pytest.raises(BadRequest, match="unknown attribute `owner` of Dog"):
        bind(query, DOG, SCHEMA)
    with pytest.raises(BadRequest, match="unknown attribute `owner` of Dog"):
        bind(query, DOG, SCHEMA, relationships={"vet": VET})


def test_a_relationship_is_one_hop() -> None:
    with pytest.raises(BadRequest, match="unknown attribute `vet` of Owner"):
        bound("owner.vet.name=x")
