"""The sparse offset index of one segment: offset -> file position.

Used only by the shard actor's data thread. The ``.index`` file next to a
segment's ``.log`` file is a run of 8-byte entries, little-endian:

    offset size  field
         0    4  relative_offset  UInt32  entry's base offset - segment base offset
         4    4  position         UInt32  byte position of the entry in the .log file

One entry is added per ``index_interval_bytes`` of log (Kafka's
index.interval.bytes), so the index is sparse: to find an offset, look up the
largest indexed offset at or below it and scan entry headers forward from
there. Both columns strictly increase. The file carries no checksum (as in
Kafka's OffsetIndex): a segment rebuilds its index from the log whenever the
file is missing or fails validation, and the active segment's index is always
rebuilt after a restart. In memory the index is two arrays; it is written
whole when its segment rolls or closes.
"""

from __future__ import annotations

import operator
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from plinth.durable_files import write_file_atomically
from plinth.errors import CorruptDataError

ENTRY_BYTES = 8
UINT32_LIMIT = 1 << 32

# The arrays are written to disk as they are in memory.
if sys.byteorder != "little" or array("I").itemsize != 4:
    raise AssertionError(f"index files hold little-endian UInt32s; this host is {sys.byteorder}-"
                         f"endian with {array('I').itemsize}-byte array('I') items")


class OffsetIndex:
    """Maps offsets to .log file positions for one segment. Data thread only."""

    def __init__(self, base_offset: int):
        self.base_offset = base_offset
        self._relative_offsets = array("I")
        self._positions = array("I")

    def __len__(self) -> int:
        return len(self._positions)

    @property
    def last_entry(self) -> tuple[int, int]:
        """(offset, position) of the last entry, or (base_offset, 0) when empty."""
        if not self._positions:
            return self.base_offset, 0
        return self.base_offset + self._relative_offsets[-1], self._positions[-1]

    def entries(self) -> Iterator[tuple[int, int]]:
        """(offset, position) of every entry, in order (an offline check reads them)."""
        for relative_offset, position in zip(self._relative_offsets, self._positions):
            yield self.base_offset + relative_offset, position

    def append(self, offset: int, position: int) -> None:
        """Index the entry with base offset ``offset`` starting at ``position``."""
        relative_offset = offset - self.base_offset
        if not 0 <= relative_offset < UINT32_LIMIT:
            raise AssertionError(f"offset {offset} does not fit a UInt32 relative to base offset "
                                 f"{self.base_offset}")
        if not 0 <= position < UINT32_LIMIT:
            raise AssertionError(f"position {position} of offset {offset} does not fit a UInt32")
        if self._positions:
            last_offset, last_position = self.last_entry
            if offset <= last_offset or position <= last_position:
                raise AssertionError(
                    f"attempt to append offset {offset} at position {position}, not larger "
                    f"than the last entry (offset {last_offset}, position {last_position}) "
                    f"of the index of base offset {self.base_offset}")
        self._relative_offsets.append(relative_offset)
        self._positions.append(position)

    def truncate_to(self, end_offset: int) -> None:
        """Forget the entries of offsets at or past ``end_offset`` (the log was cut there)."""
        slot = bisect_left(self._relative_offsets, max(end_offset - self.base_offset, 0))
        del self._relative_offsets[slot:]
        del self._positions[slot:]

    def lookup(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the largest entry at or below ``offset``.

        Returns (base_offset, 0) when there is none, like Kafka: scanning from
        the start of the segment is always correct.
        """
        slot = bisect_right(self._relative_offsets, offset - self.base_offset) - 1
        if slot < 0:
            return self.base_offset, 0
        return self.base_offset + self._relative_offsets[slot], self._positions[slot]

    def to_bytes(self) -> bytes:
        """The file contents: entries as in the module docstring."""
        rows = array("I", bytes(ENTRY_BYTES * len(self)))
        rows[0::2] = self._relative_offsets
        rows[1::2] = self._positions
        return rows.tobytes()

    def write(self, path: Path) -> None:
        """Write the index file atomically (temporary file, fsync, rename)."""
        write_file_atomically(path, self.to_bytes())

    @classmethod
    def load(cls, path: Path, base_offset: int) -> OffsetIndex:
        """Read an index file; raise CorruptDataError if it is malformed.

        The caller rebuilds the index from the log on that error, and on
        FileNotFoundError.
        """
        return cls.from_bytes(Path(path).read_bytes(), base_offset, str(path))

    @classmethod
    def from_bytes(cls, data: bytes, base_offset: int, source: str) -> OffsetIndex:
        """An index from a file's bytes (read from disk, or from object storage: the
        ``source`` that messages name); raise CorruptDataError if malformed."""
        path = source
        if len(data) % ENTRY_BYTES:
            raise CorruptDataError(
                f"offset index {path} is {len(data)} bytes, not a multiple of {ENTRY_BYTES}")
        rows = array("I", data)
        index = cls(base_offset)
        index._relative_offsets = rows[0::2]
        index._positions = rows[1::2]
        index._check_increasing(path)
        return index

    def _check_increasing(self, path: Path) -> None:
        for column, name in ((self._relative_offsets, "relative offset"),
                             (self._positions, "position")):
            slot = first_not_increasing(column)
            if slot is not None:
                raise CorruptDataError(
                    f"offset index {path}: entry {slot} has {name} {column[slot]}, "
                    f"not larger than {column[slot - 1]} in entry {slot - 1}")


def first_not_increasing(column: array) -> int | None:
    """The first slot whose value is not larger than the one before, or None.

    The common (valid) case runs at C speed: map/operator.lt, no Python loop.
    """
    if all(map(operator.lt, column, islice(column, 1, None))):
        return None
    return next(slot for slot in range(1, len(column)) if column[slot] <= column[slot - 1])


