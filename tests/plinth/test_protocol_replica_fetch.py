"""protocol.py, replicaFetch: a follower's fetch and the leader's answer round-trip."""

from __future__ import annotations

from plinth import protocol
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
