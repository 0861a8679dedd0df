"""kiln's directives: where each may go, its arguments, and the names they give.

``@table``, ``@export`` and ``@sealed`` go on a type, ``@primaryKey``,
``@indexed``, ``@unique``, ``@createdTime``, ``@updatedTime``,
``@relationship`` and ``@computed`` on a field. The
:class:`_DirectiveChecker` here checks a node's directives (known, in the right
place, once each), their arguments (known, once each, strings) and the storage
and export names they give; :class:`~kiln.schema.builder._Builder` builds on it
to read the whole document.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from graphql import language as ast

from kiln.errors import SchemaError
from kiln.schema.model import _suggest

# Directive name → its argument names, per location.
_TYPE_DIRECTIVES: dict[str, tuple[str, ...]] = {
    "table": ("table", "database"),
    "export": ("name",),
    "sealed": (),
}
_FIELD_DIRECTIVES: dict[str, tuple[str, ...]] = {
    "primaryKey": (),
    "indexed": (),
    "unique": (),
    "createdTime": (),
    "updatedTime": (),
    "relationship": ("from", "to"),
    "computed": ("version",),
}
# Directives whose arguments name an attribute, so they may be written unquoted
# (`@relationship(from: ownerId)`, as in Harper) as well as quoted.
_NAME_ARGUMENTS = frozenset({"relationship"})
# Arguments that take a positive Int rather than a string: (directive, argument).
_INT_ARGUMENTS = frozenset({("computed", "version")})

_STORAGE_NAME = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_EXPORT_NAME = re.compile(r"[A-Za-z0-9.-][A-Za-z0-9_.-]*", re.ASCII)


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


@dataclass(frozen=True, slots=True)
class _Directives:
    """The checked directives on one node: name → node, and name → string arguments."""

    nodes: dict[str, ast.DirectiveNode]
    args: dict[str, dict[str, str]]

    def __contains__(self, name: str) -> bool:
        return name in self.nodes


class _DirectiveChecker:
    """Checks kiln's directives and their arguments, raising at the first mistake.

    The base of :class:`~kiln.schema.builder._Builder`: it knows the file, and
    :meth:`error` makes a :class:`SchemaError` pointing at a node of it.
    """

    def __init__(self, file: str):
        self.file = file

    def error(self, node: ast.Node, message: str, hint: str) -> SchemaError:
        line, column = _at(node)
        return SchemaError(message, file=self.file, line=line, column=column, hint=hint)

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
                known = ", ".join(f"@{d}" for d in here)
                hint = _suggest(name, here, f"the directives on {place} are: {known}", prefix="@")
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
            if (name, arg) in _INT_ARGUMENTS:
                values[arg] = self.positive_int(name, arg, value)
                continue
            if name in _NAME_ARGUMENTS and isinstance(value, ast.EnumValueNode):
                values[arg] = value.value
                continue
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

    def positive_int(self, directive: str, arg: str, value: ast.ValueNode) -> str:
        """The text of a positive Int argument value; a :class:`SchemaError` for anything else."""
        if isinstance(value, ast.IntValueNode) and int(value.value) >= 1:
            return value.value
        got = (
            f"`{value.value}`"
            if isinstance(value, ast.IntValueNode | ast.StringValueNode)
            else _value_kind(value)
        )
        raise self.error(
            value,
            f"`@{directive}({arg}:)` expects a positive Int, got {got}",
            f"write a whole number of 1 or more without quotes, e.g. `@{directive}({arg}: 2)`",
        )

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

    # ------------------------------------------------------------------ names

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
