"""Bounded memory on the client: a producer faster than the broker blocks up to
max_block_ms once buffer_memory is full, then raises; it never buffers without bound."""

from __future__ import annotations

import time

import pytest

from plinth import Admin, Producer
from plinth.errors import PlinthTimeoutError
from tests.support import unique_topic


def test_a_producer_blocks_for_max_block_ms_when_its_buffer_is_full_then_raises(broker_factory):
    broker = broker_factory(shards=1)
    topic = unique_topic("bp")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    producer = Producer(broker=broker.url, buffer_memory=100_000, max_block_ms=300,
                        request_timeout_ms=60_000, delivery_timeout_ms=120_000)
    try:
        producer.send(topic, b"first").get(30)   # metadata cached, broker known to work
        broker.kill()                            # now nothing is acknowledged any more
        value = b"v" * 1_000
        with pytest.raises(PlinthTimeoutError, match="buffer_memory=100000"):
            for _ in range(1_000):               # 1 MB: ten times the buffer
                started = time.monotonic()
                producer.send(topic, value)
        blocked_s = time.monotonic() - started
        assert 0.3 <= blocked_s < 5, blocked_s
    finally:
        producer.close(timeout=0.5)   # the broker is gone: don't wait for it
