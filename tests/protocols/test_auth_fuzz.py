"""A bounded fuzz of ``Authorization`` headers against a real server: never a 500, never access.

A module of its own: the failed logins it makes trip the per-address limit, which would
hold up fresh logins of other tests sharing the server (answers then turn 429, still no access).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ADMIN_AUTH, KilnServer

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
}
"""

VISIBLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
"""What an HTTP client lets into a header value."""


def basic_of(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def token_of(payload: dict[str, object], key: bytes, algorithm: str) -> str:
    return jwt.encode(payload, None if algorithm == "none" else key, algorithm=algorithm)


CLAIMS = st.fixed_dictionaries(
    {
        "sub": st.sampled_from(["admin", "ghost", ""]),
        "epoch": st.one_of(st.integers(-2, 5), st.text(max_size=3)),
        "kind": st.sampled_from(["access", "refresh", "admin"]),
        "exp": st.integers(0, int(time.time()) + 10_000),
    }
)

HEADERS = st.one_of(
    st.text(VISIBLE, max_size=80),
    st.builds(lambda text: "Basic " + text, st.text(VISIBLE, max_size=60)),
    st.builds(lambda text: "Bearer " + text, st.text(VISIBLE, max_size=120)),
    st.builds(basic_of, st.binary(max_size=40)),
    st.builds(
        lambda name, secret: basic_of(f"{name}:{secret}".encode()),
        st.sampled_from(["admin", "Admin", "admin ", "ghost", ""]),
        st.text(max_size=20).filter(lambda text: text != ADMIN_AUTH[1]),
    ),
    st.builds(
        lambda claims, key, algorithm: "Bearer " + token_of(claims, key, algorithm),
        CLAIMS,
        st.binary(min_size=32, max_size=32),
        st.sampled_from(["HS256", "none"]),
    ),
).map(str.strip)  # an HTTP client refuses a header value with spaces around it


@pytest.fixture(scope="module")
def client(kiln_server: KilnServer) -> Iterator[httpx.Client]:
    seeded = httpx.put(f"{kiln_server.url}/Dog/1", json={"name": "Rex"}, auth=ADMIN_AUTH)
    assert seeded.status_code == 204
    with httpx.Client(base_url=kiln_server.url, timeout=10) as made:
        yield made


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=HEADERS)
def test_no_authorization_header_gets_in_or_breaks_the_server(
    client: httpx.Client, header: str
) -> None:
    for method, path in (("GET", "/Dog/1"), ("PUT", "/Dog/2")):
        response = client.request(
            method, path, headers={"authorization": header}, json={"name": "x"}
        )
        assert response.status_code in (401, 429), (header, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "Rex" not in response.text


def test_the_server_is_well_after_the_fuzz(kiln_server: KilnServer, client: httpx.Client) -> None:
    assert client.get("/_health").status_code == 200
    assert client.get("/Dog/2", auth=ADMIN_AUTH).status_code in (404, 429)
    assert "Traceback" not in kiln_server.log()
