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
                                  (key Text, value Data))), sorted by index,
                                  only for records that carry headers

Record i (0 <= i < recordCount) has offset = the LogEntryHeader's baseOffset + i.
A valid batch has every column exactly recordCount entries long, no length
below -1, the non-null key lengths summing to the size of ``keys`` (likewise
for values), ``min(delta) == 0`` and ``max(delta) == maxTimestampMs -
baseTimestampMs``, and every header index < recordCount, sorted. There is no
checksum here: the shard's LogEntryHeader carries the CRC over these bytes.

Who calls what:
  * ``BatchBuilder``     the producer (client), one per partition being filled.
  * ``summarize_batch``  the shard actor, once per produced batch, untrusted input.
  * ``decode_records``   the consumer (client), once per fetched batch.

Encoding has no per-record Python work: the producer copies each key and
value into C column buffers as it is sent (client/_producer.c, which also
writes the message for a batch without headers). The shard checks such a
batch in one C pass over the message (``format/_batch_check.c``); any other
batch, and every invalid one, is parsed by pycapnp and checked by numpy
operations over whole columns, which write the error messages. Decoding
builds the records in C (``format/_consumer_records.c``: one small object and
a bytes slice per key and value), which checks again every column rule it
relies on.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from plinth import limits
from plinth.client._producer import RecordColumns
from plinth.format._batch_check import column_spans as _canonical_column_spans
from plinth.format._batch_check import is_word_aligned, summarize as _summarize_canonical
from plinth.format._consumer_records import ConsumerRecord, build_records
from plinth.errors import CorruptDataError, InvalidBatchError, RecordTooLargeError
from plinth.schemas import record_batch as _schema

_RecordBatch = _schema.RecordBatch

# Column element types, as the schema fixes them (little-endian on the wire).
_LENGTH_DTYPE = np.dtype("<i4")         # keyLengths, valueLengths
_DELTA_DTYPE = np.dtype("<u4")          # timestampDeltasMs
_COLUMN_ENTRY_BYTES = 4
TIMESTAMP_SPAN_MS_MAX = 0xFFFF_FFFF     # a UInt32 delta: the most one batch's timestamps span
_NULL_LENGTH = -1

# Encoded size of everything but the columns' contents: segment table (8),
# root pointer (8), the struct's 4 data words and 6 pointers (80), up to 7
# bytes of padding after each of the 5 Data blobs, and the headers list tag.
_BATCH_OVERHEAD_BYTES = 8 + 8 + 80 + 5 * 7 + 8
# Per record: one entry in each of the three 4-byte columns.
_RECORD_OVERHEAD_BYTES = 3 * _COLUMN_ENTRY_BYTES
# Per record with headers: a RecordHeaders struct (16) and its entries list tag (8).
_RECORD_HEADERS_OVERHEAD_BYTES = 24
# Per header entry: a Header struct (16), the key's NUL and padding of both blobs.
_HEADER_OVERHEAD_BYTES = 16 + 1 + 7 + 7

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


class BatchSummary(NamedTuple):
    """What the shard needs from a batch it accepted; computed by summarize_batch."""

    record_count: int
    max_timestamp_ms: int
    base_timestamp_ms: int
    producer_id: int
    base_sequence: int


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
        """An upper estimate of len(build()); O(1)."""
        columns = self.columns
        return (_BATCH_OVERHEAD_BYTES + _RECORD_OVERHEAD_BYTES * columns.record_count
                + columns.keys_bytes + columns.values_bytes + self._headers_bytes)

    def append(self, key: bytes | None, value: bytes | None, timestamp_ms: int,
               headers: list[tuple[str, bytes]] | None = None) -> int:
        """Add one record; returns its index in the batch (0-based).

        Key and value are bytes-like or None. Raises TypeError, leaving the
        builder unchanged, for a header that is not (str, bytes).
        """
        if headers:
            entries, headers_bytes = _checked_headers(self.columns.record_count, headers)
        index = self.columns.append(key, value, timestamp_ms)
        if headers:
            self._headers.append((index, entries))
            self._headers_bytes += headers_bytes
        return index

    def build(self, producer_id: int = -1, base_sequence: int = -1) -> bytes:
        """Encode the records appended so far as one RecordBatch message.

        Raises InvalidBatchError if the batch breaks a rule of the schema
        (no records, more than BATCH_RECORDS_MAX, timestamps more than a
        UInt32 of ms apart) and RecordTooLargeError if the encoding is over
        BATCH_BYTES_MAX. Does not clear the builder.
        """
        record_count = self._check_record_count()
        self._check_timestamp_span()
        encoded = self.columns.encode(producer_id, base_sequence)
        if self._headers:
            encoded = _with_headers(encoded, self._headers)
        if len(encoded) > limits.BATCH_BYTES_MAX:
            raise RecordTooLargeError(
                f"record batch of {record_count} records encodes to {len(encoded)} bytes, "
                f"over the limit of {limits.BATCH_BYTES_MAX} bytes")
        return encoded

    def _check_record_count(self) -> int:
        record_count = self.columns.record_count
        if not 1 <= record_count <= limits.BATCH_RECORDS_MAX:
            raise InvalidBatchError(
                f"record batch has {record_count} records, must have 1 to "
                f"{limits.BATCH_RECORDS_MAX}")
        return record_count

    def _check_timestamp_span(self) -> None:
        base_timestamp_ms = self.columns.timestamp_min_ms
        max_timestamp_ms = self.columns.timestamp_max_ms
        span_ms = max_timestamp_ms - base_timestamp_ms
        if span_ms > TIMESTAMP_SPAN_MS_MAX:
            raise InvalidBatchError(
                f"record timestamps span {span_ms} ms ({base_timestamp_ms} to "
                f"{max_timestamp_ms}), over the {TIMESTAMP_SPAN_MS_MAX} ms one batch holds")


def _checked_headers(index: int, headers) -> tuple[list[tuple[str, bytes]], int]:
    """The headers of record ``index`` as a list, and their estimated encoded bytes."""
    entries = list(headers)
    size_bytes = _RECORD_HEADERS_OVERHEAD_BYTES
    for key, value in entries:
        if not isinstance(key, str) or not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"header of record {index} must be (str, bytes), "
                            f"got ({type(key).__name__}, {type(value).__name__})")
        size_bytes += len(key.encode()) + len(value) + _HEADER_OVERHEAD_BYTES
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
            entry.value = bytes(value)
    return message.to_bytes()


# --- Reading and checking (shard, consumer) ----------------------------------

class _Columns(NamedTuple):
    """A parsed batch, copied out of the capnp reader so that none outlives it.

    The three integer columns are raw bytes as read, and numpy arrays once
    _check_columns has checked their lengths.
    """

    record_count: int
    base_timestamp_ms: int
    max_timestamp_ms: int
    producer_id: int
    base_sequence: int
    timestamp_deltas_ms: bytes | np.ndarray     # UInt32 LE
    key_lengths: bytes | np.ndarray             # Int32 LE
    keys: bytes
    value_lengths: bytes | np.ndarray           # Int32 LE
    values: bytes
    headers: list[tuple[int, list[tuple[str, bytes]]]]


def summarize_batch(batch: bytes | memoryview) -> BatchSummary:
    """Check an untrusted RecordBatch against every rule of the schema.

    Runs in the shard actor, once per produced batch, before anything is
    stored. Raises RecordTooLargeError if the batch is over BATCH_BYTES_MAX and
    InvalidBatchError for anything else wrong with it, including bytes that do
    not parse; never another exception.

    Cost: a valid batch in the layout client/_producer.c writes (any batch
    without headers) is checked in one pass in C (format/_batch_check.c), under
    1 us for a few records. Anything else, including every invalid batch, goes
    through pycapnp and numpy (about 25 us, plus a Python loop over the header
    entries), which also write the error messages.
    """
    size_bytes = memoryview(batch).nbytes
    if size_bytes > limits.BATCH_BYTES_MAX:
        raise RecordTooLargeError(
            f"record batch of {size_bytes} bytes is over the limit of "
            f"{limits.BATCH_BYTES_MAX} bytes")
    summary = _summarize_canonical(batch, limits.BATCH_RECORDS_MAX, BatchSummary)
    if summary is not None:
        return summary
    columns = _read_columns(batch)
    return BatchSummary(columns.record_count, columns.max_timestamp_ms,
                        columns.base_timestamp_ms, columns.producer_id,
                        columns.base_sequence)


def _read_columns(batch: bytes | memoryview) -> _Columns:
    """Parse and check a batch; raises InvalidBatchError naming what is wrong."""
    data = _word_aligned(batch)
    size_bytes = memoryview(data).nbytes
    traversal_limit_words = (_TRAVERSAL_WORDS_PER_MESSAGE_WORD * (size_bytes // _WORD_BYTES)
                             + _TRAVERSAL_WORDS_SLACK)
    try:
        with _RecordBatch.from_bytes(data, traversal_limit_in_words=traversal_limit_words,
                                     nesting_limit=_NESTING_LIMIT) as reader:
            columns = _copy_columns(reader)
    except Exception as exc:  # capnp raises KjException, ValueError, UnicodeDecodeError, ...
        reason = f"{type(exc).__name__}: {exc}"[:_PARSE_ERROR_CHARS_MAX]
        raise InvalidBatchError(
            f"record batch of {size_bytes} bytes does not parse as a RecordBatch: "
            f"{reason}") from exc
    return _check_columns(columns)


def _word_aligned(batch: bytes | memoryview) -> bytes | memoryview:
    """The batch itself if 8-byte aligned (capnp requires it), else an aligned copy."""
    if type(batch) is bytes:  # CPython keeps bytes contents 8-byte aligned
        return batch
    return batch if is_word_aligned(batch) else bytes(batch)


def _copy_columns(reader) -> _Columns:
    """Copy every field out of the reader; runs inside its context."""
    return _Columns(
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
                  [(entry.key, entry.value) for entry in record_headers.entries])
                 for record_headers in reader.headers],
    )


def _check_columns(raw: _Columns) -> _Columns:
    """Every rule of the schema; returns the columns with the integer columns as arrays."""
    record_count = raw.record_count
    if not 1 <= record_count <= limits.BATCH_RECORDS_MAX:
        raise InvalidBatchError(
            f"record batch has recordCount {record_count}, must be 1 to "
            f"{limits.BATCH_RECORDS_MAX}")
    columns = raw._replace(
        timestamp_deltas_ms=_column("timestampDeltasMs", raw.timestamp_deltas_ms,
                                    _DELTA_DTYPE, record_count),
        key_lengths=_column("keyLengths", raw.key_lengths, _LENGTH_DTYPE, record_count),
        value_lengths=_column("valueLengths", raw.value_lengths, _LENGTH_DTYPE, record_count),
    )
    _check_lengths("key", columns.key_lengths, len(columns.keys))
    _check_lengths("value", columns.value_lengths, len(columns.values))
    _check_timestamps(columns)
    _check_producer(columns.producer_id, columns.base_sequence)
    _check_header_indexes(columns.headers, record_count)
    return columns


def _column(name: str, data: bytes, dtype: np.dtype, record_count: int) -> np.ndarray:
    """A 4-byte-per-record column as an array, once its size is checked."""
    if len(data) != record_count * _COLUMN_ENTRY_BYTES:
        raise InvalidBatchError(
            f"record batch column {name} is {len(data)} bytes, must be "
            f"{record_count * _COLUMN_ENTRY_BYTES} for {record_count} records")
    return np.frombuffer(data, dtype=dtype)


def _check_lengths(what: str, lengths: np.ndarray, blob_bytes: int) -> None:
    """No length below -1, and the non-null lengths add up to the blob's size."""
    length_min = int(lengths.min())
    if length_min < _NULL_LENGTH:
        index = int(lengths.argmin())
        raise InvalidBatchError(
            f"record batch {what} length of record {index} is {length_min}, must be >= -1")
    lengths_sum = int(np.maximum(lengths, 0).sum(dtype=np.int64))
    if lengths_sum != blob_bytes:
        raise InvalidBatchError(
            f"record batch {what} lengths sum to {lengths_sum} bytes but the "
            f"{what}s are {blob_bytes} bytes")


def _check_timestamps(columns: _Columns) -> None:
    base_ms, max_ms = columns.base_timestamp_ms, columns.max_timestamp_ms
    if max_ms < base_ms:
        raise InvalidBatchError(
            f"record batch maxTimestampMs {max_ms} is below baseTimestampMs {base_ms}")
    deltas_ms = columns.timestamp_deltas_ms
    delta_min_ms, delta_max_ms = int(deltas_ms.min()), int(deltas_ms.max())
    if delta_min_ms != 0 or delta_max_ms != max_ms - base_ms:
        raise InvalidBatchError(
            f"record batch timestamp deltas run {delta_min_ms} to {delta_max_ms} ms, "
            f"must run 0 to {max_ms - base_ms} (maxTimestampMs {max_ms} - "
            f"baseTimestampMs {base_ms})")


def _check_producer(producer_id: int, base_sequence: int) -> None:
    if producer_id < -1 or base_sequence < -1 or (producer_id >= 0 and base_sequence < 0):
        raise InvalidBatchError(
            f"record batch producerId {producer_id} with baseSequence {base_sequence}: "
            f"both must be >= -1, and baseSequence >= 0 when producerId is set")


def _check_header_indexes(headers: list, record_count: int) -> None:
    if not headers:
        return
    indexes = np.fromiter((index for index, _ in headers), dtype=np.int64, count=len(headers))
    index_max = int(indexes.max())
    if index_max >= record_count:
        raise InvalidBatchError(
            f"record batch has headers for record {index_max}, but only "
            f"{record_count} records")
    unsorted = np.flatnonzero(np.diff(indexes) < 0)
    if len(unsorted):
        position = int(unsorted[0])
        raise InvalidBatchError(
            f"record batch headers are not sorted by index: entry {position + 1} has "
            f"index {int(indexes[position + 1])} after {int(indexes[position])}")


# --- Decoding (consumer) -----------------------------------------------------

def decode_records(topic: str, partition: int, base_offset: int, batch: bytes | memoryview,
                   offset_min: int = 0) -> list[ConsumerRecord]:
    """The records of one stored batch whose offset is >= offset_min, in order.

    Runs in the consumer (client). The batch is checked as the shard checked
    it; one that fails is reported as CorruptDataError naming the topic,
    partition and base offset. A batch in the layout client/_producer.c
    writes is checked and cut into columns in C (format/_batch_check.c); any
    other goes through pycapnp, as in summarize_batch.
    """
    spans = _canonical_column_spans(batch, limits.BATCH_RECORDS_MAX)
    if spans is not None:
        return _decode_canonical(topic, partition, base_offset, batch, offset_min, *spans)
    try:
        columns = _read_columns(batch)
        first = min(max(0, offset_min - base_offset), columns.record_count)
        records = build_records(topic, partition, base_offset, first,
                                columns.base_timestamp_ms, columns.timestamp_deltas_ms,
                                columns.key_lengths, columns.keys,
                                columns.value_lengths, columns.values)
    except (InvalidBatchError, ValueError) as exc:
        reason = exc.message if isinstance(exc, InvalidBatchError) else str(exc)
        raise CorruptDataError(
            f"batch at offset {base_offset} of {topic}[{partition}] is corrupt: "
            f"{reason}") from exc
    if columns.headers:
        _attach_headers(records, columns.headers, first)
    return records


def _decode_canonical(topic: str, partition: int, base_offset: int, batch, offset_min: int,
                      record_count: int, base_timestamp_ms: int, spans: tuple) -> list:
    """decode_records for a batch column_spans checked; it has no headers."""
    first = min(max(0, offset_min - base_offset), record_count)
    view = memoryview(batch)
    columns = [view[start:start + length] for start, length in spans]
    try:
        return build_records(topic, partition, base_offset, first, base_timestamp_ms, *columns)
    except ValueError as exc:   # e.g. offsets past Int64: checked there, not in column_spans
        raise CorruptDataError(
            f"batch at offset {base_offset} of {topic}[{partition}] is corrupt: {exc}") from exc


def _attach_headers(records: list[ConsumerRecord], headers: list, first: int) -> None:
    """Give each record from ``first`` on its header entries; repeated indexes merge."""
    for index, entries in headers:
        if index >= first:
            records[index - first].headers.extend(entries)
