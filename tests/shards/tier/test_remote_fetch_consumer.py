"""The client's Consumer reading a tiered partition through a real Router and a real
ShardServer (no Ray): remote offsets from 0, and a short outage of the store."""

from __future__ import annotations

import time

import pytest
import zmq

from plinth import Consumer
from plinth.router.router import Router
from tests.moto_s3 import MotoS3
from tests.router.fakes import FakeController
from tests.shards.tier.tiered_shard import TieredShard, record_value, tiered
from tests.support import free_port

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
