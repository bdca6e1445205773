"""End to end: no bad call breaks a producer talking to a real broker.

Good send() calls interleaved with every bad one (tests/client/send_calls.py, as
tests/client/test_producer.py uses them), against a real ``plinth serve`` (real
Ray, ZeroMQ, shards, disk): every good send's future must resolve to the offset
where a consumer then reads its record, and nothing else may be stored.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plinth import Admin, Consumer, Producer
from plinth.aio import AIOProducer
from plinth.errors import RecordTooLargeError
from tests.client import send_calls
from tests.support import unique_topic

TOPICS = {"A": 3, "B": 1}     # renamed to fresh topics in each example
TIMEOUT_S = 60


def stored_records(url: str, topics: dict[str, int], expected: int) -> dict:
    """(topic, partition, offset) -> record, for every record in the topics."""
    with Consumer(*topics, broker=url, auto_offset_reset="earliest",
                  consumer_timeout_ms=10_000) as consumer:
        records = {}
        for record in consumer:
            records[(record.topic, record.partition, record.offset)] = record
            if len(records) == expected:
                break
    return records


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=send_calls.calls_with_every_bad_call(TOPICS),
       linger_ms=st.sampled_from([0, 20, 60_000]))
def test_no_bad_call_leaves_a_trace_on_a_real_broker(shared_broker, steps, linger_ms):
    # Given fresh topics on a real broker, and a producer
    names = {name: unique_topic("bad-calls") for name in TOPICS}
    topics = {names[name]: count for name, count in TOPICS.items()}
    with Admin(broker=shared_broker.url, request_timeout_ms=TIMEOUT_S * 1000) as admin:
        for topic, count in topics.items():
            admin.create_topic(topic, count)
        producer = Producer(broker=shared_broker.url, linger_ms=linger_ms)
        # When good sends, bad calls, flushes and perhaps a close are made
        try:
            sent = send_calls.run(producer, send_calls.renamed(steps, names))
        finally:
            producer.close(TIMEOUT_S)
        stored_count = sum(p.end_offset for topic in topics
                           for p in admin.describe_topic(topic).partition_info)
    # Then every good send resolved to the offset where its record is stored, and
    # nothing else was stored
    stored = stored_records(shared_broker.url, topics, stored_count)
    send_calls.check_stored(sent, lambda topic, p, offset: stored[(topic, p, offset)],
                            stored_count, topics, TIMEOUT_S)


# --- A topic whose max.message.bytes is below the producer's batches ---------------

SMALL_BATCH_BYTES = 2_000
VALUES = [b"%04d" % i + b"v" * 96 for i in range(500)]   # 50 kB: one default batch


def small_batch_topic(url: str) -> str:
    topic = unique_topic("split")
    with Admin(broker=url) as admin:
        admin.create_topic(topic, 1, config={"max.message.bytes": SMALL_BATCH_BYTES})
    return topic


def test_a_producer_splits_batches_a_topic_refuses_as_too_large_until_every_record_is_stored(
        shared_broker):
    # Given a topic taking batches of at most 2,000 bytes, and a producer whose batch
    # of 500 records of 100 bytes (its default batches hold 1 MiB) is far larger
    topic = small_batch_topic(shared_broker.url)
    with Producer(broker=shared_broker.url, linger_ms=60_000) as producer:
        futures = [producer.send(topic, value, partition=0) for value in VALUES]
        # When it is sent, and refused as too large
        producer.flush(TIMEOUT_S)
        offsets = [future.get(TIMEOUT_S).offset for future in futures]
        # Then a record too large alone still fails, naming the topic's limit
        too_large = producer.send(topic, b"x" * 5_000, partition=0)
        producer.flush(TIMEOUT_S)
        with pytest.raises(RecordTooLargeError, match="max.message.bytes=2000"):
            too_large.get(TIMEOUT_S)
    # And every record was stored once, in order, at the offset its future names
    assert offsets == list(range(len(VALUES)))
    stored = stored_records(shared_broker.url, {topic: 1}, len(VALUES))
    assert [stored[(topic, 0, offset)].value for offset in offsets] == VALUES


def test_the_asyncio_producer_splits_batches_a_topic_refuses_as_too_large(shared_broker):
    topic = small_batch_topic(shared_broker.url)

    async def produce() -> list[int]:
        async with AIOProducer(broker=shared_broker.url, linger_ms=60_000) as producer:
            futures = [await producer.send(topic, value, partition=0) for value in VALUES]
            await producer.flush()
            return [(await future).offset for future in futures]

    offsets = asyncio.run(asyncio.wait_for(produce(), TIMEOUT_S))
    assert offsets == list(range(len(VALUES)))
    stored = stored_records(shared_broker.url, {topic: 1}, len(VALUES))
    assert [stored[(topic, 0, offset)].value for offset in offsets] == VALUES
