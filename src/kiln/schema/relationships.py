"""``@relationship`` fields: the checks on one field, then the join checked against its target.

A relationship is read in two steps. While the builder walks a type's fields,
:func:`declared_relationship` checks what the field alone shows (its other
directives, its type's ``!``, one of ``from:``/``to:``) and keeps it as a
:class:`PendingRelationship`. Once every table is built,
:func:`resolve_relationships` checks the join against both tables (same
database, the named attributes exist, list-ness, an index for ``to:``) and
yields the :class:`~kiln.schema.Relationship` values of the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphql import language as ast

from kiln.schema.directives import _at, _DirectiveChecker, _Directives
from kiln.schema.model import Relationship, TableDef, TypeRef, _suggest


@dataclass(frozen=True, slots=True)
class PendingRelationship:
    """A ``@relationship`` field checked on its own, waiting for every table to be built."""

    name: str
    type: TypeRef
    field: ast.FieldDefinitionNode
    named: ast.NamedTypeNode
    directive: ast.DirectiveNode
    args: dict[str, str]

    @property
    def type_node(self) -> ast.TypeNode:
        """The field's type as written (for error positions)."""
        return self.field.type

    def argument(self, arg: str) -> ast.Node:
        """The value node of the argument ``arg`` (for error positions)."""
        return next(a.value for a in self.directive.arguments if a.name.value == arg)


def declared_relationship(
    checker: _DirectiveChecker,
    owner: str,
    field: ast.FieldDefinitionNode,
    type_ref: TypeRef,
    named: ast.NamedTypeNode,
    directives: _Directives,
) -> PendingRelationship:
    """Check a ``@relationship`` field of the table ``owner`` on its own.

    Raises:
        SchemaError: another directive on the field, a required (``!``) type, or not
            exactly one of ``from:`` and ``to:``.
    """
    name = field.name.value
    for other, node in directives.nodes.items():
        if other != "relationship":
            what = "indexed" if other in ("indexed", "unique") else "stored"
            raise checker.error(
                node,
                f"`@{other}` on the relationship `{name}` of `{owner}`; a relationship is "
                f"computed when read, never {what}",
                "remove it; put it on the attribute holding the key instead",
            )
    if type_ref.required:
        raise checker.error(
            field.type,
            f"the relationship `{name}` of `{owner}` is declared required ({type_ref}); "
            "a relationship is computed when read, so it cannot be required",
            "remove the `!`; to require the link, make the key attribute required (`ownerId: ID!`)",
        )
    directive = directives.nodes["relationship"]
    args = directives.args["relationship"]
    if not args:
        raise checker.error(
            directive,
            f"`@relationship` on `{name}` of `{owner}` needs `from:` or `to:`",
            f"write `@relationship(from: {type_ref.name[:1].lower()}{type_ref.name[1:]}Id)` "
            "when "
            f"this record holds the {type_ref.name}'s key, or `@relationship(to: ...)` naming "
            f"the {type_ref.name} attribute that holds this record's key",
        )
    if len(args) > 1:
        second = directive.arguments[1]
        raise checker.error(
            second,
            f"`@relationship` on `{name}` of `{owner}` has both `from:` and `to:`; "
            "it takes exactly one of them",
            "keep `from:` (this record holds the related key) or `to:` "
            "(the related records hold this record's key)",
        )
    return PendingRelationship(name, type_ref, field, named, directive, args)


def resolve_relationships(
    checker: _DirectiveChecker,
    table: TableDef,
    pending: list[PendingRelationship],
    tables: dict[str, TableDef],
) -> dict[str, Relationship]:
    """The :class:`Relationship` values of ``table``, each checked against its target.

    Raises:
        SchemaError: a target in another database, an unknown attribute, a list
            mismatch between the field and its key attribute, or a ``to:`` attribute
            without an index.
    """
    found = {}
    for item in pending:
        target = tables[item.type.name]
        if target.database != table.database:
            raise checker.error(
                item.named,
                f"`{item.name}` of `{table.name}` (database `{table.database}`) relates to "
                f"`{target.name}`, which is stored in database `{target.database}`; "
                "relationships must stay within one database",
                f'store both tables in one database, e.g. `@table(database: "{table.database}")` '
                f"on `{target.name}`",
            )
        if "from" in item.args:
            relationship = _from(checker, table, target, item)
        else:
            relationship = _to(checker, table, target, item)
        found[item.name] = relationship
    return found


def _from(
    checker: _DirectiveChecker, table: TableDef, target: TableDef, item: PendingRelationship
) -> Relationship:
    attribute_name = item.args["from"]
    attribute = table.attributes.get(attribute_name)
    if attribute is None:
        raise checker.error(
            item.argument("from"),
            f"`@relationship(from: {attribute_name})` on `{item.name}`: `{table.name}` has no "
            f"attribute `{attribute_name}`",
            _suggest(
                attribute_name,
                table.attributes,
                f"declare the attribute holding the {target.name}'s key, "
                f"e.g. `{attribute_name}: {target.primary_key_type}`",
            ),
        )
    if not attribute.type.is_scalar:
        raise checker.error(
            item.argument("from"),
            f"`@relationship(from: {attribute_name})` on `{item.name}`: `{attribute_name}` has "
            f"the object type {attribute.type}; it must hold {target.name} keys",
            f"declare it as `{attribute_name}: {target.primary_key_type}` "
            f"(or `[{target.primary_key_type}]` for many)",
        )
    if attribute.type.is_list and not item.type.is_list:
        raise checker.error(
            item.type_node,
            f"`{attribute_name}` of `{table.name}` is a list ({attribute.type}), so the "
            f"relationship `{item.name}` finds several {target.name} records",
            f"declare it as a list: `{item.name}: [{target.name}]`",
        )
    if item.type.is_list and not attribute.type.is_list:
        raise checker.error(
            item.type_node,
            f"the relationship `{item.name}` is a list ({item.type}), but `{attribute_name}` "
            f"of `{table.name}` holds one key ({attribute.type})",
            f"declare `{item.name}: {target.name}`, or make `{attribute_name}` a list "
            f"(`{attribute_name}: [{target.primary_key_type}]`)",
        )
    _check_key_family(checker, item, "from", table, attribute_name, attribute.type, target)
    line, column = _at(item.field.name)
    return Relationship(
        item.name, target.name, attribute_name, None, item.type.is_list, line, column
    )


def _to(
    checker: _DirectiveChecker, table: TableDef, target: TableDef, item: PendingRelationship
) -> Relationship:
    attribute_name = item.args["to"]
    if not item.type.is_list:
        raise checker.error(
            item.type_node,
            f"`@relationship(to: {attribute_name})` finds every {target.name} whose "
            f"`{attribute_name}` holds this record's key, so `{item.name}` must be a list",
            f"declare it as `{item.name}: [{target.name}]`",
        )
    attribute = target.attributes.get(attribute_name)
    if attribute is None:
        raise checker.error(
            item.argument("to"),
            f"`@relationship(to: {attribute_name})` on `{item.name}`: `{target.name}` has no "
            f"attribute `{attribute_name}`",
            _suggest(
                attribute_name,
                target.attributes,
                f"name the {target.name} attribute that holds the {table.name}'s key",
            ),
        )
    if not attribute.indexed:
        raise checker.error(
            item.argument("to"),
            f"`@relationship(to: {attribute_name})` on `{item.name}`: `{attribute_name}` of "
            f"`{target.name}` is not @indexed, and the relationship is read through its index",
            f"add `@indexed` to it in `type {target.name}`: "
            f"`{attribute_name}: {attribute.type} @indexed`",
        )
    _check_key_family(checker, item, "to", target, attribute_name, attribute.type, table)
    line, column = _at(item.field.name)
    return Relationship(item.name, target.name, None, attribute_name, True, line, column)


_KEY_FAMILIES = {
    "ID": "text",
    "String": "text",
    "Int": "number",
    "Long": "number",
    "BigInt": "number",
    "Float": "number",
    "Any": "any",
}
"""Which key types an attribute of each type can hold: text keys, number keys, or either."""


def _check_key_family(
    checker: _DirectiveChecker,
    item: PendingRelationship,
    argument: str,
    holder: TableDef,
    attribute_name: str,
    attribute_type: TypeRef,
    keyed: TableDef,
) -> None:
    """Refuse a relationship whose key attribute can never hold a key of ``keyed``."""
    family = _KEY_FAMILIES.get(attribute_type.name)
    if family == "any" or family == _KEY_FAMILIES.get(keyed.primary_key_type):
        return
    key_type = keyed.primary_key_type
    wanted = f"[{key_type}]" if attribute_type.is_list else key_type
    raise checker.error(
        item.argument(argument),
        f"`@relationship({argument}: {attribute_name})` on `{item.name}`: `{attribute_name}` "
        f"of `{holder.name}` is {attribute_type}, but it must hold {keyed.name} keys, which "
        f"are {key_type}",
        f"declare it as `{attribute_name}: {wanted}`",
    )
