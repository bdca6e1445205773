"""Seek by time against a real broker (issue 15): Plinth's Consumer.offsets_for_times,
``plinth consume --from-time``, and kafka-python's offsets_for_times through the Kafka
listener, all answered exactly from the shards' time indexes (shards/time_lookup.py).

One broker (Ray, two shards, the router and its Kafka listener) for the module; every
test has its own topic, of records stamped a second apart from an hour ago, produced
as several batches so that a look-up lands inside a batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from plinth.client.admin import Admin
from plinth.client.consumer import Consumer, OffsetAndTimestamp
from plinth.client.producer import Producer
from plinth.router.kafka.messages import LIST_OFFSETS
from tests.support import unique_topic, wait_until

TIMEOUT_S = 60
RECORDS = 30
BATCH_RECORDS = 7
# Whole seconds, an hour ago: inside every default timestamp window and retention.
T0_MS = (time.time_ns() // 1_000_000_000 - 3600) * 1000
STEP_MS = 1000
PLINTH = [sys.executable, "-m", "plinth.cli"]


def stamped_topic(broker) -> str:
    """A one-partition topic of RECORDS records, record i stamped T0_MS + i * STEP_MS,
    valued b"v<i>", in batches of BATCH_RECORDS."""
    topic = unique_topic("ktime")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=1)
    with Producer(broker=broker.url, linger_ms=1000) as producer:
        for i in range(RECORDS):
            producer.send(topic, b"v%d" % i, partition=0, timestamp_ms=T0_MS + i * STEP_MS)
            if i % BATCH_RECORDS == BATCH_RECORDS - 1:
                producer.flush()
    return topic


def iso(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=timezone.utc).isoformat()


def plinth(url: str, *args: str, timeout_s: float = 120):
    env = dict(os.environ, PLINTH_BROKER=url)
    return subprocess.run(PLINTH + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout_s)


def test_a_plinth_consumer_finds_the_exact_record_at_a_time_and_reads_on_from_it(kafka_broker):
    # Given a topic of records stamped a second apart
    topic = stamped_topic(kafka_broker)
    with Consumer(broker=kafka_broker.url) as consumer:
        # When it asks for times on, between and past the records
        found = [consumer.offsets_for_times({(topic, 0): T0_MS + delta_ms})[(topic, 0)]
                 for delta_ms in (-5000, 0, 10 * STEP_MS, 10 * STEP_MS + 1, RECORDS * STEP_MS)]
        # Then each is the first record at or after it, with its timestamp; none past all
        assert found == [OffsetAndTimestamp(0, T0_MS), OffsetAndTimestamp(0, T0_MS),
                         OffsetAndTimestamp(10, T0_MS + 10 * STEP_MS),
                         OffsetAndTimestamp(11, T0_MS + 11 * STEP_MS), None]
        # And a seek there reads on from that record
        consumer.assign([(topic, 0)])
        consumer.seek(topic, 0, found[3].offset)
        got = []
        wait_until(lambda: got.extend(r for rs in consumer.poll(200).values() for r in rs)
                   or len(got) >= RECORDS - 11, TIMEOUT_S)
        assert [r.value for r in got] == [b"v%d" % i for i in range(11, RECORDS)]


def test_plinth_consume_from_time_prints_from_the_first_record_at_or_after_it(kafka_broker):
    topic = stamped_topic(kafka_broker)
    # When the command line consumes from the time of record 23 less half a second
    consumed = plinth(kafka_broker.url, "consume", topic, "--from-time",
                      iso(T0_MS + 23 * STEP_MS - 500), "--timeout-ms", "3000")
    # Then it prints records 23 on
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == [f"v{i}" for i in range(23, RECORDS)]
    # And with --partition, the same; past every record, nothing (it waits at the end)
    one = plinth(kafka_broker.url, "consume", topic, "--partition", "0", "--from-time",
                 iso(T0_MS + 28 * STEP_MS), "--timeout-ms", "3000")
    assert one.stdout.splitlines() == ["v28", "v29"], one.stderr
    past = plinth(kafka_broker.url, "consume", topic, "--from-time",
                  iso(T0_MS + RECORDS * STEP_MS), "--timeout-ms", "2000")
    assert (past.returncode, past.stdout) == (0, ""), past.stderr


@pytest.mark.parametrize("text, says", [
    ("yesterday", "'yesterday' is not an ISO 8601 time"),
    ("1969-12-31T23:59:59Z", "'1969-12-31T23:59:59Z' is -1000 ms since the epoch"),
])
def test_plinth_consume_refuses_a_bad_from_time_naming_it(kafka_broker, text, says):
    refused = plinth(kafka_broker.url, "consume", "any-topic", "--from-time", text)
    assert refused.returncode != 0
    assert "--from-time" in refused.stderr and says in refused.stderr


def test_kafka_python_offsets_for_times_finds_the_exact_record_through_the_kafka_listener(
        kafka_broker):
    from kafka import KafkaConsumer, TopicPartition

    # Given a topic of records stamped a second apart, written by Plinth's producer
    topic = stamped_topic(kafka_broker)
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_address,
                             enable_auto_commit=False, consumer_timeout_ms=TIMEOUT_S * 1000)
    try:
        # When kafka-python asks for a time inside a batch, and one past every record
        inside = consumer.offsets_for_times({tp: T0_MS + 16 * STEP_MS - 1})[tp]
        past = consumer.offsets_for_times({tp: T0_MS + RECORDS * STEP_MS})[tp]
        # Then the first is the exact record and its timestamp; the second none
        assert (inside.offset, inside.timestamp) == (16, T0_MS + 16 * STEP_MS)
        assert past is None
        # And a seek there reads on from that record
        consumer.assign([tp])
        consumer.seek(tp, inside.offset)
        values = [next(consumer).value for _ in range(RECORDS - 16)]
        assert values == [b"v%d" % i for i in range(16, RECORDS)]
        # And a negative time is refused by the client itself
        with pytest.raises(ValueError):
            consumer.offsets_for_times({tp: -1})
    finally:
        consumer.close()


def test_confluent_kafka_lists_offsets_by_time_and_max_timestamp_through_the_kafka_listener(
        kafka_broker):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    # Given a topic of records stamped a second apart, the largest timestamp also on
    # an earlier record than the last one
    topic = stamped_topic(kafka_broker)
    with Producer(broker=kafka_broker.url) as producer:
        producer.send(topic, b"late", partition=0, timestamp_ms=T0_MS + 100 * STEP_MS)
        producer.send(topic, b"after", partition=0, timestamp_ms=T0_MS + 5 * STEP_MS)
        producer.flush()
    admin = AdminClient({"bootstrap.servers": kafka_broker.kafka_address})
    tp = TopicPartition(topic, 0)

    def listed(spec):
        return admin.list_offsets({tp: spec}, request_timeout=TIMEOUT_S)[tp].result(TIMEOUT_S)

    # When librdkafka lists offsets by a time inside a batch, by MAX_TIMESTAMP (v7's -3)
    # and by a time past every record
    at_time = listed(OffsetSpec.for_timestamp(T0_MS + 12 * STEP_MS - 1))
    largest = listed(OffsetSpec.max_timestamp())
    past = listed(OffsetSpec.for_timestamp(T0_MS + 101 * STEP_MS))
    # Then each is Kafka's exact answer
    assert (at_time.offset, at_time.timestamp) == (12, T0_MS + 12 * STEP_MS)
    assert (largest.offset, largest.timestamp) == (RECORDS, T0_MS + 100 * STEP_MS)
    assert (past.offset, past.timestamp) == (-1, -1)


def test_list_offsets_v10_answers_earliest_local_and_latest_tiered_of_an_untiered_topic(
        kafka_broker):
    from tests.e2e.test_kafka_admin_e2e import raw_request

    # Given a topic of RECORDS records, on the shards' disks only
    topic = stamped_topic(kafka_broker)
    # When ListOffsets v10 asks for earliest local (-4), latest tiered (-5), earliest and
    # latest, with a timeout
    body = {"replica_id": -1, "isolation_level": 0, "timeout_ms": 5000, "topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1,
                                        "timestamp": t} for t in (-4, -5, -2, -1)]}]}
    answer = raw_request(kafka_broker, LIST_OFFSETS, 10, body)
    # Then the first on disk is the log's start, nothing is tiered, and the end follows
    got = [(p["error_code"], p["offset"]) for p in answer["topics"][0]["partitions"]]
    assert got == [(0, 0), (0, -1), (0, 0), (0, RECORDS)]


def test_kafka_python_infers_kafka_4_0_from_the_versions_the_listener_offers(kafka_broker):
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address,
                             request_timeout_ms=TIMEOUT_S * 1000)
    try:
        assert admin._client.check_version()[:2] == (4, 0)
    finally:
        admin.close()
