"""``kiln.tables``: the schema's table classes by name, for ``resources.py`` to extend.

One app per process. :func:`kiln.app.load_app` fills the one :data:`tables`
object with the classes :func:`~kiln.resource.table_class` made, bound to the
app's storage, before it imports ``resources.py``; a reload under ``kiln dev``
fills it again. The object itself never changes, only its contents, so code
that did ``from kiln import tables`` always sees the current app's tables.
Until an app is loaded it is empty.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kiln.errors import UnknownTable

if TYPE_CHECKING:
    from kiln.resource import Table


class TableNamespace:
    """The current app's table classes as attributes: ``tables.Dog``.

    A name the schema does not declare raises :class:`~kiln.errors.UnknownTable`
    (an ``AttributeError``) listing the tables and the closest name.
    """

    __slots__ = ("_classes",)

    def __init__(self) -> None:
        self._classes: dict[str, type[Table]] = {}

    def __getattr__(self, name: str) -> type[Table]:
        if name.startswith("__"):  # copy, pickle and friends probe for dunders
            raise AttributeError(name)
        try:
            return self._classes[name]
        except KeyError:
            raise self._unknown(name) from None

    def __dir__(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._classes))

    def __repr__(self) -> str:
        return f"<kiln.tables: {', '.join(self._classes) or 'no app loaded'}>"

    def _unknown(self, name: str) -> UnknownTable:
        known = list(self._classes)
        if not known:
            return UnknownTable(
                f"kiln.tables has no table {name}: no app is loaded",
                name=name,
                hint="kiln run / kiln dev fill kiln.tables from schema.graphql before they "
                "import resources.py; use tables.<Name> in resources.py",
            )
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        if not close:
            close = [table for table in known if table.lower() == name.lower()]
        suggestion = f"did you mean tables.{close[0]}? " if close else ""
        return UnknownTable(
            f"the schema has no table {name}; its tables are {', '.join(known)}",
            name=name,
            hint=f"{suggestion}table names are case-sensitive, as schema.graphql writes them; "
            f"or declare `type {name} @table {{ ... }}` in schema.graphql",
        )


tables = TableNamespace()
"""The namespace ``resources.py`` reads as ``from kiln import tables``."""


def fill(classes: Mapping[str, type[Table]]) -> dict[str, type[Table]]:
    """Make ``classes`` the contents of :data:`tables`; returns the previous contents."""
    previous = tables._classes
    tables._classes = dict(classes)
    return previous


@contextmanager
def filled(classes: Mapping[str, type[Table]]) -> Iterator[None]:
    """:data:`tables` holds ``classes`` inside the block and its previous contents after it."""
    previous = fill(classes)
    try:
        yield
    finally:
        fill(previous)
