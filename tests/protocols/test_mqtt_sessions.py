"""MQTT sessions against a real ``kiln run`` server: clean and persistent sessions, what a
persistent one keeps across a reconnect and a server restart, and session expiry.

The server is restarted by some tests (same ports, same data), so each test makes its own
client ids and records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from mqtt_clients import Paho, Raw, client_id

from conftest import ADMIN_AUTH, KilnServer
from kiln.mqtt import MQTT_3_1_1, Properties, Puback, Subscribe, Subscription, Will

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
  age: Int
}
"""


@pytest.fixture()
def server(kiln_server: KilnServer) -> Iterator[KilnServer]:
    """The module's server, running (a test may have restarted it)."""
    if kiln_server.process is None or kiln_server.process.poll() is not None:
        kiln_server.start()
    yield kiln_server


def restart(server: KilnServer) -> None:
    """Stop the server (SIGTERM: sessions are written) and start it again on its ports."""
    assert server.stop() == 0, server.log()
    server.start()


def put(server: KilnServer, path: str, record: dict[str, object]) -> None:
    with httpx.Client(base_url=server.url, auth=ADMIN_AUTH, timeout=10) as client:
        assert client.put(path, json=record).status_code == 204


def test_a_clean_session_forgets(server: KilnServer) -> None:
    name, dog = client_id(), client_id("dog")
    with Paho(server.mqtt_port, version=4, name=name).connect() as client:
        client.subscribe(f"Dog/{dog}")
    with Paho(server.mqtt_port, version=4, name=name).connect() as client:
        assert client.connack is not None and client.connack[1] is False
        put(server, f"/Dog/{dog}", {"name": "unheard"})
        assert client.quiet()


@pytest.mark.parametrize("version", [4, 5])
def test_a_persistent_session_gets_what_changed_while_away(
    server: KilnServer, version: int
) -> None:
    name, dog = client_id(), client_id("dog")
    put(server, f"/Dog/{dog}", {"name": "before", "age": 0})
    with Paho(server.mqtt_port, version=version, name=name, clean=False).connect(
        expiry=300
    ) as client:
        assert client.subscribe(f"Dog/{dog}", qos=1) == [1]
        assert json.loads(client.next().payload)["name"] == "before"
    put(server, f"/Dog/{dog}", {"name": "away", "age": 1})
    put(server, f"/Dog/{dog}", {"name": "away", "age": 2})
    with Paho(server.mqtt_port, version=version, name=name, clean=False).connect(
        expiry=300
    ) as client:
        assert client.connack is not None and client.connack[1] is True  # session present
        ages = [json.loads(message.payload)["age"] for message in client.take(2)]
        assert ages == [1, 2]  # replayed in order, without subscribing again
        put(server, f"/Dog/{dog}", {"name": "back", "age": 3})
        assert json.loads(client.next().payload)["age"] == 3


def test_a_persistent_session_survives_a_server_restart(server: KilnServer) -> None:
    name, dog = client_id(), client_id("dog")
    with Paho(server.mqtt_port, version=4, name=name, clean=False).connect() as client:
        assert client.subscribe(f"Dog/{dog}/#", qos=1) == [1]
    restart(server)
    put(server, f"/Dog/{dog}/a", {"name": "after the restart"})
    with Paho(server.mqtt_port, version=4, name=name, clean=False).connect() as client:
        assert client.connack is not None and client.connack[1] is True
        message = client.next()
        assert (message.topic, message.qos) == (f"Dog/{dog}/a", 1)
        assert json.loads(message.payload)["name"] == "after the restart"


def test_unacknowledged_messages_survive_a_restart(server: KilnServer) -> None:
    name, dog = client_id(), client_id("dog")
    with Raw(server.mqtt_port, MQTT_3_1_1) as raw:
        raw.connect(name, clean=False)
        subscription = Subscription(topic_filter=f"Dog/{dog}", qos=1)
        raw.send(Subscribe(packet_id=1, subscriptions=(subscription,)))
        assert raw.receive().reason_codes == (1,)  # type: ignore[union-attr]
        put(server, f"/Dog/{dog}", {"name": "unacked"})
        [sent] = raw.publishes(1)  # never acknowledged
    restart(server)
    with Raw(server.mqtt_port, MQTT_3_1_1) as raw:
        assert raw.connect(name, clean=False).session_present
        [again] = raw.publishes(1)
        assert (again.packet_id, again.dup, again.payload) == (sent.packet_id, True, sent.payload)
        raw.send(Puback(packet_id=again.packet_id or 0))
        with pytest.raises(TimeoutError):
            raw.receive(0.5)  # acknowledged: not sent a third time, nothing else pending


def test_an_expired_session_is_gone(server: KilnServer) -> None:
    name = client_id()
    with Raw(server.mqtt_port) as raw:
        connack = raw.connect(name, clean=False, properties=Properties(session_expiry_interval=1))
        assert connack.session_present is False
        raw.send(Subscribe(packet_id=1, subscriptions=(Subscription(topic_filter="Dog/#"),)))
        raw.receive()
    time.sleep(1.5)
    with Raw(server.mqtt_port) as raw:
        assert raw.connect(name, clean=False).session_present is False


def test_a_will_delay_is_cancelled_by_a_reconnect(server: KilnServer) -> None:
    name, dog = client_id(), client_id("dog")
    with Paho(server.mqtt_port).connect() as listener:
        listener.subscribe(f"Dog/{dog}")
        delayed = Will(
            topic=f"Dog/{dog}", payload=b'"late"', properties=Properties(will_delay_interval=1)
        )
        expiry = Properties(session_expiry_interval=60)
        with Raw(server.mqtt_port) as raw:
            raw.connect(name, clean=False, will=delayed, properties=expiry)
        with Raw(server.mqtt_port) as raw:  # back within the delay: no will
            assert raw.connect(name, clean=False, properties=expiry).session_present
            assert listener.quiet(1.5)
        with Raw(server.mqtt_port) as raw:
            raw.connect(name, clean=False, will=delayed, properties=expiry)
        assert listener.next(3).payload == b'"late"'  # not back: the will, a second later


def test_a_full_window_loses_nothing_when_the_client_leaves(server: KilnServer) -> None:
    """With receive maximum 1 and no acknowledgement, later changes wait for room; when the
    client leaves then, the session still replays them on its return (the cursor moves only
    past what was sent or kept)."""
    name, dog = client_id(), client_id("dog")
    window = Properties(receive_maximum=1, session_expiry_interval=300)
    with Raw(server.mqtt_port) as raw:
        raw.connect(name, clean=False, properties=window)
        subscription = Subscription(topic_filter=f"Dog/{dog}", qos=1)
        raw.send(Subscribe(packet_id=1, subscriptions=(subscription,)))
        raw.receive()  # SUBACK
        for age in (1, 2, 3):
            put(server, f"/Dog/{dog}", {"name": "waiting", "age": age})
        [first] = raw.publishes(1)  # the window holds one: the rest wait, unsent
        assert json.loads(first.payload)["age"] == 1
    time.sleep(0.3)  # the broker sees the client gone
    with Raw(server.mqtt_port) as raw:
        connack = raw.connect(name, clean=False, properties=Properties(session_expiry_interval=300))
        assert connack.session_present
        ages = [json.loads(packet.payload)["age"] for packet in raw.publishes(3)]
    assert ages == [1, 2, 3]  # the unacknowledged one again, then the two that waited
