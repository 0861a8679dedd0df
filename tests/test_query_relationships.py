"""Queries through relationships on a real table, checked against joins done in plain Python.

Forty owners, two hundred dogs (some without an owner, some pointing at an owner
that does not exist) and a dozen tags (dogs hold lists of tag keys, some dangling;
each tag lists the dogs it marks) are queried with dot-path conditions, nested
selections and dot-path sorts; each answer is computed again here from the stored
records with plain dicts and lists. Dot-path conditions drive as joins where the
indexes allow it (``Dog.ownerId``, ``Dog.tagIds``, ``Owner.name``, ``Tag.label``,
``Tag.dogIds``, ``Dog.name``), and not through ``sitterId`` or ``Owner.city``,
which are not indexed: the module's tables allow full scans, and :func:`strict`
gives the same tables without them.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kiln
from kiln import tables
from kiln.app import App, load_app
from kiln.config import load_config
from kiln.errors import BadRequest
from kiln.namespace import filled
from kiln.query import And, Condition, Node, Or, Query, SortKey, parse_query
from kiln.query import planner as planner_module
from kiln.query.binder import bind
from kiln.query.executor import Results, Source, matching_keys
from kiln.query.planner import Limits, plan_query
from kiln.query.relationships import related_tables
from kiln.resource import Table
from kiln.storage.operations import DeleteMatching, Put

SCHEMA = """
type Owner @table @export {
  id: ID @primaryKey
  name: String @indexed
  city: String
  dogs: [Dog] @relationship(to: ownerId)
}
type Dog @table @export {
  id: Int @primaryKey
  name: String @indexed
  age: Int @indexed
  ownerId: ID @indexed
  owner: Owner @relationship(from: ownerId)
  sitterId: ID
  sitter: Owner @relationship(from: sitterId)
  tagIds: [ID] @indexed
  tags: [Tag] @relationship(from: tagIds)
  markedBy: [Tag] @relationship(to: dogIds)
}
type Tag @table @export {
  id: ID @primaryKey
  label: String @indexed
  dogIds: [Int] @indexed
}
"""

CITIES = ("Oslo", "Rome", "Lima", None)


def data() -> tuple[dict[str, dict], dict[int, dict], dict[str, dict]]:
    """Owners, dogs and tags by key, from a fixed seed."""
    rng = random.Random(4)
    owners = {
        f"o{i:02}": {"name": f"N{rng.randrange(15):02}", "city": rng.choice(CITIES)}
        for i in range(40)
    }
    tags = {f"t{i:02}": {"label": rng.choice(("good", "old", "big"))} for i in range(12)}
    dogs: dict[int, dict] = {}
    for i in range(200):
        dog: dict[str, Any] = {"name": rng.choice(("Rex", "Fido", "Max")), "age": i % 9}
        owner = rng.random()
        if owner < 0.8:
            dog["ownerId"] = rng.choice(list(owners))
        elif owner < 0.9:
            dog["ownerId"] = "nobody"
        if rng.random() < 0.7:
            dog["tagIds"] = rng.sample([*tags, "gone"], rng.randrange(4))
        if rng.random() < 0.5:
            dog["sitterId"] = rng.choice(list(owners))
        dogs[i] = dog
    for tag in tags.values():  # the dogs a tag marks (999 is no dog)
        tag["dogIds"] = rng.sample([*dogs, 999], rng.randrange(25))
    return owners, dogs, tags


OWNERS, DOGS, TAGS = data()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("related")
    (root / "schema.graphql").write_text(SCHEMA)
    (root / "config.yaml").write_text("query:\n  allowScans: true\n")
    config = load_config(root, env={}, overrides={"storage.path": str(root / "data")})
    loaded = load_app(root, config)
    writes = [Put("Owner", k, v) for k, v in OWNERS.items()]
    writes += [Put("Dog", k, v) for k, v in DOGS.items()]
    writes += [Put("Tag", k, v) for k, v in TAGS.items()]
    loaded.writers["data"].execute_sync(writes)
    yield loaded
    loaded.close()


def table_of(app: App, name: str) -> Table:
    resource = app.routes[name]
    assert isinstance(resource, Table)
    return resource


def strict(resource: Table) -> Table:
    """``resource``'s table without full scans: every query must be driven by an index."""
    return type("Strict", (type(resource),), {"limits": Limits()})()  # type: ignore[no-any-return]


def bound(resource: Table, query: str | Query) -> Query:
    definition, schema = resource.definition, resource.schema
    parsed = parse_query(query) if isinstance(query, str) else query
    return bind(parsed, definition, schema, relationships=related_tables(schema, definition))


def run(app: App, table: str, text: str) -> list[Any]:
    resource = table_of(app, table)
    return list(resource.search(bound(resource, text)))


def driven(app: App, table: str, text: str) -> list[Any]:
    """The ids ``text`` finds with no full scan allowed."""
    resource = strict(table_of(app, table))
    return [record["id"] for record in resource.search(bound(resource, text))]


def explained(app: App, table: str, text: str) -> dict[str, Any]:
    resource = strict(table_of(app, table))
    return resource.search(bound(resource, f"{text}&explain()"), estimate=True).explain()


# --------------------------------------------------------------------------- plain joins


def owner_of(dog: dict) -> dict | None:
    key = dog.get("ownerId")
    return None if key not in OWNERS else {"id": key, **OWNERS[key]}


def tags_of(dog: dict) -> list[dict]:
    return [{"id": key, **TAGS[key]} for key in dog.get("tagIds") or [] if key in TAGS]


def dogs_of(owner_key: str) -> list[dict]:
    return [{"id": k, **d} for k, d in sorted(DOGS.items()) if d.get("ownerId") == owner_key]


def sitter_of(dog: dict) -> dict | None:
    key = dog.get("sitterId")
    return None if key not in OWNERS else {"id": key, **OWNERS[key]}


def related(table: str, key: Any, record: dict, name: str) -> list[dict]:
    """What the relationship ``name`` of ``record`` holds, as a list (inner-join input)."""
    if table == "Owner":
        return dogs_of(key)
    if name == "tags":
        return tags_of(record)
    if name == "markedBy":
        return [{"id": k, **t} for k, t in sorted(TAGS.items()) if key in t["dogIds"]]
    one = owner_of(record) if name == "owner" else sitter_of(record)
    return [] if one is None else [one]


def _one(op: str, x: Any, v: Any) -> bool:
    if x is None or isinstance(x, bool) or type(x) is not type(v):
        return False
    if op == "sw":
        return bool(x.startswith(v))
    return bool({"eq": x == v, "gt": x > v, "ge": x >= v, "lt": x < v, "le": x <= v}[op])


def _test(op: str, x: Any, v: Any) -> bool:
    if op == "ne":
        return not _test("eq", x, v)
    if v is None:
        return op == "eq" and x in (None, [])
    return any(_one(op, item, v) for item in (x if isinstance(x, list) else [x]))


def holds(table: str, key: Any, record: dict, node: Node) -> bool:
    """Whether ``record`` (with primary key ``key``) of ``table`` satisfies the bound ``node``."""
    if isinstance(node, And):
        return all(holds(table, key, record, item) for item in node.items)
    if isinstance(node, Or):
        return any(holds(table, key, record, item) for item in node.items)
    if len(node.path) == 2:
        others = related(table, key, record, node.path[0])
        return any(_test(node.comparator, other.get(node.path[1]), node.value) for other in others)
    value = key if node.path[0] == "id" else record.get(node.path[0])
    return _test(node.comparator, value, node.value)


def plain(table: str, query: Query) -> list[Any]:
    """The ids ``query`` (bound) answers, by the plain join: key order, or one sort key."""
    stored = OWNERS if table == "Owner" else DOGS
    found = [
        k for k in sorted(stored) if query.where is None or holds(table, k, stored[k], query.where)
    ]
    if query.sort:
        [key] = query.sort

        def value(k: Any) -> Any:
            if len(key.path) == 2:
                [other] = related(table, k, stored[k], key.path[0]) or [{}]
                return other.get(key.path[1])
            return k if key.path[0] == "id" else stored[k].get(key.path[0])

        named = sorted(
            (k for k in found if value(k) is not None), key=value, reverse=key.descending
        )
        found = named + [k for k in found if value(k) is None]
    return found[query.start : query.end]


# --------------------------------------------------------------------------- conditions


@pytest.mark.parametrize("name", ["N03", "N07", "N14", "nobody"])
def test_eq_and_ne_through_a_to_one_relationship(app: App, name: str) -> None:
    got = [dog["id"] for dog in run(app, "Dog", f"owner.name={name}")]
    assert got == [k for k, d in sorted(DOGS.items()) if (owner_of(d) or {}).get("name") == name]
    got_ne = [dog["id"] for dog in run(app, "Dog", f"owner.name!={name}")]
    inner = [k for k, d in sorted(DOGS.items()) if owner_of(d) is not None]
    assert got_ne == [k for k in inner if owner_of(DOGS[k])["name"] != name]  # type: ignore[index]


def test_dot_paths_combine_with_indexed_conditions(app: App) -> None:
    got = [dog["id"] for dog in run(app, "Dog", "age=ge=6&(owner.city=Oslo|tags.label=big)")]
    want = [
        k
        for k, d in sorted(DOGS.items())
        if d["age"] >= 6
        and (
            (owner_of(d) or {}).get("city") == "Oslo"
            or any(t["label"] == "big" for t in tags_of(d))
        )
    ]
    assert got == want
    assert len(want) > 5


def test_one_to_many_condition(app: App) -> None:
    got = [owner["id"] for owner in run(app, "Owner", "dogs.age=8&dogs.name=Rex")]
    # each condition on its own: some dog is 8, some (maybe other) dog is a Rex
    want = [
        k
        for k in sorted(OWNERS)
        if any(d["age"] == 8 for d in dogs_of(k)) and any(d["name"] == "Rex" for d in dogs_of(k))
    ]
    assert got == want


# --------------------------------------------------------------------------- selections


def picked(record: dict | None, *names: str) -> dict | None:
    return None if record is None else {name: record.get(name) for name in names}


def test_nested_selections_of_all_three_shapes(app: App) -> None:
    dogs = run(app, "Dog", "age=3&select(id,owner{name,city},tags{label})")
    assert dogs == [
        {
            "id": k,
            "owner": picked(owner_of(d), "name", "city"),
            "tags": [{"label": t["label"]} for t in tags_of(d)],
        }
        for k, d in sorted(DOGS.items())
        if d["age"] == 3
    ]
    owners = run(app, "Owner", "name=sw=N0&select(id,dogs{id})")
    assert owners == [
        {"id": k, "dogs": [{"id": d["id"]} for d in dogs_of(k)]}
        for k, o in sorted(OWNERS.items())
        if o["name"].startswith("N0")
    ]


# --------------------------------------------------------------------------- sort


@pytest.mark.parametrize("descending", [False, True])
def test_sort_by_a_dot_path(app: App, descending: bool) -> None:
    sign = "-" if descending else ""
    got = [dog["id"] for dog in run(app, "Dog", f"age=le=4&sort({sign}owner.name)")]
    chosen = [k for k, d in sorted(DOGS.items()) if d["age"] <= 4]
    named = [k for k in chosen if owner_of(DOGS[k]) is not None]
    nameless = [k for k in chosen if owner_of(DOGS[k]) is None]
    # ties stay in key order (reverse=True keeps a sort stable); the nameless follow
    named.sort(key=lambda k: owner_of(DOGS[k])["name"], reverse=descending)  # type: ignore[index]
    assert got == named + nameless
    limited = run(app, "Dog", f"age=le=4&sort({sign}owner.name)&limit(3,9)")
    assert [dog["id"] for dog in limited] == (named + nameless)[3:9]


def test_sort_through_a_list_relationship_is_refused(app: App) -> None:
    with pytest.raises(BadRequest, match=r"cannot sort by `dogs\.age`"):
        run(app, "Owner", "name=x&sort(dogs.age)")


# --------------------------------------------------------------------------- joins that drive


SHAPES = [
    ("Dog", "owner.name=N03"),  # many-to-one: Owner's name index, then Dog's ownerId index
    ("Dog", "owner.name=sw=N0"),  # more keys than JOIN_MERGE: ordered in memory
    ("Dog", "owner.name=gt=N12"),
    ("Dog", "owner.name=ge=N05&owner.name=lt=N07"),
    ("Dog", "owner.id=o05"),  # the related primary key
    ("Dog", "owner.id=sw=o1"),
    ("Dog", "tags.label=old"),  # many-to-many through the list of keys
    ("Dog", "tags.id=t03"),
    ("Dog", "markedBy.label=old"),  # one-to-many through a list: Tag's index, then Dog's key
    ("Dog", "markedBy.id=sw=t0"),
    ("Owner", "dogs.name=Rex"),  # one-to-many: Dog's name index, then Owner's primary key
    ("Owner", "dogs.age=ge=7"),
    ("Owner", "dogs.id=lt=20"),
    ("Dog", "owner.name=nobody"),  # no related record: no matches
    ("Owner", "dogs.name=Nobody"),
]


@pytest.mark.parametrize(("table", "text"), SHAPES)
def test_each_join_shape_drives_alone(app: App, table: str, text: str) -> None:
    query = bound(table_of(app, table), text)
    assert driven(app, table, text) == plain(table, query)
    report = explained(app, table, text)
    assert report["fullScan"] is False
    drivers = report["driver"] if isinstance(report["driver"], list) else [report["driver"]]
    assert all("join" in driver for driver in drivers), report


def test_a_join_over_one_key_streams_in_key_order_and_several_are_merged(app: App) -> None:
    one = explained(app, "Dog", "owner.id=o05")
    assert one["driver"]["join"]["keys"] == 1
    assert one["sort"] is None  # streamed in key order
    shared = Counter(owner["name"] for owner in OWNERS.values())
    few = sorted(name for name, count in shared.items() if 1 < count <= planner_module.JOIN_MERGE)
    assert few, "the data has a name several owners share"
    report = explained(app, "Dog", f"owner.name={few[0]}")
    assert report["sort"] is None  # the keys' walks merged by key
    many = explained(app, "Dog", "owner.name=sw=N")
    assert many["driver"]["join"]["keys"] == len(OWNERS)
    assert many["sort"] == "memory"


COMBINED = [
    "age=ge=6&owner.name=sw=N0",
    "owner.name=N03|tags.label=big",
    "owner.name=N03|age=8",
    "(owner.name=N03|owner.name=N07)&name=Rex",
    "owner.name=N03&tags.label=old",
    "owner.name=sw=N&owner.city=Oslo",
    "owner.name!=N03&ownerId=o05",
    "owner.name=sw=N1&sitter.name=sw=N0",
    "owner.id=o05|owner.id=o07|tags.id=t01",
    "tags.label=big&tags.label!=old",
]


@pytest.mark.parametrize("text", COMBINED)
@pytest.mark.parametrize(
    "tail",
    [
        "",
        "&sort(-age)&limit(2,6)",
        "&sort(owner.name)&limit(5)",
        "&sort(ownerId)",
        "&sort(-ownerId)&limit(3)",
        "&limit(4)",
    ],
)
def test_joins_combine_with_other_conditions_sort_and_limit(app: App, text: str, tail: str) -> None:
    grouped = f"({text}){tail}"  # a function cannot sit beside a top-level `|`
    assert driven(app, "Dog", grouped) == plain("Dog", bound(table_of(app, "Dog"), grouped))


@pytest.mark.parametrize("text", [*COMBINED, "owner.name=N03", "dogs.name=Max"])
def test_count_ignores_the_limit(app: App, text: str) -> None:
    table = "Owner" if text.startswith("dogs") else "Dog"
    resource = strict(table_of(app, table))
    query = bound(resource, f"({text})&limit(1,2)")
    assert resource.search(query).count() == len(plain(table, bound(resource, text)))


def test_the_smaller_candidate_drives_and_explain_shows_the_join(app: App) -> None:
    joined = explained(app, "Dog", "age=ge=0&owner.name=N03")
    owners = sorted(k for k, o in OWNERS.items() if o["name"] == "N03")
    dogs = [k for k, d in sorted(DOGS.items()) if d.get("ownerId") in owners]
    assert joined["driver"] == {
        "attribute": "ownerId",
        "comparator": "in",
        "range": f"{len(owners)} {'key' if len(owners) == 1 else 'keys'} joined through "
        "`owner.name`",
        "join": {
            "relationship": "owner",
            "table": "Owner",
            "attribute": "name",
            "comparator": "eq",
            "range": '["N03", "N03"]',
            "keys": len(owners),
        },
    }
    assert joined["estimated"] == len(dogs)
    assert joined["scanned"] == len(dogs)
    assert joined["returned"] == len(dogs)
    assert joined["filters"] == [{"attribute": "age", "comparator": "ge"}]
    keyed = explained(app, "Dog", "id=5&owner.name=sw=N")
    assert keyed["driver"]["attribute"] == "id"
    assert keyed["filters"] == [{"attribute": "owner.name", "comparator": "sw"}]
    one_to_many = explained(app, "Owner", "dogs.name=Max")
    assert one_to_many["driver"]["attribute"] == "id"
    assert one_to_many["driver"]["join"]["table"] == "Dog"


@pytest.mark.parametrize(
    ("text", "detail", "hint"),
    [
        (
            "owner.city=Oslo",
            "`owner.city`: `city` of Owner is not indexed",
            "add @indexed to `city` in `type Owner` in schema.graphql",
        ),
        (
            "sitter.name=N03",
            "`sitter.name` joins through `sitterId`, which is not indexed",
            "add @indexed to `sitterId` in schema.graphql",
        ),
        (
            "owner.name=N03|sitter.name=N03",
            "`sitter.name` joins through `sitterId`, which is not indexed",
            "add @indexed to `sitterId` in schema.graphql",
        ),
        ("owner.name!=N03", "`owner.name` ne cannot use an index", "add an eq, range or sw"),
        ("owner.name=null", "`owner.name` eq null cannot use its index", "add an eq, range or sw"),
    ],
)
def test_a_join_that_cannot_drive_is_a_400_naming_what_to_index(
    app: App, text: str, detail: str, hint: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        driven(app, "Dog", text)
    assert "no index can drive this query on Dog" in raised.value.detail
    assert detail in raised.value.detail
    assert hint in (raised.value.hint or "")
    # with full scans allowed the same query answers, by the plain join
    assert [d["id"] for d in run(app, "Dog", text)] == plain(
        "Dog", bound(table_of(app, "Dog"), text)
    )


def test_too_many_related_keys_leave_the_drive_to_another_condition(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planner_module, "JOIN_KEYS", 3)
    with pytest.raises(BadRequest) as raised:
        driven(app, "Dog", "owner.name=sw=N")
    assert "`owner.name` matches more than 3 Owner records, too many to join on" in (
        raised.value.detail
    )
    text = "owner.name=sw=N&age=3"
    assert explained(app, "Dog", text)["driver"]["attribute"] == "age"
    assert driven(app, "Dog", text) == plain("Dog", bound(table_of(app, "Dog"), text))


# --------------------------------------------------------------------------- random queries

DOG_LEAVES = st.one_of(
    st.tuples(
        st.just("age"), st.sampled_from(["eq", "gt", "le", "ne"]), st.integers(0, 9).map(str)
    ),
    st.tuples(st.just("name"), st.sampled_from(["eq", "ne"]), st.sampled_from(["Rex", "Max"])),
    st.tuples(st.just("ownerId"), st.just("eq"), st.sampled_from(["o03", "o17", "nobody"])),
    st.tuples(
        st.just("owner.name"),
        st.sampled_from(["eq", "sw", "gt", "le", "ne"]),
        st.sampled_from(["N03", "N07", "N1", "N", "Q"]),
    ),
    st.tuples(st.just("owner.id"), st.sampled_from(["eq", "sw"]), st.sampled_from(["o05", "o1"])),
    st.tuples(st.just("owner.city"), st.just("eq"), st.sampled_from(["Oslo", "Lima"])),
    st.tuples(
        st.just("tags.label"), st.sampled_from(["eq", "ne"]), st.sampled_from(["old", "big"])
    ),
    st.tuples(st.just("tags.id"), st.just("eq"), st.sampled_from(["t02", "gone"])),
    st.tuples(st.just("sitter.name"), st.just("sw"), st.sampled_from(["N0", "N1"])),
    st.tuples(st.just("markedBy.label"), st.sampled_from(["eq", "ne"]), st.just("old")),
)
OWNER_LEAVES = st.one_of(
    st.tuples(st.just("name"), st.sampled_from(["eq", "sw", "ne"]), st.sampled_from(["N03", "N1"])),
    st.tuples(st.just("city"), st.just("eq"), st.sampled_from(["Oslo", "Rome"])),
    st.tuples(st.just("id"), st.sampled_from(["sw", "gt"]), st.sampled_from(["o1", "o30"])),
    st.tuples(
        st.just("dogs.name"), st.sampled_from(["eq", "ne"]), st.sampled_from(["Rex", "Fido"])
    ),
    st.tuples(st.just("dogs.age"), st.sampled_from(["eq", "ge", "lt"]), st.integers(0, 9).map(str)),
    st.tuples(st.just("dogs.id"), st.sampled_from(["lt", "eq"]), st.sampled_from(["7", "150"])),
)


def _trees(leaves: st.SearchStrategy[tuple[str, str, str]]) -> st.SearchStrategy[Node]:
    conditions = leaves.map(lambda leaf: Condition(tuple(leaf[0].split(".")), leaf[1], leaf[2]))  # type: ignore[arg-type]
    return st.recursive(
        conditions,
        lambda inner: st.one_of(
            st.lists(inner, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
            st.lists(inner, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
        ),
        max_leaves=4,
    )


DOG_SORTS = st.sampled_from(["", "age", "ownerId", "owner.name", "id"])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    table=st.sampled_from(["Dog", "Owner"]),
    data=st.data(),
    start=st.integers(0, 4),
    size=st.one_of(st.none(), st.integers(0, 12)),
)
def test_random_queries_through_relationships_match_the_plain_join(
    app: App, table: str, data: st.DataObject, start: int, size: int | None
) -> None:
    where = data.draw(_trees(DOG_LEAVES if table == "Dog" else OWNER_LEAVES))
    name = data.draw(DOG_SORTS) if table == "Dog" else data.draw(st.sampled_from(["", "name"]))
    sort = (SortKey(tuple(name.split(".")), data.draw(st.booleans())),) if name else ()
    end = None if size is None else start + size
    resource = table_of(app, table)
    query = bound(resource, Query(where=where, sort=sort, start=start, end=end))
    want = plain(table, query)
    try:
        results = strict(resource).search(query)
    except BadRequest as error:  # no index drives it: the same query as a full scan
        assert "no index can drive" in error.detail
        results = resource.search(query)
    assert [record["id"] for record in results] == want
    assert results.count() == len(plain(table, bound(resource, Query(where=where))))


# --------------------------------------------------------------------------- changing data


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[App]:
    """Owners ann (Ann, Oslo) and bob (Bob, Rome); dogs 1 Rex and 2 Fido of ann, 3 Max of bob,
    4 Lost of a missing owner `gone`, 5 Stray of none."""
    (tmp_path / "schema.graphql").write_text(SCHEMA)
    config = load_config(tmp_path, env={}, overrides={"storage.path": str(tmp_path / "data")})
    with filled({}):
        loaded = load_app(tmp_path, config)
        try:
            loaded.writers["data"].execute_sync(
                [
                    Put("Owner", "ann", {"name": "Ann", "city": "Oslo"}),
                    Put("Owner", "bob", {"name": "Bob", "city": "Rome"}),
                    Put("Dog", 1, {"name": "Rex", "age": 3, "ownerId": "ann"}),
                    Put("Dog", 2, {"name": "Fido", "age": 5, "ownerId": "ann"}),
                    Put("Dog", 3, {"name": "Max", "age": 3, "ownerId": "bob"}),
                    Put("Dog", 4, {"name": "Lost", "age": 1, "ownerId": "gone"}),
                    Put("Dog", 5, {"name": "Stray", "age": 2}),
                ]
            )
            yield loaded
        finally:
            loaded.close()


def search(text: str, table: str = "Dog") -> list[Any]:
    return [record["id"] for record in getattr(tables, table).records.search(text)]


def test_a_related_record_changed_between_queries(fresh: App) -> None:
    assert search("owner.name=Ann") == [1, 2]
    assert search("dogs.name=Max", "Owner") == ["bob"]
    tables.Owner.records.patch("bob", {"name": "Ann"})
    assert search("owner.name=Ann") == [1, 2, 3]
    tables.Dog.records.patch(3, {"name": "Rex"})
    assert search("dogs.name=Max", "Owner") == []
    assert search("dogs.name=Rex", "Owner") == ["ann", "bob"]
    tables.Dog.records.patch(1, {"ownerId": "bob"})
    assert search("owner.name=Ann&age=3") == [1, 3]


def test_a_dangling_key_never_matches_until_its_record_exists(fresh: App) -> None:
    assert search("owner.name=sw=") == [1, 2, 3]  # 4 points at no owner, 5 at none
    assert search("owner.id=gone") == []
    assert search("dogs.name=Lost", "Owner") == []  # its owner `gone` has no record
    tables.Owner.records.put("gone", {"name": "Gus"})
    assert search("owner.id=gone") == [4]
    assert search("owner.name=Gus") == [4]
    assert search("dogs.name=Lost", "Owner") == ["gone"]
    tables.Owner.records.delete("ann")
    assert search("owner.name=sw=") == [3, 4]


def test_a_plan_finds_its_related_keys_again_when_it_runs(fresh: App) -> None:
    resource = strict(table_of(fresh, "Dog"))
    database = resource.database
    query = bound(resource, "owner.name=Ann")
    plan = plan_query(
        query, resource.definition, resource.store, database.read, Limits(), database=database
    )
    assert plan.scans[0].join is not None and plan.scans[0].join.keys == 1
    tables.Owner.records.patch("bob", {"name": "Ann"})  # after planning, before running
    source = Source(resource.store, database.read, database=database)
    assert [record["id"] for record in Results(plan, source, 1000)] == [1, 2, 3]  # key order


def test_a_transaction_sees_its_own_writes_checked_against_the_join(fresh: App) -> None:
    with kiln.transaction():
        tables.Dog.records.put(6, {"name": "Pup", "age": 1, "ownerId": "ann"})
        tables.Dog.records.patch(2, {"ownerId": "bob"})
        tables.Dog.records.patch(3, {"age": 9})
        assert search("owner.name=Ann") == [1, 6]
        assert search("owner.name=Bob&limit(1)") == [2]
        assert search("owner.name=Bob&sort(-age)") == [3, 2]
        assert search("dogs.name=Pup", "Owner") == []  # related records are read as committed
        # an owner the transaction writes is not a committed related record yet
        tables.Owner.records.put("cy", {"name": "Cy"})
        tables.Dog.records.put(7, {"name": "Kit", "ownerId": "cy"})
        assert search("owner.name=Cy") == []
    assert search("owner.name=Ann") == [1, 6]
    assert search("owner.name=Cy") == [7]


def test_delete_by_a_join_removes_exactly_the_matches(fresh: App) -> None:
    resource = strict(table_of(fresh, "Dog"))
    database = resource.database
    query = bound(resource, "owner.city=sw=O|owner.name=Bob")
    with pytest.raises(BadRequest):  # city is not indexed
        plan_query(
            query, resource.definition, resource.store, database.read, Limits(), database=database
        )
    query = bound(resource, "owner.name=Ann|owner.name=Bob&age=3")
    plan = plan_query(
        query, resource.definition, resource.store, database.read, Limits(), database=database
    )
    write = DeleteMatching(
        "Dog", lambda txn: matching_keys(plan, resource.store, txn, 1000, database)
    )
    receipt = fresh.writers["data"].execute_sync([write])
    assert sorted(result.key for result in receipt.results) == [1, 2, 3]
    assert search("id=ge=0") == [4, 5]
