"""Random and mutated packets thrown at a real broker: it never dies, and a client that
behaves keeps being served all along (bounded: a few hundred connections)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mqtt_clients import Paho

from conftest import ADMIN_AUTH, KilnServer
from kiln.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    Connect,
    Disconnect,
    Pingreq,
    Properties,
    Puback,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
    encode,
)

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
}
"""


def _session(level: int) -> list[bytes]:
    """A well-formed conversation at ``level``, packet by packet, for mutating."""
    user, password = ADMIN_AUTH
    properties = Properties(topic_alias=1) if level == MQTT_5 else Properties()
    packets = [
        Connect(
            protocol_level=level,
            client_id="fuzz",
            clean_start=False,
            keep_alive=30,
            username=user,
            password=password.encode(),
            will=Will(topic="Dog/will", payload=b'"bye"', qos=1),
        ),
        Subscribe(packet_id=1, subscriptions=(Subscription(topic_filter="Dog/#", qos=1),)),
        Publish(topic="Dog/f1", payload=b'{"name":"x"}', qos=1, retain=True, packet_id=2),
        Publish(topic="Dog/f2", payload=b'"m"', properties=properties),
        Puback(packet_id=1),
        Unsubscribe(packet_id=3, topic_filters=("Dog/#",)),
        Pingreq(),
        Disconnect(),
    ]
    return [encode(packet, level) for packet in packets]


VALID = {MQTT_3_1_1: _session(MQTT_3_1_1), MQTT_5: _session(MQTT_5)}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid conversation with some of its bytes changed, cut, repeated or inserted."""
    packets = list(VALID[draw(st.sampled_from([MQTT_3_1_1, MQTT_5]))])
    packets = packets[: draw(st.integers(1, len(packets)))]
    data = bytearray(b"".join(packets))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        if action == "flip":
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position : position + draw(st.integers(1, 8))]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += data[position : position + draw(st.integers(1, 16))]
        if not data:
            data = bytearray(b"\x10")
    return bytes(data)


streams = st.one_of(
    st.binary(max_size=64),  # noise before any CONNECT
    st.builds(lambda tail: VALID[MQTT_5][0] + tail, st.binary(max_size=64)),  # noise after one
    mutated(),
)


@pytest.fixture(scope="module")
def witness(kiln_server: KilnServer) -> Iterator[Paho]:
    """A well-behaved subscriber, connected before the fuzzing starts."""
    with Paho(kiln_server.mqtt_port).connect() as client:
        assert client.subscribe("Dog/witness") == [0]
        yield client


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=streams)
def test_the_broker_survives_garbage(kiln_server: KilnServer, witness: Paho, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", kiln_server.mqtt_port), timeout=2) as sock:
        try:
            sock.sendall(data)
            sock.settimeout(0.02)
            while sock.recv(4096):  # read what it answers, until it closes or goes quiet
                pass
        except (TimeoutError, ConnectionError):
            pass
    assert kiln_server.process is not None and kiln_server.process.poll() is None


def test_the_witness_was_served_throughout(kiln_server: KilnServer, witness: Paho) -> None:
    """Runs after the fuzzing: the broker and its first client still work."""
    assert witness.publish("Dog/witness", b'"still here"', qos=1) == 0
    assert witness.next().payload == b'"still here"'
    with httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=5) as client:
        assert client.get("/_health").status_code == 200
    with Paho(kiln_server.mqtt_port).connect() as late:
        assert late.subscribe("Dog/#") == [0]
    assert "Traceback" not in kiln_server.log()
