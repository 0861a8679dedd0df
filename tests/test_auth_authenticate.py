"""The security core below the protocols: the system database (:mod:`kiln.auth.users`),
passwords, tokens and :class:`~kiln.auth.authenticate.Authenticator` (cache, epochs, loopback)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from kiln.auth import authenticate as authenticate_module
from kiln.auth.authenticate import LOOPBACK_USER, Authenticator, NotAUserName
from kiln.auth.passwords import check_password, hash_password, verify_password
from kiln.auth.roles import ANONYMOUS, SUPER_USER, SUPER_USER_ROLE, Role, TableAccess, User
from kiln.auth.tokens import Tokens
from kiln.auth.users import EPOCH_TRUSTED_FOR, StoredUser, UserStore
from kiln.errors import KilnError, TooManyRequests, Unauthorized

READER = Role("reader", tables={"Dog": TableAccess(read=True)})
ROLES = {SUPER_USER: SUPER_USER_ROLE, "reader": READER}
CLIENT = "10.1.2.3:5555"


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[UserStore]:
    users = UserStore(tmp_path / "system")
    yield users
    users.close()


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def who(auth: Authenticator, header: str | None, client: str = CLIENT) -> User:
    """The user ``header`` proves (failing the test when it proves nobody)."""
    user = asyncio.run(auth.authenticate(header, client))
    assert user is not None
    return user


def make(store: UserStore, roles: dict[str, Role] = ROLES, **options: object) -> Authenticator:
    tokens = Tokens(store.signing_key(), 3600, 86400)
    return Authenticator(store, roles, tokens, cache_ttl=30, **options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- store, passwords


def test_passwords_are_argon2id_and_checked(store: UserStore) -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong horse")
    assert not verify_password("not a hash", "x")
    assert not verify_password(None, "kiln: no such user")  # the decoy never matches
    with pytest.raises(KilnError, match="at least 8"):
        check_password("short")


def test_each_change_moves_the_epochs(store: UserStore) -> None:
    assert store.epoch() == 0
    ann = store.add("ann", "reader", hash_password("ann-password"))
    assert (ann.epoch, store.epoch()) == (1, 1)
    changed = store.set_password("ann", hash_password("new-password"))
    assert (changed.epoch, store.epoch()) == (2, 2)
    moved = store.set_role("ann", SUPER_USER)
    assert (moved.epoch, moved.role, store.epoch()) == (2, SUPER_USER, 3)  # tokens stay valid
    store.remove("ann")
    assert store.get("ann") is None
    again = store.add("ann", "reader", hash_password("ann-password"))
    assert again.epoch == 5  # never an epoch an old token carries


def test_a_change_made_here_is_seen_at_once_despite_the_trusted_read(store: UserStore) -> None:
    hashed = hash_password("ann-password")  # slow: before the read whose trust is tested
    before = store.epoch()
    started = time.monotonic()
    store.add("ann", "reader", hashed)
    assert store.epoch() == before + 1
    assert time.monotonic() - started < EPOCH_TRUSTED_FOR  # still inside the trusted time


def test_store_errors_name_the_user_and_what_to_do(store: UserStore) -> None:
    store.add("ann", "reader", "h")
    with pytest.raises(KilnError, match="there is a user called 'ann' already"):
        store.add("ann", "reader", "h")
    with pytest.raises(KilnError, match="no user called 'bob'") as caught:
        store.remove("bob")
    assert caught.value.hint == "the users are: ann"
    for bad in ("", "a:b", "has space", "-dash", "x" * 65, "ünï"):
        with pytest.raises(KilnError, match="cannot be a user name"):
            store.add(bad, "reader", "h")


def test_the_signing_key_is_made_once_and_kept(tmp_path: Path) -> None:
    first = UserStore(tmp_path / "system")
    key = first.signing_key()
    assert len(key) == 32 and first.signing_key() == key
    first.close()
    again = UserStore(tmp_path / "system")
    assert again.signing_key() == key
    again.close()


def test_another_process_changing_a_user_is_seen_within_the_trusted_time(
    store: UserStore,
) -> None:
    store.add("ann", "reader", hash_password("ann-password"))
    before = store.epoch()
    script = (
        "import sys; from pathlib import Path; from kiln.auth.users import UserStore; "
        "s = UserStore(Path(sys.argv[1])); s.set_role('ann', 'super_user'); s.close()"
    )
    subprocess.run([sys.executable, "-c", script, str(store.path)], check=True, timeout=30)
    time.sleep(EPOCH_TRUSTED_FOR)
    assert store.epoch() == before + 1
    user = store.get("ann")
    assert user is not None and user.role == SUPER_USER


# --------------------------------------------------------------------------- tokens


def test_tokens_carry_name_and_epoch_and_are_checked(store: UserStore) -> None:
    ann = store.add("ann", "reader", "h")
    tokens = Tokens(store.signing_key(), 3600, 86400)
    issued = tokens.issue(ann)
    assert set(issued) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert (issued["token_type"], issued["expires_in"]) == ("Bearer", 3600)
    claims = tokens.read(issued["access_token"], "access")
    assert (claims.name, claims.epoch) == ("ann", ann.epoch)
    assert tokens.read(issued["refresh_token"], "refresh").name == "ann"
    with pytest.raises(Unauthorized, match="a refresh token only renews access tokens"):
        tokens.read(issued["refresh_token"], "access")
    with pytest.raises(Unauthorized, match="this is an access token"):
        tokens.read(issued["access_token"], "refresh")


def test_a_renewed_access_token_expires_with_its_refresh_token(store: UserStore) -> None:
    ann = store.add("ann", "reader", "h")
    tokens = Tokens(store.signing_key(), 3600, 86400)
    refresh_token = tokens.issue(ann)["refresh_token"]
    soon = time.time() + 60
    renewed = tokens.renew(ann, refresh_token, soon)
    assert tokens.read(renewed["access_token"], "access").expires == int(soon)
    assert 59 <= renewed["expires_in"] <= 60
    later = tokens.renew(ann, refresh_token, time.time() + 86400)
    assert later["expires_in"] == 3600


def test_expired_forged_and_unsigned_tokens_are_refused(store: UserStore) -> None:
    ann = store.add("ann", "reader", "h")
    tokens = Tokens(store.signing_key(), 3600, 86400)
    expired = Tokens(store.signing_key(), -10, -10).issue(ann)["access_token"]
    with pytest.raises(Unauthorized, match="the access token has expired") as caught:
        tokens.read(expired, "access")
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    payload = {"sub": "ann", "epoch": ann.epoch, "kind": "access", "exp": int(time.time()) + 60}
    forged = jwt.encode(payload, b"k" * 32, algorithm="HS256")
    unsigned = jwt.encode(payload, None, algorithm="none")
    for token in (forged, unsigned, "garbage", ""):
        with pytest.raises(Unauthorized, match="not one this server issued"):
            tokens.read(token, "access")


# --------------------------------------------------------------------------- authenticator


def test_without_credentials_is_anonymous_or_nobody(store: UserStore) -> None:
    assert asyncio.run(make(store).authenticate(None, CLIENT)) is None
    anonymous = Role(ANONYMOUS, tables={"Dog": TableAccess(read=True)})
    user = who(make(store, {**ROLES, ANONYMOUS: anonymous}), None)
    assert (user.name, user.role) == (None, anonymous)
    assert not user.authenticated


def test_trust_loopback_makes_local_requests_without_credentials_super_users(
    store: UserStore,
) -> None:
    auth = make(store, trust_loopback=True)
    for client in ("127.0.0.1:4000", "127.8.9.10:1", "[::1]:4000"):
        assert who(auth, None, client) is LOOPBACK_USER
    assert asyncio.run(auth.authenticate(None, CLIENT)) is None
    with pytest.raises(Unauthorized):  # credentials are still checked
        asyncio.run(auth.authenticate(basic("nobody", "password1"), "127.0.0.1:4000"))


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("127.0.0.1:9926", True),
        ("localhost:9926", True),
        ("LocalHost", True),
        ("[::1]:9926", True),
        ("[::1]", True),
        ("127.0.0.1", True),
        ("attacker.example:9926", False),  # a DNS rebinding: a page of that site
        ("127.0.0.1.attacker.example", False),
        ("localhost.attacker.example:9926", False),
        ("10.1.2.3:9926", False),
        ("", False),  # an HTTP request without Host
    ],
)
def test_trust_loopback_needs_a_loopback_host(store: UserStore, host: str, trusted: bool) -> None:
    auth = make(store, trust_loopback=True)
    user = asyncio.run(auth.authenticate(None, "127.0.0.1:4000", host))
    assert (user is LOOPBACK_USER) is trusted


def test_basic_is_verified_once_and_remembered(
    store: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add("ann", "reader", hash_password("ann-password"))
    auth = make(store)
    calls = []
    real = authenticate_module.verify_password

    def counting(hashed: str | None, password: str) -> bool:
        calls.append(password)
        return real(hashed, password)

    monkeypatch.setattr(authenticate_module, "verify_password", counting)
    header = basic("ann", "ann-password")

    async def many() -> list[User | None]:
        return await asyncio.gather(*(auth.authenticate(header, CLIENT) for _ in range(8)))

    users = asyncio.run(many())
    assert {user.name for user in users if user is not None} == {"ann"}
    assert len(calls) == 1, "concurrent checks of one header share one verification"
    asyncio.run(auth.authenticate(header, CLIENT))
    assert len(calls) == 1, "a verified header is remembered"


def test_a_changed_user_is_seen_at_the_next_request(store: UserStore) -> None:
    store.add("ann", "reader", hash_password("ann-password"))
    auth = make(store)
    header = basic("ann", "ann-password")
    ann = store.get("ann")
    assert ann is not None
    bearer = f"Bearer {auth.tokens.issue(ann)['access_token']}"
    assert who(auth, header).role is READER
    assert who(auth, bearer).name == "ann"

    store.set_role("ann", SUPER_USER)  # cached entries carry the new role, still valid
    assert who(auth, header).role is SUPER_USER_ROLE
    assert who(auth, bearer).role is SUPER_USER_ROLE

    store.set_password("ann", hash_password("new-password"))
    with pytest.raises(Unauthorized, match="the user name or password is wrong"):
        asyncio.run(auth.authenticate(header, CLIENT))
    with pytest.raises(Unauthorized, match="issued before its user's password changed"):
        asyncio.run(auth.authenticate(bearer, CLIENT))
    assert who(auth, basic("ann", "new-password")).name == "ann"

    store.remove("ann")
    with pytest.raises(Unauthorized):
        asyncio.run(auth.authenticate(basic("ann", "new-password"), CLIENT))


def test_a_user_whose_role_is_not_declared_may_do_nothing(store: UserStore) -> None:
    store.add("old", "retired", hash_password("old-password"))
    assert who(make(store), basic("old", "old-password")).role == Role("retired")


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":no-name").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        "Bearer",
        "Bearer not.a.jwt",
        "Digest username=ann",
        "",
    ],
)
def test_malformed_credentials_are_401(store: UserStore, header: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        asyncio.run(make(store).authenticate(header, CLIENT))
    assert caught.value.headers["WWW-Authenticate"].split()[0] in ("Basic", "Bearer")


@pytest.mark.parametrize("name", ["", "a b", "x" * 600, "-dash"])
def test_a_name_no_user_can_have_is_a_failed_login_without_a_password_check(
    store: UserStore, name: str
) -> None:
    auth = make(store)
    for _ in range(10):
        with pytest.raises(NotAUserName) as caught:
            asyncio.run(auth.login(name, "guess-123", CLIENT))
        assert caught.value.status == 401
    with pytest.raises(TooManyRequests):
        asyncio.run(auth.login(name, "guess-123", CLIENT))


def test_failed_logins_are_limited_and_logged_without_the_password(
    store: UserStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.add("ann", "reader", hash_password("ann-password"))
    auth = make(store)
    for _ in range(10):
        with pytest.raises(Unauthorized):
            asyncio.run(auth.login("ann", "guess-123", CLIENT))
    with pytest.raises(TooManyRequests):
        asyncio.run(auth.login("ann", "ann-password", CLIENT))
    assert asyncio.run(auth.login("ann", "ann-password", "10.9.9.9:1")).name == "ann"
    failures = [r.getMessage() for r in caplog.records if "failed login" in r.getMessage()]
    assert len(failures) == 10
    assert failures[0] == "failed login as 'ann' from 10.1.2.3: wrong password"
    assert not any("guess-123" in record.getMessage() for record in caplog.records)


def test_guesses_sent_at_once_are_still_limited(store: UserStore) -> None:
    """A login counts against the limit from its start: forty guesses in flight together
    cannot all pass the limiter before the first failure is counted."""
    store.add("ann", "reader", hash_password("ann-password"))
    auth = make(store)

    async def storm() -> list[BaseException | StoredUser]:
        guesses = [auth.login("ann", f"guess-{n}", CLIENT) for n in range(40)]
        return await asyncio.gather(
            *guesses, auth.login("ann", "ann-password", CLIENT), return_exceptions=True
        )

    results = asyncio.run(storm())
    assert sum(isinstance(result, Unauthorized) for result in results) == 10
    assert sum(isinstance(result, TooManyRequests) for result in results) == 31
    assert auth._checks == {}  # the per-address turns are gone once nobody waits
