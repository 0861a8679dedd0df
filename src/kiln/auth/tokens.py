"""Bearer tokens: signed JWTs (HS256) naming a user and its credential epoch.

An access token is sent as ``Authorization: Bearer <token>`` on requests; a
refresh token only renews access tokens (``POST /_auth/refresh``), each expiring
no later than the refresh token, so renewing never extends a session. Each carries
the user's credential epoch (:mod:`kiln.auth.users`): a new password or a removed
user makes every token issued before it invalid. The key is made at first start
and kept in the system database, never in ``config.yaml``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from kiln.auth.users import StoredUser
from kiln.errors import Unauthorized

TokenKind = Literal["access", "refresh"]

BEARER_CHALLENGE = 'Bearer realm="kiln", error="invalid_token"'
"""The ``WWW-Authenticate`` value answering a token that does not prove anything."""

_ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid token says: whose it is, at which credential epoch, until when."""

    name: str
    epoch: int
    expires: float
    """Seconds since the Unix epoch."""


class Tokens:
    """Issues and reads tokens signed with ``key``.

    Args:
        key: the signing key (:meth:`kiln.auth.users.UserStore.signing_key`).
        access_seconds: how long an access token is valid.
        refresh_seconds: how long a refresh token is valid.
    """

    def __init__(self, key: bytes, access_seconds: float, refresh_seconds: float):
        self._key = key
        self.access_seconds = access_seconds
        self.refresh_seconds = refresh_seconds

    def issue(self, user: StoredUser) -> dict[str, Any]:
        """A new access token and refresh token for ``user``, as ``POST /_auth/token`` answers."""
        now = int(time.time())
        refresh_token = self._token(user, "refresh", now, now + int(self.refresh_seconds))
        return self._answer(user, refresh_token, now, now + int(self.access_seconds))

    def renew(self, user: StoredUser, refresh_token: str, refresh_expires: float) -> dict[str, Any]:
        """A new access token for ``user``, with the refresh token it was renewed by.

        It expires ``access_seconds`` from now, or when the refresh token does
        (``refresh_expires``, seconds since the Unix epoch) if that is sooner.
        """
        now = int(time.time())
        expires = min(now + int(self.access_seconds), int(refresh_expires))
        return self._answer(user, refresh_token, now, expires)

    def read(self, token: str, kind: TokenKind) -> Claims:
        """The claims of ``token``, once its signature, expiry and kind are checked.

        Raises:
            Unauthorized: the token is malformed, forged, expired or of the other kind.
        """
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "sub", "epoch", "kind"]},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid(
                f"the {kind} token has expired",
                "get a new one from POST /_auth/token"
                if kind == "refresh"
                else "renew it at POST /_auth/refresh, or log in again at POST /_auth/token",
            ) from None
        except jwt.InvalidTokenError:
            raise _invalid(
                f"the {kind} token is not one this server issued, or it was altered",
                "get a new one from POST /_auth/token",
            ) from None
        if claims["kind"] != kind:
            if kind == "access":
                raise _invalid(
                    "a refresh token only renews access tokens",
                    'send it as {"refresh_token": ...} to POST /_auth/refresh and use the '
                    "access token that answers",
                )
            raise _invalid("this is an access token, not a refresh token", "send the refresh token")
        name, epoch = claims["sub"], claims["epoch"]
        if not isinstance(name, str) or not isinstance(epoch, int):
            raise _invalid(f"the {kind} token is malformed", "get a new one from POST /_auth/token")
        return Claims(name, epoch, float(claims["exp"]))

    def _answer(
        self, user: StoredUser, refresh_token: str, now: int, expires: int
    ) -> dict[str, Any]:
        """The answer carrying a new access token issued at ``now``, valid until ``expires``."""
        return {
            "access_token": self._token(user, "access", now, expires),
            "refresh_token": refresh_token,
            "token_type": "Bearer",
            "expires_in": expires - now,
        }

    def _token(self, user: StoredUser, kind: TokenKind, now: int, expires: int) -> str:
        payload = {"sub": user.name, "epoch": user.epoch, "kind": kind, "iat": now, "exp": expires}
        return jwt.encode(payload, self._key, algorithm=_ALGORITHM)


def _invalid(detail: str, hint: str) -> Unauthorized:
    return Unauthorized(detail, hint=hint, headers={"WWW-Authenticate": BEARER_CHALLENGE})
