"""A partition log's gaps: the offset ranges it skips on purpose.

A log's segments are contiguous, except where ``PartitionLog.continue_at`` left a
gap: a partition whose writes came back to this shard after living on another
skips the offsets that shard holds (or object storage now holds). Any other hole
between two segments is lost data: a segment file deleted, or one cut short (an
older segment is not recovered at open, so its end is where its readable entries
end). Without a record of the gaps made on purpose the two look alike, and a read
in a lost range would go on from the next segment: a consumer would skip the
records without a word. So the log keeps its gaps, and a hole that is not one
of them is read as CorruptDataError naming the range (partition_log.py). Runs on
the partition's owner, a shard's loop thread, every function.

The file. ``<partition dir>/offset-gaps``, written whole and replaced atomically
(durable_files.py: temp file, fsync, rename, fsync of the directory) before the
segment that makes a new gap is created, big-endian:

    offset   size  field
         0      4  magic     b"PLGP" (GAPS_MAGIC)
         4      2  version   1 (GAPS_VERSION)
         6      2  reserved  0
         8      4  count     n, the gaps that follow
        12   16*n  gaps      each: start int64, end int64: offsets [start, end)
                             skipped, start < end, in order, not overlapping
    12+16n      4  crc       CRC-32C of bytes 0..12+16n-1

A log created by this version writes the file (empty) at once. No file is a log
written before gaps were kept (``None``: unknown), and a file that is not exactly
one ``save_gaps`` wrote (torn, flipped) is the same, logged as an ERROR with the
file kept as ``offset-gaps.corrupt``.

Gaps not known: the rule. Nothing but ``continue_at`` makes a gap, and it is
called only where a partition takes writes at its ``initial_offset`` (shard
manifest.json, ``PartitionSpec.initial_offset``: where its log continues on this
shard; 0 for a partition never moved), with that offset: every gap a move made
ends at or before the partition's latest ``initial_offset``. Retention, deleteRecords,
a follower's ``truncate_to`` and ``restart_at`` cut the log's ends, never its
middle. So with the gaps not known, a hole that ends at or before the
``initial_offset`` the log was opened with (``PartitionLog.open``) may be a gap a
move made and is taken as one (refusing every read past it over a bad file of a
few bytes would hide records that are there); a hole that ends past it cannot
be, and is read as CorruptDataError naming the offsets, as with a good file.
A partition never moved (``initial_offset`` 0) thus reads every hole as lost
data whatever its offset-gaps file says. ``plinth check`` applies the same rule
with the manifest's ``initial_offset`` (log_check.py), and names a hole it cannot
tell from a gap as a note.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import crc32c

from plinth.durable_files import write_file_atomically

log = logging.getLogger(__name__)

GAPS_FILE = "offset-gaps"
CORRUPT_SUFFIX = ".corrupt"
GAPS_MAGIC = b"PLGP"
GAPS_VERSION = 1
# magic, version, reserved, count; then count gaps; then the CRC of all before it.
_HEAD = struct.Struct(">4sHHI")
_GAP = struct.Struct(">qq")
_CRC = struct.Struct(">I")

Gap = tuple[int, int]


def gaps_bytes(gaps: list[Gap]) -> bytes:
    """The file's bytes for ``gaps``, as in the module docstring."""
    for (start, end), following in zip(gaps, gaps[1:] + [(None, None)]):
        if not 0 <= start < end or (following[0] is not None and following[0] < end):
            raise AssertionError(f"offset gaps must be [start, end) ranges in order, "
                                 f"not overlapping: {gaps}")
    body = _HEAD.pack(GAPS_MAGIC, GAPS_VERSION, 0, len(gaps)) + b"".join(
        _GAP.pack(start, end) for start, end in gaps)
    return body + _CRC.pack(crc32c.crc32c(body))


def save_gaps(directory: Path, gaps: list[Gap]) -> None:
    """Make ``gaps`` the log's, durably. OSError if the disk refuses (the caller says
    which partition)."""
    write_file_atomically(Path(directory) / GAPS_FILE, gaps_bytes(gaps), sync_dir=True)


def load_gaps(directory: Path) -> list[Gap] | None:
    """The log's gaps made on purpose, or None if they are not known (module
    docstring: no file, or a bad one, set aside and logged)."""
    path = Path(directory) / GAPS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    gaps = _parsed(data)
    if gaps is None:
        os.replace(path, path.with_name(GAPS_FILE + CORRUPT_SUFFIX))
        log.error("%s is not an offset-gaps file (%d bytes): kept as %s%s; a hole "
                  "between this log's segments that ends at or before the offset where "
                  "the partition last continued on this shard (its manifest's "
                  "initial_offset) is now taken as a gap a move made; one past it is "
                  "still read as missing offsets (CorruptDataError)", path, len(data),
                  GAPS_FILE, CORRUPT_SUFFIX)
    return gaps


def read_gaps(directory: Path) -> tuple[list[Gap] | None, bool]:
    """(the gaps, whether a file was there) without changing anything: a bad file is
    (None, True). For an offline check (log_check.py); OSError if it cannot be read."""
    try:
        data = (Path(directory) / GAPS_FILE).read_bytes()
    except FileNotFoundError:
        return None, False
    return _parsed(data), True


def _parsed(data: bytes) -> list[Gap] | None:
    if len(data) < _HEAD.size + _CRC.size:
        return None
    magic, version, _, count = _HEAD.unpack_from(data)
    if (magic, version) != (GAPS_MAGIC, GAPS_VERSION) or \
            len(data) != _HEAD.size + count * _GAP.size + _CRC.size:
        return None
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if crc != crc32c.crc32c(data[:-_CRC.size]):
        return None
    return [_GAP.unpack_from(data, _HEAD.size + i * _GAP.size) for i in range(count)]
