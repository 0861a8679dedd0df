"""Read ``schema.graphql`` text (or the file) into a :class:`~kiln.schema.Schema`.

:func:`load_schema` reads the file and :func:`parse_schema` parses its text
with graphql-core's parser, turning a syntax error into a
:class:`~kiln.errors.SchemaError` at the offending token; the syntax tree is
then handed to the builder in :mod:`kiln.schema.builder`.
"""

from __future__ import annotations

import re
from pathlib import Path

from graphql import GraphQLError
from graphql.language import Lexer, Source, TokenKind
from graphql.language import parse as graphql_parse

from kiln.errors import SchemaError
from kiln.schema.builder import _Builder
from kiln.schema.model import Schema

_LINE_BREAK = re.compile(r"\r\n|[\n\r]")


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
