"""Load an application folder: schema + config + resources.py → storage, writers and routes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.auth.roles import build_roles
from kiln.auth.security import Security, open_security
from kiln.auth.users import SYSTEM_FOLDER
from kiln.config import Config
from kiln.evolution import ProgressDisplay, check_unique_values, evolve
from kiln.loader import check_computed, load_resources, unload_resources
from kiln.mqtt.sessions import MQTT_FOLDER
from kiln.namespace import fill
from kiln.query.planner import Limits
from kiln.realtime import ChangeBus
from kiln.resource import Resource, table_class
from kiln.scaffold import RESOURCES_FILE
from kiln.schema import Schema, load_schema
from kiln.storage.clock import HybridClock
from kiln.storage.database import MAX_MAP_SIZE, Database
from kiln.storage.evolution import Progress, build_index
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
    bus: ChangeBus
    security: Security
    worker: int = 1
    """Which of the ``http.workers`` processes this is (1: the one ``kiln run`` started)."""

    def close(self) -> None:
        """End the subscriptions, commit every pending write, stop the writers, close
        the databases and take the app folder off ``sys.path``."""
        self.bus.close()
        for writer in self.writers.values():
            writer.close()
        for database in self.databases.values():
            database.close()
        self.security.close()
        unload_resources(self.directory)


def load_app(
    directory: Path, config: Config, *, progress: Progress | None = None, shared: bool = False
) -> App:
    """Parse the schema, open and evolve its databases, start their writers, build routes.

    The table classes, bound to their storage, fill :data:`kiln.tables`; then
    ``resources.py``, when there is one, is imported and its resource classes
    join the schema's exported tables as routes (:func:`kiln.loader.load_resources`).

    Evolution (:func:`kiln.evolution.evolve`) runs before any writer starts: new
    indexes are built, removed ones dropped, and a database folder no schema table
    uses any more is opened only to mark (and report) its tables removed. The
    index of an ``@computed`` attribute (new, or whose ``version`` changed) is the
    exception: its function lives in ``resources.py``, so it is built after that
    is imported, before the app serves (each ``@tables.X.computed`` registers its
    function straight into the storage, so writes made while importing are indexed).
    A crash in between leaves it ``building`` in the catalog, built again next start.

    Args:
        directory: the application folder.
        config: its settings.
        progress: told ``(table, attribute, done, total)`` while an index is built;
            by default a :class:`~kiln.evolution.ProgressDisplay`.
        shared: other processes will open the databases too (``kiln run``'s write
            process and workers): the maps are opened at their largest size at once,
            as LMDB cannot grow a map that other processes have open. That size is
            address space, not disk: the file grows only as data does.

    Raises:
        SchemaError: ``schema.graphql`` is missing or wrong, or a table's primary key
            differs from the one its records are stored by; nothing has been written.
        ConfigError: ``roles`` in ``config.yaml`` names what the schema does not have.
        ResourceError: ``resources.py`` failed to import, has a wrong class, or gives
            no function to a ``@computed`` attribute; the databases are closed again.
    """
    schema = load_schema(directory / "schema.graphql")
    roles = build_roles(config, schema)
    clock = HybridClock()
    databases: dict[str, Database] = {}
    progress = progress or ProgressDisplay()
    deferred: list[tuple[Database, str, str]] = []
    try:
        for name in schema.databases():
            databases[name] = _open(name, schema, config, clock, shared=shared)
        for database in databases.values():
            pending = evolve(database, schema, progress)
            deferred.extend((database, table, attribute) for table, attribute in pending)
        _evolve_unused(schema, config, clock)
        security = open_security(config, roles)
    except BaseException:
        for database in databases.values():
            database.close()
        raise
    writers: dict[str, Writer] = {}
    for name, database in databases.items():
        writers[name] = Writer(database)
        writers[name].start()
    bus = ChangeBus(
        databases,
        writers,
        clock,
        max_queue=config.realtime.subscriber_queue,
        retention=config.logging.audit_retention,
    )
    Resource.bus = bus  # one app per process, as kiln.tables
    app = App(directory, config, schema, databases, writers, {}, bus, security)
    try:
        app.routes = _routes(directory, schema, config, databases, writers)
        for database, table, attribute in deferred:
            build_index(database, table, attribute, progress)
            check_unique_values(database, schema.tables[table], schema.file)
    except BaseException:
        app.close()
        raise
    return app


def _routes(
    directory: Path,
    schema: Schema,
    config: Config,
    databases: dict[str, Database],
    writers: dict[str, Writer],
) -> dict[str, Resource]:
    """Fill ``kiln.tables``, then route the exported tables and the classes of resources.py."""
    limits = Limits(config.query.allow_scans, config.query.max_sort_rows)
    classes = {
        name: table_class(table, schema, databases[table.database], writers[table.database], limits)
        for name, table in schema.tables.items()
    }
    fill(classes)
    routes: dict[str, Resource] = {}
    for table in schema.exported():
        cls = classes[table.name]
        routes[cls.path] = cls()
    resources = directory / RESOURCES_FILE
    if resources.is_file():
        taken = {route: type(resource).__name__ for route, resource in routes.items()}
        routes.update(load_resources(resources, taken))
    check_computed(schema, classes, resources)
    return routes


def _open(
    name: str, schema: Schema, config: Config, clock: HybridClock, *, shared: bool = False
) -> Database:
    """Open the database ``name`` with the tables the schema puts in it (see
    :func:`load_app` for ``shared``)."""
    return Database(
        name,
        config.storage.path / name,
        [table for table in schema.tables.values() if table.database == name],
        map_size=MAX_MAP_SIZE if shared else config.storage.map_size,
        clock=clock,
        schema_file=schema.file,
    )


def _evolve_unused(schema: Schema, config: Config, clock: HybridClock) -> None:
    """Mark removed the tables of database folders that no declared table uses any more."""
    declared = set(schema.databases())
    root = config.storage.path
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        if folder.name in (*declared, SYSTEM_FOLDER, MQTT_FOLDER):
            continue
        if not (folder / "data.mdb").is_file():
            continue
        database = _open(folder.name, schema, config, clock)
        try:
            evolve(database, schema, ProgressDisplay())
        finally:
            database.close()
