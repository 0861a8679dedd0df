"""MQTT CONNECT credentials fuzzed against a real broker: no packet gets in without the right
password, none breaks the broker (no anonymous role is declared: secure by default)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mqtt_clients import Raw

from conftest import ADMIN_AUTH, KilnServer
from kiln.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Publish,
    ReasonCode,
    Subscribe,
    Subscription,
)

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
}
"""

names = st.one_of(
    st.none(), st.just("admin"), st.text(max_size=40).filter(lambda name: "\x00" not in name)
)
passwords = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.just(b"admin-password\x00"),
    st.just(b"Admin-password"),
    st.just(b"admin-passwor"),
)


@pytest.fixture(scope="module", autouse=True)
def secret_record(kiln_server: KilnServer) -> None:
    with httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=10) as admin:
        assert admin.put("/Dog/secret", json={"name": "hidden"}).status_code == 204


def test_the_right_password_gets_in(kiln_server: KilnServer) -> None:
    """First: the fuzz below fails logins as `admin` from this address, which backs off."""
    with Raw(kiln_server.mqtt_port, MQTT_5) as client:
        assert client.connect(auth=ADMIN_AUTH).reason_code == ReasonCode.SUCCESS


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(level=st.sampled_from([MQTT_3_1_1, MQTT_5]), username=names, password=passwords)
def test_wrong_credentials_never_get_in(
    kiln_server: KilnServer, level: int, username: str | None, password: bytes | None
) -> None:
    assume(not (username == ADMIN_AUTH[0] and password == ADMIN_AUTH[1].encode()))
    # 3.1.1 has no password without a user name: kiln's encoder refuses to write one (the
    # hand-made packet of the test below covers it)
    assume(not (level == MQTT_3_1_1 and username is None and password is not None))
    with Raw(kiln_server.mqtt_port, level) as client:
        client.send(
            Connect(
                protocol_level=level,
                client_id=f"fuzz-{level}",
                username=username,
                password=password,
            )
        )
        try:
            answer = client.receive()
        except EOFError:  # refused without a CONNACK (a malformed CONNECT): no access either
            return
        assert isinstance(answer, Connack), answer
        # a failure code: wrong credentials, none, or the back-off after repeated failures
        # from this address (3.1.1 answers that one "server unavailable")
        assert answer.reason_code >= 0x80, answer
        # whatever follows on that connection gets nothing
        client.send(Subscribe(packet_id=1, subscriptions=(Subscription(topic_filter="Dog/#"),)))
        try:
            after = client.closed_by_broker()
        except TimeoutError:
            pytest.fail("the broker kept a refused connection open")
        assert not any(isinstance(packet, Publish) for packet in after), after


def test_a_3_1_1_password_without_a_user_name_gets_nothing(kiln_server: KilnServer) -> None:
    """A malformed CONNECT (password flag without the user name flag) is refused outright."""
    password = b"admin-password"
    flags = 0x40 | 0x02  # password, clean session; no user name
    body = (
        b"\x00\x04MQTT\x04"
        + bytes((flags,))
        + b"\x00\x00"  # keep-alive
        + b"\x00\x04fuzz"
        + len(password).to_bytes(2, "big")
        + password
    )
    with Raw(kiln_server.mqtt_port, MQTT_3_1_1) as client:
        client.send_bytes(bytes((0x10, len(body))) + body)
        answers = client.closed_by_broker()
    assert all(
        isinstance(answer, Connack) and answer.reason_code != ReasonCode.SUCCESS
        for answer in answers
    ), answers
