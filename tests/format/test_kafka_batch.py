"""Specification of format/kafka_batch.py, Kafka's RecordBatch v2, checked against an
independent codec: kafka-python's kafka.record. Batches it builds are summarized and
decoded by ours to the records it reads; batches ours converts from Plinth batches
are read by it with the same records and a valid CRC. Then each rule of the shard's
check, with its message."""

import struct

import cramjam
import pytest
from kafka.record.default_records import DefaultRecordBatch

from plinth import limits
from plinth.errors import (CorruptDataError, InvalidBatchError, InvalidTimestampError,
                           RecordTooLargeError)
from plinth.format.kafka_batch import (
    decode_kafka_records, kafka_batch_from_plinth, kafka_batch_from_records, stamp_kafka_batch,
    summarize_kafka_batch,
)
from plinth.format.record_batch import BatchBuilder, BatchSummary, ConsumerRecord, decode_records
from tests.format.kafka_batches import (
    COMPRESSIBLE_VALUE, RECORDS_AT, T0_MS, header, kafka_python_batch, kafka_python_records,
    length_field, plinth_records, record, varint, with_header, with_records,
)

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def mixed_records(count: int = 40) -> list[tuple]:
    """Keys, null keys and values, empty ones, headers (a null header value too) and
    timestamps out of order, as (key, value, timestamp_ms, headers)."""
    out = []
    for i in range(count):
        key = None if i % 4 == 0 else (b"" if i % 7 == 0 else b"key-%d" % i)
        value = None if i % 9 == 0 else COMPRESSIBLE_VALUE + b"%d" % i
        headers = [("trace", b"t%d" % i), ("empty", b""), ("null", None)] if i % 3 == 0 else []
        out.append((key, value, T0_MS + (i * 7919) % 1000, headers))
    return out


# --- Cross-checks with kafka-python --------------------------------------------

@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_a_kafka_python_batch_of_any_codec_decodes_to_the_records_kafka_python_reads(codec):
    # Given a batch kafka-python built and the shard stamped at offset 1000
    batch = stamp_kafka_batch(kafka_python_batch(mixed_records(), codec=codec), 1000, 3)
    # When our decoder reads it
    records = decode_kafka_records("t", 2, batch)
    # Then it gives kafka-python's records, with topic and partition
    assert plinth_records(records) == kafka_python_records(batch)
    assert [r.offset for r in records] == list(range(1000, 1040))
    assert {(r.topic, r.partition) for r in records} == {("t", 2)}


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_a_kafka_python_batch_of_any_codec_is_summarized_with_its_header_fields(codec):
    batch = kafka_python_batch(mixed_records(), codec=codec, producer_id=77,
                               producer_epoch=0, base_sequence=2**31 - 5)
    summary = summarize_kafka_batch(batch)
    timestamps = [timestamp for _, _, timestamp, _ in mixed_records()]
    assert summary == BatchSummary(record_count=40, max_timestamp_ms=max(timestamps),
                                   base_timestamp_ms=summary.base_timestamp_ms,
                                   producer_id=77, base_sequence=2**31 - 5)
    # the smallest timestamp where the records were walked, else the first record's
    assert summary.base_timestamp_ms == (min(timestamps) if codec == 0 else timestamps[0])


@pytest.mark.parametrize("codec", [1, 3, 4], ids=["gzip", "lz4", "zstd"])
def test_records_that_compress_a_thousandfold_decode_whole(codec):
    # Given records of zeros (a ratio far over the first output buffer's guess)
    records = [(b"k", bytes(1 << 20), T0_MS, [])] * 3
    batch = kafka_python_batch(records, codec=codec)
    assert len(batch) < 20_000
    # Then the output grows until they fit
    assert [r.value for r in decode_kafka_records("t", 0, batch)] == [bytes(1 << 20)] * 3


def test_decoding_from_offset_min_skips_the_records_below_it():
    batch = stamp_kafka_batch(kafka_python_batch(mixed_records(10), codec=4), 500, 0)
    records = decode_kafka_records("t", 0, batch, offset_min=507)
    assert plinth_records(records) == kafka_python_records(batch)[7:]
    assert decode_kafka_records("t", 0, batch, offset_min=510) == []


def test_stamping_sets_base_offset_and_leader_epoch_and_keeps_the_crc_right():
    batch = kafka_python_batch(mixed_records(5))
    stamped = stamp_kafka_batch(batch, 2**40, 17)
    assert (header(stamped)["base_offset"], header(stamped)["leader_epoch"]) == (2**40, 17)
    assert stamped[21:] == batch[21:] and stamped[8:12] == batch[8:12]
    assert DefaultRecordBatch(bytes(stamped)).validate_crc()
    assert summarize_kafka_batch(stamped).record_count == 5


def test_a_raw_snappy_batch_decodes_like_the_framed_one_java_clients_write():
    # Given kafka-python's batch (snappy-java framing) rewritten as one raw snappy block
    framed = kafka_python_batch(mixed_records(), codec=2)
    assert framed[RECORDS_AT:RECORDS_AT + 8] == b"\x82SNAPPY\x00"
    plain = kafka_python_batch(mixed_records())[RECORDS_AT:]
    raw = with_records(framed, bytes(cramjam.snappy.compress_raw(plain)))
    # Then both decode to the same records
    assert plinth_records(decode_kafka_records("t", 0, raw)) == \
        plinth_records(decode_kafka_records("t", 0, framed))


def plinth_batch(with_headers: bool, count: int = 30) -> bytes:
    builder = BatchBuilder()
    for i in range(count):
        headers = [("h", b"%d" % i), ("", b"")] if with_headers and i % 4 == 1 else None
        builder.append(None if i % 5 == 0 else b"k%d" % i, None if i % 6 == 0 else b"v" * i,
                       T0_MS + (i * 31 + 5) % 17, headers)
    return builder.build(producer_id=12345, base_sequence=99)


@pytest.mark.parametrize("with_headers", [False, True], ids=["canonical", "pycapnp layout"])
def test_a_converted_plinth_batch_reads_in_kafka_python_as_the_same_records(with_headers):
    # Given a stored Plinth batch (the canonical layout, or pycapnp's with headers)
    stored = plinth_batch(with_headers)
    # When it is converted for a Kafka consumer at offset 70
    converted = kafka_batch_from_plinth(stored, 70, 4)
    # Then kafka-python finds a valid CRC and the records Plinth's decoder gives
    kafka_batch = DefaultRecordBatch(converted)
    assert kafka_batch.validate_crc()
    expected = [(r.offset, r.key, r.value, r.timestamp_ms, r.headers)
                for r in decode_records("t", 0, 70, stored)]
    assert kafka_python_records(converted) == expected
    # and the batch keeps the producer, with CreateTime and no compression
    assert (kafka_batch.producer_id, kafka_batch.base_sequence, kafka_batch.producer_epoch,
            kafka_batch.attributes, kafka_batch.leader_epoch) == (12345, 99, 0, 0, 4)
    # and its baseTimestamp is record 0's (Kafka's FirstTimestamp), whatever the order
    assert (kafka_batch.first_timestamp, kafka_batch.max_timestamp) == (
        expected[0][3], max(r[3] for r in expected))
    assert expected[0][3] != min(r[3] for r in expected)


@pytest.mark.parametrize("with_headers", [False, True], ids=["canonical", "pycapnp layout"])
def test_a_converted_plinth_batch_passes_the_shards_own_check(with_headers):
    converted = kafka_batch_from_plinth(plinth_batch(with_headers), 0, 0)
    summary = summarize_kafka_batch(converted)
    assert summary.record_count == 30 and summary.producer_id == 12345
    assert summary.base_timestamp_ms == T0_MS


def test_a_plinth_batch_without_a_producer_converts_with_kafkas_no_producer_fields():
    builder = BatchBuilder()
    builder.append(b"k", b"v", T0_MS)
    kafka_batch = DefaultRecordBatch(kafka_batch_from_plinth(builder.build(), 0, 0))
    assert (kafka_batch.producer_id, kafka_batch.producer_epoch,
            kafka_batch.base_sequence) == (-1, -1, -1)


def test_a_stored_plinth_batch_that_breaks_its_rules_is_refused_as_corrupt():
    stored = bytearray(plinth_batch(False))
    stored[16:20] = struct.pack("<I", 0)     # recordCount 0
    with pytest.raises(CorruptDataError, match="offset 9 .*recordCount 0"):
        kafka_batch_from_plinth(bytes(stored), 9, 0)


def test_records_built_into_a_batch_decode_back_to_themselves():
    records = [ConsumerRecord("t", 0, 5 + i, b"k" if i else None, b"v" * i,
                              [("h\u00e9", None), ("x", b"y")] if i == 2 else [], T0_MS + 3 - i)
               for i in range(4)]
    batch = kafka_batch_from_records(records, base_offset=5, producer_id=1, base_sequence=0)
    assert summarize_kafka_batch(batch).base_timestamp_ms == T0_MS
    assert decode_kafka_records("t", 0, batch) == records


# --- The header mapping ----------------------------------------------------------

def test_a_null_header_value_decodes_to_none():
    batch = kafka_python_batch([(b"k", b"v", T0_MS, [("a", None), ("b", b"")])])
    assert decode_kafka_records("t", 0, batch)[0].headers == [("a", None), ("b", b"")]


def test_a_header_key_that_is_not_utf8_keeps_its_bytes_as_surrogate_escapes():
    # Given a record whose header key is the bytes ff fe (not UTF-8)
    batch = kafka_python_batch([(b"k", b"v", T0_MS, [])])
    records = record(0, headers=[(b"\xff\xfe", b"x")])
    batch = with_records(batch, records)
    # Then the batch is accepted and the key's bytes come back from the str
    assert summarize_kafka_batch(batch).record_count == 1
    ((key, value),) = decode_kafka_records("t", 0, batch)[0].headers
    assert (key.encode("utf-8", "surrogateescape"), value) == (b"\xff\xfe", b"x")


# --- The shard's rules ----------------------------------------------------------------

def one_record_batch(**fields) -> bytes:
    return with_header(kafka_python_batch([(b"k", b"v", T0_MS, [])]), **fields)


@pytest.mark.parametrize("fields, message", [
    ({"magic": 1}, "magic 1: only RecordBatch v2"),
    ({"batch_length": 1000}, "batchLength 1000 but 58 bytes after it .70 bytes in all"),
    ({"attributes": 0x10}, "transactional .*transactions are not supported"),
    ({"attributes": 0x20}, "control batch .*transactions are not supported"),
    ({"attributes": 0x08}, "LogAppendTime"),
    ({"attributes": 0x05}, "compression codec 5 .*0 to 4"),
    ({"attributes": 0x40}, "unknown attribute bits .*0x0040"),
    ({"records_count": 0, "last_offset_delta": -1}, "recordsCount 0, must be 1 to 1048576"),
    ({"records_count": limits.BATCH_RECORDS_MAX + 1, "last_offset_delta": limits.BATCH_RECORDS_MAX},
     "recordsCount 1048577"),
    ({"last_offset_delta": 3}, "recordsCount 1 but lastOffsetDelta 3"),
    ({"producer_id": -2}, "producerId -2 with baseSequence -1"),
    ({"producer_id": 5, "base_sequence": -1}, "baseSequence >= 0 when producerId is set"),
    ({"base_sequence": -7}, "producerId -1 with baseSequence -7"),
], ids=["magic", "batchLength", "transactional", "control", "LogAppendTime", "codec",
        "unused attribute bit", "no records", "too many records", "lastOffsetDelta",
        "producerId", "sequence without producer", "sequence"])
def test_a_batch_breaking_a_header_rule_is_refused_naming_it(fields, message):
    with pytest.raises(InvalidBatchError, match=message):
        summarize_kafka_batch(one_record_batch(**fields))


@pytest.mark.parametrize("batch", [
    one_record_batch(base_timestamp=-1, max_timestamp=-1),
    with_records(one_record_batch(), record(0, timestamp_delta_ms=-T0_MS - 5)),
    with_records(one_record_batch(base_timestamp=-1, max_timestamp=-1),
                 bytes(cramjam.gzip.compress(record(0))), attributes=1),
], ids=["NO_TIMESTAMP", "a record's", "compressed"])
def test_a_negative_timestamp_is_an_invalid_timestamp_which_clients_do_not_retry(batch):
    # Kafka's INVALID_TIMESTAMP, not CORRUPT_MESSAGE, which clients retry as a bad CRC
    with pytest.raises(InvalidTimestampError, match=r"timestamp of -\d+ ms: Plinth takes "
                                                    r"timestamps >= 0"):
        summarize_kafka_batch(batch)


@pytest.mark.parametrize("max_timestamp", [T0_MS + 1, T0_MS - 1, 0],
                         ids=["above the largest", "below the base", "zero"])
def test_a_batch_whose_max_timestamp_is_not_its_largest_is_taken_with_the_largest(max_timestamp):
    # Given batches kafkajs writes (a maxTimestamp compared as strings), uncompressed
    batch = one_record_batch(max_timestamp=max_timestamp)
    # Then each is taken, as Kafka takes it, its summary (the time index's) the records'
    assert summarize_kafka_batch(batch).max_timestamp_ms == T0_MS
    # And a compressed one, which the shard does not walk, has at least its base
    compressed = with_records(one_record_batch(max_timestamp=max_timestamp),
                              bytes(cramjam.gzip.compress(record(0))), attributes=1)
    assert summarize_kafka_batch(compressed).max_timestamp_ms == max(max_timestamp, T0_MS)


def test_a_batch_with_a_wrong_crc_is_refused_as_corrupt_data_with_both_crcs():
    batch = one_record_batch()
    crc = header(batch)["crc"]
    with pytest.raises(CorruptDataError, match=f"CRC 0x{crc ^ 1:08x}, but .* give 0x{crc:08x}"):
        summarize_kafka_batch(with_header(batch, crc=crc ^ 1))


def test_a_batch_over_the_size_limit_is_refused_as_too_large():
    with pytest.raises(RecordTooLargeError, match=f"{limits.BATCH_BYTES_MAX + 1} bytes"):
        summarize_kafka_batch(bytes(limits.BATCH_BYTES_MAX + 1))


def test_a_batch_shorter_than_its_header_is_refused():
    with pytest.raises(InvalidBatchError, match="60 bytes is shorter than its 61-byte header"):
        summarize_kafka_batch(one_record_batch()[:60])


@pytest.mark.parametrize("records, count, message", [
    (record(0) + record(1), 1, "9 bytes after its 1 records"),
    (record(0), 2, "record 1 .*length is not a well-formed varint"),
    (record(1), 1, "record 0 has offsetDelta 1, must be its index"),
    (record(0, length_change=1), 1, "record 0 .*length 9, with 8 bytes left"),
    (record(0, length_change=-1), 1, "record 0 .*headersCount is not a well-formed varint"),
    (record(0, key=b"kk", length_change=1) + b"\x00", 1, "length 10, but its fields end 1 bytes before that"),
    (varint(5) + b"\x00" + b"\x80" * 4, 1, "timestampDelta is not a well-formed varlong"),
    (varint(11) + b"\x00\x00" + b"\xff" * 5 + b"\x0f" + varint(-1) * 2 + varint(0), 1,
     "offsetDelta is not a well-formed varint"),
    (varint(6) + b"\x00\x00\x00" + length_field(None) + length_field(None) + varint(-1), 1,
     "headersCount -1"),
    (record(0, headers=[(None, b"v")]), 1, "header key length -1"),
], ids=["trailing record", "missing record", "wrong offsetDelta", "length past the end",
        "length short of the fields", "bytes after the fields",
        "varlong too long", "varint too large", "negative headersCount", "null header key"])
def test_an_uncompressed_batch_whose_records_break_a_rule_is_refused_naming_the_record(
        records, count, message):
    batch = with_records(one_record_batch(), records, records_count=count,
                         last_offset_delta=count - 1)
    with pytest.raises(InvalidBatchError, match=message):
        summarize_kafka_batch(batch)


def test_the_shard_does_not_decompress_but_the_consumer_refuses_what_the_records_break():
    # Given a zstd batch whose one record has offsetDelta 3
    batch = with_records(one_record_batch(), bytes(cramjam.zstd.compress(record(3))),
                         attributes=4)
    # Then the shard accepts it (header and CRC only), and the consumer refuses it
    assert summarize_kafka_batch(batch).record_count == 1
    with pytest.raises(CorruptDataError, match=r"offset 0 of t\[0\] is corrupt: .*offsetDelta 3"):
        decode_kafka_records("t", 0, batch)
