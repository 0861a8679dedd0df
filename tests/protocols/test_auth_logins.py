"""Logins against a real server: guesses in flight against the per-address limit, renewed access
tokens and the session's end, and user names no user can have.

A module of its own: its guesses trip the per-address limit (from loopback addresses other than
127.0.0.1, so that the server's other clients go on), and its refresh tokens last two seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import jwt

from conftest import ADMIN_AUTH, KilnServer

SCHEMA = """
type Dog @table @export {
  id: Int @primaryKey
  name: String!
}
"""

CONFIG = """
authentication:
  tokenTimeout: 1h
  refreshTokenTimeout: 2s
"""

ADDRESS_LIMIT = 100
"""Failed logins a minute one address may make (the looser limit)."""


def from_address(address: str, connections: int = 1) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (any 127.x.y.z reaches the server)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    limits = httpx.Limits(max_connections=connections)
    return httpx.AsyncClient(transport=transport, limits=limits, timeout=120)


async def guesses(client: httpx.AsyncClient, url: str, names: list[str]) -> list[int]:
    """The statuses of a wrong password for each of ``names``, all sent at once."""
    answers = await asyncio.gather(
        *(client.get(f"{url}/Dog/", auth=(name, "guess-123")) for name in names)
    )
    return [answer.status_code for answer in answers]


def test_guesses_in_flight_count_against_the_address_limit(kiln_server: KilnServer) -> None:
    """Once the guesses begun, not only those that failed, spend an address's allowance, the
    rest are 429 at once, whatever the user names."""

    async def spray() -> list[int]:
        async with from_address("127.0.0.2", 40) as client:
            for number in range(ADDRESS_LIMIT - 10):  # no user has these: no password check
                spent = await client.get(f"{url}/Dog/", auth=(f"-{number}", "guess-123"))
                assert spent.status_code == 401
            return await guesses(client, url, [f"sprayed{number}" for number in range(40)])

    url = kiln_server.url
    assert Counter(asyncio.run(spray())) == {401: 10, 429: 30}


def test_guesses_from_one_address_do_not_hold_up_a_login_from_another(
    kiln_server: KilnServer,
) -> None:
    """An address has at most two password checks running at once, so a right password from
    another address is checked at once however many guesses the first has in flight."""

    async def log_in(user: httpx.AsyncClient) -> tuple[int, float]:
        started = time.monotonic()
        login = await user.post(
            f"{url}/_auth/token", json={"username": ADMIN_AUTH[0], "password": ADMIN_AUTH[1]}
        )
        return login.status_code, time.monotonic() - started

    async def spray_and_log_in() -> tuple[list[int], float, tuple[int, float]]:
        names = [f"held{number}" for number in range(24)]
        async with from_address("127.0.0.3", len(names)) as sprayer:
            async with from_address("127.0.0.4") as user:
                _, alone = await log_in(user)
                spray = asyncio.create_task(guesses(sprayer, url, names))
                await asyncio.sleep(0.5)  # the guesses have arrived; most wait to be checked
                during = await log_in(user)
            return await spray, alone, during

    url = kiln_server.url
    statuses, alone, (login, took) = asyncio.run(spray_and_log_in())
    assert statuses == [401] * 24  # all checked, in turn
    assert login == 200
    # the guesses' two checks slow it a little (fewer cores for it), but it waits for none
    assert took < 3 * alone + 0.2, f"it took {took:.2f} s instead of {alone:.2f} s"


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def test_a_renewed_access_token_ends_with_its_refresh_token(kiln_server: KilnServer) -> None:
    url = kiln_server.url
    issued = httpx.post(
        f"{url}/_auth/token", json={"username": ADMIN_AUTH[0], "password": ADMIN_AUTH[1]}
    ).json()
    assert issued["expires_in"] == 3600
    refresh_expires = claims_of(issued["refresh_token"])["exp"]
    renewed = httpx.post(f"{url}/_auth/refresh", json={"refresh_token": issued["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    access = renewed.json()["access_token"]
    assert claims_of(access)["exp"] == refresh_expires
    assert renewed.json()["expires_in"] <= 2
    headers = {"authorization": f"Bearer {access}"}
    assert httpx.get(f"{url}/Dog/", headers=headers).status_code == 200
    time.sleep(max(0.0, refresh_expires + 1 - time.time()))  # the session is over
    ended = httpx.get(f"{url}/Dog/", headers=headers)
    assert ended.status_code == 401
    assert ended.json()["detail"] == "the access token has expired"


def test_a_user_name_no_user_can_have_is_400_naming_it_and_a_failed_login(
    kiln_server: KilnServer,
) -> None:
    async def attempts() -> list[httpx.Response]:
        async with from_address("127.0.0.5") as client:
            url = f"{kiln_server.url}/_auth/token"
            names = ["has space", "x" * 600, *[""] * 10, ""]
            return [
                await client.post(url, json={"username": name, "password": "x"}) for name in names
            ]

    *refused, blocked = asyncio.run(attempts())
    for response in refused:
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        errors = response.json()["errors"]
        assert [error["path"] for error in errors] == ["$.username"]
        assert errors[0]["message"].startswith("`username` cannot be a user name")
    assert blocked.status_code == 429  # the tenth failure of ('', 127.0.0.5) was counted
    assert "failed login as '' from 127.0.0.5: not a user name" in kiln_server.log()
    assert "Traceback" not in kiln_server.log()
