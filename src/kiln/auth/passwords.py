"""Password hashing with argon2id: hash once when a password is set, verify at each login.

Verifying takes tens of milliseconds and about 64 MiB by design (argon2-cffi's
defaults, RFC 9106's second recommended option), so callers run it off the event
loop and remember what they verified (:mod:`kiln.auth.authenticate`).
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from kiln.errors import KilnError

MIN_LENGTH = 8
"""The shortest password accepted when one is set."""

MAX_LENGTH = 1024
"""The longest password accepted when one is set (a bound on the work a login costs)."""

_hasher = PasswordHasher()


def check_password(password: str) -> None:
    """Accept ``password`` as a new password, or say why not.

    Raises:
        KilnError: it is shorter than :data:`MIN_LENGTH` or longer than :data:`MAX_LENGTH`.
    """
    if len(password) < MIN_LENGTH:
        raise KilnError(
            f"the password has {len(password)} characters; it needs at least {MIN_LENGTH}",
            hint="choose a longer one; a few random words make a good password",
        )
    if len(password) > MAX_LENGTH:
        raise KilnError(
            f"the password is longer than {MAX_LENGTH} characters; choose a shorter one"
        )


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``, in PHC string form (salt and parameters included)."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; never raises for a wrong password.

    With ``password_hash`` None (no such user) it still does the work of one
    verification, so the time taken does not tell which user names exist.
    """
    try:
        return _hasher.verify(password_hash or _decoy(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@cache
def _decoy() -> str:
    """A hash of nothing anyone knows, verified in place of a missing user's."""
    return _hasher.hash("kiln: no such user")
