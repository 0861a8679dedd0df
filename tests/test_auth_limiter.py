""":mod:`kiln.auth.limiter`: back-off per (user, address) and per address, on a fake clock."""

from __future__ import annotations

import pytest

from kiln.auth.limiter import Limiter
from kiln.errors import TooManyRequests


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def fail(limiter: Limiter, times: int, user: str = "ann", address: str = "10.0.0.1") -> None:
    """Begin and fail ``times`` logins, one after another."""
    for _ in range(times):
        limiter.begin(user, address)
        limiter.failed(user, address)


def wait_of(limiter: Limiter, user: str = "ann", address: str = "10.0.0.1") -> int:
    """The ``Retry-After`` of the 429 refusing the next login."""
    with pytest.raises(TooManyRequests) as caught:
        limiter.begin(user, address)
    assert caught.value.status == 429
    return int(caught.value.headers["Retry-After"])


def test_nine_failures_in_a_minute_are_let_through(clock: Clock) -> None:
    limiter = Limiter(clock=clock)
    fail(limiter, 9)
    limiter.begin("ann", "10.0.0.1")


def test_the_tenth_failure_starts_a_back_off_that_doubles(clock: Clock) -> None:
    limiter = Limiter(clock=clock)
    fail(limiter, 10)
    assert wait_of(limiter) == 1
    for expected in (2, 4, 8, 16):
        clock.now += expected / 2  # the previous wait has passed
        fail(limiter, 1)
        assert wait_of(limiter) == expected


def test_the_wait_is_capped(clock: Clock) -> None:
    limiter = Limiter(clock=clock, max_wait=30)
    fail(limiter, 10)
    for _ in range(10):
        clock.now += 31
        fail(limiter, 1)
    assert wait_of(limiter) == 30


def test_another_address_is_never_held_up_by_someone_elses_failures(clock: Clock) -> None:
    limiter = Limiter(clock=clock)
    fail(limiter, 10, address="10.0.0.66")
    wait_of(limiter, address="10.0.0.66")
    limiter.begin("ann", "10.0.0.1")  # the right password from ann's own address goes ahead
    limiter.succeeded("ann", "10.0.0.1")
    wait_of(limiter, address="10.0.0.66")  # and does not clear the attacker's wait


def test_another_user_from_the_same_address_is_not_held_up_by_the_pair_limit(
    clock: Clock,
) -> None:
    limiter = Limiter(clock=clock)
    fail(limiter, 10, user="ann")
    wait_of(limiter, user="ann")
    limiter.begin("bob", "10.0.0.1")


def test_the_looser_address_limit_counts_every_user(clock: Clock) -> None:
    limiter = Limiter(clock=clock, address_failures=30)
    for number in range(30):
        fail(limiter, 1, user=f"user{number}")
    with pytest.raises(TooManyRequests, match="this address"):
        limiter.begin("someone-new", "10.0.0.1")
    limiter.begin("someone-new", "10.0.0.2")


def test_a_success_clears_the_pairs_failures(clock: Clock) -> None:
    limiter = Limiter(clock=clock)
    fail(limiter, 9)
    limiter.succeeded("ann", "10.0.0.1")
    fail(limiter, 9)
    limiter.begin("ann", "10.0.0.1")


def test_failures_older_than_the_window_do_not_count(clock: Clock) -> None:
    limiter = Limiter(clock=clock)
    fail(limiter, 9)
    clock.now += 61
    fail(limiter, 9)
    limiter.begin("ann", "10.0.0.1")


def test_a_quiet_window_after_the_wait_starts_over(clock: Clock) -> None:
    limiter = Limiter(clock=clock)
    fail(limiter, 10)
    clock.now += 1  # the wait is over: the next failure still doubles
    fail(limiter, 1)
    assert wait_of(limiter) == 2
    clock.now += 2 + 60
    fail(limiter, 9)
    limiter.begin("ann", "10.0.0.1")


def test_quiet_keys_are_forgotten_when_there_are_too_many(clock: Clock) -> None:
    limiter = Limiter(clock=clock)
    limiter.MAX_KEYS = 6  # five users and their address
    for number in range(5):
        fail(limiter, 1, user=f"user{number}")
    clock.now += 61
    fail(limiter, 1, user="late")
    assert len(limiter._keys) == 2  # ("late", address) and (None, address)


def test_logins_in_flight_count_against_both_limits(clock: Clock) -> None:
    """Guesses sent at once all begin before the first fails: each counts from its start."""
    limiter = Limiter(clock=clock, address_failures=30)
    fail(limiter, 5)
    for _ in range(5):  # five more in flight: if all fail, the pair reaches its limit
        limiter.begin("ann", "10.0.0.1")
    assert wait_of(limiter) == 1  # they end within a second, then it is known
    for number in range(20):
        limiter.begin(f"user{number}", "10.0.0.1")
    with pytest.raises(TooManyRequests, match="this address"):  # 5 failed, 25 in flight
        limiter.begin("someone-new", "10.0.0.1")
    limiter.succeeded("user0", "10.0.0.1")
    limiter.begin("someone-new", "10.0.0.1")  # a success ended one: room for another
    limiter.begin("ann", "10.0.0.2")


def test_past_the_limit_one_login_at_a_time(clock: Clock) -> None:
    limiter = Limiter(clock=clock)
    fail(limiter, 10)
    clock.now += 1  # the wait is over: one may try, and its failure would start the next
    limiter.begin("ann", "10.0.0.1")
    assert wait_of(limiter) == 1
    limiter.failed("ann", "10.0.0.1")
    assert wait_of(limiter) == 2


def test_a_success_ends_its_login_and_keeps_no_key(clock: Clock) -> None:
    limiter = Limiter(clock=clock)
    limiter.begin("ann", "10.0.0.1")
    limiter.begin("ann", "10.0.0.1")
    limiter.succeeded("ann", "10.0.0.1")
    limiter.failed("ann", "10.0.0.1")  # the other login, still in flight, is counted
    limiter.begin("bob", "10.0.0.1")
    limiter.succeeded("bob", "10.0.0.1")
    assert set(limiter._keys) == {("ann", "10.0.0.1"), (None, "10.0.0.1")}
    limiter.begin("ann", "10.0.0.1")
    limiter.succeeded("ann", "10.0.0.1")
    assert set(limiter._keys) == {(None, "10.0.0.1")}  # the address keeps its failure
