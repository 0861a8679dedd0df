"""Load an application folder: schema + config → storage, writers and routes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.config import Config
from kiln.resource import Resource, table_class
from kiln.schema import Schema, load_schema
from kiln.storage.clock import HybridClock
from kiln.storage.database import Database
from kiln.storage.writer import Writer


@dataclass
class App:
    """A loaded application: its settings, schema, open databases and routes.

    ``routes`` maps the first URL path segment (``Dog`` in ``/Dog/1``) to the
    resource that answers it.
    """

    directory: Path
    config: Config
    schema: Schema
    databases: dict[str, Database]
    writers: dict[str, Writer]
    routes: dict[str, Resource]

    def close(self) -> None:
        """Commit every pending write, stop the writers and close the databases."""
        for writer in self.writers.values():
            writer.close()
        for database in self.databases.values():
            database.close()


def load_app(directory: Path, config: Config) -> App:
    """Parse the schema, open a database (and its writer) per schema database, build routes.

    Raises:
        SchemaError: ``schema.graphql`` is missing or wrong; nothing has been opened.
    """
    schema = load_schema(directory / "schema.graphql")
    clock = HybridClock()
    databases: dict[str, Database] = {}
    writers: dict[str, Writer] = {}
    for name in schema.databases():
        tables = [table for table in schema.tables.values() if table.database == name]
        database = Database(
            name,
            config.storage.path / name,
            tables,
            map_size=config.storage.map_size,
            clock=clock,
        )
        databases[name] = database
        writers[name] = Writer(database)
        writers[name].start()
    routes: dict[str, Resource] = {}
    for table in schema.exported():
        cls = table_class(table, schema, databases[table.database], writers[table.database])
        routes[cls.path] = cls()
    return App(directory, config, schema, databases, writers, routes)
