"""Rebalancer and tiered storage (issue 14): a removed shard retires once its ranges of
tiered topics are in object storage, and their owners serve them from there; it keeps
draining while a range is not uploaded (the store is down) or belongs to an untiered
topic, says why in status, and a restart finishes a retirement a crash cut short. Real
shard actors reached in process (broker_without_ray.py), on a real store (a directory,
or moto's S3 server on 127.0.0.1)."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from plinth import protocol
from plinth.control import placement
from plinth.control.metadata import BrokerMetadata, TopicMetadata
from plinth.control.rebalancer import Rebalancer
from plinth.errors import UnavailableError
from plinth.shards.shard_handle import Leadership, PendingCall, TieredState, TierOptions
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.remote_transfer import list_remote_segments
from tests.control.broker_without_ray import THREE, TWO, Broker, topic_that_moves
from tests.in_process_shards import ControllerCrash
from tests.moto_s3 import MotoS3
from tests.shard_requests import fetch_values
from tests.support import wait_until

MiB = 1024 * 1024
TIER_CACHE_BYTES = 64 * MiB
SEGMENT_BYTES = 1 * MiB                 # the smallest segment.bytes a topic may set
VALUE_BYTES = 100 * 1024
VALUES_PER_BATCH = 4
BATCHES = 8                             # 3.2 MB: three rolled segments and a sealed last
WAIT_S = 30
TIERED = {"remote.storage.enable": "true", "segment.bytes": str(SEGMENT_BYTES),
          "local.retention.bytes": "0"}


def value(number: int) -> bytes:
    return b"%010d" % number * (VALUE_BYTES // 10)


def tiered_broker(brokers, url: str, shard_count: int = 3) -> Broker:
    if url.startswith("file://"):   # made by whoever sets the store up, never by the broker
        Path(url[len("file://"):]).mkdir(exist_ok=True)
    return brokers(shard_count, tier=TierOptions(url, TIER_CACHE_BYTES))


def partition_on(topic: str, shard_id: str, shard_ids: list[str], partitions: int = 4) -> int:
    return next(p for p in range(partitions)
                if placement.shard_for(topic, p, shard_ids) == shard_id)


def produce_values(broker: Broker, topic: str, partition: int) -> int:
    """BATCHES batches of VALUES_PER_BATCH values (value(0), value(1), ...); returns the
    end offset."""
    for batch in range(BATCHES):
        first = batch * VALUES_PER_BATCH
        broker.produce(topic, partition, [value(n) for n in range(first, first + VALUES_PER_BATCH)])
    return BATCHES * VALUES_PER_BATCH


def read_all(address: str, topic: str, partition: int, end_offset: int) -> list[bytes]:
    """Every value of the partition below ``end_offset``, fetched from ``address``."""
    values: list[bytes] = []
    while len(values) < end_offset:
        got = fetch_values(address, topic, partition, len(values))
        assert got, f"{topic}-{partition}: nothing at {len(values)} from {address}"
        values += got
    return values[:end_offset]


def status_of(broker: Broker) -> dict:
    return {s.shard_id: s for s in broker.controller.status().shards}


def retired(broker: Broker, shard_id: str) -> bool:
    return shard_id not in status_of(broker)


def a_removed_shard_with_a_tiered_range(brokers, url: str) -> tuple[Broker, str, int, int]:
    """Three shards, a tiered topic with records on shard-2's partition, shard-2 removed:
    (broker, topic, partition, its end offset, which is where its writes moved)."""
    broker = tiered_broker(brokers, url)
    topic = topic_that_moves(4, TWO, THREE)
    broker.controller.create_topic(topic, 4, TIERED)
    partition = partition_on(topic, "shard-2", THREE)
    end_offset = produce_values(broker, topic, partition)
    broker.controller.remove_shards(1)
    return broker, topic, partition, end_offset


def test_a_removed_shard_retires_once_its_ranges_are_uploaded(brokers, tmp_path):
    # Given a removed shard whose partition of a tiered topic holds 3.2 MB
    broker, topic, partition, end_offset = a_removed_shard_with_a_tiered_range(
        brokers, f"file://{tmp_path}/store")
    owner = broker.owner(topic, partition)
    # When its uploads finish (status calls look, as a shard's nudge would make it)
    wait_until(lambda: retired(broker, "shard-2"), timeout_s=WAIT_S, interval_s=0.2,
               explain=lambda: status_of(broker)["shard-2"])
    # Then it is retired, with no retention change and no topic deletion, and its range
    # stays in the history with no shard: the owner serves it
    metadata = broker.metadata_on_disk()
    assert metadata.draining == [] and "shard-2" not in metadata.shard_nodes
    assert metadata.topics[topic].ranges_of(partition) == [(0, ""), (end_offset, owner)]
    assert broker.controller.routing().holder(topic, partition, 0) == owner
    # And every record reads back, byte for byte, from the owner (from the store)
    assert read_all(broker.address(owner), topic, partition, end_offset) == \
        [value(n) for n in range(end_offset)]
    # And the partition's offsets still start at 0
    offsets = broker.controller.partition_offsets(topic, partition)
    assert (offsets.start_offset, offsets.end_offset) == (0, end_offset)


def test_the_shards_nudges_alone_retire_it_without_a_status_call(brokers, tmp_path):
    # Given a removed shard of a tiered topic, and no status call from now on
    broker, topic, partition, end_offset = a_removed_shard_with_a_tiered_range(
        brokers, f"file://{tmp_path}/store")
    nudges = broker.shards.announce_to.tiering_changed_from

    def deliver_nudges() -> bool:
        while nudges:
            broker.controller.tiering_changed(nudges.pop(0))
        return broker.metadata_on_disk().draining == []

    # When the shards' tiering_changed nudges reach the controller (the removed shard's
    # once its range is uploaded, the owner's once it listed the store again)
    # Then they retire it
    wait_until(deliver_nudges, timeout_s=WAIT_S, interval_s=0.2)
    owner = broker.owner(topic, partition)
    assert broker.metadata_on_disk().topics[topic].ranges_of(partition) == \
        [(0, ""), (end_offset, owner)]


def test_an_untiered_topic_keeps_the_removed_shard_draining_and_status_says_why(
        brokers, tmp_path):
    # Given a tiered broker whose removed shard holds a range of an untiered topic
    broker = tiered_broker(brokers, f"file://{tmp_path}/store")
    topic = topic_that_moves(4, TWO, THREE)
    broker.controller.create_topic(topic, 4, {"segment.bytes": str(SEGMENT_BYTES)})
    partition = partition_on(topic, "shard-2", THREE)
    end_offset = produce_values(broker, topic, partition)
    broker.controller.remove_shards(1)
    # When status is asked
    shard = status_of(broker)["shard-2"]
    # Then it drains, serves the range, and says what it waits for
    assert shard.draining and shard.alive
    assert shard.draining_reason == ("1 partition of untiered topics (retention or deleting "
                                     "the topic empties them)")
    assert read_all(broker.address("shard-2"), topic, partition, end_offset)[-1] == \
        value(end_offset - 1)
    assert broker.metadata_on_disk().topics[topic].ranges_of(partition)[0] == (0, "shard-2")


def test_a_store_that_is_unreachable_keeps_the_removed_shard_draining_until_it_is_back(
        brokers, monkeypatch):
    # Given a removed shard of a tiered topic whose store went down before the seal
    moto = MotoS3("plinth-retire").start()
    try:
        for key, val in moto.env.items():
            monkeypatch.setenv(key, val)
        broker = tiered_broker(brokers, moto.url())
        topic = topic_that_moves(4, TWO, THREE)
        broker.controller.create_topic(topic, 4, TIERED)
        partition = partition_on(topic, "shard-2", THREE)
        moto.stop()
        end_offset = produce_values(broker, topic, partition)
        broker.controller.remove_shards(1)
        # When its uploads fail
        wait_until(lambda: status_of(broker)["shard-2"].upload_errors >= 1, timeout_s=WAIT_S,
                   interval_s=0.2)
        # Then it still drains, says why, and serves its range from its disk
        shard = status_of(broker)["shard-2"]
        assert shard.draining and shard.draining_reason == \
            "1 partition of tiered topics still uploading to object storage"
        assert broker.metadata_on_disk().topics[topic].ranges_of(partition)[0] == (0, "shard-2")
        assert read_all(broker.address("shard-2"), topic, partition, end_offset)[0] == value(0)
        # And when the store is back, it retires, and the owner serves the range
        moto.start()
        wait_until(lambda: retired(broker, "shard-2"), timeout_s=2 * WAIT_S, interval_s=0.5)
        owner = broker.owner(topic, partition)
        assert read_all(broker.address(owner), topic, partition, end_offset) == \
            [value(n) for n in range(end_offset)]
    finally:
        moto.stop()


def test_a_restart_after_the_range_is_recorded_tiered_retires_the_shard(brokers, tmp_path):
    # Given a removed shard of a tiered topic, and a controller that dies retiring it,
    # after it recorded the range tiered
    url = f"file://{tmp_path}/store"
    broker, topic, partition, end_offset = a_removed_shard_with_a_tiered_range(brokers, url)
    broker.shards.handles["shard-2"].crash_controller_at("shutdown")
    with pytest.raises(ControllerCrash):
        wait_until(lambda: status_of(broker) and False, timeout_s=WAIT_S, interval_s=0.2)
    metadata = broker.metadata_on_disk()
    owner = metadata.topics[topic].placement[partition]
    assert metadata.draining == ["shard-2"]
    assert metadata.topics[topic].ranges_of(partition) == [(0, ""), (end_offset, owner)]
    # When the server starts again
    broker = tiered_broker(brokers, url)
    # Then the start itself retires it, and the owner serves the range
    assert broker.metadata_on_disk().draining == []
    with pytest.raises(UnavailableError, match="shard-2 is down"):
        broker.shards.handles["shard-2"].group_names().result()
    assert read_all(broker.address(owner), topic, partition, end_offset) == \
        [value(n) for n in range(end_offset)]


def test_pruning_a_tiered_range_keeps_its_remote_segments(brokers, tmp_path):
    # Given a tiered topic whose partition moved to an added shard; its old owner's copy
    # of the sealed range is uploaded and emptied locally by local retention
    url = f"file://{tmp_path}/store"
    broker = tiered_broker(brokers, url, shard_count=2)
    topic = topic_that_moves(4, TWO, THREE)
    broker.controller.create_topic(topic, 4, TIERED)
    partition = partition_on(topic, "shard-2", THREE)
    old = broker.owner(topic, partition)
    end_offset = produce_values(broker, topic, partition)
    broker.controller.add_shards(1)
    topic_id = broker.metadata_on_disk().topics[topic].topic_id
    wait_until(lambda: broker.controller.describe_topic(topic).partition_info[partition]
               .size_bytes == 0, timeout_s=WAIT_S, interval_s=0.2)
    remote = list_remote_segments(open_remote_store(url), topic, topic_id, partition)
    # When status looks for ranges to prune (it does at every call)
    broker.controller.status()
    # Then the range is kept on its old owner (not a draining shard: it serves it from
    # the store), its remote segments are all still there, and every record reads back
    assert broker.metadata_on_disk().topics[topic].ranges_of(partition)[0] == (0, old)
    assert list_remote_segments(open_remote_store(url), topic, topic_id, partition) == remote
    assert read_all(broker.address(old), topic, partition, end_offset) == \
        [value(n) for n in range(end_offset)]


# --- Two draining shards sharing a sealed range (fake shards: what each says is set) -------

OLD, NEW = ("shard-2", "shard-3"), ("shard-0", "shard-1")


class FakeShard:
    """A shard handle whose answers the test sets: every sealed copy is wholly remote
    from offset 0 to 100, and ``covers`` is what its remote view covers."""

    def __init__(self, shard_id: str):
        self.shard_id = shard_id
        self.covers = False
        self.asked: list[list[tuple[int, int]]] = []

    def _answer(self, method: str, value) -> PendingCall:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(value)
        return PendingCall(self.shard_id, method, future)

    def tiered_sealed(self, pids):
        return self._answer("tiered_sealed", [TieredState(pid, True, 0, 100) for pid in pids])

    def covers_remote(self, pid, intervals, resync):
        self.asked.append(list(intervals))
        return self._answer("covers_remote", [self.covers] * len(intervals))

    def partition_infos(self, pids):
        return self._answer("partition_infos", [protocol.PartitionInfo(
            pid.partition, size_bytes=1000) for pid in pids])


class FakeShardSet(dict):
    def retire(self, shard_id: str) -> None:
        self.pop(shard_id)

    def directory(self, shard_id: str) -> str:
        return f"shards/{shard_id}"


def two_draining_shards_sharing_a_range() -> tuple[Rebalancer, BrokerMetadata, FakeShardSet]:
    """A factor-2 tiered topic sealed at 100 on shard-2 and shard-3, both removed."""
    topic = TopicMetadata(1, {"remote.storage.enable": "true"}, ["shard-2"], {}, 2,
                          {0: Leadership(OLD, "shard-2", 0, OLD)})
    topic.move_replicas(0, 100, OLD, Leadership(NEW, "shard-0", 1, NEW, 1))
    metadata = BrokerMetadata(shards=list(NEW), draining=list(OLD), topics={"t": topic})
    shards = FakeShardSet({s: FakeShard(s) for s in NEW + OLD})

    def save() -> None:
        assert metadata.problems() == []

    return Rebalancer(metadata, shards, save), metadata, shards


def test_of_two_draining_shards_sharing_a_range_the_last_waits_for_the_owner_to_cover_it():
    # Given two draining shards holding the same sealed range whole, in object storage,
    # and an owner whose remote view does not cover it yet
    rebalancer, metadata, shards = two_draining_shards_sharing_a_range()
    # When the drained shards are looked at
    rebalancer.retire_drained()
    # Then the first drops out (the other serves the range) and retires; the second
    # keeps it, since the owner cannot serve it yet, and says why
    assert metadata.topics["t"].ranges_of(0)[0] == (0, "shard-3", ("shard-3",))
    assert metadata.draining == ["shard-3"] and "shard-2" not in shards
    assert rebalancer.drain_reason("shard-3") == ("1 partition of tiered topics waiting for "
                                                   "their owner to list them in object storage")
    # When the owner's view covers it (after its re-sync), Then the range is tiered
    shards["shard-0"].covers = True
    rebalancer.retire_drained()
    assert metadata.topics["t"].ranges_of(0)[0] == (0, "")
    assert metadata.draining == [] and shards["shard-0"].asked[-1] == [(0, 100)]


def test_a_partition_back_on_its_old_owner_reads_the_removed_shards_range_in_its_gap(
        brokers, tmp_path):
    # Given a tiered partition that moved from its owner to an added shard (after 32
    # records), got 32 more there, and came back when that shard was removed
    broker = tiered_broker(brokers, f"file://{tmp_path}/store", shard_count=2)
    topic = topic_that_moves(4, TWO, THREE)
    broker.controller.create_topic(topic, 4, {**TIERED, "local.retention.bytes": "-1"})
    partition = partition_on(topic, "shard-2", THREE)
    owner = broker.owner(topic, partition)
    first = produce_values(broker, topic, partition)
    broker.controller.add_shards(1)
    for batch in range(BATCHES):
        start = first + batch * VALUES_PER_BATCH
        broker.produce(topic, partition, [value(n) for n in range(start, start + VALUES_PER_BATCH)])
    end_offset = 2 * first
    broker.controller.remove_shards(1)
    assert broker.owner(topic, partition) == owner
    # When the removed shard retires
    wait_until(lambda: retired(broker, "shard-2"), timeout_s=WAIT_S, interval_s=0.2)
    # Then the owner serves its own records from its disk and the removed shard's, in the
    # gap of its log, from the store: all of them, in order
    assert broker.metadata_on_disk().topics[topic].ranges_of(partition) == \
        [(0, owner), (first, ""), (end_offset, owner)]
    assert read_all(broker.address(owner), topic, partition, end_offset) == \
        [value(n) for n in range(end_offset)]
