"""TimerThread: a controller's own daemon thread that has the controller's actor do one
thing at an interval while that is due, and sleeps without a timer while it is not
(issue 13: an idle broker). The leader lease (leader_lease.py) and the shard reviver
(shard_reviver.py) are two: each says when a pass is due (``_due_locked``) and what
one pass does (``_pass``, a call to the controller's actor, which runs it on its own
thread between its other calls).

A pass runs one interval after the thread finds it due, then one each interval while
it stays due. A pass that fails (the actor busy past the call's timeout, Ray's error)
is logged, saying what failed, and tried again at the next interval
(``_pass_failed`` may keep it due): the thread must outlive any one failure.

Runs in the controller's process, one per controller instance and kind (a controller
Ray restarts starts new ones). ``start`` and ``stop`` from any thread; what
``_due_locked`` reads is changed under ``_changed``, which is then notified.
"""

from __future__ import annotations

import logging
import threading

from plinth.errors import BrokerError


class TimerThread:
    def __init__(self, name: str, what: str, interval_s: float, log: logging.Logger):
        """``name``: the thread's; ``what``: what one pass is, for the log line of a
        failed one ("leader check"), written to ``log``."""
        self._what = what
        self._interval_s = interval_s
        self._log = log
        self._changed = threading.Condition()   # guards _stopping and what _due_locked reads
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait_s: float = 0.0) -> None:
        """No pass after the one in progress. Waits at most ``wait_s`` for the thread to
        end: on the actor thread, 0, since a pass in progress waits for that thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if wait_s > 0 and self._thread.is_alive():
            self._thread.join(wait_s)

    def _due_locked(self) -> bool:
        """Whether a pass is due (with ``_changed`` held)."""
        raise NotImplementedError

    def _woken_locked(self) -> None:
        """The thread found a pass due, or was stopped (with ``_changed`` held)."""

    def _pass(self) -> None:
        """One pass (this thread)."""
        raise NotImplementedError

    def _pass_failed(self) -> None:
        """The pass just run failed, and was logged (this thread)."""

    def _run(self) -> None:
        while self._wait_until_due():
            try:
                self._pass()
            except BrokerError as exc:
                self._log.warning("%s failed (tried again in %.2f s): %s", self._what,
                                  self._interval_s, exc)
                self._pass_failed()
            except Exception:   # e.g. Ray's: the thread must outlive any one failure
                self._log.exception("%s failed (tried again in %.2f s)", self._what,
                                    self._interval_s)
                self._pass_failed()

    def _wait_until_due(self) -> bool:
        """Sleep until the next pass is due: while none is, until one is (no timer); then
        one interval. False once stopped."""
        with self._changed:
            self._changed.wait_for(lambda: self._due_locked() or self._stopping)
            self._woken_locked()
            if not self._stopping:
                self._changed.wait_for(lambda: self._stopping, self._interval_s)
            return not self._stopping
