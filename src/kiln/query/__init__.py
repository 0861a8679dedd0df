"""The query language: URL query strings → :class:`Query`, then planned and run over a table."""

from kiln.query.model import And, Condition, Field, Node, Or, Query, Selection, SortKey
from kiln.query.parser import parse_query

__all__ = [
    "And",
    "Condition",
    "Field",
    "Node",
    "Or",
    "Query",
    "Selection",
    "SortKey",
    "parse_query",
]
