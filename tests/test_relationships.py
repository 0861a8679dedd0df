"""Tests for ``@relationship``: the schema rules, validation of writes, and reading related records.

Resolution, dot-path conditions and selections run on real LMDB in ``tmp_path``
(:mod:`kiln.query.relationships`); the last tests send writes to the real server.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiln.errors import SchemaError, ValidationError
from kiln.query.model import And, Condition, Field, Or, Selection
from kiln.query.relationships import (
    matcher,
    project,
    related_tables,
    resolve,
    with_related,
)
from kiln.schema import Relationship, parse_schema
from kiln.storage.clock import HybridClock
from kiln.storage.database import Database
from kiln.storage.operations import Put
from kiln.storage.writer import Writer
from kiln.validation import validate_record

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
  ownerId: ID @indexed
  owner: Owner @relationship(from: ownerId)
  friendIds: [ID]
  friends: [Owner] @relationship(from: "friendIds")
}
"""


# --------------------------------------------------------------------------- schema


def test_relationships_are_on_the_model_and_not_stored_attributes() -> None:
    schema = parse_schema(SCHEMA)
    owner, dog = schema.tables["Owner"], schema.tables["Dog"]
    assert list(owner.attributes) == ["id", "name", "city"]
    assert list(dog.attributes) == ["id", "name", "ownerId", "friendIds"]
    assert owner.relationships == {
        "dogs": Relationship("dogs", "Dog", None, "ownerId", True, line=6, column=3)
    }
    assert dog.relationships == {
        "owner": Relationship("owner", "Owner", "ownerId", None, False, line=12, column=3),
        "friends": Relationship("friends", "Owner", "friendIds", None, True, line=14, column=3),
    }
    assert dog.indexed == ("ownerId",)
    assert related_tables(schema, dog) == {"owner": owner, "friends": owner}


def test_a_table_may_relate_to_itself() -> None:
    table = parse_schema(
        "type Dog @table { id: ID  parentId: ID  parent: Dog @relationship(from: parentId) }"
    ).tables["Dog"]
    assert table.relationships["parent"].target == "Dog"


def expect_error(text: str, where: str, *, at: str, message: str, hint: str) -> None:
    """Parse ``text``: the error starts with ``where``, which points at ``at`` in the source."""
    text = textwrap.dedent(text).strip("\n")
    with pytest.raises(SchemaError) as info:
        parse_schema(text)
    err = info.value
    assert str(err).startswith(where + " "), str(err)
    line, column = (int(n) for n in where.split(":")[1:3])
    assert text.split("\n")[line - 1][column - 1 :].startswith(at), (where, at)
    assert message in err.message, err.message
    assert err.hint is not None and hint in err.hint, err.hint


OWNER = "type Owner @table { id: ID  name: String  homeId: ID @indexed }\n"


@pytest.mark.parametrize(
    ("dog", "where", "at", "message", "hint"),
    [
        (
            "type Dog @table { ownerId: ID  owner: Owner @relationship }",
            "schema.graphql:2:45:",
            "@relationship",
            "`@relationship` on `owner` of `Dog` needs `from:` or `to:`",
            "`@relationship(from: ownerId)`",
        ),
        (
            "type Dog @table { ownerId: ID  owner: [Owner] @relationship(from: ownerId, to: x) }",
            "schema.graphql:2:76:",
            "to: x",
            "has both `from:` and `to:`; it takes exactly one of them",
            "keep `from:`",
        ),
        (
            "type Dog @table { ownerId: ID  owner: Owner @relationship(form: ownerId) }",
            "schema.graphql:2:59:",
            "form",
            "unknown argument `form` for `@relationship`",
            "did you mean `from`?",
        ),
        (
            "type Dog @table { ownerId: ID  owner: Owner @relationship(from: 5) }",
            "schema.graphql:2:65:",
            "5",
            "`@relationship(from:)` expects a string, got a number",
            "quote it",
        ),
        (
            "type Dog @table { ownerId: ID  owner: Owner @relationship(from: ownrId) }",
            "schema.graphql:2:65:",
            "ownrId",
            "`@relationship(from: ownrId)` on `owner`: `Dog` has no attribute `ownrId`",
            "did you mean `ownerId`?",
        ),
        (
            "type Dog @table { owner: Owner @relationship(from: ownerId) }",
            "schema.graphql:2:52:",
            "ownerId",
            "`Dog` has no attribute `ownerId`",
            "e.g. `ownerId: ID`",
        ),
        (
            "type Dog @table { ownerIds: [ID]  owner: Owner @relationship(from: ownerIds) }",
            "schema.graphql:2:42:",
            "Owner @",
            "`ownerIds` of `Dog` is a list ([ID]), so the relationship `owner` finds several",
            "declare it as a list: `owner: [Owner]`",
        ),
        (
            "type Dog @table { ownerId: ID  owners: [Owner] @relationship(from: ownerId) }",
            "schema.graphql:2:40:",
            "[Owner]",
            "the relationship `owners` is a list ([Owner]), but `ownerId` of `Dog` holds one key",
            "declare `owners: Owner`, or make `ownerId` a list",
        ),
        (
            "type Dog @table { o: Loc  owner: Owner @relationship(from: o) }\ntype Loc { x: Int }",
            "schema.graphql:2:60:",
            "o)",
            "`o` has the object type Loc; it must hold Owner keys",
            "declare it as `o: ID`",
        ),
        (
            "type Dog @table { id: ID  homes: Owner @relationship(to: homeId) }",
            "schema.graphql:2:34:",
            "Owner @",
            "so `homes` must be a list",
            "declare it as `homes: [Owner]`",
        ),
        (
            "type Dog @table { id: ID  homes: [Owner] @relationship(to: homeID) }",
            "schema.graphql:2:60:",
            "homeID",
            "`@relationship(to: homeID)` on `homes`: `Owner` has no attribute `homeID`",
            "did you mean `homeId`?",
        ),
        (
            "type Dog @table { id: ID  named: [Owner] @relationship(to: name) }",
            "schema.graphql:2:60:",
            "name",
            "`name` of `Owner` is not @indexed, and the relationship is read through its index",
            "add `@indexed` to it in `type Owner`: `name: String @indexed`",
        ),
        (
            "type Dog @table { ownerId: ID  owner: ID @relationship(from: ownerId) }",
            "schema.graphql:2:39:",
            "ID @",
            "`@relationship` on `owner` of `Dog`, whose type `ID` is not a @table type",
            "give it the related table's type",
        ),
        (
            "type Dog @table { ownerId: ID  owner: Loc @relationship(from: ownerId) }\n"
            "type Loc { x: Int }",
            "schema.graphql:2:39:",
            "Loc @",
            "whose type `Loc` is not a @table type",
            "give it the related table's type",
        ),
        (
            "type Dog @table { ownerId: ID  owner: Ownr @relationship(from: ownerId) }",
            "schema.graphql:2:39:",
            "Ownr",
            "unknown type `Ownr` for `owner` of `Dog`",
            "did you mean `Owner`?",
        ),
        (
            "type Dog @table { ownerId: ID  owner: Owner! @relationship(from: ownerId) }",
            "schema.graphql:2:39:",
            "Owner!",
            "the relationship `owner` of `Dog` is declared required (Owner!)",
            "remove the `!`",
        ),
        (
            "type Dog @table { ownerId: ID  owner: Owner @relationship(from: ownerId) @indexed }",
            "schema.graphql:2:74:",
            "@indexed",
            "`@indexed` on the relationship `owner` of `Dog`; a relationship is computed when "
            "read, never indexed",
            "put it on the attribute holding the key instead",
        ),
        (
            "type Dog @table { ownerId: ID  owner: Owner @unique @relationship(from: ownerId) }",
            "schema.graphql:2:45:",
            "@unique",
            "`@unique` on the relationship `owner` of `Dog`",
            "remove it",
        ),
        (
            "type Dog @table { owner: Owner @relationship(from: ownerId)  ownerId: ID\n"
            "  owner: String }",
            "schema.graphql:3:3:",
            "owner: String",
            "field `owner` is declared twice in `Dog` (first on line 2)",
            "remove or rename one of them",
        ),
        (
            'type Dog @table(database: "pets") { ownerId: ID  owner: Owner @relationship('
            "from: ownerId) }",
            "schema.graphql:2:57:",
            "Owner @",
            "`owner` of `Dog` (database `pets`) relates to `Owner`, which is stored in database "
            "`data`; relationships must stay within one database",
            'store both tables in one database, e.g. `@table(database: "pets")` on `Owner`',
        ),
        (
            "type Dog @table { ownerId: Boolean  owner: Owner @relationship(from: ownerId) }",
            "schema.graphql:2:70:",
            "ownerId)",
            "`@relationship(from: ownerId)` on `owner`: `ownerId` of `Dog` is Boolean, but it "
            "must hold Owner keys, which are ID",
            "declare it as `ownerId: ID`",
        ),
        (
            "type Dog @table { ownerIds: [Int]  owners: [Owner] @relationship(from: ownerIds) }",
            "schema.graphql:2:72:",
            "ownerIds)",
            "`ownerIds` of `Dog` is [Int], but it must hold Owner keys, which are ID",
            "declare it as `ownerIds: [ID]`",
        ),
        (
            "type Dog @table { id: Int @primaryKey  walks: [Walk] @relationship(to: dogId) }\n"
            "type Walk @table { dogId: String @indexed }",
            "schema.graphql:2:72:",
            "dogId)",
            "`@relationship(to: dogId)` on `walks`: `dogId` of `Walk` is String, but it must "
            "hold Dog keys, which are Int",
            "declare it as `dogId: Int`",
        ),
        (
            "type Dog @table { ownerId: ID  info: Info }\n"
            "type Info { owner: Owner @relationship(from: ownerId) }",
            "schema.graphql:3:20:",
            "Owner @",
            "`owner` of `Info` has the type `Owner`, which is a @table; only a @table type can "
            "relate to another table",
            "store the key instead",
        ),
    ],
)
def test_schema_errors(dog: str, where: str, at: str, message: str, hint: str) -> None:
    expect_error(OWNER + dog, where, at=at, message=message, hint=hint)


def test_relationship_directive_in_a_nested_type_with_a_scalar_type() -> None:
    expect_error(
        "type Dog @table { info: Info }\ntype Info { ownerId: ID @relationship(from: x) }",
        "schema.graphql:2:25:",
        at="@relationship",
        message="`@relationship` on `ownerId` of `Info`, which is not a @table",
        hint="move it there",
    )


# --------------------------------------------------------------------------- validation


def test_writing_a_relationship_is_rejected_by_validation() -> None:
    schema = parse_schema(SCHEMA)
    dog, owner = schema.tables["Dog"], schema.tables["Owner"]
    with pytest.raises(ValidationError) as info:
        validate_record(dog, schema, {"name": "Rex", "owner": {"name": "Ann"}, "friends": None})
    assert [(e.path, e.message) for e in info.value.errors] == [
        (
            "$.owner",
            "`owner` is a relationship to Owner, computed when read and never stored; "
            "remove it and set `ownerId` to the Owner's key instead",
        ),
        (
            "$.friends",
            "`friends` is a relationship to Owner, computed when read and never stored; "
            "remove it and set `friendIds` to the Owner's key instead",
        ),
    ]
    with pytest.raises(ValidationError) as info:
        validate_record(owner, schema, {"dogs": []}, partial=True)
    assert "set `ownerId` on the Dog records instead" in info.value.errors[0].message
    assert validate_record(dog, schema, {"name": "Rex", "ownerId": "a"}) == {
        "name": "Rex",
        "ownerId": "a",
    }


# --------------------------------------------------------------------------- reading


@pytest.fixture()
def database(tmp_path: Path) -> Iterator[Database]:
    """Owners ann, bob, cy (no dogs); dogs 1-2 of ann, 3 of bob, 4 of a missing owner, 5 of none."""
    tables = list(parse_schema(SCHEMA).tables.values())
    db = Database("data", tmp_path / "data", tables, map_size=1 << 24, clock=HybridClock())
    writer = Writer(db)
    writer.start()
    writer.execute_sync(
        [
            Put("Owner", "ann", {"name": "Ann", "city": "Oslo"}),
            Put("Owner", "bob", {"name": "Bob", "city": "Rome"}),
            Put("Owner", "cy", {"name": "Cy"}),
            Put("Dog", 1, {"name": "Rex", "ownerId": "ann", "friendIds": ["cy", "gone", "bob"]}),
            Put("Dog", 2, {"name": "Fido", "ownerId": "ann"}),
            Put("Dog", 3, {"name": "Max", "ownerId": "bob", "friendIds": []}),
            Put("Dog", 4, {"name": "Lost", "ownerId": "gone"}),
            Put("Dog", 5, {"name": "Stray"}),
        ]
    )
    writer.close()
    yield db
    db.close()


def read(database: Database, table: str, key: object) -> dict:
    with database.read() as txn:
        found = database.tables[table].get(txn, key)
    assert found is not None
    return found[1]


def names(related: object) -> object:
    if related is None:
        return None
    if isinstance(related, list):
        return [item["name"] for item in related]
    assert isinstance(related, dict)
    return related["name"]


def test_resolve_many_to_one(database: Database) -> None:
    dog = database.tables["Dog"].definition
    owner = dog.relationships["owner"]
    with database.read() as txn:
        found = {
            key: resolve(database, txn, dog, owner, read(database, "Dog", key))
            for key in (1, 3, 4, 5)
        }
    assert found[1] == {"id": "ann", "name": "Ann", "city": "Oslo"}
    assert names(found[3]) == "Bob"
    assert found[4] is None  # the key points at no record
    assert found[5] is None  # no key at all


def test_resolve_many_to_many_keeps_the_key_order(database: Database) -> None:
    dog = database.tables["Dog"].definition
    friends = dog.relationships["friends"]
    with database.read() as txn:
        assert names(resolve(database, txn, dog, friends, read(database, "Dog", 1))) == [
            "Cy",
            "Bob",
        ]
        assert resolve(database, txn, dog, friends, read(database, "Dog", 3)) == []
        assert resolve(database, txn, dog, friends, read(database, "Dog", 2)) == []


def test_resolve_one_to_many_through_the_index(database: Database) -> None:
    owner = database.tables["Owner"].definition
    dogs = owner.relationships["dogs"]
    with database.read() as txn:
        assert names(resolve(database, txn, owner, dogs, read(database, "Owner", "ann"))) == [
            "Rex",
            "Fido",
        ]
        assert names(resolve(database, txn, owner, dogs, read(database, "Owner", "cy"))) == []
        assert resolve(database, txn, owner, dogs, {"name": "no key"}) == []


def matching_dogs(database: Database, node: object) -> list[int]:
    dog = database.tables["Dog"].definition
    with database.read() as txn:
        records = [record for _key, record in database.tables["Dog"].scan(txn, None, 100)]
        if node is None:
            return [r["id"] for r in records]
        test = matcher(database, txn, dog, node)  # type: ignore[arg-type]
        return [r["id"] for r in records if test(r)]


def test_dot_path_conditions_have_inner_join_semantics(database: Database) -> None:
    assert matching_dogs(database, Condition(("owner", "name"), "eq", "Ann")) == [1, 2]
    assert matching_dogs(database, Condition(("owner", "city"), "sw", "R")) == [3]
    # No owner, or an owner key with no record: never a match, not even for `!=`.
    assert matching_dogs(database, Condition(("owner", "name"), "ne", "Ann")) == [3]
    assert matching_dogs(database, Condition(("owner", "city"), "eq", None)) == []
    # Many-to-many: a match when any related record matches.
    assert matching_dogs(database, Condition(("friends", "name"), "eq", "Bob")) == [1]


def test_dot_paths_combine_with_plain_conditions_and_go_several_hops(database: Database) -> None:
    ann_or_max = Or((Condition(("owner", "name"), "eq", "Ann"), Condition(("name",), "eq", "Max")))
    assert matching_dogs(database, ann_or_max) == [1, 2, 3]
    assert matching_dogs(database, And((ann_or_max, Condition(("name",), "ne", "Rex")))) == [2, 3]
    assert matching_dogs(database, None) == [1, 2, 3, 4, 5]
    # Dog → owner → the owner's dogs: the dogs that share an owner with a dog named Fido.
    siblings = Condition(("owner", "dogs", "name"), "eq", "Fido")
    assert matching_dogs(database, siblings) == [1, 2]
    owner = database.tables["Owner"].definition
    with database.read() as txn:
        ann = read(database, "Owner", "ann")
        assert matcher(database, txn, owner, Condition(("dogs", "name"), "eq", "Fido"))(ann)
        assert not matcher(database, txn, owner, Condition(("dogs", "name"), "eq", "Max"))(ann)


def selection(*fields: Field) -> Selection:
    return Selection(fields)


def test_with_related_fills_selected_relationships_as_a_left_join(database: Database) -> None:
    dog = database.tables["Dog"].definition
    chosen = selection(
        Field("name"), Field("owner", selection(Field("name"), Field("city"))), Field("friends")
    )
    with database.read() as txn:
        rex = with_related(database, txn, dog, read(database, "Dog", 1), chosen)
        stray = with_related(database, txn, dog, read(database, "Dog", 5), chosen)
    assert rex["owner"] == {"name": "Ann", "city": "Oslo"}
    assert names(rex["friends"]) == ["Cy", "Bob"]
    assert rex["ownerId"] == "ann"  # the stored fields stay, for the executor to shape
    assert stray["owner"] is None
    assert stray["friends"] == []
    assert "dogs" not in rex


def test_project_nests_selections_through_several_relationships(database: Database) -> None:
    owner = database.tables["Owner"].definition
    chosen = selection(
        Field("name"),
        Field("missing"),
        Field("dogs", selection(Field("name"), Field("owner", selection(Field("city"))))),
    )
    with database.read() as txn:
        ann = project(database, txn, owner, read(database, "Owner", "ann"), chosen)
        cy = project(database, txn, owner, read(database, "Owner", "cy"), chosen)
    assert ann == {
        "name": "Ann",
        "missing": None,
        "dogs": [
            {"name": "Rex", "owner": {"city": "Oslo"}},
            {"name": "Fido", "owner": {"city": "Oslo"}},
        ],
    }
    assert cy == {"name": "Cy", "missing": None, "dogs": []}


def test_project_keeps_the_selected_keys_of_an_object_attribute(tmp_path: Path) -> None:
    schema = parse_schema("type A @table { id: Int  at: Place }\ntype Place { x: Int  y: Int }")
    table = schema.tables["A"]
    db = Database("data", tmp_path / "d", [table], map_size=1 << 22, clock=HybridClock())
    try:
        with db.read() as txn:
            chosen = selection(Field("at", selection(Field("x"))))
            assert project(db, txn, table, {"id": 1, "at": {"x": 1, "y": 2}}, chosen) == {
                "at": {"x": 1}
            }
    finally:
        db.close()


# --------------------------------------------------------------------------- over HTTP


def test_http_write_of_a_relationship_is_a_400_naming_it(http: httpx.Client) -> None:
    assert http.put("/Owner/h-ann", json={"name": "Ann"}).status_code in (200, 201, 204)
    response = http.put("/Dog/9001", json={"name": "Rex", "owner": {"id": "h-ann"}})
    assert response.status_code == 400, response.text
    problem = response.json()
    assert [e["path"] for e in problem["errors"]] == ["$.owner"]
    assert "`owner` is a relationship to Owner" in problem["errors"][0]["message"]
    assert http.post("/Owner/", json={"name": "Bo", "dogs": []}).status_code == 400
    assert http.patch("/Owner/h-ann", json={"dogs": None}).status_code == 400
    assert http.get("/Dog/9001").status_code == 404


def test_http_records_never_carry_relationships(http: httpx.Client) -> None:
    assert http.put("/Owner/h-bob", json={"name": "Bob"}).status_code in (200, 201, 204)
    assert http.put("/Dog/9002", json={"name": "Max", "ownerId": "h-bob"}).status_code in (
        200,
        201,
        204,
    )
    assert http.get("/Dog/9002").json() == {"id": 9002, "name": "Max", "ownerId": "h-bob"}
    assert http.get("/Owner/h-bob").json() == {"id": "h-bob", "name": "Bob"}
