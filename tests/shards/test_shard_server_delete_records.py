"""ShardServer's deleteRecords with real sockets and a real disk, no Ray: the log start
offset moves inside a batch, every read path honours it, and a restart keeps it.

A DEALER plays the router, as in test_shard_server.py.
"""

from __future__ import annotations

from plinth import protocol
from plinth.errors import OffsetOutOfRangeError, UnavailableError
from tests.shards.test_shard_server import (
    NOW_MS, fetch, produce, roundtrip, running_shard, values_in)


def delete_records(sock, offset, request_id=30, partition=0, topic="t"):
    return roundtrip(sock, protocol.encode_delete_records(request_id, topic, partition, offset))[0]


def list_offsets(sock, timestamp_ms=protocol.NO_TIME_LOOKUP, request_id=40):
    return roundtrip(sock, protocol.encode_list_offsets(request_id, "t", 0, timestamp_ms))[0]


def test_records_before_an_offset_inside_a_batch_are_no_longer_served(tmp_path):
    with running_shard(tmp_path / "shard") as (_, sock):
        # Given two batches, offsets 0-3 and 4-6
        produce(sock, [b"a", b"b", b"c", b"d"], request_id=1)
        produce(sock, [b"e", b"f", b"g"], request_id=2)
        # When the records before offset 2, inside the first batch, are deleted
        reply = delete_records(sock, 2)
        # Then the answer is the new low watermark, and the high watermark
        assert reply.error is None
        assert (reply.offsets.start_offset, reply.offsets.end_offset) == (2, 7)
        # And a fetch below it is out of range, naming the valid offsets
        below, _ = fetch(sock, 1, request_id=3)
        assert isinstance(below.error, OffsetOutOfRangeError)
        assert "valid offsets are 2 to 7" in str(below.error)
        # And a fetch at it gets its batch whole (as Kafka), starting at 2 for the consumer,
        # with the log start offset in the reply
        at, payload = fetch(sock, 2, request_id=4)
        assert at.log_start_offset == 2
        assert values_in(payload, 2) == [b"c", b"d", b"e", b"f", b"g"]
        # And the earliest offset is the floor
        assert list_offsets(sock).offsets.start_offset == 2


def test_a_time_lookup_never_answers_a_deleted_record(tmp_path):
    with running_shard(tmp_path / "shard") as (_, sock):
        produce(sock, [b"a", b"b", b"c"], request_id=1)
        delete_records(sock, 2)
        # Every record is stamped NOW_MS: the first one at or after it is the floor's
        found = list_offsets(sock, NOW_MS - 1000).offsets
        assert (found.found_offset, found.found_timestamp_ms) == (2, NOW_MS)


def test_the_log_start_offset_survives_a_restart_of_the_shard(tmp_path):
    # Given records deleted before offset 3 on a shard that then stops
    with running_shard(tmp_path / "shard") as (_, sock):
        produce(sock, [b"a", b"b", b"c", b"d", b"e"], request_id=1)
        assert delete_records(sock, 3).offsets.start_offset == 3
    # When it starts again on the same directory
    with running_shard(tmp_path / "shard") as (_, sock):
        # Then the earliest offset is still 3, and below it is out of range
        assert list_offsets(sock).offsets.start_offset == 3
        assert isinstance(fetch(sock, 0)[0].error, OffsetOutOfRangeError)


def test_minus_one_deletes_up_to_the_high_watermark(tmp_path):
    with running_shard(tmp_path / "shard") as (_, sock):
        produce(sock, [b"a", b"b"], request_id=1)
        assert delete_records(sock, -1).offsets.start_offset == 2
        # and new records are served from there
        produce(sock, [b"c"], request_id=2)
        assert values_in(fetch(sock, 2, request_id=3)[1], 2) == [b"c"]


def test_an_offset_below_the_log_start_changes_nothing(tmp_path):
    with running_shard(tmp_path / "shard") as (_, sock):
        produce(sock, [b"a", b"b", b"c"], request_id=1)
        delete_records(sock, 2)
        reply = delete_records(sock, 1, request_id=31)
        assert reply.error is None and reply.offsets.start_offset == 2


def test_an_offset_past_the_high_watermark_or_negative_is_out_of_range(tmp_path):
    with running_shard(tmp_path / "shard") as (_, sock):
        produce(sock, [b"a", b"b", b"c"], request_id=1)
        past = delete_records(sock, 4)
        assert isinstance(past.error, OffsetOutOfRangeError)
        assert "offset 4" in str(past.error) and "high watermark 3" in str(past.error)
        # (Admin refuses -2 itself; on the wire, as from a Kafka client, the shard does)
        negative = delete_records(sock, -2, request_id=32)
        assert isinstance(negative.error, OffsetOutOfRangeError)
        assert list_offsets(sock).offsets.start_offset == 0


def test_a_partition_not_on_the_shard_is_unavailable(tmp_path):
    with running_shard(tmp_path / "shard") as (_, sock):
        reply = delete_records(sock, 0, partition=5)
        assert isinstance(reply.error, UnavailableError)
