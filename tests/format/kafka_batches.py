"""Kafka RecordBatch v2 batches for the tests of format/kafka_batch.py, built by an
independent codec (kafka-python's kafka.record) or byte by byte here."""

from __future__ import annotations

import struct

import crc32c
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

T0_MS = 1_700_000_000_000
HEADER = struct.Struct(">qiibIhiqqqhii")   # the 13 header fields, in order
HEADER_FIELDS = ("base_offset", "batch_length", "leader_epoch", "magic", "crc", "attributes",
                 "last_offset_delta", "base_timestamp", "max_timestamp", "producer_id",
                 "producer_epoch", "base_sequence", "records_count")
RECORDS_AT = 61
CRC_FROM = 21
COMPRESSIBLE_VALUE = b"plinth " * 20


def kafka_python_batch(records, *, codec: int = 0, producer_id: int = -1, producer_epoch: int = -1,
                       base_sequence: int = -1) -> bytes:
    """records: (key, value, timestamp_ms, headers) tuples. Fails if kafka-python chose
    not to compress (it sends uncompressed when that is smaller), so that a test of a
    codec always tests it."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=False, producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence, batch_size=64 << 20)
    for offset, (key, value, timestamp_ms, headers) in enumerate(records):
        assert builder.append(offset, timestamp=timestamp_ms, key=key, value=value,
                              headers=headers) is not None
    batch = bytes(builder.build())
    assert header(batch)["attributes"] & 7 == codec, "kafka-python did not compress"
    return batch


def kafka_python_records(batch: bytes) -> list[tuple]:
    """(offset, key, value, timestamp_ms, headers) of each record, as kafka-python reads them."""
    return [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in DefaultRecordBatch(batch)]


def plinth_records(records) -> list[tuple]:
    """The same tuple for ConsumerRecords."""
    return [(r.offset, r.key, r.value, r.timestamp_ms, r.headers) for r in records]


def header(batch: bytes) -> dict:
    return dict(zip(HEADER_FIELDS, HEADER.unpack_from(batch)))


def with_header(batch: bytes, **fields) -> bytes:
    """The batch with header fields replaced, batchLength and CRC then made right again
    (unless given), so that only the fields named are wrong."""
    values = header(batch) | fields
    out = bytearray(batch)
    HEADER.pack_into(out, 0, *(values[name] for name in HEADER_FIELDS))
    return resealed(out, length="batch_length" not in fields, crc="crc" not in fields)


def resealed(batch: bytearray | bytes, *, length: bool = True, crc: bool = True) -> bytes:
    """batchLength and CRC computed for the bytes as they are."""
    out = bytearray(batch)
    if length:
        struct.pack_into(">i", out, 8, len(out) - 12)
    if crc:
        struct.pack_into(">I", out, 17, crc32c.crc32c(bytes(out[CRC_FROM:])))
    return bytes(out)


def with_records(batch: bytes, records: bytes, **fields) -> bytes:
    """The batch's header (fields replaced) over other records bytes, resealed."""
    return with_header(batch[:RECORDS_AT] + records, **fields)


def varint(value: int) -> bytes:
    """Kafka's zigzag varint (any width)."""
    raw = (value << 1) ^ (value >> 63)
    raw &= (1 << 64) - 1
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def length_field(data: bytes | None) -> bytes:
    return varint(-1) if data is None else varint(len(data)) + data


def record(offset_delta: int, timestamp_delta_ms: int = 0, key: bytes | None = b"k",
           value: bytes | None = b"v", headers=(), length_change: int = 0) -> bytes:
    """One record written byte by byte; length_change makes its length field lie."""
    body = (b"\x00" + varint(timestamp_delta_ms) + varint(offset_delta) + length_field(key)
            + length_field(value) + varint(len(headers)))
    for header_key, header_value in headers:
        body += length_field(header_key) + length_field(header_value)
    return varint(len(body) + length_change) + body
