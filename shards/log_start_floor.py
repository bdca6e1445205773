"""A partition's log start floor: the offset DeleteRecords moved its log start to.

Kafka's log start offset can sit inside a segment: DeleteRecords (Kafka API 21,
Plinth's deleteRecords) makes every record below an offset unreadable at once,
without cutting the segment that holds it. The partition (partition.py) keeps
that offset, the floor, and its log start offset is max(floor, the first offset
its segments, local or remote, hold). Runs on a shard's loop thread (the
partition's owner), every function.

The file. ``<partition dir>/log-start-floor``, 20 bytes, big-endian, written
whole and replaced atomically (durable_files.py: temp file, fsync, rename, fsync
of the directory) before a deleteRecords is answered, so that a crash leaves the
old floor or the new one, never a mix, and an answered deletion survives:

    offset  size  field
         0     4  magic     b"PLSF" (FLOOR_MAGIC)
         4     2  version   1 (FLOOR_VERSION)
         6     2  reserved  0
         8     8  floor     int64, >= 0: no record below it is served
        16     4  crc       CRC-32C of bytes 0..15

No file is floor 0 (a partition never asked to delete records).

Recovery. A file that is not exactly one that ``save_floor`` wrote (torn,
flipped, of another version) is a lost floor (``FLOOR_LOST``): records below
some unknown offset were deleted, and which is not known. Kafka takes the log
directory offline on a bad checkpoint. A shard instead serves the partition
from the first offset its segments hold, as if nothing had been deleted
(partition.py, ``_load_floor``): every acknowledged record it holds stays
readable, and what may come back is only what deleteRecords had hidden inside
the segments it had not yet deleted (the oldest local one, a tiered topic's
older ones). Serving from the log's end instead would hide every acknowledged
record over a bad 20-byte file. The bad file is kept beside it as
``log-start-floor.corrupt`` for the operator, and the shard logs an ERROR naming
the file, the range now served and the way back: delete the records again
(``plinth topic delete-records``). A follower takes its leader's floor again
from its next fetch answer.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import NamedTuple

import crc32c

from plinth.durable_files import write_file_atomically
from plinth.errors import CorruptDataError

log = logging.getLogger(__name__)

FLOOR_FILE = "log-start-floor"
CORRUPT_SUFFIX = ".corrupt"
FLOOR_MAGIC = b"PLSF"
FLOOR_VERSION = 1
# magic, version, reserved, floor; then the CRC of those 16 bytes.
_BODY = struct.Struct(">4sHHq")
_CRC = struct.Struct(">I")
FLOOR_FILE_BYTES = _BODY.size + _CRC.size   # 20

# How load_floor found the file (FloorLoad.outcome).
FLOOR_NONE = "none"           # no file: floor 0
FLOOR_LOADED = "loaded"       # a whole, valid file
FLOOR_LOST = "lost"           # a bad file: the caller serves all it holds


class FloorLoad(NamedTuple):
    """What ``load_floor`` read: the floor (0 unless ``outcome`` is FLOOR_LOADED) and why."""

    floor: int
    outcome: str
    reason: str = ""


def floor_bytes(floor: int) -> bytes:
    """The file's 20 bytes for ``floor``, as in the module docstring."""
    if floor < 0:
        raise AssertionError(f"a log start floor is an offset, >= 0, not {floor}")
    body = _BODY.pack(FLOOR_MAGIC, FLOOR_VERSION, 0, floor)
    return body + _CRC.pack(crc32c.crc32c(body))


def parse_floor(data: bytes, path: Path) -> int:
    """The floor in file contents ``data`` (read from ``path``). Raises
    CorruptDataError, naming the file and what is wrong, unless ``save_floor``
    wrote exactly these bytes."""
    if len(data) != FLOOR_FILE_BYTES:
        raise CorruptDataError(f"log start floor {path}: {len(data)} bytes, not "
                               f"{FLOOR_FILE_BYTES}: the file is torn")
    body = data[:_BODY.size]
    (stored_crc,) = _CRC.unpack_from(data, _BODY.size)
    crc = crc32c.crc32c(body)
    if stored_crc != crc:
        raise CorruptDataError(f"log start floor {path}: CRC {stored_crc:08x} in the file, "
                               f"{crc:08x} of its bytes: the file is torn or flipped")
    magic, version, reserved, floor = _BODY.unpack(body)
    if magic != FLOOR_MAGIC or version != FLOOR_VERSION or reserved != 0 or floor < 0:
        raise CorruptDataError(f"log start floor {path}: magic {magic!r}, version {version}, "
                               f"reserved {reserved}, floor {floor}; this broker reads magic "
                               f"{FLOOR_MAGIC!r}, version {FLOOR_VERSION}, reserved 0, floor >= 0")
    return floor


def save_floor(directory: Path, floor: int) -> None:
    """Replace ``directory``'s floor file with ``floor``, durably. Raises OSError if
    the disk refuses (the caller names its partition)."""
    write_file_atomically(Path(directory) / FLOOR_FILE, floor_bytes(floor), sync_dir=True)


def load_floor(directory: Path) -> FloorLoad:
    """The floor saved in ``directory``: FLOOR_NONE (0) without a file, FLOOR_LOADED,
    or FLOOR_LOST for a bad file, which is renamed to ``<file>.corrupt`` (durably)
    so that the caller's new floor replaces it. Raises OSError if the disk refuses."""
    path = Path(directory) / FLOOR_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return FloorLoad(0, FLOOR_NONE)
    try:
        return FloorLoad(parse_floor(data, path), FLOOR_LOADED)
    except CorruptDataError as exc:
        os.replace(path, path.with_name(FLOOR_FILE + CORRUPT_SUFFIX))
        return FloorLoad(0, FLOOR_LOST, str(exc))
