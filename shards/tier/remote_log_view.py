"""What the shard's loop thread knows of one partition's remote log: an immutable snapshot.

The uploader (its own thread) owns the partition's RemoteLogMetadata
(remote_log_metadata.py) and the store. After each change to the readable
segments (a copy finished, a deletion started) it builds a new RemoteLogView
from ``RemoteLogMetadata.finished_segments()`` and hands it to the loop thread,
which stores it on the Partition (``Partition.remote``). A view never changes,
so the loop reads it without a lock, and a fetch that took one keeps a
consistent picture even if a newer one arrives meanwhile.

Any thread may use a view. It answers the questions the loop asks on every
fetch and every retention pass: which segment holds an offset, where the
remote log starts and ends, how many bytes it holds.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from plinth.shards.tier.remote_segment import RemoteSegment

__all__ = ["EMPTY_REMOTE_LOG", "RemoteLogView"]


@dataclass(frozen=True)
class RemoteLogView:
    """The readable (COPY_SEGMENT_FINISHED) remote segments of one partition, by base offset."""

    segments: tuple[RemoteSegment, ...] = ()
    _base_offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = [(segment.base_offset, segment.end_offset) for segment in self.segments]
        if keys != sorted(keys):
            raise AssertionError(f"remote segments out of order: {keys}")
        object.__setattr__(self, "_base_offsets",
                           tuple(segment.base_offset for segment in self.segments))

    @classmethod
    def of(cls, segments) -> RemoteLogView:
        """A view of ``segments`` (any order), e.g. RemoteLogMetadata.finished_segments()."""
        return cls(tuple(sorted(segments, key=lambda s: (s.base_offset, s.end_offset))))

    @property
    def is_empty(self) -> bool:
        return not self.segments

    @property
    def log_start_offset(self) -> int | None:
        """The first offset held remotely (Kafka's remote log start offset), or None."""
        return self.segments[0].base_offset if self.segments else None

    @property
    def end_offset(self) -> int | None:
        """The offset after the last one held remotely, or None."""
        return max(segment.end_offset for segment in self.segments) if self.segments else None

    @property
    def remote_bytes(self) -> int:
        """Log bytes of the readable segments."""
        return sum(segment.size_bytes for segment in self.segments)

    def covers(self, start_offset: int, end_offset: int) -> bool:
        """Whether every offset in [start_offset, end_offset) is in a readable segment
        (no hole): object storage holds that range of the log."""
        cursor = start_offset
        while cursor < end_offset:
            segment = self.segment_for_offset(cursor)
            if segment is None:
                return False
            cursor = segment.end_offset
        return True

    def segment_for_offset(self, offset: int) -> RemoteSegment | None:
        """The segment holding ``offset``, or None; where two overlap the one with the
        larger base offset wins, then the newer upload (as RemoteLogMetadata does)."""
        # Backwards from the last base offset at or below ``offset``: the first
        # segment found holding it has the largest base offset; only segments with
        # that same base can compete with it.
        found = None
        for slot in range(bisect.bisect_right(self._base_offsets, offset) - 1, -1, -1):
            segment = self.segments[slot]
            if found is not None and segment.base_offset != found.base_offset:
                break
            if offset < segment.end_offset and (found is None
                                                or segment.created_ms > found.created_ms):
                found = segment
        return found


EMPTY_REMOTE_LOG = RemoteLogView()
