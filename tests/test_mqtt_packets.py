"""The MQTT packet codec: round trips, byte vectors, bad input, topics, a real client, fuzz."""

from __future__ import annotations

import socket
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions

from kiln.errors import KilnError
from kiln.mqtt import (
    MAX_PACKET_SIZE,
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    Connack,
    ConnackReturnCode,
    Connect,
    Disconnect,
    MalformedPacket,
    Packet,
    PacketReader,
    Pingreq,
    Pingresp,
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
    Unsuback,
    Unsubscribe,
    Will,
    encode,
    shared_subscription,
    topic_matches,
    valid_topic_filter,
)
from kiln.mqtt.properties import encode_properties, encode_utf8, encode_vbi, read_vbi

# --- helpers -------------------------------------------------------------------------------


def string(text: str) -> bytes:
    """A UTF-8 string field, built by hand."""
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def frame(first: int, body: bytes) -> bytes:
    """A packet with a one-byte remaining length, built by hand."""
    assert len(body) < 128
    return bytes([first, len(body)]) + body


def connect(
    level: int = 5, flags: int = 0x02, props: bytes = b"\x00", payload: bytes = b""
) -> bytes:
    """A CONNECT packet; the payload defaults to the client id "c"."""
    header = string("MQTT") + bytes([level, flags]) + b"\x00\x3c"
    return frame(0x10, header + (props if level == 5 else b"") + (payload or string("c")))


def decode(data: bytes, level: int) -> Packet:
    """The one packet in ``data``, read at ``level`` (a CONNECT sets its own level)."""
    reader = PacketReader(
        max_packet_size=MAX_PACKET_SIZE, protocol_level=None if data[0] >> 4 == 1 else level
    )
    reader.feed(data)
    packet = reader.next_packet()
    assert packet is not None
    assert reader.next_packet() is None
    return packet


def drain(reader: PacketReader, data: bytes) -> list[Packet]:
    """Feed ``data`` and take every packet; a MalformedPacket may end it, nothing else may."""
    reader.feed(data)
    packets: list[Packet] = []
    try:
        while (packet := reader.next_packet()) is not None:
            packets.append(packet)
    except MalformedPacket as error:
        assert isinstance(error.reason_code, ReasonCode)
    return packets


# --- a corpus of valid packets -------------------------------------------------------------

CONNACK_PROPERTIES = Properties(
    session_expiry_interval=3600,
    assigned_client_identifier="auto-1",
    server_keep_alive=120,
    authentication_method="SCRAM-SHA-256",
    authentication_data=b"\x00\x01server-first",
    response_information="replies/",
    server_reference="other.example:1883",
    reason_string="welcome",
    receive_maximum=100,
    topic_alias_maximum=10,
    maximum_qos=1,
    retain_available=False,
    user_properties=(("region", "eu"), ("region", "us")),
    maximum_packet_size=65536,
    wildcard_subscription_available=True,
    subscription_identifier_available=True,
    shared_subscription_available=False,
)
PUBLISH_PROPERTIES = Properties(
    payload_format_indicator=1,
    message_expiry_interval=2**32 - 1,
    content_type="application/json",
    response_topic="replies/c1",
    correlation_data=b"\x00\xff",
    subscription_identifiers=(1, 268_435_455),
    topic_alias=7,
    user_properties=(("k", "v"), ("k", "v"), ("ключ", "значение")),
)
V5_CONNECT = Connect(
    protocol_level=MQTT_5,
    client_id="device-42",
    clean_start=False,
    keep_alive=65535,
    username="alice",
    password=b"\x00secret\xff",
    will=Will(
        topic="devices/42/status",
        payload=b"offline",
        qos=2,
        retain=True,
        properties=Properties(
            will_delay_interval=30,
            payload_format_indicator=1,
            message_expiry_interval=60,
            content_type="text/plain",
            response_topic="r",
            correlation_data=b"id",
            user_properties=(("a", "b"),),
        ),
    ),
    properties=Properties(
        session_expiry_interval=0,
        authentication_method="SCRAM-SHA-256",
        authentication_data=b"client-first",
        request_problem_information=False,
        request_response_information=True,
        receive_maximum=20,
        topic_alias_maximum=0,
        user_properties=(("x", ""),),
        maximum_packet_size=1_000_000,
    ),
)
V4_CONNECT = Connect(
    protocol_level=MQTT_3_1_1,
    client_id="device-42",
    keep_alive=60,
    username="alice",
    password=b"secret",
    will=Will(topic="devices/42/status", payload=b"", qos=1),
)
V5_OTHERS: list[Packet] = [
    Connack(session_present=True, properties=CONNACK_PROPERTIES),
    Connack(reason_code=ReasonCode.NOT_AUTHORIZED, properties=Properties(reason_string="no")),
    Publish(topic="a/b", payload=b"", qos=0),
    Publish(topic="a/b", payload=b"\x00" * 300, qos=1, dup=True, retain=True, packet_id=1),
    Publish(topic="", payload=b"x", qos=2, packet_id=65535, properties=PUBLISH_PROPERTIES),
    Puback(packet_id=1),
    Puback(packet_id=2, reason_code=ReasonCode.NO_MATCHING_SUBSCRIBERS),
    Puback(packet_id=3, properties=Properties(user_properties=(("a", "b"),))),
    Pubrec(
        packet_id=4,
        reason_code=ReasonCode.QUOTA_EXCEEDED,
        properties=Properties(reason_string="full"),
    ),
    Pubrel(packet_id=5, reason_code=ReasonCode.PACKET_IDENTIFIER_NOT_FOUND),
    Pubcomp(packet_id=6),
    Subscribe(
        packet_id=7,
        subscriptions=(
            Subscription(topic_filter="a/+/c", qos=1, no_local=True, retain_handling=2),
            Subscription(topic_filter="$share/g/x/#", qos=2, retain_as_published=True),
            Subscription(topic_filter="#"),
        ),
        properties=Properties(subscription_identifiers=(300,), user_properties=(("a", "b"),)),
    ),
    Suback(
        packet_id=7,
        reason_codes=(1, 2, 0, 0x80, 0x8F, 0xA2),
        properties=Properties(reason_string="r"),
    ),
    Unsubscribe(
        packet_id=8,
        topic_filters=("a/+/c", "#"),
        properties=Properties(user_properties=(("a", "b"),)),
    ),
    Unsuback(packet_id=8, reason_codes=(0, ReasonCode.NO_SUBSCRIPTION_EXISTED)),
    Pingreq(),
    Pingresp(),
    Disconnect(reason_code=ReasonCode.DISCONNECT_WITH_WILL_MESSAGE),
    Disconnect(
        reason_code=ReasonCode.SERVER_MOVED,
        properties=Properties(
            session_expiry_interval=10, server_reference="b", reason_string="bye"
        ),
    ),
    Auth(
        reason_code=ReasonCode.CONTINUE_AUTHENTICATION,
        properties=Properties(authentication_method="M", authentication_data=b"d"),
    ),
    Auth(),
    Disconnect(),
]
V4_OTHERS: list[Packet] = [
    Connack(session_present=True),
    Connack(reason_code=ReasonCode.BAD_USERNAME_OR_PASSWORD),
    Publish(topic="a/b", payload=b"hello"),
    Publish(topic="a/b", payload=b"\x00" * 300, qos=1, dup=True, retain=True, packet_id=1),
    Publish(topic="ü/€/𝄞", payload=b"x", qos=2, packet_id=65535),
    Puback(packet_id=1),
    Pubrec(packet_id=2),
    Pubrel(packet_id=3),
    Pubcomp(packet_id=4),
    Subscribe(
        packet_id=5,
        subscriptions=(Subscription(topic_filter="a/+", qos=2), Subscription(topic_filter="#")),
    ),
    Suback(packet_id=5, reason_codes=(2, 0x80)),
    Unsubscribe(packet_id=6, topic_filters=("a/+",)),
    Unsuback(packet_id=6),
    Pingreq(),
    Pingresp(),
    Disconnect(),
]
CORPUS: list[tuple[int, Packet]] = [
    *((MQTT_5, packet) for packet in [V5_CONNECT, *V5_OTHERS]),
    (MQTT_5, Connect(protocol_level=MQTT_5, client_id="")),
    (MQTT_5, Connect(protocol_level=MQTT_5, client_id="c", password=b"token")),
    *((MQTT_3_1_1, packet) for packet in [V4_CONNECT, *V4_OTHERS]),
    (MQTT_3_1_1, Connect(protocol_level=MQTT_3_1_1, client_id="", username="u")),
]


@pytest.mark.parametrize(
    ("level", "packet"), CORPUS, ids=[f"v{level}-{type(p).__name__}" for level, p in CORPUS]
)
def test_every_packet_round_trips(level: int, packet: Packet) -> None:
    assert decode(encode(packet, level), level) == packet


@pytest.mark.parametrize(
    ("level", "connect_packet", "others"), [(5, V5_CONNECT, V5_OTHERS), (4, V4_CONNECT, V4_OTHERS)]
)
def test_a_stream_fed_one_byte_at_a_time(
    level: int, connect_packet: Connect, others: list[Packet]
) -> None:
    packets = [connect_packet, *others]
    stream = b"".join(encode(packet, level) for packet in packets)
    reader = PacketReader(max_packet_size=MAX_PACKET_SIZE)
    received = []
    for index in range(len(stream)):
        reader.feed(stream[index : index + 1])
        while (packet := reader.next_packet()) is not None:
            received.append(packet)
    assert received == packets
    assert reader.protocol_level == level
    assert drain(PacketReader(max_packet_size=MAX_PACKET_SIZE), stream) == packets


# --- byte vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
        (268_435_455, "ffffff7f"),
    ],
)
def test_variable_byte_integers_match_the_spec_table(value: int, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert encode_vbi(value) == raw
    assert read_vbi(raw, 0, len(raw)) == (value, len(raw))


def test_utf8_strings_match_the_spec_example() -> None:
    assert encode_utf8("A\U0002a6d4") == bytes.fromhex("000541f0aa9b94")


@pytest.mark.parametrize("level", [4, 5])
def test_a_connect_matches_the_spec_variable_header_example(level: int) -> None:
    # spec 3.1.2.10 (3.1.1) and 3.1.2.12 (5.0): flags 0xCE = user name, password, will QoS 1,
    # will flag, clean start; keep alive 10; in 5.0 a Session Expiry Interval of 10
    properties = bytes.fromhex("05110000000a") if level == 5 else b""
    will_properties = b"\x00" if level == 5 else b""
    raw = frame(
        0x10,
        string("MQTT")
        + bytes([level, 0xCE])
        + b"\x00\x0a"
        + properties
        + string("c1")
        + will_properties
        + string("w")
        + string("bye")
        + string("u")
        + string("p"),
    )
    expected = Connect(
        protocol_level=level,
        client_id="c1",
        keep_alive=10,
        username="u",
        password=b"p",
        will=Will(topic="w", payload=b"bye", qos=1),
        properties=Properties(session_expiry_interval=10) if level == 5 else NO_PROPERTIES,
    )
    assert decode(raw, level) == expected
    assert encode(expected, level) == raw


@pytest.mark.parametrize("level", [4, 5])
def test_a_publish_matches_the_spec_example(level: int) -> None:
    # spec 3.3.2.3: topic "a/b", packet identifier 10
    properties = b"\x00" if level == 5 else b""
    raw = frame(0x32, bytes.fromhex("0003612f62000a") + properties + b"hi")
    packet = Publish(topic="a/b", payload=b"hi", qos=1, packet_id=10)
    assert decode(raw, level) == packet
    assert encode(packet, level) == raw


def test_properties_are_written_in_identifier_order_with_their_types() -> None:
    properties = Properties(
        user_properties=(("k", "v"),),
        topic_alias=0x0102,
        subscription_identifiers=(128,),
        correlation_data=b"\x00",
        content_type="t",
        message_expiry_interval=0x01020304,
        payload_format_indicator=1,
    )
    body = bytes.fromhex(
        "01 01"  # payload format indicator: byte
        " 02 01020304"  # message expiry interval: four-byte integer
        " 03 0001 74"  # content type: UTF-8 string
        " 09 0001 00"  # correlation data: binary data
        " 0b 8001"  # subscription identifier: variable byte integer
        " 23 0102"  # topic alias: two-byte integer
        " 26 0001 6b 0001 76"  # user property: UTF-8 string pair
    )
    assert encode_properties(properties, 3) == bytes([len(body)]) + body
    assert encode_properties(Properties(request_problem_information=False), 1) == b"\x02\x17\x00"


@pytest.mark.parametrize(
    ("level", "packet", "encoded"),
    [
        (5, Puback(packet_id=1), "40020001"),
        (5, Puback(packet_id=1, reason_code=0x10), "4003000110"),
        (5, Pubrel(packet_id=1), "62020001"),
        (5, Pubcomp(packet_id=258, reason_code=0x92), "7003010292"),
        (5, Pubrec(packet_id=1, properties=Properties(reason_string="x")), "5008000100041f000178"),
        (5, Disconnect(), "e000"),
        (5, Disconnect(reason_code=4), "e00104"),
        (5, Disconnect(properties=Properties(session_expiry_interval=0)), "e00700051100000000"),
        (5, Auth(), "f000"),
        (5, Auth(reason_code=0x19), "f0021900"),
        (5, Pingreq(), "c000"),
        (4, Pingresp(), "d000"),
        (5, Connack(), "2003000000"),
        (4, Connack(session_present=True), "20020100"),
        (4, Connack(reason_code=ReasonCode.NOT_AUTHORIZED), "20020005"),
        (4, Suback(packet_id=1, reason_codes=(1, 0x80)), "900400010180"),
        (5, Suback(packet_id=1, reason_codes=(2,)), "900400010002"),
        (4, Unsuback(packet_id=9), "b0020009"),
        (5, Unsuback(packet_id=9, reason_codes=(0x11,)), "b00400090011"),
        (
            5,
            Subscribe(
                packet_id=1,
                subscriptions=(
                    Subscription(
                        topic_filter="a",
                        qos=1,
                        no_local=True,
                        retain_as_published=True,
                        retain_handling=2,
                    ),
                ),
            ),
            "82070001000001612d",
        ),
        (
            4,
            Subscribe(packet_id=1, subscriptions=(Subscription(topic_filter="a", qos=2),)),
            "8206000100016102",
        ),
        (4, Unsubscribe(packet_id=1, topic_filters=("a",)), "a2050001000161"),
        (5, Publish(topic="a", payload=b"x"), "30050001610078"),
        (
            4,
            Publish(topic="a", payload=b"x", retain=True, dup=True, qos=2, packet_id=1),
            "3d06000161000178",
        ),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, (int, str)) else str(value),
)
def test_packets_match_bytes_worked_by_hand(level: int, packet: Packet, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert encode(packet, level) == raw
    assert decode(raw, level) == packet


def test_subscribe_exposes_its_subscription_identifier() -> None:
    subscribe = next(packet for packet in V5_OTHERS if isinstance(packet, Subscribe))
    assert subscribe.subscription_identifier == 300
    assert Subscribe(packet_id=1, subscriptions=()).subscription_identifier is None


def test_mqtt5_fields_are_left_out_at_level_4() -> None:
    publish = Publish(topic="a", payload=b"x", properties=PUBLISH_PROPERTIES)
    assert decode(encode(publish, 4), 4) == Publish(topic="a", payload=b"x")
    assert encode(Puback(packet_id=1, reason_code=0x10), 4) == bytes.fromhex("40020001")
    assert encode(Unsuback(packet_id=1, reason_codes=(0,)), 4) == bytes.fromhex("b0020001")
    assert encode(Disconnect(reason_code=4), 4) == b"\xe0\x00"
    suback = encode(Suback(packet_id=1, reason_codes=(1, 0x87, 0x8F)), 4)
    assert suback == bytes.fromhex("90050001018080")


@pytest.mark.parametrize(
    ("reason", "return_code"),
    [
        (ReasonCode.SUCCESS, ConnackReturnCode.ACCEPTED),
        (ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION),
        (ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, ConnackReturnCode.IDENTIFIER_REJECTED),
        (ReasonCode.SERVER_UNAVAILABLE, ConnackReturnCode.SERVER_UNAVAILABLE),
        (ReasonCode.BAD_USERNAME_OR_PASSWORD, ConnackReturnCode.BAD_USERNAME_OR_PASSWORD),
        (ReasonCode.NOT_AUTHORIZED, ConnackReturnCode.NOT_AUTHORIZED),
        (ReasonCode.BANNED, ConnackReturnCode.NOT_AUTHORIZED),
        (ReasonCode.SERVER_BUSY, ConnackReturnCode.SERVER_UNAVAILABLE),
    ],
)
def test_connack_reason_codes_become_311_return_codes(
    reason: ReasonCode, return_code: ConnackReturnCode
) -> None:
    raw = encode(Connack(reason_code=reason), 4)
    assert raw == bytes([0x20, 2, 0, return_code])
    assert decode(raw, 4) == Connack(reason_code=V3_TO_V5[return_code])


V3_TO_V5 = {
    ConnackReturnCode.ACCEPTED: ReasonCode.SUCCESS,
    ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION: ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
    ConnackReturnCode.IDENTIFIER_REJECTED: ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
    ConnackReturnCode.SERVER_UNAVAILABLE: ReasonCode.SERVER_UNAVAILABLE,
    ConnackReturnCode.BAD_USERNAME_OR_PASSWORD: ReasonCode.BAD_USERNAME_OR_PASSWORD,
    ConnackReturnCode.NOT_AUTHORIZED: ReasonCode.NOT_AUTHORIZED,
}


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode(Auth(), 4),
        lambda: encode(Pingreq(), 3),
        lambda: encode(Publish(topic="a", qos=1), 5),
        lambda: encode(Publish(topic="a", qos=3, packet_id=1), 5),
        lambda: encode(Puback(packet_id=1, properties=Properties(topic_alias=3)), 5),
        lambda: encode(
            Connect(protocol_level=5, client_id="c", properties=Properties(receive_maximum=70_000)),
            5,
        ),
        lambda: encode(Connect(protocol_level=5, client_id="c"), 4),
        lambda: encode(Connect(protocol_level=4, client_id="c", password=b"p"), 4),
        lambda: encode(Publish(topic="a" * 65_536), 4),
        lambda: encode_vbi(268_435_456),
        lambda: encode_vbi(-1),
    ],
)
def test_encoding_what_mqtt_cannot_say_raises_value_error(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


# --- malformed input -----------------------------------------------------------------------

MALFORMED = ReasonCode.MALFORMED_PACKET
PROTOCOL = ReasonCode.PROTOCOL_ERROR
TOPIC_NAME = ReasonCode.TOPIC_NAME_INVALID
TOPIC_FILTER = ReasonCode.TOPIC_FILTER_INVALID
UNSUPPORTED = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION
WILL_FLAGS = 0x02 | 0x04  # clean start, will
WILL_PAYLOAD = string("c") + b"\x00" + string("w") + string("x")

BAD_PACKETS: list[tuple[str, int | None, bytes, ReasonCode]] = [
    # fixed header
    ("packet type 0 is reserved", 5, b"\x00\x00", MALFORMED),
    ("AUTH does not exist in 3.1.1", 4, b"\xf0\x00", MALFORMED),
    ("PUBACK flags must be 0000", 5, b"\x41\x02\x00\x01", MALFORMED),
    ("PUBREL flags must be 0010", 5, b"\x60\x02\x00\x01", MALFORMED),
    ("CONNACK flags must be 0000", 5, b"\x21\x03\x00\x00\x00", MALFORMED),
    (
        "SUBSCRIBE flags must be 0010",
        4,
        frame(0x80, b"\x00\x01" + string("a") + b"\x00"),
        MALFORMED,
    ),
    ("PINGREQ flags must be 0000", 4, b"\xc1\x00", MALFORMED),
    ("remaining length over 4 bytes", 5, b"\x30\xff\xff\xff\xff\x01", MALFORMED),
    ("remaining length not minimal", 5, b"\xc0\x80\x00", MALFORMED),
    # remaining length against contents
    ("PINGREQ with a body", 4, b"\xc0\x01\x00", MALFORMED),
    ("3.1.1 PUBACK with a reason code", 4, b"\x40\x03\x00\x01\x00", MALFORMED),
    ("PUBACK shorter than a packet id", 5, b"\x40\x01\x00", MALFORMED),
    ("3.1.1 DISCONNECT with a body", 4, b"\xe0\x01\x00", MALFORMED),
    ("3.1.1 UNSUBACK with reason codes", 4, b"\xb0\x03\x00\x01\x00", MALFORMED),
    ("PUBACK with bytes after its properties", 5, b"\x40\x05\x00\x01\x00\x00\x00", MALFORMED),
    # PUBLISH
    ("PUBLISH QoS 3", 5, frame(0x36, string("a") + b"\x00\x01\x00"), MALFORMED),
    ("PUBLISH DUP at QoS 0", 5, frame(0x38, string("a") + b"\x00"), MALFORMED),
    ("PUBLISH packet id 0", 4, frame(0x32, string("a") + b"\x00\x00"), PROTOCOL),
    ("PUBLISH packet id missing", 4, frame(0x32, string("a") + b"\x00"), MALFORMED),
    ("PUBLISH topic with +", 4, frame(0x30, string("a/+")), TOPIC_NAME),
    ("PUBLISH topic with #", 5, frame(0x30, string("#") + b"\x00"), TOPIC_NAME),
    ("3.1.1 PUBLISH with an empty topic", 4, frame(0x30, string("") + b"x"), PROTOCOL),
    ("PUBLISH with an empty topic and no alias", 5, frame(0x30, string("") + b"\x00"), PROTOCOL),
    # strings
    ("topic not UTF-8", 4, frame(0x30, b"\x00\x01\xff"), MALFORMED),
    ("topic with a UTF-16 surrogate", 4, frame(0x30, b"\x00\x03\xed\xa0\x80"), MALFORMED),
    ("topic with an overlong encoding", 4, frame(0x30, b"\x00\x02\xc0\xaf"), MALFORMED),
    ("topic with U+0000", 4, frame(0x30, b"\x00\x03a\x00b"), MALFORMED),
    ("string longer than the packet", 4, frame(0x30, b"\x00\x09abc"), MALFORMED),
    ("string length cut in half", 4, frame(0x30, b"\x00"), MALFORMED),
    # properties
    ("unknown property", 5, frame(0x30, string("a") + b"\x02\x7f\x00"), MALFORMED),
    (
        "property not allowed in PUBLISH",
        5,
        frame(0x30, string("a") + b"\x05\x11\x00\x00\x00\x01"),
        MALFORMED,
    ),
    (
        "property given twice",
        5,
        frame(0x30, string("a") + b"\x08\x03" + string("x") + b"\x03" + string("y")),
        PROTOCOL,
    ),
    (
        "property past its block",
        5,
        frame(0x30, string("a") + b"\x02\x02\x00\x00\x00\x01"),
        MALFORMED,
    ),
    ("property length past the packet", 5, frame(0x30, string("a") + b"\x09\x01\x00"), MALFORMED),
    (
        "property length over 4 bytes",
        5,
        frame(0x30, string("a") + b"\xff\xff\xff\xff\x01"),
        MALFORMED,
    ),
    ("topic alias 0", 5, frame(0x30, string("a") + b"\x03\x23\x00\x00"), PROTOCOL),
    ("subscription identifier 0", 5, frame(0x30, string("a") + b"\x02\x0b\x00"), PROTOCOL),
    ("payload format indicator 2", 5, frame(0x30, string("a") + b"\x02\x01\x02"), PROTOCOL),
    (
        "user property value missing",
        5,
        frame(0x30, string("a") + b"\x04\x26" + string("k") + b"\x00"),
        MALFORMED,
    ),
    # SUBSCRIBE, UNSUBSCRIBE
    ("3.1.1 SUBSCRIBE without filters", 4, frame(0x82, b"\x00\x01"), PROTOCOL),
    ("SUBSCRIBE without filters", 5, frame(0x82, b"\x00\x01\x00"), PROTOCOL),
    ("SUBSCRIBE packet id 0", 4, frame(0x82, b"\x00\x00" + string("a") + b"\x00"), PROTOCOL),
    ("SUBSCRIBE QoS 3", 4, frame(0x82, b"\x00\x01" + string("a") + b"\x03"), MALFORMED),
    (
        "3.1.1 SUBSCRIBE reserved option bits",
        4,
        frame(0x82, b"\x00\x01" + string("a") + b"\x04"),
        MALFORMED,
    ),
    (
        "SUBSCRIBE reserved option bits",
        5,
        frame(0x82, b"\x00\x01\x00" + string("a") + b"\x40"),
        MALFORMED,
    ),
    (
        "SUBSCRIBE retain handling 3",
        5,
        frame(0x82, b"\x00\x01\x00" + string("a") + b"\x30"),
        PROTOCOL,
    ),
    ("SUBSCRIBE filter without options", 4, frame(0x82, b"\x00\x01" + string("a")), MALFORMED),
    ("SUBSCRIBE # not last", 4, frame(0x82, b"\x00\x01" + string("a/#/b") + b"\x00"), TOPIC_FILTER),
    ("SUBSCRIBE empty filter", 4, frame(0x82, b"\x00\x01" + string("") + b"\x00"), TOPIC_FILTER),
    (
        "SUBSCRIBE no local on a shared filter",
        5,
        frame(0x82, b"\x00\x01\x00" + string("$share/g/a") + b"\x04"),
        PROTOCOL,
    ),
    (
        "SUBSCRIBE two subscription identifiers",
        5,
        frame(0x82, b"\x00\x01\x04\x0b\x01\x0b\x02" + string("a") + b"\x00"),
        PROTOCOL,
    ),
    (
        "SUBSCRIBE with a PUBLISH property",
        5,
        frame(0x82, b"\x00\x01\x03\x23\x00\x01" + string("a") + b"\x00"),
        MALFORMED,
    ),
    ("UNSUBSCRIBE without filters", 4, frame(0xA2, b"\x00\x01"), PROTOCOL),
    ("UNSUBSCRIBE invalid filter", 5, frame(0xA2, b"\x00\x01\x00" + string("a+")), TOPIC_FILTER),
    # reason codes and packet ids
    ("PUBREL with a PUBACK reason code", 5, b"\x62\x03\x00\x01\x10", PROTOCOL),
    ("PUBACK packet id 0", 5, b"\x40\x02\x00\x00", PROTOCOL),
    ("DISCONNECT reason 0x01", 5, b"\xe0\x01\x01", PROTOCOL),
    ("AUTH reason 0x01", 5, b"\xf0\x02\x01\x00", PROTOCOL),
    ("CONNACK reserved flags", 4, b"\x20\x02\x02\x00", MALFORMED),
    ("CONNACK 3.1.1 return code 6", 4, b"\x20\x02\x00\x06", PROTOCOL),
    ("CONNACK refusal with a session", 5, b"\x20\x03\x01\x87\x00", PROTOCOL),
    ("SUBACK 3.1.1 code 3", 4, b"\x90\x03\x00\x01\x03", PROTOCOL),
    ("SUBACK without codes", 5, b"\x90\x03\x00\x01\x00", PROTOCOL),
    ("UNSUBACK without codes", 5, b"\xb0\x03\x00\x01\x00", PROTOCOL),
    # CONNECT
    ("first packet is not CONNECT", None, b"\xc0\x00", PROTOCOL),
    (
        "protocol MQIsdp (3.1)",
        None,
        frame(0x10, string("MQIsdp") + b"\x03\x02\x00\x3c" + string("c")),
        UNSUPPORTED,
    ),
    (
        "protocol level 6",
        None,
        frame(0x10, string("MQTT") + b"\x06\x02\x00\x3c\x00" + string("c")),
        UNSUPPORTED,
    ),
    ("CONNECT cut inside its header", None, frame(0x10, string("MQTT") + b"\x05\x02"), MALFORMED),
    ("CONNECT reserved flag", None, connect(flags=0x03), MALFORMED),
    ("CONNECT will QoS 3", None, connect(flags=WILL_FLAGS | 0x18, payload=WILL_PAYLOAD), MALFORMED),
    ("CONNECT will QoS without a will", None, connect(flags=0x0A), MALFORMED),
    ("CONNECT will retain without a will", None, connect(flags=0x22), MALFORMED),
    (
        "3.1.1 CONNECT password without username",
        None,
        connect(4, 0x42, payload=string("c") + string("p")),
        MALFORMED,
    ),
    (
        "CONNECT with bytes after the payload",
        None,
        connect(payload=string("c") + b"\x00"),
        MALFORMED,
    ),
    ("CONNECT missing its username", None, connect(flags=0x82), MALFORMED),
    (
        "CONNECT will topic with a wildcard",
        None,
        connect(flags=WILL_FLAGS, payload=string("c") + b"\x00" + string("w/#") + string("x")),
        TOPIC_NAME,
    ),
    (
        "CONNECT empty will topic",
        None,
        connect(4, WILL_FLAGS, payload=string("c") + string("") + string("x")),
        TOPIC_NAME,
    ),
    (
        "CONNECT authentication data without a method",
        None,
        connect(props=b"\x04\x16" + string("x")),
        PROTOCOL,
    ),
    ("CONNECT receive maximum 0", None, connect(props=b"\x03\x21\x00\x00"), PROTOCOL),
    ("CONNECT request problem information 2", None, connect(props=b"\x02\x17\x02"), PROTOCOL),
    (
        "CONNECT will with a topic alias",
        None,
        connect(
            flags=WILL_FLAGS, payload=string("c") + b"\x03\x23\x00\x01" + string("w") + string("x")
        ),
        MALFORMED,
    ),
]


@pytest.mark.parametrize(
    ("level", "data", "reason"),
    [case[1:] for case in BAD_PACKETS],
    ids=[case[0] for case in BAD_PACKETS],
)
def test_malformed_packets_are_refused_with_their_reason_code(
    level: int | None, data: bytes, reason: ReasonCode
) -> None:
    reader = PacketReader(max_packet_size=MAX_PACKET_SIZE, protocol_level=level)
    reader.feed(data)
    with pytest.raises(MalformedPacket) as caught:
        reader.next_packet()
    assert caught.value.reason_code == reason
    assert isinstance(caught.value, KilnError)


@pytest.mark.parametrize(
    ("level", "data"),
    [
        (5, frame(0x30, string("a") + b"\x06\x0b\x01\x0b\x02\x0b\x01")),  # subscription ids repeat
        (
            5,
            frame(
                0x30,
                string("a")
                + b"\x0d\x26"
                + string("k")
                + string("v")
                + b"\x26"
                + string("k")
                + b"\x00\x00",
            ),
        ),
        (5, frame(0x30, string("") + b"\x03\x23\x00\x01")),  # empty topic named by an alias
        (5, connect(flags=0x42, payload=string("c") + string("p"))),  # 5.0: password, no username
        (4, connect(4, 0x00, payload=string(""))),  # empty client id
        (5, b"\xe0\x01\x8e"),  # DISCONNECT with a reason and no property length
        (5, b"\x40\x03\x00\x01\x10"),  # PUBACK with a reason and no property length
    ],
)
def test_edge_cases_the_spec_allows_are_accepted(level: int, data: bytes) -> None:
    packet = decode(data, level)
    assert decode(encode(packet, level), level) == packet


def test_a_second_connect_is_a_protocol_error() -> None:
    reader = PacketReader(max_packet_size=MAX_PACKET_SIZE)
    reader.feed(connect() + connect())
    assert isinstance(reader.next_packet(), Connect)
    with pytest.raises(MalformedPacket) as caught:
        reader.next_packet()
    assert caught.value.reason_code == ReasonCode.PROTOCOL_ERROR


def test_packets_before_a_malformed_one_come_out_first_and_the_error_sticks() -> None:
    reader = PacketReader(max_packet_size=MAX_PACKET_SIZE, protocol_level=5)
    reader.feed(b"\xc0\x00\xd0\x00\x00\x00")
    assert reader.next_packet() == Pingreq()
    assert reader.next_packet() == Pingresp()
    with pytest.raises(MalformedPacket) as first:
        reader.next_packet()
    reader.feed(b"\xc0\x00")
    with pytest.raises(MalformedPacket) as again:
        reader.next_packet()
    assert again.value is first.value


def test_an_oversized_packet_is_refused_from_its_fixed_header_alone() -> None:
    reader = PacketReader(max_packet_size=1000, protocol_level=5)
    reader.feed(b"\x30\xe6")  # the remaining length is not complete yet
    assert reader.next_packet() is None
    reader.feed(b"\x07")  # remaining length 998: 1001 bytes in all, no body sent
    with pytest.raises(MalformedPacket) as caught:
        reader.next_packet()
    assert caught.value.reason_code == ReasonCode.PACKET_TOO_LARGE
    assert "1001" in str(caught.value)


def test_a_packet_of_exactly_the_maximum_size_is_accepted() -> None:
    packet = Publish(topic="t", payload=bytes(1000 - 3 - 3 - 1))  # header, topic, properties
    raw = encode(packet, 5)
    assert len(raw) == 1000
    reader = PacketReader(max_packet_size=1000, protocol_level=5)
    reader.feed(raw)
    assert reader.next_packet() == packet
    one_less = PacketReader(max_packet_size=999, protocol_level=5)
    one_less.feed(raw[:3])
    with pytest.raises(MalformedPacket):
        one_less.next_packet()


def test_a_huge_declared_length_is_refused_without_waiting() -> None:
    reader = PacketReader(max_packet_size=MAX_PACKET_SIZE, protocol_level=4)
    reader.feed(b"\x30\xff\xff\xff\x7f")
    assert reader.next_packet() is None  # legal size: it waits for the body
    small = PacketReader(max_packet_size=1 << 20, protocol_level=4)
    small.feed(b"\x30\xff\xff\xff\x7f")
    with pytest.raises(MalformedPacket):
        small.next_packet()


def test_the_error_names_the_problem_and_the_reason() -> None:
    reader = PacketReader(max_packet_size=MAX_PACKET_SIZE, protocol_level=4)
    reader.feed(frame(0x30, string("a/+")))
    with pytest.raises(MalformedPacket, match=r"'a/\+' contains a wildcard \(topic name invalid\)"):
        reader.next_packet()


# --- topics --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "valid"),
    [
        ("sport/tennis/player1/#", True),
        ("sport/#", True),
        ("#", True),
        ("+", True),
        ("+/tennis/#", True),
        ("sport/+/player1", True),
        ("/+", True),
        ("sport//x", True),
        ("$SYS/#", True),
        ("$share/group/a/+", True),
        ("$share/group/#", True),
        ("", False),
        ("sport/tennis#", False),
        ("sport/tennis/#/ranking", False),
        ("sport+", False),
        ("sport/+x/y", False),
        ("##", False),
        ("a\x00b", False),
        ("$share/group", False),
        ("$share//a", False),
        ("$share/gr+oup/a", False),
        ("$share/group/a/#/b", False),
    ],
)
def test_topic_filter_rules(topic_filter: str, valid: bool) -> None:
    assert valid_topic_filter(topic_filter) is valid


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        # spec 4.7.1.2 and 4.7.1.3
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("a/b", "a/b", True),
        ("a/b", "a/B", False),
        ("a/+/c", "a/b/c/d", False),
        ("a/b/c", "a/b", False),
        # spec 4.7.2: no wildcard at the first level matches a $ topic
        ("#", "$SYS/monitor/Clients", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("#", "a/$b", True),
    ],
)
def test_topic_matching(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


def test_shared_subscriptions_split_into_group_and_filter() -> None:
    assert shared_subscription("$share/workers/jobs/+") == ("workers", "jobs/+")
    assert shared_subscription("$SYS/x") is None


# --- a real client: paho-mqtt over loopback ------------------------------------------------


class Peer:
    """The server side of one loopback connection: reads packets and the bytes they came in."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = PacketReader(max_packet_size=65536)
        self.pending = b""

    def read(self) -> tuple[Packet, bytes]:
        """The next packet and its bytes, cut from the stream by a length parser of its own."""
        while (size := self._frame_size()) is None:
            data = self.sock.recv(65536)
            assert data, "the client closed the connection"
            self.pending += data
        raw, self.pending = self.pending[:size], self.pending[size:]
        self.reader.feed(raw)
        packet = self.reader.next_packet()
        assert packet is not None
        return packet, raw

    def _frame_size(self) -> int | None:
        length = 0
        for index, byte in enumerate(self.pending[1:5]):
            length += (byte & 0x7F) << (7 * index)
            if byte < 0x80:
                size = 2 + index + length
                return size if len(self.pending) >= size else None
        return None


def pump(client: paho.Client, done: Callable[[], bool]) -> None:
    """Run the client's loop until ``done()``, for at most five seconds."""
    for _ in range(50):
        if done():
            return
        client.loop(timeout=0.1)
    raise AssertionError("the client did not get there in time")


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
def test_a_paho_client_and_the_codec_understand_each_other(level: int) -> None:
    v5 = level == MQTT_5
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id="kiln-interop",
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
    )
    client.username_pw_set("alice", "s3cret")
    will_properties = connect_properties = publish_properties = None
    if v5:
        will_properties = PahoProperties(PacketTypes.WILLMESSAGE)
        will_properties.WillDelayInterval = 10
        connect_properties = PahoProperties(PacketTypes.CONNECT)
        connect_properties.SessionExpiryInterval = 300
        connect_properties.UserProperty = ("k", "v")
        publish_properties = PahoProperties(PacketTypes.PUBLISH)
        publish_properties.ContentType = "application/json"
        publish_properties.CorrelationData = b"\x01\x02"
    client.will_set(
        "clients/kiln-interop", b"offline", qos=1, retain=True, properties=will_properties
    )
    events: list[tuple[object, ...]] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: events.append(("connack", reason.value))
    client.on_subscribe = lambda _c, _u, mid, reasons, _p: events.append(
        ("suback", mid, [reason.value for reason in reasons])
    )
    client.on_publish = lambda _c, _u, mid, _r, _p: events.append(("puback", mid))

    with socket.create_server(("127.0.0.1", 0)) as server:
        client.connect(
            "127.0.0.1", server.getsockname()[1], keepalive=45, properties=connect_properties
        )
        sock, _ = server.accept()
        with sock:
            sock.settimeout(5)
            peer = Peer(sock)
            packet, raw = peer.read()
            assert packet == Connect(
                protocol_level=level,
                client_id="kiln-interop",
                keep_alive=45,
                username="alice",
                password=b"s3cret",
                will=Will(
                    topic="clients/kiln-interop",
                    payload=b"offline",
                    qos=1,
                    retain=True,
                    properties=Properties(will_delay_interval=10) if v5 else NO_PROPERTIES,
                ),
                properties=Properties(session_expiry_interval=300, user_properties=(("k", "v"),))
                if v5
                else NO_PROPERTIES,
            )
            assert encode(packet, level) == raw
            sock.sendall(encode(Connack(), level))
            pump(client, lambda: ("connack", 0) in events)

            options = SubscribeOptions(
                qos=1, noLocal=True, retainAsPublished=True, retainHandling=1
            )
            if v5:
                client.subscribe([("a/+/c", options), ("$share/g/x/#", SubscribeOptions(qos=2))])
            else:
                client.subscribe([("a/+/c", 1), ("$share/g/x/#", 2)])
            packet, raw = peer.read()
            assert isinstance(packet, Subscribe)
            assert packet.subscriptions == (
                Subscription(
                    topic_filter="a/+/c",
                    qos=1,
                    no_local=v5,
                    retain_as_published=v5,
                    retain_handling=v5,
                ),
                Subscription(topic_filter="$share/g/x/#", qos=2),
            )
            assert encode(packet, level) == raw
            suback = ("suback", packet.packet_id, [1, 0x87 if v5 else 0x80])
            sock.sendall(encode(Suback(packet_id=packet.packet_id, reason_codes=(1, 0x87)), level))
            pump(client, lambda: suback in events)

            client.publish("a/b/c", b'{"x": 1}', qos=1, properties=publish_properties)
            packet, raw = peer.read()
            assert isinstance(packet, Publish)
            assert (packet.topic, packet.payload, packet.qos) == ("a/b/c", b'{"x": 1}', 1)
            if v5:
                assert packet.properties == Properties(
                    content_type="application/json", correlation_data=b"\x01\x02"
                )
            assert encode(packet, level) == raw
            assert packet.packet_id is not None
            puback = ("puback", packet.packet_id)
            sock.sendall(encode(Puback(packet_id=packet.packet_id), level))
            pump(client, lambda: puback in events)

            sock.sendall(encode(Publish(topic="a/x/c", payload=b"to you", qos=0), level))
            received: list[paho.MQTTMessage] = []
            client.on_message = lambda _c, _u, message: received.append(message)
            pump(client, lambda: bool(received))
            assert (received[0].topic, received[0].payload) == ("a/x/c", b"to you")

            client.disconnect()
            assert peer.read()[0] == Disconnect()


# --- fuzzing --------------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
TOPIC = st.text(st.characters(codec="utf-8", exclude_characters="\x00+#"), min_size=1, max_size=12)


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    """Any valid MQTT 5 PUBLISH."""
    qos = draw(st.integers(0, 2))
    properties = Properties(
        payload_format_indicator=draw(st.none() | st.integers(0, 1)),
        message_expiry_interval=draw(st.none() | st.integers(0, 2**32 - 1)),
        content_type=draw(st.none() | TEXT),
        response_topic=draw(st.none() | TOPIC),
        correlation_data=draw(st.none() | st.binary(max_size=8)),
        subscription_identifiers=tuple(draw(st.lists(st.integers(1, 268_435_455), max_size=3))),
        topic_alias=draw(st.none() | st.integers(1, 65535)),
        user_properties=tuple(draw(st.lists(st.tuples(TEXT, TEXT), max_size=3))),
    )
    return Publish(
        topic=draw(TOPIC),
        payload=draw(st.binary(max_size=200)),
        qos=qos,
        retain=draw(st.booleans()),
        dup=qos > 0 and draw(st.booleans()),
        packet_id=draw(st.integers(1, 65535)) if qos else None,
        properties=properties if properties != Properties() else NO_PROPERTIES,
    )


@settings(max_examples=200, deadline=None)
@given(packet=publishes(), chunk=st.integers(1, 64))
def test_any_publish_round_trips_in_any_chunking(packet: Publish, chunk: int) -> None:
    raw = encode(packet, 5) * 2
    reader = PacketReader(max_packet_size=MAX_PACKET_SIZE, protocol_level=5)
    received = []
    for start in range(0, len(raw), chunk):
        received += drain(reader, raw[start : start + chunk])
    assert received == [packet, packet]


def check_decoded(packets: list[Packet], reader: PacketReader) -> None:
    """Whatever the reader let through is a valid packet: it encodes and decodes back the same."""
    for packet in packets:
        level = packet.protocol_level if isinstance(packet, Connect) else reader.protocol_level
        assert level is not None
        assert decode(encode(packet, level), level) == packet


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=64), level=st.sampled_from([None, 4, 5]), chunk=st.integers(1, 16))
def test_random_bytes_raise_only_malformed_packet(
    data: bytes, level: int | None, chunk: int
) -> None:
    reader = PacketReader(max_packet_size=4096, protocol_level=level)
    packets: list[Packet] = []
    for start in range(0, len(data), chunk):
        packets += drain(reader, data[start : start + chunk])
    check_decoded(packets, reader)


@settings(max_examples=600, deadline=None)
@given(
    case=st.sampled_from(CORPUS),
    edits=st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 255), st.sampled_from("rid")),
        min_size=1,
        max_size=4,
    ),
    cut=st.integers(0, 8),
)
def test_mutated_packets_raise_only_malformed_packet(
    case: tuple[int, Packet], edits: list[tuple[int, int, str]], cut: int
) -> None:
    level, packet = case
    raw = bytearray(encode(packet, level))
    for position, byte, action in edits:
        index = position % len(raw) if raw else 0
        if action == "r" and raw:
            raw[index] = byte
        elif action == "i":
            raw.insert(index, byte)
        elif raw:
            del raw[index]
    del raw[len(raw) - cut :]
    reader = PacketReader(
        max_packet_size=4096, protocol_level=None if isinstance(packet, Connect) else level
    )
    check_decoded(drain(reader, bytes(raw)), reader)
