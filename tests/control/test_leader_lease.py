"""control/leader_lease.py: the server's thread asks the controller to check the leaders
at its interval, and outlives a failed check (the controller is a neighbour here,
answering as a ControllerHandle does)."""

from __future__ import annotations

import threading

from plinth.control.leader_lease import LeaderLease
from plinth.errors import RequestTimedOutError

WAIT_S = 10.0


class ControllerCounting:
    """check_leaders as a ControllerHandle's: fails the first ``failures`` calls."""

    def __init__(self, failures: int):
        self.calls = 0
        self._failures = failures
        self._called = threading.Condition()

    def check_leaders(self) -> list:
        with self._called:
            self.calls += 1
            self._called.notify_all()
            if self.calls <= self._failures:
                raise RequestTimedOutError("the controller did not answer check_leaders")
        return []

    def wait_for_calls(self, count: int) -> None:
        with self._called:
            if not self._called.wait_for(lambda: self.calls >= count, WAIT_S):
                raise AssertionError(f"{self.calls} checks within {WAIT_S} s, not {count}")


def test_the_lease_checks_again_after_a_failed_check_and_stops_when_told():
    # Given a controller whose first two checks fail
    controller = ControllerCounting(failures=2)
    lease = LeaderLease(controller, interval_s=0.01)
    # When the lease runs / Then it goes on checking after the failures
    lease.start()
    controller.wait_for_calls(4)
    # And once stopped, it checks no more
    lease.stop()
    calls = controller.calls
    assert not lease._thread.is_alive() and controller.calls == calls
