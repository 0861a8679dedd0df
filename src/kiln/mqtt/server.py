"""The broker's listeners, on kiln's event loop next to granian: MQTT over TCP on
``mqtt.port`` and MQTT over WebSocket on ``mqtt.webSocketPort``, both on ``http.host``.

:func:`start_mqtt` opens the session store, starts the listeners and returns the
:class:`MqttServer` that :meth:`~MqttServer.close` stops: connections are ended (MQTT 5
clients are told the server is shutting down), persistent sessions written, the store closed.

A port left at its default that another process holds only turns that listener off, with a
warning (two apps on one machine still start) that :attr:`MqttServer.off` keeps for the
start-up banner; a port set on purpose that cannot be used stops start-up with a
:class:`~kiln.errors.ConfigError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from kiln.config import Config
from kiln.config.settings import Source
from kiln.errors import ConfigError
from kiln.mqtt.broker import Broker
from kiln.mqtt.connection import CONNECT_TIMEOUT, Connection
from kiln.mqtt.link import Link, TcpLink, WebSocketLink
from kiln.mqtt.properties import ReasonCode
from kiln.mqtt.sessions import MQTT_FOLDER, Sessions, SessionStore
from kiln.mqtt.websocket import (
    HandshakeRefused,
    WebSocketStream,
    read_head,
    refusal,
    switching_protocols,
)

if TYPE_CHECKING:
    from kiln.app import App

log = logging.getLogger("kiln.mqtt")

CLOSE_TIMEOUT = 10.0
"""Seconds the connections have to end when the server stops."""


class MqttServer:
    """The listeners and the connections they accepted.

    Args:
        broker: translates MQTT to the app's resources.
        sessions: every client's session.
        config: the app's settings (host, ports, maximum packet size).
    """

    def __init__(self, broker: Broker, sessions: Sessions, config: Config):
        self.broker = broker
        self.sessions = sessions
        self.config = config
        self.listening: list[tuple[str, int]] = []
        """The URL scheme and port of each listener that listens (``("mqtt", 1883)``)."""
        self.off: list[str] = []
        """Why each listener that does not listen is off, a sentence each."""
        self._servers: list[asyncio.Server] = []
        self._connections: set[Connection] = set()

    async def start(self) -> None:
        """Listen on both ports; fills :attr:`listening` and :attr:`off`.

        Raises:
            ConfigError: a port set in the settings cannot be listened on.
        """
        host, mqtt = self.config.http.host, self.config.mqtt
        listeners: list[tuple[str, str, str, int, Callable[..., Awaitable[None]]]] = [
            ("MQTT over TCP", "mqtt", "mqtt.port", mqtt.port, self._serve_tcp),
            (
                "MQTT over WebSocket",
                "ws",
                "mqtt.webSocketPort",
                mqtt.web_socket_port,
                self._serve_websocket,
            ),
        ]
        for name, scheme, key, port, handler in listeners:
            try:
                server = await asyncio.start_server(handler, host, port, backlog=1024)
            except OSError as error:
                # asyncio says "error while attempting to bind on address ...": the OS is briefer
                why = os.strerror(error.errno) if error.errno in errno.errorcode else str(error)
                source = self.config.source(key)
                if source is not Source.DEFAULT:
                    raise ConfigError(
                        f"{key}: cannot listen on {host}:{port}: {why}",
                        file=str(source),
                        hint=f"stop what listens there, or set another port ({key})",
                    ) from None
                reason = (
                    f"{name} is off: {key} {port} (the default) is taken ({why}); "
                    f"set {key} to serve it on another port"
                )
                log.warning("%s", reason)
                self.off.append(reason)
                continue
            self._servers.append(server)
            self.listening.append((scheme, port))

    async def close(self) -> None:
        """Stop listening, end every connection (MQTT 5 clients hear that the server shuts
        down; no will is published), write the sessions, close the store."""
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.abort(ReasonCode.SERVER_SHUTTING_DOWN, "the server stops", will=False)
        waiting = [connection.done.wait() for connection in self._connections]
        if waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waiting), CLOSE_TIMEOUT)
        await self.sessions.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._run(TcpLink(reader, writer))

    async def _serve_websocket(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
            headers = read_head(head)
            if not self._origin_allowed(headers.get("origin"), headers.get("host")):
                raise HandshakeRefused(
                    403,
                    f"pages from {headers.get('origin')} may not connect here; add the origin "
                    "to http.cors",
                )
        except HandshakeRefused as error:
            writer.write(refusal(error))
            writer.close()
            return
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        writer.write(switching_protocols(headers))
        stream = WebSocketStream(reader, writer.write, self.config.mqtt.max_packet_size)
        await self._run(WebSocketLink(writer, stream, headers.get("host") or ""))

    def _origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a page from ``origin`` may connect: ``http.cors``, or a page this
        server's HTTP port served (the same host, ``http.port``)."""
        cors = self.broker.app().security.cors
        if host is None:
            return cors.origin_allowed(origin)
        http_host = f"{host.rpartition(':')[0] or host}:{self.config.http.port}"
        return cors.origin_allowed(origin, host) or cors.origin_allowed(origin, http_host)

    async def _run(self, link: Link) -> None:
        connection = Connection(self.broker, self.sessions, link, self.config.mqtt.max_packet_size)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)


async def start_mqtt(app: Callable[[], App]) -> MqttServer:
    """Start the broker of the app ``app()`` returns (on the running loop, after its bus).

    ``app`` is called again for every connection and message, so ``kiln dev`` can swap
    the app under a running broker.

    Raises:
        ConfigError: a port set in the settings cannot be listened on.
    """
    config = app().config
    store = SessionStore(config.storage.path / MQTT_FOLDER)
    try:
        expired = store.sweep()
    except BaseException:
        store.close()
        raise
    if expired:
        log.info("%d expired MQTT sessions removed", expired)
    broker = Broker(app, config.mqtt.payload_format)
    sessions = Sessions(store, broker.publish_will)
    server = MqttServer(broker, sessions, config)
    try:
        await server.start()
    except BaseException:
        await server.close()
        raise
    sessions.start()
    return server
