""":mod:`kiln.auth.roles` and :mod:`kiln.auth.access`: ``roles:`` in config.yaml → permissions,
the errors a bad role gives (file, line, key, hint), and what a role may read and write."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.auth.access import check_write, readable_query
from kiln.auth.roles import (
    FULL_ACCESS,
    NO_ACCESS,
    SUPER_USER,
    Role,
    TableAccess,
    User,
    build_roles,
)
from kiln.config import load_config
from kiln.errors import ConfigError, Forbidden, Unauthorized
from kiln.query import parse_query
from kiln.query.relationships import related_tables
from kiln.schema import Schema, load_schema

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String @indexed
  secret: String
  ownerId: ID @indexed
  owner: Owner @relationship(from: ownerId)
}
type Owner @table @export {
  id: ID @primaryKey
  name: String @indexed
  phone: String
}
type Visit @table(database: "clinic") @export {
  id: ID @primaryKey
  notes: String
}
"""


def roles_of(tmp_path: Path, config: str) -> dict[str, Role]:
    (tmp_path / "schema.graphql").write_text(SCHEMA)
    (tmp_path / "config.yaml").write_text(config)
    return build_roles(load_config(tmp_path, env={}), load_schema(tmp_path / "schema.graphql"))


def role_error(tmp_path: Path, config: str) -> str:
    with pytest.raises(ConfigError) as caught:
        roles_of(tmp_path, config)
    return str(caught.value)


def test_no_roles_gives_the_built_in_super_user(tmp_path: Path) -> None:
    roles = roles_of(tmp_path, "")
    assert list(roles) == [SUPER_USER]
    assert roles[SUPER_USER].access("Dog") is FULL_ACCESS


def test_a_role_grants_per_database_and_table(tmp_path: Path) -> None:
    roles = roles_of(
        tmp_path,
        """\
roles:
  reader:
    data:
      Dog: {read: true}
    clinic:
      Visit: {read: true, delete: true}
  nobody:
  admin:
    super_user: true
""",
    )
    assert roles["reader"].access("Dog") == TableAccess(read=True)
    assert roles["reader"].access("Visit") == TableAccess(read=True, delete=True)
    assert roles["reader"].access("Owner") is NO_ACCESS
    assert roles["nobody"].access("Dog") is NO_ACCESS
    assert roles["admin"].access("Owner") is FULL_ACCESS


def test_attributes_are_an_allow_list_with_the_key_and_the_tables_permissions(
    tmp_path: Path,
) -> None:
    roles = roles_of(
        tmp_path,
        """\
roles:
  editor:
    data:
      Dog:
        read: true
        insert: true
        update: true
        attributes:
          name: {read: true}
          breed: {read: true, update: false}
          owner: {read: true}
""",
    )
    access = roles["editor"].access("Dog")
    assert access.readable == {"id", "name", "breed", "owner"}
    assert access.insertable == {"id", "name", "breed", "owner"}
    assert access.updatable == {"id", "name", "owner"}
    assert access.view({"id": 1, "name": "Rex", "secret": "s", "extra": 1}) == {
        "id": 1,
        "name": "Rex",
    }
    assert access.unwritable(["name", "breed", "secret"], "update") == ["breed", "secret"]
    assert FULL_ACCESS.unwritable(["anything"], "insert") == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            "roles:\n  reader:\n    dta:\n      Dog: {read: true}\n",
            "config.yaml:3:5: `roles.reader.dta`: schema.graphql has no database `dta`\n"
            "  hint: did you mean `data`?; a role lists databases, each with its tables "
            "(`data: {Dog: {read: true}}`)",
        ),
        (
            "roles:\n  reader:\n    data:\n      Dgo: {read: true}\n",
            "config.yaml:4:7: `roles.reader.data.Dgo`: database `data` has no table `Dgo`\n"
            "  hint: did you mean `Dog`?",
        ),
        (
            "roles:\n  reader:\n    data:\n      Dog: {raed: true}\n",
            "config.yaml:4:13: `roles.reader.data.Dog.raed`: `raed` is not a table permission\n"
            "  hint: did you mean `read`?",
        ),
        (
            "roles:\n  reader:\n    data:\n      Dog: {read: yes please}\n",
            "config.yaml:4:19: `roles.reader.data.Dog.read`: expects true or false, "
            "got 'yes please'\n  hint: write true or false",
        ),
        (
            "roles:\n  reader:\n    data:\n      Dog:\n        read: true\n"
            "        attributes: {nmae: {read: true}}\n",
            "config.yaml:6:22: `roles.reader.data.Dog.attributes.nmae`: `Dog` has no attribute "
            "`nmae`\n  hint: did you mean `name`?",
        ),
        (
            "roles:\n  reader:\n    data:\n      Dog:\n        read: true\n"
            "        attributes: {name: {update: true}}\n",
            "config.yaml:6:29: `roles.reader.data.Dog.attributes.name.update`: grants `update` "
            "on an attribute of a table the role may not `update`\n  hint: grant `update: true` "
            "on the table too, or remove this line: an attribute permission only narrows the "
            "table's",
        ),
        (
            "roles:\n  super_user:\n    data: {}\n",
            "config.yaml:2:3: `roles.super_user`: super_user is a built-in role and cannot be "
            "declared\n  hint: give your role another name; `super_user: true` inside it makes "
            "it a super user",
        ),
        (
            "roles:\n  anonymous:\n    super_user: true\n",
            "config.yaml:3:5: `roles.anonymous.super_user`: the anonymous role cannot be a super "
            "user: every request without credentials would be one\n  hint: grant it only what "
            "the public may do, such as `data: {Dog: {read: true}}`",
        ),
        (
            "roles:\n  reader: [read]\n",
            "config.yaml:2:11: `roles.reader`: expects a map of databases\n"
            "  hint: write its databases indented below it",
        ),
        (
            "roles:\n  reader:\n    data:\n      Dog:\n        attributes: [name]\n",
            "config.yaml:5:21: `roles.reader.data.Dog.attributes`: expects a map of attributes\n"
            "  hint: write its attributes indented below it, each with its permissions, like "
            "`name: {read: true}`",
        ),
    ],
)
def test_a_bad_role_is_a_config_error_naming_file_line_key_and_hint(
    tmp_path: Path, config: str, expected: str
) -> None:
    assert role_error(tmp_path, config) == expected


# --------------------------------------------------------------------------- queries and writes

EDITOR = Role(
    "editor",
    tables={
        "Dog": TableAccess(
            read=True,
            insert=True,
            update=True,
            readable=frozenset({"id", "name", "breed", "owner"}),
            insertable=frozenset({"id", "name", "breed"}),
            updatable=frozenset({"id", "name"}),
        ),
        "Owner": TableAccess(read=True, readable=frozenset({"id", "name"})),
    },
)
WRITER = Role("writer", tables={"Dog": TableAccess(read=True, insert=True, update=True)})
DELETER = Role("deleter", tables={"Dog": TableAccess(delete=True)})


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    path = tmp_path_factory.mktemp("schema") / "schema.graphql"
    path.write_text(SCHEMA)
    return load_schema(path)


def query_as(role: Role, schema: Schema, text: str, anonymous: bool = False):
    dog = schema.tables["Dog"]
    user = User(None if anonymous else "someone", role)
    return readable_query(user, dog, related_tables(schema, dog), parse_query(text))


@pytest.mark.parametrize(
    ("role", "text", "named"),
    [
        (EDITOR, "secret=x", "`secret` of `Dog`"),
        (EDITOR, "name=x|secret=y", "`secret` of `Dog`"),
        (EDITOR, "sort(secret)", "`secret` of `Dog`"),
        (EDITOR, "select(secret)", "`secret` of `Dog`"),
        (EDITOR, "select([name,secret])", "`secret` of `Dog`"),
        (EDITOR, "owner.phone=1", "`phone` of `Owner`"),
        (EDITOR, "select(name,owner)", "every attribute of `Owner`"),
        (WRITER, "owner.name=Ann", "`Owner`"),
        (WRITER, "select(name,owner{name})", "`Owner`"),
        (DELETER, "name=Rex", "`Dog`"),
    ],
)
def test_a_query_naming_what_the_role_may_not_read_is_refused(
    schema: Schema, role: Role, text: str, named: str
) -> None:
    with pytest.raises(Forbidden) as caught:
        query_as(role, schema, text)
    assert caught.value.detail.endswith(f"has no `read` permission on {named}")
    with pytest.raises(Unauthorized):
        query_as(role, schema, text, anonymous=True)


def test_an_object_selection_leaves_hidden_attributes_out(schema: Schema) -> None:
    query = query_as(EDITOR, schema, "breed=lab&select(name,secret,owner{name,phone})")
    assert query.select is not None
    names = [(item.name, item.nested) for item in query.select.fields]
    assert names[0] == ("name", None)
    assert names[1][0] == "owner"
    assert [item.name for item in names[1][1].fields] == ["name"]
    with pytest.raises(Forbidden):
        query_as(EDITOR, schema, "select(secret,)")  # nothing left to select


def test_a_write_naming_an_attribute_the_role_may_not_write_is_refused(schema: Schema) -> None:
    dog = schema.tables["Dog"]
    user = User("ed", EDITOR)
    check_write(user, dog, "insert", {"id": 1, "name": "Rex", "breed": "lab"})
    check_write(user, dog, "update", {"name": "Max"})
    with pytest.raises(Forbidden, match="no `insert` permission on `secret` of `Dog`"):
        check_write(user, dog, "insert", {"name": "Rex", "secret": "s"})
    with pytest.raises(Forbidden, match="no `update` permission on `breed` of `Dog`"):
        check_write(user, dog, "update", {"breed": "pug"})
    with pytest.raises(Forbidden, match="PUT replaces them all"):
        check_write(user, dog, "update", {"name": "Max"}, replaces=True)
    check_write(User("w", WRITER), dog, "update", {"name": "Max", "x": 1}, replaces=True)
    check_write(user, dog, "update", ["not", "a", "map"])  # left to validation
