"""The Kafka fetch's long poll against a real broker (tester J, D1): a consumer with
a long max wait (KafkaJS's default 5 s) and min bytes 1 on a topic of many
partitions gets each record as it arrives, in whichever partition, not up to
max_wait_ms late.

Each of the consumer's fetches is answered early by the first record, while its
other partitions' Plinth fetches stay parked at their shards; the consumer's next
fetch must take those over (router/kafka/api_fetch.py). Before it did, they piled
up until the listener's fetch bytes in flight were spent, new parked fetches were
refused, and a record in a refused partition waited out the fetch's wait (16
partitions: KafkaJS p90 4.1 s).

One broker (Ray, two shards, the router and its Kafka listener) for the module.
This checks the long poll's correctness, not its speed: the bounds are far below
the 5 s wait and far above what a loaded 2-core machine needs.
"""

from __future__ import annotations

import threading
import time

import pytest

from plinth.client.admin import Admin
from tests.support import unique_topic

MAX_WAIT_MS = 5000
RECORDS = 32
GAP_S = 0.25
# Every record well under the fetch's wait; most within a few hundred ms.
EACH_MAX_MS = 1500
MEDIAN_MAX_MS = 400


def _latencies_ms(broker, partitions: int) -> list[float]:
    """Send→receive time of RECORDS records sent one at a time, GAP_S apart, to a
    kafka-python consumer of every partition (fetch_max_wait_ms MAX_WAIT_MS,
    fetch_min_bytes 1) that has caught up and waits. The records go to four
    partitions in turn, spread over the topic, as a low-traffic topic's keys do: the
    others stay idle, so their parked fetches are never woken by a record."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = unique_topic("klongpoll")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=partitions)
    consumer = KafkaConsumer(bootstrap_servers=broker.kafka_address, enable_auto_commit=False,
                             fetch_max_wait_ms=MAX_WAIT_MS, fetch_min_bytes=1,
                             request_timeout_ms=MAX_WAIT_MS + 30_000)
    producer = KafkaProducer(bootstrap_servers=broker.kafka_address, linger_ms=0, acks=1)
    assigned = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_end()
    for tp in assigned:
        consumer.position(tp)   # resolved now, so its fetches park from the first
    latencies: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set() and len(latencies) < RECORDS:
            for records in consumer.poll(100).values():
                now_ms = time.time() * 1000
                latencies.extend(now_ms - float(record.value) for record in records)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        time.sleep(1.5)   # its fetches are parked by now
        for index in range(RECORDS):
            partition = index % 4 * partitions // 4
            producer.send(topic, str(time.time() * 1000).encode(), partition=partition).get(30)
            time.sleep(GAP_S)
        reader.join(timeout=2 * MAX_WAIT_MS / 1000 + 10)
    finally:
        stop.set()
        reader.join(timeout=10)
        producer.close()
        consumer.close()
    return latencies


@pytest.mark.parametrize("partitions", [16, 48])
def test_a_long_polling_kafka_consumer_gets_each_record_as_it_arrives_in_any_partition(
        kafka_broker, partitions):
    # Given a kafka-python consumer of every partition, caught up, fetching with a
    # 5 s max wait and min bytes 1
    # When records are produced one at a time to partition after partition, a few
    # of them busy and the others idle
    latencies = sorted(_latencies_ms(kafka_broker, partitions))
    print(f"{partitions} partitions: send-to-receive ms {[round(ms) for ms in latencies]}")
    # Then every one arrives, each far sooner than the fetch's wait
    assert len(latencies) == RECORDS
    assert latencies[-1] < EACH_MAX_MS, latencies
    assert latencies[len(latencies) // 2] < MEDIAN_MAX_MS, latencies
