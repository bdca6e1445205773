"""Plinth's Producer(compression_type=...) against a real broker (issue 15): each batch
goes as a compressed Kafka RecordBatch, which the shard stores as sent; Plinth's
consumer and kafka-python's (through the Kafka listener) read every codec back exactly,
and the shard still recognises an idempotent producer's retry of a compressed batch.

One broker (Ray, two shards, the router and its Kafka listener) for the module; every
test has its own topic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import zmq

from plinth import protocol
from plinth.client.admin import Admin
from plinth.client.compression import COMPRESSION_TYPES, compressed_kafka_batch
from plinth.client.consumer import Consumer
from plinth.client.producer import Producer
from plinth.format.log_entry import BATCH_FORMAT_KAFKA_V2
from plinth.format.record_batch import BatchBuilder
from tests.support import unique_topic, wait_until

TIMEOUT_S = 60
RECORDS = 500
T0_MS = (time.time_ns() // 1_000_000) - 60_000


def events() -> list[tuple[bytes, bytes, list, int]]:
    """(key, value, headers, timestamp_ms) of RECORDS realistic JSON events."""
    return [(b"user-%d" % (i % 37),
             json.dumps({"event": "page_view", "user_id": i % 37, "path": f"/products/{i % 101}",
                         "referrer": "https://example.com/search?q=shoes", "ms": T0_MS + i}).encode(),
             [("trace-id", b"%032x" % i)] if i % 3 == 0 else [], T0_MS + i)
            for i in range(RECORDS)]


def produce_all(broker, topic: str, compression_type: str) -> None:
    with Producer(broker=broker.url, compression_type=compression_type, linger_ms=50) as producer:
        futures = [producer.send(topic, value, key=key, headers=headers or None, partition=0,
                                 timestamp_ms=timestamp_ms)
                   for key, value, headers, timestamp_ms in events()]
        producer.flush()
    assert [f.get(TIMEOUT_S).offset for f in futures] == list(range(RECORDS))


def plinth_read(broker, topic: str) -> list[tuple]:
    with Consumer(broker=broker.url) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek(topic, 0, 0)
        got = []
        wait_until(lambda: got.extend(r for rs in consumer.poll(200).values() for r in rs)
                   or len(got) >= RECORDS, TIMEOUT_S)
    return [(r.key, r.value, [(k, bytes(v)) for k, v in r.headers], r.timestamp_ms) for r in got]


@pytest.mark.parametrize("compression_type", list(COMPRESSION_TYPES))
def test_every_codec_round_trips_to_a_plinth_consumer_and_to_kafka_python(
        kafka_broker, compression_type):
    from kafka import KafkaConsumer, TopicPartition

    # Given records produced by Plinth's producer with the codec
    topic = unique_topic("kz")
    with Admin(broker=kafka_broker.url) as admin:
        admin.create_topic(topic, partitions=1)
    produce_all(kafka_broker, topic, compression_type)
    # Then Plinth's consumer reads every one back exactly
    assert plinth_read(kafka_broker, topic) == events()
    # And so does kafka-python, through the Kafka listener
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_address,
                             enable_auto_commit=False, consumer_timeout_ms=TIMEOUT_S * 1000)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        got = [next(consumer) for _ in range(RECORDS)]
    finally:
        consumer.close()
    assert [(r.key, r.value, [(k, bytes(v)) for k, v in r.headers], r.timestamp)
            for r in got] == events()
    assert [r.offset for r in got] == list(range(RECORDS))
    # And so does librdkafka (confluent-kafka)
    assert confluent_read(kafka_broker, topic) == [(key, value, timestamp_ms)
                                                   for key, value, _, timestamp_ms in events()]


def confluent_read(broker, topic: str) -> list[tuple]:
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import TopicPartition

    consumer = KafkaConsumer({"bootstrap.servers": broker.kafka_address,
                              "group.id": unique_topic("g"), "enable.auto.commit": False})
    got = []

    def poll() -> int:   # every message librdkafka holds: wait_until sleeps between calls
        for message in consumer.consume(num_messages=RECORDS, timeout=0.2):
            assert message.error() is None, message.error()
            got.append((message.key(), message.value(), message.timestamp()[1]))
        return len(got)

    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        wait_until(lambda: poll() >= RECORDS, TIMEOUT_S)
    finally:
        consumer.close()
    return got


def test_a_retry_of_a_compressed_idempotent_batch_is_answered_with_its_first_offset(
        kafka_broker):
    # Given a compressed Kafka batch as an idempotent producer sends it (id, sequence 0)
    topic = unique_topic("kz")
    with Admin(broker=kafka_broker.url) as admin:
        admin.create_topic(topic, partitions=1)
    builder = BatchBuilder()
    for key, value, _, timestamp_ms in events()[:10]:
        builder.append(key, value, timestamp_ms, None)
    batch = compressed_kafka_batch(builder.build(producer_id=4242, base_sequence=0),
                                   COMPRESSION_TYPES["zstd"])
    # When it is sent twice, as a retry after a lost reply would be
    offsets = [produce_raw(kafka_broker.url, topic, batch, request_id) for request_id in (1, 2)]
    # Then both get its first offsets, and it is stored once
    assert offsets == [0, 0]
    assert [row[1] for row in plinth_read_count(kafka_broker, topic, 10)] == \
        [value for _, value, _, _ in events()[:10]]
    with Admin(broker=kafka_broker.url) as admin:
        assert admin.list_offsets(topic, 0).end_offset == 10


def produce_raw(url: str, topic: str, batch: bytes, request_id: int) -> int:
    """One produce of ``batch`` in Kafka's format through the router; its base offset."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(url)
        sock.send_multipart([protocol.encode_produce(request_id, topic, 0, -1,
                                                     BATCH_FORMAT_KAFKA_V2), batch])
        assert sock.poll(TIMEOUT_S * 1000), "no reply from the router"
        reply = protocol.decode_reply(sock.recv_multipart()[0])
    finally:
        sock.close()
    assert reply.error is None, reply.error
    return reply.base_offset


def plinth_read_count(broker, topic: str, count: int) -> list[tuple]:
    with Consumer(broker=broker.url) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek(topic, 0, 0)
        got = []
        wait_until(lambda: got.extend(r for rs in consumer.poll(200).values() for r in rs)
                   or len(got) >= count, TIMEOUT_S)
    return [(r.key, r.value) for r in got]


def test_plinth_produce_compression_type_stores_lines_a_consumer_reads_back(kafka_broker):
    topic = unique_topic("kz")
    with Admin(broker=kafka_broker.url) as admin:
        admin.create_topic(topic, partitions=1)
    lines = "".join(f'{{"n": {i}, "event": "click"}}\n' for i in range(100))
    produced = plinth_cli(kafka_broker.url, "produce", topic, "--compression-type", "zstd",
                          stdin=lines)
    assert produced.returncode == 0, produced.stderr
    consumed = plinth_cli(kafka_broker.url, "consume", topic, "--from-beginning",
                          "--max-messages", "100", "--timeout-ms", "20000")
    assert consumed.stdout == lines, consumed.stderr
    refused = plinth_cli(kafka_broker.url, "produce", topic, "--compression-type", "brotli",
                         stdin="x\n")
    assert refused.returncode != 0 and "'brotli' is not one of" in refused.stderr


def plinth_cli(url: str, *args: str, stdin: str | None = None, timeout_s: float = 120):
    env = dict(os.environ, PLINTH_BROKER=url)
    return subprocess.run([sys.executable, "-m", "plinth.cli", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=timeout_s)
