"""Quotas against a real broker with CurveZMQ: two clients on one topic, one over its
produce or fetch byte rate (issue 11, finding 9). The one over its quota is slowed to
about its rate and never fails; its replies say by how much; the other one is not
throttled. Rates are measured over a few seconds and asserted with wide margins."""

from __future__ import annotations

import threading
import time

import pytest

from plinth import Admin, Consumer, Producer, protocol
from plinth.client.connection import Connection, broker_address
from plinth.format.record_batch import BatchBuilder
from tests.conftest import Broker
from tests.e2e.test_security_e2e import secure_options

QUOTA = 256 * 1024            # bytes/s, produce and fetch, of the "slow" key
DURATION_S = 8.0
# The most the slow key may get: its quota plus the burst (1 s of it) spread over the
# run, with room to spare. The other key only has to go faster than this: a timed
# bound on it would fail on a busy machine without saying anything about quotas.
SLOW_RATE_MAX = 1.5 * QUOTA
VALUE = bytes(1000)


@pytest.fixture(scope="module")
def quota_broker(ray_cluster, tmp_path_factory):
    """A broker where "slow" has both quotas and "fast" none, both every topic operation."""
    directory = tmp_path_factory.mktemp("quotas")
    grants = [{"operations": ["produce", "consume", "admin"], "topics": "q.*"}]
    extra_args, options = secure_options(directory, ["slow", "fast"], lambda k: {
        k["slow"]: grants, k["fast"]: grants,
        "quotas": {k["slow"]: {"producer_byte_rate": QUOTA, "consumer_byte_rate": QUOTA}}})
    broker = Broker(directory / "data", ray_cluster, shards=1, extra_args=extra_args).start()
    yield broker, options
    broker.stop()


class Flood(threading.Thread):
    """A producer sending VALUE to partition 0 as fast as it may for DURATION_S; counts
    the bytes acknowledged by then, and every error."""

    def __init__(self, url: str, topic: str, options: dict):
        super().__init__(daemon=True)
        self.url, self.topic, self.options = url, topic, options
        self.acked_bytes = 0
        self.acked_bytes_in_time: int | None = None
        self.errors: list[BaseException] = []

    def _acked(self, _metadata) -> None:
        self.acked_bytes += len(VALUE)

    def run(self) -> None:
        with Producer(broker=self.url, linger_ms=5, batch_bytes_max=64 * 1024,
                      buffer_memory=512 * 1024, **self.options) as producer:
            deadline_s = time.monotonic() + DURATION_S
            while time.monotonic() < deadline_s:
                producer.send(self.topic, VALUE, partition=0).add_callback(
                    self._acked).add_errback(self.errors.append)
            self.acked_bytes_in_time = self.acked_bytes

    def rate(self) -> float:
        return self.acked_bytes_in_time / DURATION_S


class Reader(threading.Thread):
    """A consumer reading a topic from its start for DURATION_S; counts the value bytes."""

    def __init__(self, url: str, topic: str, options: dict):
        super().__init__(daemon=True)
        self.url, self.topic, self.options = url, topic, options
        self.read_bytes = 0

    def run(self) -> None:
        with Consumer(self.topic, broker=self.url, auto_offset_reset="earliest",
                      **self.options) as consumer:
            deadline_s = time.monotonic() + DURATION_S
            while time.monotonic() < deadline_s:
                for records in consumer.poll(timeout_ms=200).values():
                    self.read_bytes += sum(len(record.value) for record in records)

    def rate(self) -> float:
        return self.read_bytes / DURATION_S


def run_side_by_side(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DURATION_S + 60)
        assert not thread.is_alive(), f"{thread} did not finish"


def throttle_times(url: str, options: dict, encode, payload=None, count: int = 1) -> list[int]:
    """``count`` raw requests, one after the other: each reply's throttleTimeMs."""
    conn = Connection(broker_address(url, **options))
    try:
        times = []
        for _ in range(count):
            request_id = conn.next_request_id()
            view, _ = conn.request(encode(request_id), request_id, 30_000, payload)
            times.append(view.throttle_time_ms)
        return times
    finally:
        conn.close()


def test_a_producer_over_its_quota_is_slowed_to_it_while_the_other_is_not_throttled(quota_broker):
    broker, options = quota_broker
    # Given a topic both keys may produce to, "slow" with a produce quota, "fast" without
    topic = "q.produce"
    with Admin(broker=broker.url, **options["fast"]) as admin:
        admin.create_topic(topic, 1)
    # When both produce to one partition as fast as they can, side by side
    slow, fast = Flood(broker.url, topic, options["slow"]), Flood(broker.url, topic, options["fast"])
    run_side_by_side(slow, fast)
    # Then neither saw an error; the slow one got about its quota (a 1 s burst on top),
    # and the other one was not held to it
    assert slow.errors == fast.errors == []
    assert 0.4 * QUOTA <= slow.rate() <= SLOW_RATE_MAX, slow.rate()
    assert fast.rate() > SLOW_RATE_MAX, fast.rate()
    # And a batch of 3 s of the quota is answered saying how long it was held (its
    # excess over the burst), to the slow key only
    batch = BatchBuilder()
    batch.append(None, bytes(3 * QUOTA), time.time_ns() // 1_000_000, None)
    encode = lambda request_id: protocol.encode_produce(request_id, topic, 0, 1)  # noqa: E731
    (slow_throttle_ms,) = throttle_times(broker.url, options["slow"], encode, batch.build())
    (fast_throttle_ms,) = throttle_times(broker.url, options["fast"], encode, batch.build())
    assert 1_500 <= slow_throttle_ms <= 5_000 and fast_throttle_ms == 0, (slow_throttle_ms,
                                                                         fast_throttle_ms)


def test_a_consumer_over_its_quota_is_slowed_to_it_while_the_other_is_not_throttled(quota_broker):
    broker, options = quota_broker
    topic = "q.fetch"
    # Given a topic holding more than either may read in the time
    with Admin(broker=broker.url, **options["fast"]) as admin:
        admin.create_topic(topic, 1)
    records = int(3 * QUOTA * DURATION_S / len(VALUE))
    with Producer(broker=broker.url, batch_bytes_max=64 * 1024, **options["fast"]) as producer:
        for _ in range(records):
            producer.send(topic, VALUE, partition=0)
    # When both read it from the start, side by side
    slow, fast = Reader(broker.url, topic, options["slow"]), Reader(broker.url, topic, options["fast"])
    run_side_by_side(slow, fast)
    # Then the slow one read about its quota (a 1 s burst on top), and the other one
    # was not held to it
    assert 0.4 * QUOTA <= slow.rate() <= SLOW_RATE_MAX, slow.rate()
    assert fast.rate() > SLOW_RATE_MAX, fast.rate()
    # And fetching on, the slow key's replies say how long its next fetch waits
    encode = lambda request_id: protocol.encode_fetch(  # noqa: E731
        request_id, topic, 0, 0, 4 * 1024 * 1024, 0)
    assert max(throttle_times(broker.url, options["slow"], encode, count=3)) > 0
    assert throttle_times(broker.url, options["fast"], encode, count=3) == [0, 0, 0]
