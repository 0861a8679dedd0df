"""The query engine over a real LMDB table: results against a plain-Python filter, plans, streaming.

A table of 300 varied records (ints, floats, strings sharing prefixes, dates,
lists, booleans, nulls) is queried with every operator and with and/or trees;
each answer is compared with an independent filter over the same records, in
the order asked (key order by default; sort keys with nulls last, ties in key
order).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.app import App, load_app
from kiln.config import load_config
from kiln.errors import BadRequest
from kiln.query import And, Condition, Field, Node, Or, Query, Selection, SortKey
from kiln.query.binder import bind
from kiln.query.executor import Results, Source
from kiln.query.planner import Limits, plan_query
from kiln.resource import Table
from kiln.storage.operations import Put

SCHEMA = """
type Item @table @export {
  id: Int @primaryKey
  n: Int @indexed
  f: Float @indexed
  s: String @indexed
  d: Date @indexed
  tags: [String] @indexed
  flag: Boolean @indexed
  plain: Int
}
"""

COUNT = 300
_DAY0 = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_PREFIXES = ("ab", "abc", "abd", "b", "ba", "")
_TAGS = ("red", "green", "blue", "re")


def item(i: int) -> dict[str, Any]:
    """Record ``i``: every attribute varied, each one null now and then."""
    return {
        "n": None if i % 11 == 0 else i % 37,
        "f": None if i % 13 == 0 else (i * 7 % 50) / 4,
        "s": None if i % 17 == 0 else f"{_PREFIXES[i % 6]}{i % 5}",
        "d": None if i % 19 == 0 else _DAY0 + datetime.timedelta(days=i % 40),
        "tags": None if i % 23 == 0 else [_TAGS[(i + k) % 4] for k in range(i % 4)],
        "flag": i % 3 == 0,
        "plain": i % 10,
    }


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("engine")
    (root / "schema.graphql").write_text(SCHEMA)
    config = load_config(root, env={}, overrides={"storage.path": str(root / "data")})
    loaded = load_app(root, config)
    writer = loaded.writers["data"]
    writer.execute_sync([Put("Item", i, item(i)) for i in range(1, COUNT + 1)])
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def table(app: App) -> Table:
    found = app.routes["Item"]
    assert isinstance(found, Table)
    return found


@pytest.fixture(scope="module")
def records(table: Table) -> list[dict[str, Any]]:
    """Every stored record in key order (as the store gives them: dates decoded)."""
    with table.database.read() as txn:
        return [record for _key, record in table.store.scan(txn, None, COUNT + 1)]


# --------------------------------------------------------------------------- the plain filter


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, datetime.datetime):
        return "date"
    return "text" if isinstance(value, str) else None


def _one(op: str, x: Any, v: Any) -> bool:
    if _kind(x) is None or _kind(x) != _kind(v):
        return False
    if op in ("sw", "ew", "ct"):
        if not isinstance(x, str):
            return False
        return {"sw": x.startswith, "ew": x.endswith, "ct": x.__contains__}[op](v)
    return {
        "eq": x == v,
        "gt": x > v,
        "ge": x >= v,
        "lt": x < v,
        "le": x <= v,
    }[op]


def plain_match(node: Node | None, record: dict[str, Any]) -> bool:
    if node is None:
        return True
    if isinstance(node, And):
        return all(plain_match(item, record) for item in node.items)
    if isinstance(node, Or):
        return any(plain_match(item, record) for item in node.items)
    x, op, v = record.get(node.path[0]), node.comparator, node.value
    if op == "ne":
        return not plain_match(Condition(node.path, "eq", v), record)
    if v is None:
        return op == "eq" and x in (None, [])
    return any(_one(op, e, v) for e in (x if isinstance(x, list) else [x]))


def _compare(keys: tuple[SortKey, ...], a: dict[str, Any], b: dict[str, Any]) -> int:
    for key in keys:
        x, y = a.get(key.path[0]), b.get(key.path[0])
        if x == y:
            continue
        if x is None or y is None:
            return 1 if x is None else -1  # nulls last either way
        less = x < y
        return (1 if less else -1) if key.descending else (-1 if less else 1)
    return 0


def expected(query: Query, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [r for r in records if plain_match(query.where, r)]  # key order
    if query.sort:
        found.sort(key=functools.cmp_to_key(functools.partial(_compare, query.sort)))
    return found[query.start : query.end]


def ids(results: Any) -> list[int]:
    return [record["id"] for record in results]


def run(table: Table, query: Query) -> list[dict[str, Any]]:
    return list(table.search(query))


# --------------------------------------------------------------------------- operators

D = _DAY0 + datetime.timedelta(days=20)
OPERATOR_CASES = [
    Condition(("n",), "eq", 5),
    Condition(("n",), "gt", 30),
    Condition(("n",), "ge", 30),
    Condition(("n",), "lt", 3),
    Condition(("n",), "le", 3),
    Condition(("f",), "gt", 10.5),
    Condition(("f",), "le", 0.25),
    Condition(("f",), "eq", 2),
    Condition(("s",), "eq", "ab1"),
    Condition(("s",), "sw", "ab"),
    Condition(("s",), "sw", "abc"),
    Condition(("s",), "sw", ""),
    Condition(("s",), "gt", "b"),
    Condition(("s",), "lt", "abd"),
    Condition(("d",), "ge", D),
    Condition(("d",), "lt", D),
    Condition(("d",), "eq", D),
    Condition(("tags",), "eq", "red"),
    Condition(("tags",), "sw", "re"),
    Condition(("tags",), "gt", "green"),
    Condition(("flag",), "eq", True),
    Condition(("id",), "gt", 250),
    Condition(("id",), "le", 7),
    Condition(("id",), "eq", 42),
    Condition(("n",), "eq", "5"),  # another type: matches nothing
]
"""One condition that an index drives, per operator and type."""

FILTER_CASES = [
    Condition(("s",), "ew", "1"),
    Condition(("s",), "ct", "b"),
    Condition(("n",), "ne", 5),
    Condition(("n",), "eq", None),
    Condition(("n",), "ne", None),
    Condition(("tags",), "eq", None),
    Condition(("plain",), "eq", 3),
    Condition(("tags",), "ct", "ee"),
]
"""Conditions no index drives: they filter what a driving condition fetched."""


@pytest.mark.parametrize("condition", OPERATOR_CASES, ids=repr)
def test_each_driving_operator_matches_the_plain_filter(
    table: Table, records: list[dict[str, Any]], condition: Condition
) -> None:
    query = Query(where=condition)
    assert ids(run(table, query)) == ids(expected(query, records))


@pytest.mark.parametrize("condition", FILTER_CASES, ids=repr)
def test_each_filtering_operator_matches_the_plain_filter(
    table: Table, records: list[dict[str, Any]], condition: Condition
) -> None:
    query = Query(where=And((Condition(("id",), "ge", 1), condition)))
    assert ids(run(table, query)) == ids(expected(query, records))


COMBINATIONS = [
    And((Condition(("n",), "gt", 10), Condition(("n",), "lt", 20))),  # a chained range
    And((Condition(("s",), "sw", "ab"), Condition(("f",), "ge", 5.0))),
    And((Condition(("tags",), "eq", "red"), Condition(("tags",), "eq", "blue"))),
    And((Condition(("tags",), "gt", "re"), Condition(("tags",), "lt", "green"))),
    Or((Condition(("n",), "eq", 1), Condition(("n",), "eq", 2), Condition(("s",), "sw", "ba"))),
    Or((Condition(("n",), "lt", 5), Condition(("n",), "lt", 3))),  # overlapping branches
    Or((Condition(("tags",), "eq", "red"), Condition(("tags",), "eq", "green"))),
    And(
        (
            Or((Condition(("n",), "eq", 3), Condition(("d",), "le", _DAY0))),
            Condition(("flag",), "eq", False),
            Condition(("s",), "ne", "b3"),
        )
    ),
    Or(
        (
            And((Condition(("id",), "lt", 50), Condition(("s",), "ew", "2"))),
            Condition(("f",), "gt", 12.0),
        )
    ),
]


@pytest.mark.parametrize("where", COMBINATIONS, ids=repr)
@pytest.mark.parametrize(
    "sort",
    [(), (SortKey(("n",)),), (SortKey(("f",), True),), (SortKey(("s",)), SortKey(("id",), True))],
)
@pytest.mark.parametrize("window", [(0, None), (3, 9)])
def test_and_or_trees_with_sort_and_limit_match_the_plain_filter(
    table: Table,
    records: list[dict[str, Any]],
    where: Node,
    sort: tuple[SortKey, ...],
    window: tuple[int, int | None],
) -> None:
    query = Query(where=where, sort=sort, start=window[0], end=window[1])
    assert ids(run(table, query)) == ids(expected(query, records))


@pytest.mark.parametrize("attribute", ["n", "f", "s", "d", "flag", "id", "plain"])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("end", [None, 25])
def test_sort_without_conditions_puts_nulls_last_and_keeps_ties_in_key_order(
    table: Table, records: list[dict[str, Any]], attribute: str, descending: bool, end: int | None
) -> None:
    query = Query(sort=(SortKey((attribute,), descending),), end=end)
    assert ids(run(table, query)) == ids(expected(query, records))


# --------------------------------------------------------------------------- property test

_VALUES: dict[str, Any] = {
    "n": st.one_of(st.integers(-2, 40), st.none()),
    "f": st.sampled_from([0.0, 0.25, 2.0, 6.5, 12.25, 100.0]),
    "s": st.sampled_from(["", "a", "ab", "ab1", "abc", "abd3", "b", "ba2", "zz"]),
    "d": st.integers(-2, 42).map(lambda days: _DAY0 + datetime.timedelta(days=days)),
    "tags": st.sampled_from(["red", "re", "green", "blue", "x"]),
    "flag": st.booleans(),
    "id": st.integers(-5, 310),
    "plain": st.integers(0, 10),
}
_TEXT_ONLY = ("s", "tags")


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    attribute = draw(st.sampled_from(sorted(_VALUES)))
    value = draw(_VALUES[attribute])
    ops = ["eq", "ne", "gt", "ge", "lt", "le"]
    if attribute in _TEXT_ONLY:
        ops += ["sw", "ew", "ct"]
    op = draw(st.sampled_from(ops))
    if value is None:
        op = draw(st.sampled_from(["eq", "ne"]))
    return Condition((attribute,), op, value)


trees = st.recursive(
    conditions(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
    ),
    max_leaves=5,
)
sorts = st.lists(
    st.builds(
        SortKey,
        st.sampled_from(["n", "f", "s", "d", "flag", "id"]).map(lambda a: (a,)),
        st.booleans(),
    ),
    max_size=2,
).map(tuple)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    where=st.one_of(st.none(), trees),
    sort=sorts,
    start=st.integers(0, 5),
    size=st.one_of(st.none(), st.integers(0, 30)),
)
def test_random_queries_match_the_plain_filter(
    table: Table,
    records: list[dict[str, Any]],
    where: Node | None,
    sort: tuple[SortKey, ...],
    start: int,
    size: int | None,
) -> None:
    query = Query(where=where, sort=sort, start=start, end=None if size is None else start + size)
    scanning = type("Scanning", (type(table),), {"limits": Limits(allow_scans=True)})()
    assert ids(run(scanning, query)) == ids(expected(query, records))


# --------------------------------------------------------------------------- plans


def plan(table: Table, query: Query, limits: Limits | None = None) -> Any:
    read = table.database.read
    limits = limits or Limits()
    return plan_query(query, table.definition, table.store, read, limits, database=table.database)


def test_and_is_driven_by_its_most_selective_index(table: Table) -> None:
    rare = Condition(("n",), "eq", 5)  # 7 records
    common = Condition(("s",), "sw", "ab")  # about half
    for where in (And((common, rare)), And((rare, common))):
        chosen = plan(table, Query(where=where))
        assert [scan.attribute for scan in chosen.scans] == ["n"]
        assert chosen.estimated is not None and chosen.estimated < 20
        assert [leaf.path for leaf in chosen.filters] == [("s",)]


def test_chained_ranges_on_one_attribute_drive_as_one_range(table: Table) -> None:
    where = And((Condition(("n",), "gt", 10), Condition(("n",), "le", 12)))
    [scan] = plan(table, Query(where=where)).scans
    assert (scan.attribute, scan.comparator, scan.label) == ("n", "gt,le", "(10, 12]")


def test_or_is_a_union_of_one_scan_per_branch(table: Table) -> None:
    where = Or((Condition(("n",), "eq", 1), Condition(("s",), "sw", "ba")))
    chosen = plan(table, Query(where=where))
    assert [scan.attribute for scan in chosen.scans] == ["n", "s"]


def test_a_query_no_index_drives_is_refused_naming_the_fix(table: Table) -> None:
    for where in (
        Condition(("plain",), "eq", 3),
        Condition(("s",), "ct", "b"),
        Or((Condition(("n",), "eq", 1), Condition(("plain",), "eq", 3))),
    ):
        with pytest.raises(BadRequest) as raised:
            plan(table, Query(where=where))
        assert "no index can drive" in raised.value.detail
        assert "query.allowScans" in (raised.value.hint or "")
    with pytest.raises(BadRequest) as raised:
        plan(table, Query(where=Condition(("plain",), "eq", 3)))
    assert "add @indexed to `plain` in schema.graphql" in (raised.value.hint or "")


def test_a_scan_is_allowed_when_the_setting_says_so(
    table: Table, records: list[dict[str, Any]]
) -> None:
    query = Query(where=Condition(("plain",), "eq", 3))
    chosen = plan(table, query, Limits(allow_scans=True))
    assert chosen.full_scan and chosen.scans == ()
    scanning = type("Scanning", (type(table),), {"limits": Limits(allow_scans=True)})()
    assert ids(scanning.search(query)) == ids(expected(query, records))


def test_sort_uses_the_index_when_it_drives_else_a_heap_or_memory(table: Table) -> None:
    by_n = (SortKey(("n",), True),)
    assert plan(table, Query(sort=by_n)).sort_kind == "index"
    assert plan(table, Query(where=Condition(("n",), "gt", 3), sort=by_n)).sort_kind == "index"
    other = Condition(("s",), "sw", "a")
    assert plan(table, Query(where=other, sort=by_n, end=5)).sort_kind == "heap"
    assert plan(table, Query(where=other, sort=by_n)).sort_kind == "memory"
    assert plan(table, Query(where=other)).sort_kind == "memory"  # key order of a range
    assert plan(table, Query(where=Condition(("n",), "eq", 3))).sort_kind is None


def test_sorting_more_than_max_sort_rows_in_memory_is_refused(table: Table) -> None:
    small = type("Small", (type(table),), {"limits": Limits(max_sort_rows=10)})()
    with pytest.raises(BadRequest) as raised:
        list(small.search(Query(where=Condition(("n",), "ge", 0), sort=(SortKey(("f",)),))))
    assert "query.maxSortRows" in raised.value.detail
    assert "limit" in (raised.value.hint or "")
    # a limit larger than maxSortRows is no way around it: the top-k heap would hold it all
    huge = Query(where=Condition(("n",), "ge", 0), sort=(SortKey(("f",)),), end=10**18)
    with pytest.raises(BadRequest):
        list(small.search(huge))
    within = Query(where=Condition(("n",), "ge", 0), sort=(SortKey(("f",)),), end=10)
    assert len(list(small.search(within))) == 10  # a top-k heap of at most maxSortRows rows


def test_select_shapes(table: Table) -> None:
    where = Condition(("id",), "le", 2)
    fields = (Field("id"), Field("n"))
    assert list(table.search(Query(where=where, select=Selection(fields)))) == [
        {"id": 1, "n": 1},
        {"id": 2, "n": 2},
    ]
    assert list(table.search(Query(where=where, select=Selection(fields[:1], "value")))) == [1, 2]
    assert list(table.search(Query(where=where, select=Selection(fields, "array")))) == [
        [1, 1],
        [2, 2],
    ]


# --------------------------------------------------------------------------- streaming


class CountingReads:
    """A read-transaction opener that counts how often it was called."""

    def __init__(self, read: Callable[[], AbstractContextManager[lmdb.Transaction]]):
        self.read = read
        self.calls = 0

    def __call__(self) -> AbstractContextManager[lmdb.Transaction]:
        self.calls += 1
        return self.read()


@pytest.mark.parametrize(
    "where",
    [
        None,
        Condition(("id",), "ge", 1),
        Condition(("flag",), "eq", False),
        Condition(("s",), "sw", ""),
    ],
    ids=repr,
)
def test_a_lazily_consumed_result_reads_only_the_chunks_it_needs(
    table: Table, where: Node | None
) -> None:
    sort = (
        (SortKey(("s",)),)
        if where is not None and isinstance(where, Condition) and where.path == ("s",)
        else ()
    )
    chosen = plan(table, Query(where=where, sort=sort))
    reads = CountingReads(table.database.read)
    results = Results(chosen, Source(table.store, reads, chunk=10), 1000)
    first = [next(results) for _ in range(5)]
    assert len(first) == 5
    assert reads.calls == 1
    assert sum(1 for _ in results) > 100
    assert reads.calls > 10  # the rest came in many short transactions


def test_limit_stops_the_walk_early(table: Table) -> None:
    reads = CountingReads(table.database.read)
    chosen = plan(table, Query(end=3))
    assert len(list(Results(chosen, Source(table.store, reads, chunk=10), 1000))) == 3
    assert reads.calls == 1


def test_count_ignores_the_limit(table: Table, records: list[dict[str, Any]]) -> None:
    query = Query(where=Condition(("s",), "sw", "ab"), start=2, end=4)
    assert table.search(query).count() == len(expected(Query(where=query.where), records))


def test_explain_reports_the_plan_and_what_it_read(table: Table) -> None:
    where = And((Condition(("n",), "eq", 5), Condition(("s",), "sw", "ab")))
    report = table.search(Query(where=where, explain=True), estimate=True).explain()
    assert report["driver"] == {"attribute": "n", "comparator": "eq", "range": "[5, 5]"}
    fives = [i for i in range(1, COUNT + 1) if item(i)["n"] == 5]
    assert report["estimated"] == len(fives)
    assert report["filters"] == [{"attribute": "s", "comparator": "sw"}]
    assert report["scanned"] == len(fives)
    assert report["returned"] == len(
        [
            i
            for i in range(1, COUNT + 1)
            if item(i)["n"] == 5 and (item(i)["s"] or "").startswith("ab")
        ]
    )
    assert report["sort"] is None


def test_delete_matching_removes_exactly_the_matches_in_one_transaction(tmp_path: Path) -> None:
    (tmp_path / "schema.graphql").write_text(SCHEMA)
    config = load_config(tmp_path, env={}, overrides={"storage.path": str(tmp_path / "data")})
    loaded = load_app(tmp_path, config)
    try:
        loaded.writers["data"].execute_sync([Put("Item", i, item(i)) for i in range(1, 101)])
        table = loaded.routes["Item"]
        assert isinstance(table, Table)
        from kiln.query.executor import matching_keys
        from kiln.storage.operations import DeleteMatching

        chosen = plan(table, Query(where=Condition(("n",), "lt", 5)))
        write = DeleteMatching("Item", lambda txn: matching_keys(chosen, table.store, txn, 1000))
        receipt = loaded.writers["data"].execute_sync([write])
        gone = {i for i in range(1, 101) if item(i)["n"] is not None and item(i)["n"] < 5}
        assert {result.key for result in receipt.results} == gone
        left = ids(table.search(Query()))
        assert left == [i for i in range(1, 101) if i not in gone]
    finally:
        loaded.close()


def test_a_list_stored_under_a_single_valued_index_comes_once(tmp_path: Path) -> None:
    """A record whose value became a list before a retype (``tags: [String]`` → ``String``)
    sits under each element; a range over both returns it once, in its first place."""
    (tmp_path / "schema.graphql").write_text(
        "type Note @table @export { id: Int @primaryKey  tag: String @indexed }"
    )
    config = load_config(tmp_path, env={}, overrides={"storage.path": str(tmp_path / "data")})
    loaded = load_app(tmp_path, config)
    try:
        store = loaded.databases["data"].tables["Note"]
        with loaded.databases["data"].env.begin(write=True) as txn:  # as stored before a retype
            store.store(txn, 1, 1, {"id": 1, "tag": ["a", "b"]}, None)
            store.store(txn, 2, 2, {"id": 2, "tag": "b"}, None)
        note = loaded.routes["Note"]
        assert isinstance(note, Table)
        ranged = Query(Condition(("tag",), "ge", "a"))
        assert ids(note.search(bind(ranged, note.definition, loaded.schema))) == [1, 2]
        sorted_query = Query(Condition(("tag",), "ge", "a"), sort=(SortKey(("tag",)),))
        assert ids(note.search(bind(sorted_query, note.definition, loaded.schema))) == [1, 2]
    finally:
        loaded.close()
