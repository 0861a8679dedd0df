"""The query language: URL query strings → :class:`Query`, then planned and run over a table."""

from kiln.query.parser import Query, parse_query

__all__ = ["Query", "parse_query"]
