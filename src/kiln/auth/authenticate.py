"""Credentials → the :class:`~kiln.auth.roles.User` a request runs as; every protocol calls this.

:meth:`Authenticator.authenticate` reads an ``Authorization`` header (HTTP Basic,
or ``Bearer`` with an access token); :meth:`Authenticator.login` checks a user
name and password (``POST /_auth/token``, MQTT ``CONNECT``). A request without
credentials runs as the ``anonymous`` role when ``config.yaml`` declares one
(else as nobody: tables answer 401), or as a super user from a loopback address
when ``authentication.trustLoopback`` is on and the request names this machine
(its ``Host`` is a loopback name: a page of another site that a DNS rebinding
pointed here names that site).

A password check costs about 50 ms, so it runs in a thread, at most
:attr:`Authenticator.CHECKS_PER_ADDRESS` at once per client address (one address
cannot take every thread), concurrent checks of one header share one run, and a
verified header is remembered for ``authentication.cacheTimeout``. A remembered
header is used only while the user store's credential epoch is unchanged; when it
moves (any user changed, maybe by ``kiln user`` in another process), the entry is
checked again against its user's own epoch: a new password or a removed user
takes effect at the next request.
Failed logins are counted by :class:`~kiln.auth.limiter.Limiter` and logged,
never with the password.
"""

from __future__ import annotations

import asyncio
import binascii
import ipaddress
import logging
import time
from base64 import b64decode
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kiln.auth.access import BASIC_CHALLENGE, unauthorized
from kiln.auth.limiter import Limiter
from kiln.auth.passwords import verify_password
from kiln.auth.roles import ANONYMOUS, SUPER_USER_ROLE, Role, User
from kiln.auth.tokens import BEARER_CHALLENGE, TokenKind, Tokens
from kiln.auth.users import NAME, StoredUser, UserStore
from kiln.errors import Unauthorized

LOOPBACK_USER = User("(loopback)", SUPER_USER_ROLE)
"""Who a loopback request without credentials is when ``authentication.trustLoopback`` is on."""

log = logging.getLogger("kiln.auth")


class NotAUserName(Unauthorized):
    """A login with a user name no user can have: refused without a password check."""

    def __init__(self) -> None:
        super().__init__(
            "the user name is not one a user can have",
            hint="a user name is up to 64 letters, digits and _ . @ + -, starting with a "
            "letter or digit",
            headers={"WWW-Authenticate": BASIC_CHALLENGE},
        )


@dataclass(slots=True)
class _Entry:
    """A verified ``Authorization`` header: who it proves, and while what holds."""

    user: User
    name: str
    user_epoch: int
    store_epoch: int
    expires: float
    """``time.monotonic()`` after which it must be verified again."""


class Authenticator:
    """Turns credentials into users, for one app.

    Args:
        users: the system database.
        roles: the roles by name (:func:`~kiln.auth.roles.build_roles`).
        tokens: issues and reads bearer tokens.
        cache_ttl: seconds a verified header is remembered.
        trust_loopback: loopback requests without credentials that name a loopback host
            (``Host``) are super users.
        limiter: counts failed logins (a fresh :class:`Limiter` by default).
    """

    MAX_CACHED = 10_000
    """Verified headers remembered at most; the oldest is forgotten first."""

    CHECKS_PER_ADDRESS = 2
    """Password checks running at once for one client address; its other logins wait."""

    def __init__(
        self,
        users: UserStore,
        roles: Mapping[str, Role],
        tokens: Tokens,
        *,
        cache_ttl: float,
        trust_loopback: bool = False,
        limiter: Limiter | None = None,
    ):
        self.users = users
        self.roles = roles
        self.tokens = tokens
        self.cache_ttl = cache_ttl
        self.trust_loopback = trust_loopback
        self.limiter = limiter or Limiter()
        self.anonymous = User(None, roles[ANONYMOUS]) if ANONYMOUS in roles else None
        """Who a request without credentials is: the ``anonymous`` role, or nobody (None)."""
        self._cache: dict[str, _Entry] = {}
        self._pending: dict[str, asyncio.Task[User]] = {}
        self._checks: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}
        """Per client address: the turns its password checks take, and how many logins hold
        or wait for one (the entry goes when none do)."""

    async def authenticate(
        self, authorization: str | None, client: str, host: str | None = None
    ) -> User | None:
        """The user an ``Authorization`` header proves; without one, the anonymous user.

        Args:
            authorization: the header's value, or None when the request has none.
            client: the client's address as ``host:port`` (RSGI's ``scope.client``).
            host: the request's ``Host`` header (``""`` when it has none); None for a
                protocol without one (MQTT over TCP). With ``trust_loopback``, a request
                without credentials is trusted only when it names a loopback host.

        Returns:
            The user; None for a request without credentials when no ``anonymous``
            role is declared (the resource then answers 401 where it needs a user).

        Raises:
            Unauthorized: the credentials are malformed, wrong, or an invalid token.
            TooManyRequests: too many failed logins from ``client`` for that user.
        """
        if authorization is None:
            if self.trust_loopback and _from_this_machine(client, host):
                return LOOPBACK_USER
            return self.anonymous
        entry = self._cache.get(authorization)
        if entry is not None:
            user = self._still_valid(authorization, entry)
            if user is not None:
                return user
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            pending = self._pending.get(authorization)
            if pending is None:
                pending = asyncio.ensure_future(self._basic(authorization, credentials, client))
                self._pending[authorization] = pending
                pending.add_done_callback(lambda _: self._pending.pop(authorization, None))
            return await asyncio.shield(pending)
        if scheme == "bearer":
            return self._bearer(authorization, credentials.strip(), client)
        raise unauthorized(
            f"the Authorization header uses the scheme {scheme[:20]!r}, which kiln does not take",
            "send `Basic base64(user:password)` or `Bearer <access token from POST /_auth/token>`",
        )

    async def login(self, name: str, password: str, client: str) -> StoredUser:
        """The user ``name``, once ``password`` is checked against its hash.

        The login counts against the limits from the start (a guess still being checked
        may fail), and anything but a success ends it as a failed login.

        Raises:
            Unauthorized: no such user or a wrong password (the answer does not say which).
            NotAUserName: ``name`` is not a name a user can have.
            TooManyRequests: too many failed logins from ``client`` for ``name``.
        """
        address = _host(client)
        self.limiter.begin(name, address)
        try:
            stored = await self._check(name, password, address)
        except BaseException:
            self.limiter.failed(name, address)
            raise
        self.limiter.succeeded(name, address)
        return stored

    def refresh(self, refresh_token: str, client: str) -> dict[str, Any]:
        """A new access token, given a refresh token (``POST /_auth/refresh``).

        Raises:
            Unauthorized: the refresh token is invalid, expired, or its user changed.
        """
        stored, expires = self._token_user(refresh_token, "refresh", client)
        return self.tokens.renew(stored, refresh_token, expires)

    def user(self, stored: StoredUser) -> User:
        """The request user for a stored user: its name and its role's permissions.

        A role that ``config.yaml`` does not declare grants nothing.
        """
        return User(stored.name, self.roles.get(stored.role) or Role(stored.role))

    def _still_valid(self, authorization: str, entry: _Entry) -> User | None:
        """The cached user, or None when the entry expired or its user changed."""
        if entry.expires > time.monotonic():
            epoch = self.users.epoch()
            if epoch == entry.store_epoch:
                return entry.user
            stored = self.users.get(entry.name)
            if stored is not None and stored.epoch == entry.user_epoch:
                entry.user, entry.store_epoch = self.user(stored), epoch
                return entry.user
        del self._cache[authorization]
        return None

    async def _check(self, name: str, password: str, address: str) -> StoredUser:
        """The user ``name`` once ``password`` is verified, in one of ``address``'s turns."""
        if not NAME.fullmatch(name):
            log.warning("failed login as %r from %s: not a user name", name[:80], address)
            raise NotAUserName
        async with self._turn(address):
            stored = self.users.get(name)
            hashed = stored.password_hash if stored is not None else None
            verified = await asyncio.to_thread(verify_password, hashed, password)
        if not verified or stored is None:
            why = "no such user" if stored is None else "wrong password"
            log.warning("failed login as %r from %s: %s", name, address, why)
            raise unauthorized(
                "the user name or password is wrong",
                "check both; after 10 failures in a minute each try must wait longer",
            )
        return stored

    @asynccontextmanager
    async def _turn(self, address: str) -> AsyncIterator[None]:
        """Wait until ``address`` has fewer than :attr:`CHECKS_PER_ADDRESS` checks running."""
        turns, users = self._checks.setdefault(
            address, (asyncio.Semaphore(self.CHECKS_PER_ADDRESS), [0])
        )
        users[0] += 1
        try:
            async with turns:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._checks[address]  # nobody holds or waits for a turn: keep it small

    async def _basic(self, authorization: str, credentials: str, client: str) -> User:
        name, password = _basic_credentials(credentials)
        epoch = self.users.epoch()  # read first: a change while verifying is seen next time
        stored = await self.login(name, password, client)
        return self._remember(authorization, stored, epoch, self.cache_ttl)

    def _bearer(self, authorization: str, token: str, client: str) -> User:
        epoch = self.users.epoch()
        stored, expires = self._token_user(token, "access", client)
        ttl = min(self.cache_ttl, expires - time.time())
        return self._remember(authorization, stored, epoch, ttl)

    def _token_user(self, token: str, kind: TokenKind, client: str) -> tuple[StoredUser, float]:
        """The user a token names and when the token expires, once both are checked."""
        try:
            claims = self.tokens.read(token, kind)
        except Unauthorized as error:
            log.info("rejected a %s token from %s: %s", kind, _host(client), error.detail)
            raise
        stored = self.users.get(claims.name)
        if stored is None or stored.epoch != claims.epoch:
            log.info("rejected a %s token of %r from %s: stale", kind, claims.name, _host(client))
            raise Unauthorized(
                f"the {kind} token was issued before its user's password changed or the user "
                "was removed",
                hint="log in again at POST /_auth/token",
                headers={"WWW-Authenticate": BEARER_CHALLENGE},
            )
        return stored, claims.expires

    def _remember(self, authorization: str, stored: StoredUser, epoch: int, ttl: float) -> User:
        """Remember that ``authorization`` proves ``stored`` (at store ``epoch``) for ``ttl`` s."""
        user = self.user(stored)
        if len(self._cache) >= self.MAX_CACHED:
            del self._cache[next(iter(self._cache))]
        expires = time.monotonic() + ttl
        self._cache[authorization] = _Entry(user, stored.name, stored.epoch, epoch, expires)
        return user


def _basic_credentials(credentials: str) -> tuple[str, str]:
    """The user name and password of a Basic header's base64 part.

    Raises:
        Unauthorized: it is not base64 of UTF-8 ``name:password``.
    """
    try:
        text = b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, ValueError):
        raise unauthorized(
            "the Basic credentials are not base64 of UTF-8 `user:password`",
            "encode `user:password` (UTF-8) in base64, as `curl -u user:password` does",
        ) from None
    name, colon, password = text.partition(":")
    if not colon or not name:
        raise unauthorized(
            "the Basic credentials hold no `user:password` pair",
            "encode `user:password` (UTF-8) in base64, as `curl -u user:password` does",
        )
    return name, password


def _host(client: str) -> str:
    """The host part of a ``host:port`` client address (``[::1]:5000`` → ``::1``)."""
    return client.rsplit(":", 1)[0].strip("[]") if ":" in client else client


def _from_this_machine(client: str, host: str | None) -> bool:
    """Whether a request comes from a loopback address and (``host`` None: a protocol without
    ``Host``) names a loopback host: ``localhost``, ``127.0.0.1``, ``[::1]``, any port."""
    if not _is_loopback(_host(client)):
        return False
    if host is None:
        return True
    name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
    return _is_loopback(name.lower())


@lru_cache(maxsize=1024)
def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
