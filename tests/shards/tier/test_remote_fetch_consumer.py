"""The client's Consumer reading a tiered partition through a real Router and a real
ShardServer (no Ray): remote offsets from 0, a short outage of the store, a range of
another shard's in a gap of the owner's log (issue 14: a removed shard's tiered
range), and an owner that has not listed the store yet."""

from __future__ import annotations

import time

import pytest
import zmq

from plinth import Consumer
from plinth.errors import OffsetOutOfRangeError, UnavailableError
from plinth.format.record_batch import BatchBuilder, summarize_batch
from plinth.router.router import Router
from plinth.shards.leader_epochs import LeaderEpochs
from plinth.shards.partition import Partition
from plinth.shards.tier.remote_log_metadata import RemoteLogMetadata
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.remote_transfer import LocalSegment, upload_segment
from tests.moto_s3 import MotoS3
from tests.router.fakes import FakeController
from tests.shard_requests import fetch_values, produce
from tests.shards.tier.test_remote_log_manager import running_shard
from tests.shards.tier.test_remote_log_manager import tiered as tiered_config
from tests.shards.tier.tiered_shard import TOPIC_ID, TieredShard, record_value, tiered
from tests.support import free_port, wait_until

WAIT_S = 60.0   # the bound on every wait here


@pytest.fixture
def moto():
    """An S3 server of this test's own, which it may stop."""
    server = MotoS3("plinth-consumer").start()
    yield server
    server.stop()


@pytest.fixture
def tiered_broker(moto, tmp_path, monkeypatch):
    """(router url, TieredShard, end offset, local start): partition t-0 on one shard,
    its first segments only in ``moto``, a Router in front."""
    for key, value in moto.env.items():
        monkeypatch.setenv(key, value)
    url = moto.url()
    shard = TieredShard(tmp_path / "shard", url)
    end_offset, local_start = tiered(shard, url, tmp_path)
    controller = FakeController({"shard-0": shard.server.address}, topics={"t": 1})
    router_url = f"tcp://127.0.0.1:{free_port()}"
    router = Router(router_url, controller, context=zmq.Context.instance())
    router.start(controller.routing())
    yield router_url, shard, end_offset, local_start
    router.stop()
    shard.close()


def read_until(consumer: Consumer, end_offset: int, until_s: float) -> dict[int, bytes]:
    values: dict[int, bytes] = {}
    while consumer.position("t", 0) < end_offset and time.monotonic() < until_s:
        for records in consumer.poll(200).values():
            values.update((record.offset, record.value) for record in records)
    return values


def test_a_consumer_reads_a_tiered_partition_from_offset_0_and_retries_through_a_store_outage(
        tiered_broker, moto):
    router_url, shard, end_offset, local_start = tiered_broker
    # Given a consumer of t-0 from offset 0, and the store down
    moto.stop()
    consumer = Consumer(broker=router_url, fetch_max_wait_ms=100, request_timeout_ms=10_000,
                        direct_to_shards=False)
    try:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        # When it polls while the shard answers its remote fetches unavailable
        deadline_s = time.monotonic() + WAIT_S
        while (shard.stats()["remote_fetch"]["errors"] < 2 and time.monotonic() < deadline_s):
            assert not consumer.poll(100), "records while the store is down"
        assert shard.stats()["remote_fetch"]["errors"] >= 2
        # Then it raises nothing, and keeps its position
        assert consumer.position("t", 0) == 0
        # And once the store is back it reads every record, byte for byte, in order
        moto.start()
        values = read_until(consumer, end_offset, time.monotonic() + WAIT_S)
        assert list(values) == list(range(end_offset))
        assert all(value == record_value(offset) for offset, value in values.items())
        assert shard.stats()["remote_fetch"]["fetches"] >= 2
    finally:
        consumer.close()


def value_at(offset: int) -> bytes:
    return f"value of offset {offset}".encode()


def upload_as_a_removed_shard(url: str, directory, start_offset: int, count: int) -> None:
    """Upload t-0's range [start_offset, start_offset + count) as a shard that held it
    sealed would have (its own log and journal under ``directory``), every segment."""
    part = Partition.open(directory / "t-0", "t", 0, tiered_config(), start_offset)
    for offset in range(start_offset, start_offset + count):
        builder = BatchBuilder()
        builder.append(None, value_at(offset), time.time_ns() // 1_000_000)
        batch = builder.build()
        part.append(batch, summarize_batch(batch))
    part.sealed = True
    part.roll_sealed()
    metadata, _ = RemoteLogMetadata.open(directory / "journal")
    try:
        for segment in part.log.segments[:-1]:
            upload_segment(open_remote_store(url), metadata, LocalSegment.of(
                segment, topic="t", topic_id=TOPIC_ID, partition=0,
                leader_epochs=LeaderEpochs()))
    finally:
        metadata.close()
        part.log.close()


def test_the_owner_reads_a_tiered_offset_in_its_local_gap_from_the_store(tmp_path):
    # Given a removed shard's range [10, 20) of t-0, only in the store, and its owner,
    # which held [0, 10) before it and took its writes back at 20 (a gap in its log)
    url = f"file://{tmp_path}/store"
    upload_as_a_removed_shard(url, tmp_path / "removed", 10, 10)
    with running_shard(tmp_path / "owner", url, tiered_config()) as owner:
        for offset in range(10):
            produce(owner.address, "t", 0, [value_at(offset)])
        owner.call(owner.seal_partition, "t", 0)
        owner.call(lambda: owner.open_partition("t", 0, tiered_config(), 20, topic_id=TOPIC_ID))
        for offset in range(20, 30):
            produce(owner.address, "t", 0, [value_at(offset)])
        assert owner.call(lambda: owner._partitions[("t", 0)].log.in_gap(10))
        wait_until(lambda: owner.call(
            lambda: owner._partitions[("t", 0)].remote.covers(10, 20)), timeout_s=WAIT_S)
        controller = FakeController({"shard-0": owner.address}, topics={"t": 1})
        router_url = f"tcp://127.0.0.1:{free_port()}"
        router = Router(router_url, controller, context=zmq.Context.instance())
        router.start(controller.routing())
        consumer = Consumer(broker=router_url, fetch_max_wait_ms=100, direct_to_shards=False)
        try:
            # When a consumer reads t-0 from offset 0 through the owner
            consumer.assign([("t", 0)])
            consumer.seek("t", 0, 0)
            values = read_until(consumer, 30, time.monotonic() + WAIT_S)
        finally:
            consumer.close()
            router.stop()
    # Then it reads every record in order, the gap's from the store, none skipped
    assert list(values) == list(range(30))
    assert all(value == value_at(offset) for offset, value in values.items())


def test_an_unsynced_view_answers_unavailable_not_out_of_range(tmp_path, monkeypatch):
    # Given a new owner of a tiered t-0 whose log starts at 50 (the older ranges are
    # in the store) and which cannot list the store
    unreachable = MotoS3()   # never started: its port refuses connections
    for key, value in unreachable.env.items():
        monkeypatch.setenv(key, value)
    with running_shard(tmp_path / "owner", unreachable.url()) as owner:
        owner.call(lambda: owner.open_partition("t", 0, tiered_config(), 50, topic_id=TOPIC_ID))
        produce(owner.address, "t", 0, [b"fifty"])
        # When a consumer fetches offset 0
        # Then the answer is retriable, naming the partition, not out of range (a
        # consumer would reset its position past records the store holds)
        with pytest.raises(UnavailableError, match="the remote log of t/0 is not listed yet"):
            fetch_values(owner.address, "t", 0, 0)
        # And a consumer polling it keeps its position
        controller = FakeController({"shard-0": owner.address}, topics={"t": 1})
        router_url = f"tcp://127.0.0.1:{free_port()}"
        router = Router(router_url, controller, context=zmq.Context.instance())
        router.start(controller.routing())
        consumer = Consumer(broker=router_url, fetch_max_wait_ms=100,
                            request_timeout_ms=10_000, direct_to_shards=False)
        try:
            consumer.assign([("t", 0)])
            consumer.seek("t", 0, 0)
            unavailable_before = owner.call(owner.stats_snapshot)["errors"].get("unavailable", 0)
            deadline_s = time.monotonic() + WAIT_S
            while owner.call(owner.stats_snapshot)["errors"].get("unavailable", 0) < \
                    unavailable_before + 2 and time.monotonic() < deadline_s:
                assert not consumer.poll(100)
            assert consumer.position("t", 0) == 0
        finally:
            consumer.close()
            router.stop()
    # And once the owner has listed the store (here empty), offset 0 is out of range
    with running_shard(tmp_path / "listed", f"file://{tmp_path}/store") as listed:
        listed.call(lambda: listed.open_partition("t", 0, tiered_config(), 50,
                                                  topic_id=TOPIC_ID))
        wait_until(lambda: listed.call(
            lambda: listed._tier.view_synced(listed._partitions[("t", 0)])), timeout_s=WAIT_S)
        with pytest.raises(OffsetOutOfRangeError):
            fetch_values(listed.address, "t", 0, 0)
