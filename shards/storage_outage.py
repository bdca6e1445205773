"""StorageOutage: a log's appends refused by its disk, said once per outage.

Loop thread of the shard that owns the log (a partition's, or a group slot's
committed-offset store's). Around each append (``watch``): the first
StorageError of an outage (a disk full or gone read-only) is logged at WARNING,
naming the log, the cause and who gets the error meanwhile, and the first
append that succeeds after it at INFO, with how many failed meanwhile.

Once per outage, not per request: clients retry (and each gets its error), and
a line per refused batch would fill the shard's log, often on the very disk
that is full. Without them the log did not show that the shard refused writes
for minutes (only plinth_errors_total{code="storageError"} did); committed
offsets refused by a full disk left no line at all (tester T-fd, session 45).
"""

from __future__ import annotations

import contextlib
import logging

from plinth.errors import StorageError


class StorageOutage:
    """The outage state of one log's appends. Its owner's loop thread only."""

    __slots__ = ("name", "refused", "log", "failed_appends")

    def __init__(self, name: str, refused: str, log: logging.Logger):
        self.name = name          # the log, as messages name it
        self.refused = refused    # who gets StorageError meanwhile ("producers")
        self.log = log            # the owner's logger: its lines stay under its name
        self.failed_appends = 0   # refused by the disk since the last that succeeded

    @property
    def failing(self) -> bool:
        """Whether the last append failed (the outage goes on)."""
        return self.failed_appends > 0

    @contextlib.contextmanager
    def watch(self, refused: str | None = None):
        """Around one append; what it raises goes on. ``refused``: who the outage
        stops, if not ``self.refused`` (a follower's appends stop no producer)."""
        try:
            yield
        except StorageError as exc:
            self.failed_appends += 1
            if self.failed_appends == 1:
                self.log.warning("appends to %s fail: %s; %s until the disk takes writes "
                                 "again (said once until then)", self.name, exc,
                                 refused or f"{self.refused} get StorageError")
            raise
        if self.failed_appends:
            self.log.info("appends to %s succeed again, after %d failed", self.name,
                          self.failed_appends)
            self.failed_appends = 0
