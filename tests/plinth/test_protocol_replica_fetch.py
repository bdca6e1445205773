"""protocol.py, replicaFetch: a follower's fetch and the leader's answer round-trip."""

from __future__ import annotations

from plinth import limits, protocol
from plinth.errors import FencedLeaderEpochError


def test_a_replica_fetch_request_round_trips_every_field():
    # Given a follower's fetch with every field set
    header = protocol.encode_replica_fetch(7, "orders", 3, "shard-2", 5, 1234, 4, 65536, 500, 2)
    # When the leader decodes it
    request = protocol.decode_request(header)
    # Then every field is what the follower sent
    assert request == protocol.ReplicaFetchRequest(7, "orders", 3, "shard-2", 5, 1234, 4,
                                                   65536, 500, 2)


def test_a_replica_fetch_answer_round_trips_offsets_and_epoch_starts():
    # Given an answer carrying entries of two leader epochs
    result = protocol.ReplicaFetchResult(
        high_watermark=90, log_start_offset=10, log_end_offset=120,
        epoch_starts=(protocol.EpochStart(3, 100), protocol.EpochStart(5, 110)))
    # When the follower decodes it
    view = protocol.decode_reply(protocol.encode_replica_fetch_reply(8, result))
    # Then it reads the same answer, and no divergence
    assert (view.request_id, view.kind, view.error) == (8, "replicaFetch", None)
    assert view.replica_fetch == result
    assert not view.replica_fetch.diverges


def test_a_diverging_answer_says_where_the_follower_truncates():
    # Given the leader's answer that the follower's epoch 4 ends at offset 77 here
    result = protocol.ReplicaFetchResult(50, 0, 200, diverging_epoch=4, diverging_end_offset=77)
    # When the follower decodes it
    view = protocol.decode_reply(protocol.encode_replica_fetch_reply(9, result))
    # Then it learns the epoch and its end, and that it diverges
    assert (view.replica_fetch.diverging_epoch, view.replica_fetch.diverging_end_offset) == (4, 77)
    assert view.replica_fetch.diverges and view.replica_fetch.epoch_starts == ()


def test_a_refused_replica_fetch_decodes_to_its_typed_error():
    # Given the leader refuses a fetch of an older epoch
    header = protocol.encode_error(3, FencedLeaderEpochError("epoch 4 is older than 5"))
    # When the follower decodes the answer
    view = protocol.decode_reply(header)
    # Then it carries the typed error and no result
    assert isinstance(view.error, FencedLeaderEpochError) and view.replica_fetch is None


def test_a_replica_fetch_of_all_round_trips_every_partition_in_order():
    # Given a follower's fetch of two partitions on one leader
    partitions = [protocol.ReplicaFetchPartition("orders", 3, 5, 1234, 4, 65536),
                  protocol.ReplicaFetchPartition("clicks", 0, 2, 0, -1, 1024)]
    header = protocol.encode_replica_fetch_all(7, "shard-2", 9, 500, 1 << 24, partitions)
    # When the leader decodes it
    request = protocol.decode_request(header)
    # Then every field of the fetch and of each partition comes back, in order
    assert request == protocol.ReplicaFetchAllRequest(7, "shard-2", 9, 500, 1 << 24,
                                                      tuple(partitions))


def test_a_replica_fetch_of_all_answer_carries_each_partitions_result_or_error():
    # Given an answer: entries for the first partition, a refusal of the second
    first = protocol.ReplicaFetchResult(10, 0, 12, epoch_starts=(protocol.EpochStart(5, 3),))
    results = [protocol.ReplicaFetchPartitionResult(None, first, 300),
               protocol.ReplicaFetchPartitionResult(FencedLeaderEpochError("t-1: old epoch 1"),
                                                    None)]
    # When the follower decodes it
    view = protocol.decode_reply(protocol.encode_replica_fetch_all_reply(8, results))
    # Then each partition's result, error and entry bytes come back in order
    assert (view.request_id, view.kind, view.error) == (8, "replicaFetchAll", None)
    ok, refused = view.replica_fetch_all
    assert (ok.error, ok.result, ok.entries_bytes) == (None, first, 300)
    assert isinstance(refused.error, FencedLeaderEpochError) and refused.result is None
    assert refused.error.message == "t-1: old epoch 1" and refused.entries_bytes == 0


def test_a_replica_fetch_of_all_at_its_bounds_fits_a_header():
    # Given a fetch of the most partitions, each of a topic with the longest name
    partitions = [protocol.ReplicaFetchPartition("t" * limits.TOPIC_NAME_BYTES_MAX, p, 1, 2**40,
                                                 1, limits.REPLICA_FETCH_BYTES_MAX)
                  for p in range(limits.REPLICA_FETCH_PARTITIONS_MAX)]
    header = protocol.encode_replica_fetch_all(1, "shard-2", 1, 500, 1 << 24, partitions)
    # Then it fits a header, and the leader decodes every partition of it
    assert len(header) <= limits.HEADER_BYTES_MAX
    assert protocol.decode_request(header).partitions == tuple(partitions)


def test_a_replica_fetch_answer_carries_the_leaders_log_start_floor_beside_its_segments_start():
    result = protocol.ReplicaFetchResult(100, 40, 120, log_start_floor=57)
    reply = protocol.decode_reply(protocol.encode_replica_fetch_reply(8, result))
    assert reply.replica_fetch == result
    assert (reply.replica_fetch.log_start_offset, reply.replica_fetch.log_start_floor) == (40, 57)
