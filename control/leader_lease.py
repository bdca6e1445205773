"""LeaderLease: the controller's own thread that has its actor check, every
LEADER_CHECK_INTERVAL_S, that each replicated partition's leader still answers,
and elect a new one when it does not (Controller.check_leaders).

Runs in the controller's process, on its own daemon thread (a TimerThread,
timer_thread.py, as the reviver's), one per controller instance (a controller
Ray restarts starts a new one). ``start``, ``want`` and
``stop`` from the controller's actor thread (any thread may call them). The
check itself is a call to the controller's actor, so it runs on the actor's
thread between its other calls, as every change does.

It checks only while it is wanted: while the metadata holds a replicated
partition (one with a leadership record). With none there is no leader to lose,
and an idle lease sleeps until it is wanted or stopped, with no wake-ups (issue
13: an idle broker). It is wanted again the moment the actor thread saves a
replicated partition (``Controller._save``), so the first check of a new
replicated topic comes one interval after it was created, as before.
Shards Ray gave up on are not its concern: the controller's reviver thread
(shard_reviver.py) starts them again, so that no check waits for a new actor.

A check that fails (the actor busy past the call's timeout, Ray's error) is
logged and tried again at the next interval: the lease is what makes failover
independent of Ray's node health checks, so it must outlive any one failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from plinth import limits
from plinth.control.timer_thread import TimerThread

log = logging.getLogger(__name__)


class LeaderLease(TimerThread):
    def __init__(self, check: Callable[[], object],
                 interval_s: float = limits.LEADER_CHECK_INTERVAL_S):
        """``check()``: one leader check, on the controller's actor thread (it blocks
        until the check is done or fails)."""
        super().__init__("leader-lease", "leader check", interval_s, log)
        self._check = check
        self._wanted = False   # guarded by _changed

    @property
    def wanted(self) -> bool:
        return self._wanted

    def want(self, wanted: bool) -> None:
        """Check from now on (a replicated partition exists), or stop checking after
        the check in progress, if any (none does). Any thread."""
        with self._changed:
            if wanted != self._wanted:
                self._wanted = wanted
                self._changed.notify_all()

    def _due_locked(self) -> bool:
        return self._wanted

    def _pass(self) -> None:
        self._check()
