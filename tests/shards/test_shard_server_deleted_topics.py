"""ShardServer: requests for a partition deleted with its topic (shards/deleted_partitions.py).

A DEALER plays a router whose map predates the delete, as in test_shard_server.py.
"""

from __future__ import annotations

import pytest

from plinth import protocol
from plinth.errors import UnavailableError, UnknownTopicError
from plinth.shards.deleted_partitions import DeletedPartitions
from plinth.shards.partition_log import LogConfig
from tests.shards.test_shard_server import fetch, produce, roundtrip, router, server  # noqa: F401

TOPIC_ID = "0123456789abcdef0123456789abcdef"
NEW_TOPIC_ID = "fedcba9876543210fedcba9876543210"


def open_del1(server, topic_id: str) -> None:   # noqa: F811
    server.call(lambda: server.open_partition("del1", 0, LogConfig(), topic_id=topic_id))


@pytest.fixture
def deleted(server):   # noqa: F811
    """``server`` with topic "del1"'s partition 0 (of id TOPIC_ID) deleted with its topic."""
    open_del1(server, TOPIC_ID)
    assert server.call(server.delete_partition, "del1", 0)
    return server


@pytest.mark.parametrize("request_kind", ["produce", "fetch", "listOffsets"])
def test_a_request_for_a_partition_deleted_with_its_topic_is_answered_unknown_topic_naming_it(
        deleted, router, request_kind):   # noqa: F811
    # Given del1-0 deleted here with its topic (the fixture), and a router that has not
    # refreshed its map since
    # When it sends a produce, a fetch or a listOffsets for del1-0
    if request_kind == "produce":
        reply = produce(router, [b"late"], topic="del1")
    elif request_kind == "fetch":
        reply, _ = fetch(router, 0, topic="del1")
    else:
        reply, _ = roundtrip(router, protocol.encode_list_offsets(3, "del1", 0))
    # Then the answer is unknownTopic, naming the topic, its id and that it was deleted,
    # not "not on this shard, retry"
    assert type(reply.error) is UnknownTopicError, reply.error
    assert "topic 'del1'" in str(reply.error) and TOPIC_ID in str(reply.error)
    assert "was deleted (at " in str(reply.error) and "retry" not in str(reply.error)


def test_a_partition_only_moved_away_is_still_answered_retriable(server, router):   # noqa: F811
    # Given del1-0 whose copy here was dropped because it moved (keep_remote: the
    # partition lives on elsewhere)
    open_del1(server, TOPIC_ID)
    server.call(server.delete_partition, "del1", 0, True)
    # When a stale map's produce reaches this shard
    reply = produce(router, [b"moved"], topic="del1")
    # Then it is told to retry (the router's refresh finds the new owner)
    assert type(reply.error) is UnavailableError and "retry" in str(reply.error)


def test_a_topic_created_again_on_this_shard_is_served_at_once(deleted, router):   # noqa: F811
    # Given del1 deleted (the fixture), then created again under the same name, its
    # partition 0 opened here under a new id
    open_del1(deleted, NEW_TOPIC_ID)
    # When a produce for del1-0 arrives
    reply = produce(router, [b"new"], topic="del1")
    # Then the new topic takes it
    assert reply.error is None and reply.base_offset == 0


def test_a_topic_created_again_elsewhere_is_answered_retriable_once_its_count_is_pushed(
        deleted, router):   # noqa: F811
    # Given del1 deleted (the fixture), created again with its partition 0 on another
    # shard: the controller's partition counts name it again
    deleted.call(deleted.set_partition_counts, {"t": 1, "del1": 1})
    # When a stale map's produce for del1-0 reaches this shard
    reply = produce(router, [b"new"], topic="del1")
    # Then it is told to retry, as for a moved partition, not that the topic is gone
    assert type(reply.error) is UnavailableError and "retry" in str(reply.error)


def test_deleted_partitions_are_remembered_within_their_count_oldest_forgotten_first():
    # Given a memory of two partitions
    deleted = DeletedPartitions(remembered_max=2, remembered_s=600.0)
    # When three are deleted in turn
    for partition in range(3):
        deleted.deleted(("t", partition), TOPIC_ID)
    # Then the first is forgotten, the other two answered
    assert len(deleted) == 2
    assert deleted.error_for("t", 0, "shard-1") is None
    assert "partition t-2" in str(deleted.error_for("t", 2, "shard-1"))


def test_deleted_partitions_are_forgotten_after_their_time():
    # Given a memory of deletions that lasts no time at all
    deleted = DeletedPartitions(remembered_max=10, remembered_s=0.0)
    deleted.deleted(("t", 0), TOPIC_ID)
    # Then a request after it is not answered as deleted, and nothing is kept
    assert deleted.error_for("t", 0, "shard-1") is None and len(deleted) == 0
