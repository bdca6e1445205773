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

Runs in the controller's process, one per controller instance (a controller Ray
restarts starts a new one). ``start``, ``poke`` and ``stop`` from any thread.
A pass that fails (the actor busy past the call's timeout, Ray's error) is logged
and tried again at the next interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from plinth import limits
from plinth.errors import BrokerError
from plinth.shards.shard_handle import PendingCall, ShardHandle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RevivalLook:
    """What one look (Controller.revive_dead_shards) did."""

    started: dict[str, ShardHandle] = field(default_factory=dict)   # the new actors
    again: bool = False   # look again at the next interval (else sleep until poked)


class ShardReviver:
    def __init__(self, look: Callable[[], RevivalLook], failed: Callable[[str, str], None],
                 interval_s: float = limits.SHARD_REVIVAL_CHECK_INTERVAL_S,
                 answer_wait_s: float = limits.SHARD_START_WAIT_S):
        """``look()``: one look, on the controller's actor thread (it blocks until that
        look is done or fails). ``failed(shard_id, why)``: a new actor did not answer
        its first call (not waited for)."""
        self._look = look
        self._failed = failed
        self._interval_s = interval_s
        self._answer_wait_s = answer_wait_s
        self._changed = threading.Condition()   # guards the three below
        self._poked = False
        self._busy = False
        self._stopping = False
        # shard id -> its new actor's first call, and when it is given up on (the
        # clock's); this thread only. At most one per shard.
        self._waiting: dict[str, tuple[PendingCall, float]] = {}
        self._thread = threading.Thread(target=self._run, name="shard-reviver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Look at the next interval, even if idle (any thread)."""
        with self._changed:
            self._poked = True
            self._changed.notify_all()

    def stop(self, wait_s: float = 0.0) -> None:
        """No look after the one in progress. Waits at most ``wait_s`` for the thread to
        end: on the actor thread, 0, since a look in progress waits for that thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if wait_s > 0 and self._thread.is_alive():
            self._thread.join(wait_s)

    def _run(self) -> None:
        while self._wait_until_due():
            try:
                self._pass()
            except BrokerError as exc:
                log.warning("a look for shards to start again failed (tried again in "
                            "%.2f s): %s", self._interval_s, exc)
                self._set_busy(True)
            except Exception:   # e.g. Ray's: the reviver must outlive any one failure
                log.exception("a look for shards to start again failed (tried again in "
                              "%.2f s)", self._interval_s)
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

    def _wait_until_due(self) -> bool:
        """Sleep until the next pass is due: while idle, until poked (no timer); then
        one interval. False once stopped."""
        with self._changed:
            self._changed.wait_for(lambda: self._busy or self._poked or self._stopping)
            self._poked = False
            if not self._stopping:
                self._changed.wait_for(lambda: self._stopping, self._interval_s)
            return not self._stopping
