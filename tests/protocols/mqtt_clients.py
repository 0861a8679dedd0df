"""MQTT clients for the broker tests: paho-mqtt (what users use) and a raw socket client built
on kiln's own codec (for exact bytes, reason codes and misbehaviour)."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions

from conftest import ADMIN_AUTH
from kiln.mqtt import (
    MAX_PACKET_SIZE,
    MQTT_5,
    NO_PROPERTIES,
    Connack,
    Connect,
    Packet,
    PacketReader,
    Properties,
    Publish,
    Will,
    encode,
)

WAIT = 5.0
"""Seconds a test waits for something the broker should send."""


def client_id(prefix: str = "t") -> str:
    """A client id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Paho:
    """A paho-mqtt client on its own network thread, with blocking helpers.

    Args:
        port: the broker's port.
        version: 5 or 4 (3.1.1).
        name: the client id (a fresh one by default).
        clean: clean session (3.1.1) or clean start (5.0).
        transport: ``tcp`` or ``websockets``.
        auth: user name and password, or None to send none.
    """

    def __init__(
        self,
        port: int,
        *,
        version: int = 5,
        name: str | None = None,
        clean: bool = True,
        transport: str = "tcp",
        auth: tuple[str, str] | None = ADMIN_AUTH,
    ):
        self.version = version
        self.port = port
        self.name = name or client_id()
        self.clean = clean
        protocol = paho.MQTTv5 if version == 5 else paho.MQTTv311
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.name,
            protocol=protocol,
            transport=transport,  # type: ignore[arg-type]
            clean_session=None if version == 5 else clean,
        )
        if auth is not None:
            self.client.username_pw_set(*auth)
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connack: tuple[int, bool, Any] | None = None
        self.disconnected: int | None = None
        self._connected = threading.Event()
        self._gone = threading.Event()
        self._subacks: dict[int, list[int]] = {}
        self._pubacks: dict[int, int] = {}
        self._acked = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: Any, _u: Any, flags: Any, code: Any, properties: Any) -> None:
        self.connack = (code.value, flags.session_present, properties)
        self._connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        with self._acked:
            self._subacks[mid] = [code.value for code in codes]
            self._acked.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, code: Any, _p: Any) -> None:
        with self._acked:
            self._pubacks[mid] = code.value
            self._acked.notify_all()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, code: Any, _p: Any) -> None:
        self.disconnected = code.value
        self._gone.set()

    def connect(
        self, *, keepalive: int = 60, expiry: int | None = None, will: dict[str, Any] | None = None
    ) -> Paho:
        """Connect and wait for the CONNACK; ``self.connack`` holds (code, session present)."""
        properties = None
        if self.version == 5 and expiry is not None:
            properties = PahoProperties(paho.PacketTypes.CONNECT)
            properties.SessionExpiryInterval = expiry
        if will is not None:
            self.client.will_set(**will)
        self.client.connect(
            "127.0.0.1",
            self.port,
            keepalive=keepalive,
            clean_start=self.clean if self.version == 5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self.client.loop_start()
        if not self._connected.wait(WAIT):
            raise TimeoutError("no CONNACK")
        return self

    def subscribe(self, topic: str, qos: int = 0, **options: Any) -> list[int]:
        """Subscribe and wait for the SUBACK: its reason codes (granted QoS, or failures)."""
        if self.version == 5:
            _, mid = self.client.subscribe(topic, options=SubscribeOptions(qos=qos, **options))
        else:
            _, mid = self.client.subscribe(topic, qos)
        return self._wait(self._subacks, mid)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 0,
        retain: bool = False,
        content_type: str | None = None,
    ) -> int | None:
        """Publish; for QoS 1, wait for the PUBACK and return its reason code."""
        properties = None
        if content_type is not None:
            properties = PahoProperties(paho.PacketTypes.PUBLISH)
            properties.ContentType = content_type
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos == 0:
            info.wait_for_publish(WAIT)
            return None
        return self._wait(self._pubacks, info.mid)

    def _wait(self, acks: dict[int, Any], mid: int) -> Any:
        with self._acked:
            if not self._acked.wait_for(lambda: mid in acks, WAIT):
                raise TimeoutError(f"no acknowledgement of message {mid}")
            return acks.pop(mid)

    def next(self, timeout: float = WAIT) -> paho.MQTTMessage:
        """The next message received."""
        return self.messages.get(timeout=timeout)

    def take(self, count: int) -> list[paho.MQTTMessage]:
        """The next ``count`` messages."""
        return [self.next() for _ in range(count)]

    def quiet(self, seconds: float = 0.3) -> bool:
        """Whether nothing arrives for ``seconds``."""
        try:
            message = self.messages.get(timeout=seconds)
        except queue.Empty:
            return True
        self.messages.put(message)
        return False

    def wait_gone(self, timeout: float = WAIT) -> int | None:
        """Wait until the broker ends the connection; the DISCONNECT reason code."""
        if not self._gone.wait(timeout):
            raise TimeoutError("still connected")
        return self.disconnected

    def close(self) -> None:
        """DISCONNECT (normally: no will) and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Paho:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Raw:
    """A socket speaking MQTT through kiln's codec: exact packets in, exact packets out.

    Args:
        port: the broker's port.
        level: 5 or 4 (3.1.1).
    """

    def __init__(self, port: int, level: int = MQTT_5):
        self.level = level
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.reader = PacketReader(max_packet_size=MAX_PACKET_SIZE, protocol_level=level)

    def connect(
        self,
        name: str | None = None,
        *,
        auth: tuple[str, str] | None = ADMIN_AUTH,
        clean: bool = True,
        keep_alive: int = 0,
        will: Will | None = None,
        properties: Properties = NO_PROPERTIES,
    ) -> Connack:
        """Send a CONNECT and return the CONNACK."""
        self.send(
            Connect(
                protocol_level=self.level,
                client_id=client_id() if name is None else name,
                clean_start=clean,
                keep_alive=keep_alive,
                username=None if auth is None else auth[0],
                password=None if auth is None else auth[1].encode(),
                will=will,
                properties=properties,
            )
        )
        connack = self.receive()
        assert isinstance(connack, Connack), connack
        return connack

    def send(self, packet: Packet) -> None:
        """Encode and send one packet."""
        self.sock.sendall(encode(packet, self.level))

    def send_bytes(self, data: bytes) -> None:
        """Send raw bytes."""
        self.sock.sendall(data)

    def receive(self, timeout: float = WAIT) -> Packet:
        """The next packet from the broker.

        Raises:
            TimeoutError: none within ``timeout``.
            EOFError: the broker closed the connection.
        """
        deadline = time.monotonic() + timeout
        while True:
            packet = self.reader.next_packet()
            if packet is not None:
                return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet from the broker")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no packet from the broker") from None
            except ConnectionResetError:
                data = b""
            if not data:
                raise EOFError("the broker closed the connection")
            self.reader.feed(data)

    def publishes(self, count: int) -> list[Publish]:
        """The next ``count`` PUBLISH packets (other packets are skipped)."""
        found: list[Publish] = []
        while len(found) < count:
            packet = self.receive()
            if isinstance(packet, Publish):
                found.append(packet)
        return found

    def closed_by_broker(self, timeout: float = WAIT) -> list[Packet]:
        """The packets sent before the broker closed the connection (waits for the close)."""
        packets: list[Packet] = []
        while True:
            try:
                packets.append(self.receive(timeout))
            except EOFError:
                return packets

    def close(self) -> None:
        """Close the socket (no DISCONNECT: to the broker, the client went away)."""
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
