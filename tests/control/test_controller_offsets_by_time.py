"""The controller's listOffsets by time of a partition whose history spans shards
(Controller.partition_offsets with a timestamp): each shard finds the record in the
ranges it holds, and the controller takes the partition's first. Real shard actors
in process, a real disk (broker_without_ray.py)."""

from __future__ import annotations

import time

from plinth import protocol
from plinth.control import placement
from plinth.format.record_batch import BatchBuilder
from tests.control.broker_without_ray import THREE, TWO
from tests.shard_requests import _roundtrip

T0_MS = time.time_ns() // 1_000_000 - 60_000   # a minute ago: within every default window


def topic_that_moves() -> str:
    """A one-partition topic that adding a third shard moves."""
    return next(f"t{n}" for n in range(1000)
                if placement.shard_for(f"t{n}", 0, TWO) != placement.shard_for(f"t{n}", 0, THREE))


def produce_stamped(broker, topic: str, *offsets_ms: int) -> int:
    """One batch to the partition's owner, records stamped T0_MS + each; its base offset."""
    builder = BatchBuilder()
    for offset_ms in offsets_ms:
        builder.append(None, b"v", T0_MS + offset_ms, None)
    address = broker.address(broker.owner(topic, 0))
    return _roundtrip(address, protocol.encode_produce(1, topic, 0, 1), builder.build()).base_offset


def test_a_time_in_the_sealed_range_is_found_there_and_a_later_one_on_the_new_owner(brokers):
    # Given a partition whose records 0..2 stayed on its old shard when it moved, and
    # records 3..4 went to its new owner
    broker = brokers(2)
    topic = topic_that_moves()
    broker.controller.create_topic(topic, 1, {})
    assert produce_stamped(broker, topic, 10, 20, 30) == 0
    assert broker.controller.add_shards(1)
    assert produce_stamped(broker, topic, 5, 40) == 3
    offsets = broker.controller.partition_offsets
    # Then a time the old range reaches is found there, exactly, though the new owner
    # also has a record at or after it (offset 3, stamped earlier: offset order wins)
    found = offsets(topic, 0, T0_MS + 15)
    assert (found.found_offset, found.found_timestamp_ms) == (1, T0_MS + 20)
    # And a time only the new owner reaches is found there
    found = offsets(topic, 0, T0_MS + 35)
    assert (found.found_offset, found.found_timestamp_ms) == (4, T0_MS + 40)
    # And the largest timestamp is the new owner's; none is past it
    found = offsets(topic, 0, protocol.MAX_TIMESTAMP)
    assert (found.found_offset, found.found_timestamp_ms) == (4, T0_MS + 40)
    found = offsets(topic, 0, T0_MS + 41)
    assert (found.found_offset, found.found_timestamp_ms) == (-1, -1)
    # And without a time the offsets are as before, with nothing found
    plain = offsets(topic, 0)
    assert (plain.start_offset, plain.end_offset, plain.found_offset) == (0, 5, -1)


def test_the_largest_timestamp_in_the_sealed_range_beats_a_later_offset_stamped_earlier(brokers):
    # Given a moved partition whose largest timestamp is in its old range
    broker = brokers(2)
    topic = topic_that_moves()
    broker.controller.create_topic(topic, 1, {})
    produce_stamped(broker, topic, 10, 90)
    broker.controller.add_shards(1)
    produce_stamped(broker, topic, 50)
    # Then MAX_TIMESTAMP finds it there
    found = broker.controller.partition_offsets(topic, 0, protocol.MAX_TIMESTAMP)
    assert (found.found_offset, found.found_timestamp_ms) == (1, T0_MS + 90)
