"""LeaderLease: the server's thread that has the controller check, every
LEADER_CHECK_INTERVAL_S, that each replicated partition's leader still answers,
and elect a new one when it does not (Controller.check_leaders).

Runs in the server process (``plinth serve``), on its own daemon thread, one
per broker; ``start`` and ``stop`` from the server's main thread. A check that
fails (the controller restarting, a call timing out) is logged and tried again
at the next interval: the lease is what makes failover independent of Ray's
node health checks, so it must outlive any one failure.
"""

from __future__ import annotations

import logging
import threading

from plinth import limits
from plinth.control.controller_handle import ControllerHandle
from plinth.errors import BrokerError

log = logging.getLogger(__name__)


class LeaderLease:
    def __init__(self, controller: ControllerHandle,
                 interval_s: float = limits.LEADER_CHECK_INTERVAL_S):
        self._controller = controller
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait_s: float = limits.LEADER_PING_TIMEOUT_S + limits.CONTROL_CALL_TIMEOUT_S) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(wait_s)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self._controller.check_leaders()
            except BrokerError as exc:
                log.warning("leader check failed (tried again in %.1f s): %s",
                            self._interval_s, exc)
            except Exception:   # e.g. Ray's: the lease must outlive any one failure
                log.exception("leader check failed (tried again in %.1f s)", self._interval_s)
