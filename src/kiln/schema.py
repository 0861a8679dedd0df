"""``schema.graphql`` → table definitions.

An application declares its tables as GraphQL object types with directives::

    type Dog @table(database: "data", table: "dogs") @export(name: "Dog") @sealed {
      id: Int @primaryKey
      name: String! @indexed
      created: Long @createdTime
    }

:func:`parse_schema` reads that text with graphql-core's parser and walks the
syntax tree itself (the directives are kiln's, not declared in the file, so no
GraphQL schema is built). The result is a :class:`Schema`: frozen
:class:`TableDef` and :class:`ObjectType` values the storage, REST and
validation layers read. Every mistake raises :class:`~kiln.errors.SchemaError`
pointing at the offending token, with a hint saying how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from graphql import GraphQLError
from graphql import language as ast
from graphql.language import Lexer, Source, TokenKind
from graphql.language import parse as graphql_parse

from kiln.errors import KilnError, SchemaError

__all__ = [
    "SCALARS",
    "Attribute",
    "ObjectType",
    "Schema",
    "TableDef",
    "TypeRef",
    "load_schema",
    "parse_schema",
]

SCALARS: frozenset[str] = frozenset(
    {"ID", "String", "Int", "Long", "Float", "BigInt", "Boolean", "Date", "Bytes", "Any"}
)
"""The scalar type names an attribute may have."""

_SCALAR_ORDER = (
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
)
_KEY_SCALARS = ("ID", "String", "Int", "Long", "Float", "BigInt")
_TIME_SCALARS = ("Long", "Float", "Date", "Any")
_RESERVED_TYPES = frozenset({"Query", "Mutation", "Subscription"})
_DEFAULT_DATABASE = "data"

# Directive name → its argument names, per location.
_TYPE_DIRECTIVES: dict[str, tuple[str, ...]] = {
    "table": ("table", "database"),
    "export": ("name",),
    "sealed": (),
}
_FIELD_DIRECTIVES: dict[str, tuple[str, ...]] = {
    "primaryKey": (),
    "indexed": (),
    "createdTime": (),
    "updatedTime": (),
}

_LINE_BREAK = re.compile(r"\r\n|[\n\r]")
_STORAGE_NAME = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_EXPORT_NAME = re.compile(r"[A-Za-z0-9.-][A-Za-z0-9_.-]*", re.ASCII)

# Definitions kiln does not read yet: what they are, and what to do instead.
_UNSUPPORTED: tuple[tuple[type[ast.Node], str, str], ...] = (
    (
        ast.EnumTypeDefinitionNode,
        "enum types are not supported",
        "declare the attribute as `String` and check its values in resources.py",
    ),
    (
        ast.InputObjectTypeDefinitionNode,
        "input types are not supported",
        "declare a plain `type` instead; kiln derives its inputs from the @table types",
    ),
    (
        ast.InterfaceTypeDefinitionNode,
        "interfaces are not supported",
        "repeat the fields in each type that would implement it",
    ),
    (
        ast.UnionTypeDefinitionNode,
        "union types are not supported",
        "declare the attribute as `Any` to store values of several shapes",
    ),
    (
        ast.ScalarTypeDefinitionNode,
        "custom scalars are not supported",
        "use one of the built-in scalars: " + ", ".join(_SCALAR_ORDER),
    ),
    (
        ast.SchemaDefinitionNode,
        "a `schema { ... }` block is not supported",
        "remove it; kiln generates the API from the @table types",
    ),
    (
        ast.TypeSystemExtensionNode,
        "`extend` is not supported",
        "add the fields or directives to the type's own declaration",
    ),
    (
        ast.DirectiveDefinitionNode,
        "directive declarations are not supported",
        "remove it; kiln's directives (@table, @export, @sealed, @primaryKey, @indexed, "
        "@createdTime, @updatedTime) are built in",
    ),
    (
        ast.ExecutableDefinitionNode,
        "queries, mutations and fragments do not belong in schema.graphql",
        "schema.graphql declares types only; send operations to the running server",
    ),
)


@dataclass(frozen=True, slots=True)
class TypeRef:
    """An attribute's type: a scalar or object type name, maybe a list, maybe required.

    ``[String!]!`` reads ``TypeRef("String", is_list=True, required=True,
    item_required=True)``; ``str()`` gives the SDL spelling back.
    """

    name: str
    is_list: bool = False
    required: bool = False
    item_required: bool = False

    @property
    def is_scalar(self) -> bool:
        """Whether the (item) type is one of :data:`SCALARS`."""
        return self.name in SCALARS

    def __str__(self) -> str:
        text = self.name
        if self.is_list:
            text = f"[{text}!]" if self.item_required else f"[{text}]"
        return f"{text}!" if self.required else text


@dataclass(frozen=True, slots=True)
class Attribute:
    """One field of a table or nested type, with its directives and its position in the file."""

    name: str
    type: TypeRef
    indexed: bool = False
    primary_key: bool = False
    created_time: bool = False
    updated_time: bool = False
    line: int = 0
    column: int = 0


@dataclass(frozen=True, slots=True)
class ObjectType:
    """A nested (non-table) object type: the shape of an attribute's value."""

    name: str
    attributes: dict[str, Attribute]
    sealed: bool = False
    line: int = 0
    column: int = 0


@dataclass(frozen=True, slots=True)
class TableDef:
    """A ``@table`` type: where its records are stored, how it is exported, its attributes.

    ``attributes`` is in declaration order and includes the primary key (an
    implicit ``id: ID`` comes first).
    """

    name: str
    table: str
    database: str
    export_name: str | None
    primary_key: str
    attributes: dict[str, Attribute]
    sealed: bool = False
    line: int = 0
    column: int = 0

    @property
    def indexed(self) -> tuple[str, ...]:
        """The names of the ``@indexed`` attributes (the primary key excluded), in order."""
        return tuple(
            a.name for a in self.attributes.values() if a.indexed and a.name != self.primary_key
        )

    @property
    def created_time(self) -> str | None:
        """The name of the ``@createdTime`` attribute, if any."""
        return next((a.name for a in self.attributes.values() if a.created_time), None)

    @property
    def updated_time(self) -> str | None:
        """The name of the ``@updatedTime`` attribute, if any."""
        return next((a.name for a in self.attributes.values() if a.updated_time), None)

    @property
    def primary_key_type(self) -> str:
        """The scalar type name of the primary key (``ID``, ``Int``, ...)."""
        return self.attributes[self.primary_key].type.name


@dataclass(frozen=True, slots=True)
class Schema:
    """Everything ``schema.graphql`` declares: tables and nested types, by type name."""

    tables: dict[str, TableDef]
    types: dict[str, ObjectType]
    file: str = "schema.graphql"

    def databases(self) -> list[str]:
        """The database names the tables use, sorted."""
        return sorted({t.database for t in self.tables.values()})

    def exported(self) -> list[TableDef]:
        """The tables with an ``@export``, in declaration order."""
        return [t for t in self.tables.values() if t.export_name is not None]

    def table(self, name: str) -> TableDef:
        """The table declared as ``type NAME @table``; a :class:`KilnError` when there is none."""
        try:
            return self.tables[name]
        except KeyError:
            known = ", ".join(self.tables) or "none"
            raise KilnError(
                f"no table named `{name}` in {self.file}",
                hint=_suggest(name, self.tables, f"the declared tables are: {known}"),
            ) from None


def load_schema(path: Path) -> Schema:
    """Read and parse the schema file at ``path`` (errors name the file as ``path.name``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SchemaError(
            f"`{path.name}` not found in {path.parent}",
            file=path.name,
            hint=f"create {path} declaring your tables, e.g. `type Dog @table @export "
            "{ name: String }` (an empty file means no tables)",
        ) from None
    except UnicodeDecodeError as exc:
        raise SchemaError(
            f"`{path.name}` is not valid UTF-8 text (byte {exc.start})",
            file=path.name,
            hint="save the file as UTF-8",
        ) from None
    except OSError as exc:
        raise SchemaError(
            f"cannot read `{path.name}`: {exc.strerror or exc}",
            file=path.name,
            hint=f"check that {path} is a readable file",
        ) from None
    return parse_schema(text, file=path.name)


def parse_schema(text: str, file: str = "schema.graphql") -> Schema:
    """Parse the SDL ``text`` into a :class:`Schema`; ``file`` names it in errors."""
    source = Source(text, file)
    if Lexer(source).advance().kind == TokenKind.EOF:
        return Schema(tables={}, types={}, file=file)
    try:
        document = graphql_parse(source)
    except GraphQLError as exc:
        raise _syntax_error(exc, file) from None
    return _Builder(file).build(document)


# --------------------------------------------------------------------------- internals


def _syntax_error(exc: GraphQLError, file: str) -> SchemaError:
    """A :class:`SchemaError` for graphql-core's syntax error, at its location."""
    message = exc.message
    prefix = "Syntax Error: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    message = "syntax error: " + message.rstrip(".")
    line = column = None
    if exc.positions and exc.source is not None:
        # graphql-core's own line/column is off when the position starts a line.
        line, column = _location(exc.source.body, exc.positions[0])
    elif exc.locations:  # pragma: no cover - a syntax error always has a position
        line, column = exc.locations[0].line, exc.locations[0].column
    if "<EOF>" in message:
        hint = "the file ends too early: check for a missing `}` or an unfinished field"
    else:
        hint = "each type reads `type Name @directive { field: Type @directive }`"
    return SchemaError(message, file=file, line=line, column=column, hint=hint)


def _location(text: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of ``offset`` in ``text`` (GraphQL line terminators)."""
    line, start = 1, 0
    for match in _LINE_BREAK.finditer(text, 0, offset):
        line, start = line + 1, match.end()
    return line, offset - start + 1


def _closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``name`` (difflib, then a case-insensitive match), if any."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return close[0]
    lowered = {c.lower(): c for c in choices}
    return lowered.get(name.lower())


def _suggest(name: str, choices: Iterable[str], otherwise: str, *, prefix: str = "") -> str:
    """``did you mean `X`?`` for the closest of ``choices``, else ``otherwise``."""
    close = _closest(name, choices)
    return f"did you mean `{prefix}{close}`?" if close else otherwise


def _at(node: ast.Node) -> tuple[int, int]:
    """The 1-based line and column where ``node`` starts (after its description)."""
    loc = node.loc
    if loc is None:  # pragma: no cover - the parser always records locations
        return 0, 0
    token = loc.start_token
    description = getattr(node, "description", None)
    if description is not None and description.loc is not None:
        token = description.loc.end_token.next or token
    return token.line, token.column


def _value_kind(value: ast.ValueNode) -> str:
    """How a GraphQL argument value reads, for messages (``a number``, ``a variable``)."""
    kinds: Sequence[tuple[type[ast.Node], str]] = (
        (ast.VariableNode, "a variable"),
        (ast.IntValueNode, "a number"),
        (ast.FloatValueNode, "a number"),
        (ast.BooleanValueNode, "a boolean"),
        (ast.NullValueNode, "null"),
        (ast.EnumValueNode, "an unquoted name"),
        (ast.ListValueNode, "a list"),
        (ast.ObjectValueNode, "an object"),
    )
    for cls, kind in kinds:
        if isinstance(value, cls):
            return kind
    return "not a string"  # pragma: no cover


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


@dataclass(frozen=True, slots=True)
class _Directives:
    """The checked directives on one node: name → node, and name → string arguments."""

    nodes: dict[str, ast.DirectiveNode]
    args: dict[str, dict[str, str]]

    def __contains__(self, name: str) -> bool:
        return name in self.nodes


class _Builder:
    """Walks a parsed document into a :class:`Schema`, raising at the first mistake."""

    def __init__(self, file: str):
        self.file = file

    def error(self, node: ast.Node, message: str, hint: str) -> SchemaError:
        line, column = _at(node)
        return SchemaError(message, file=self.file, line=line, column=column, hint=hint)

    # ------------------------------------------------------------------ document

    def build(self, document: ast.DocumentNode) -> Schema:
        declared: dict[str, tuple[ast.ObjectTypeDefinitionNode, _Directives]] = {}
        for definition in document.definitions:
            node = self.check_definition(definition)
            name = node.name.value
            if name in declared:
                first_line, _ = _at(declared[name][0].name)
                raise self.error(
                    node.name,
                    f"type `{name}` is declared twice (first on line {first_line})",
                    "rename one of them, or merge their fields into one declaration",
                )
            declared[name] = (node, self.directives(node.directives, on_type=True))

        table_names = {name for name, (_, d) in declared.items() if "table" in d}
        types: dict[str, ObjectType] = {}
        tables: dict[str, TableDef] = {}
        storage: dict[tuple[str, str], TableDef] = {}
        exports: dict[str, TableDef] = {}
        for name, (node, directives) in declared.items():
            if "table" not in directives:
                if "export" in directives:
                    raise self.error(
                        directives.nodes["export"],
                        f"`@export` on `{name}`, which is not a @table",
                        f"add @table to export it (`type {name} @table @export`), "
                        "or remove @export",
                    )
                types[name] = self.object_type(node, directives, declared, table_names)
                continue
            table = self.table(node, directives, declared, table_names)
            key = (table.database, table.table)
            if key in storage:
                raise self.error(
                    directives.nodes["table"],
                    f"`{name}` and `{storage[key].name}` are both stored in table "
                    f"`{table.table}` of database `{table.database}`",
                    f'give one of them another name, e.g. `@table(table: "{table.table}2")`',
                )
            storage[key] = table
            if table.export_name is not None:
                if table.export_name in exports:
                    raise self.error(
                        directives.nodes["export"],
                        f"`{name}` and `{exports[table.export_name].name}` are both exported "
                        f"as `{table.export_name}`",
                        f'give one of them another path, e.g. `@export(name: "{name}s")`',
                    )
                exports[table.export_name] = table
            tables[name] = table
        return Schema(tables=tables, types=types, file=self.file)

    def check_definition(self, definition: ast.DefinitionNode) -> ast.ObjectTypeDefinitionNode:
        if not isinstance(definition, ast.ObjectTypeDefinitionNode):
            for cls, message, hint in _UNSUPPORTED:
                if isinstance(definition, cls):
                    raise self.error(definition, message, hint)
            raise self.error(  # pragma: no cover - every definition kind is listed
                definition,
                "only object types are supported",
                "declare tables as `type Name @table { ... }`",
            )
        name = definition.name.value
        if name in _RESERVED_TYPES:
            raise self.error(
                definition.name,
                f"the type name `{name}` is reserved",
                f"rename the type; kiln generates `{name}` from the @table types",
            )
        if name in SCALARS:
            raise self.error(
                definition.name,
                f"`{name}` is a built-in scalar and cannot be redeclared",
                "rename the type",
            )
        if name.startswith("__"):
            raise self.error(
                definition.name,
                f"the type name `{name}` starts with `__`, which GraphQL reserves",
                "rename the type without the leading underscores",
            )
        if definition.interfaces:
            raise self.error(
                definition.interfaces[0],
                f"`{name}` implements an interface; interfaces are not supported",
                "remove `implements ...` and declare the fields in the type itself",
            )
        return definition

    # ------------------------------------------------------------------ directives

    def directives(
        self, nodes: Sequence[ast.DirectiveNode] | None, *, on_type: bool
    ) -> _Directives:
        """Check the directives on a type (``on_type``) or a field, and their arguments."""
        here, there = (
            (_TYPE_DIRECTIVES, _FIELD_DIRECTIVES)
            if on_type
            else (_FIELD_DIRECTIVES, _TYPE_DIRECTIVES)
        )
        place = "a type" if on_type else "a field"
        found: dict[str, ast.DirectiveNode] = {}
        args: dict[str, dict[str, str]] = {}
        for node in nodes or ():
            name = node.name.value
            if name not in here:
                if name in there:
                    other = "a field" if on_type else "a type"
                    example = (
                        f"after the field's type: `name: String @{name}`"
                        if on_type
                        else f"after the type name: `type Dog @{name} {{ ... }}`"
                    )
                    raise self.error(
                        node,
                        f"`@{name}` belongs on {other}, not on {place}",
                        f"move it {example}",
                    )
                if name == "relationship":
                    hint = (
                        "`@relationship` is not supported yet; store the related record's "
                        "key instead, e.g. `ownerId: ID`"
                    )
                else:
                    known = ", ".join(f"@{d}" for d in here)
                    hint = _suggest(
                        name, here, f"the directives on {place} are: {known}", prefix="@"
                    )
                raise self.error(node, f"unknown directive `@{name}` on {place}", hint)
            if name in found:
                raise self.error(
                    node,
                    f"`@{name}` appears twice on the same {place[2:]}",
                    "remove the repeated one",
                )
            found[name] = node
            args[name] = self.arguments(node, here[name])
        return _Directives(found, args)

    def arguments(self, directive: ast.DirectiveNode, valid: tuple[str, ...]) -> dict[str, str]:
        """Check a directive's arguments: known names, once each, string values."""
        name = directive.name.value
        values: dict[str, str] = {}
        for argument in directive.arguments or ():
            arg = argument.name.value
            if arg not in valid:
                if valid:
                    listed = ", ".join(f"`{a}`" for a in valid)
                    hint = _suggest(arg, valid, f"`@{name}` takes {listed}")
                    if hint.startswith("did"):
                        hint += f" (`@{name}` takes {listed})"
                else:
                    hint = f"`@{name}` takes no arguments; write it as `@{name}`"
                raise self.error(argument, f"unknown argument `{arg}` for `@{name}`", hint)
            if arg in values:
                raise self.error(
                    argument,
                    f"argument `{arg}` appears twice in `@{name}`",
                    "keep one of them",
                )
            value = argument.value
            if not isinstance(value, ast.StringValueNode):
                example = (
                    value.value
                    if isinstance(value, ast.EnumValueNode | ast.IntValueNode | ast.FloatValueNode)
                    else "..."
                )
                raise self.error(
                    value,
                    f"`@{name}({arg}:)` expects a string, got {_value_kind(value)}",
                    f'quote it: `@{name}({arg}: "{example}")`',
                )
            values[arg] = value.value
        return values

    # ------------------------------------------------------------------ types

    def table(
        self,
        node: ast.ObjectTypeDefinitionNode,
        directives: _Directives,
        declared: dict[str, tuple[ast.ObjectTypeDefinitionNode, _Directives]],
        table_names: set[str],
    ) -> TableDef:
        name = node.name.value
        table_args = directives.args["table"]
        table_name = self.storage_name(directives.nodes["table"], "table", table_args, name)
        database = self.storage_name(
            directives.nodes["table"], "database", table_args, _DEFAULT_DATABASE
        )
        export_name = None
        if "export" in directives:
            export_name = self.export_name(
                directives.nodes["export"], directives.args["export"], name
            )

        attributes, marks = self.fields(node, declared, table_names, in_table=True)
        line, column = _at(node.name)

        pk_name = marks.primary_key
        if pk_name is None:
            if "id" in attributes:
                pk_name = "id"
                self.check_key_type(attributes["id"], marks.type_nodes["id"], implicit=True)
            else:
                pk_name = "id"
                implicit = Attribute(
                    "id", TypeRef("ID"), primary_key=True, line=line, column=column
                )
                attributes = {"id": implicit, **attributes}
        pk = attributes[pk_name]
        for directive in ("createdTime", "updatedTime"):
            if directive in marks.field_directives.get(pk_name, ()):
                raise self.error(
                    marks.field_directives[pk_name][directive],
                    f"`@{directive}` on the primary key `{pk_name}` of `{name}`",
                    "put it on its own attribute, e.g. "
                    f"`{directive.removesuffix('Time')}: Long @{directive}`",
                )
        attributes[pk_name] = dataclasses.replace(
            pk, primary_key=True, type=dataclasses.replace(pk.type, required=False)
        )
        return TableDef(
            name=name,
            table=table_name,
            database=database,
            export_name=export_name,
            primary_key=pk_name,
            attributes=attributes,
            sealed="sealed" in directives,
            line=line,
            column=column,
        )

    def object_type(
        self,
        node: ast.ObjectTypeDefinitionNode,
        directives: _Directives,
        declared: dict[str, tuple[ast.ObjectTypeDefinitionNode, _Directives]],
        table_names: set[str],
    ) -> ObjectType:
        attributes, _ = self.fields(node, declared, table_names, in_table=False)
        line, column = _at(node.name)
        return ObjectType(
            name=node.name.value,
            attributes=attributes,
            sealed="sealed" in directives,
            line=line,
            column=column,
        )

    def storage_name(
        self, directive: ast.DirectiveNode, arg: str, args: dict[str, str], default: str
    ) -> str:
        value = args.get(arg, default)
        if arg in args and not _STORAGE_NAME.fullmatch(value):
            node = next(a.value for a in directive.arguments if a.name.value == arg)
            what = "empty" if not value else f"`{value}`"
            raise self.error(
                node,
                f"invalid {arg} name {what} in `@table({arg}:)`",
                f"use letters, digits, `_` and `-` only, e.g. `@table({arg}: "
                f'"{re.sub(r"[^A-Za-z0-9_-]", "_", value) or "dogs"}")`',
            )
        return value

    def export_name(self, directive: ast.DirectiveNode, args: dict[str, str], default: str) -> str:
        value = args.get("name", default)
        if _EXPORT_NAME.fullmatch(value) and value not in (".", ".."):
            return value
        node: ast.Node = directive
        if "name" in args:
            node = next(a.value for a in directive.arguments if a.name.value == "name")
        if not value:
            problem = "is empty"
        elif value.startswith("_"):
            problem = "starts with `_`, which kiln reserves for its own routes (like /_health)"
        elif "/" in value:
            problem = "contains `/`; it must be a single URL path segment"
        elif value in (".", ".."):
            problem = "is not a usable URL path segment"
        else:
            problem = "may only contain letters, digits, `_`, `-` and `.`"
        suggestion = re.sub(r"[^A-Za-z0-9_.-]", "", value.replace("/", "-")).lstrip("_.") or "Dog"
        raise self.error(
            node,
            f"the export name `{value}` {problem}",
            f'choose another name, e.g. `@export(name: "{suggestion}")`',
        )

    def fields(
        self,
        node: ast.ObjectTypeDefinitionNode,
        declared: dict[str, tuple[ast.ObjectTypeDefinitionNode, _Directives]],
        table_names: set[str],
        *,
        in_table: bool,
    ) -> tuple[dict[str, Attribute], _Marks]:
        """The attributes of a type, with the directive checks that need the whole type."""
        owner = node.name.value
        attributes: dict[str, Attribute] = {}
        marks = _Marks()
        for field in node.fields or ():
            name = field.name.value
            if name in attributes:
                raise self.error(
                    field.name,
                    f"field `{name}` is declared twice in `{owner}` "
                    f"(first on line {attributes[name].line})",
                    "remove or rename one of them",
                )
            if name.startswith("__"):
                raise self.error(
                    field.name,
                    f"the field name `{name}` starts with `__`, which GraphQL reserves",
                    "rename the field without the leading underscores",
                )
            if field.arguments:
                raise self.error(
                    field.arguments[0],
                    f"field `{name}` of `{owner}` has arguments; field arguments are not supported",
                    f"remove the parentheses: `{name}: ...`",
                )
            type_ref, named = self.type_ref(field.type)
            self.check_type_name(type_ref, named, name, owner, declared, table_names)
            directives = self.directives(field.directives, on_type=False)
            marks.type_nodes[name] = field.type
            marks.field_directives[name] = directives.nodes
            if not in_table and directives.nodes:
                directive, misplaced = next(iter(directives.nodes.items()))
                raise self.error(misplaced, *self.nested_directive_error(directive, owner, name))
            is_object = not type_ref.is_scalar
            if "primaryKey" in directives:
                if marks.primary_key is not None:
                    raise self.error(
                        directives.nodes["primaryKey"],
                        f"`{owner}` has a second `@primaryKey` (on `{name}`; "
                        f"the first is on `{marks.primary_key}`)",
                        "a table has exactly one primary key; remove one of them",
                    )
                marks.primary_key = name
            if "indexed" in directives and is_object:
                raise self.error(
                    directives.nodes["indexed"],
                    f"`@indexed` on `{name}`, whose type {type_ref} is an object type",
                    "index a scalar attribute instead (or a list of scalars)",
                )
            if "createdTime" in directives and "updatedTime" in directives:
                raise self.error(
                    max(directives.nodes["createdTime"], directives.nodes["updatedTime"], key=_at),
                    f"`{name}` has both `@createdTime` and `@updatedTime`",
                    "use two attributes, e.g. `created: Long @createdTime` and "
                    "`updated: Long @updatedTime`",
                )
            for directive in ("createdTime", "updatedTime"):
                if directive not in directives:
                    continue
                previous = marks.times.get(directive)
                if previous is not None:
                    raise self.error(
                        directives.nodes[directive],
                        f"`{owner}` has a second `@{directive}` (on `{name}`; "
                        f"the first is on `{previous}`)",
                        f"a table has at most one `@{directive}` attribute; remove one of them",
                    )
                marks.times[directive] = name
                if type_ref.is_list or type_ref.name not in _TIME_SCALARS:
                    raise self.error(
                        field.type,
                        f"`@{directive}` on `{name}`, whose type is {type_ref}",
                        "declare it as `Long` (epoch milliseconds), `Float`, `Date` or `Any`; "
                        "`Int` is 32-bit and would overflow with epoch milliseconds",
                    )
            line, column = _at(field.name)
            attribute = Attribute(
                name=name,
                type=type_ref,
                indexed="indexed" in directives,
                primary_key="primaryKey" in directives,
                created_time="createdTime" in directives,
                updated_time="updatedTime" in directives,
                line=line,
                column=column,
            )
            if attribute.primary_key:
                self.check_key_type(attribute, field.type, implicit=False)
            attributes[name] = attribute
        return attributes, marks

    def nested_directive_error(self, directive: str, owner: str, field: str) -> tuple[str, str]:
        if directive == "indexed":
            return (
                f"`@indexed` on `{field}` of `{owner}`, which is not a @table; "
                "indexes are per table, on top-level attributes",
                "remove it, or index an attribute of the table itself",
            )
        return (
            f"`@{directive}` on `{field}` of `{owner}`, which is not a @table",
            f"`@{directive}` applies to top-level attributes of a @table type; move it there",
        )

    def type_ref(self, node: ast.TypeNode) -> tuple[TypeRef, ast.NamedTypeNode]:
        """The :class:`TypeRef` of a field type, and its named-type node."""
        required = isinstance(node, ast.NonNullTypeNode)
        inner = node.type if isinstance(node, ast.NonNullTypeNode) else node
        if isinstance(inner, ast.NamedTypeNode):
            return TypeRef(inner.name.value, False, required, False), inner
        item = inner.type
        item_required = isinstance(item, ast.NonNullTypeNode)
        named = item.type if isinstance(item, ast.NonNullTypeNode) else item
        if not isinstance(named, ast.NamedTypeNode):
            raise self.error(
                named,
                "nested lists (like `[[Int]]`) are not supported",
                "declare the attribute as `Any`, or as a list of a nested object type "
                "that has a list field",
            )
        return TypeRef(named.name.value, True, required, item_required), named

    def check_type_name(
        self,
        type_ref: TypeRef,
        named: ast.NamedTypeNode,
        field: str,
        owner: str,
        declared: dict[str, tuple[ast.ObjectTypeDefinitionNode, _Directives]],
        table_names: set[str],
    ) -> None:
        name = type_ref.name
        if name in SCALARS:
            return
        if name in table_names:
            key = _lower_first(name) + ("Ids: [ID]" if type_ref.is_list else "Id: ID")
            raise self.error(
                named,
                f"`{field}` of `{owner}` has the type `{name}`, which is a @table; "
                "relationships between tables are not supported yet",
                f"`@relationship` is not supported yet; store the key instead, e.g. `{key}`",
            )
        if name not in declared:
            choices = [*_SCALAR_ORDER, *declared]
            raise self.error(
                named,
                f"unknown type `{name}` for `{field}` of `{owner}`",
                _suggest(
                    name,
                    choices,
                    "use a scalar (" + ", ".join(_SCALAR_ORDER) + f") or declare `type {name}`",
                ),
            )

    def check_key_type(self, attribute: Attribute, node: ast.TypeNode, *, implicit: bool) -> None:
        type_ref = attribute.type
        if not type_ref.is_list and type_ref.name in _KEY_SCALARS:
            return
        allowed = ", ".join(_KEY_SCALARS[:-1]) + f" or {_KEY_SCALARS[-1]}"
        why = " (a field named `id` is the primary key when no field has @primaryKey)"
        raise self.error(
            node,
            f"the primary key `{attribute.name}` has the type {type_ref}"
            f"{why if implicit else ''}; a primary key must be a single {allowed}",
            f"declare it as e.g. `{attribute.name}: ID`"
            + (", or mark another field with @primaryKey" if implicit else ""),
        )


@dataclass(slots=True)
class _Marks:
    """What :meth:`_Builder.fields` learned about a type beyond its attributes."""

    primary_key: str | None = None
    times: dict[str, str] = dataclasses.field(default_factory=dict)
    type_nodes: dict[str, ast.TypeNode] = dataclasses.field(default_factory=dict)
    field_directives: dict[str, dict[str, ast.DirectiveNode]] = dataclasses.field(
        default_factory=dict
    )
