"""Failed-login limits: exponential back-off per (user, client address), and per address.

After :attr:`Limiter.failures` failed logins for one user from one address
within :attr:`Limiter.window` seconds, that pair must wait before its next try:
1 s, then twice as long after each further failure, up to
:attr:`Limiter.max_wait`, until it has been quiet for a whole window after its
last wait. A looser limit counts every failure of an address, whatever the user
(guessing across many names). Both are keyed by address, so a right password
from another address is never held up by someone else's failures. A success
clears the pair's count.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kiln.errors import TooManyRequests


@dataclass(slots=True)
class _Failures:
    """The recent failures of one key, and until when it must wait."""

    times: deque[float] = field(default_factory=deque)
    """When the failures within the window happened."""
    level: int = 0
    """Failures since the limit was reached: the wait is 2 ** (level - 1) seconds."""
    blocked_until: float = 0.0

    def quiet(self, now: float, window: float) -> bool:
        """Whether no failure happened for a whole window after the last one and its wait."""
        last = self.times[-1] if self.times else 0.0
        return now >= max(last, self.blocked_until) + window


class Limiter:
    """Counts failed logins and says when a key must wait.

    Args:
        failures: failures within ``window`` after which a (user, address) pair waits.
        address_failures: the same for an address, over every user it tries.
        window: seconds over which failures count.
        max_wait: the longest wait, in seconds.
        clock: where the time comes from (monotonic seconds).
    """

    MAX_KEYS = 100_000
    """Keys remembered at most; beyond it, the ones without a recent failure are forgotten."""

    def __init__(
        self,
        *,
        failures: int = 10,
        address_failures: int = 100,
        window: float = 60.0,
        max_wait: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.failures = failures
        self.address_failures = address_failures
        self.window = window
        self.max_wait = max_wait
        self._clock = clock
        self._keys: dict[tuple[str | None, str], _Failures] = {}

    def check(self, user: str, address: str) -> None:
        """Let a login of ``user`` from ``address`` go ahead, or refuse it.

        Raises:
            TooManyRequests: the pair or the address must wait; ``Retry-After`` says how long.
        """
        now = self._clock()
        for key in ((user, address), (None, address)):
            state = self._keys.get(key)
            if state is not None and state.blocked_until > now:
                wait = math.ceil(state.blocked_until - now)
                who = f"user {user!r}" if key[0] is not None else "this address"
                raise TooManyRequests(
                    f"too many failed logins for {who}; try again in {wait} s",
                    headers={"Retry-After": str(wait)},
                    hint="each further failure doubles the wait; check the user name and password",
                )

    def failed(self, user: str, address: str) -> None:
        """Count a failed login of ``user`` from ``address``."""
        now = self._clock()
        if len(self._keys) >= self.MAX_KEYS:
            self._forget(now)
        self._count((user, address), self.failures, now)
        self._count((None, address), self.address_failures, now)

    def succeeded(self, user: str, address: str) -> None:
        """Clear the failures of ``user`` from ``address`` (not those of the address)."""
        self._keys.pop((user, address), None)

    def _count(self, key: tuple[str | None, str], limit: int, now: float) -> None:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Failures()
        elif state.quiet(now, self.window):
            state.times.clear()
            state.level = 0
        times = state.times
        times.append(now)
        while times[0] <= now - self.window:
            times.popleft()
        if state.level or len(times) >= limit:
            state.level += 1
            state.blocked_until = now + min(self.max_wait, 2.0 ** (state.level - 1))

    def _forget(self, now: float) -> None:
        """Drop the keys that have been quiet for a window."""
        for key in [key for key, state in self._keys.items() if state.quiet(now, self.window)]:
            del self._keys[key]
