"""The MQTT broker against a real ``kiln run`` server, with paho-mqtt, mosquitto's clients
and a raw socket: topics as records, retain semantics, payload formats, wildcards, QoS 1,
MQTT 5 features, refusals, Last Will, and MQTT meeting REST, SSE and WebSocket.

One server serves the module; every test uses its own record ids.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from typing import Any

import cbor2
import httpx
import msgpack
import paho.mqtt.client as paho
import pytest
from mqtt_clients import WAIT, Paho, Raw, client_id
from paho.mqtt.enums import CallbackAPIVersion
from realtime_clients import sse
from websockets.sync.client import connect as ws_connect

from conftest import ADMIN_AUTH, KilnServer, ws_event
from kiln.mqtt import (
    MAX_PACKET_SIZE,
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Will,
    encode,
)

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
  age: Int
}

type Counter @table @export {
  id: Int @primaryKey
  count: Int
}
"""

RESOURCES = '''
from kiln import Resource, tables


class Room(Resource):
    """A plain resource: a message channel with nothing stored."""


class Secret(tables.Dog):
    """Nobody may subscribe or publish."""

    def allow_subscribe(self, target):
        return False

    def allow_publish(self, target):
        return False
'''

_ids = iter(range(1, 1_000_000))


def new_id(prefix: str = "d") -> str:
    """A record id no other test uses."""
    return f"{prefix}{next(_ids)}x{time.monotonic_ns() % 100000}"


@pytest.fixture()
def v5(kiln_server: KilnServer) -> Any:
    """A connected MQTT 5 paho client."""
    with Paho(kiln_server.mqtt_port).connect() as client:
        yield client


@pytest.fixture()
def v3(kiln_server: KilnServer) -> Any:
    """A connected MQTT 3.1.1 paho client."""
    with Paho(kiln_server.mqtt_port, version=4).connect() as client:
        yield client


def body(message: Any) -> Any:
    """A message's JSON payload, decoded."""
    return json.loads(message.payload)


# --------------------------------------------------------------------------- topics and records


def test_a_retained_publish_is_a_put(v3: Paho, http: httpx.Client) -> None:
    dog = new_id()
    v3.publish(f"Dog/{dog}", json.dumps({"name": "Rex", "age": 3}), qos=1, retain=True)
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Rex", "age": 3}
    v3.publish(f"Dog/{dog}", json.dumps({"name": "Rex"}), qos=1, retain=True)  # replaces
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Rex"}


def test_a_retained_empty_payload_is_a_delete(v5: Paho, http: httpx.Client) -> None:
    dog = new_id()
    assert http.put(f"/Dog/{dog}", json={"name": "Gone soon"}).status_code == 204
    assert v5.publish(f"Dog/{dog}", b"", qos=1, retain=True) == ReasonCode.SUCCESS
    assert http.get(f"/Dog/{dog}").status_code == 404
    assert v5.publish(f"Dog/{dog}", b"", qos=1, retain=True) == ReasonCode.SUCCESS  # gone already


def test_subscribe_gets_the_record_then_every_change(v5: Paho, http: httpx.Client) -> None:
    dog = new_id()
    assert http.put(f"/Dog/{dog}", json={"name": "Ws", "age": 1}).status_code == 204
    assert v5.subscribe(f"Dog/{dog}", qos=1) == [1]
    current = v5.next()
    assert (current.topic, current.retain, body(current)) == (
        f"Dog/{dog}",
        True,
        {"id": dog, "name": "Ws", "age": 1},
    )
    assert current.properties.ContentType == "application/json"
    assert http.put(f"/Dog/{dog}", json={"name": "Ws", "age": 2}).status_code == 204
    assert http.patch(f"/Dog/{dog}", json={"age": 3}).status_code == 204
    assert http.delete(f"/Dog/{dog}").status_code == 204
    replaced, patched, deleted = v5.take(3)
    assert body(replaced) == {"id": dog, "name": "Ws", "age": 2}
    assert body(patched) == {"id": dog, "name": "Ws", "age": 3}  # the whole record
    assert deleted.payload == b""
    assert not (replaced.retain or patched.retain or deleted.retain)  # live: retain 0
    assert {message.qos for message in (current, replaced, patched, deleted)} == {1}


def test_retain_as_published_marks_live_changes_retained(v5: Paho, http: httpx.Client) -> None:
    dog = new_id()
    v5.subscribe(f"Dog/{dog}", retainAsPublished=True)
    assert http.put(f"/Dog/{dog}", json={"name": "Kept"}).status_code == 204
    assert http.delete(f"/Dog/{dog}").status_code == 204
    put, deleted = v5.take(2)
    assert (put.retain, deleted.retain, deleted.payload) == (True, True, b"")


def test_a_missing_record_sends_nothing_until_it_exists(v3: Paho, http: httpx.Client) -> None:
    dog = new_id()
    assert v3.subscribe(f"Dog/{dog}") == [0]
    assert v3.quiet()
    assert http.put(f"/Dog/{dog}", json={"name": "Late"}).status_code == 204
    assert body(v3.next()) == {"id": dog, "name": "Late"}


def test_wildcards(v5: Paho, http: httpx.Client) -> None:
    prefix = new_id("w")
    flat, nested, other = f"{prefix}a", f"{prefix}/b", f"{prefix}/b/c"
    for dog in (flat, nested, other):
        assert http.put(f"/Dog/{dog}", json={"name": dog}).status_code == 204
    with (
        Paho(v5.port).connect() as everything,
        Paho(v5.port).connect() as one_level,
        Paho(v5.port).connect() as under,
    ):
        everything.subscribe("Dog/#")
        one_level.subscribe(f"Dog/{prefix}/+")
        under.subscribe(f"Dog/{prefix}/#")
        seen = set()
        while not everything.quiet(0.5):
            message = everything.next()
            assert message.retain
            seen.add(message.topic)
        assert {f"Dog/{flat}", f"Dog/{nested}", f"Dog/{other}"} <= seen
        assert [m.topic for m in one_level.take(1)] == [f"Dog/{nested}"]
        assert sorted(m.topic for m in under.take(2)) == [f"Dog/{nested}", f"Dog/{other}"]
        assert one_level.quiet() and under.quiet()
        assert http.put(f"/Dog/{prefix}/z/z", json={"name": "deep"}).status_code == 204
        assert http.put(f"/Dog/{prefix}/y", json={"name": "shallow"}).status_code == 204
        assert under.take(2)[1].topic == f"Dog/{prefix}/y"
        assert one_level.next().topic == f"Dog/{prefix}/y"  # Dog/p/z/z has one level too many
        assert everything.next().topic == f"Dog/{prefix}/z/z"


def test_integer_keys_are_topic_levels(v5: Paho, http: httpx.Client) -> None:
    v5.subscribe("Counter/+")
    while not v5.quiet(0.3):
        v5.next()
    assert v5.publish("Counter/41", json.dumps({"count": 1}), qos=1, retain=True) == 0
    message = v5.next()
    assert (message.topic, body(message)) == ("Counter/41", {"id": 41, "count": 1})
    assert http.get("/Counter/41").json() == {"id": 41, "count": 1}
    assert v5.publish("Counter/abc", json.dumps({"count": 1}), qos=1, retain=True) == (
        ReasonCode.TOPIC_NAME_INVALID
    )


# --------------------------------------------------------------------------- messages


def test_a_plain_publish_is_a_message_relayed_byte_for_byte(
    v5: Paho, v3: Paho, http: httpx.Client
) -> None:
    dog = new_id()
    assert http.put(f"/Dog/{dog}", json={"name": "Quiet"}).status_code == 204
    v3.subscribe(f"Dog/{dog}", qos=1)
    assert body(v3.next())["name"] == "Quiet"
    raw = b'{ "say" :  "hello",\n "n": 1.50 }'  # spacing and number form a re-encoding would lose
    assert v5.publish(f"Dog/{dog}", raw, qos=1, content_type="application/json") == 0
    message = v3.next()
    assert (message.payload, message.retain, message.qos) == (raw, False, 1)
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Quiet"}  # unchanged
    v3.publish(f"Dog/{dog}", b"", qos=0)  # an empty message is null, not a delete
    assert v3.next().payload == b""
    assert http.get(f"/Dog/{dog}").status_code == 200


def test_message_properties_are_forwarded(v5: Paho) -> None:
    dog = new_id()
    with Paho(v5.port).connect() as listener:
        listener.subscribe(f"Dog/{dog}")
        properties = Properties(
            content_type="application/json",
            response_topic=f"Dog/{dog}-reply",
            correlation_data=b"\x01\x02",
            user_properties=(("a", "1"), ("a", "2")),
        )
        with Raw(v5.port) as raw:
            assert raw.connect().reason_code == 0
            raw.send(Publish(topic=f"Dog/{dog}", payload=b"[1]", properties=properties))
            message = listener.next()
    assert message.payload == b"[1]"
    assert message.properties.ContentType == "application/json"
    assert message.properties.ResponseTopic == f"Dog/{dog}-reply"
    assert message.properties.CorrelationData == b"\x01\x02"
    assert message.properties.UserProperty == [("a", "1"), ("a", "2")]


def test_no_local_skips_my_own_messages(v5: Paho) -> None:
    dog = new_id()
    v5.subscribe(f"Dog/{dog}", noLocal=True)
    v5.publish(f"Dog/{dog}", b'"mine"', qos=1)
    with Paho(v5.port).connect() as other:
        other.publish(f"Dog/{dog}", b'"theirs"', qos=1)
    assert v5.next().payload == b'"theirs"'
    assert v5.quiet()


def test_plain_resources_are_message_channels(v5: Paho, v3: Paho) -> None:
    room = new_id("room")
    assert v3.subscribe("Room/#") == [0]
    v5.publish(f"Room/{room}", b'{"text":"hi"}', qos=1)
    message = v3.next()
    assert (message.topic, message.payload) == (f"Room/{room}", b'{"text":"hi"}')
    assert v5.publish(f"Room/{room}", b"{}", qos=1, retain=True) == (
        ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR  # a Room stores nothing: no put
    )


# --------------------------------------------------------------------------- payloads


@pytest.mark.parametrize(
    ("content_type", "encode"),
    [
        ("application/cbor", cbor2.dumps),
        ("application/x-msgpack", msgpack.packb),
        ("application/msgpack", msgpack.packb),
        ("application/json; charset=utf-8", lambda value: json.dumps(value).encode()),
    ],
)
def test_the_content_type_chooses_the_format(
    v5: Paho, http: httpx.Client, content_type: str, encode: Any
) -> None:
    dog = new_id()
    payload = encode({"name": "Fmt", "age": 5})
    assert v5.publish(f"Dog/{dog}", payload, qos=1, retain=True, content_type=content_type) == 0
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Fmt", "age": 5}


def test_a_payload_that_does_not_decode_or_validate_stores_nothing(
    kiln_server: KilnServer, v5: Paho, v3: Paho, http: httpx.Client
) -> None:
    dog = new_id()
    for payload, content_type in [
        (b"{not json", None),
        (b'{"age": "old"}', None),  # valid JSON, wrong type
        (b"[1, 2]", None),  # not an object
        (b"\xff", "application/cbor"),
        (b"{}", "text/csv"),
    ]:
        code = v5.publish(f"Dog/{dog}", payload, qos=1, retain=True, content_type=content_type)
        assert code == ReasonCode.PAYLOAD_FORMAT_INVALID, payload
    v3.publish(f"Dog/{dog}", b"{not json", qos=1, retain=True)  # 3.1.1: acknowledged, dropped
    assert http.get(f"/Dog/{dog}").status_code == 404
    assert "dropped a PUBLISH" in kiln_server.log()
    v3.publish(f"Dog/{dog}", b'{"name": "fine"}', qos=1, retain=True)  # the connection lives
    assert http.get(f"/Dog/{dog}").json()["name"] == "fine"


# --------------------------------------------------------------------------- refusals


def test_unknown_topics_are_refused(kiln_server: KilnServer, v5: Paho, v3: Paho) -> None:
    assert v5.subscribe("Cat/1") == [ReasonCode.TOPIC_FILTER_INVALID]
    assert v5.subscribe("Dog") == [ReasonCode.TOPIC_FILTER_INVALID]
    assert v5.publish("Cat/1", b"{}", qos=1) == ReasonCode.TOPIC_NAME_INVALID
    assert v5.publish("Dog", b"{}", qos=1) == ReasonCode.TOPIC_NAME_INVALID
    assert v5.subscribe("$share/group/Dog/#") == [ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED]
    assert v3.subscribe("Cat/#") == [0x80]


def test_permission_hooks_are_asked(v5: Paho) -> None:
    assert v5.subscribe(f"Secret/{new_id()}") == [ReasonCode.NOT_AUTHORIZED]
    assert v5.publish(f"Secret/{new_id()}", b"{}", qos=1) == ReasonCode.NOT_AUTHORIZED
    # asked before the payload is decoded: a refused client costs nothing of what it sends
    assert v5.publish(f"Secret/{new_id()}", b"\xff not JSON", qos=1) == ReasonCode.NOT_AUTHORIZED


def test_a_wildcard_first_level_skips_what_it_may_not_read(v5: Paho, http: httpx.Client) -> None:
    dog = new_id()
    assert v5.subscribe(f"+/{dog}") == [0]  # every route's record <dog>, Secret left out
    assert http.put(f"/Dog/{dog}", json={"name": "Any"}).status_code == 204
    assert v5.next().topic == f"Dog/{dog}"


@pytest.mark.parametrize(
    ("level", "auth", "code"),
    [
        (MQTT_3_1_1, ("admin", "wrong"), 4),  # 3.1.1: bad user name or password
        (MQTT_3_1_1, None, 5),  # 3.1.1: not authorized
        (MQTT_5, ("admin", "wrong"), 134),
        (MQTT_5, ("nobody", "x"), 134),
        (MQTT_5, None, 135),
    ],
)
def test_refused_connects_answer_the_standard_codes(
    kiln_server: KilnServer, level: int, auth: tuple[str, str] | None, code: int
) -> None:
    with Raw(kiln_server.mqtt_port, level) as raw:
        connack = raw.connect(auth=auth)
        assert connack.session_present is False
        raw_code = connack.reason_code
        if level == MQTT_3_1_1:  # the reader maps 3.1.1 return codes to MQTT 5 codes
            raw_code = {134: 4, 135: 5}[raw_code]
        assert raw_code == code
        assert raw.closed_by_broker() == []


# --------------------------------------------------------------------------- MQTT 5 features


def test_topic_aliases(kiln_server: KilnServer, http: httpx.Client) -> None:
    dog = new_id()
    with Raw(kiln_server.mqtt_port) as raw:
        connack = raw.connect()
        assert connack.properties.topic_alias_maximum
        assert connack.properties.maximum_qos == 1
        assert connack.properties.receive_maximum
        assert connack.properties.maximum_packet_size == 1 << 20
        aliased = Properties(topic_alias=3)
        raw.send(
            Publish(
                topic=f"Dog/{dog}",
                payload=b'{"name":"a"}',
                retain=True,
                qos=1,
                packet_id=1,
                properties=aliased,
            )
        )
        raw.send(
            Publish(
                topic="",
                payload=b'{"name":"b"}',
                retain=True,
                qos=1,
                packet_id=2,
                properties=aliased,
            )
        )
        assert [raw.receive().reason_code, raw.receive().reason_code] == [0, 0]
        assert http.get(f"/Dog/{dog}").json()["name"] == "b"
        raw.send(Publish(topic="", payload=b"{}", properties=Properties(topic_alias=9)))
        [disconnect] = raw.closed_by_broker()
    assert isinstance(disconnect, Disconnect)
    assert disconnect.reason_code == ReasonCode.PROTOCOL_ERROR


def test_subscription_identifiers_and_retain_handling(
    kiln_server: KilnServer, http: httpx.Client
) -> None:
    dog = new_id()
    assert http.put(f"/Dog/{dog}", json={"name": "Id"}).status_code == 204
    with Raw(kiln_server.mqtt_port) as raw:
        raw.connect()
        topic_filter = f"Dog/{dog}"
        raw.send(
            Subscribe(
                packet_id=1,
                subscriptions=(Subscription(topic_filter=topic_filter),),
                properties=Properties(subscription_identifiers=(7,)),
            )
        )
        assert isinstance(raw.receive(), Suback)
        [current] = raw.publishes(1)
        assert current.properties.subscription_identifiers == (7,)
        assert current.retain
        # retain handling 1: no retained message when the subscription exists already
        again = Subscription(topic_filter=topic_filter, retain_handling=1)
        raw.send(Subscribe(packet_id=2, subscriptions=(again,)))
        assert isinstance(raw.receive(), Suback)
        with pytest.raises(TimeoutError):
            raw.receive(0.3)
        # retain handling 2: never
        raw.send(
            Subscribe(
                packet_id=3,
                subscriptions=(Subscription(topic_filter=f"Dog/{new_id()}/#", retain_handling=2),),
            )
        )
        assert isinstance(raw.receive(), Suback)


def test_qos_1_messages_wait_for_their_acknowledgement(
    kiln_server: KilnServer, http: httpx.Client
) -> None:
    dog = new_id()
    with Raw(kiln_server.mqtt_port) as raw:
        raw.connect(properties=Properties(receive_maximum=2))
        raw.send(
            Subscribe(packet_id=1, subscriptions=(Subscription(topic_filter=f"Dog/{dog}", qos=1),))
        )
        assert raw.receive().reason_codes == (1,)
        for n in range(4):
            assert http.put(f"/Dog/{dog}", json={"age": n}).status_code == 204
        first, second = raw.publishes(2)
        with pytest.raises(TimeoutError):  # receive maximum 2: the third waits
            raw.receive(0.4)
        raw.send(Puback(packet_id=first.packet_id or 0))
        [third] = raw.publishes(1)
        assert [json.loads(p.payload)["age"] for p in (first, second, third)] == [0, 1, 2]
        assert len({p.packet_id for p in (first, second, third)}) == 3


def test_qos_2_gets_the_handshake_in_3_1_1_and_a_refusal_in_5(
    kiln_server: KilnServer, v5: Paho
) -> None:
    dog = new_id()
    assert v5.subscribe(f"Dog/{dog}", qos=2) == [1]  # granted 1
    with Raw(kiln_server.mqtt_port, MQTT_3_1_1) as raw:
        raw.connect()
        message = Publish(topic=f"Dog/{dog}", payload=b'"two"', qos=2, packet_id=5)
        raw.send(message)
        assert raw.receive() == Pubrec(packet_id=5)
        raw.send(Publish(topic=f"Dog/{dog}", payload=b'"two"', qos=2, packet_id=5, dup=True))
        assert raw.receive() == Pubrec(packet_id=5)  # a resend: not published again
        raw.send(Pubrel(packet_id=5))
        assert raw.receive() == Pubcomp(packet_id=5)
    assert v5.next().payload == b'"two"'
    assert v5.quiet()
    with Raw(kiln_server.mqtt_port) as raw:
        raw.connect()
        raw.send(Publish(topic=f"Dog/{dog}", payload=b"2", qos=2, packet_id=1))
        [disconnect] = raw.closed_by_broker()
    assert isinstance(disconnect, Disconnect)
    assert disconnect.reason_code == ReasonCode.QOS_NOT_SUPPORTED


# --------------------------------------------------------------------------- before the CONNACK


def connect_and(level: int, *packets: Packet, will: Will | None = None) -> bytes:
    """A CONNECT (the admin's, no keep-alive) and ``packets`` right after it, as one write:
    MQTT spec 3.1.4 lets a client send them without waiting for the CONNACK."""
    connect = Connect(
        protocol_level=level,
        client_id=client_id(),
        username=ADMIN_AUTH[0],
        password=ADMIN_AUTH[1].encode(),
        will=will,
    )
    return b"".join(encode(packet, level) for packet in (connect, *packets))


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
def test_packets_sent_with_the_connect_are_handled_at_once(
    kiln_server: KilnServer, http: httpx.Client, level: int
) -> None:
    """They arrive in the CONNECT's read; they are handled then, not when more bytes come
    (with no keep-alive, none would)."""
    dog = new_id()
    record = Publish(
        topic=f"Dog/{dog}", payload=b'{"name": "Early"}', qos=1, retain=True, packet_id=1
    )
    subscribe = Subscribe(
        packet_id=2, subscriptions=(Subscription(topic_filter=f"Dog/{dog}", qos=1),)
    )
    with Raw(kiln_server.mqtt_port, level) as raw:
        raw.send_bytes(connect_and(level, record, subscribe))
        connack, puback, suback, current = (raw.receive() for _ in range(4))
    assert isinstance(connack, Connack) and connack.reason_code == ReasonCode.SUCCESS
    assert isinstance(puback, Puback) and (puback.packet_id, puback.reason_code) == (1, 0)
    assert isinstance(suback, Suback) and suback.reason_codes == (1,)
    assert isinstance(current, Publish) and current.retain
    assert json.loads(current.payload) == {"id": dog, "name": "Early"}
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Early"}


def test_a_fire_and_forget_client_is_heard_and_leaves_no_will(
    kiln_server: KilnServer, http: httpx.Client, v5: Paho
) -> None:
    """A small device's way: CONNECT, PUBLISH and DISCONNECT in one write, then close. The
    publish takes effect, and the DISCONNECT discards the will."""
    dog, watched = new_id(), new_id()
    v5.subscribe(f"Dog/{watched}")
    record = Publish(topic=f"Dog/{dog}", payload=b'{"name": "Sent and gone"}', retain=True)
    will = Will(topic=f"Dog/{watched}", payload=b'"not after a DISCONNECT"')
    with Raw(kiln_server.mqtt_port, MQTT_3_1_1) as raw:
        raw.send_bytes(connect_and(MQTT_3_1_1, record, Disconnect(), will=will))
    deadline = time.monotonic() + WAIT
    while http.get(f"/Dog/{dog}").status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Sent and gone"}
    assert v5.quiet(0.5)


def test_paho_publishing_before_its_connack_is_acknowledged_at_once(
    kiln_server: KilnServer, http: httpx.Client
) -> None:
    """paho-mqtt's connect() sends CONNECT and returns; a publish right after it is written
    before the network loop has read the CONNACK."""
    dog = new_id()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id())
    client.username_pw_set(*ADMIN_AUTH)
    client.connect("127.0.0.1", kiln_server.mqtt_port, keepalive=60)
    try:
        sent = client.publish(f"Dog/{dog}", b'{"name": "Eager"}', qos=1, retain=True)
        client.loop_start()
        sent.wait_for_publish(WAIT)  # the PUBACK; without it, waits out the 60 s keep-alive
        assert sent.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Eager"}


def test_packets_sent_with_the_connect_over_websocket(
    kiln_server: KilnServer, http: httpx.Client
) -> None:
    """The same in one WebSocket frame: CONNECT and a PUBLISH."""
    dog = new_id()
    record = Publish(
        topic=f"Dog/{dog}", payload=b'{"name": "Framed"}', qos=1, retain=True, packet_id=7
    )
    reader = PacketReader(max_packet_size=MAX_PACKET_SIZE, protocol_level=MQTT_5)
    packets: list[Packet] = []
    url = f"ws://127.0.0.1:{kiln_server.mqtt_ws_port}/mqtt"
    with ws_connect(url, subprotocols=["mqtt"], open_timeout=5) as websocket:
        websocket.send(connect_and(MQTT_5, record))
        while len(packets) < 2:
            reader.feed(websocket.recv(timeout=WAIT))
            packets.extend(iter(reader.next_packet, None))
    connack, puback = packets
    assert isinstance(connack, Connack) and connack.reason_code == ReasonCode.SUCCESS
    assert isinstance(puback, Puback) and (puback.packet_id, puback.reason_code) == (7, 0)
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Framed"}


# --------------------------------------------------------------------------- broken clients


def test_an_oversized_packet_is_refused_before_it_is_read(
    kiln_server: KilnServer, v5: Paho
) -> None:
    with Raw(kiln_server.mqtt_port) as raw:
        raw.connect()
        # a PUBLISH declaring 2 MiB: refused on its fixed header, the rest never sent
        raw.send_bytes(b"\x30\x80\x80\x80\x01")
        [disconnect] = raw.closed_by_broker()
    assert isinstance(disconnect, Disconnect)
    assert disconnect.reason_code == ReasonCode.PACKET_TOO_LARGE
    assert "exceeds the maximum packet size" in kiln_server.log()
    assert v5.subscribe(f"Dog/{new_id()}") == [0]  # others carry on


def test_a_malformed_packet_closes_only_its_connection(kiln_server: KilnServer, v5: Paho) -> None:
    dog = new_id()
    v5.subscribe(f"Dog/{dog}")
    with Raw(kiln_server.mqtt_port, MQTT_3_1_1) as raw:
        raw.connect()
        raw.send_bytes(b"\x82\x04\x00\x01\x00\x00")  # SUBSCRIBE without a filter
        assert raw.closed_by_broker() == []  # 3.1.1: closed without a word
    assert "SUBSCRIBE" in kiln_server.log()
    v5.publish(f"Dog/{dog}", b"1")
    assert v5.next().payload == b"1"


def test_a_connection_that_never_connects_is_refused(kiln_server: KilnServer) -> None:
    with Raw(kiln_server.mqtt_port) as raw:
        raw.send_bytes(b"\xc0\x00")  # PINGREQ before CONNECT
        assert raw.closed_by_broker() == []
    with Raw(kiln_server.mqtt_port, MQTT_3_1_1) as raw:  # level 3 (MQTT 3.1): unsupported
        raw.send_bytes(b"\x10\x0d\x00\x04MQTT\x03\x02\x00\x3c\x00\x01c")
        [connack] = raw.closed_by_broker()
    assert isinstance(connack, Connack)
    assert connack.reason_code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION


def test_last_will_on_a_dropped_socket(kiln_server: KilnServer, v5: Paho) -> None:
    dog = new_id()
    v5.subscribe(f"Dog/{dog}")
    with Raw(kiln_server.mqtt_port, MQTT_3_1_1) as raw:
        raw.connect(will=Will(topic=f"Dog/{dog}", payload=b'"gone"'))
    message = v5.next()
    assert (message.topic, message.payload) == (f"Dog/{dog}", b'"gone"')
    with Raw(kiln_server.mqtt_port, MQTT_3_1_1) as raw:  # a DISCONNECT discards the will
        raw.connect(will=Will(topic=f"Dog/{dog}", payload=b'"gone"'))
        raw.send(Disconnect())
    assert v5.quiet(0.5)


def test_a_retained_will_writes_the_record(kiln_server: KilnServer, http: httpx.Client) -> None:
    dog = new_id()
    will = Will(topic=f"Dog/{dog}", payload=b'{"name": "offline"}', retain=True, qos=1)
    with Raw(kiln_server.mqtt_port) as raw:
        raw.connect(will=will)
    deadline = time.monotonic() + WAIT
    while http.get(f"/Dog/{dog}").status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "offline"}


def test_keep_alive_expiry_ends_the_connection_with_its_will(
    kiln_server: KilnServer, v5: Paho
) -> None:
    dog = new_id()
    v5.subscribe(f"Dog/{dog}")
    with Raw(kiln_server.mqtt_port) as raw:
        raw.connect(keep_alive=1, will=Will(topic=f"Dog/{dog}", payload=b'"timeout"'))
        started = time.monotonic()
        [disconnect] = raw.closed_by_broker(timeout=4)
        assert 1.4 < time.monotonic() - started < 3.5
    assert disconnect.reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert v5.next().payload == b'"timeout"'


def test_a_second_connection_takes_the_session_over(kiln_server: KilnServer) -> None:
    name = client_id()
    with (
        Paho(kiln_server.mqtt_port, name=name).connect() as first,
        Paho(kiln_server.mqtt_port, name=name).connect() as second,
    ):
        assert first.wait_gone() == ReasonCode.SESSION_TAKEN_OVER
        assert second.connack is not None and second.connack[0] == 0


# --------------------------------------------------------------------------- across protocols


def test_mqtt_to_sse_and_websocket(kiln_server: KilnServer, v5: Paho, http: httpx.Client) -> None:
    dog = new_id()
    assert http.put(f"/Dog/{dog}", json={"name": "Rest"}).status_code == 204
    basic = httpx.BasicAuth(*ADMIN_AUTH)._auth_header
    with (
        httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=5) as client,
        sse(client, f"/Dog/{dog}") as stream,
        ws_connect(
            f"ws://127.0.0.1:{kiln_server.port}/Dog/{dog}",
            additional_headers={"Authorization": basic},
            open_timeout=5,
        ) as websocket,
    ):
        [rest] = stream.history()
        assert ws_event(websocket)["value"] == rest.data["value"]
        v5.publish(f"Dog/{dog}", json.dumps({"name": "Mq"}), qos=1, retain=True)
        v5.publish(f"Dog/{dog}", b'{"ping": true}', qos=1)
        put, message = stream.take(2)
        assert (put.type, put.data["value"]) == ("put", {"id": dog, "name": "Mq"})
        assert (message.type, message.data["value"]) == ("message", {"ping": True})
        frames = [ws_event(websocket) for _ in range(2)]
    assert [(f["type"], f["value"]) for f in frames] == [
        ("put", {"id": dog, "name": "Mq"}),
        ("message", {"ping": True}),
    ]


def test_websocket_messages_reach_mqtt(kiln_server: KilnServer, v3: Paho) -> None:
    dog = new_id()
    v3.subscribe(f"Dog/{dog}")
    basic = httpx.BasicAuth(*ADMIN_AUTH)._auth_header
    with ws_connect(
        f"ws://127.0.0.1:{kiln_server.port}/Dog/{dog}?omitCurrent",
        additional_headers={"Authorization": basic},
        open_timeout=5,
    ) as websocket:
        websocket.send(json.dumps({"from": "ws"}))
        assert json.loads(v3.next().payload) == {"from": "ws"}


# --------------------------------------------------------------------------- transports


def test_mqtt_over_websocket_negotiates_the_subprotocol(
    kiln_server: KilnServer, http: httpx.Client
) -> None:
    url = f"ws://127.0.0.1:{kiln_server.mqtt_ws_port}/mqtt"
    with ws_connect(url, subprotocols=["mqtt"], open_timeout=5) as websocket:
        assert websocket.subprotocol == "mqtt"
    with pytest.raises(Exception, match="400"):
        ws_connect(url, open_timeout=5)  # no subprotocol offered
    dog = new_id()
    with Paho(kiln_server.mqtt_ws_port, transport="websockets").connect() as client:
        assert client.connack is not None and client.connack[0] == 0
        assert client.subscribe(f"Dog/{dog}") == [0]
        assert client.publish(f"Dog/{dog}", b'{"name":"ws"}', qos=1, retain=True) == 0
        assert body(client.next()) == {"id": dog, "name": "ws"}
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "ws"}


def test_pages_of_other_origins_may_not_connect(kiln_server: KilnServer) -> None:
    with socket.create_connection(("127.0.0.1", kiln_server.mqtt_ws_port), timeout=5) as sock:
        sock.sendall(
            b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: mqtt\r\nOrigin: https://evil.example\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 403")


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto-clients missing")
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_clients(kiln_server: KilnServer, http: httpx.Client, version: str) -> None:
    dog = new_id()
    common = ["-p", str(kiln_server.mqtt_port), "-u", ADMIN_AUTH[0], "-P", ADMIN_AUTH[1]]
    common += ["-V", version]
    sub = subprocess.Popen(
        ["mosquitto_sub", *common, "-t", f"Dog/{dog}", "-C", "2", "-W", "10", "-v", "-q", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.3)  # let it subscribe
        for args in (["-r", "-m", '{"name": "Mos"}'], ["-m", '"hello"']):
            subprocess.run(
                ["mosquitto_pub", *common, "-t", f"Dog/{dog}", "-q", "1", *args],
                check=True,
                timeout=10,
            )
        output, _ = sub.communicate(timeout=10)
    finally:
        sub.kill()
    lines = output.splitlines()
    assert json.loads(lines[0].partition(" ")[2]) == {"id": dog, "name": "Mos"}
    assert lines[1] == f'Dog/{dog} "hello"'
    assert http.get(f"/Dog/{dog}").json() == {"id": dog, "name": "Mos"}
