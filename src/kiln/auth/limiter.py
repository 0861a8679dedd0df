"""Failed-login limits: exponential back-off per (user, client address), and per address.

After :attr:`Limiter.failures` failed logins for one user from one address
within :attr:`Limiter.window` seconds, that pair must wait before its next try:
1 s, then twice as long after each further failure, up to
:attr:`Limiter.max_wait`, until it has been quiet for a whole window after its
last wait. A looser limit counts every failure of an address, whatever the user
(guessing across many names). Both are keyed by address, so a right password
from another address is never held up by someone else's failures. A success
clears the pair's count.

A login counts from the moment it begins (:meth:`Limiter.begin`), not only once
it has failed: one may begin only while the key would stay within its limit even
if every login still in flight failed, so guesses sent all at once are limited
like guesses sent one after another.
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
    """The recent failures of one key, until when it must wait, and its logins in flight."""

    times: deque[float] = field(default_factory=deque)
    """When the failures within the window happened."""
    level: int = 0
    """Failures since the limit was reached: the wait is 2 ** (level - 1) seconds."""
    blocked_until: float = 0.0
    in_flight: int = 0
    """Logins begun and not yet ended: each may still fail."""

    def quiet(self, now: float, window: float) -> bool:
        """Whether no failure happened for a whole window after the last one and its wait."""
        last = self.times[-1] if self.times else 0.0
        return now >= max(last, self.blocked_until) + window

    def wait(self, now: float, window: float, limit: int) -> int:
        """Seconds before another login may begin (0: now).

        The wait a failure started, if any; else 1 s while the logins in flight would,
        were they all to fail, reach ``limit`` (or, past it, start a further wait).
        """
        if self.blocked_until > now:
            return math.ceil(self.blocked_until - now)
        if self.quiet(now, window):  # the next failure starts over
            return 0 if self.in_flight < limit else 1
        if self.level:  # past the limit: one login at a time
            return 1 if self.in_flight else 0
        recent = sum(1 for when in self.times if when > now - window)
        return 0 if recent + self.in_flight < limit else 1


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

    def begin(self, user: str, address: str) -> None:
        """Let a login of ``user`` from ``address`` begin, counting it in flight, or refuse it.

        Every login begun ends with :meth:`failed` or :meth:`succeeded`.

        Raises:
            TooManyRequests: the pair or the address must wait; ``Retry-After`` says how long.
        """
        now = self._clock()
        pair, whole = (user, address), (None, address)
        for key, limit in ((pair, self.failures), (whole, self.address_failures)):
            state = self._keys.get(key)
            wait = 0 if state is None else state.wait(now, self.window, limit)
            if wait:
                who = f"user {user!r}" if key[0] is not None else "this address"
                raise TooManyRequests(
                    f"too many failed logins for {who}; try again in {wait} s",
                    headers={"Retry-After": str(wait)},
                    hint="each further failure doubles the wait; check the user name and password",
                )
        if len(self._keys) >= self.MAX_KEYS:
            self._forget(now)
        for key in (pair, whole):
            state = self._keys.get(key)
            if state is None:
                state = self._keys[key] = _Failures()
            state.in_flight += 1

    def failed(self, user: str, address: str) -> None:
        """End a login of ``user`` from ``address`` as a failure, and count it."""
        now = self._clock()
        self._count((user, address), self.failures, now)
        self._count((None, address), self.address_failures, now)

    def succeeded(self, user: str, address: str) -> None:
        """End a login of ``user`` from ``address`` as a success: clear the pair's failures
        (not those of the address)."""
        pair = self._keys[(user, address)]
        pair.times.clear()
        pair.level, pair.blocked_until = 0, 0.0
        for key in ((user, address), (None, address)):
            state = self._keys[key]
            state.in_flight -= 1
            if not state.in_flight and not state.times:
                del self._keys[key]  # nothing left to remember

    def _count(self, key: tuple[str | None, str], limit: int, now: float) -> None:
        state = self._keys[key]
        state.in_flight -= 1
        if state.quiet(now, self.window):
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
        """Drop the keys that have been quiet for a window and have no login in flight."""
        for key in [
            key
            for key, state in self._keys.items()
            if not state.in_flight and state.quiet(now, self.window)
        ]:
            del self._keys[key]
