"""Fixtures that start the real kiln server on a free loopback port and talk to it over sockets.

``kiln_server`` (module-scoped) writes an app folder from the module's
``SCHEMA`` (and optional ``CONFIG`` and ``RESOURCES``) globals, starts ``python -m kiln run`` as a
subprocess and yields a :class:`KilnServer`. Tests make their own records with
unique keys, so one server serves a whole module without order dependence.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection

DEFAULT_SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
  breed: String @indexed
  age: Int
}
"""

ADMIN_AUTH = ("admin", "admin-password")
"""Credentials every test client sends: the super user :class:`KilnServer` creates."""

ADMIN_ENV = {"KILN_ADMIN_USER": ADMIN_AUTH[0], "KILN_ADMIN_PASSWORD": ADMIN_AUTH[1]}
"""The variables that make ``kiln run`` add the :data:`ADMIN_AUTH` super user at first start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ws_event(connection: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    """The next event frame of a kiln WebSocket, past ``sync`` frames (the resume points
    sent at the end of a subscription's history)."""
    while True:
        frame = json.loads(connection.recv(timeout=timeout))
        if frame["type"] != "sync":
            return frame


def write_app(
    directory: Path, schema: str, config: str | None = None, resources: str | None = None
) -> Path:
    """Write an application folder: ``schema.graphql``, and ``config.yaml`` and
    ``resources.py`` when given."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "schema.graphql").write_text(schema)
    if config is not None:
        (directory / "config.yaml").write_text(config)
    if resources is not None:
        (directory / "resources.py").write_text(resources)
    return directory


@dataclass
class KilnServer:
    """A running ``kiln run`` subprocess and how to reach it."""

    app_dir: Path
    data_dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    mqtt_port: int = field(default_factory=free_port)
    """The MQTT broker's TCP port (``mqtt.port``), kept across restarts."""
    mqtt_ws_port: int = field(default_factory=free_port)
    """The MQTT over WebSocket port (``mqtt.webSocketPort``), kept across restarts."""
    own_group: bool = False
    """Start it in a process group of its own, which a test may signal whole (``killpg``)."""

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def mqtt_env(self) -> dict[str, str]:
        """The variables giving the broker this server's ports (so servers never share 1883)."""
        return {
            "KILN_MQTT_PORT": str(self.mqtt_port),
            "KILN_MQTT_WEBSOCKETPORT": str(self.mqtt_ws_port),
        }

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until ``/_health`` answers.

        The :data:`ADMIN_AUTH` super user is created unless ``env`` says otherwise.
        """
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kiln",
                    "run",
                    str(self.app_dir),
                    "--port",
                    str(self.port),
                    "--data",
                    str(self.data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **ADMIN_ENV, **self.mqtt_env, **self.env},
                process_group=0 if self.own_group else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kiln exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/_health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"kiln did not answer within {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the process to end; returns its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """``kill -9``: no chance to flush or close anything."""
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


@pytest.fixture(scope="module")
def kiln_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KilnServer]:
    """One server per test module, on the module's ``SCHEMA``, ``CONFIG`` and ``RESOURCES``."""
    root = tmp_path_factory.mktemp("kiln")
    schema = getattr(request.module, "SCHEMA", DEFAULT_SCHEMA)
    config = getattr(request.module, "CONFIG", None)
    resources = getattr(request.module, "RESOURCES", None)
    app_dir = write_app(root / "app", schema, config, resources)
    server = KilnServer(app_dir, root / "data", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def http(kiln_server: KilnServer) -> Iterator[httpx.Client]:
    """An httpx client for the module's server, sending the test credentials."""
    with httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=10) as client:
        yield client
