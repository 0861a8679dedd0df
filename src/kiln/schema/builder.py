"""Walk a parsed ``schema.graphql`` syntax tree into a :class:`~kiln.schema.Schema`.

:class:`_Builder` reads the document one definition at a time: it rejects what
kiln does not support, then reads each object type into a
:class:`~kiln.schema.TableDef` or :class:`~kiln.schema.ObjectType`, its fields
into :class:`~kiln.schema.Attribute` values, and checks what needs the whole
type or document (one primary key, unique storage and export names, known
types). ``@relationship`` fields are set aside while a table is read and checked
against their targets once every table is built (:mod:`kiln.schema.relationships`).
Every mistake raises :class:`~kiln.errors.SchemaError` at its token.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from graphql import language as ast

from kiln.schema.directives import _at, _DirectiveChecker, _Directives
from kiln.schema.model import (
    SCALARS,
    Attribute,
    ObjectType,
    Schema,
    TableDef,
    TypeRef,
    _suggest,
)
from kiln.schema.relationships import (
    PendingRelationship,
    declared_relationship,
    resolve_relationships,
)

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
        "@unique, @createdTime, @updatedTime, @relationship, @computed) are built in",
    ),
    (
        ast.ExecutableDefinitionNode,
        "queries, mutations and fragments do not belong in schema.graphql",
        "schema.graphql declares types only; send operations to the running server",
    ),
)


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


class _Builder(_DirectiveChecker):
    """Walks a parsed document into a :class:`Schema`, raising at the first mistake."""

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
        pending: dict[str, list[PendingRelationship]] = {}
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
            table, pending[name] = self.table(node, directives, declared, table_names)
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
        for name, relationships in pending.items():  # every target is built by now
            if relationships:
                resolved = resolve_relationships(self, tables[name], relationships, tables)
                tables[name] = dataclasses.replace(tables[name], relationships=resolved)
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

    # ------------------------------------------------------------------ types

    def table(
        self,
        node: ast.ObjectTypeDefinitionNode,
        directives: _Directives,
        declared: dict[str, tuple[ast.ObjectTypeDefinitionNode, _Directives]],
        table_names: set[str],
    ) -> tuple[TableDef, list[PendingRelationship]]:
        """The table's definition, and its relationships to check once every table is built."""
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
        if pk.computed:
            raise self.error(
                marks.field_directives[pk_name]["computed"],
                f"`@computed` on the primary key `{pk_name}` of `{name}`",
                "a primary key is stored; key the table by a stored attribute (mark it "
                "@primaryKey) and keep the computed one beside it",
            )
        for directive in ("createdTime", "updatedTime"):
            if directive in marks.field_directives.get(pk_name, ()):
                raise self.error(
                    marks.field_directives[pk_name][directive],
                    f"`@{directive}` on the primary key `{pk_name}` of `{name}`",
                    "put it on its own attribute, e.g. "
                    f"`{directive.removesuffix('Time')}: Long @{directive}`",
                )
        if "unique" in marks.field_directives.get(pk_name, ()):
            raise self.error(
                marks.field_directives[pk_name]["unique"],
                f"`@unique` on the primary key `{pk_name}` of `{name}`, which is unique already",
                "remove `@unique`",
            )
        attributes[pk_name] = dataclasses.replace(
            pk, primary_key=True, type=dataclasses.replace(pk.type, required=False)
        )
        definition = TableDef(
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
        return definition, list(marks.relationships.values())

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
        lines: dict[str, int] = {}
        for field in node.fields or ():
            name = field.name.value
            if name in lines:
                raise self.error(
                    field.name,
                    f"field `{name}` is declared twice in `{owner}` (first on line {lines[name]})",
                    "remove or rename one of them",
                )
            lines[name] = _at(field.name)[0]
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
            directives = self.directives(field.directives, on_type=False)
            related = in_table and "relationship" in directives
            self.check_type_name(type_ref, named, name, owner, declared, table_names, related)
            marks.type_nodes[name] = field.type
            marks.field_directives[name] = directives.nodes
            if not in_table and directives.nodes:
                directive, misplaced = next(iter(directives.nodes.items()))
                raise self.error(misplaced, *self.nested_directive_error(directive, owner, name))
            if in_table and "computed" in directives:
                self.check_computed(directives, name, owner)
            if related:
                marks.relationships[name] = declared_relationship(
                    self, owner, field, type_ref, named, directives
                )
                continue
            is_object = not type_ref.is_scalar
            if "unique" in directives and (
                is_object or type_ref.is_list or type_ref.name == "Bytes"
            ):
                raise self.error(
                    directives.nodes["unique"],
                    f"`@unique` on `{name}`, whose type is {type_ref}; only a single scalar "
                    "value (not a list, an object or Bytes) can be unique",
                    "remove it"
                    + (", or use `@indexed` to index each item" if type_ref.is_list else ""),
                )
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
                indexed="indexed" in directives or "unique" in directives,
                primary_key="primaryKey" in directives,
                created_time="createdTime" in directives,
                updated_time="updatedTime" in directives,
                line=line,
                column=column,
                unique="unique" in directives,
                computed="computed" in directives,
                computed_version=(
                    int(directives.args["computed"].get("version", "1"))
                    if "computed" in directives
                    else 0
                ),
            )
            if attribute.primary_key:
                self.check_key_type(attribute, field.type, implicit=False)
            attributes[name] = attribute
        return attributes, marks

    def check_computed(self, directives: _Directives, name: str, owner: str) -> None:
        """Refuse the directives a ``@computed`` (never stored) attribute cannot have."""
        node = directives.nodes["computed"]
        if "relationship" in directives:
            raise self.error(
                node,
                f"`{name}` of `{owner}` has both `@computed` and `@relationship`",
                "a relationship is resolved when read already; remove `@computed`",
            )
        if "primaryKey" in directives:
            raise self.error(
                node,
                f"`@computed` on the primary key `{name}` of `{owner}`",
                "a primary key is stored; key the table by a stored attribute and keep "
                "the computed one beside it",
            )
        if "unique" in directives:
            raise self.error(
                node,
                f"`{name}` of `{owner}` has both `@computed` and `@unique`; kiln cannot "
                "refuse a write for a value it derives",
                "use `@indexed` to query it, or make a stored attribute `@unique`",
            )
        for directive in ("createdTime", "updatedTime"):
            if directive in directives:
                raise self.error(
                    node,
                    f"`{name}` of `{owner}` has both `@computed` and `@{directive}`",
                    "the server sets a time attribute itself; remove one of the two",
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
        related: bool,
    ) -> None:
        """Check that a field's type exists, and is a @table exactly when ``related``."""
        name = type_ref.name
        if related and (name in SCALARS or name in declared) and name not in table_names:
            raise self.error(
                named,
                f"`@relationship` on `{field}` of `{owner}`, whose type `{name}` is not "
                "a @table type",
                "give it the related table's type, "
                "e.g. `owner: Owner @relationship(from: ownerId)`",
            )
        if name in SCALARS or (related and name in table_names):
            return
        if name in table_names:
            key = _lower_first(name) + ("Ids: [ID]" if type_ref.is_list else "Id: ID")
            if owner not in table_names:
                raise self.error(
                    named,
                    f"`{field}` of `{owner}` has the type `{name}`, which is a @table; "
                    "only a @table type can relate to another table",
                    f"store the key instead, e.g. `{key}`",
                )
            join = (
                f"`{field}: [{name}] @relationship(to: {_lower_first(owner)}Id)` to find the "
                f"{name} records whose `{_lower_first(owner)}Id` holds this key"
                if type_ref.is_list
                else f"`{field}: {name} @relationship(from: {_lower_first(name)}Id)` with "
                f"`{_lower_first(name)}Id: ID` holding the {name}'s key"
            )
            raise self.error(
                named,
                f"`{field}` of `{owner}` has the type `{name}`, which is a @table, "
                "without `@relationship`",
                f"declare the join, e.g. {join}; or store the key instead (`{key}`)",
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
    relationships: dict[str, PendingRelationship] = dataclasses.field(default_factory=dict)
