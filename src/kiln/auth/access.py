"""What a request's user may see and write of a table: queries, writes and the errors refusing them.

Tables call these from their methods (:class:`kiln.resource.Table`), behind the
``allow_*`` hooks: :func:`readable_query` checks and narrows a query to the
attributes the role may read, before it is bound (so an error never lists a
hidden attribute), and :func:`check_write` refuses a body naming an attribute the
role may not write, before anything is read or written. :func:`denied` is the
one refusal: 401 (with ``WWW-Authenticate``) for a request without credentials,
403 naming the missing permission for a user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kiln.auth.roles import NO_ACCESS, TableAccess, User
from kiln.errors import Forbidden, HTTPError, Unauthorized
from kiln.query.model import Condition, Field, Node, Query, Selection
from kiln.schema import TableDef

BASIC_CHALLENGE = 'Basic realm="kiln", charset="UTF-8"'
"""The ``WWW-Authenticate`` value of a 401 asking for credentials."""

_CREDENTIALS_HINT = (
    "send credentials: `Authorization: Basic base64(user:password)`, or `Bearer <token>` "
    "from POST /_auth/token"
)


def unauthorized(detail: str, hint: str | None = None) -> Unauthorized:
    """A 401 asking for credentials (``WWW-Authenticate: Basic``)."""
    return Unauthorized(detail, hint=hint, headers={"WWW-Authenticate": BASIC_CHALLENGE})


def access_of(user: User | None, table: str) -> TableAccess:
    """What ``user`` (None: a request without credentials) may do with ``table``."""
    return NO_ACCESS if user is None else user.role.access(table)


def denied(user: User | None, permission: str, what: str) -> HTTPError:
    """The refusal of ``permission`` (``read``, ``update``, ...) on ``what`` (`` `Dog` ``)."""
    if user is None or not user.authenticated:
        return unauthorized(f"`{permission}` on {what} needs credentials", _CREDENTIALS_HINT)
    return Forbidden(
        f"role `{user.role.name}` has no `{permission}` permission on {what}",
        hint="ask for a role that grants it (roles are declared in config.yaml)",
    )


def _hidden(user: User | None, permission: str, attribute: str, table: str) -> HTTPError:
    """The refusal of ``permission`` on one attribute of ``table``."""
    return denied(user, permission, f"`{attribute}` of `{table}`")


def check_write(
    user: User | None, table: TableDef, permission: str, data: Any, *, replaces: bool = False
) -> None:
    """Refuse a write of ``data`` when it names an attribute the role may not write.

    Args:
        user: who writes.
        table: the table written.
        permission: ``insert`` (POST) or ``update`` (PUT, PATCH).
        data: the request body (anything but a map is left to validation).
        replaces: the write replaces the whole record (PUT), which would also
            remove the attributes the role may not change.

    Raises:
        Forbidden: an attribute (named) may not be written, or a PUT may not replace
            a record the role may change only in part; 401 without credentials.
    """
    access = access_of(user, table.name)
    if not isinstance(data, Mapping):
        return
    refused = access.unwritable(data, permission)
    if refused:
        raise _hidden(user, permission, refused[0], table.name)
    if replaces and access.updatable is not None:
        if user is None or not user.authenticated:
            raise denied(user, "update", f"every attribute of `{table.name}`")
        raise Forbidden(
            f"role `{user.role.name}` may update only some attributes of `{table.name}`, and "
            "PUT replaces them all",
            hint="send PATCH with the attributes you may change",
        )


def readable_query(
    user: User | None, table: TableDef, relationships: Mapping[str, TableDef], query: Query
) -> Query:
    """``query`` (unbound) checked against what ``user`` may read, ``select()`` narrowed.

    Conditions and sort keys must name readable attributes (a condition on a hidden
    one would tell its value); through a relationship, the related table must be
    readable too. In an object ``select()`` hidden attributes are left out (like
    the attributes of a record); a bare-value or array selection of one, or a whole
    related record with hidden attributes, is refused.

    Raises:
        Forbidden: the query names an attribute or table the role may not read (401
            without credentials).
    """
    access = access_of(user, table.name)
    if access.read and access.readable is None and not relationships:
        return query
    check = _Checker(user, table, relationships, access)
    if query.where is not None:
        check.node(query.where)
    for key in query.sort:
        check.path(key.path)
    if query.select is None:
        return query
    return replace(query, select=check.selection(query.select, table, access))


class _Checker:
    """Checks the attribute paths of one query against a user's access."""

    def __init__(
        self,
        user: User | None,
        table: TableDef,
        relationships: Mapping[str, TableDef],
        access: TableAccess,
    ):
        self.user = user
        self.table = table
        self.relationships = relationships
        self.access = access

    def node(self, node: Node) -> None:
        if isinstance(node, Condition):
            self.path(node.path)
        else:
            for item in node.items:
                self.node(item)

    def path(self, path: tuple[str, ...]) -> None:
        first = path[0]
        if not self.access.read:
            raise denied(self.user, "read", f"`{self.table.name}`")
        self.readable(first, self.table, self.access)
        target = self.relationships.get(first)
        if target is not None and len(path) > 1:
            related = self.joined(first, target)
            self.readable(path[1], target, related)

    def readable(self, attribute: str, table: TableDef, access: TableAccess) -> None:
        if access.readable is not None and attribute not in access.readable:
            raise _hidden(self.user, "read", attribute, table.name)

    def related(self, target: TableDef) -> TableAccess:
        access = access_of(self.user, target.name)
        if not access.read:
            raise denied(self.user, "read", f"`{target.name}`")
        return access

    def joined(self, name: str, target: TableDef) -> TableAccess:
        """The access to ``target``, reached through the relationship ``name``: its table
        must be readable, and for a ``to:`` relationship so must the attribute of
        ``target`` linking the records (``Owner.dogs`` tells each dog's ``ownerId``). A
        ``from:`` relationship is an attribute of this table: readable, it may be followed,
        whether or not the attribute holding the link is."""
        related = self.related(target)
        link = self.table.relationships[name].to_attribute
        if link is not None:
            self.readable(link, target, related)
        return related

    def selection(self, selection: Selection, table: TableDef, access: TableAccess) -> Selection:
        kept: list[Field] = []
        for item in selection.fields:
            if access.readable is not None and item.name not in access.readable:
                if selection.shape != "object":
                    raise _hidden(self.user, "read", item.name, table.name)
                continue
            target = self.relationships.get(item.name) if table is self.table else None
            if target is None:
                kept.append(item)
                continue
            related = self.joined(item.name, target)
            if item.nested is None:
                if related.readable is not None:
                    error = denied(self.user, "read", f"every attribute of `{target.name}`")
                    error.hint = f"select the attributes you may read: {item.name}{{...}}"
                    raise error
                kept.append(item)
            else:
                kept.append(Field(item.name, self.selection(item.nested, target, related)))
        if not kept:
            raise denied(self.user, "read", f"the selected attributes of `{table.name}`")
        return Selection(tuple(kept), selection.shape)
