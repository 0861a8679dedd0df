"""The MQTT adapter's translations (``kiln.mqtt.broker``): topics to targets, PUBLISH to seam
methods, errors to reason codes, payload formats. End to end: ``tests/protocols/test_mqtt*``."""

from __future__ import annotations

import msgpack
import pytest

from kiln.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound, UnsupportedMediaType
from kiln.mqtt import Publish, ReasonCode
from kiln.mqtt.broker import NO_HEADERS, filter_targets, method_of, reason_for, topic_target
from kiln.mqtt.payloads import Payloads
from kiln.resource import Context, Resource

ROUTES = {"Room": Resource(), "Hall": Resource()}
CONTEXT = Context(None, NO_HEADERS, {})


def targets(topic_filter: str) -> list[tuple[str, object, bool, str | None]]:
    return [
        (route.name, route.target.id, route.target.is_collection, route.matcher)
        for route in filter_targets(ROUTES, topic_filter, CONTEXT)
    ]


def test_a_topic_names_a_record() -> None:
    route = topic_target(ROUTES, "Room/a/b", CONTEXT)
    assert (route.name, route.target.path, route.target.id) == ("Room", "/Room/a/b", "a/b")
    for topic in ("Cat/1", "Room", "Room/", "Room/a/"):
        with pytest.raises(NotFound):
            topic_target(ROUTES, topic, CONTEXT)


def test_filters_become_records_prefixes_and_collections() -> None:
    assert targets("Room/1") == [("Room", "1", False, None)]
    assert targets("Room/#") == [("Room", None, True, None)]
    assert targets("Room/a/#") == [("Room", "a", False, None), ("Room", "a/", True, None)]
    assert targets("Room/a/+/c") == [("Room", "a/", True, "Room/a/+/c")]
    assert targets("Room/+") == [("Room", None, True, "Room/+")]
    assert targets("#") == [("Room", None, True, None), ("Hall", None, True, None)]
    assert targets("+/7") == [("Room", "7", False, None), ("Hall", "7", False, None)]
    for topic_filter in ("Cat/#", "Room", "+"):
        with pytest.raises(NotFound):
            targets(topic_filter)


def test_retain_and_payload_choose_the_method() -> None:
    assert method_of(Publish(topic="t", payload=b"x", retain=True)) == "put"
    assert method_of(Publish(topic="t", retain=True)) == "delete"
    assert method_of(Publish(topic="t", payload=b"x")) == "publish"
    assert method_of(Publish(topic="t")) == "publish"


@pytest.mark.parametrize(
    ("error", "subscribing", "code"),
    [
        (BadRequest("no"), False, ReasonCode.PAYLOAD_FORMAT_INVALID),
        (UnsupportedMediaType("no"), False, ReasonCode.PAYLOAD_FORMAT_INVALID),
        (Forbidden("no"), False, ReasonCode.NOT_AUTHORIZED),
        (NotFound("no"), False, ReasonCode.TOPIC_NAME_INVALID),
        (NotFound("no"), True, ReasonCode.TOPIC_FILTER_INVALID),
        (MethodNotAllowed("no", allow=("GET",)), False, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR),
        (RuntimeError("boom"), False, ReasonCode.UNSPECIFIED_ERROR),
    ],
)
def test_errors_become_reason_codes(error: Exception, subscribing: bool, code: int) -> None:
    found, reason = reason_for(error, subscribing=subscribing)
    assert found == code
    assert reason


def test_payload_formats() -> None:
    payloads = Payloads("msgpack")
    assert payloads.content_type == "application/x-msgpack"
    assert payloads.decode(msgpack.packb({"a": 1}), None) == {"a": 1}
    assert payloads.decode(b'{"a": 1}', "application/json") == {"a": 1}
    assert msgpack.unpackb(payloads.encode({"a": 1})) == {"a": 1}
    with pytest.raises(UnsupportedMediaType, match="text/plain"):
        payloads.decode(b"hi", "text/plain")
    with pytest.raises(BadRequest):
        Payloads("json").decode(b"\xff", None)
