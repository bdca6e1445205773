"""Kafka's RecordBatch v2 (magic 2): Plinth's second batch format, beside RecordBatch.

A Kafka producer's batch is stored byte for byte as it was sent, behind the usual
LogEntryHeader (whose ``attributes`` names the format); the shard overwrites only
baseOffset and partitionLeaderEpoch, both outside the CRC. The layout, as Kafka's
DefaultRecordBatch and DefaultRecord define it; the header is big-endian:

    offset size  field
         0    8  baseOffset            int64   offset of record 0 (the shard stamps it)
         8    4  batchLength           int32   bytes after this field: len(batch) - 12
        12    4  partitionLeaderEpoch  int32   the leader's epoch (the shard stamps it)
        16    1  magic                 int8    2
        17    4  crc                   uint32  CRC-32C (Castagnoli) of bytes 21..end
        21    2  attributes            int16   bits 0-2 compression: 0 none, 1 gzip,
                                               2 snappy, 3 lz4, 4 zstd; bit 3
                                               timestampType (0 CreateTime, 1
                                               LogAppendTime); bit 4 transactional;
                                               bit 5 control; bit 6 (delete horizon,
                                               set by compaction) and up: unused
        23    4  lastOffsetDelta       int32   recordsCount - 1
        27    8  baseTimestamp         int64   ms: record 0's timestamp (Kafka's
                                               FirstTimestamp); the others are relative
        35    8  maxTimestamp          int64   ms; the largest record timestamp
        43    8  producerId            int64   -1 when not idempotent
        51    2  producerEpoch         int16   -1 when not idempotent
        53    4  baseSequence          int32   sequence of record 0, -1 when not idempotent
        57    4  recordsCount          int32
        61       records: recordsCount records back to back, or, when compressed,
                 all of them as one block of the codec (gzip stream; snappy raw or
                 in xerial/snappy-java framing; lz4 frame; zstd frame)

    record:   length          varint   bytes of the record after this field
              attributes      int8     unused (0)
              timestampDelta  varlong  timestamp - baseTimestamp
              offsetDelta     varint   offset - baseOffset: the record's index
              keyLength       varint   -1: null key
              key             bytes
              valueLength     varint   -1: null value
              value           bytes
              headersCount    varint
              headers         headersCount x (keyLength varint (>= 0), key (UTF-8),
                                              valueLength varint (-1: null), value)

A varint is zigzag-encoded (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...) and written 7 bits
a byte, lowest first, the high bit meaning "more": at most 5 bytes for a varint
(int32), 10 for a varlong (int64).

The CRC covers everything from attributes on, so that baseOffset and
partitionLeaderEpoch can be assigned without recomputing it; the CRC is checked
once, by the shard, when the batch is produced (afterwards the LogEntryHeader's
CRC protects the stored bytes).

The rules a produced batch must keep (Plinth's, where they are stricter than Kafka's):
  * magic 2; batchLength the bytes there are; the CRC right (else CorruptDataError).
  * recordsCount 1 .. BATCH_RECORDS_MAX and lastOffsetDelta == recordsCount - 1.
  * not transactional, not a control batch: Plinth has no transactions.
  * timestampType CreateTime (a producer never sends LogAppendTime: the broker sets
    it), a known codec, no unused attribute bit.
  * timestamps >= 0: baseTimestamp, and, for an uncompressed batch, every record's
    (else InvalidTimestampError, Kafka's INVALID_TIMESTAMP, which clients do not
    retry). Kafka accepts -1 (NO_TIMESTAMP) in a CreateTime batch and skips its
    time checks; Plinth refuses it: retention and time lookups need a real time,
    the shard checks every batch against the topic's time window, and every Kafka
    client of the v2 era stamps records with the time when the application gives
    none. maxTimestamp is not checked, as Kafka does not: the summary's (the time
    index's) is the largest record timestamp of an uncompressed batch, and of a
    compressed one maxTimestamp, or baseTimestamp if that is larger. The stored
    bytes keep the producer's maxTimestamp (Kafka rewrites it, and the CRC with
    it; Plinth stores batches as sent). kafkajs writes a maxTimestamp that is not
    the largest whenever a send mixes records with and without a timestamp (it
    compares them as strings): refusing those (CORRUPT_MESSAGE, until session 39)
    failed ordinary kafkajs sends.
  * producerId and baseSequence both >= -1, and baseSequence >= 0 when producerId
    is set: Kafka's idempotence has Plinth's meaning. producerEpoch is the
    summary's, and the shard checks it as Kafka does (shards/producer_state.py): a
    new epoch starts the sequence again at 0, an older one is refused.
    InitProducerId answers epoch 0; librdkafka bumps it itself after a batch failed
    for good.
  * an uncompressed batch is walked record by record in C: every varint well formed
    and inside the batch, each record exactly its length, offsetDelta == its index,
    exactly recordsCount records and no byte after them. A compressed batch gets
    the header and CRC checks only: the shard never decompresses (its records are
    walked, with the same checks, by each consumer that decodes it).

Mapping to Plinth's ConsumerRecord (a Plinth consumer of a Kafka batch): key and
value bytes or None; timestamp_ms baseTimestamp + timestampDelta (maxTimestamp for
a LogAppendTime batch); offset baseOffset + offsetDelta; headers a list of (str,
value) in order, where a null header value is None (Kafka's null survives: Plinth
headers are never null, so None is unambiguous) and a header key that is not UTF-8
(Java clients always write UTF-8, others may not) is decoded with
``surrogateescape``, so that ``key.encode("utf-8", "surrogateescape")`` gives its
bytes back: nothing is lost and decoding never fails on a key.

Who calls what:
  * ``summarize_kafka_batch``    the shard actor, once per produced Kafka batch.
  * ``stamp_kafka_batch``        the shard actor, when it appends the batch.
  * ``decode_kafka_records``     the Plinth consumer (client), once per fetched batch.
  * ``kafka_batch_from_plinth``  the shard actor (or router) answering a Kafka consumer's
                                 fetch, once per stored Plinth RecordBatch.
  * ``kafka_batch_from_records`` tests and tools: a batch from ConsumerRecords.

Where the work is done: format/kafka_batch.c, compiled into the extension that owns
the record format (plinth.format._record_batch), walks and writes the records;
this module checks the size, magic, length and CRC (with the crc32c package) and
decompresses (cramjam, one call per batch; one per block for xerial snappy).
"""

from __future__ import annotations

import struct

import cramjam
import crc32c

from plinth import limits
from plinth.errors import (CorruptDataError, InvalidBatchError, InvalidTimestampError,
                           RecordTooLargeError)
from plinth.format import _record_batch
from plinth.format.record_batch import (
    BatchSummary, ConsumerRecord, _read_fields, _records_from_fields,
)

__all__ = ["COMPRESSION_GZIP", "COMPRESSION_LZ4", "COMPRESSION_NONE", "COMPRESSION_SNAPPY",
           "COMPRESSION_ZSTD", "KAFKA_BATCH_HEADER_BYTES", "KAFKA_MAGIC",
           "decode_kafka_records", "kafka_batch_from_plinth", "kafka_batch_from_records",
           "stamp_kafka_batch", "summarize_kafka_batch"]

# The first fields, which say how to read the rest (the layout above).
_PREFIX = struct.Struct(
    ">"
    "q"  # 0   baseOffset
    "i"  # 8   batchLength
    "i"  # 12  partitionLeaderEpoch
    "b"  # 16  magic
    "I"  # 17  crc
    "h"  # 21  attributes
)
_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")
_LEADER_EPOCH_AT = 12
_CRC_FROM = 21                      # the CRC covers bytes 21..end
_LENGTH_COUNTED_FROM = 12           # batchLength counts the bytes from 12 on
KAFKA_BATCH_HEADER_BYTES = 61       # where the records start
KAFKA_MAGIC = 2

COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD = range(5)
_COMPRESSION_MASK = 0x07
_CODEC_NAMES = {COMPRESSION_GZIP: "gzip", COMPRESSION_SNAPPY: "snappy",
                COMPRESSION_LZ4: "lz4", COMPRESSION_ZSTD: "zstd"}

# snappy-java's stream framing, which Kafka's Java clients write: this 8-byte magic,
# an int32 version and an int32 compatible version, then blocks, each an int32
# length and raw snappy of that many bytes.
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER_BYTES = 16
_XERIAL_BLOCK_LENGTH = struct.Struct(">i")
# The first output buffer for a gzip, lz4 or zstd block (whose size is not known
# before decompressing): this many times the compressed bytes, at least the minimum,
# growing by the factor until the records fit or the limit is reached.
_DECOMPRESSED_GUESS_RATIO = 4
_DECOMPRESSED_GUESS_BYTES_MIN = 64 * 1024
_DECOMPRESSED_GROWTH = 4
# What cramjam's gzip, lz4 and zstd say when the output buffer is full (Rust's
# io::ErrorKind::WriteZero); test_kafka_batch.py holds a batch that needs growing,
# so a change of wording fails a test rather than a consumer.
_OUTPUT_FULL = "failed to write whole buffer"
# cramjam errors can be long; messages keep their start.
_CODEC_ERROR_CHARS_MAX = 200


# --- The shard ---------------------------------------------------------------

def summarize_kafka_batch(batch: bytes | memoryview) -> BatchSummary:
    """Check an untrusted Kafka batch against every rule (the module docstring's list).

    Runs in the shard actor, once per produced Kafka batch, before anything is
    stored. Raises RecordTooLargeError if the batch is over BATCH_BYTES_MAX,
    CorruptDataError if its CRC is wrong, InvalidTimestampError for a timestamp below
    0, InvalidBatchError for anything else.
    The summary's base_timestamp_ms is the smallest record timestamp of an
    uncompressed batch; of a compressed one, baseTimestamp (the first record's,
    as Kafka producers write it), since the shard does not decompress.
    """
    view = memoryview(batch)
    size_bytes = view.nbytes
    if size_bytes > limits.BATCH_BYTES_MAX:
        raise RecordTooLargeError(f"Kafka batch of {size_bytes} bytes is over the limit of "
                                  f"{limits.BATCH_BYTES_MAX} bytes")
    _check_frame(view, size_bytes)
    try:
        summary = _record_batch.kafka_summarize(view, limits.BATCH_RECORDS_MAX, BatchSummary)
    except ValueError as exc:   # the rule broken, with its numbers
        raise InvalidBatchError(str(exc)) from None
    if summary.base_timestamp_ms < 0:
        raise InvalidTimestampError(
            f"Kafka batch has a timestamp of {summary.base_timestamp_ms} ms: Plinth takes "
            f"timestamps >= 0 (ms since the epoch; -1, Kafka's NO_TIMESTAMP, included)")
    return summary


def _check_frame(view: memoryview, size_bytes: int) -> None:
    """Size, magic, batchLength and CRC: what must hold before any field is believed."""
    if size_bytes < KAFKA_BATCH_HEADER_BYTES:
        raise InvalidBatchError(f"Kafka batch of {size_bytes} bytes is shorter than its "
                                f"{KAFKA_BATCH_HEADER_BYTES}-byte header")
    _, batch_length, _, magic, crc, _ = _PREFIX.unpack_from(view)
    if magic != KAFKA_MAGIC:
        raise InvalidBatchError(f"Kafka batch has magic {magic}: only RecordBatch v2 "
                                f"(magic {KAFKA_MAGIC}) is supported")
    if batch_length != size_bytes - _LENGTH_COUNTED_FROM:
        raise InvalidBatchError(f"Kafka batch has batchLength {batch_length} but "
                                f"{size_bytes - _LENGTH_COUNTED_FROM} bytes after it "
                                f"({size_bytes} bytes in all)")
    computed = crc32c.crc32c(view[_CRC_FROM:])
    if computed != crc:
        raise CorruptDataError(f"Kafka batch of {size_bytes} bytes has CRC 0x{crc:08x}, but "
                               f"its bytes {_CRC_FROM}..{size_bytes} give 0x{computed:08x}")


def stamp_kafka_batch(batch: bytes | memoryview, base_offset: int,
                      leader_epoch: int) -> bytearray:
    """A copy of a batch summarize_kafka_batch accepted, with baseOffset and
    partitionLeaderEpoch set: what the shard actor stores. Both fields lie before
    the CRC's range, so the CRC stays right."""
    stamped = bytearray(batch)
    if len(stamped) < KAFKA_BATCH_HEADER_BYTES:
        raise ValueError(f"Kafka batch of {len(stamped)} bytes has no header to stamp")
    _BASE_OFFSET.pack_into(stamped, 0, base_offset)
    _LEADER_EPOCH.pack_into(stamped, _LEADER_EPOCH_AT, leader_epoch)
    return stamped


# --- The consumer ------------------------------------------------------------

def decode_kafka_records(topic: str, partition: int, batch: bytes | memoryview,
                         offset_min: int = 0) -> list[ConsumerRecord]:
    """The records of one stored Kafka batch whose offset is >= offset_min, in order.

    Runs in the Plinth consumer (client), once per fetched batch. Offsets come
    from the batch's own baseOffset (stamped by the shard) plus offsetDelta. A
    compressed batch is decompressed in one cramjam call, bounded by
    KAFKA_BATCH_DECOMPRESSED_BYTES_MAX; then one C call walks every record and
    builds the ConsumerRecords. Raises CorruptDataError naming the topic,
    partition and base offset for anything that does not decode.
    """
    view = memoryview(batch)
    if view.nbytes < KAFKA_BATCH_HEADER_BYTES:
        raise CorruptDataError(f"Kafka batch of {view.nbytes} bytes in {topic}[{partition}] "
                               f"is shorter than its {KAFKA_BATCH_HEADER_BYTES}-byte header")
    base_offset, _, _, _, _, attributes = _PREFIX.unpack_from(view)
    where = f"Kafka batch at offset {base_offset} of {topic}[{partition}]"
    records = view[KAFKA_BATCH_HEADER_BYTES:]
    codec = attributes & _COMPRESSION_MASK
    if codec != COMPRESSION_NONE:
        records = _decompress(codec, records, where)
    try:
        return _record_batch.kafka_decode(topic, partition, view, records, offset_min,
                                          limits.BATCH_RECORDS_MAX)
    except ValueError as exc:
        raise CorruptDataError(f"{where} is corrupt: {exc}") from None


def _decompress(codec: int, block: memoryview, where: str) -> memoryview:
    """The records section of a compressed batch, at most the limit's bytes."""
    limit = limits.KAFKA_BATCH_DECOMPRESSED_BYTES_MAX
    name = _CODEC_NAMES.get(codec)
    if name is None:
        raise CorruptDataError(f"{where} has unknown compression codec {codec}")
    try:
        if codec == COMPRESSION_SNAPPY:
            return _snappy(block, where, limit)
        return _decompress_growing(getattr(cramjam, name), block, where, limit)
    except cramjam.DecompressionError as exc:
        reason = str(exc)[:_CODEC_ERROR_CHARS_MAX]
        raise CorruptDataError(f"{where} does not decompress ({name}, {block.nbytes} bytes) "
                               f"to at most {limit} bytes: {reason}") from None


def _decompress_growing(codec, block: memoryview, where: str, limit: int) -> memoryview:
    """One decompress_into a buffer of a guessed size; a bigger one only if the records
    did not fit (the codec refuses to write past the buffer), never one over the limit.
    Any other error is the block's: it is not retried."""
    size = min(limit, max(_DECOMPRESSED_GUESS_BYTES_MIN, _DECOMPRESSED_GUESS_RATIO * block.nbytes))
    while True:
        out = bytearray(size)
        try:
            return memoryview(out)[:codec.decompress_into(block, out)]
        except cramjam.DecompressionError as exc:
            if size >= limit or _OUTPUT_FULL not in str(exc):
                raise
        size = min(limit, size * _DECOMPRESSED_GROWTH)


def _snappy(block: memoryview, where: str, limit: int) -> bytes | memoryview:
    """Raw snappy, or snappy-java's framing (one raw block per frame block). Each raw
    block states its decompressed size, which is checked before it is decompressed."""
    if bytes(block[:len(_XERIAL_MAGIC)]) != _XERIAL_MAGIC:
        _check_snappy_size(block, 0, where, limit)
        return cramjam.snappy.decompress_raw(block)
    blocks = []
    position, total = _XERIAL_HEADER_BYTES, 0
    while position < block.nbytes:
        if block.nbytes - position < _XERIAL_BLOCK_LENGTH.size:
            raise CorruptDataError(f"{where}: snappy framing cut at byte {position}")
        (length,) = _XERIAL_BLOCK_LENGTH.unpack_from(block, position)
        start = position + _XERIAL_BLOCK_LENGTH.size
        if length < 0 or length > block.nbytes - start:
            raise CorruptDataError(f"{where}: snappy block of {length} bytes at byte "
                                   f"{position}, with {block.nbytes - start} bytes left")
        raw = block[start:start + length]
        total = _check_snappy_size(raw, total, where, limit)
        blocks.append(raw)
        position = start + length
    out = bytearray(total)
    at = 0
    for raw in blocks:
        at += cramjam.snappy.decompress_raw_into(raw, memoryview(out)[at:])
    return memoryview(out)[:at]


def _check_snappy_size(raw: memoryview, total: int, where: str, limit: int) -> int:
    """total + the raw block's stated size, refused over the limit."""
    total += cramjam.snappy.decompress_raw_len(raw)
    if total > limit:
        raise CorruptDataError(f"{where} decompresses (snappy) to more than the limit of "
                               f"{limit} bytes (KAFKA_BATCH_DECOMPRESSED_BYTES_MAX)")
    return total


# --- Conversion: a Plinth batch for a Kafka consumer ---------------------------

def kafka_batch_from_plinth(batch: bytes | memoryview, base_offset: int,
                            leader_epoch: int) -> bytes:
    """A stored Plinth RecordBatch as one uncompressed Kafka batch with a right CRC.

    Runs where a Kafka consumer's fetch is answered (shard actor), once per
    Plinth batch. Keys, values, headers, timestamps (CreateTime; baseTimestamp
    is record 0's, as Kafka writes it), producerId and baseSequence are kept; producerEpoch is 0
    for an idempotent producer, else -1. A batch in the canonical layout (no
    headers) is converted in one C call from its columns; any other is read by
    pycapnp into records first, then one C call. Raises CorruptDataError if the
    stored batch breaks a rule of its schema.
    """
    try:
        converted = _record_batch.kafka_from_canonical(
            batch, base_offset, leader_epoch, limits.BATCH_RECORDS_MAX, crc32c.crc32c)
        if converted is None:
            fields = _read_fields(batch)
            records = _records_from_fields("", 0, base_offset, fields, 0)
            converted = _record_batch.kafka_from_records(
                records, base_offset, leader_epoch, fields.producer_id, fields.base_sequence,
                limits.BATCH_RECORDS_MAX, crc32c.crc32c)
    except (InvalidBatchError, ValueError) as exc:
        reason = exc.message if isinstance(exc, InvalidBatchError) else str(exc)
        raise CorruptDataError(f"Plinth batch at offset {base_offset} does not convert to a "
                               f"Kafka batch: {reason}") from exc
    return converted


def kafka_batch_from_records(records: list[ConsumerRecord], *, base_offset: int = 0,
                             leader_epoch: int = 0, producer_id: int = -1,
                             base_sequence: int = -1) -> bytes:
    """ConsumerRecords (key, value, headers, timestamp_ms; their offsets are ignored:
    record i gets base_offset + i) as one uncompressed Kafka batch. Any thread.
    Raises ValueError for no records, too many or a negative timestamp, TypeError
    for a field of the wrong type."""
    return _record_batch.kafka_from_records(list(records), base_offset, leader_epoch,
                                            producer_id, base_sequence,
                                            limits.BATCH_RECORDS_MAX, crc32c.crc32c)
