"""Start an application and serve it: settings, logging, the app, then the HTTP server.

:func:`open_app` is the start-up ``kiln run`` and ``kiln dev`` share;
:func:`serve` runs the server on kiln's own event loop until a signal stops it.

The loop is uvloop's (``kiln run`` starts it): granian hands every request to the
loop from its own threads, and uvloop's cross-thread scheduling is what made GET
by id about 70% faster than on the standard asyncio loop in ``bench.rest``.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from granian.constants import Interfaces
from granian.server.embed import Server

from kiln.app import App, load_app
from kiln.auth.security import create_admin
from kiln.config import Config, HttpConfig, load_config
from kiln.config.settings import Source, env_name
from kiln.errors import ConfigError
from kiln.http.rest import RestHandler
from kiln.mqtt.server import MqttServer, start_mqtt
from kiln.resource import Resource, Table
from kiln.storage.database import ForeignFiles, UnusableDatabase
from kiln.workers import Crew, WriteLink

log = logging.getLogger("kiln")

GIL_SWITCH_INTERVAL = 0.001
"""Seconds a thread may hold the GIL while another waits (Python's default is 0.005).

py-lmdb releases the GIL around every LMDB call, so the writer thread waits for it
again after each get and put of a write, behind the event loop. 5 ms → 1 ms raised
durable PUT throughput by about 30% in ``bench.rest``, GET unchanged. 0.2 ms gave
PUT another 10% or so but cost the MQTT relay a third (``bench.mqtt``, QoS 0: the
loop relays while the writer logs the messages), so 1 ms it is.
"""


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


_LISTEN_HINTS = {
    "http.port": "stop the process that listens there (another kiln?), "
    "or choose another port: --port, or http.port in config.yaml",
    "http.host": "use an address of this machine: 127.0.0.1 (this machine only), "
    "0.0.0.0 (every interface) or one of its own",
}
"""What to do when the HTTP address cannot be listened on, by the setting at fault."""


def check_http_port(config: Config) -> None:
    """Refuse to start when ``http.host:http.port`` cannot be listened on.

    granian listens with ``SO_REUSEPORT`` (so that workers share the port), which would
    let a second server quietly share the port of one already running, each answering
    some of the connections. A plain bind finds the port taken whatever its listener
    set; a port left only in ``TIME_WAIT`` by a server just stopped is free.

    Raises:
        ConfigError: another process listens there, this user may not, or ``http.host``
            is no address of this machine.
    """
    host, port = config.http.host, config.http.port
    address = f"{url_host(host)}:{port}"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        wrong_host = isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL
        key = "http.host" if wrong_host else "http.port"
        raise ConfigError(
            f"{key}: cannot listen on {address}: {error.strerror or error}",
            file=str(config.source(key)),
            hint=_LISTEN_HINTS[key],
        ) from None


_DATA_FOLDER_HINTS = {
    errno.ENOTDIR: "a file is in the way: choose a folder",
    errno.EEXIST: "a file is in the way: choose a folder",
    errno.EACCES: "choose a folder this user may write to, or let it write there (chmod, chown)",
    errno.EPERM: "choose a folder this user may write to, or let it write there (chmod, chown)",
    errno.EROFS: "choose a folder on a writable file system",
    errno.EISDIR: "a folder is in the way of a database file: remove it, or choose another folder",
}
"""What to do about a data folder that cannot be used, by the OS error's number."""


def data_folder_error(config: Config, error: OSError) -> ConfigError | None:
    """The mistake ``error`` shows in ``storage.path`` (or, for a map that does not fit the
    process, ``storage.mapSize``), or None when it is about another path.

    The databases create the data folder when they first open (after the schema is
    read, so a broken schema leaves none behind); an :class:`OSError` about that
    folder, a path inside it or one of its parents means it cannot be used: a file
    is in the way, this user may not write there, or the path cannot exist.
    """
    if error.filename is None:
        return None
    folder = config.storage.path
    failed = Path(os.fsdecode(error.filename))
    if not (failed.is_relative_to(folder) or folder.is_relative_to(failed)):
        return None
    mapping = error.errno == errno.ENOMEM  # the folder is fine: the map is too large
    key = "storage.mapSize" if mapping else "storage.path"
    source = config.source(key)
    name = f"{env_name(key)} ({key})" if source is Source.ENVIRONMENT else key
    reason = error.strerror or str(error)
    if mapping:
        message = f"{name}: cannot map the database at {failed}: {reason}"
    else:
        # a parent it needed to create, or a store inside it
        inside = failed in folder.parents or isinstance(error, UnusableDatabase)
        at = f" (at {failed})" if inside else ""
        message = f"{name}: cannot use {folder} as the data folder: {reason}{at}"
    return ConfigError(message, file=str(source), hint=data_folder_hint(error))


async def start_broker(current_app: Callable[[], App]) -> MqttServer:
    """:func:`~kiln.mqtt.server.start_mqtt`, a session store that cannot be used reported as
    the mistake in the data folder it is.

    Raises:
        ConfigError: as :func:`data_folder_error`, or a listener's port is taken.
    """
    try:
        return await start_mqtt(current_app)
    except OSError as error:
        mistake = data_folder_error(current_app().config, error)
        if mistake is None:
            raise
        raise mistake from None


def data_folder_hint(error: OSError) -> str:
    """What to do about the data folder ``error`` (an OS error using it) shows unusable."""
    if error.errno == errno.ENOMEM:  # the folder is fine: the map is too large for the process
        return (
            "the database's memory map is larger than this process may map: lower "
            "storage.mapSize (with http.workers above 1 every map takes 1 TiB), or raise "
            "the limit (ulimit -v)"
        )
    if isinstance(error, ForeignFiles):
        what = "move those files away, or choose a folder of kiln's own"
    elif isinstance(error, UnusableDatabase) and not error.errno:
        what = (
            "they were written by another LMDB version, or are damaged: restore them from "
            "a backup, or choose another folder"
        )
    else:
        what = _DATA_FOLDER_HINTS.get(
            error.errno or 0, "choose a folder kiln can create and write to"
        )
    return f"{what} (--data, KILN_STORAGE_PATH or storage.path in config.yaml)"


def keep_loaded_objects() -> None:
    """Exempt every object alive now (the loaded app, its modules, the server) from the
    garbage collector's full collections, which otherwise walk them all.

    Call it once a process is ready to serve. Under a PUT load, a full collection of
    a worker took up to 47 ms, during which it answered nothing (a p99 of 73-119 ms
    with two workers); with this, 0.4 ms. The objects stay alive as before: they are
    only no longer scanned (:func:`gc.freeze`). Garbage left from starting is collected
    first, so that none of it is kept for good.
    """
    gc.collect()
    gc.freeze()


def banner(app: App, mqtt: MqttServer | None) -> str:
    """The start-up text: where the app is served, and one line per exported table.

    The MQTT lines come from the started broker ``mqtt``: its listeners that listen,
    and why any other is off. Without a broker (None) there are none.
    """
    http = app.config.http
    workers = f" (http.workers: {http.workers})" if http.workers > 1 else ""
    host = url_host(http.host)
    lines = [f"kiln serving {app.directory} at http://{host}:{http.port}/{workers}"]
    if mqtt is not None:
        if mqtt.listening:
            urls = " and ".join(
                f"{scheme}://{host}:{port}{'/' if scheme == 'ws' else ''}"
                for scheme, port in mqtt.listening
            )
            lines.append(f"  MQTT at {urls} (topics: <route>/<id>)")
        lines.extend(f"  {reason}" for reason in mqtt.off)
    for route, resource in app.routes.items():
        lines.append(f"  /{route}/  {_served(resource)}")
    if not app.routes:
        lines.append("  (no table has @export and resources.py defines no resource)")
    lines.append(f"  data in {app.config.storage.path}")
    lines.extend(f"  {note}" for note in app.security.notes())
    lines.extend(f"  warning: {warning}" for warning in app.config.warnings)
    return "\n".join(lines)


def _served(resource: Resource) -> str:
    """What a route serves: a table's records, or a class of resources.py."""
    cls = type(resource)
    if not isinstance(resource, Table):
        return f"{cls.__name__} (resources.py)"
    if cls.__name__ == resource.definition.name:
        return f"{cls.__name__} records"
    return f"{cls.__name__} (resources.py) over {resource.definition.name} records"


def read_config(app_dir: Path, overrides: Mapping[str, object]) -> Config:
    """The app's settings: command line (``overrides``) > environment > config.yaml > default.

    Raises:
        ConfigError: a mistake in ``config.yaml``, a ``KILN_*`` variable or an override.
    """
    return load_config(app_dir, env=os.environ, overrides=overrides)


def open_app(app_dir: Path, overrides: Mapping[str, object]) -> App:
    """Read the settings, set up logging and load the app: the start-up of ``run`` and ``dev``.

    The first super user is added from ``KILN_ADMIN_USER``/``KILN_ADMIN_PASSWORD``
    when they are set and no user of that name exists
    (:func:`~kiln.auth.security.create_admin`).

    Raises:
        ConfigError: a mistake in the settings or those variables, the HTTP port is
            taken (:func:`check_http_port`), or the data folder cannot be used
            (:func:`data_folder_error`); nothing stays open.
        SchemaError: a mistake in ``schema.graphql``; nothing has been opened.
    """
    config = read_config(app_dir, overrides)
    check_http_port(config)
    logging.basicConfig(
        level=config.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        app = load_app(app_dir, config, shared=config.http.workers > 1)
    except OSError as error:
        mistake = data_folder_error(config, error)
        if mistake is None:
            raise
        raise mistake from None
    try:
        create_admin(app.security.users, os.environ)
    except BaseException:
        app.close()
        raise
    return app


def http_server(
    target: object, http: HttpConfig, before_stop: Callable[[], None] | None = None
) -> Server:
    """A granian server for the RSGI ``target`` at ``http.host:http.port``.

    SIGINT and SIGTERM call ``before_stop`` and stop it; call it on the running loop,
    then await its ``serve()``. The server waits for the requests in flight, so
    ``before_stop`` must end the ones that never would (event streams, WebSockets).
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    server = Server(
        target,
        address=http.host,
        port=http.port,
        interface=Interfaces.RSGI,
        log_enabled=False,
        backlog=1024,
    )

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:  # a second signal while stopping
            return
        stopped = True
        if before_stop is not None:
            before_stop()
        server.stop()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    return server


async def serve(
    app: App,
    on_ready: Callable[[MqttServer | None], None] | None = None,
    *,
    link: socket.socket | None = None,
) -> bool:
    """Serve ``app`` until SIGINT or SIGTERM, then commit pending writes and close it.

    ``on_ready`` is called with the started MQTT broker (None in a worker that runs
    none) once every listener but HTTP's (which was checked) listens.

    With one worker (``http.workers``), this process does it all. With more, worker 1
    (``link`` None) starts the write process and workers 2..N (:mod:`kiln.workers`);
    a further worker gets its ``link`` to the write process; every worker's writers
    hand their jobs to it. Worker 1 runs the MQTT broker and prunes the audit log.
    Returns False when a process of the server ended unexpectedly and stopped it.

    Raises:
        ConfigError: an MQTT port set in the settings cannot be listened on, or the MQTT
            session store in the data folder cannot be used.
    """
    loop = asyncio.get_running_loop()
    clean = True

    def lost(description: str) -> None:
        nonlocal clean
        log.error("%s; stopping kiln", description)
        clean = False
        os.kill(os.getpid(), signal.SIGTERM)  # the same stop as a signal's

    first = link is None
    crew = None
    if first and app.config.http.workers > 1:
        try:
            crew = Crew(app.directory, app.config, lost)
        except BaseException:  # the other processes could not start: close what is open
            app.close()
            raise
    if crew is not None:
        link = crew.link
    write_link = None
    if link is not None:
        write_link = WriteLink(
            link, app.bus.receive, lambda: lost("the write process ended unexpectedly")
        )

    def before_stop() -> None:
        app.bus.close()
        if crew is not None:
            crew.terminate()

    server = http_server(RestHandler(app), app.config.http, before_stop=before_stop)
    app.bus.start(prune=first)
    mqtt = None
    try:
        if write_link is not None:
            await write_link.start()
            for writer in app.writers.values():
                writer.delegate(write_link.forward)
            app.bus.join(write_link.peers)
        if first:
            mqtt = await start_broker(lambda: app)
    except BaseException:
        await _stop_processes(app, crew, write_link)
        raise
    if on_ready is not None:
        loop.call_soon(on_ready, mqtt)
    keep_loaded_objects()
    try:
        await server.serve()
    finally:
        try:
            if mqtt is not None:
                await mqtt.close()
        except Exception:  # the writes must still be committed and the databases closed
            log.exception("closing the MQTT broker failed")
        await _stop_processes(app, crew, write_link)
        log.info("stopped; every acknowledged write is on disk")
    return clean


async def _stop_processes(app: App, crew: Crew | None, write_link: WriteLink | None) -> None:
    """Stop the other processes (worker 1) or leave the write process (another worker),
    then close ``app``."""
    app.bus.close()  # before the link closes: it hands the messages still unlogged to it
    if write_link is not None:
        if crew is not None:
            await crew.wait(partial(write_link.close, last=True))
        else:
            write_link.close()
        await write_link.peers.wait_closed()  # the last frames (messages to log) are out
        for writer in app.writers.values():
            writer.delegate(None)
    app.close()


def exit_now(code: int = 0) -> None:
    """Leave at once, once every write is committed and the databases are closed.

    granian's embedded server can still have Rust threads winding down when the
    loop ends, and one that panics during interpreter teardown aborts the process
    (SIGABRT). Nothing is left to clean up by then, so skip the teardown.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
