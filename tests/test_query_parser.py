"""Tests for ``kiln.query.parser``: URL query strings → unbound :class:`Query` values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.errors import BadRequest
from kiln.query import And, Condition, Field, Or, Query, Selection, SortKey, parse_query
from kiln.query.parser import _Reader


def where(query_string: str) -> object:
    return parse_query(query_string).where


def cond(
    name: str, comparator: str, value: object, forced: str | None = None, position: int = 1
) -> Condition:
    return Condition(tuple(name.split(".")), comparator, value, forced, position)  # type: ignore[arg-type]


def detail(query_string: str) -> str:
    with pytest.raises(BadRequest) as caught:
        parse_query(query_string)
    return caught.value.detail


# --------------------------------------------------------------------------- conditions


@pytest.mark.parametrize(
    ("query_string", "comparator", "value"),
    [
        ("age=5", "eq", "5"),
        ("age==5", "eq", "5"),
        ("age===5", "eq", "5"),
        ("age!=5", "ne", "5"),
        ("age!==5", "ne", "5"),
        ("age=ne=5", "ne", "5"),
        ("age=gt=5", "gt", "5"),
        ("age=ge=5", "ge", "5"),
        ("age=lt=5", "lt", "5"),
        ("age=le=5", "le", "5"),
        ("age=sw=5", "sw", "5"),
        ("age=ew=5", "ew", "5"),
        ("age=ct=5", "ct", "5"),
        ("age==5*", "sw", "5"),
        ("age=5*", "eq", "5*"),
        ("age==5%2A", "eq", "5*"),
        ("age=", "eq", ""),
        ("age=a,b{c}", "eq", "a,b{c}"),
    ],
)
def test_every_comparator(query_string: str, comparator: str, value: str) -> None:
    assert where(query_string) == cond("age", comparator, value)


def test_a_dot_path_is_split_into_segments() -> None:
    assert where("owner.name=Ann") == cond("owner.name", "eq", "Ann")
    # an encoded dot is part of the name
    assert where("a%2Eb=1") == Condition(("a.b",), "eq", "1", None, 1)


def test_range_chaining_continues_the_previous_attribute() -> None:
    assert where("price=gt=10&lt=20") == And(
        (cond("price", "gt", "10"), cond("price", "lt", "20", position=13))
    )
    assert where("price=ge=10&le=20") == And(
        (cond("price", "ge", "10"), cond("price", "le", "20", position=13))
    )


def test_lt_without_a_lower_bound_before_it_is_an_attribute() -> None:
    assert where("lt=20") == cond("lt", "eq", "20")
    assert where("price=lt=10&le=20") == And(
        (cond("price", "lt", "10"), cond("le", "eq", "20", position=13))
    )
    assert where("price=gt=10&lt==20") == And(
        (cond("price", "gt", "10"), cond("lt", "eq", "20", position=13))
    )


def test_and_binds_tighter_than_or() -> None:
    assert where("a=1|b=2&c=3") == Or(
        (
            cond("a", "eq", "1"),
            And((cond("b", "eq", "2", position=5), cond("c", "eq", "3", position=9))),
        )
    )
    assert where("a=1&b=2|c=3") == Or(
        (
            And((cond("a", "eq", "1"), cond("b", "eq", "2", position=5))),
            cond("c", "eq", "3", position=9),
        )
    )


@pytest.mark.parametrize(("opener", "closer"), [("(", ")"), ("[", "]")])
def test_groups_override_precedence(opener: str, closer: str) -> None:
    assert where(f"{opener}a=1|b=2{closer}&c=3") == And(
        (
            Or((cond("a", "eq", "1", position=2), cond("b", "eq", "2", position=6))),
            cond("c", "eq", "3", position=11),
        )
    )


def test_nested_groups_and_flattening() -> None:
    assert where("[a=1&(b=2&c=3)]&d=4") == And(
        (
            cond("a", "eq", "1", position=2),
            cond("b", "eq", "2", position=7),
            cond("c", "eq", "3", position=11),
            cond("d", "eq", "4", position=17),
        )
    )
    assert where("(a=1|[b=2|c=3])") == Or(
        (
            cond("a", "eq", "1", position=2),
            cond("b", "eq", "2", position=7),
            cond("c", "eq", "3", position=11),
        )
    )
    assert where("((a=1))") == cond("a", "eq", "1", position=3)


def test_a_single_condition_is_bare_and_empty_terms_are_ignored() -> None:
    assert where("a=1&") == cond("a", "eq", "1")
    assert where("&&a=1&&") == cond("a", "eq", "1", position=3)
    assert parse_query("") == Query()
    assert parse_query("&") == Query()


def test_value_prefixes_force_a_type() -> None:
    assert where("a=number:5") == cond("a", "eq", "5", "number")
    assert where("a=string:5") == cond("a", "eq", "5", "string")
    assert where("a=boolean:true") == cond("a", "eq", "true", "boolean")
    assert where("a=date:2024-01-01T10%3A00Z") == cond("a", "eq", "2024-01-01T10:00Z", "date")
    assert where("a==string:ab*") == cond("a", "sw", "ab", "string")
    assert where("a=nothing:5") == cond("a", "eq", "nothing:5")
    assert where("a=number%3A5") == cond("a", "eq", "number:5")  # an encoded colon is text


def test_null_is_a_forced_none_but_string_null_is_text() -> None:
    assert where("a=null") == cond("a", "eq", None, "null")
    assert where("a!=null") == cond("a", "ne", None, "null")
    assert where("a=string:null") == cond("a", "eq", "null", "string")
    assert where("a=nullable") == cond("a", "eq", "nullable")
    assert where("a=%6Eull") == cond("a", "eq", "null")  # only the raw literal is null


@pytest.mark.parametrize(
    ("query_string", "value"),
    [
        ("name=a%26b", "a&b"),
        ("name=a%2526", "a%26"),
        ("name=a%3Db", "a=b"),
        ("name=a%28b%29", "a(b)"),
        ("name=a%7Cb", "a|b"),
        ("name=caf%C3%A9", "café"),
        ("name=a+b", "a+b"),
        ("name=100%", "100%"),
    ],
)
def test_values_are_percent_decoded_exactly_once(query_string: str, value: str) -> None:
    assert where(query_string) == cond("name", "eq", value)


def test_names_are_percent_decoded_once() -> None:
    assert where("na%6De=x") == cond("name", "eq", "x")
    assert where("a%2526=x") == cond("a%26", "eq", "x")


# --------------------------------------------------------------------------- functions


def test_select_forms() -> None:
    assert parse_query("select(a,b)").select == Selection((Field("a"), Field("b")), "object")
    assert parse_query("select(a)").select == Selection((Field("a"),), "value")
    assert parse_query("select(a,)").select == Selection((Field("a"),), "object")
    assert parse_query("select([a,b])").select == Selection((Field("a"), Field("b")), "array")
    assert parse_query("select(name,owner{name,city})").select == Selection(
        (
            Field("name"),
            Field("owner", Selection((Field("name"), Field("city")), "object")),
        ),
        "object",
    )
    assert parse_query("select(o{p{q}})").select == Selection(
        (Field("o", Selection((Field("p", Selection((Field("q"),))),))),), "value"
    )
    assert parse_query("select(n%61me)").select == Selection((Field("name"),), "value")


def test_limit_forms() -> None:
    assert parse_query("limit(5)") == Query(start=0, end=5)
    assert parse_query("limit(10,20)") == Query(start=10, end=20)
    assert parse_query("limit(4,4)") == Query(start=4, end=4)


def test_sort_forms() -> None:
    assert parse_query("sort(+a,-b)").sort == (SortKey(("a",), False, 6), SortKey(("b",), True, 9))
    assert parse_query("sort(a)").sort == (SortKey(("a",), False, 6),)
    assert parse_query("sort(-owner.name)").sort == (SortKey(("owner", "name"), True, 6),)
    assert parse_query("sort(%2Ba,%2Db)").sort == (
        SortKey(("a",), False, 6),
        SortKey(("b",), True, 11),
    )


def test_explain_forms() -> None:
    assert parse_query("explain()").explain
    assert parse_query("explain").explain
    assert not parse_query("limit(1)").explain


def test_functions_combine_with_conditions_in_any_order() -> None:
    query = parse_query("limit(1,3)&a=1&select(a)&b=2&sort(-a)&explain")
    assert query == Query(
        where=And((cond("a", "eq", "1", position=12), cond("b", "eq", "2", position=26))),
        select=Selection((Field("a"),), "value"),
        sort=(SortKey(("a",), True, 35),),
        start=1,
        end=3,
        explain=True,
    )
    assert parse_query("[a=1|b=2]&limit(2)").where == Or(
        (cond("a", "eq", "1", position=2), cond("b", "eq", "2", position=6))
    )


def test_range_chaining_does_not_cross_a_function() -> None:
    assert where("p=gt=1&limit(2)&lt=3") == And(
        (cond("p", "gt", "1"), cond("lt", "eq", "3", position=17))
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        ("limit(10)&sort(+age", "query position 20: expected ')' after 'sort(+age'"),
        ("a=1|", "query position 5: expected a condition after '|'"),
        ("|a=1", "query position 1: expected a condition before '|'"),
        ("(a=1", "query position 5: expected ')' to close the '(' at position 1"),
        ("[a=1)", "query position 5: expected ']' to close the '[' at position 1, found ')'"),
        ("a=1)", "query position 4: unexpected ')' with no matching opening bracket"),
        ("a=1&=5", "query position 5: expected an attribute name before '='"),
        ("()", "query position 2: expected a condition inside ()"),
        ("a.=1", "query position 3: empty attribute name in the path 'a.'"),
        (
            "name=a(b",
            "query position 7: unexpected '(' in the value of 'name'; write a literal '(' as %28",
        ),
        (
            "name=a=b",
            "query position 5: unknown comparator '=a='; the comparators are =, ==, !=, =ne=, "
            "=gt=, =ge=, =lt=, =le=, =sw=, =ew=, =ct=",
        ),
        ("a!b", "query position 3: expected '=' after '!' (write '!=' for not equal)"),
        ("a{=1", "query position 2: unexpected '{' in the attribute name 'a'"),
        ("(a=1)b=2", "query position 6: expected '&', '|' or the end after '(a=1)'"),
        (
            "foo(1)",
            "query position 1: unknown function foo(); the functions are: explain(), limit(), "
            "select(), sort()",
        ),
        (
            "a=1|limit(5)",
            "query position 5: limit() cannot be combined with '|'; group the alternatives and "
            "put the function beside the group: [a=1|b=2]&limit(...)",
        ),
        (
            "(a=1&select(a))",
            "query position 6: select() cannot be inside a group; put it at the top level, joined "
            "with '&'",
        ),
        (
            "limit(1)&limit(2)",
            "query position 10: limit() is given twice (first at position 1); keep one",
        ),
        ("limit(5,2)", "query position 1: limit(5,2) ends before it starts; END must be >= START"),
        (
            "limit(-1)",
            "query position 1: limit(-1) needs one or two whole numbers: limit(END) or "
            "limit(START,END)",
        ),
        ("limit(5", "query position 8: expected ')' after 'limit(5'"),
        ("select()", "query position 8: expected an attribute name in select()"),
        ("select(a,b", "query position 11: expected ',' or ')' after 'b'"),
        ("select(a{b)", "query position 11: expected ',' or '}' after 'b', found ')'"),
        ("select([a,b)", "query position 12: expected ',' or ']' after 'b', found ')'"),
        ("sort(a,)", "query position 8: expected an attribute to sort by in sort(a,)"),
        ("explain(1)", "query position 1: explain(1) takes no arguments; write explain()"),
        (
            "name",
            "query position 5: expected a comparator after 'name'; one of =, ==, !=, =ne=, =gt=, "
            "=ge=, =lt=, =le=, =sw=, =ew=, =ct=",
        ),
        (
            "a=%FF",
            "query position 3: '%FF' is not valid percent-encoded UTF-8; encode the text as UTF-8",
        ),
    ],
)
def test_errors_name_the_position_and_what_was_expected(query_string: str, expected: str) -> None:
    assert detail(query_string) == expected


def test_deep_nesting_is_refused() -> None:
    assert (
        detail("(" * 40 + "a=1" + ")" * 40)
        == "query position 33: groups nest deeper than 32 levels"
    )
    assert "nests deeper" in detail("select(" + "a{" * 40 + "b" + "}" * 40 + ")")


def test_a_huge_limit_is_refused() -> None:
    assert "too large" in detail("limit(" + "9" * 5000 + ")")


# --------------------------------------------------------------------------- robustness

_VALID = [
    "name=Ann&age=gt=3&lt=9",
    "[a=1|b==x*]&select(a,b{c})&sort(+a,-b.c)&limit(2,5)",
    "(a!=null|b=string:x)&explain()",
    "select([a,b])&c=ct=%26",
]
_ALPHABET = "ab=!&|()[]{},.*+-%2F:0123456789nulselctimotgx "


def _outcome(query_string: str) -> None:
    try:
        result = parse_query(query_string)
    except BadRequest as error:
        assert error.detail.startswith("query position ")
    else:
        assert isinstance(result, Query)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_random_text_gives_a_query_or_bad_request(query_string: str) -> None:
    _outcome(query_string)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=60))
def test_random_syntax_gives_a_query_or_bad_request(query_string: str) -> None:
    _outcome(query_string)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_VALID),
    st.lists(
        st.tuples(st.integers(0, 80), st.integers(0, 3), st.text(alphabet=_ALPHABET, max_size=3)),
        max_size=4,
    ),
)
def test_mutated_queries_give_a_query_or_bad_request(
    base: str, edits: list[tuple[int, int, str]]
) -> None:
    text = base
    for at, cut, insert in edits:
        at %= len(text) + 1
        text = text[:at] + insert + text[at + cut :]
    _outcome(text)


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet="abZ_9.%", min_size=1, max_size=6),
    st.text(alphabet="ab1 +-._~:*%!=()[]{}&|null", max_size=8),
)
def test_one_equality_reads_as_the_general_reader_reads_it(name: str, value: str) -> None:
    """``name=value`` is read on a shortcut when it can be: the result must not change."""
    text = f"{name}={value}"
    try:
        expected: object = _Reader(text).query()
    except BadRequest as error:
        expected = error.detail
    try:
        got: object = parse_query(text)
    except BadRequest as error:
        got = error.detail
    assert got == expected


@pytest.mark.parametrize("text", ["pack=5", "name=Rex", "a_b=", "breed=null", "x=1&y=2"])
def test_one_equality_examples_match_the_general_reader(text: str) -> None:
    assert parse_query(text) == _Reader(text).query()
