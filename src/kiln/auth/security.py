"""An app's security, opened together: roles, the system database, tokens, logins, CORS.

:func:`open_security` is called by :func:`kiln.app.load_app` once the schema is
read (roles are checked against it); :func:`create_admin` makes the first super
user from ``KILN_ADMIN_USER``/``KILN_ADMIN_PASSWORD`` at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from kiln.auth.authenticate import Authenticator
from kiln.auth.cors import Cors
from kiln.auth.passwords import check_password, hash_password
from kiln.auth.roles import ANONYMOUS, SUPER_USER, Role
from kiln.auth.tokens import Tokens
from kiln.auth.users import StoredUser, UserStore, check_name, open_users
from kiln.config import Config
from kiln.errors import ConfigError, KilnError

ADMIN_USER_ENV = "KILN_ADMIN_USER"
ADMIN_PASSWORD_ENV = "KILN_ADMIN_PASSWORD"

log = logging.getLogger("kiln.auth")


@dataclass
class Security:
    """The security of one loaded app."""

    roles: dict[str, Role]
    users: UserStore
    authenticator: Authenticator
    cors: Cors
    trust_loopback: bool

    def close(self) -> None:
        """Close the system database."""
        self.users.close()

    def notes(self) -> list[str]:
        """Lines for the start-up banner: loopback trust, and how to get in when no one can."""
        lines = []
        if self.trust_loopback:
            lines.append(
                "authentication.trustLoopback is on: requests from this machine without "
                "credentials are super users"
            )
        users = self.users.users()
        if not users and ANONYMOUS not in self.roles:
            lines.append(
                "no users yet, so tables answer 401: add one with `kiln user add NAME --role "
                f"super_user`, or start with {ADMIN_USER_ENV} and {ADMIN_PASSWORD_ENV} set"
            )
        for user in users:
            if user.role not in self.roles:
                lines.append(
                    f"warning: user {user.name!r} has the role {user.role!r}, which config.yaml "
                    "does not declare: it may do nothing"
                )
        return lines


def open_security(config: Config, roles: dict[str, Role]) -> Security:
    """Open the system database under ``storage.path`` and set up logins for ``roles``.

    The token signing key is made here at the first start.
    """
    auth = config.authentication
    users = open_users(config.storage.path)
    try:
        tokens = Tokens(users.signing_key(), auth.token_timeout, auth.refresh_token_timeout)
        authenticator = Authenticator(
            users,
            roles,
            tokens,
            cache_ttl=auth.cache_timeout,
            trust_loopback=auth.trust_loopback,
        )
    except BaseException:
        users.close()
        raise
    return Security(roles, users, authenticator, Cors(config.http.cors), auth.trust_loopback)


def create_admin(users: UserStore, env: Mapping[str, str]) -> StoredUser | None:
    """Add the super user ``KILN_ADMIN_USER`` with ``KILN_ADMIN_PASSWORD``, unless it exists.

    An existing user of that name is left as it is (its password may have changed
    since). Returns the user added, if any.

    Raises:
        ConfigError: only one of the two variables is set, or a value is not acceptable.
    """
    name, password = env.get(ADMIN_USER_ENV), env.get(ADMIN_PASSWORD_ENV)
    if name is None and password is None:
        return None
    if not name or not password:
        given, missing = (
            (ADMIN_USER_ENV, ADMIN_PASSWORD_ENV) if name else (ADMIN_PASSWORD_ENV, ADMIN_USER_ENV)
        )
        raise ConfigError(
            f"{given} is set but {missing} is not",
            file="environment",
            hint="set both to create the first super user, or neither",
        )
    try:
        check_name(name)
        check_password(password)
    except KilnError as error:
        raise ConfigError(
            f"{ADMIN_USER_ENV}/{ADMIN_PASSWORD_ENV}: {error.message}",
            file="environment",
            hint=error.hint,
        ) from None
    if users.get(name) is not None:
        return None
    user = users.add(name, SUPER_USER, hash_password(password))
    log.info("added the super user %r from %s", name, ADMIN_USER_ENV)
    return user
