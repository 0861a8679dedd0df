"""Queries through relationships on a real table, checked against joins done in plain Python.

Forty owners, two hundred dogs (some without an owner, some pointing at an owner
that does not exist) and a dozen tags (dogs hold lists of tag keys, some dangling)
are queried with dot-path conditions, nested selections and dot-path sorts; each
answer is computed again here from the stored records with plain dicts and lists.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from kiln.app import App, load_app
from kiln.config import load_config
from kiln.errors import BadRequest
from kiln.query import parse_query
from kiln.query.binder import bind
from kiln.query.relationships import related_tables
from kiln.resource import Table
from kiln.storage.operations import Put

SCHEMA = """
type Owner @table @export {
  id: ID @primaryKey
  name: String @indexed
  city: String
  dogs: [Dog] @relationship(to: ownerId)
}
type Dog @table @export {
  id: Int @primaryKey
  name: String
  age: Int @indexed
  ownerId: ID @indexed
  owner: Owner @relationship(from: ownerId)
  tagIds: [ID]
  tags: [Tag] @relationship(from: tagIds)
}
type Tag @table @export {
  id: ID @primaryKey
  label: String
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
        dogs[i] = dog
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


def run(app: App, table: str, text: str) -> list[Any]:
    resource = app.routes[table]
    assert isinstance(resource, Table)
    definition, schema = resource.definition, resource.schema
    query = bind(
        parse_query(text), definition, schema, relationships=related_tables(schema, definition)
    )
    return list(resource.search(query))


# --------------------------------------------------------------------------- plain joins


def owner_of(dog: dict) -> dict | None:
    key = dog.get("ownerId")
    return None if key not in OWNERS else {"id": key, **OWNERS[key]}


def tags_of(dog: dict) -> list[dict]:
    return [{"id": key, **TAGS[key]} for key in dog.get("tagIds") or [] if key in TAGS]


def dogs_of(owner_key: str) -> list[dict]:
    return [{"id": k, **d} for k, d in sorted(DOGS.items()) if d.get("ownerId") == owner_key]


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
