"""Evolve an app's stored data to its schema at start-up, and say what happened.

:func:`evolve` runs the storage steps of :mod:`kiln.storage.evolution` on one
database (build new indexes, drop removed ones, keep removed tables) and adds
what needs the layers above storage: it checks the stored values of every
attribute whose type changed against the new type with :mod:`kiln.validation`,
and logs a warning per change, per removed table and per finished index.
:class:`ProgressDisplay` shows an index build: a rich progress bar when the table
is large, else one log line. :func:`removed_table` finds the data ``kiln drop``
deletes, refusing a table the schema still declares.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from kiln.config import Config
from kiln.errors import KilnError, SchemaError, ValidationError
from kiln.schema import Schema, TableDef, load_schema
from kiln.storage.catalog import record_count
from kiln.storage.database import Database
from kiln.storage.evolution import (
    Progress,
    StoredTable,
    TypeChange,
    build_index,
    commit,
    plan,
    stored_tables,
)
from kiln.types import Key, Record
from kiln.validation import validate_record

if TYPE_CHECKING:
    from rich.progress import Progress as Bar
    from rich.progress import TaskID

log = logging.getLogger("kiln.evolution")

LARGE_TABLE = 10_000
"""Index builds over more records than this get a progress bar instead of one log line."""

_EXAMPLES = 5
_SCAN_CHUNK = 1000


def evolve(database: Database, schema: Schema, progress: Progress) -> list[tuple[str, str]]:
    """Bring ``database``'s stores in line with ``schema``; report through ``log``.

    Records are never rewritten: values that no longer fit a changed type are
    counted and kept, tables that left the schema keep their stores.

    Returns:
        The (type name, attribute) of each ``@computed`` index left ``building``:
        its function lives in ``resources.py``, which is imported later, so the
        caller builds it (:func:`build_index`) once the function is registered.
    """
    tables = [t for t in schema.tables.values() if t.database == database.name]
    with database.read() as txn:
        stored = database.catalog.read(txn)
    steps = plan(tables, stored)
    retyped: dict[str, list[TypeChange]] = defaultdict(list)
    for change in steps.retyped:
        retyped[change.table].append(change)
    for name, changes in retyped.items():
        _check_values(database, schema, schema.tables[name], changes)
    for entry in steps.removed:
        log.warning(
            "table %s (database %s) is no longer in %s; its data (%s) is kept: declare "
            "`type %s` again to serve them, or delete them with `kiln drop APP_DIR %s`",
            entry.name,
            database.name,
            schema.file,
            _records(record_count(database.env, entry.table)),
            entry.name,
            entry.name,
        )
    for name in steps.restored:
        log.info("table %s is declared again: its stored records are served again", name)
    deferred = []
    if steps.changes_catalog or steps.build:  # else the steady state: nothing to write
        pending = commit(database, steps)
        for table, attribute in steps.drop:
            log.info("dropped the index of %s.%s: it is no longer @indexed", table, attribute)
        for name, attribute in pending:
            if schema.tables[name].attributes[attribute].computed:
                deferred.append((name, attribute))
            else:
                build_index(database, name, attribute, progress)
    for table in tables:
        check_unique_values(database, table, schema.file, skip=deferred)
    return deferred


def check_unique_values(
    database: Database, table: TableDef, file: str, skip: Collection[tuple[str, str]] = ()
) -> None:
    """Refuse to start when the stored records of ``table`` break one of its ``@unique``.

    A value is unique only if it was from the start: an attribute that became
    ``@unique`` over records that share a value would let those records be, and
    refuse every later write of the same value. Each unique index is walked once
    (distinct values only), so this costs a fraction of a second per million records.

    Raises:
        SchemaError: at the attribute, naming the shared values and the keys holding them.
    """
    store = database.tables[table.name]
    for attribute in table.unique:
        if (table.name, attribute) in skip:
            continue
        with database.read() as txn:
            shared = store.shared_values(txn, attribute, _EXAMPLES)
        if not shared:
            continue
        declared = table.attributes[attribute]
        examples = "; ".join(
            f"{value!r} by {', '.join(repr(key) for key in keys[:_EXAMPLES])}"
            + (" ..." if len(keys) > _EXAMPLES else "")
            for value, keys in shared
        )
        raise SchemaError(
            f"`{table.name}.{attribute}` is `@unique`, but stored records share values: {examples}",
            file=file,
            line=declared.line or None,
            column=declared.column or None,
            hint=f"give those records distinct {attribute} values first (remove `@unique`, "
            f"start, PATCH or delete them, then add it again), or drop `@unique`",
        )


def _check_values(
    database: Database, schema: Schema, table: TableDef, changes: list[TypeChange]
) -> None:
    """Warn, per changed attribute, how many stored values no longer fit the new type."""
    misfits: dict[str, list[Key]] = {change.attribute: [] for change in changes}
    counts = dict.fromkeys(misfits, 0)
    store = database.tables[table.name]
    after: bytes | None = None
    total = 0
    while True:
        with database.read() as txn:
            chunk = store.scan(txn, after, _SCAN_CHUNK)
        total += len(chunk)
        for _encoded_key, record in chunk:
            for attribute, examples in misfits.items():
                if attribute in record and not _fits(table, schema, attribute, record):
                    counts[attribute] += 1
                    if len(examples) < _EXAMPLES:
                        examples.append(record[table.primary_key])
        if len(chunk) < _SCAN_CHUNK:
            break
        after = chunk[-1][0]
    for change in changes:
        count = counts[change.attribute]
        if count == 0:
            log.info(
                "%s.%s changed type from %s to %s; every stored value fits",
                table.name,
                change.attribute,
                change.old,
                change.new,
            )
            continue
        log.warning(
            "%s.%s changed type from %s to %s: %s of %s hold a value that does not fit "
            "(keys %s); they are kept and served as stored: rewrite them with PUT or PATCH",
            table.name,
            change.attribute,
            change.old,
            change.new,
            count,
            _records(total),
            ", ".join(repr(key) for key in misfits[change.attribute])
            + (", ..." if count > _EXAMPLES else ""),
        )


def _records(count: int) -> str:
    return f"{count} record" if count == 1 else f"{count} records"


def _fits(table: TableDef, schema: Schema, attribute: str, record: Record) -> bool:
    """Whether the stored value is what writing it now would store (valid and unconverted)."""
    value = record[attribute]
    try:
        checked: dict[str, Any] = validate_record(table, schema, {attribute: value}, partial=True)
    except ValidationError:
        return False
    return attribute not in checked or checked[attribute] == value


class ProgressDisplay:
    """Shows index builds: a rich progress bar above :data:`LARGE_TABLE` records, a log line always.

    Args:
        console: where the bar is drawn (standard error by default).
        large: the record count above which a bar is drawn.
    """

    def __init__(self, console: Console | None = None, *, large: int = LARGE_TABLE):
        self.console = console or Console(stderr=True)
        self.large = large
        self._started = 0.0
        self._bar: Bar | None = None
        self._task: TaskID | None = None

    def __call__(self, table: str, attribute: str, done: int, total: int) -> None:
        """Record the progress of building ``table.attribute``'s index."""
        if done == 0:
            self._started = time.monotonic()
            if total > self.large:
                self._open_bar(f"indexing {table}.{attribute}", total)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done)
        if done >= total:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
            log.info(
                "built the index of %s.%s over %d records in %.2f s",
                table,
                attribute,
                total,
                time.monotonic() - self._started,
            )

    def _open_bar(self, description: str, total: int) -> None:
        # Imported here: only a large index build needs it, and start-up time counts.
        from rich.progress import Progress as Bar

        self._bar = Bar(console=self.console, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)


def removed_table(
    app_dir: Path, config: Config, name: str, database: str | None = None
) -> StoredTable:
    """The stored table ``name`` (type or stored name) the app's schema no longer declares.

    Raises:
        SchemaError: ``schema.graphql`` is missing or wrong.
        KilnError: the schema still declares it, no data folder holds it, or more than
            one database does and ``database`` does not choose.
    """
    schema = load_schema(app_dir / "schema.graphql")
    declared = schema.tables.get(name)
    if declared is not None:
        raise KilnError(
            f"table `{name}` is still declared in {schema.file} (line {declared.line}); "
            "kiln drop deletes only the data of tables removed from the schema",
            hint=f"remove `type {name}` from {schema.file} first",
        )
    stored = stored_tables(config.storage.path, map_size=config.storage.map_size)
    matches = [
        t
        for t in stored
        if name in (t.entry.name, t.entry.table) and database in (None, t.database)
    ]
    if not matches:
        known = ", ".join(sorted({t.entry.name for t in stored})) or "none"
        raise KilnError(
            f"no stored table `{name}` in {config.storage.path}",
            hint=f"the stored tables are: {known}; check the name, and --data if the data "
            "lives elsewhere",
        )
    if len(matches) > 1:
        raise KilnError(
            f"table `{name}` is stored in databases " + ", ".join(t.database for t in matches),
            hint="choose one with --database",
        )
    [found] = matches
    for table in schema.tables.values():
        if table.database == found.database and table.table == found.entry.table:
            raise KilnError(
                f"the records of `{name}` are still served as type `{table.name}` "
                f"(line {table.line} of {schema.file})",
                hint=f"remove `type {table.name}` from {schema.file} first",
            )
    return found
