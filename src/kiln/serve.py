"""Run a loaded application: the HTTP server on kiln's own event loop, stopped by signals.

The loop is uvloop's (``kiln run`` starts it): granian hands every request to the
loop from its own threads, and uvloop's cross-thread scheduling is what made GET
by id about 70% faster than on the standard asyncio loop in ``bench.rest``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from granian.constants import Interfaces
from granian.server.embed import Server

from kiln.app import App
from kiln.http.rest import RestHandler

log = logging.getLogger("kiln")

GIL_SWITCH_INTERVAL = 0.001
"""Seconds a thread may hold the GIL while another waits (Python's default is 0.005).

The writer thread needs the GIL briefly after each fsync to answer its group; with
the default it can wait up to 5 ms behind the event loop. 1 ms raised durable PUT
throughput by about 30% in ``bench.rest`` and left GET unchanged.
"""


def banner(app: App) -> str:
    """The start-up text: where the app is served and one line per exported table."""
    http = app.config.http
    lines = [f"kiln serving {app.directory} at http://{http.host}:{http.port}/"]
    for route, resource in app.routes.items():
        lines.append(f"  /{route}/  {type(resource).__name__} records")
    if not app.routes:
        lines.append("  (no table has @export, so no route serves records)")
    lines.append(f"  data in {app.config.storage.path}")
    lines.extend(f"  warning: {warning}" for warning in app.config.warnings)
    return "\n".join(lines)


async def serve(app: App, on_ready: Callable[[], None] | None = None) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then commit pending writes and close it."""
    http = app.config.http
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    server = Server(
        RestHandler(app),
        address=http.host,
        port=http.port,
        interface=Interfaces.RSGI,
        log_enabled=False,
        backlog=1024,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    if on_ready is not None:
        loop.call_soon(on_ready)
    try:
        await server.serve()
    finally:
        app.close()
        log.info("stopped; every acknowledged write is on disk")
