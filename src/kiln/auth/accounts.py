"""``kiln user``: add, list, change and remove users in an app's data folder.

The system database is opened directly, whether or not the app is running (LMDB
lets the server and this command share it), and a running server sees each
change at its next request. The app's ``config.yaml`` says where the data is
(``storage.path``) and which roles exist; ``--data DIR`` names the data folder
alone, and then any role name is taken.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from kiln.auth.passwords import check_password, hash_password
from kiln.auth.roles import SUPER_USER, build_roles
from kiln.auth.users import StoredUser, UserStore, check_name, open_users
from kiln.config import CONFIG_FILE, load_config
from kiln.errors import KilnError
from kiln.schema import load_schema


class Accounts:
    """The users of one data folder, and the roles its app declares (None: unknown).

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        store: UserStore,
        roles: frozenset[str] | None,
        read_roles: Callable[[], object] | None = None,
    ):
        self.store = store
        self.roles = roles
        self._read_roles = read_roles
        """Reads the roles as ``kiln run`` does (raising its errors), before one is given."""

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, name: str, password: str, role: str) -> StoredUser:
        """Add the user ``name`` with ``password`` and ``role``.

        Raises:
            KilnError: a bad name or password, an undeclared role, or a taken name.
        """
        check_name(name)
        self.check_role(role)
        check_password(password)
        return self.store.add(name, role, hash_password(password))

    def passwd(self, name: str, password: str) -> StoredUser:
        """Give ``name`` a new password; its tokens and remembered logins stop working.

        Raises:
            KilnError: a bad password, or no such user.
        """
        check_password(password)
        return self.store.set_password(name, hash_password(password))

    def set_role(self, name: str, role: str) -> StoredUser:
        """Give ``name`` another role.

        Raises:
            KilnError: an undeclared role, or no such user.
        """
        self.check_role(role)
        return self.store.set_role(name, role)

    def remove(self, name: str) -> None:
        """Remove ``name``; its tokens and remembered logins stop working.

        Raises:
            KilnError: no such user.
        """
        self.store.remove(name)

    def users(self) -> list[StoredUser]:
        """Every user, by name."""
        return self.store.users()

    def close(self) -> None:
        """Close the system database."""
        self.store.close()

    def check_role(self, role: str) -> None:
        """Accept ``role`` as one a user may be given.

        Raises:
            KilnError: the app declares no such role.
            ConfigError: the app's roles have a mistake ``kiln run`` would refuse.
            SchemaError: the schema they are read against has one.
        """
        if self.roles is None:
            return
        if self._read_roles is not None:
            self._read_roles()
        if role in self.roles:
            return
        listed = ", ".join(sorted(self.roles))
        raise KilnError(
            f"the app declares no role {role!r}",
            hint=f"the roles are: {listed}; declare others under `roles:` in {CONFIG_FILE}",
        )


def open_accounts(app_dir: Path | None, data: Path | None) -> Accounts:
    """The users of the app in ``app_dir`` (its ``storage.path``), or of the data folder ``data``.

    Raises:
        ConfigError: the app's ``config.yaml`` has a mistake (its roles are read against
            the schema only when a role is given: :meth:`Accounts.check_role`).
        KilnError: neither names an app or a data folder.
    """
    if app_dir is not None and (app_dir / "schema.graphql").is_file():
        overrides = {"storage.path": str(data.resolve()) if data is not None else None}
        config = load_config(app_dir, env=os.environ, overrides=overrides)
        roles = frozenset({SUPER_USER, *map(str, config.roles)})
        schema_file = app_dir / "schema.graphql"
        # Giving a role reads the roles as `kiln run` does: a role it would refuse is no role
        # to give. Listing or removing users needs no schema, so a broken one stops neither.
        return Accounts(
            open_users(config.storage.path),
            roles,
            lambda: build_roles(config, load_schema(schema_file)),
        )
    if data is not None:
        return Accounts(open_users(data.resolve()), None)
    where = app_dir.resolve() if app_dir is not None else Path.cwd()
    raise KilnError(
        f"{where} holds no schema.graphql, so it is not an app folder",
        hint="run the command in the app folder, or give --app APP_DIR or --data DATA_DIR",
    )
