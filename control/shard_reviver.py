"""ShardReviver: the controller's own thread that starts shards Ray gave up on again,
so that no caller of the controller waits for a new shard actor.

The first revivals ran inside status and the leader checks: a shard that failed in
its constructor (its directory locked by another process) was started again from
there, each start waiting for the new actor's 30 s lock wait on the controller's
actor thread, and ``plinth serve`` never said which shard was not serving (CI,
tests/e2e/test_cluster_e2e.py). Now status and the leader checks only read the
schedule (shard_revivals.py), and this thread does the rest:

- every SHARD_REVIVAL_CHECK_INTERVAL_S while it is busy, it has the controller's
  actor look for shards dead for good and start the new actors that are due
  (``look``: Controller.revive_dead_shards, on the actor thread between its other
  calls; name lookups in Ray's GCS and actor creations, which Ray runs
  asynchronously: it waits for no shard);
- it waits here, off the actor thread, for each new actor's first answer, at most
  SHARD_START_WAIT_S, polling (never blocking a pass on one shard); one that fails
  (it raised in its constructor, or died) is reported back (``failed``:
  Controller.revival_failed), whose next look reads how it died.

It is busy while the last look said to look again (a shard scheduled or starting,
or a worker's death heard lately) or a new actor has not answered yet; otherwise it
sleeps until ``poke``d (a stats call or a leader check missed a shard, the server
heard of a worker's death), with no wake-ups (issue 13: an idle broker).

Runs in the controller's process, on its own daemon thread (a TimerThread,
timer_thread.py, as the leader lease's), one per controller instance (a controller
Ray restarts starts a new one). ``start``, ``poke`` and ``stop`` from any thread.
A pass that fails (the actor busy past the call's timeout, Ray's error) is logged
and tried again at the next interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from plinth import limits
from plinth.control.timer_thread import TimerThread
from plinth.errors import BrokerError
from plinth.shards.shard_handle import PendingCall, ShardHandle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RevivalLook:
    """What one look (Controller.revive_dead_shards) did."""

    started: dict[str, ShardHandle] = field(default_factory=dict)   # the new actors
    again: bool = False   # look again at the next interval (else sleep until poked)


class ShardReviver(TimerThread):
    def __init__(self, look: Callable[[], RevivalLook], failed: Callable[[str, str], None],
                 interval_s: float = limits.SHARD_REVIVAL_CHECK_INTERVAL_S,
                 answer_wait_s: float = limits.SHARD_START_WAIT_S):
        """``look()``: one look, on the controller's actor thread (it blocks until that
        look is done or fails). ``failed(shard_id, why)``: a new actor did not answer
        its first call (not waited for)."""
        super().__init__("shard-reviver", "a look for shards to start again", interval_s, log)
        self._look = look
        self._failed = failed
        self._answer_wait_s = answer_wait_s
        self._poked = False   # these two guarded by _changed
        self._busy = False
        # shard id -> its new actor's first call, and when it is given up on (the
        # clock's); this thread only. At most one per shard.
        self._waiting: dict[str, tuple[PendingCall, float]] = {}

    def poke(self) -> None:
        """Look at the next interval, even if idle (any thread)."""
        with self._changed:
            self._poked = True
            self._changed.notify_all()

    def _due_locked(self) -> bool:
        return self._busy or self._poked

    def _woken_locked(self) -> None:
        self._poked = False

    def _pass_failed(self) -> None:
        self._set_busy(True)

    def _pass(self) -> None:
        look = self._look()
        now_s = time.monotonic()
        for shard_id, handle in look.started.items():
            self._waiting[shard_id] = (handle.address(), now_s + self._answer_wait_s)
        for shard_id, (call, give_up_s) in list(self._waiting.items()):
            if call.done():
                del self._waiting[shard_id]
                try:
                    call.result(0)
                except BrokerError as exc:
                    self._failed(shard_id, str(exc))
            elif now_s >= give_up_s:   # still starting: a later look sees if it died
                del self._waiting[shard_id]
                log.info("%s: its new actor has not answered within %g s", shard_id,
                         self._answer_wait_s)
        self._set_busy(look.again or bool(self._waiting))

    def _set_busy(self, busy: bool) -> None:
        with self._changed:
            self._busy = busy
