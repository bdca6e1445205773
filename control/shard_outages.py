"""Logs a shard's outages as the controller's checks see them: one WARNING when a
check finds a shard not answering, one INFO when it answers again, once per outage.

A hung shard (SIGSTOP, a process stuck in the kernel, a node cut off) is alive to
Ray, so Ray logs nothing; ``plinth status`` and the metrics showed it DOWN within
seconds, but no log said so, and an on-call engineer reading the logs after the
fact found the hang nowhere. The checks are the controller's leader pings
(check_leaders, while a replicated partition exists) and its stats calls (plinth
status, each metrics scrape): whichever sees it first logs it; the others, until
the shard answers, say nothing.

Any thread of the controller (its actor thread's pings, its query threads' stats
calls): one lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("plinth.control.controller")


@dataclass(frozen=True)
class OutageFacts:
    """What the log line says of the shard; each empty or 0 where not known."""

    pid: int = 0
    node: str = ""
    offline: int = 0   # partitions whose writes it takes (leads): offline while it is out


class ShardOutages:
    def __init__(self, clock_s: Callable[[], float] = time.monotonic):
        self._clock_s = clock_s
        self._lock = threading.Lock()
        self._out_since: dict[str, float] = {}   # shard id -> when a check first missed it

    def not_answering(self, shard_id: str, check: str,
                      facts: Callable[[], OutageFacts]) -> None:
        """A ``check`` (its words: "leader pings", "a stats call within 5 s") found
        ``shard_id`` not answering; ``facts()`` is called only if this starts an outage."""
        with self._lock:
            if shard_id in self._out_since:
                return
            self._out_since[shard_id] = self._clock_s()
        known = facts()
        where = ", ".join(part for part in (f"pid {known.pid}" if known.pid else "",
                                            f"node {known.node}" if known.node else "") if part)
        log.warning("%s%s does not answer the controller (%s): %d %s it leads %s offline "
                    "until it answers (or, replicated, another in-sync replica leads); it "
                    "is stopped, hung or restarting, or its node is down or cut off",
                    shard_id, f" ({where})" if where else "", check, known.offline,
                    "partition" if known.offline == 1 else "partitions",
                    "is" if known.offline == 1 else "are")

    def answering(self, shard_id: str) -> None:
        """A check found ``shard_id`` answering: the end of its outage, if it had one."""
        with self._lock:
            since = self._out_since.pop(shard_id, None)
        if since is not None:
            log.info("%s answers the controller again, after %.1f s out", shard_id,
                     self._clock_s() - since)
