"""Security on the real-time protocols: who may subscribe over SSE, WebSocket and MQTT (and
publish over MQTT), and what the events of a role with an attribute allow-list hold."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from mqtt_clients import Paho
from realtime_clients import sse
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import ADMIN_AUTH, KilnServer, ws_event
from kiln.auth.passwords import hash_password
from kiln.auth.users import SYSTEM_FOLDER, UserStore
from kiln.mqtt import ReasonCode

SCHEMA = """
type Dog @table @export {
  id: ID @primaryKey
  name: String
  secret: String
}

type Owner @table @export {
  id: ID @primaryKey
  name: String
}
"""

CONFIG = """
roles:
  anonymous:
    data:
      Owner: {read: true}
  reader:
    data:
      Dog: {read: true}
  editor:
    data:
      Dog:
        read: true
        update: true
        attributes:
          name: {read: true, update: true}
  nobody:
"""

ROLES = ("reader", "editor", "nobody")
CAN_READ = {
    ("admin", "Dog"): True,
    ("admin", "Owner"): True,
    ("reader", "Dog"): True,
    ("reader", "Owner"): False,
    ("editor", "Dog"): True,
    ("editor", "Owner"): False,
    ("nobody", "Dog"): False,
    ("nobody", "Owner"): False,
    ("anonymous", "Dog"): False,
    ("anonymous", "Owner"): True,
}
"""Who may read (so subscribe to) which table, as CONFIG says."""
CAN_UPDATE = {("admin", "Dog"), ("admin", "Owner"), ("editor", "Dog")}
"""Who may change (so publish a retained record or a message to) which table."""


def auth_of(role: str) -> tuple[str, str] | None:
    if role == "admin":
        return ADMIN_AUTH
    return None if role == "anonymous" else (role, f"{role}-password")


@pytest.fixture(scope="module")
def users(kiln_server: KilnServer) -> Iterator[UserStore]:
    """The running server's system database, opened from this process, a user per role."""
    store = UserStore(kiln_server.data_dir / SYSTEM_FOLDER)
    for role in ROLES:
        store.add(role, role, hash_password(f"{role}-password"))
    yield store
    store.close()


@pytest.fixture(scope="module", autouse=True)
def records(kiln_server: KilnServer, users: UserStore) -> None:
    with httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=10) as admin:
        assert admin.put("/Dog/d1", json={"name": "Rex", "secret": "s"}).status_code == 204
        assert admin.put("/Owner/o1", json={"name": "Ann"}).status_code == 204


@pytest.mark.parametrize(("role", "table"), sorted(CAN_READ))
def test_sse_subscription_matrix(kiln_server: KilnServer, role: str, table: str) -> None:
    path = f"/{table}/{'d1' if table == 'Dog' else 'o1'}"
    with httpx.Client(base_url=kiln_server.url, auth=auth_of(role), timeout=5) as client:
        if CAN_READ[(role, table)]:
            with sse(client, path) as stream:
                [current] = stream.history()
            assert current.type == "put"
            return
        response = client.get(path, headers={"accept": "text/event-stream"})
    expected = 401 if role == "anonymous" else 403
    assert response.status_code == expected, response.text
    assert "read" in response.json()["detail"]
    if expected == 401:
        assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(("role", "table"), sorted(CAN_READ))
def test_websocket_subscription_matrix(kiln_server: KilnServer, role: str, table: str) -> None:
    path = f"/{table}/{'d1' if table == 'Dog' else 'o1'}"
    auth = auth_of(role)
    headers = {} if auth is None else {"Authorization": httpx.BasicAuth(*auth)._auth_header}
    with connect(
        f"ws://127.0.0.1:{kiln_server.port}{path}", additional_headers=headers, open_timeout=5
    ) as connection:
        first = ws_event(connection)
        if CAN_READ[(role, table)]:
            assert first["type"] == "put"
            return
        assert first["type"] == "error"
        assert first["status"] == (401 if role == "anonymous" else 403)
        with pytest.raises(ConnectionClosed):
            connection.recv(timeout=5)


def test_events_hold_only_the_attributes_the_role_may_read(kiln_server: KilnServer) -> None:
    with (
        httpx.Client(base_url=kiln_server.url, auth=auth_of("editor"), timeout=5) as editor,
        httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=5) as admin,
        sse(editor, "/Dog/d2") as narrowed,
        sse(admin, "/Dog/d2") as whole,
    ):
        narrowed.history()
        whole.history()
        assert admin.put("/Dog/d2", json={"name": "Max", "secret": "hidden"}).status_code == 204
        assert admin.patch("/Dog/d2", json={"secret": "still hidden"}).status_code == 204
        seen = narrowed.take(2)
        full = whole.take(2)
    assert [event.data["value"] for event in seen] == [{"id": "d2", "name": "Max"}] * 2
    assert seen[1].data["patch"] == {}
    assert full[1].data["value"]["secret"] == "still hidden"


@pytest.mark.parametrize(("role", "table"), sorted(CAN_READ))
def test_mqtt_subscribe_and_publish_matrix(kiln_server: KilnServer, role: str, table: str) -> None:
    """SUBACK and PUBACK carry 0x87 (not authorized) where the role lacks the permission."""
    record = "d1" if table == "Dog" else "o1"
    with Paho(kiln_server.mqtt_port, auth=auth_of(role)).connect() as client:
        granted = client.subscribe(f"{table}/{record}")
        if CAN_READ[(role, table)]:
            assert granted == [0]
            assert client.next().retain  # the current record, as a retained message
        else:
            assert granted == [ReasonCode.NOT_AUTHORIZED]
        published = client.publish(f"{table}/{record}", b'{"note": "hi"}', qos=1)
        allowed = (role, table) in CAN_UPDATE
        assert published == (ReasonCode.SUCCESS if allowed else ReasonCode.NOT_AUTHORIZED)


def test_an_mqtt_session_belongs_to_its_user(kiln_server: KilnServer) -> None:
    """Another user cannot take over a session by its client id: not while it is connected,
    not while it is kept, and its owner can come back to it."""
    port = kiln_server.mqtt_port
    owner = Paho(port, name="shared-id", clean=False, auth=auth_of("reader")).connect(expiry=300)
    with Paho(port, name="shared-id", auth=auth_of("editor")) as thief:
        assert thief.connect().connack[0] == ReasonCode.NOT_AUTHORIZED
    assert owner.subscribe("Dog/d1") == [0]  # the owner was not disconnected
    owner.close()
    with Paho(port, name="shared-id", clean=False, auth=auth_of("admin")) as admin:
        assert admin.connect(expiry=300).connack[0] == ReasonCode.NOT_AUTHORIZED
    with Paho(port, name="shared-id", clean=False, auth=auth_of("reader")) as again:
        assert again.connect(expiry=300).connack[:2] == (ReasonCode.SUCCESS, True)  # kept


def test_a_removed_user_stops_hearing_at_once(kiln_server: KilnServer, users: UserStore) -> None:
    """An open SSE stream and WebSocket end with an error event once their user is removed:
    the next change is not delivered to them."""
    users.add("leaver", "reader", hash_password("leaver-password"))
    auth = ("leaver", "leaver-password")
    basic = httpx.BasicAuth(*auth)._auth_header
    with (
        httpx.Client(base_url=kiln_server.url, auth=auth, timeout=5) as client,
        httpx.Client(base_url=kiln_server.url, auth=ADMIN_AUTH, timeout=5) as admin,
        sse(client, "/Dog/d3?omitCurrent") as stream,
        connect(
            f"ws://127.0.0.1:{kiln_server.port}/Dog/d3?omitCurrent",
            additional_headers={"Authorization": basic},
            open_timeout=5,
        ) as socket,
    ):
        stream.history()
        assert admin.put("/Dog/d3", json={"name": "before"}).status_code == 204
        assert stream.next().data["value"]["name"] == "before"
        assert ws_event(socket)["value"]["name"] == "before"
        time.sleep(0.6)  # past the recheck interval
        users.remove("leaver")
        assert admin.put("/Dog/d3", json={"name": "secret"}).status_code == 204
        ended = stream.next()
        assert ended.type == "error" and "credentials" in ended.data["value"]
        with pytest.raises(EOFError):
            stream.next()
        message = ws_event(socket)
        assert message["type"] == "error" and "credentials" in message["value"]
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=5)


def test_a_removed_user_is_disconnected_from_mqtt(
    kiln_server: KilnServer, users: UserStore
) -> None:
    users.add("mqtt-leaver", "reader", hash_password("mqtt-leaver-password"))
    client = Paho(kiln_server.mqtt_port, auth=("mqtt-leaver", "mqtt-leaver-password")).connect()
    try:
        assert client.subscribe("Dog/d1") == [0]
        users.remove("mqtt-leaver")
        assert client.wait_gone(timeout=5) == ReasonCode.NOT_AUTHORIZED
    finally:
        client.close()
