"""Parse a collection URL's query string into a :class:`Query`.

The grammar follows Harper's: ``&``-separated terms, where a term is either a
function call (``limit(10)``, ``limit(20,30)``) or a condition on an attribute.
This version understands ``limit``; conditions, ``select`` and ``sort`` come with
the query engine. Errors name the character position where reading failed, so
a client can see exactly what to change.

>>> parse_query("limit(5)").end
5
>>> parse_query("limit(10,20)").start
10
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from kiln.errors import BadRequest
from kiln.query.model import Query

_FUNCTION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(([^()]*)\)")
_CONDITION = re.compile(r"[^=!<>()]+(=|!=)")
_KNOWN_FUNCTIONS = ("limit",)


def _error(position: int, message: str) -> BadRequest:
    return BadRequest(f"query position {position}: {message}")


def _parse_limit(arguments: str, position: int) -> Query:
    parts = [part.strip() for part in arguments.split(",")]
    if len(parts) > 2 or not all(part.isdigit() for part in parts):
        raise _error(
            position,
            f"limit({arguments}) needs one or two whole numbers: limit(END) or limit(START,END)",
        )
    if len(parts) == 1:
        return Query(start=0, end=int(parts[0]))
    start, end = int(parts[0]), int(parts[1])
    if end < start:
        raise _error(position, f"limit({arguments}) ends before it starts; END must be >= START")
    return Query(start=start, end=end)


def parse_query(query_string: str) -> Query:
    """The :class:`Query` of a raw (still percent-encoded) query string.

    Raises:
        BadRequest: naming the position and what was expected.
    """
    query = Query()
    position = 0
    for raw_term in query_string.split("&"):
        term = unquote(raw_term)
        if term:
            function = _FUNCTION.fullmatch(term)
            if function is None:
                if _CONDITION.match(term):
                    raise _error(
                        position + 1,
                        f"conditions on attributes ({term!r}) are not supported yet; "
                        "this version answers limit() only",
                    )
                raise _error(
                    position + 1, f"cannot read {term!r}; expected a function like limit(10)"
                )
            name = function.group(1)
            if name != "limit":
                raise _error(
                    position + 1,
                    f"unknown function {name}(); known functions: "
                    + ", ".join(f"{known}()" for known in _KNOWN_FUNCTIONS),
                )
            query = _parse_limit(function.group(2), position + 1)
        position += len(raw_term) + 1
    return query
