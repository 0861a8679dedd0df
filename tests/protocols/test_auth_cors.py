"""CORS (``http.cors``: preflights, headers on answers and errors, WebSocket origins) and
``authentication.trustLoopback``, against real servers."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from conftest import ADMIN_AUTH, KilnServer, free_port, write_app, ws_event
from kiln.auth.cors import Cors
from kiln.mqtt import MQTT_5, Connack, Connect, PacketReader, Will, encode

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
}
"""

ALLOWED = "https://app.example.com"
CONFIG = f"http:\n  cors: [{ALLOWED}]\n"
PREFLIGHT = {
    "access-control-request-method": "PUT",
    "access-control-request-headers": "authorization",
}


def test_origin_allowed_follows_the_list() -> None:
    cors = Cors(["https://app.example.com", "http://localhost:3000"])
    assert cors.origin_allowed("https://app.example.com")
    assert cors.origin_allowed("HTTPS://APP.EXAMPLE.COM")
    assert cors.origin_allowed("http://localhost:3000")
    assert cors.origin_allowed(None)  # not a cross-origin request
    for other in ("https://evil.example", "http://app.example.com", "null", ""):
        assert not cors.origin_allowed(other)
    assert Cors(["*"]).origin_allowed("https://anything.example")
    assert not Cors([]).origin_allowed("https://app.example.com")
    assert Cors([]).origin_allowed("http://127.0.0.1:9926", host="127.0.0.1:9926")  # its own page
    assert not Cors([]).origin_allowed("http://127.0.0.1:9926", host="127.0.0.1:9927")


def test_a_preflight_from_an_allowed_origin_is_answered(kiln_server: KilnServer) -> None:
    response = httpx.options(
        f"{kiln_server.url}/Dog/1", headers={"origin": ALLOWED, **PREFLIGHT}
    )  # no credentials: browsers send none with a preflight
    assert response.status_code == 204
    headers = response.headers
    assert headers["access-control-allow-origin"] == ALLOWED
    assert "PUT" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"]
    assert headers["access-control-max-age"] == "600"
    assert headers["vary"] == "Origin"


def test_a_preflight_from_another_origin_gets_no_cors_headers(kiln_server: KilnServer) -> None:
    response = httpx.options(
        f"{kiln_server.url}/Dog/1", headers={"origin": "https://evil.example", **PREFLIGHT}
    )
    assert response.status_code == 204
    assert not any(name.startswith("access-control-") for name in response.headers)


def test_answers_and_errors_echo_an_allowed_origin(kiln_server: KilnServer) -> None:
    url = f"{kiln_server.url}/Dog/"
    ok = httpx.get(url, auth=ADMIN_AUTH, headers={"origin": ALLOWED})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    assert "etag" in ok.headers["access-control-expose-headers"]
    assert "Origin" in ok.headers.get_list("vary")
    refused = httpx.get(url, headers={"origin": ALLOWED})
    assert refused.status_code == 401  # the page can read why
    assert refused.headers["access-control-allow-origin"] == ALLOWED
    other = httpx.get(url, auth=ADMIN_AUTH, headers={"origin": "https://evil.example"})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


def test_a_simple_cross_origin_write_is_refused_before_it_acts(kiln_server: KilnServer) -> None:
    """A form post or a fetch without Content-Type needs no preflight: the browser sends it
    and only hides the answer. kiln must not act on it (with trustLoopback or cached Basic
    credentials it would otherwise write as that user)."""
    url = f"{kiln_server.url}/Dog/"
    body = b'{"id": 4242, "name": "planted"}'
    for headers in ({"origin": "https://evil.example"}, {"origin": "null"}):
        refused = httpx.post(url, content=body, auth=ADMIN_AUTH, headers=headers)
        assert refused.status_code == 403, refused.text
        assert "may not write here" in refused.json()["detail"]
    assert httpx.get(f"{url}4242", auth=ADMIN_AUTH).status_code == 404  # nothing was written
    allowed = httpx.post(url, content=body, auth=ADMIN_AUTH, headers={"origin": ALLOWED})
    assert allowed.status_code == 201, allowed.text
    host = kiln_server.url.removeprefix("http://")
    same = httpx.put(
        f"{url}4243",
        json={"name": "own page"},
        auth=ADMIN_AUTH,
        headers={"origin": f"http://{host}"},
    )
    assert same.status_code == 204  # a page kiln served itself writes as before


def test_a_websocket_from_another_origin_is_refused(kiln_server: KilnServer) -> None:
    basic = httpx.BasicAuth(*ADMIN_AUTH)._auth_header
    stored = httpx.put(f"{kiln_server.url}/Dog/1", json={"name": "Rex"}, auth=ADMIN_AUTH)
    assert stored.status_code == 204
    url = f"ws://127.0.0.1:{kiln_server.port}/Dog/1"
    headers = {"Authorization": basic}
    with connect(url, additional_headers=headers, origin="https://evil.example") as connection:
        message = json.loads(connection.recv(timeout=5))
        assert (message["type"], message["status"]) == ("error", 403)
        assert "https://evil.example" in message["value"]
    with connect(url, additional_headers=headers, origin=ALLOWED) as connection:
        assert ws_event(connection)["value"] == {"id": 1, "name": "Rex"}


def test_without_http_cors_no_origin_is_allowed(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("no-cors")
    server = KilnServer(write_app(root / "app", SCHEMA), root / "data", free_port())
    server.start()
    try:
        response = httpx.get(f"{server.url}/Dog/", auth=ADMIN_AUTH, headers={"origin": ALLOWED})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        preflight = httpx.options(f"{server.url}/Dog/", headers={"origin": ALLOWED, **PREFLIGHT})
        assert "access-control-allow-origin" not in preflight.headers
    finally:
        server.stop()


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnServer]:
    """A server with ``authentication.trustLoopback: true``."""
    root = tmp_path_factory.mktemp("loopback")
    config = "authentication:\n  trustLoopback: true\n"
    server = KilnServer(write_app(root / "app", SCHEMA, config), root / "data", free_port())
    server.start()
    yield server
    server.stop()


def test_trust_loopback_makes_local_requests_super_users_and_says_so(
    loopback: KilnServer,
) -> None:
    assert httpx.put(f"{loopback.url}/Dog/1", json={"name": "Rex"}).status_code == 204
    assert httpx.get(f"{loopback.url}/Dog/1").json() == {"id": 1, "name": "Rex"}
    wrong = httpx.get(f"{loopback.url}/Dog/1", auth=("admin", "wrong-password"))
    assert wrong.status_code == 401  # credentials sent are still checked
    assert "authentication.trustLoopback is on" in loopback.log()


def test_trust_loopback_needs_a_request_naming_this_machine(loopback: KilnServer) -> None:
    """A DNS rebinding points a site's name at 127.0.0.1: its page's requests then come from
    this machine, as its own origin, but they name that site in ``Host``."""
    url, port = loopback.url, loopback.port
    assert httpx.put(f"{url}/Dog/2", json={"name": "Fido"}).status_code == 204
    site = f"attacker.example:{port}"
    rebound = {"host": site, "origin": f"http://{site}"}
    written = httpx.post(f"{url}/Dog/", json={"id": 7, "name": "pwned"}, headers=rebound)
    assert written.status_code == 401, written.text
    assert httpx.get(f"{url}/Dog/2", headers={"host": site}).status_code == 401
    assert httpx.get(f"{url}/Dog/7").status_code == 404  # nothing was written
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        assert httpx.get(f"{url}/Dog/2", headers={"host": host}).status_code == 200, host


@pytest.mark.parametrize(("host", "code"), [("attacker.example", 0x87), ("localhost", 0)])
def test_trust_loopback_over_mqtt_websocket_needs_a_handshake_naming_this_machine(
    loopback: KilnServer, host: str, code: int
) -> None:
    """The same rebinding against MQTT over WebSocket: a page of the rebound site passes the
    origin check (it is its own origin), so the handshake's Host must name this machine
    for a CONNECT without credentials to be trusted."""
    port = loopback.mqtt_ws_port
    site = f"{host}:{port}"
    hello = encode(Connect(protocol_level=MQTT_5, client_id=f"rebound-{host}"), MQTT_5)
    reader = PacketReader(max_packet_size=1 << 20, protocol_level=MQTT_5)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        connect(
            f"ws://{site}/mqtt",
            sock=sock,
            subprotocols=["mqtt"],
            origin=f"http://{site}",
            open_timeout=5,
        ) as websocket,
    ):
        websocket.send(hello)
        reader.feed(websocket.recv(timeout=5))
        connack = reader.next_packet()
    assert isinstance(connack, Connack)
    assert connack.reason_code == code


@pytest.fixture(scope="module")
def loopback_and_public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnServer]:
    """Loopback trust on, and an ``anonymous`` role that may read dogs, not write them."""
    root = tmp_path_factory.mktemp("loopback-public")
    config = (
        "authentication:\n  trustLoopback: true\n"
        "roles:\n  anonymous:\n    data:\n      Dog: {read: true}\n"
    )
    server = KilnServer(write_app(root / "app", SCHEMA, config), root / "data", free_port())
    server.start()
    yield server
    server.stop()


def test_a_rebound_pages_mqtt_will_is_not_published_as_a_super_user(
    loopback_and_public: KilnServer,
) -> None:
    """A rebound page connects to MQTT over WebSocket as the anonymous role (its Host names
    its own site), leaves a retained will on a record and drops the socket: the will is
    checked as the CONNECT was, so the anonymous role may not write it."""
    server = loopback_and_public
    port = server.mqtt_ws_port
    site = f"evil.example:{port}"
    will = Will(topic="Dog/77", payload=b'{"name": "pwned"}', qos=1, retain=True)
    hello = encode(Connect(protocol_level=MQTT_5, client_id="rebound-will", will=will), MQTT_5)
    reader = PacketReader(max_packet_size=1 << 20, protocol_level=MQTT_5)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        connect(
            f"ws://{site}/mqtt", sock=sock, subprotocols=["mqtt"], origin=f"http://{site}"
        ) as websocket,
    ):
        websocket.send(hello)
        reader.feed(websocket.recv(timeout=5))
        connack = reader.next_packet()
        assert isinstance(connack, Connack) and connack.reason_code == 0  # the anonymous role
        sock.shutdown(socket.SHUT_RDWR)  # gone without DISCONNECT: the will is due
    deadline = time.monotonic() + 3
    while "will of 'rebound-will'" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "will of 'rebound-will'" in server.log(), server.log()
    assert httpx.get(f"{server.url}/Dog/77").status_code == 404  # nothing was written
