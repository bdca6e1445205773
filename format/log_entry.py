"""The log entry frame: a 48-byte LogEntryHeader followed by one record batch.

Any process may import this module: the shard writes entries with it and a
consumer walks a fetch payload (a run of segment bytes) with ``iter_entries``.
It must not import ray or zmq. The format is ``schemas/log_entry.capnp``; the
header is a single-segment Cap'n Proto message packed by hand, 48 bytes,
little-endian:

    offset size  field
         0    4  segment count - 1        always 0           } the magic: the
         4    4  segment size in words    always 5           } first 16 bytes
         8    8  root struct pointer      0x0000000400000000 } never change
        16    8  base_offset       Int64   offset of the batch's first record
        24    8  max_timestamp_ms  Int64   largest record timestamp in the batch
        32    4  batch_bytes       UInt32  size of the RecordBatch that follows
        36    4  record_count      UInt32  records in the batch
        40    4  crc               UInt32  CRC-32C, see below
        44    4  attributes        UInt32  the batch's format, see below

    [header: 48 bytes][batch: batch_bytes bytes][next header]...

attributes names the format of the batch that follows, and nothing else:

    0  BATCH_FORMAT_PLINTH     a Plinth RecordBatch (schemas/record_batch.capnp)
    2  BATCH_FORMAT_KAFKA_V2   a Kafka RecordBatch v2 (format/kafka_batch.py), stored as
                               its producer sent it but for its baseOffset and
                               partitionLeaderEpoch, which the shard sets; 2 is
                               Kafka's magic byte for that format

Any other value is corruption.

crc is CRC-32C (Castagnoli) over header bytes 16..40 (base_offset,
max_timestamp_ms, batch_bytes, record_count), then, when attributes is not 0,
header bytes 44..48 (attributes), then the batch bytes. So an entry written
before attributes meant anything keeps its CRC, and a flipped attributes
field fails the CRC like any other flipped byte. The storage layer never
parses the batch; the CRC is what tells a torn or flipped entry from a good
one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

import crc32c

from plinth.errors import CorruptDataError
from plinth.limits import BATCH_BYTES_MAX, BATCH_RECORDS_MAX

_HEADER = struct.Struct(
    "<"
    "I"  # 0   segment count - 1 (0)
    "I"  # 4   segment size in words (5)
    "Q"  # 8   root struct pointer (offset 0, 4 data words, 0 pointers)
    "q"  # 16  base_offset
    "q"  # 24  max_timestamp_ms
    "I"  # 32  batch_bytes
    "I"  # 36  record_count
    "I"  # 40  crc
    "I"  # 44  attributes
)
# The bytes the CRC covers, before the batch: header bytes 16..40.
_CRC_FIELDS = struct.Struct("<qqII")  # base_offset, max_timestamp_ms, batch_bytes, record_count

LOG_ENTRY_HEADER_BYTES = 48
SEGMENT_COUNT_MINUS_ONE = 0
SEGMENT_WORDS = 5
ROOT_POINTER = 0x0000000400000000
MAGIC_BYTES = struct.pack("<IIQ", SEGMENT_COUNT_MINUS_ONE, SEGMENT_WORDS, ROOT_POINTER)
MAGIC_BYTES_LEN = 16
BATCH_FORMAT_PLINTH = 0
BATCH_FORMAT_KAFKA_V2 = 2
BATCH_FORMATS = (BATCH_FORMAT_PLINTH, BATCH_FORMAT_KAFKA_V2)
BATCH_FORMAT_NAMES = {BATCH_FORMAT_PLINTH: "plinth", BATCH_FORMAT_KAFKA_V2: "kafka-v2"}
ATTRIBUTES_NONE = BATCH_FORMAT_PLINTH
_ATTRIBUTES = struct.Struct("<I")

# The struct formats must mirror the table above: checked at import, under -O too.
if (_HEADER.size, len(MAGIC_BYTES), _CRC_FIELDS.size) != (
        LOG_ENTRY_HEADER_BYTES, MAGIC_BYTES_LEN, 40 - MAGIC_BYTES_LEN):
    raise AssertionError(f"LogEntryHeader structs disagree with the layout: {_HEADER.size}, "
                         f"{len(MAGIC_BYTES)}, {_CRC_FIELDS.size}")


class LogEntryHeader(NamedTuple):
    """The variable fields of a LogEntryHeader (the magic is checked, not kept)."""

    base_offset: int
    max_timestamp_ms: int
    batch_bytes: int
    record_count: int
    crc: int
    attributes: int

    @property
    def entry_bytes(self) -> int:
        """Header plus batch: how far the next entry starts from this one."""
        return LOG_ENTRY_HEADER_BYTES + self.batch_bytes

    @property
    def end_offset(self) -> int:
        """The offset after the batch's last record."""
        return self.base_offset + self.record_count


def entry_crc(base_offset: int, max_timestamp_ms: int, batch_bytes: int,
              record_count: int, batch, attributes: int = BATCH_FORMAT_PLINTH) -> int:
    """CRC-32C over header bytes 16..40, the attributes unless 0, then the batch. Any thread."""
    crc = crc32c.crc32c(_CRC_FIELDS.pack(base_offset, max_timestamp_ms, batch_bytes, record_count))
    if attributes != BATCH_FORMAT_PLINTH:
        crc = crc32c.crc32c(_ATTRIBUTES.pack(attributes), crc)
    return crc32c.crc32c(batch, crc)


def pack_entry_header(base_offset: int, max_timestamp_ms: int, batch_bytes: int,
                      record_count: int, crc: int,
                      attributes: int = ATTRIBUTES_NONE) -> bytes:
    """The 48 header bytes, field by field as in the module docstring. Any thread."""
    return _HEADER.pack(
        SEGMENT_COUNT_MINUS_ONE,
        SEGMENT_WORDS,
        ROOT_POINTER,
        base_offset,
        max_timestamp_ms,
        batch_bytes,
        record_count,
        crc,
        attributes,
    )


def build_entry_header(base_offset: int, max_timestamp_ms: int, record_count: int, batch,
                       batch_format: int = BATCH_FORMAT_PLINTH) -> bytes:
    """The header for ``batch`` in ``batch_format``, its CRC computed. Any thread."""
    if batch_format not in BATCH_FORMATS:
        raise AssertionError(f"batch format {batch_format} is none of {BATCH_FORMATS}")
    batch_bytes = len(batch)
    crc = entry_crc(base_offset, max_timestamp_ms, batch_bytes, record_count, batch, batch_format)
    return pack_entry_header(base_offset, max_timestamp_ms, batch_bytes, record_count, crc,
                             batch_format)



def unpack_entry_header(buf, position: int = 0, position_base: int = 0) -> LogEntryHeader:
    """The header at ``position`` of ``buf``. Any thread.

    Raises CorruptDataError if fewer than 48 bytes remain, if the magic
    (first 16 bytes) is wrong, if a length is beyond its limit or if the
    attributes name no batch format, so that a reader never trusts a length
    or a format from a damaged header. Error messages give
    ``position_base + position``: pass the file position of ``buf[0]``.
    """
    where = position_base + position
    if len(buf) - position < LOG_ENTRY_HEADER_BYTES:
        raise CorruptDataError(
            f"truncated entry header at position {where}: "
            f"{len(buf) - position} bytes left, need {LOG_ENTRY_HEADER_BYTES}")
    (segment_count_minus_one, segment_words, root_pointer, base_offset,
     max_timestamp_ms, batch_bytes, record_count, crc,
     attributes) = _HEADER.unpack_from(buf, position)
    if (segment_count_minus_one, segment_words, root_pointer) != (
            SEGMENT_COUNT_MINUS_ONE, SEGMENT_WORDS, ROOT_POINTER):
        raise CorruptDataError(
            f"bad entry magic at position {where}: "
            f"{bytes(buf[position:position + MAGIC_BYTES_LEN]).hex()}, "
            f"expected {MAGIC_BYTES.hex()}")
    _check_lengths(where, batch_bytes, record_count)
    if attributes not in BATCH_FORMATS:
        raise CorruptDataError(
            f"entry at position {where} has attributes 0x{attributes:08x}, "
            f"which names no batch format (known: {BATCH_FORMAT_NAMES})")
    return LogEntryHeader(base_offset, max_timestamp_ms, batch_bytes,
                          record_count, crc, attributes)


def _check_lengths(position: int, batch_bytes: int, record_count: int) -> None:
    if batch_bytes > BATCH_BYTES_MAX:
        raise CorruptDataError(
            f"entry at position {position} declares batch_bytes {batch_bytes}, "
            f"over the limit {BATCH_BYTES_MAX}")
    if not 1 <= record_count <= BATCH_RECORDS_MAX:
        raise CorruptDataError(
            f"entry at position {position} declares record_count {record_count}, "
            f"outside [1, {BATCH_RECORDS_MAX}]")


def check_entry_crc(header: LogEntryHeader, batch, position: int = 0) -> None:
    """Raise CorruptDataError if ``batch`` does not match the header's CRC. Any thread."""
    crc = entry_crc(header.base_offset, header.max_timestamp_ms,
                    header.batch_bytes, header.record_count, batch, header.attributes)
    if crc != header.crc:
        raise CorruptDataError(
            f"CRC mismatch in entry at position {position} (base offset "
            f"{header.base_offset}, {header.batch_bytes} batch bytes): "
            f"computed 0x{crc:08x}, header says 0x{header.crc:08x}")


def scan_whole_entries(buffer, verify_crc: bool = True, position_base: int = 0
                       ) -> Iterator[tuple[int, LogEntryHeader, memoryview]]:
    """Yield (position, header, batch view) of each whole entry in ``buffer``.

    Stops quietly before a trailing entry cut off by the end of the buffer (a
    caller reading a file in chunks reads further; a caller that needs the
    buffer to end on an entry boundary compares positions). Raises
    CorruptDataError on a bad header or, with ``verify_crc``, a bad CRC.
    Positions, yielded and in messages, are ``position_base`` + the position
    in ``buffer``. The views point into ``buffer``. Any thread.
    """
    view = memoryview(buffer)
    buffer_bytes = len(view)
    position = 0
    while buffer_bytes - position >= LOG_ENTRY_HEADER_BYTES:
        header = unpack_entry_header(view, position, position_base)
        batch_position = position + LOG_ENTRY_HEADER_BYTES
        batch_end = batch_position + header.batch_bytes
        if batch_end > buffer_bytes:
            return
        batch = view[batch_position:batch_end]
        if verify_crc:
            check_entry_crc(header, batch, position_base + position)
        yield position_base + position, header, batch
        position = batch_end


# The fields records_from reads of each header: base_offset, (max_timestamp_ms,)
# batch_bytes, record_count, at header bytes 16..40.
_OFFSETS_AND_LENGTHS = struct.Struct("<q8xII")


def records_from(buffer, offset: int) -> int:
    """Records at or after ``offset`` in a run of whole entries (a fetch answer, which
    starts with the entry holding ``offset``). Walks the headers only, trusting them:
    the reader checked them (shard stats count what a fetch handed out). Any thread."""
    view = memoryview(buffer)
    position, first, end = 0, None, offset
    while len(view) - position >= LOG_ENTRY_HEADER_BYTES:
        base_offset, batch_bytes, record_count = _OFFSETS_AND_LENGTHS.unpack_from(
            view, position + MAGIC_BYTES_LEN)
        if first is None:
            first = base_offset
        end = base_offset + record_count
        position += LOG_ENTRY_HEADER_BYTES + batch_bytes
    return max(0, end - max(offset, first if first is not None else offset))


def iter_entries(buffer, verify_crc: bool = True
                 ) -> Iterator[tuple[LogEntryHeader, memoryview]]:
    """Yield (header, batch view) of each entry of a run of whole entries.

    This is how a consumer walks a fetch payload. Raises CorruptDataError,
    with the position, on a bad header, a CRC mismatch or a truncated last
    entry. Any thread.
    """
    end = 0
    for position, header, batch in scan_whole_entries(buffer, verify_crc):
        yield header, batch
        end = position + header.entry_bytes
    left_bytes = len(memoryview(buffer)) - end
    if left_bytes:
        raise CorruptDataError(
            f"truncated entry at position {end}: {left_bytes} bytes left over "
            f"after the last whole entry")
