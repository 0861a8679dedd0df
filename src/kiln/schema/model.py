"""The frozen definitions a parsed ``schema.graphql`` yields, which every other layer reads.

:class:`Schema` holds the :class:`TableDef` (``@table`` types) and
:class:`ObjectType` (nested types) values, whose fields are :class:`Attribute`
values typed by a :class:`TypeRef` over :data:`SCALARS` or a declared type.
Nothing here parses; :mod:`kiln.schema.parser` builds these values.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

from kiln.errors import KilnError

SCALARS: frozenset[str] = frozenset(
    {"ID", "String", "Int", "Long", "Float", "BigInt", "Boolean", "Date", "Bytes", "Any"}
)
"""The scalar type names an attribute may have."""


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
    """One field of a table or nested type, with its directives and its position in the file.

    ``unique`` (``@unique``) implies ``indexed``: the builder sets both, so every
    reader of ``indexed`` sees the index a unique attribute needs.
    """

    name: str
    type: TypeRef
    indexed: bool = False
    primary_key: bool = False
    created_time: bool = False
    updated_time: bool = False
    line: int = 0
    column: int = 0
    unique: bool = False
    computed: bool = False
    """``@computed``: never stored; ``resources.py`` registers the function that derives it."""
    computed_version: int = 0
    """``@computed(version:)``; changing it rebuilds the attribute's index at start-up."""


@dataclass(frozen=True, slots=True)
class Relationship:
    """A virtual field joining a record to records of another table (``@relationship``).

    Exactly one of ``from_attribute`` and ``to_attribute`` is set:

    * ``from_attribute``: this record's attribute holding the ``target``'s primary
      key (many-to-one), or a list of them (many-to-many, ``many``; results in the
      list's order);
    * ``to_attribute``: the ``target``'s ``@indexed`` attribute holding this record's
      primary key (one-to-many; always ``many``).

    ``many`` says whether the field's value is a list of records or one record
    (or None). Relationships are never stored and never indexed.
    """

    name: str
    target: str
    """The type name of the related @table (a key of :attr:`Schema.tables`)."""
    from_attribute: str | None
    to_attribute: str | None
    many: bool
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

    ``attributes`` holds the attributes in declaration order and includes the
    primary key (an implicit ``id: ID`` comes first); the ``@computed`` ones among
    them are never stored (see :attr:`computed`). ``relationships`` holds
    the virtual ``@relationship`` fields, which are not in ``attributes``: no
    record stores them and no index covers them.
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
    relationships: dict[str, Relationship] = field(default_factory=dict)

    indexed: tuple[str, ...] = field(init=False)
    """The names of the ``@indexed`` attributes (``@unique`` ones included; the primary
    key excluded), in order."""
    unique: tuple[str, ...] = field(init=False)
    """The names of the ``@unique`` attributes, in order."""
    created_time: str | None = field(init=False)
    """The name of the ``@createdTime`` attribute, if any."""
    updated_time: str | None = field(init=False)
    """The name of the ``@updatedTime`` attribute, if any."""
    computed: tuple[str, ...] = field(init=False)
    """The names of the ``@computed`` attributes (never stored), in order."""
    primary_key_type: str = field(init=False)
    """The scalar type name of the primary key (``ID``, ``Int``, ...)."""

    def __post_init__(self) -> None:
        # Derived once here: the writer reads them on every write.
        attributes = self.attributes.values()
        derived = {
            "indexed": tuple(
                a.name for a in attributes if a.indexed and a.name != self.primary_key
            ),
            "unique": tuple(a.name for a in attributes if a.unique),
            "created_time": next((a.name for a in attributes if a.created_time), None),
            "updated_time": next((a.name for a in attributes if a.updated_time), None),
            "computed": tuple(a.name for a in attributes if a.computed),
            "primary_key_type": self.attributes[self.primary_key].type.name,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


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
