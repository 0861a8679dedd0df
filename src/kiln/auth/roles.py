"""Roles: what ``roles:`` in ``config.yaml`` grants, per table and attribute, and who holds one.

A :class:`Role` maps table names to a :class:`TableAccess` (``read``, ``insert``,
``update``, ``delete``, and per attribute ``read``, ``insert``, ``update``).
:func:`build_roles` reads the ``roles`` setting against the schema and raises a
:class:`~kiln.errors.ConfigError` at the line of a mistake. A request's
:class:`User` is a name (None for an anonymous request) and a role.

An ``attributes`` map is an allow-list: the attributes it does not name are hidden
and not writable (the primary key excepted). An attribute's permission that is
not written takes the table's.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kiln.config import Config, Source
from kiln.config.loader import locate
from kiln.errors import ConfigError
from kiln.schema import Schema, TableDef
from kiln.types import Record

SUPER_USER = "super_user"
"""The built-in role that may do everything."""

ANONYMOUS = "anonymous"
"""The role, when ``config.yaml`` declares one, of requests without credentials."""

TABLE_PERMISSIONS = ("read", "insert", "update", "delete")
ATTRIBUTE_PERMISSIONS = ("read", "insert", "update")


@dataclass(frozen=True, slots=True)
class TableAccess:
    """What a role may do with one table.

    ``readable``, ``insertable`` and ``updatable`` are the attributes it may read,
    give on insert and change on update; None means every attribute (no
    ``attributes`` allow-list).
    """

    read: bool = False
    insert: bool = False
    update: bool = False
    delete: bool = False
    readable: frozenset[str] | None = None
    insertable: frozenset[str] | None = None
    updatable: frozenset[str] | None = None

    def view(self, record: Record) -> Record:
        """``record`` without the attributes this role may not read."""
        readable = self.readable
        if readable is None:
            return record
        return {name: value for name, value in record.items() if name in readable}

    def unwritable(self, names: Iterable[str], permission: str) -> list[str]:
        """The ``names`` this role may not write on ``insert`` or ``update``, in order."""
        allowed = self.insertable if permission == "insert" else self.updatable
        if allowed is None:
            return []
        return [name for name in names if name not in allowed]


FULL_ACCESS = TableAccess(True, True, True, True)
"""A super user's access to any table."""

NO_ACCESS = TableAccess(readable=frozenset(), insertable=frozenset(), updatable=frozenset())
"""Access to a table a role does not name."""


@dataclass(frozen=True, slots=True)
class Role:
    """A named set of permissions; ``super_user`` may do everything."""

    name: str
    super_user: bool = False
    tables: Mapping[str, TableAccess] = field(default_factory=dict)
    """Access by table (type) name; a table not named here gets :data:`NO_ACCESS`."""

    def access(self, table: str) -> TableAccess:
        """What this role may do with ``table`` (a type name of the schema)."""
        if self.super_user:
            return FULL_ACCESS
        return self.tables.get(table, NO_ACCESS)


@dataclass(frozen=True, slots=True)
class User:
    """Who a request comes from: a user's ``name`` (None when anonymous) and role."""

    name: str | None
    role: Role

    @property
    def authenticated(self) -> bool:
        """Whether the request proved who it is (credentials, a token or a trusted loopback)."""
        return self.name is not None


SUPER_USER_ROLE = Role(SUPER_USER, super_user=True)
"""The built-in ``super_user`` role."""


def build_roles(config: Config, schema: Schema) -> dict[str, Role]:
    """The roles ``config.yaml`` declares, with the built-in ``super_user``, by name.

    Raises:
        ConfigError: a role names a database, table, attribute or permission the schema
            or kiln does not know, or a value is not what it should be; the error points
            at its line in ``config.yaml``.
    """
    reader = _Reader(config, schema)
    roles = {SUPER_USER: SUPER_USER_ROLE}
    for name, value in config.roles.items():
        roles[name] = reader.role(str(name), value)
    return roles


class _Reader:
    """Reads the ``roles`` setting; each mistake names its key path and line."""

    def __init__(self, config: Config, schema: Schema):
        self.config = config
        self.schema = schema
        self.databases: dict[str, dict[str, TableDef]] = {}
        for table in schema.tables.values():
            self.databases.setdefault(table.database, {})[table.name] = table

    def error(
        self, path: tuple[str, ...], message: str, hint: str, *, value: bool = False
    ) -> ConfigError:
        key = ".".join(path)
        position = None
        if self.config.source("roles") is Source.FILE:
            position = locate(self.config.app_dir, path, value=value)
        line, column = position if position is not None else (None, None)
        return ConfigError(
            f"`{key}`: {message}",
            file=self.config.source("roles").value,
            line=line,
            column=column,
            hint=hint,
        )

    def mapping(
        self, path: tuple[str, ...], value: object, what: str, example: str = ""
    ) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            hint = f"write its {what} indented below it{example}"
            raise self.error(path, f"expects a map of {what}", hint, value=True)
        return value

    def flag(self, path: tuple[str, ...], value: object) -> bool:
        if not isinstance(value, bool):
            raise self.error(
                path, f"expects true or false, got {value!r}", "write true or false", value=True
            )
        return value

    def role(self, name: str, value: object) -> Role:
        path = ("roles", name)
        if name == SUPER_USER:
            raise self.error(
                path,
                "super_user is a built-in role and cannot be declared",
                "give your role another name; `super_user: true` inside it makes it a super user",
            )
        body = self.mapping(path, value, "databases")
        if "super_user" in body:
            super_user = self.flag((*path, "super_user"), body["super_user"])
            if super_user and name == ANONYMOUS:
                raise self.error(
                    (*path, "super_user"),
                    "the anonymous role cannot be a super user: every request without "
                    "credentials would be one",
                    "grant it only what the public may do, such as `data: {Dog: {read: true}}`",
                )
            if super_user:
                return Role(name, super_user=True)
        tables: dict[str, TableAccess] = {}
        for database, declared in body.items():
            if database == "super_user":
                continue
            tables.update(self.database(path, str(database), declared))
        return Role(name, tables=tables)

    def database(self, path: tuple[str, ...], name: str, value: object) -> dict[str, TableAccess]:
        path = (*path, name)
        tables = self.databases.get(name)
        if tables is None:
            raise self.error(
                path,
                f"{self.schema.file} has no database `{name}`",
                _suggest(name, self.databases, "databases")
                + "; a role lists databases, each with its tables (`data: {Dog: {read: true}}`)",
            )
        found = {}
        for table, permissions in self.mapping(path, value, "tables").items():
            definition = tables.get(str(table))
            if definition is None:
                raise self.error(
                    (*path, str(table)),
                    f"database `{name}` has no table `{table}`",
                    _suggest(str(table), tables, "tables"),
                )
            found[definition.name] = self.table((*path, definition.name), definition, permissions)
        return found

    def table(self, path: tuple[str, ...], definition: TableDef, value: object) -> TableAccess:
        body = self.mapping(path, value, "permissions")
        granted = dict.fromkeys(TABLE_PERMISSIONS, False)
        for key, flag in body.items():
            if key == "attributes":
                continue
            if key not in granted:
                raise self.error(
                    (*path, str(key)),
                    f"`{key}` is not a table permission",
                    _suggest(str(key), [*TABLE_PERMISSIONS, "attributes"], "keys"),
                )
            granted[key] = self.flag((*path, key), flag)
        if "attributes" not in body:
            return TableAccess(**granted)
        named: dict[str, dict[str, bool]] = {}
        attributes_path = (*path, "attributes")
        known = [*definition.attributes, *definition.relationships]
        attributes = self.mapping(
            attributes_path,
            body["attributes"],
            "attributes",
            ", each with its permissions, like `name: {read: true}`",
        )
        for attribute, permissions in attributes.items():
            attribute_path = (*attributes_path, str(attribute))
            if attribute not in known:
                raise self.error(
                    attribute_path,
                    f"`{definition.name}` has no attribute `{attribute}`",
                    _suggest(str(attribute), known, "attributes"),
                )
            named[attribute] = self.attribute(attribute_path, permissions, granted)
        key = {definition.primary_key}
        return TableAccess(
            **granted,
            readable=frozenset(name for name, flags in named.items() if flags["read"]) | key,
            insertable=frozenset(name for name, flags in named.items() if flags["insert"]) | key,
            updatable=frozenset(name for name, flags in named.items() if flags["update"]) | key,
        )

    def attribute(
        self, path: tuple[str, ...], value: object, table: dict[str, bool]
    ) -> dict[str, bool]:
        flags = {name: table[name] for name in ATTRIBUTE_PERMISSIONS}
        for key, flag in self.mapping(path, value, "permissions").items():
            if key not in flags:
                raise self.error(
                    (*path, str(key)),
                    f"`{key}` is not an attribute permission",
                    _suggest(str(key), ATTRIBUTE_PERMISSIONS, "attribute permissions"),
                )
            flags[key] = self.flag((*path, key), flag)
            if flags[key] and not table[key]:
                raise self.error(
                    (*path, key),
                    f"grants `{key}` on an attribute of a table the role may not `{key}`",
                    f"grant `{key}: true` on the table too, or remove this line: an attribute "
                    "permission only narrows the table's",
                )
        return flags


def _suggest(name: str, valid: Iterable[str], what: str) -> str:
    """``did you mean `X`?`` for the closest valid name, else the list of them."""
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    if close:
        return f"did you mean `{close[0]}`?"
    return f"the {what} are: " + (", ".join(f"`{item}`" for item in valid) or "none")
