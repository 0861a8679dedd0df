"""Every setting kiln reads, and the :class:`Config` that holds their effective values.

:data:`SETTINGS` lists each :class:`Setting` (key, kind, default, help); its
``KILN_*`` variable comes from :func:`env_name`. The section dataclasses
(:class:`HttpConfig`, :class:`StorageConfig`, :class:`AuthenticationConfig`, ...) have
a field per setting, and :class:`Config` groups them with where each value came
from (a :class:`Source`). Reading the values is :mod:`kiln.config.loader`'s job.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from kiln.config.kinds import (
    BOOL,
    COUNT,
    DURATION,
    HOST,
    MAP,
    ORIGINS,
    PORT,
    SIZE,
    Kind,
    choice,
    directory,
)

CONFIG_FILE = "config.yaml"
"""The settings file's name inside the application folder."""

ENV_PREFIX = "KILN_"
"""Every environment override starts with this."""

RESERVED_ENV = frozenset({"KILN_ADMIN_USER", "KILN_ADMIN_PASSWORD"})
"""``KILN_*`` variables that are not settings but are read elsewhere (never warned about)."""


class Source(StrEnum):
    """Where a setting's effective value came from (also the ``file`` of a :class:`ConfigError`)."""

    DEFAULT = "default"
    FILE = CONFIG_FILE
    ENVIRONMENT = "environment"
    COMMAND_LINE = "command line"


def env_name(key: str) -> str:
    """The environment variable for ``key``: ``http.maxBodySize`` -> ``KILN_HTTP_MAXBODYSIZE``."""
    return ENV_PREFIX + key.upper().replace(".", "_")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its dotted ``key``, its :class:`Kind`, its default and a line of help."""

    key: str
    kind: Kind
    default: Any
    help: str

    @property
    def env(self) -> str | None:
        """The ``KILN_*`` variable that overrides it, or ``None`` for kinds with no text form."""
        return env_name(self.key) if self.kind.parse_text is not None else None


SETTINGS: tuple[Setting, ...] = (
    Setting("http.host", HOST, "127.0.0.1", "The address to listen on."),
    Setting("http.port", PORT, 9926, "The port to listen on."),
    Setting(
        "http.maxBodySize",
        SIZE,
        10 * 1024**2,
        'The largest request body accepted, in bytes or with a unit ("10MiB").',
    ),
    Setting(
        "http.workers",
        COUNT,
        1,
        "Processes serving HTTP on the one port, each with its own event loop; set it to the "
        "number of cores to use them all. The first also runs the MQTT broker.",
    ),
    Setting("http.accessLog", BOOL, False, "Log one line per request."),
    Setting(
        "http.compressionThreshold",
        SIZE,
        1024,
        'Compress responses larger than this (gzip or brotli), in bytes or with a unit ("1KiB").',
    ),
    Setting(
        "http.cors",
        ORIGINS,
        (),
        "The web origins whose pages may call this server from a browser (CORS), such as "
        '["https://app.example.com"], or ["*"] for any; empty: no cross-origin access.',
    ),
    Setting(
        "storage.path",
        directory(".kiln"),
        None,
        "The database directory, relative to the app folder; null means APP_DIR/.kiln.",
    ),
    Setting(
        "storage.mapSize",
        SIZE,
        256 * 1024**2,
        "The initial LMDB map size; it grows automatically.",
    ),
    Setting(
        "query.allowScans",
        BOOL,
        False,
        "Run queries no index can drive as full scans, instead of refusing them with a 400.",
    ),
    Setting(
        "query.maxSortRows",
        COUNT,
        100_000,
        "The most records a query without limit() sorts in memory; above it, a 400.",
    ),
    Setting(
        "realtime.subscriberQueue",
        COUNT,
        1000,
        "Events one subscriber may have waiting; a subscriber that falls further behind is "
        "closed with an error event, so it never slows writers or other subscribers.",
    ),
    Setting(
        "realtime.heartbeat",
        DURATION,
        15.0,
        "How often an idle Server-Sent Events stream gets a comment line, to keep proxies "
        "from closing it.",
    ),
    Setting(
        "mqtt.port",
        PORT,
        1883,
        "The port the MQTT broker listens on (TCP), on http.host.",
    ),
    Setting(
        "mqtt.webSocketPort",
        PORT,
        9927,
        "The port of MQTT over WebSocket (subprotocol mqtt), on http.host.",
    ),
    Setting(
        "mqtt.payloadFormat",
        choice("json", "cbor", "msgpack"),
        "json",
        "How MQTT payloads are read and written when a message has no MQTT 5 content type.",
    ),
    Setting(
        "mqtt.maxPacketSize",
        SIZE,
        1 << 20,
        "The largest MQTT packet accepted; a larger one closes its connection unread.",
    ),
    Setting(
        "authentication.tokenTimeout",
        DURATION,
        86400.0,
        "How long an access token from POST /_auth/token is valid.",
    ),
    Setting(
        "authentication.refreshTokenTimeout",
        DURATION,
        30 * 86400.0,
        "How long a refresh token is valid (it renews access tokens at POST /_auth/refresh).",
    ),
    Setting(
        "authentication.cacheTimeout",
        DURATION,
        30.0,
        "How long verified credentials are remembered, so a password is not checked (about "
        "50 ms) on every request; a changed or removed user is seen at once regardless.",
    ),
    Setting(
        "authentication.trustLoopback",
        BOOL,
        False,
        "Treat requests from this machine (127.0.0.1, ::1) without credentials as a super "
        "user. Only for single-user development machines.",
    ),
    Setting(
        "roles",
        MAP,
        {},
        "The roles users may have: per role, per database and table, the permissions read, "
        "insert, update, delete and an optional attributes allow-list; a role named anonymous "
        "applies to requests without credentials.",
    ),
    Setting(
        "logging.level",
        choice("debug", "info", "warning", "error"),
        "info",
        "The least severe level logged.",
    ),
    Setting(
        "logging.auditRetention",
        DURATION,
        3 * 86400.0,
        "How long audit log entries are kept for catch-up (startTime, previousCount, "
        "Last-Event-ID); older ones are pruned in the background.",
    ),
)
"""Every setting kiln reads, in the order docs and the ``config.yaml`` template list them."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The ``http`` section."""

    host: str
    """``http.host``: the address to listen on."""
    port: int
    """``http.port``: the port to listen on."""
    max_body_size: int
    """``http.maxBodySize``: the largest request body accepted, in bytes."""
    workers: int
    """``http.workers``: the processes serving HTTP (:mod:`kiln.workers`)."""
    access_log: bool
    """``http.accessLog``: whether to log one line per request."""
    compression_threshold: int
    """``http.compressionThreshold``: responses larger than this many bytes are compressed."""
    cors: tuple[str, ...]
    """``http.cors``: the origins allowed to make cross-origin requests (``*``: any)."""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """The ``storage`` section."""

    path: Path
    """``storage.path``: the database directory, absolute."""
    map_size: int
    """``storage.mapSize``: the initial LMDB map size, in bytes."""


@dataclass(frozen=True, slots=True)
class QueryConfig:
    """The ``query`` section."""

    allow_scans: bool
    """``query.allowScans``: whether a query no index can drive runs as a full scan."""
    max_sort_rows: int
    """``query.maxSortRows``: the most records a query without a limit sorts in memory."""


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    """The ``realtime`` section."""

    subscriber_queue: int
    """``realtime.subscriberQueue``: the most events one subscriber may have waiting."""
    heartbeat: float
    """``realtime.heartbeat``: seconds between comment lines on an idle SSE stream."""


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """The ``mqtt`` section."""

    port: int
    """``mqtt.port``: the broker's TCP port."""
    web_socket_port: int
    """``mqtt.webSocketPort``: the port of MQTT over WebSocket."""
    payload_format: Literal["json", "cbor", "msgpack"]
    """``mqtt.payloadFormat``: the payload format of messages without a content type."""
    max_packet_size: int
    """``mqtt.maxPacketSize``: the largest packet accepted, in bytes."""


@dataclass(frozen=True, slots=True)
class AuthenticationConfig:
    """The ``authentication`` section."""

    token_timeout: float
    """``authentication.tokenTimeout``: seconds an access token is valid."""
    refresh_token_timeout: float
    """``authentication.refreshTokenTimeout``: seconds a refresh token is valid."""
    cache_timeout: float
    """``authentication.cacheTimeout``: seconds verified credentials are remembered."""
    trust_loopback: bool
    """``authentication.trustLoopback``: loopback requests without credentials are super users."""


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """The ``logging`` section."""

    level: Literal["debug", "info", "warning", "error"]
    """``logging.level``: the least severe level logged."""
    audit_retention: float
    """``logging.auditRetention``: seconds audit log entries are kept."""


_SECTIONS: dict[str, type] = {
    "http": HttpConfig,
    "storage": StorageConfig,
    "query": QueryConfig,
    "realtime": RealtimeConfig,
    "mqtt": MqttConfig,
    "authentication": AuthenticationConfig,
    "logging": LoggingConfig,
}
"""Each section's dataclass; a setting ``section.someKey`` is its field ``some_key``."""


@dataclass(frozen=True, slots=True)
class Config:
    """An application's effective settings, each from the first place that gave it.

    Read ``config.http.port``; or by key, ``config.value("http.port")`` and
    ``config.source("http.port")`` (a :class:`Source`).
    """

    app_dir: Path
    """The application folder, absolute."""
    http: HttpConfig
    """The ``http.*`` settings."""
    storage: StorageConfig
    """The ``storage.*`` settings."""
    query: QueryConfig
    """The ``query.*`` settings."""
    realtime: RealtimeConfig
    """The ``realtime.*`` settings."""
    mqtt: MqttConfig
    """The ``mqtt.*`` settings."""
    authentication: AuthenticationConfig
    """The ``authentication.*`` settings."""
    logging: LoggingConfig
    """The ``logging.*`` settings."""
    roles: Mapping[str, Any]
    """``roles``: the roles as written, read against the schema by :mod:`kiln.auth.roles`."""
    _values: Mapping[str, Any] = field(repr=False)
    _sources: Mapping[str, Source] = field(repr=False)
    warnings: tuple[str, ...] = ()
    """Things worth telling the user that did not stop kiln (an unknown ``KILN_*`` variable)."""

    def value(self, key: str) -> Any:
        """The effective value of the setting ``key`` (``"http.port"``)."""
        return self._values[_known(key)]

    def source(self, key: str) -> Source:
        """Where the setting ``key`` came from."""
        return self._sources[_known(key)]


def _known(key: str) -> str:
    if key not in _BY_KEY:
        close = difflib.get_close_matches(key, _BY_KEY, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"no setting {key!r}{suggestion}")
    return key


_BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}


def _attribute(name: str) -> str:
    """The Python name of a key segment: ``maxBodySize`` -> ``max_body_size``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).replace(".", "_").lower()
