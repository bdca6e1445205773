"""Seek by time at the shard (shards/time_lookup.py): the exact first record stamped at or
after a time, from a real partition on disk, Plinth and Kafka batches alike."""

from __future__ import annotations

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from plinth import protocol
from plinth.format.kafka_batch import summarize_kafka_batch
from plinth.format.log_entry import BATCH_FORMAT_KAFKA_V2
from plinth.shards.partition_log import LogConfig
from plinth.shards.tier.remote_log_view import RemoteLogView
from plinth.shards.tier.remote_segment import ObjectDigest, RemoteSegment, new_segment_id
from plinth.shards.time_lookup import InRemoteSegment, TimeLookup, record_at_time
from tests.shards.test_partition import append, batch_of, open_partition

T0_MS = 1_700_000_000_000
NONE = TimeLookup(-1, -1)


def stamped(part, *timestamps_ms: int) -> int:
    """Append one Plinth batch of records stamped T0_MS + each; its base offset."""
    return append(part, batch_of([b"v%d" % t for t in timestamps_ms],
                                 timestamps_ms=[T0_MS + t for t in timestamps_ms]))


def committed(part) -> None:
    part.advance(part.log.end_offset)


@pytest.fixture
def part(tmp_path):
    # Small segments: the look-ups cross segment boundaries and use the time index.
    partition = open_partition(tmp_path / "p", LogConfig(segment_bytes_max=4096,
                                                         index_interval_bytes=256))
    yield partition
    partition.log.close()


def test_the_answer_is_the_exact_record_inside_the_batch_not_the_batchs_first(part):
    # Given batches of records stamped 0..9, 10..19, ...
    for first in range(0, 100, 10):
        stamped(part, *range(first, first + 10))
    committed(part)
    # Then every time finds its own record, with its timestamp
    for t in range(100):
        assert record_at_time(part, T0_MS + t) == TimeLookup(t, T0_MS + t)
    # And a time before all finds the first, one after all finds none
    assert record_at_time(part, 0) == TimeLookup(0, T0_MS)
    assert record_at_time(part, T0_MS + 100) == NONE


def test_records_stamped_out_of_order_are_searched_in_offset_order(part):
    # Given a batch whose records go back in time, then one stamped later
    stamped(part, 50, 10, 30)       # offsets 0, 1, 2
    stamped(part, 20, 60)           # offsets 3, 4
    committed(part)
    # Then the first record in offset order at or after the time wins, even if a
    # later one is closer to it
    assert record_at_time(part, T0_MS + 25) == TimeLookup(0, T0_MS + 50)
    assert record_at_time(part, T0_MS + 55) == TimeLookup(4, T0_MS + 60)
    assert record_at_time(part, T0_MS + 61) == NONE


def test_records_above_the_high_watermark_are_not_answered(part):
    # Given a committed batch and one not yet committed
    stamped(part, 1, 2)
    committed(part)
    stamped(part, 5, 6)
    # Then a time only the uncommitted batch reaches finds nothing yet
    assert record_at_time(part, T0_MS + 5) == NONE
    committed(part)
    assert record_at_time(part, T0_MS + 5) == TimeLookup(2, T0_MS + 5)


def test_max_timestamp_answers_the_first_record_with_the_largest_timestamp(part):
    # Given the largest timestamp twice, in two segments' worth of batches
    for first in range(0, 200, 10):
        stamped(part, *range(first, first + 10))
    stamped(part, 500, 3, 500)      # offsets 200, 201, 202
    stamped(part, 7)
    committed(part)
    assert len(part.log.segments) > 1
    assert record_at_time(part, protocol.MAX_TIMESTAMP) == TimeLookup(200, T0_MS + 500)


def test_an_empty_partition_answers_none_for_a_time_and_for_max_timestamp(part):
    assert record_at_time(part, 0) == NONE
    assert record_at_time(part, protocol.MAX_TIMESTAMP) == NONE


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4], ids=["none", "gzip", "snappy", "lz4", "zstd"])
def test_a_compressed_kafka_batch_is_decoded_to_find_the_record(part, codec):
    # Given a Kafka batch, compressed with the codec, of 50 records stamped 0..49
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for i in range(50):
        builder.append(i, timestamp=T0_MS + i, key=None, value=b"plinth " * 20, headers=[])
    batch = bytes(builder.build())
    stamped(part, 0)   # offset 0: a Plinth batch before it
    part.append(batch, summarize_kafka_batch(batch), batch_format=BATCH_FORMAT_KAFKA_V2)
    committed(part)
    # Then the record is found inside it, at its offset in the log
    assert record_at_time(part, T0_MS + 17) == TimeLookup(1 + 17, T0_MS + 17)


def remote_segment(base_offset: int, end_offset: int, max_timestamp_ms: int) -> RemoteSegment:
    return RemoteSegment(topic="t", topic_id="5c0e3b6a91d24f7e8a1b2c3d4e5f6071", partition=3,
                         segment_id=new_segment_id(), base_offset=base_offset,
                         end_offset=end_offset, max_timestamp_ms=max_timestamp_ms,
                         leader_epoch=0, created_ms=0, objects={"log": ObjectDigest(1, 0)})


def test_a_time_only_object_storage_reaches_is_handed_to_its_remote_segment(tmp_path):
    # Given a log continuing at 100, whose offsets 0..99 are only in two remote segments
    part = open_partition(tmp_path / "p", initial_offset=100)
    second = remote_segment(50, 100, T0_MS + 99)
    part.remote = RemoteLogView.of([remote_segment(0, 50, T0_MS + 49), second])
    stamped(part, 100, 101)
    committed(part)
    # Then a time in the second remote segment is not guessed: the remote reader is to
    # look in that segment from its base (tier/remote_time_lookup.py)
    assert record_at_time(part, T0_MS + 60) == InRemoteSegment(second, T0_MS + 60, 50)
    # And from past that segment (it held none past a floor) the local log answers
    assert record_at_time(part, T0_MS + 60, from_offset=100) == TimeLookup(100, T0_MS + 100)
    # And deleteRecords' floor inside it is where the reader starts
    part.delete_records(70)
    assert record_at_time(part, T0_MS + 60) == InRemoteSegment(second, T0_MS + 60, 70)
    # And a time past the remote segments is answered exactly from the local log
    assert record_at_time(part, T0_MS + 101) == TimeLookup(101, T0_MS + 101)
    # And the largest timestamp overall decides MAX_TIMESTAMP
    assert record_at_time(part, protocol.MAX_TIMESTAMP) == TimeLookup(101, T0_MS + 101)
    part.log.close()
