"""control/leader_lease.py: the controller's thread has its actor check the leaders at its
interval while a replicated partition exists, sleeps without a timer while none does,
and outlives a failed check (the check is a neighbour here, failing as the call to the
actor does)."""

from __future__ import annotations

import threading
import time

from plinth.control.leader_lease import LeaderLease
from plinth.errors import RequestTimedOutError

WAIT_S = 10.0


class CountingCheck:
    """One leader check: fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0):
        self.calls = 0
        self._failures = failures
        self._called = threading.Condition()

    def __call__(self) -> None:
        with self._called:
            self.calls += 1
            self._called.notify_all()
            if self.calls <= self._failures:
                raise RequestTimedOutError("the controller did not answer check_leaders")

    def wait_for_calls(self, count: int) -> None:
        with self._called:
            if not self._called.wait_for(lambda: self.calls >= count, WAIT_S):
                raise AssertionError(f"{self.calls} checks within {WAIT_S} s, not {count}")


def test_the_lease_checks_again_after_a_failed_check_and_stops_when_told():
    # Given a wanted lease whose first two checks fail
    check = CountingCheck(failures=2)
    lease = LeaderLease(check, interval_s=0.01)
    lease.want(True)
    # When the lease runs / Then it goes on checking after the failures
    lease.start()
    check.wait_for_calls(4)
    # And once stopped, it checks no more
    lease.stop(wait_s=WAIT_S)
    calls = check.calls
    assert not lease._thread.is_alive() and check.calls == calls


def test_a_lease_not_wanted_checks_nothing_until_wanted():
    # Given a started lease with a short interval that is not wanted (no replicated
    # partition)
    check = CountingCheck()
    lease = LeaderLease(check, interval_s=0.01)
    lease.start()
    try:
        # When many of its intervals pass / Then it has checked nothing
        time.sleep(0.2)   # twenty intervals in which a check must NOT come
        assert check.calls == 0
        # And once wanted, it checks at its interval
        lease.want(True)
        check.wait_for_calls(3)
    finally:
        lease.stop(wait_s=WAIT_S)
    assert not lease._thread.is_alive()


def test_a_lease_no_longer_wanted_stops_checking():
    # Given a lease that checks
    check = CountingCheck()
    lease = LeaderLease(check, interval_s=0.01)
    lease.want(True)
    lease.start()
    try:
        check.wait_for_calls(2)
        # When it is no longer wanted (the last replicated topic was deleted)
        lease.want(False)
        calls_then = check.calls
        time.sleep(0.2)   # twenty intervals in which at most the check in progress ends
        # Then at most the check already due comes, and no more
        assert check.calls <= calls_then + 1
    finally:
        lease.stop(wait_s=WAIT_S)


def test_a_lease_not_wanted_stops_at_once_when_told():
    # Given a lease asleep without a timer (not wanted)
    lease = LeaderLease(CountingCheck(), interval_s=3600.0)
    lease.start()
    # When it is stopped / Then its thread ends without waiting for any interval
    started = time.monotonic()
    lease.stop(wait_s=WAIT_S)
    assert not lease._thread.is_alive() and time.monotonic() - started < WAIT_S
