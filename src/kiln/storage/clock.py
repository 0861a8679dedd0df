"""Hybrid logical clock: one unique, increasing 64-bit timestamp per write.

The high 48 bits are milliseconds since the Unix epoch and the low 16 bits a
counter, so a timestamp reads as wall-clock time yet never repeats or goes
backwards, even when the system clock does or when more than one write lands in
the same millisecond. It is the record's version, its ETag, and the key of its
audit entry.
"""

from __future__ import annotations

import threading
import time

from kiln.types import VERSION_COUNTER_BITS, Version


class HybridClock:
    """Issues strictly increasing versions; safe to share between threads."""

    def __init__(self, last: Version = 0):
        self._last = last
        self._lock = threading.Lock()

    @property
    def last(self) -> Version:
        """The largest version issued or observed so far."""
        return self._last

    def observe(self, version: Version) -> None:
        """Make every later version larger than ``version`` (one read from disk or a peer)."""
        with self._lock:
            self._last = max(self._last, version)

    def now(self) -> Version:
        """A new version, larger than every one issued or observed before."""
        physical = time.time_ns() // 1_000_000 << VERSION_COUNTER_BITS
        with self._lock:
            self._last = max(physical, self._last + 1)
            return self._last
