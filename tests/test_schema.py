"""Tests for ``kiln.schema``: SDL → table definitions, and every schema error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kiln.errors import KilnError, SchemaError
from kiln.schema import (
    SCALARS,
    Attribute,
    ObjectType,
    Relationship,
    Schema,
    TableDef,
    TypeRef,
    load_schema,
    parse_schema,
)

EXAMPLE = textwrap.dedent(
    """\
    type Owner @table @export {
      id: ID @primaryKey
      name: String! @indexed
      city: String
    }
    type Dog @table(database: "data", table: "dogs") @export(name: "Dog") @sealed {
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
      updated: Long @updatedTime
    }
    type Address { street: String  zip: String! }
    """
)


def fail(text: str) -> SchemaError:
    """The :class:`SchemaError` parsing ``text`` raises."""
    with pytest.raises(SchemaError) as info:
        parse_schema(text)
    return info.value


def expect_error(text: str, where: str, *, at: str, message: str, hint: str) -> SchemaError:
    """Parse ``text`` and check the error's ``file:line:col:`` prefix, message and hint.

    ``at`` is what the source holds at that line and column, so a test also shows
    which token the error points at.
    """
    err = fail(text)
    assert str(err).startswith(where + " "), str(err)
    line, column = (int(n) for n in where.split(":")[1:3])
    assert text.split("\n")[line - 1][column - 1 :].startswith(at), (where, at)
    assert message in err.message, err.message
    assert err.hint is not None
    assert hint in err.hint, err.hint
    assert str(err).endswith("\n  hint: " + err.hint)
    return err


# --------------------------------------------------------------------------- the model


def test_scalars() -> None:
    assert {
        "ID",
        "String",
        "Int",
        "Long",
        "Float",
        "BigInt",
        "Boolean",
        "Date",
        "Bytes",
        "Any",
    } == SCALARS


def test_example_parses_into_the_expected_model() -> None:
    schema = parse_schema(EXAMPLE)

    assert schema.file == "schema.graphql"
    assert list(schema.tables) == ["Owner", "Dog"]
    assert list(schema.types) == ["Address"]

    owner = schema.tables["Owner"]
    assert owner == TableDef(
        name="Owner",
        table="Owner",
        database="data",
        export_name="Owner",
        primary_key="id",
        attributes={
            "id": Attribute("id", TypeRef("ID"), primary_key=True, line=2, column=3),
            "name": Attribute(
                "name", TypeRef("String", required=True), indexed=True, line=3, column=3
            ),
            "city": Attribute("city", TypeRef("String"), line=4, column=3),
        },
        sealed=False,
        line=1,
        column=6,
    )

    dog = schema.table("Dog")
    assert (dog.name, dog.table, dog.database, dog.export_name) == ("Dog", "dogs", "data", "Dog")
    assert dog.sealed
    assert (dog.line, dog.column) == (6, 6)
    assert list(dog.attributes) == [
        "id",
        "name",
        "breed",
        "age",
        "weight",
        "birthday",
        "photo",
        "tags",
        "address",
        "created",
        "updated",
    ]
    assert dog.primary_key == "id"
    assert dog.primary_key_type == "Int"
    assert dog.indexed == ("breed", "tags")
    assert dog.created_time == "created"
    assert dog.updated_time == "updated"
    assert dog.attributes["tags"] == Attribute(
        "tags", TypeRef("String", is_list=True), indexed=True, line=14, column=3
    )
    assert dog.attributes["address"].type == TypeRef("Address")
    assert dog.attributes["created"].created_time
    assert dog.attributes["updated"].updated_time
    assert dog.attributes["birthday"].type.name == "Date"

    assert schema.types["Address"] == ObjectType(
        name="Address",
        attributes={
            "street": Attribute("street", TypeRef("String"), line=19, column=16),
            "zip": Attribute("zip", TypeRef("String", required=True), line=19, column=32),
        },
        sealed=False,
        line=19,
        column=6,
    )

    assert schema.databases() == ["data"]
    assert [t.name for t in schema.exported()] == ["Owner", "Dog"]
    assert owner.indexed == ("name",)
    assert owner.created_time is None
    assert owner.updated_time is None


def test_type_refs() -> None:
    schema = parse_schema("type T @table { a: [String!]! b: [Int] c: [Float!] d: Boolean! e: Any }")
    attrs = schema.tables["T"].attributes
    assert attrs["a"].type == TypeRef("String", is_list=True, required=True, item_required=True)
    assert attrs["b"].type == TypeRef("Int", is_list=True)
    assert attrs["c"].type == TypeRef("Float", is_list=True, item_required=True)
    assert attrs["d"].type == TypeRef("Boolean", required=True)
    assert [str(a.type) for a in attrs.values()] == [
        "ID",
        "[String!]!",
        "[Int]",
        "[Float!]",
        "Boolean!",
        "Any",
    ]
    assert attrs["a"].type.is_scalar


def test_default_id_is_added_first_at_the_type_position() -> None:
    schema = parse_schema("\n  type Note @table {\n    text: String\n  }\n")
    note = schema.tables["Note"]
    assert note.primary_key == "id"
    assert list(note.attributes) == ["id", "text"]
    assert note.attributes["id"] == Attribute(
        "id", TypeRef("ID"), primary_key=True, line=2, column=8
    )
    assert note.primary_key_type == "ID"


def test_table_without_fields_gets_an_id() -> None:
    schema = parse_schema("type Empty @table")
    assert list(schema.tables["Empty"].attributes) == ["id"]


def test_id_field_is_picked_up_as_primary_key() -> None:
    schema = parse_schema("type T @table { name: String  id: Long! }")
    table = schema.tables["T"]
    assert table.primary_key == "id"
    assert list(table.attributes) == ["name", "id"]
    assert table.attributes["id"].primary_key
    assert table.attributes["id"].type == TypeRef("Long", required=False)
    assert table.primary_key_type == "Long"


def test_explicit_primary_key_wins_over_id_and_is_never_required() -> None:
    schema = parse_schema("type T @table { id: Int  code: String! @primaryKey @indexed }")
    table = schema.tables["T"]
    assert table.primary_key == "code"
    assert not table.attributes["id"].primary_key
    assert table.attributes["code"].type == TypeRef("String", required=False)
    assert table.indexed == ()  # the primary key is always indexed; it is not listed


@pytest.mark.parametrize("type_name", ["ID", "String", "Int", "Long", "Float", "BigInt"])
def test_primary_key_types(type_name: str) -> None:
    schema = parse_schema(f"type T @table {{ key: {type_name} @primaryKey }}")
    assert schema.tables["T"].primary_key_type == type_name


def test_table_and_export_arguments() -> None:
    schema = parse_schema(
        """
        type A @table { x: Int }
        type B @table(table: "bees") @export { x: Int }
        type C @table(database: "other-db") @export(name: "see.v1") { x: Int }
        type D @table(table: "d_2", database: "other-db") @export(name: "d-2") { x: Int }
        """
    )
    a, b, c, d = (schema.tables[n] for n in "ABCD")
    assert (a.table, a.database, a.export_name) == ("A", "data", None)
    assert (b.table, b.database, b.export_name) == ("bees", "data", "B")
    assert (c.table, c.database, c.export_name) == ("C", "other-db", "see.v1")
    assert (d.table, d.database, d.export_name) == ("d_2", "other-db", "d-2")
    assert schema.databases() == ["data", "other-db"]
    assert [t.name for t in schema.exported()] == ["B", "C", "D"]


def test_sealed_nested_type_and_descriptions_and_comments() -> None:
    schema = parse_schema(
        '''
        # a comment
        """A table."""
        type T @table @sealed {
          "the point"
          point: Point
          points: [Point!]
        }
        type Point @sealed { x: Float!  y: Float!  tags: [String]  child: Point }
        '''
    )
    assert schema.tables["T"].sealed
    point = schema.types["Point"]
    assert point.sealed
    assert list(point.attributes) == ["x", "y", "tags", "child"]
    assert schema.tables["T"].attributes["points"].type == TypeRef(
        "Point", is_list=True, item_required=True
    )
    assert (schema.tables["T"].line, schema.tables["T"].column) == (4, 14)


def test_time_attribute_types() -> None:
    for type_name in ("Long", "Float", "Date", "Any"):
        schema = parse_schema(
            f"type T @table {{ c: {type_name} @createdTime  u: {type_name}! @updatedTime }}"
        )
        assert schema.tables["T"].created_time == "c"
        assert schema.tables["T"].updated_time == "u"


def test_indexed_list_of_scalars_is_allowed() -> None:
    schema = parse_schema("type T @table { tags: [String!] @indexed  n: Int @indexed }")
    assert schema.tables["T"].indexed == ("tags", "n")


def test_empty_schema_and_no_tables() -> None:
    assert parse_schema("") == Schema(tables={}, types={}, file="schema.graphql")
    assert parse_schema("  # only a comment\n\n").tables == {}
    only_types = parse_schema("type Address { zip: String }")
    assert only_types.tables == {}
    assert list(only_types.types) == ["Address"]
    assert only_types.databases() == []
    assert only_types.exported() == []


def test_unknown_table_lookup() -> None:
    schema = parse_schema(EXAMPLE)
    with pytest.raises(KilnError) as info:
        schema.table("Dgo")
    assert str(info.value) == (
        "no table named `Dgo` in schema.graphql\n  hint: did you mean `Dog`?"
    )
    with pytest.raises(KilnError) as info:
        schema.table("Zebra")
    assert info.value.hint == "the declared tables are: Owner, Dog"


# --------------------------------------------------------------------------- files


def test_load_schema(tmp_path: Path) -> None:
    path = tmp_path / "app.graphql"
    path.write_text(EXAMPLE, encoding="utf-8")
    schema = load_schema(path)
    assert schema.file == "app.graphql"
    assert list(schema.tables) == ["Owner", "Dog"]


def test_load_schema_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "schema.graphql"
    path.write_text("type A @table {\n  x: Strng\n}\n", encoding="utf-8")
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    assert str(info.value).startswith("schema.graphql:2:6: unknown type `Strng`")
    assert info.value.file == "schema.graphql"
    assert (info.value.line, info.value.column) == (2, 6)


def test_load_schema_absent_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_schema(tmp_path / "schema.graphql")
    err = info.value
    assert str(err).startswith("schema.graphql: `schema.graphql` not found in ")
    assert err.line is None
    assert err.hint is not None
    assert err.hint.startswith(f"create {tmp_path / 'schema.graphql'} declaring your tables")


def test_load_schema_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "schema.graphql"
    path.write_text("", encoding="utf-8")
    assert load_schema(path).tables == {}


def test_load_schema_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "schema.graphql"
    path.write_bytes(b"type A @table { x: Int } # \xff\n")
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    assert "not valid UTF-8" in info.value.message


# --------------------------------------------------------------------------- syntax


def test_syntax_error() -> None:
    err = expect_error(
        "type A @table {\n  x: \n}\n",
        "schema.graphql:3:1:",
        at="}",
        message="syntax error: Expected Name, found '}'",
        hint="type Name @directive { field: Type @directive }",
    )
    assert "GraphQL request" not in str(err)


def test_syntax_error_at_end_of_file() -> None:
    expect_error(
        "type A @table {\n  x: Int\n",
        "schema.graphql:3:1:",
        at="",
        message="syntax error: Expected Name, found <EOF>",
        hint="missing `}`",
    )


def test_variable_as_argument_is_a_syntax_error() -> None:
    expect_error(
        "type A @table @export(name: $name) { x: Int }",
        "schema.graphql:1:29:",
        at="$name",
        message="Unexpected variable '$name' in constant value",
        hint="type Name",
    )


# --------------------------------------------------------------------------- directives


def test_unknown_type_directive_suggests_the_closest() -> None:
    expect_error(
        "type A @tabel { x: Int }",
        "schema.graphql:1:8:",
        at="@tabel",
        message="unknown directive `@tabel` on a type",
        hint="did you mean `@table`?",
    )


def test_unknown_field_directive_lists_the_known_ones() -> None:
    expect_error(
        "type A @table {\n  x: Int @uniq\n}",
        "schema.graphql:2:10:",
        at="@uniq",
        message="unknown directive `@uniq` on a field",
        hint="did you mean `@unique`?",
    )


def test_unknown_field_directive_suggests_the_closest() -> None:
    expect_error(
        "type A @table { x: Int @index }",
        "schema.graphql:1:24:",
        at="@index",
        message="unknown directive `@index` on a field",
        hint="did you mean `@indexed`?",
    )


def test_unknown_field_directive_without_a_close_one_lists_the_known_ones() -> None:
    expect_error(
        "type A @table {\n  x: Int @zzz\n}",
        "schema.graphql:2:10:",
        at="@zzz",
        message="unknown directive `@zzz` on a field",
        hint="the directives on a field are: @primaryKey, @indexed, @unique, @createdTime, "
        "@updatedTime, @relationship",
    )


def test_type_directive_on_a_field() -> None:
    expect_error(
        "type A @table { x: Int @sealed }",
        "schema.graphql:1:24:",
        at="@sealed",
        message="`@sealed` belongs on a type, not on a field",
        hint="move it after the type name: `type Dog @sealed { ... }`",
    )


def test_field_directive_on_a_type() -> None:
    expect_error(
        "type A @table @indexed { x: Int }",
        "schema.graphql:1:15:",
        at="@indexed",
        message="`@indexed` belongs on a field, not on a type",
        hint="move it after the field's type: `name: String @indexed`",
    )


def test_unknown_argument_suggests_the_closest() -> None:
    expect_error(
        'type A @table(tabel: "a") { x: Int }',
        "schema.graphql:1:15:",
        at="tabel",
        message="unknown argument `tabel` for `@table`",
        hint="did you mean `table`? (`@table` takes `table`, `database`)",
    )


def test_unknown_argument_lists_the_valid_ones() -> None:
    expect_error(
        'type A @table @export(path: "a") { x: Int }',
        "schema.graphql:1:23:",
        at="path",
        message="unknown argument `path` for `@export`",
        hint="`@export` takes `name`",
    )


def test_argument_on_a_directive_without_arguments() -> None:
    expect_error(
        "type A @table { x: Int @indexed(unique: true) }",
        "schema.graphql:1:33:",
        at="unique",
        message="unknown argument `unique` for `@indexed`",
        hint="`@indexed` takes no arguments; write it as `@indexed`",
    )


@pytest.mark.parametrize(
    ("value", "kind", "quoted"),
    [
        ("5", "a number", '"5"'),
        ("dogs", "an unquoted name", '"dogs"'),
        ("true", "a boolean", '"..."'),
        ("null", "null", '"..."'),
        ('["a"]', "a list", '"..."'),
        ('{a: "b"}', "an object", '"..."'),
    ],
)
def test_argument_of_the_wrong_kind(value: str, kind: str, quoted: str) -> None:
    expect_error(
        f"type A @table(table: {value}) {{ x: Int }}",
        "schema.graphql:1:22:",
        at=value,
        message=f"`@table(table:)` expects a string, got {kind}",
        hint=f"quote it: `@table(table: {quoted})`",
    )


def test_export_name_of_the_wrong_kind() -> None:
    expect_error(
        "type A @table @export(name: 5) { x: Int }",
        "schema.graphql:1:29:",
        at="5",
        message="`@export(name:)` expects a string, got a number",
        hint='quote it: `@export(name: "5")`',
    )


def test_repeated_directive_on_a_type() -> None:
    expect_error(
        "type A @table @sealed @sealed { x: Int }",
        "schema.graphql:1:23:",
        at="@sealed",
        message="`@sealed` appears twice on the same type",
        hint="remove the repeated one",
    )


def test_repeated_directive_on_a_field() -> None:
    expect_error(
        "type A @table { x: Int @indexed @indexed }",
        "schema.graphql:1:33:",
        at="@indexed",
        message="`@indexed` appears twice on the same field",
        hint="remove the repeated one",
    )


def test_repeated_argument() -> None:
    expect_error(
        'type A @table(table: "a", table: "b") { x: Int }',
        "schema.graphql:1:27:",
        at='table: "b"',
        message="argument `table` appears twice in `@table`",
        hint="keep one of them",
    )


@pytest.mark.parametrize(
    ("name", "problem", "suggestion"),
    [
        ("", "is empty", "Dog"),
        ("dogs/v1", "contains `/`; it must be a single URL path segment", "dogs-v1"),
        ("_dogs", "starts with `_`, which kiln reserves for its own routes", "dogs"),
        ("my dogs", "may only contain letters, digits, `_`, `-` and `.`", "mydogs"),
        ("..", "is not a usable URL path segment", "Dog"),
    ],
)
def test_invalid_export_name(name: str, problem: str, suggestion: str) -> None:
    expect_error(
        f'type A @table @export(name: "{name}") {{ x: Int }}',
        "schema.graphql:1:29:",
        at=f'"{name}"',
        message=f"the export name `{name}` {problem}",
        hint=f'choose another name, e.g. `@export(name: "{suggestion}")`',
    )


def test_default_export_name_starting_with_underscore() -> None:
    expect_error(
        "type _Secret @table @export { x: Int }",
        "schema.graphql:1:21:",
        at="@export",
        message="the export name `_Secret` starts with `_`",
        hint='e.g. `@export(name: "Secret")`',
    )


@pytest.mark.parametrize(
    ("arg", "value", "shown", "suggestion"),
    [
        ("table", "my dogs", "`my dogs`", "my_dogs"),
        ("table", "a.b", "`a.b`", "a_b"),
        ("database", "", "empty", "dogs"),
        ("database", "data/base", "`data/base`", "data_base"),
    ],
)
def test_invalid_storage_names(arg: str, value: str, shown: str, suggestion: str) -> None:
    text = f'type A @table({arg}: "{value}") {{ x: Int }}'
    column = text.index('"') + 1
    expect_error(
        text,
        f"schema.graphql:1:{column}:",
        at=f'"{value}"',
        message=f"invalid {arg} name {shown} in `@table({arg}:)`",
        hint=f'use letters, digits, `_` and `-` only, e.g. `@table({arg}: "{suggestion}")`',
    )


def test_export_without_table() -> None:
    expect_error(
        "type Address @export { zip: String }",
        "schema.graphql:1:14:",
        at="@export",
        message="`@export` on `Address`, which is not a @table",
        hint="add @table to export it (`type Address @table @export`)",
    )


# --------------------------------------------------------------------------- types


def test_unknown_type_suggests_a_scalar() -> None:
    expect_error(
        "type A @table {\n  name: Strng!\n}",
        "schema.graphql:2:9:",
        at="Strng",
        message="unknown type `Strng` for `name` of `A`",
        hint="did you mean `String`?",
    )


def test_unknown_type_suggests_a_declared_type() -> None:
    expect_error(
        "type A @table {\n  home: [Adress]\n}\ntype Address { zip: String }",
        "schema.graphql:2:10:",
        at="Adress",
        message="unknown type `Adress` for `home` of `A`",
        hint="did you mean `Address`?",
    )


def test_unknown_type_without_a_close_name() -> None:
    expect_error(
        "type A @table { x: Zebra }",
        "schema.graphql:1:20:",
        at="Zebra",
        message="unknown type `Zebra` for `x` of `A`",
        hint="use a scalar (ID, String, Int, Long, Float, BigInt, Boolean, Date, Bytes, Any) "
        "or declare `type Zebra`",
    )


def test_unknown_type_is_case_sensitive() -> None:
    expect_error(
        "type A @table { x: string }",
        "schema.graphql:1:20:",
        at="string",
        message="unknown type `string`",
        hint="did you mean `String`?",
    )


def test_field_typed_with_a_table() -> None:
    expect_error(
        "type Owner @table { name: String }\ntype Dog @table {\n  owner: Owner!\n}",
        "schema.graphql:3:10:",
        at="Owner!",
        message="`owner` of `Dog` has the type `Owner`, which is a @table, without `@relationship`",
        hint="declare the join, e.g. `owner: Owner @relationship(from: ownerId)` with "
        "`ownerId: ID` holding the Owner's key; or store the key instead (`ownerId: ID`)",
    )


def test_list_field_typed_with_a_table() -> None:
    expect_error(
        "type Owner @table { dogs: [Dog] }\ntype Dog @table { name: String }",
        "schema.graphql:1:28:",
        at="Dog]",
        message="`dogs` of `Owner` has the type `Dog`, which is a @table",
        hint="`dogs: [Dog] @relationship(to: ownerId)` to find the Dog records whose `ownerId` "
        "holds this key; or store the key instead (`dogIds: [ID]`)",
    )


def test_nested_type_field_typed_with_a_table() -> None:
    expect_error(
        "type Owner @table { name: String }\ntype Info { owner: Owner }",
        "schema.graphql:2:20:",
        at="Owner }",
        message="`owner` of `Info` has the type `Owner`, which is a @table; "
        "only a @table type can relate to another table",
        hint="ownerId: ID",
    )


def test_nested_lists() -> None:
    expect_error(
        "type A @table { grid: [[Int]] }",
        "schema.graphql:1:24:",
        at="[Int]",
        message="nested lists (like `[[Int]]`) are not supported",
        hint="declare the attribute as `Any`",
    )


def test_duplicate_type() -> None:
    expect_error(
        "type A @table { x: Int }\n\ntype A { y: Int }",
        "schema.graphql:3:6:",
        at="A {",
        message="type `A` is declared twice (first on line 1)",
        hint="rename one of them",
    )


def test_duplicate_field() -> None:
    expect_error(
        "type A @table {\n  x: Int\n  y: Int\n  x: String\n}",
        "schema.graphql:4:3:",
        at="x: String",
        message="field `x` is declared twice in `A` (first on line 2)",
        hint="remove or rename one of them",
    )


@pytest.mark.parametrize("name", ["Query", "Mutation", "Subscription"])
def test_reserved_type_names(name: str) -> None:
    expect_error(
        f"type {name} @table {{ x: Int }}",
        "schema.graphql:1:6:",
        at=name,
        message=f"the type name `{name}` is reserved",
        hint=f"rename the type; kiln generates `{name}` from the @table types",
    )


def test_type_named_like_a_scalar() -> None:
    expect_error(
        "type Date { day: Int }",
        "schema.graphql:1:6:",
        at="Date",
        message="`Date` is a built-in scalar and cannot be redeclared",
        hint="rename the type",
    )


def test_double_underscore_names() -> None:
    expect_error(
        "type __A { x: Int }",
        "schema.graphql:1:6:",
        at="__A",
        message="starts with `__`, which GraphQL reserves",
        hint="rename the type",
    )
    expect_error(
        "type A { __x: Int }",
        "schema.graphql:1:10:",
        at="__x",
        message="the field name `__x` starts with `__`",
        hint="rename the field",
    )


def test_field_arguments() -> None:
    expect_error(
        "type A @table { x(first: Int): Int }",
        "schema.graphql:1:19:",
        at="first",
        message="field `x` of `A` has arguments; field arguments are not supported",
        hint="remove the parentheses",
    )


def test_implements() -> None:
    expect_error(
        "type A implements Node @table { x: Int }",
        "schema.graphql:1:19:",
        at="Node",
        message="`A` implements an interface; interfaces are not supported",
        hint="remove `implements ...`",
    )


@pytest.mark.parametrize(
    ("text", "at", "message", "hint"),
    [
        ("enum Color { RED }", "enum", "enum types are not supported", "declare the attribute"),
        ("input In { x: Int }", "input", "input types are not supported", "plain `type`"),
        ("interface I { x: Int }", "interface", "interfaces are not supported", "repeat"),
        ("union U = A | B", "union", "union types are not supported", "`Any`"),
        ("scalar JSON", "scalar", "custom scalars are not supported", "built-in scalars"),
        ("schema { query: A }", "schema", "a `schema { ... }` block is not supported", "remove"),
        ("extend type A { y: Int }", "extend", "`extend` is not supported", "own declaration"),
        ("extend schema @x", "extend", "`extend` is not supported", "own declaration"),
        ("directive @x on FIELD", "directive", "directive declarations", "built in"),
        ("{ dogs { id } }", "{", "queries, mutations and fragments", "declares types only"),
        ("query Q { dogs }", "query", "queries, mutations and fragments", "declares types only"),
        ("fragment F on A { x }", "fragment", "queries, mutations and", "declares types only"),
    ],
)
def test_unsupported_definitions(text: str, at: str, message: str, hint: str) -> None:
    source = f"type A @table {{ x: Int }}\n\n  {text}\n"
    expect_error(source, "schema.graphql:3:3:", at=at, message=message, hint=hint)


def test_unsupported_definition_with_a_description_points_at_the_keyword() -> None:
    expect_error(
        '"""Colors."""\nenum Color { RED }',
        "schema.graphql:2:1:",
        at="enum",
        message="enum types are not supported",
        hint="String",
    )


# --------------------------------------------------------------------------- primary keys


def test_second_primary_key() -> None:
    expect_error(
        "type A @table {\n  a: ID @primaryKey\n  b: ID @primaryKey\n}",
        "schema.graphql:3:9:",
        at="@primaryKey",
        message="`A` has a second `@primaryKey` (on `b`; the first is on `a`)",
        hint="a table has exactly one primary key; remove one of them",
    )


@pytest.mark.parametrize("type_text", ["Boolean", "Date", "[ID]", "Any", "Bytes!"])
def test_primary_key_type(type_text: str) -> None:
    expect_error(
        f"type A @table {{ key: {type_text} @primaryKey }}",
        "schema.graphql:1:22:",
        at=type_text,
        message=f"the primary key `key` has the type {type_text}; "
        "a primary key must be a single ID, String, Int, Long, Float or BigInt",
        hint="declare it as e.g. `key: ID`",
    )


def test_implicit_id_primary_key_type() -> None:
    expect_error(
        "type A @table {\n  id: Boolean\n}",
        "schema.graphql:2:7:",
        at="Boolean",
        message="the primary key `id` has the type Boolean (a field named `id` is the primary "
        "key when no field has @primaryKey)",
        hint="declare it as e.g. `id: ID`, or mark another field with @primaryKey",
    )


def test_primary_key_in_a_nested_type() -> None:
    expect_error(
        "type Address { id: ID @primaryKey }",
        "schema.graphql:1:23:",
        at="@primaryKey",
        message="`@primaryKey` on `id` of `Address`, which is not a @table",
        hint="applies to top-level attributes of a @table type",
    )


# --------------------------------------------------------------------------- created / updated


def test_created_time_on_an_int() -> None:
    expect_error(
        "type A @table {\n  created: Int @createdTime\n}",
        "schema.graphql:2:12:",
        at="Int",
        message="`@createdTime` on `created`, whose type is Int",
        hint="`Int` is 32-bit and would overflow with epoch milliseconds",
    )


def test_updated_time_on_a_list() -> None:
    expect_error(
        "type A @table { updated: [Long] @updatedTime }",
        "schema.graphql:1:26:",
        at="[Long]",
        message="`@updatedTime` on `updated`, whose type is [Long]",
        hint="declare it as `Long` (epoch milliseconds), `Float`, `Date` or `Any`",
    )


def test_second_created_time() -> None:
    expect_error(
        "type A @table {\n  a: Long @createdTime\n  b: Date @createdTime\n}",
        "schema.graphql:3:11:",
        at="@createdTime",
        message="`A` has a second `@createdTime` (on `b`; the first is on `a`)",
        hint="a table has at most one `@createdTime` attribute",
    )


def test_second_updated_time() -> None:
    expect_error(
        "type A @table { a: Long @updatedTime  b: Long @updatedTime }",
        "schema.graphql:1:47:",
        at="@updatedTime",
        message="`A` has a second `@updatedTime` (on `b`; the first is on `a`)",
        hint="a table has at most one `@updatedTime` attribute",
    )


def test_created_and_updated_on_one_field() -> None:
    expect_error(
        "type A @table { t: Long @updatedTime @createdTime }",
        "schema.graphql:1:38:",
        at="@createdTime",
        message="`t` has both `@createdTime` and `@updatedTime`",
        hint="use two attributes",
    )


def test_time_on_the_primary_key() -> None:
    expect_error(
        "type A @table { key: Long @primaryKey @createdTime }",
        "schema.graphql:1:39:",
        at="@createdTime",
        message="`@createdTime` on the primary key `key` of `A`",
        hint="put it on its own attribute, e.g. `created: Long @createdTime`",
    )


def test_time_on_the_implicit_id_primary_key() -> None:
    expect_error(
        "type A @table { id: Long @updatedTime }",
        "schema.graphql:1:26:",
        at="@updatedTime",
        message="`@updatedTime` on the primary key `id` of `A`",
        hint="`updated: Long @updatedTime`",
    )


def test_time_in_a_nested_type() -> None:
    expect_error(
        "type Info { at: Long @createdTime }",
        "schema.graphql:1:22:",
        at="@createdTime",
        message="`@createdTime` on `at` of `Info`, which is not a @table",
        hint="move it there",
    )


# --------------------------------------------------------------------------- indexes


def test_indexed_in_a_nested_type() -> None:
    expect_error(
        "type A @table { address: Address }\ntype Address {\n  zip: String @indexed\n}",
        "schema.graphql:3:15:",
        at="@indexed",
        message="`@indexed` on `zip` of `Address`, which is not a @table; indexes are per table",
        hint="index an attribute of the table itself",
    )


@pytest.mark.parametrize("type_text", ["Address", "[Address!]"])
def test_indexed_on_an_object_attribute(type_text: str) -> None:
    text = f"type A @table {{ address: {type_text} @indexed }}\ntype Address {{ zip: String }}"
    column = text.index("@indexed") + 1
    expect_error(
        text,
        f"schema.graphql:1:{column}:",
        at="@indexed",
        message=f"`@indexed` on `address`, whose type {type_text} is an object type",
        hint="index a scalar attribute instead (or a list of scalars)",
    )


# --------------------------------------------------------------------------- table collisions


def test_two_tables_with_the_same_storage() -> None:
    expect_error(
        'type Dog @table { x: Int }\ntype Cat @table(table: "Dog") { x: Int }',
        "schema.graphql:2:10:",
        at="@table",
        message="`Cat` and `Dog` are both stored in table `Dog` of database `data`",
        hint='give one of them another name, e.g. `@table(table: "Dog2")`',
    )


def test_same_table_name_in_two_databases_is_fine() -> None:
    schema = parse_schema(
        'type Dog @table { x: Int }\ntype Cat @table(table: "Dog", database: "zoo") { x: Int }'
    )
    assert schema.databases() == ["data", "zoo"]


def test_two_tables_with_the_same_export_name() -> None:
    expect_error(
        'type Dog @table @export { x: Int }\ntype Cat @table @export(name: "Dog") { x: Int }',
        "schema.graphql:2:17:",
        at="@export",
        message="`Cat` and `Dog` are both exported as `Dog`",
        hint='give one of them another path, e.g. `@export(name: "Cats")`',
    )


# --------------------------------------------------------------------------- line endings


def test_positions_with_crlf_line_endings() -> None:
    schema = parse_schema("type A @table {\r\n  x: Int\r\n}\r\n")
    assert (schema.tables["A"].attributes["x"].line, schema.tables["A"].attributes["x"].column) == (
        2,
        3,
    )
    err = fail("type A @table {\r\n  x: \r\n}\r\n")
    assert str(err).startswith("schema.graphql:3:1: syntax error: Expected Name, found '}'")
    err = fail("type A @table {\r\n  x: Strng\r\n}\r\n")
    assert str(err).startswith("schema.graphql:2:6: unknown type `Strng`")


def test_unique_and_relationship_in_the_model() -> None:
    schema = parse_schema(
        "type Owner @table {\n"
        "  id: ID @primaryKey\n"
        "  email: String @unique\n"
        "  dogs: [Dog] @relationship(to: ownerId)\n"
        "}\n"
        "type Dog @table { id: Int  ownerId: ID @indexed }"
    )
    owner = schema.tables["Owner"]
    assert owner.attributes["email"] == Attribute(
        "email", TypeRef("String"), indexed=True, unique=True, line=3, column=3
    )
    assert list(owner.attributes) == ["id", "email"]
    assert (owner.indexed, owner.unique) == (("email",), ("email",))
    assert owner.relationships == {
        "dogs": Relationship("dogs", "Dog", None, "ownerId", many=True, line=4, column=3)
    }
    assert schema.tables["Dog"].relationships == {}
