"""MQTT 3.1.1 and 5.0: kiln's in-process broker, and the packet codec it speaks.

The codec is pure (no I/O) and exported here: ``packets`` holds the packet types; ``codec``
:func:`encode` and :class:`PacketReader`; ``topics`` the topic rules; ``properties`` the MQTT 5
property block, the reason codes and :class:`MalformedPacket`.

The broker, started by :func:`kiln.mqtt.server.start_mqtt`: ``server`` (the listeners),
``link`` (TCP and WebSocket byte streams, ``websocket`` the framing), ``connection`` (one
client), ``subscriptions`` (events to messages), ``sessions`` (state and its store),
``broker`` (topics and messages ↔ the resource seam) and ``payloads`` (formats).
"""

from kiln.mqtt.codec import PacketReader, encode
from kiln.mqtt.packets import (
    MAX_PACKET_SIZE,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    Connack,
    ConnackReturnCode,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from kiln.mqtt.properties import NO_PROPERTIES, MalformedPacket, Properties, ReasonCode
from kiln.mqtt.topics import shared_subscription, topic_matches, valid_topic_filter

__all__ = [
    "MAX_PACKET_SIZE",
    "MQTT_3_1_1",
    "MQTT_5",
    "NO_PROPERTIES",
    "Auth",
    "Connack",
    "ConnackReturnCode",
    "Connect",
    "Disconnect",
    "MalformedPacket",
    "Packet",
    "PacketReader",
    "PacketType",
    "Pingreq",
    "Pingresp",
    "Properties",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "ReasonCode",
    "Suback",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "Will",
    "encode",
    "shared_subscription",
    "topic_matches",
    "valid_topic_filter",
]
