"""The open files of one shard's rolled segments: a bounded cache, least recently read closed first.

Used only by the shard actor's data thread (the loop that owns every partition
log; shard_server.py), every method. One instance per shard, shared by all its
partitions (and a private one for a log opened alone, as in tests).

A partition's active segment keeps its .log file open: it is appended to and
fsynced all the time. Every older segment is read only, and only while a
consumer catches up through it, so its file is opened when it is read and
stays open here until SEGMENT_FILES_OPEN_MAX other segments have been read
since; then it is closed. So a shard holds one descriptor per partition plus at
most SEGMENT_FILES_OPEN_MAX, however many segments lie on its disk, and a
shard with 100,000 segments starts without opening any of them (segment.py:
``Segment.unopened``).

A segment asks ``use(segment)`` before it reads its file; the cache opens the
file if it is closed (``segment.open_file()``, which also loads the segment's
indexes the first time) and closes the least recently used one beyond the
bound (``segment.close_file()``; the indexes stay in memory, so opening it
again is one open()). A segment leaves through ``discard`` when it is closed or
deleted.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from plinth.limits import SEGMENT_FILES_OPEN_MAX

if TYPE_CHECKING:
    from plinth.shards.segment import Segment

__all__ = ["SegmentFiles"]


class SegmentFiles:
    """Rolled segments whose .log file is open, least recently read first. Data thread only."""

    def __init__(self, open_max: int = SEGMENT_FILES_OPEN_MAX):
        if open_max < 1:
            raise AssertionError(f"a segment file cache must hold at least 1 file, not {open_max}")
        self.open_max = open_max
        self._open: OrderedDict[Segment, None] = OrderedDict()

    def __len__(self) -> int:
        """How many segment files are open here."""
        return len(self._open)

    def add(self, segment: Segment) -> None:
        """``segment`` (its file open) rolled out of being active: keep its file open
        while there is room, as the most recently read."""
        self._open[segment] = None
        self._open.move_to_end(segment)
        self._close_beyond_max()

    def use(self, segment: Segment) -> None:
        """``segment`` is about to read its file: open it if closed, mark it most recent.

        Raises StorageError (from ``segment.open_file()``) if the file cannot be
        opened or its indexes read; the segment then stays closed.
        """
        try:
            self._open.move_to_end(segment)
            return
        except KeyError:
            pass
        segment.open_file()
        self._open[segment] = None
        self._close_beyond_max()

    def discard(self, segment: Segment) -> None:
        """``segment`` closed its file itself (it is being closed or deleted)."""
        self._open.pop(segment, None)

    def _close_beyond_max(self) -> None:
        while len(self._open) > self.open_max:
            least_recent, _ = self._open.popitem(last=False)
            least_recent.close_file()
