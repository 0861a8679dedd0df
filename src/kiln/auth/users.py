"""The system database: users (name, role, password hash, credential epoch) and kiln's secrets.

It is an LMDB environment of its own, ``<storage.path>/.system``, which the
server and ``kiln user`` may open at the same time: LMDB lets several processes
share one environment, and every read here is a fresh read transaction, so a
running server sees what the command line wrote within 50 ms
(:data:`EPOCH_TRUSTED_FOR`).

Each change to a user takes the next value of a counter, the **credential
epoch**: the user's own epoch moves when its password changes (or it is removed
and added again), and the store's epoch moves on every change. Tokens carry the
user's epoch (a new password invalidates them all); caches of verified
credentials compare the store's epoch on each use (:meth:`UserStore.epoch`, one
small read at most every 50 ms).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb
import msgspec

from kiln.errors import KilnError
from kiln.storage.database import open_lmdb

SYSTEM_FOLDER = ".system"
"""The system database's folder under ``storage.path`` (a name no schema database can take)."""

MAP_SIZE = 64 * 1024**2
"""The system database's size limit: room for about a hundred thousand users."""

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}", re.ASCII)
"""A user name: up to 64 letters, digits and ``_ . @ + -``, starting with a letter or digit."""

_USERS = b"users"
_META = b"meta"
_EPOCH = b"epoch"
EPOCH_TRUSTED_FOR = 0.05
"""Seconds a read of the store's epoch is trusted (:meth:`UserStore.epoch`)."""
_SIGNING_KEY = b"jwt-signing-key"


class StoredUser(msgspec.Struct, frozen=True):
    """A user as the system database holds it."""

    name: str
    role: str
    password_hash: str
    epoch: int
    """The credential epoch of its last password change; tokens carry it."""
    created: float
    """Seconds since the Unix epoch when the user was added."""


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(StoredUser).decode


def check_name(name: str) -> None:
    """Accept ``name`` as a user name, or say why not.

    Raises:
        KilnError: it does not match :data:`NAME`.
    """
    if not NAME.fullmatch(name):
        raise KilnError(
            f"{name!r} cannot be a user name",
            hint="use up to 64 letters, digits and _ . @ + -, starting with a letter or digit",
        )


class UserStore:
    """The users and secrets in the system database at ``path`` (created if absent)."""

    def __init__(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.env = open_lmdb(
            path, map_size=MAP_SIZE, max_dbs=4, subdir=True, sync=True, max_spare_txns=2
        )
        self._epoch = 0
        self._epoch_until = 0.0  # monotonic time until which _epoch is trusted
        self._writes = 0  # writes committed through this store, to spot one during a read
        try:
            self._users = self.env.open_db(_USERS)
            self._meta = self.env.open_db(_META)
        except BaseException:
            self.env.close()
            raise

    def epoch(self) -> int:
        """The store's credential epoch: it moves on every change to any user.

        Asked on every authenticated request, so a read is trusted for
        :data:`EPOCH_TRUSTED_FOR` seconds: this process's own changes are seen at once,
        another process's (``kiln user ...``) within that time. The read itself goes
        without a context manager (a third cheaper); its transaction is always aborted.
        """
        now = time.monotonic()
        if now < self._epoch_until:
            return self._epoch
        writes = self._writes
        txn = self.env.begin(db=self._meta)
        try:
            raw = txn.get(_EPOCH)
        finally:
            txn.abort()
        epoch = 0 if raw is None else int.from_bytes(raw, "big")
        if writes == self._writes:  # no write of this store committed while reading
            self._epoch, self._epoch_until = epoch, now + EPOCH_TRUSTED_FOR
        return epoch

    def get(self, name: str) -> StoredUser | None:
        """The user called ``name``, or None."""
        with self.env.begin(db=self._users) as txn:
            raw = txn.get(name.encode())
        return None if raw is None else _decode(raw)

    def users(self) -> list[StoredUser]:
        """Every user, by name."""
        with self.env.begin(db=self._users) as txn:
            return [_decode(raw) for _key, raw in txn.cursor()]

    def add(self, name: str, role: str, password_hash: str) -> StoredUser:
        """Add a user.

        Raises:
            KilnError: the name is not a valid user name, or is taken.
        """
        check_name(name)
        with self._write() as txn:
            if txn.get(name.encode(), db=self._users) is not None:
                raise KilnError(
                    f"there is a user called {name!r} already",
                    hint="choose another name, or change its password with `kiln user passwd`",
                )
            user = StoredUser(name, role, password_hash, self._next_epoch(txn), time.time())
            txn.put(name.encode(), _encode(user), db=self._users)
        return user

    def set_password(self, name: str, password_hash: str) -> StoredUser:
        """Give the user a new password; its tokens and cached logins stop working.

        Raises:
            KilnError: there is no such user.
        """
        with self._write() as txn:
            user = self._existing(txn, name)
            changed = msgspec.structs.replace(
                user, password_hash=password_hash, epoch=self._next_epoch(txn)
            )
            txn.put(name.encode(), _encode(changed), db=self._users)
        return changed

    def set_role(self, name: str, role: str) -> StoredUser:
        """Give the user another role (its tokens stay valid and carry the new role).

        Raises:
            KilnError: there is no such user.
        """
        with self._write() as txn:
            changed = msgspec.structs.replace(self._existing(txn, name), role=role)
            self._next_epoch(txn)
            txn.put(name.encode(), _encode(changed), db=self._users)
        return changed

    def remove(self, name: str) -> None:
        """Remove the user; its tokens and cached logins stop working.

        Raises:
            KilnError: there is no such user.
        """
        with self._write() as txn:
            self._existing(txn, name)
            txn.delete(name.encode(), db=self._users)
            self._next_epoch(txn)

    def signing_key(self) -> bytes:
        """The key that signs tokens: made at the first call and kept with the data."""
        with self.env.begin(db=self._meta) as txn:
            key = txn.get(_SIGNING_KEY)
        if key is not None:
            return bytes(key)
        with self._write() as txn:
            key = txn.get(_SIGNING_KEY, db=self._meta)  # another process may have made it
            if key is None:
                key = secrets.token_bytes(32)
                txn.put(_SIGNING_KEY, key, db=self._meta)
        return bytes(key)

    def close(self) -> None:
        """Close the environment."""
        self.env.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[lmdb.Transaction]:
        """A write transaction; once it commits, the next :meth:`epoch` reads again."""
        with self.env.begin(write=True) as txn:
            yield txn
        self._writes += 1
        self._epoch_until = 0.0

    def _next_epoch(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(_EPOCH, db=self._meta)
        epoch = (0 if raw is None else int.from_bytes(raw, "big")) + 1
        txn.put(_EPOCH, epoch.to_bytes(8, "big"), db=self._meta)
        return epoch

    def _existing(self, txn: lmdb.Transaction, name: str) -> StoredUser:
        raw = txn.get(name.encode(), db=self._users)
        if raw is None:
            known = ", ".join(user.name for user in self._all(txn)) or "none yet"
            raise KilnError(f"there is no user called {name!r}", hint=f"the users are: {known}")
        return _decode(raw)

    def _all(self, txn: lmdb.Transaction) -> Iterator[StoredUser]:
        for _key, raw in txn.cursor(db=self._users):
            yield _decode(raw)


def open_users(storage: Path) -> UserStore:
    """The system database of the data folder ``storage`` (``storage.path``)."""
    return UserStore(storage / SYSTEM_FOLDER)
