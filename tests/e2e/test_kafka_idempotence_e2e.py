"""Kafka's idempotent producer through a shard restart (issue 15).

An unmodified client with idempotence on (confluent-kafka's enable.idempotence,
kafka-python's and aiokafka's enable_idempotence) produces numbered records to one partition
while the shard actor that stores it is SIGKILLed: its requests in flight are
lost or time out, the client retries them with the same producer id and
sequence numbers, and the restarted shard, having recovered its producer state
from the log, takes each batch once. Afterwards the partition holds every
record exactly once, in the order sent, at offsets 0..N-1. The shard's process
is found as tests/e2e/test_supervision_e2e.py finds it (tests/shard_processes.py).
"""

from __future__ import annotations

import os
import signal


from plinth.client.admin import Admin
from tests.shard_processes import shard_pids
from tests.support import unique_topic, wait_until

TIMEOUT_S = 120          # a shard restart (Ray respawns the actor, the log recovers), then retries
KAFKA_SHARDS = 1         # the kafka_broker fixture's: one shard stores every partition,
                         # so the kill always hits the producer's
RECORDS = 3_000
KILL_AT = RECORDS // 4   # the kill comes while the rest is being sent


def _create(broker) -> str:
    topic = unique_topic("idem")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=1)
    return topic


def _kill_the_shard(broker) -> int:
    """SIGKILL the shard's process; returns its pid (the restart is awaited later)."""
    pids = wait_until(lambda: shard_pids(broker.data_dir).get("shard-0"), TIMEOUT_S)
    os.kill(pids, signal.SIGKILL)
    return pids


def _restarted(broker, old_pid: int) -> bool:
    return shard_pids(broker.data_dir).get("shard-0", old_pid) != old_pid


def _stored_values(broker, topic: str) -> list[tuple[int, bytes]]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=broker.kafka_address, enable_auto_commit=False,
                             consumer_timeout_ms=5_000)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    got = [(r.offset, r.value) for r in consumer]
    consumer.close()
    return got


def _expected() -> list[tuple[int, bytes]]:
    return [(i, b"n-%06d" % i) for i in range(RECORDS)]


def test_confluent_kafka_idempotent_records_survive_a_shard_kill_once_each_in_order(
        kafka_broker):
    from confluent_kafka import Producer

    topic = _create(kafka_broker)
    failures, delivered = [], []
    producer = Producer({"bootstrap.servers": kafka_broker.kafka_address,
                         "enable.idempotence": True, "linger.ms": 2, "batch.num.messages": 50,
                         "message.timeout.ms": TIMEOUT_S * 1000,
                         "request.timeout.ms": 10_000})

    def report(error, message):
        (failures if error is not None else delivered).append(error or message.offset())

    # Given an idempotent producer sending numbered records
    old_pid = None
    for i in range(RECORDS):
        producer.produce(topic, b"n-%06d" % i, partition=0, on_delivery=report)
        producer.poll(0)
        if i == KILL_AT:
            # When the shard dies with requests in flight, and the rest is sent meanwhile
            old_pid = _kill_the_shard(kafka_broker)
    assert producer.flush(TIMEOUT_S) == 0
    wait_until(lambda: _restarted(kafka_broker, old_pid), TIMEOUT_S)
    # Then every record was acknowledged and is stored once, in order
    assert failures == []
    assert sorted(delivered) == list(range(RECORDS))
    assert _stored_values(kafka_broker, topic) == _expected()


def test_kafka_python_idempotent_records_survive_a_shard_kill_once_each_in_order(kafka_broker):
    from kafka import KafkaProducer

    topic = _create(kafka_broker)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.kafka_address,
                             enable_idempotence=True, acks="all", linger_ms=2,
                             request_timeout_ms=10_000, delivery_timeout_ms=TIMEOUT_S * 1000)
    # Given an idempotent producer sending numbered records
    futures, old_pid = [], None
    for i in range(RECORDS):
        futures.append(producer.send(topic, b"n-%06d" % i, partition=0))
        if i == KILL_AT:
            # When the shard dies with requests in flight, and the rest is sent meanwhile
            old_pid = _kill_the_shard(kafka_broker)
    producer.flush(TIMEOUT_S)
    offsets = [f.get(TIMEOUT_S).offset for f in futures]
    producer.close()
    wait_until(lambda: _restarted(kafka_broker, old_pid), TIMEOUT_S)
    # Then every record was acknowledged at its place and is stored once, in order
    assert offsets == list(range(RECORDS))
    assert _stored_values(kafka_broker, topic) == _expected()


def test_aiokafka_idempotent_records_survive_a_shard_kill_once_each_in_order(kafka_broker):
    import asyncio

    from aiokafka import AIOKafkaProducer

    topic = _create(kafka_broker)

    async def produce() -> tuple[list[int], int]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.kafka_address,
                                    enable_idempotence=True, linger_ms=2,
                                    request_timeout_ms=10_000)
        await producer.start()
        try:
            # Given an idempotent producer sending numbered records
            futures, old_pid = [], None
            for i in range(RECORDS):
                futures.append(await producer.send(topic, b"n-%06d" % i, partition=0))
                if i == KILL_AT:
                    # When the shard dies with requests in flight, and the rest is sent
                    old_pid = _kill_the_shard(kafka_broker)
            done = await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT_S)
            return [m.offset for m in done], old_pid
        finally:
            await producer.stop()

    offsets, old_pid = asyncio.run(produce())
    wait_until(lambda: _restarted(kafka_broker, old_pid), TIMEOUT_S)
    # Then every record was acknowledged at its place and is stored once, in order
    assert offsets == list(range(RECORDS))
    assert _stored_values(kafka_broker, topic) == _expected()


def test_confluent_kafka_records_after_an_epoch_bump_are_stored_at_the_offsets_acknowledged(
        kafka_broker):
    """librdkafka bumps its producer epoch itself when a batch fails for good, and sends
    the next batch at sequence 0 without asking the broker: that batch must be stored,
    not taken for a retry of the first epoch's batch at sequence 0."""
    import time

    from confluent_kafka import Producer

    topic = _create(kafka_broker)
    outcomes = []
    producer = Producer({"bootstrap.servers": kafka_broker.kafka_address,
                         "enable.idempotence": True,
                         "on_delivery": lambda error, message: outcomes.append(
                             (message.value(), error is None, message.offset()))})
    year_ahead_ms = int(time.time() * 1000) + 365 * 86_400_000
    # Given an idempotent producer whose second record is refused for good (its
    # timestamp is past the topic's window), so that it bumps its epoch
    for value, timestamp in ((b"first", 0), (b"refused", year_ahead_ms), (b"second", 0),
                             (b"third", 0)):
        producer.produce(topic, value, partition=0, **({"timestamp": timestamp} if timestamp
                                                       else {}))
        assert producer.flush(30) == 0
    # Then each record acknowledged is stored at the offset it was acknowledged with
    acknowledged = [(offset, value) for value, ok, offset in outcomes if ok]
    assert [value for _, value in acknowledged] == [b"first", b"second", b"third"]
    assert [value for value, ok, _ in outcomes if not ok] == [b"refused"]
    assert _stored_values(kafka_broker, topic) == acknowledged
