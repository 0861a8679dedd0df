"""``kiln dev``: serve an application like ``kiln run`` and reload it when its files change.

:func:`develop` serves through a :class:`SwappableHandler`, an RSGI callable
that passes each request to the current :class:`~kiln.http.rest.RestHandler`.
A :class:`Reloader` watches the three application files; on a change it checks
the new version first (``config.yaml`` with :func:`~kiln.serve.read_config`,
``schema.graphql`` with :func:`~kiln.schema.load_schema`, ``resources.py`` by
importing it against the new schema's tables with
:func:`~kiln.loader.check_resources`) and keeps the running version when any
has a mistake. A good version is swapped in on the same
data folder: new requests are held, those in flight finish, the old app commits
its pending writes and closes, :func:`~kiln.app.load_app` opens the new one and
the held requests are answered by it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from kiln.app import App, load_app
from kiln.errors import KilnError
from kiln.http.rest import RestHandler
from kiln.loader import check_resources
from kiln.mqtt.server import MqttServer
from kiln.scaffold import APP_FILES, RESOURCES_FILE, SCHEMA_FILE
from kiln.schema import load_schema
from kiln.serve import http_server, read_config, start_broker

log = logging.getLogger("kiln")

SETTLE_MS = 100
"""A change is acted on once its files have been quiet this long (editors write in steps)."""

DRAIN_SECONDS = 10.0
"""How long a reload waits for requests in flight (a long stream) before closing the old app."""

Report = Callable[[KilnError], None]
"""Prints an error in an application's files the way ``kiln run`` does at start-up."""


class SwappableHandler:
    """An RSGI callable that answers with the current handler and holds requests during a swap."""

    def __init__(self, handler: RestHandler):
        self.handler = handler
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._active = 0

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        """The RSGI entry point: wait out a swap, then let the current handler answer."""
        while not self._open.is_set():
            await self._open.wait()
        self._active += 1
        self._idle.clear()
        try:
            await self.handler.__rsgi__(scope, protocol)
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Hold new requests and wait for those in flight; release them on leaving."""
        self._open.clear()
        try:
            try:
                await asyncio.wait_for(self._idle.wait(), DRAIN_SECONDS)
            except TimeoutError:
                log.warning(
                    "%d request(s) still running after %.0fs; reloading anyway",
                    self._active,
                    DRAIN_SECONDS,
                )
            yield
        finally:
            self._open.set()


class Reloader:
    """Watches an application's files and swaps in each good new version.

    Args:
        app: the running application (its config gives the server's fixed address).
        overrides: the command-line settings, applied again to every new version.
        report: prints an error in the application's files.
    """

    def __init__(self, app: App, overrides: Mapping[str, object], report: Report):
        self.app = app
        self.directory = app.directory
        self.overrides = dict(overrides)
        self.report = report
        self.handler = SwappableHandler(RestHandler(app))
        self._address = (app.config.http.host, app.config.http.port)
        self._last_good = Path(tempfile.mkdtemp(prefix="kiln-dev-"))
        self._snapshot()

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload on every settled change to the application's files, until ``stop`` is set."""
        directory = self.directory.resolve()

        def ours(_change: Change, path: str) -> bool:
            file = Path(path)
            return file.name in APP_FILES and file.parent == directory

        async for changes in awatch(
            directory, watch_filter=ours, step=SETTLE_MS, stop_event=stop, recursive=False
        ):
            await self.reload(sorted({Path(path).name for _, path in changes}))

    async def reload(self, changed: list[str]) -> None:
        """Check the files and, when they are good, swap the new version in."""
        what = ", ".join(changed) + " changed"
        started = time.perf_counter()
        directory = self.directory
        try:
            config = read_config(directory, self.overrides)
            schema = load_schema(directory / SCHEMA_FILE)
            if (directory / RESOURCES_FILE).is_file():
                check_resources(directory / RESOURCES_FILE, schema)
        except KilnError as error:
            _say(f"reload: {what}; it has a mistake, so the last good version keeps serving")
            self.report(error)
            return
        moved = (config.http.host, config.http.port) != self._address
        old_routes = set(self.app.routes)
        self.app.bus.close()  # ends the open subscriptions (clients reconnect and resume), so
        async with self.handler.paused():  # no stream holds up the pause
            await asyncio.to_thread(self.app.close)
            try:
                self.app = await asyncio.to_thread(load_app, directory, config)
            except Exception as error:  # whatever went wrong, the last good version comes back
                _say(f"reload: {what}; the new version failed to open, so the last one is back")
                if isinstance(error, KilnError):
                    self.report(error)
                else:
                    log.exception("opening the new version failed")
                self.app = await asyncio.to_thread(load_app, self._last_good, self.app.config)
                self.app.bus.start()
                self.handler.handler = RestHandler(self.app)
                return
            self.app.bus.start()
            self._snapshot()
            self.handler.handler = RestHandler(self.app)
        logging.getLogger().setLevel(config.logging.level.upper())
        elapsed = (time.perf_counter() - started) * 1000
        _say(
            f"reload: {what}; serving the new version ({_route_changes(old_routes, self.app)})"
            f" in {elapsed:.0f} ms"
        )
        if moved:
            host, port = self._address
            _say(
                f"reload: http.host/http.port now say {config.http.host}:{config.http.port}, "
                f"but a running server cannot move; restart kiln dev to listen there "
                f"(still at http://{host}:{port}/)"
            )

    def _snapshot(self) -> None:
        """Copy the schema and resources.py that are serving, to fall back on."""
        shutil.copy2(self.directory / SCHEMA_FILE, self._last_good / SCHEMA_FILE)
        resources = self.directory / RESOURCES_FILE
        if resources.is_file():
            shutil.copy2(resources, self._last_good / RESOURCES_FILE)
        else:
            (self._last_good / RESOURCES_FILE).unlink(missing_ok=True)

    def close(self) -> None:
        """Commit every pending write and close the running version."""
        self.app.close()
        shutil.rmtree(self._last_good, ignore_errors=True)


def _route_changes(before: set[str], app: App) -> str:
    after = set(app.routes)
    parts = [f"routes {', '.join(f'/{route}/' for route in app.routes) or 'none'}"]
    if after - before:
        parts.append("new " + ", ".join(f"/{route}/" for route in sorted(after - before)))
    if before - after:
        parts.append("gone " + ", ".join(f"/{route}/" for route in sorted(before - after)))
    return "; ".join(parts)


def _say(line: str) -> None:
    print(line, flush=True)


async def develop(
    app: App,
    overrides: Mapping[str, object],
    report: Report,
    on_ready: Callable[[MqttServer], None] | None = None,
) -> None:
    """Serve ``app`` and reload it on change until SIGINT or SIGTERM, then close it.

    Args:
        app: the application, loaded with ``overrides``.
        overrides: the command-line settings, applied again to every new version.
        report: prints an error in the application's files.
        on_ready: called with the started MQTT broker once its listeners listen.
    """
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # each reload prints its own line
    reloader = Reloader(app, overrides, report)
    server = http_server(
        reloader.handler, app.config.http, before_stop=lambda: reloader.app.bus.close()
    )
    app.bus.start()
    try:
        mqtt = await start_broker(lambda: reloader.app)
    except BaseException:
        reloader.close()
        raise
    if on_ready is not None:
        on_ready(mqtt)
    stop = asyncio.Event()
    watching = asyncio.create_task(reloader.watch(stop))
    watching.add_done_callback(lambda _: server.stop())
    try:
        await server.serve()
    finally:
        stop.set()
        try:
            await watching
        finally:
            await mqtt.close()
            reloader.close()
            log.info("stopped; every acknowledged write is on disk")
