"""client/compression.py: a Plinth batch as one compressed Kafka batch, which the shard's
check accepts and both Plinth's decoder and kafka-python's (an independent codec) read
back exactly; and the option's names."""

from __future__ import annotations

import pytest
from kafka.record.default_records import DefaultRecordBatch

from plinth.client.compression import COMPRESSION_TYPES, codec_for, compressed_kafka_batch
from plinth.format.kafka_batch import decode_kafka_records, summarize_kafka_batch
from plinth.format.record_batch import BatchBuilder
from tests.format.kafka_batches import header

T0_MS = 1_700_000_000_000


def plinth_batch(count: int = 300, producer_id: int = -1, base_sequence: int = -1) -> bytes:
    builder = BatchBuilder()
    for i in range(count):
        key = None if i % 7 == 0 else b"user-%d" % (i % 13)
        value = None if i % 11 == 0 else b'{"event": "page_view", "user": %d, "path": "/a/%d"}' % (
            i % 13, i)
        builder.append(key, value, T0_MS + i * 3, None)
        if i % 5 == 0:
            builder.add_headers(i, [("trace", b"t-%d" % i), ("empty", b"")], 0)
    return builder.build(producer_id=producer_id, base_sequence=base_sequence)


@pytest.mark.parametrize("name", list(COMPRESSION_TYPES))
def test_every_codec_gives_a_valid_smaller_kafka_batch_that_both_decoders_read_exactly(name):
    # Given a Plinth batch of JSON events with keys, nulls and headers
    plain = plinth_batch(producer_id=77, base_sequence=1000)
    expected = [(i, r.key, r.value, r.timestamp_ms, r.headers)
                for i, r in enumerate(decode_kafka_records("t", 0, compressed_kafka_batch(
                    plain, COMPRESSION_TYPES["zstd"])))]
    # When it is compressed with the codec
    batch = compressed_kafka_batch(plain, COMPRESSION_TYPES[name])
    # Then it is a Kafka batch of that codec, smaller, which the shard's check accepts
    # with the producer's id and sequence kept
    assert header(batch)["attributes"] & 7 == COMPRESSION_TYPES[name]
    assert len(batch) < len(plain) // 2
    summary = summarize_kafka_batch(batch)
    assert (summary.record_count, summary.producer_id, summary.base_sequence) == (300, 77, 1000)
    # And Plinth's decoder and kafka-python's read the same records
    ours = [(r.offset, r.key, r.value, r.timestamp_ms, [(k, v) for k, v in r.headers])
            for r in decode_kafka_records("t", 0, batch)]
    theirs = [(r.offset, r.key, r.value, r.timestamp, [(k, v) for k, v in r.headers])
              for r in DefaultRecordBatch(batch)]
    assert ours == theirs
    assert [row[1:4] for row in ours] == [row[1:4] for row in expected]
    assert ours[5][4] == [("trace", b"t-5"), ("empty", b"")]
    assert DefaultRecordBatch(batch).validate_crc()


@pytest.mark.parametrize("value", ["brotli", "ZSTD", "", "none", 4, True])
def test_an_unknown_compression_type_is_refused_naming_it_and_the_choices(value):
    with pytest.raises(ValueError, match=rf"compression_type={value!r} is not one of the "
                                         rf"choices: 'gzip', 'snappy', 'lz4', 'zstd' or None"):
        codec_for(value)


def test_none_means_no_compression_and_each_name_its_kafka_codec():
    assert codec_for(None) is None
    assert [codec_for(name) for name in ("gzip", "snappy", "lz4", "zstd")] == [1, 2, 3, 4]


def test_an_lz4_batch_over_one_block_has_independent_blocks_as_kafkas_java_reader_needs():
    # Given a batch whose records fill several 64 KiB lz4 blocks
    plain = plinth_batch(count=6000)
    batch = compressed_kafka_batch(plain, COMPRESSION_TYPES["lz4"])
    frame = batch[61:]
    # Then its frame is lz4's (magic 0x184D2204) with the flags Kafka's producers write:
    # version 1, blocks independent (Kafka's KafkaLZ4BlockInputStream refuses linked
    # ones: "Dependent block stream is unsupported"), no content checksum
    assert frame[:4] == b"\x04\x22\x4d\x18"
    flags = frame[4]
    assert (flags >> 6, flags >> 5 & 1, flags >> 2 & 1) == (1, 1, 0), hex(flags)
    # And kafka-python and Plinth read all 6,000 records back
    assert len(list(DefaultRecordBatch(batch))) == 6000
    assert len(decode_kafka_records("t", 0, batch)) == 6000
