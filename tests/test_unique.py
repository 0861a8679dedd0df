"""Tests for ``@unique``: the schema rules, and the writer refusing a duplicate value with a 409.

The writer tests run on real LMDB in ``tmp_path``; the last ones race many
writers for one value, from threads through the writer and over HTTP against
the real server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_AUTH, KilnServer
from kiln.app import load_app
from kiln.config import load_config
from kiln.errors import Conflict, SchemaError
from kiln.schema import parse_schema
from kiln.storage import evolution
from kiln.storage.clock import HybridClock
from kiln.storage.database import Database
from kiln.storage.operations import Delete, Insert, Patch, Put
from kiln.storage.writer import Writer

SCHEMA = """
type User @table @export {
  id: Int @primaryKey
  email: String @unique
  name: String
}
"""


# --------------------------------------------------------------------------- schema


def schema_error(text: str) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        parse_schema(text)
    return info.value


def test_unique_attribute_is_indexed_and_listed() -> None:
    table = parse_schema(SCHEMA).tables["User"]
    email = table.attributes["email"]
    assert email.unique
    assert email.indexed
    assert table.unique == ("email",)
    assert table.indexed == ("email",)
    assert not table.attributes["name"].unique


@pytest.mark.parametrize(
    ("text", "where", "message", "hint"),
    [
        (
            "type A @table {\n  id: Int @primaryKey @unique\n}",
            "schema.graphql:2:23:",
            "`@unique` on the primary key `id` of `A`, which is unique already",
            "remove `@unique`",
        ),
        (
            "type A @table {\n  id: ID @unique\n}",
            "schema.graphql:2:10:",
            "`@unique` on the primary key `id` of `A`",
            "remove `@unique`",
        ),
        (
            "type A @table {\n  tags: [String] @unique\n}",
            "schema.graphql:2:18:",
            "`@unique` on `tags`, whose type is [String]; only a single scalar value",
            "use `@indexed` to index each item",
        ),
        (
            "type A @table {\n  at: Place @unique\n}\ntype Place { x: Int }",
            "schema.graphql:2:13:",
            "`@unique` on `at`, whose type is Place",
            "remove it",
        ),
        (
            "type A @table {\n  photo: Bytes @unique\n}",
            "schema.graphql:2:16:",
            "`@unique` on `photo`, whose type is Bytes",
            "remove it",
        ),
        (
            "type A @table {\n  email: String @unique(ignoreCase: true)\n}",
            "schema.graphql:2:25:",
            "unknown argument `ignoreCase` for `@unique`",
            "`@unique` takes no arguments",
        ),
        (
            "type A { email: String @unique }\ntype B @table { a: A }",
            "schema.graphql:1:24:",
            "`@unique` on `email` of `A`, which is not a @table",
            "move it there",
        ),
    ],
)
def test_schema_errors(text: str, where: str, message: str, hint: str) -> None:
    err = schema_error(text)
    assert str(err).startswith(where + " "), str(err)
    assert message in err.message
    assert err.hint is not None and hint in err.hint


def test_unique_on_id_is_fine_when_another_field_is_the_key() -> None:
    table = parse_schema("type A @table { key: ID @primaryKey  id: String @unique }").tables["A"]
    assert table.unique == ("id",)


# --------------------------------------------------------------------------- the writer


@pytest.fixture()
def database(tmp_path: Path) -> Iterator[Database]:
    tables = list(parse_schema(SCHEMA).tables.values())
    db = Database("data", tmp_path / "data", tables, map_size=1 << 24, clock=HybridClock())
    yield db
    db.close()


@pytest.fixture()
def writer(database: Database) -> Iterator[Writer]:
    w = Writer(database)
    w.start()
    yield w
    w.close()


def emails(database: Database) -> dict[int, str | None]:
    with database.read() as txn:
        chunk = database.tables["User"].scan(txn, None, 1000)
    return {record["id"]: record.get("email") for _key, record in chunk}


def index(database: Database) -> list[tuple[object, object]]:
    with database.read() as txn:
        return list(database.tables["User"].index_entries(txn, "email"))


def test_insert_of_a_taken_value_is_a_conflict_naming_attribute_value_and_key(
    database: Database, writer: Writer
) -> None:
    writer.execute_sync([Insert("User", 1, {"email": "ann@example.com"})])
    with pytest.raises(Conflict) as info:
        writer.execute_sync([Insert("User", 2, {"email": "ann@example.com"})])
    assert info.value.status == 409
    detail = info.value.detail
    assert "User.email is @unique" in detail
    assert "User 1 already has email 'ann@example.com'" in detail
    assert "send another email" in detail
    assert emails(database) == {1: "ann@example.com"}


def test_put_of_a_taken_value_is_a_conflict(database: Database, writer: Writer) -> None:
    writer.execute_sync([Put("User", 1, {"email": "a@x"}), Put("User", 2, {"email": "b@x"})])
    with pytest.raises(Conflict, match="User 1 already has email 'a@x'"):
        writer.execute_sync([Put("User", 2, {"email": "a@x"})])
    with pytest.raises(Conflict, match="User 1 already has email 'a@x'"):
        writer.execute_sync([Put("User", 3, {"email": "a@x"})])
    assert emails(database) == {1: "a@x", 2: "b@x"}


def test_patch_to_a_taken_value_is_a_conflict(database: Database, writer: Writer) -> None:
    writer.execute_sync([Put("User", 1, {"email": "a@x"}), Put("User", 2, {"email": "b@x"})])
    with pytest.raises(Conflict, match="User 2 already has email 'b@x'"):
        writer.execute_sync([Patch("User", 1, {"email": "b@x"})])
    assert emails(database) == {1: "a@x", 2: "b@x"}


def test_a_record_may_keep_or_rewrite_its_own_value(database: Database, writer: Writer) -> None:
    writer.execute_sync([Put("User", 1, {"email": "a@x", "name": "Ann"})])
    writer.execute_sync([Put("User", 1, {"email": "a@x", "name": "Anne"})])
    writer.execute_sync([Patch("User", 1, {"name": "Annie"})])
    writer.execute_sync([Patch("User", 1, {"email": "a@x"})])
    assert emails(database) == {1: "a@x"}
    assert index(database) == [("a@x", 1)]


def test_null_and_absent_values_are_not_unique(database: Database, writer: Writer) -> None:
    writer.execute_sync(
        [Put("User", 1, {"email": None}), Put("User", 2, {}), Put("User", 3, {"email": None})]
    )
    assert emails(database) == {1: None, 2: None, 3: None}


def test_a_deleted_record_frees_its_value(database: Database, writer: Writer) -> None:
    writer.execute_sync([Put("User", 1, {"email": "a@x"})])
    writer.execute_sync([Delete("User", 1)])
    writer.execute_sync([Insert("User", 2, {"email": "a@x"})])
    assert emails(database) == {2: "a@x"}
    assert index(database) == [("a@x", 2)]


def test_a_patched_record_frees_its_old_value(database: Database, writer: Writer) -> None:
    writer.execute_sync([Put("User", 1, {"email": "a@x"})])
    writer.execute_sync([Patch("User", 1, {"email": "b@x"})])
    writer.execute_sync([Put("User", 2, {"email": "a@x"})])
    writer.execute_sync([Patch("User", 1, {"email": None})])
    writer.execute_sync([Put("User", 3, {"email": "b@x"})])
    assert emails(database) == {1: None, 2: "a@x", 3: "b@x"}


def test_two_writes_of_one_job_conflict_and_the_job_keeps_nothing(
    database: Database, writer: Writer
) -> None:
    with pytest.raises(Conflict, match="User 1 already has email 'a@x'"):
        writer.execute_sync([Put("User", 1, {"email": "a@x"}), Put("User", 2, {"email": "a@x"})])
    assert emails(database) == {}
    assert index(database) == []


def test_swapping_values_within_one_job_works(database: Database, writer: Writer) -> None:
    writer.execute_sync([Put("User", 1, {"email": "a@x"}), Put("User", 2, {"email": "b@x"})])
    writer.execute_sync(
        [
            Patch("User", 1, {"email": None}),
            Patch("User", 2, {"email": "a@x"}),
            Patch("User", 1, {"email": "b@x"}),
        ]
    )
    assert emails(database) == {1: "b@x", 2: "a@x"}


def test_long_values_that_share_an_index_key_are_told_apart(
    database: Database, writer: Writer
) -> None:
    stem = "x" * 600  # beyond LMDB's key size: the index keys of both are cut to one
    writer.execute_sync([Put("User", 1, {"email": stem + "a"})])
    writer.execute_sync([Put("User", 2, {"email": stem + "b"})])
    with pytest.raises(Conflict, match="User 2 already has email"):
        writer.execute_sync([Put("User", 3, {"email": stem + "b"})])
    assert sorted(emails(database)) == [1, 2]


def test_concurrent_inserts_of_one_value_exactly_one_wins(
    database: Database, writer: Writer
) -> None:
    start = threading.Barrier(16)

    def insert(key: int) -> str:
        start.wait()
        try:
            writer.execute_sync([Insert("User", key, {"email": "race@x"})])
        except Conflict:
            return "conflict"
        return "created"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(insert, range(1, 17)))
    assert outcomes.count("created") == 1
    assert outcomes.count("conflict") == 15
    winner = outcomes.index("created") + 1
    assert emails(database) == {winner: "race@x"}
    assert index(database) == [("race@x", winner)]


# --------------------------------------------------------------------------- over HTTP


def test_http_duplicate_is_a_409_problem(http: httpx.Client) -> None:
    email = f"{uuid.uuid4()}@x"
    assert http.put("/User/101", json={"email": email}).status_code in (200, 201, 204)
    response = http.post("/User/", json={"email": email})
    assert response.status_code == 409, response.text
    problem = response.json()
    assert "User.email is @unique" in problem["detail"]
    assert f"User 101 already has email '{email}'" in problem["detail"]
    patched = http.put("/User/102", json={"email": f"other-{email}"})
    assert patched.status_code in (200, 201, 204)
    assert http.patch("/User/102", json={"email": email}).status_code == 409


def test_http_concurrent_posts_of_one_value_exactly_one_wins(kiln_server: KilnServer) -> None:
    email = f"{uuid.uuid4()}@x"
    start = threading.Barrier(12)

    def post(_: int) -> int:
        with httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=10) as client:
            start.wait()
            return client.post("/User/", json={"email": email}).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(post, range(12)))
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == 11, statuses


def test_adding_unique_to_a_stored_attribute_builds_its_index(tmp_path: Path) -> None:
    before = parse_schema("type User @table { id: Int @primaryKey  email: String }")
    db = Database(
        "data", tmp_path / "d", list(before.tables.values()), map_size=1 << 24, clock=HybridClock()
    )
    try:
        w = Writer(db)
        w.start()
        w.execute_sync([Put("User", 1, {"email": "a@x"}), Put("User", 2, {"email": "b@x"})])
        w.close()
    finally:
        db.close()
    tables = list(parse_schema(SCHEMA).tables.values())
    db = Database("data", tmp_path / "d", tables, map_size=1 << 24, clock=HybridClock())
    try:
        with db.read() as txn:
            stored = db.catalog.read(txn)
        plan = evolution.plan(tables, stored)
        assert plan.build == (("User", "email"),)
        for name, attribute in evolution.commit(db, plan):
            evolution.build_index(db, name, attribute, lambda *_: None)
        assert index(db) == [("a@x", 1), ("b@x", 2)]
        w = Writer(db)
        w.start()
        with pytest.raises(Conflict, match="User 2 already has email 'b@x'"):
            w.execute_sync([Put("User", 3, {"email": "b@x"})])
        w.close()
    finally:
        db.close()


def test_unique_over_stored_duplicates_refuses_to_start(tmp_path: Path) -> None:
    """Values shared before ``@unique`` was added stop the start at the attribute's line."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "schema.graphql").write_text(
        "type User @table @export {\n  id: Int @primaryKey\n  email: String @indexed\n}\n"
    )
    config = load_config(app)
    first = load_app(app, config)
    try:
        writes = [Put("User", key, {"email": email}) for key, email in enumerate("aabcc", 1)]
        first.writers["data"].execute_sync(writes)
    finally:
        first.close()
    (app / "schema.graphql").write_text(
        "type User @table @export {\n  id: Int @primaryKey\n  email: String @unique\n}\n"
    )
    with pytest.raises(SchemaError) as info:
        load_app(app, config)
    text = str(info.value)
    assert text.startswith("schema.graphql:3:3: `User.email` is `@unique`, but stored records")
    assert "'a' by 1, 2" in text and "'c' by 4, 5" in text and "'b'" not in text
    assert "give those records distinct email values first" in text
    # nothing was changed: the old schema still starts and serves every record
    (app / "schema.graphql").write_text(
        "type User @table @export {\n  id: Int @primaryKey\n  email: String @indexed\n}\n"
    )
    again = load_app(app, config)
    try:
        with again.databases["data"].read() as txn:
            assert again.databases["data"].tables["User"].count(txn) == 5
    finally:
        again.close()
