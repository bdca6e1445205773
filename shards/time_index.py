"""The sparse time index of one segment: timestamp -> offset.

Used only by the shard actor's data thread, and (a remote segment's copy, read
from object storage) by the shard's remote reader thread. The ``.timeindex`` file next to a
segment's ``.log`` file is a run of 12-byte entries, little-endian:

    offset size  field
         0    8  timestamp_ms     Int64   largest max_timestamp_ms of the entries
                                          up to and including the one at offset
         8    4  relative_offset  UInt32  an entry's base offset - segment base offset

An entry (T, O) means: every log entry at or before offset O has
max_timestamp_ms <= T, so any entry with a timestamp > T comes after O.
Entries are added alongside offset index entries and only when T grows, so
both columns strictly increase. Timestamps come from producers and need not
be ordered in the log, which is why T is a running maximum and why a lookup
gives the place to start scanning rather than the answer. As the offset
index, the file has no checksum and is rebuilt from the log when invalid.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path

from plinth.errors import CorruptDataError
from plinth.durable_files import write_file_atomically
from plinth.shards.offset_index import UINT32_LIMIT, first_not_increasing

ENTRY_BYTES = 12
TIMESTAMP_BYTES = 8
RELATIVE_OFFSET_BYTES = 4

if sys.byteorder != "little" or array("q").itemsize != TIMESTAMP_BYTES \
        or array("I").itemsize != RELATIVE_OFFSET_BYTES:
    raise AssertionError(f"time index files hold little-endian Int64s and UInt32s; this host is "
                         f"{sys.byteorder}-endian with {array('q').itemsize}- and "
                         f"{array('I').itemsize}-byte array items")
if TIMESTAMP_BYTES + RELATIVE_OFFSET_BYTES != ENTRY_BYTES:
    raise AssertionError(f"a time index entry is {ENTRY_BYTES} bytes, not {TIMESTAMP_BYTES} + "
                         f"{RELATIVE_OFFSET_BYTES}")


class TimeIndex:
    """Maps timestamps to offsets for one segment. Data thread only (a remote
    segment's: the remote reader thread only)."""

    def __init__(self, base_offset: int):
        self.base_offset = base_offset
        self._timestamps_ms = array("q")
        self._relative_offsets = array("I")

    def __len__(self) -> int:
        return len(self._relative_offsets)

    @property
    def last_entry(self) -> tuple[int, int] | None:
        """(timestamp_ms, offset) of the last entry, or None when empty."""
        if not self._relative_offsets:
            return None
        return self._timestamps_ms[-1], self.base_offset + self._relative_offsets[-1]

    def entries(self) -> Iterator[tuple[int, int]]:
        """(timestamp_ms, offset) of every entry, in order (an offline check reads them)."""
        for timestamp_ms, relative_offset in zip(self._timestamps_ms, self._relative_offsets):
            yield timestamp_ms, self.base_offset + relative_offset

    def append(self, timestamp_ms: int, offset: int) -> bool:
        """Add (timestamp_ms, offset) if timestamp_ms is larger than the last entry's.

        Returns whether it was added. ``timestamp_ms`` is the running maximum
        up to and including the log entry at ``offset``.
        """
        if self._timestamps_ms and timestamp_ms <= self._timestamps_ms[-1]:
            return False
        relative_offset = offset - self.base_offset
        if not 0 <= relative_offset < UINT32_LIMIT:
            raise AssertionError(f"offset {offset} does not fit a UInt32 relative to base offset "
                                 f"{self.base_offset}")
        if self._relative_offsets and relative_offset <= self._relative_offsets[-1]:
            raise AssertionError(
                f"attempt to append offset {offset} at timestamp {timestamp_ms} ms, not larger "
                f"than the last offset {self.base_offset + self._relative_offsets[-1]} of the "
                f"time index of base offset {self.base_offset}")
        self._timestamps_ms.append(timestamp_ms)
        self._relative_offsets.append(relative_offset)
        return True

    def truncate_to(self, end_offset: int) -> None:
        """Forget the entries of offsets at or past ``end_offset`` (the log was cut there).

        The entries kept stay true: each one's timestamp is a maximum over
        log entries at or before its offset, all of which are kept."""
        slot = bisect_left(self._relative_offsets, max(end_offset - self.base_offset, 0))
        del self._timestamps_ms[slot:]
        del self._relative_offsets[slot:]

    def lookup(self, timestamp_ms: int) -> int:
        """The offset to start scanning from for the first entry with a timestamp >= timestamp_ms.

        It is the offset of the last index entry whose timestamp is below
        ``timestamp_ms`` (every log entry up to it is too early), or the base
        offset when there is none. The answer is at or after it.
        """
        slot = bisect_left(self._timestamps_ms, timestamp_ms) - 1
        if slot < 0:
            return self.base_offset
        return self.base_offset + self._relative_offsets[slot]

    def first_reaching(self, timestamp_ms: int) -> int | None:
        """The offset of the first entry whose timestamp is >= ``timestamp_ms``, or None.

        The first log entry stamped that late is at or before it, and after the
        offset index entry before it (at which the running maximum was still
        below): a remote look-up reads only that stretch
        (tier/remote_time_lookup.py)."""
        slot = bisect_left(self._timestamps_ms, timestamp_ms)
        if slot == len(self._timestamps_ms):
            return None
        return self.base_offset + self._relative_offsets[slot]

    def to_bytes(self) -> bytes:
        """The file contents: entries as in the module docstring.

        The columns are interleaved with strided byte copies (12 of them, at C
        speed) rather than a Python loop over entries.
        """
        rows = bytearray(ENTRY_BYTES * len(self))
        rows_view = memoryview(rows)
        timestamps_view = memoryview(self._timestamps_ms.tobytes())
        offsets_view = memoryview(self._relative_offsets.tobytes())
        for byte in range(TIMESTAMP_BYTES):
            rows_view[byte::ENTRY_BYTES] = timestamps_view[byte::TIMESTAMP_BYTES]
        for byte in range(RELATIVE_OFFSET_BYTES):
            rows_view[TIMESTAMP_BYTES + byte::ENTRY_BYTES] = offsets_view[byte::RELATIVE_OFFSET_BYTES]
        return bytes(rows)

    def write(self, path: Path) -> None:
        """Write the index file atomically (temporary file, fsync, rename)."""
        write_file_atomically(path, self.to_bytes())

    @classmethod
    def load(cls, path: Path, base_offset: int) -> TimeIndex:
        """Read a time index file; raise CorruptDataError if it is malformed.

        The caller rebuilds the index from the log on that error, and on
        FileNotFoundError.
        """
        return cls.from_bytes(Path(path).read_bytes(), base_offset, str(path))

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, base_offset: int, source: str) -> TimeIndex:
        """Parse a time index's bytes (a file, or a remote segment's .timeindex object);
        CorruptDataError naming ``source`` if they are malformed."""
        data = memoryview(data)
        if len(data) % ENTRY_BYTES:
            raise CorruptDataError(
                f"time index {source} is {len(data)} bytes, not a multiple of {ENTRY_BYTES}")
        count = len(data) // ENTRY_BYTES
        timestamps = bytearray(TIMESTAMP_BYTES * count)
        offsets = bytearray(RELATIVE_OFFSET_BYTES * count)
        for byte in range(TIMESTAMP_BYTES):
            memoryview(timestamps)[byte::TIMESTAMP_BYTES] = data[byte::ENTRY_BYTES]
        for byte in range(RELATIVE_OFFSET_BYTES):
            memoryview(offsets)[byte::RELATIVE_OFFSET_BYTES] = data[TIMESTAMP_BYTES + byte::ENTRY_BYTES]
        index = cls(base_offset)
        index._timestamps_ms = array("q", timestamps)
        index._relative_offsets = array("I", offsets)
        index._check_increasing(source)
        return index

    def _check_increasing(self, source: str) -> None:
        for column, name in ((self._timestamps_ms, "timestamp_ms"),
                             (self._relative_offsets, "relative offset")):
            slot = first_not_increasing(column)
            if slot is not None:
                raise CorruptDataError(
                    f"time index {source}: entry {slot} has {name} {column[slot]}, "
                    f"not larger than {column[slot - 1]} in entry {slot - 1}")
