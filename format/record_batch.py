"""Encode, check and decode RecordBatch, the unit of work from producer to consumer.

The byte layout is the Cap'n Proto struct in ``schemas/record_batch.capnp``,
columnar so that no per-record struct is ever built:

    RecordBatch
      recordCount        UInt32   records in the batch, 1 .. BATCH_RECORDS_MAX
      baseTimestampMs    Int64    smallest record timestamp, ms since the epoch
      maxTimestampMs     Int64    largest record timestamp
      producerId         Int64    idempotent producer id, -1 when not idempotent
      baseSequence       Int32    sequence number of record 0, -1 when not idempotent
      timestampDeltasMs  Data     recordCount x UInt32 LE: timestamp - baseTimestampMs
      keyLengths         Data     recordCount x Int32 LE: key length, -1 = null key
      keys               Data     the non-null keys, concatenated in record order
      valueLengths       Data     recordCount x Int32 LE: value length, -1 = null value
      values             Data     the non-null values, concatenated in record order
      headers            List(RecordHeaders)   (index UInt32, entries List(Header
                                  (key Text, value Data, unset for a null value))),
                                  sorted by index, only for records that carry headers

Record i (0 <= i < recordCount) has offset = the LogEntryHeader's baseOffset + i.
The rules of a valid batch: recordCount within 1 .. BATCH_RECORDS_MAX; every
column exactly recordCount entries long; no length below -1; the non-null key
lengths summing to the size of ``keys`` (likewise for values); 0 <= baseTimestampMs
<= maxTimestampMs, at most a UInt32 of ms apart, ``min(delta) == 0`` and
``max(delta) == maxTimestampMs - baseTimestampMs`` (so every record's timestamp is
>= 0); producerId and baseSequence
both >= -1, and baseSequence >= 0 when producerId is set; every header index <
recordCount, sorted. There is no checksum here: the shard's LogEntryHeader
carries the CRC over these bytes.

Who calls what:
  * ``BatchBuilder``     the producer (client), one per partition being filled.
  * ``summarize_batch``  the shard actor, once per produced batch, untrusted input.
  * ``decode_records``   the consumer (client), once per fetched batch.

Where the work is done. The C extension ``plinth.format._record_batch``
(format/_record_batch.c, with the byte layout in format/record_batch_layout.h)
holds the producer's column buffers and writes a batch without headers in the
canonical layout; parses that layout and runs the rules (``check_rules``, the
one copy of them, which writes every error message); and builds the consumer's
records. pycapnp is the reference codec: it parses every other layout (headers,
several segments, another writer's choices) and writes the headers of a batch
that has them; its fields are then checked by the same C rules. Only the
header-index rules are here, because only the pycapnp path has headers.
"""

from __future__ import annotations

from typing import NamedTuple

from plinth import limits
from plinth.errors import CorruptDataError, InvalidBatchError, RecordTooLargeError
from plinth.format import _record_batch
from plinth.format._record_batch import (
    BATCH_OVERHEAD_BYTES, HEADER_OVERHEAD_BYTES, RECORD_HEADERS_OVERHEAD_BYTES,
    RECORD_OVERHEAD_BYTES, TIMESTAMP_SPAN_MS_MAX, ConsumerRecord, RecordColumns,
)
from plinth.schemas import record_batch as _schema

_RecordBatch = _schema.RecordBatch

# Reading each field once traverses about as many words as the message has;
# twice that, plus slack, stops a crafted message whose pointers share one
# blob (an amplification attack) long before it costs real time.
_TRAVERSAL_WORDS_PER_MESSAGE_WORD = 2
_TRAVERSAL_WORDS_SLACK = 1024
# RecordBatch -> headers -> RecordHeaders -> entries -> Header -> key: depth 5.
_NESTING_LIMIT = 8
_WORD_BYTES = 8
# capnp errors carry a stack trace; messages keep only their start.
_PARSE_ERROR_CHARS_MAX = 200
# baseSequence is an Int32 counted per producer and partition; it wraps to 0
# here (the producer numbers its batches, the shard checks the numbering).
SEQUENCE_MODULUS = 1 << 31

__all__ = ["BatchBuilder", "BatchSummary", "ConsumerRecord", "RecordColumns",
           "checked_headers", "decode_records", "summarize_batch", "BATCH_OVERHEAD_BYTES",
           "RECORD_OVERHEAD_BYTES", "SEQUENCE_MODULUS", "TIMESTAMP_SPAN_MS_MAX"]


class BatchSummary(NamedTuple):
    """What the shard needs from a batch it accepted; computed by summarize_batch."""

    record_count: int
    max_timestamp_ms: int
    base_timestamp_ms: int
    producer_id: int
    base_sequence: int
    producer_epoch: int = 0   # a Kafka batch's producerEpoch; a Plinth batch has none: 0


# --- Encoding (producer) ----------------------------------------------------

class BatchBuilder:
    """Collects the records for one partition and encodes them as one RecordBatch.

    Runs in the producer (client). Not thread-safe: the caller (the producer's
    accumulator, which owns each builder) lets one thread at a time use it;
    the accumulator's fast path appends straight to ``columns``, under the GIL
    (see client/_producer.c). Keys and values are copied into C column
    buffers as they are appended, so encoding needs no per-record Python work;
    only headers stay Python objects (and are encoded with pycapnp).
    """

    __slots__ = ("columns", "_headers", "_headers_bytes")

    def __init__(self, columns: RecordColumns | None = None) -> None:
        """``columns``: empty RecordColumns to reuse (their buffers), or None for new ones."""
        if columns is not None and columns.record_count:
            raise ValueError(f"columns to reuse hold {columns.record_count} records")
        self.columns = columns if columns is not None else RecordColumns()
        self._headers: list[tuple[int, list[tuple[str, bytes]]]] = []
        self._headers_bytes = 0

    @property
    def record_count(self) -> int:
        return self.columns.record_count

    @property
    def size_bytes(self) -> int:
        """An upper estimate of len(build()), exact without headers; O(1)."""
        headers_list_bytes = _WORD_BYTES if self._headers else 0
        return self.columns.encoded_bytes + headers_list_bytes + self._headers_bytes

    def append(self, key: bytes | None, value: bytes | None, timestamp_ms: int,
               headers: list[tuple[str, bytes]] | None = None) -> int:
        """Add one record; returns its index in the batch (0-based).

        Key and value are bytes-like or None. Raises TypeError, leaving the
        builder unchanged, for a header that is not (str, bytes).
        """
        if headers:
            entries, headers_bytes = checked_headers(headers)
        index = self.columns.append(key, value, timestamp_ms)
        if headers:
            self.add_headers(index, entries, headers_bytes)
        return index

    def add_headers(self, index: int, entries: list[tuple[str, bytes]],
                    headers_bytes: int) -> None:
        """Give record ``index``, already in the columns, the headers ``checked_headers``
        returned. Records get headers in index order (the producer's accumulator
        appends records with headers under its lock)."""
        if entries:
            self._headers.append((index, entries))
            self._headers_bytes += headers_bytes

    def halves(self) -> tuple["BatchBuilder", "BatchBuilder"]:
        """Two new builders: the first half of this one's records (rounded down), and the
        rest, each record as it was (key, value, timestamp, headers). The producer splits
        so a batch its shard refused as too large (client/accumulator.py); needs 2
        records or more. Leaves this builder as it was."""
        if self.record_count < 2:
            raise ValueError(f"a batch of {self.record_count} records has no halves")
        records = decode_records("", 0, 0, self.build())
        middle = len(records) // 2
        out = []
        for part in (records[:middle], records[middle:]):
            builder = BatchBuilder()
            for record in part:
                builder.append(record.key, record.value, record.timestamp_ms, record.headers)
            out.append(builder)
        return out[0], out[1]

    def build(self, producer_id: int = -1, base_sequence: int = -1) -> bytes:
        """Encode the records appended so far as one RecordBatch message.

        Raises InvalidBatchError if the batch breaks a rule of the schema
        (no records, more than BATCH_RECORDS_MAX, a negative timestamp,
        timestamps more than a UInt32 of ms apart, a bad producer id and
        sequence) and
        RecordTooLargeError if the encoding is over BATCH_BYTES_MAX. Does not
        clear the builder.
        """
        try:
            encoded = self.columns.encode(producer_id, base_sequence, limits.BATCH_RECORDS_MAX)
        except ValueError as exc:   # the rule broken, in the words of check_rules
            raise InvalidBatchError(str(exc)) from None
        if self._headers:
            encoded = _with_headers(encoded, self._headers)
        if len(encoded) > limits.BATCH_BYTES_MAX:
            raise RecordTooLargeError(
                f"record batch of {self.record_count} records encodes to {len(encoded)} "
                f"bytes, over the limit of {limits.BATCH_BYTES_MAX} bytes")
        return encoded


def checked_headers(headers) -> tuple[list[tuple[str, bytes | None]], int]:
    """The headers of one record as a list of (str, bytes or None), and an upper
    estimate of the bytes they add to the encoded batch (what the producer counts for
    them). A None value is a null header value, as Kafka's clients send it.

    Any thread. Raises TypeError for headers that are not an iterable of
    (str, bytes or None) pairs, and UnicodeEncodeError for a key that is not valid text.
    """
    try:
        entries = [(key, value) for key, value in headers]
    except (TypeError, ValueError):
        raise TypeError(f"headers must be a list of (str, bytes) pairs, got {headers!r:.100}")
    if not entries:
        return entries, 0
    size_bytes = RECORD_HEADERS_OVERHEAD_BYTES
    for key, value in entries:
        if not isinstance(key, str) or not (value is None
                                            or isinstance(value, (bytes, bytearray))):
            raise TypeError(f"header must be (str, bytes or None), "
                            f"got ({type(key).__name__}, {type(value).__name__})")
        size_bytes += len(key.encode()) + len(value or b"") + HEADER_OVERHEAD_BYTES
    return entries, size_bytes


def _with_headers(encoded: bytes, headers: list[tuple[int, list[tuple[str, bytes]]]]) -> bytes:
    """``encoded`` (a RecordBatch without headers) with message.headers filled in.

    ``headers`` is sorted by index as append builds it. Costs a pycapnp copy of
    the batch: only batches with headers take it.
    """
    with _RecordBatch.from_bytes(encoded) as reader:
        message = reader.as_builder()
    slots = message.init("headers", len(headers))
    for slot, (index, entries) in zip(slots, headers):
        slot.index = index
        for entry, (key, value) in zip(slot.init("entries", len(entries)), entries):
            entry.key = key
            if value is not None:   # unset: a null value (an empty one is set, 0 bytes)
                entry.value = bytes(value)
    return message.to_bytes()


# --- Checking (shard) ------------------------------------------------------------

class _Fields(NamedTuple):
    """A batch as pycapnp read it, copied out of the reader so that none outlives it."""

    record_count: int
    base_timestamp_ms: int
    max_timestamp_ms: int
    producer_id: int
    base_sequence: int
    timestamp_deltas_ms: bytes      # UInt32 LE
    key_lengths: bytes              # Int32 LE
    keys: bytes
    value_lengths: bytes            # Int32 LE
    values: bytes
    headers: list[tuple[int, list[tuple[str, bytes]]]]


def summarize_batch(batch: bytes | memoryview) -> BatchSummary:
    """Check an untrusted RecordBatch against every rule of the schema.

    Runs in the shard actor, once per produced batch, before anything is
    stored. Raises RecordTooLargeError if the batch is over BATCH_BYTES_MAX and
    InvalidBatchError for anything else wrong with it, including bytes that do
    not parse; never another exception.

    Cost: a batch in the layout format/_record_batch.c writes (any batch
    without headers) is parsed and checked in one pass in C, under 1 us for a
    few records. Anything else is parsed by pycapnp (about 20 us, plus a
    Python loop over the header entries) and checked by the same C rules.
    """
    size_bytes = memoryview(batch).nbytes
    if size_bytes > limits.BATCH_BYTES_MAX:
        raise RecordTooLargeError(
            f"record batch of {size_bytes} bytes is over the limit of "
            f"{limits.BATCH_BYTES_MAX} bytes")
    try:
        summary = _record_batch.summarize(batch, limits.BATCH_RECORDS_MAX, BatchSummary)
    except ValueError as exc:   # a canonical batch that breaks a rule
        raise InvalidBatchError(str(exc)) from None
    if summary is not None:
        return summary
    return _summarize_other_layout(batch)


def _summarize_other_layout(batch: bytes | memoryview) -> BatchSummary:
    """summarize_batch for any layout: pycapnp reads, the C rules check."""
    fields = _read_fields(batch)
    _check_rules(fields)
    return BatchSummary(fields.record_count, fields.max_timestamp_ms, fields.base_timestamp_ms,
                        fields.producer_id, fields.base_sequence)


def _check_rules(fields: _Fields) -> None:
    """Every rule of the schema; raises InvalidBatchError naming the first one broken."""
    try:
        _record_batch.check(limits.BATCH_RECORDS_MAX, *fields[:-1])
    except ValueError as exc:
        raise InvalidBatchError(str(exc)) from None
    _check_header_indexes(fields.headers, fields.record_count)


def _read_fields(batch: bytes | memoryview) -> _Fields:
    """Parse a batch with pycapnp; raises InvalidBatchError if it does not parse."""
    data = _word_aligned(batch)
    size_bytes = memoryview(data).nbytes
    traversal_limit_words = (_TRAVERSAL_WORDS_PER_MESSAGE_WORD * (size_bytes // _WORD_BYTES)
                             + _TRAVERSAL_WORDS_SLACK)
    try:
        with _RecordBatch.from_bytes(data, traversal_limit_in_words=traversal_limit_words,
                                     nesting_limit=_NESTING_LIMIT) as reader:
            return _copy_fields(reader)
    except Exception as exc:  # capnp raises KjException, ValueError, UnicodeDecodeError, ...
        reason = f"{type(exc).__name__}: {exc}"[:_PARSE_ERROR_CHARS_MAX]
        raise InvalidBatchError(
            f"record batch of {size_bytes} bytes does not parse as a RecordBatch: "
            f"{reason}") from exc


def _word_aligned(batch: bytes | memoryview) -> bytes | memoryview:
    """The batch itself if 8-byte aligned (capnp requires it), else an aligned copy."""
    if type(batch) is bytes:  # CPython keeps bytes contents 8-byte aligned
        return batch
    return batch if _record_batch.is_word_aligned(batch) else bytes(batch)


def _copy_fields(reader) -> _Fields:
    """Copy every field out of the reader; runs inside its context."""
    return _Fields(
        record_count=reader.recordCount,
        base_timestamp_ms=reader.baseTimestampMs,
        max_timestamp_ms=reader.maxTimestampMs,
        producer_id=reader.producerId,
        base_sequence=reader.baseSequence,
        timestamp_deltas_ms=reader.timestampDeltasMs,
        key_lengths=reader.keyLengths,
        keys=reader.keys,
        value_lengths=reader.valueLengths,
        values=reader.values,
        headers=[(record_headers.index,
                  [(entry.key, entry.value if entry._has("value") else None)
                   for entry in record_headers.entries])
                 for record_headers in reader.headers],
    )


def _check_header_indexes(headers: list, record_count: int) -> None:
    """Header indexes below recordCount, in order (repeated indexes are allowed)."""
    previous_index = 0
    for position, (index, _entries) in enumerate(headers):
        if index >= record_count:
            raise InvalidBatchError(
                f"record batch has headers for record {index}, but only "
                f"{record_count} records")
        if index < previous_index:
            raise InvalidBatchError(
                f"record batch headers are not sorted by index: entry {position} has "
                f"index {index} after {previous_index}")
        previous_index = index


# --- Decoding (consumer) -----------------------------------------------------

def decode_records(topic: str, partition: int, base_offset: int, batch: bytes | memoryview,
                   offset_min: int = 0) -> list[ConsumerRecord]:
    """The records of one stored batch whose offset is >= offset_min, in order.

    Runs in the consumer (client). The shard checked the batch against every
    rule before storing it, and its CRC was checked on the way here, so this
    checks only what keeps the decoding inside its buffers and its numbers in
    Int64 (format/_record_batch.c); a batch that fails that is reported as
    CorruptDataError naming the topic, partition and base offset. A batch in
    the canonical layout is cut into records in one C call; any other is read
    by pycapnp first.
    """
    try:
        records = _record_batch.decode_canonical(topic, partition, base_offset, offset_min,
                                                 batch)
        if records is None:
            records = _decode_other_layout(topic, partition, base_offset, batch, offset_min)
    except (InvalidBatchError, ValueError) as exc:
        reason = exc.message if isinstance(exc, InvalidBatchError) else str(exc)
        raise CorruptDataError(
            f"batch at offset {base_offset} of {topic}[{partition}] is corrupt: "
            f"{reason}") from exc
    return records


def _decode_other_layout(topic: str, partition: int, base_offset: int, batch,
                         offset_min: int) -> list[ConsumerRecord]:
    return _records_from_fields(topic, partition, base_offset, _read_fields(batch), offset_min)


def _records_from_fields(topic: str, partition: int, base_offset: int, fields: _Fields,
                         offset_min: int) -> list[ConsumerRecord]:
    """The records of a batch pycapnp read, headers included; ValueError if a bound is
    broken. Also format/kafka_batch.py's way to the records of a batch with headers."""
    records = _record_batch.build_records(
        topic, partition, base_offset, offset_min, fields.base_timestamp_ms,
        fields.timestamp_deltas_ms, fields.key_lengths, fields.keys, fields.value_lengths,
        fields.values)
    if not records:
        return records
    first = records[0].offset - base_offset
    for index, entries in fields.headers:
        if index - first >= len(records):
            raise ValueError(f"headers for record {index}, past the batch's "
                             f"{first + len(records)} records")
        if index >= first:
            records[index - first].headers.extend(entries)   # repeated indexes merge
    return records
