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

The package splits that work along its seams: :mod:`kiln.schema.model` holds
the frozen definitions, :mod:`kiln.schema.parser` the entry points
(:func:`parse_schema`, :func:`load_schema`), :mod:`kiln.schema.builder` the
walk from syntax tree to :class:`Schema`, :mod:`kiln.schema.directives`
the checks on kiln's directives and their arguments, and
:mod:`kiln.schema.relationships` the checks on ``@relationship`` fields.
"""

from kiln.schema.model import (
    SCALARS,
    Attribute,
    ObjectType,
    Relationship,
    Schema,
    TableDef,
    TypeRef,
)
from kiln.schema.parser import load_schema, parse_schema

__all__ = [
    "SCALARS",
    "Attribute",
    "ObjectType",
    "Relationship",
    "Schema",
    "TableDef",
    "TypeRef",
    "load_schema",
    "parse_schema",
]
