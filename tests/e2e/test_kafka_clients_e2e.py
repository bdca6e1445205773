"""Unmodified Kafka clients against ``plinth serve --kafka-listen`` (issue 15).

One real broker (Ray, shards, the router and its Kafka listener) for the
module; every test has its own topic. The clients are kafka-python,
confluent-kafka (librdkafka) and aiokafka, as installed from PyPI; Plinth's
own client reads and writes the same topics, to show that either reads what
either wrote, byte for byte.
"""

from __future__ import annotations

import asyncio

import pytest

from plinth.client.admin import Admin
from plinth.client.consumer import Consumer
from plinth.client.producer import Producer
from tests.support import unique_topic, wait_until

TIMEOUT_S = 60
CONFLUENT_MESSAGES_TAKEN_MAX = 1000   # per consume() call
RECORDS = [
    (b"key-0", b"value-0", [("h1", b"one")], 1_700_000_000_000),
    (None, b"value-1 with a null key", [], 1_700_000_000_001),
    (b"key-2", None, [("h2", b"two"), ("h3", b"")], 1_700_000_000_002),
    (b"key-3", b"\x00\xff" * 500, [], 1_700_000_000_003),
]


def _create(broker, partitions: int = 1) -> str:
    topic = unique_topic("k")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=partitions)
    return topic


def _plinth_records(broker, topic: str, count: int, partition: int = 0) -> list:
    with Consumer(broker=broker.url, auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, partition)])
        consumer.seek_to_beginning((topic, partition))
        got = []
        wait_until(lambda: got.extend(r for rs in consumer.poll(200).values() for r in rs)
                   or len(got) >= count, TIMEOUT_S)
    return got


def _kafka_python_records(broker, topic: str, count: int, partition: int = 0) -> list:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=broker.kafka_address, enable_auto_commit=False,
                             consumer_timeout_ms=TIMEOUT_S * 1000)
    consumer.assign([TopicPartition(topic, partition)])
    consumer.seek_to_beginning()
    try:
        return [next(consumer) for _ in range(count)]
    finally:
        consumer.close()


def _as_tuples(records) -> list:
    return [(r.key, r.value, [(k, bytes(v)) for k, v in r.headers], r.timestamp_ms)
            for r in records]


# --- kafka-python ---------------------------------------------------------------

def test_kafka_python_produces_records_that_it_and_a_plinth_consumer_read_back_exactly(
        kafka_broker):
    from kafka import KafkaProducer

    topic = _create(kafka_broker)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.kafka_address, acks="all")
    offsets = [producer.send(topic, key=k, value=v, headers=h, timestamp_ms=t, partition=0)
               .get(TIMEOUT_S).offset for k, v, h, t in RECORDS]
    producer.close()
    assert offsets == [0, 1, 2, 3]

    got = _kafka_python_records(kafka_broker, topic, len(RECORDS))
    assert [(r.key, r.value, list(r.headers), r.timestamp) for r in got] == RECORDS
    assert [r.offset for r in got] == [0, 1, 2, 3]
    assert _as_tuples(_plinth_records(kafka_broker, topic, len(RECORDS))) == RECORDS


def test_kafka_python_with_acks_0_stores_every_record_of_a_burst_in_order(kafka_broker):
    from kafka import KafkaProducer

    # Given a kafka-python producer that waits for no acknowledgement
    topic = _create(kafka_broker)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.kafka_address, acks=0,
                             linger_ms=0, batch_size=1024)
    # When it sends a burst of 2,000 records (many produce requests in flight)
    for n in range(2000):
        producer.send(topic, value=b"%06d" % n, partition=0)
    producer.flush(TIMEOUT_S)
    producer.close()
    # Then the broker stored each of them, once, in order
    with Admin(broker=kafka_broker.url) as admin:
        wait_until(lambda: admin.list_offsets(topic, 0).end_offset >= 2000, TIMEOUT_S)
    got = _plinth_records(kafka_broker, topic, 2000)
    assert [r.value for r in got] == [b"%06d" % n for n in range(2000)]


def test_a_kafka_python_consumer_reads_what_a_plinth_producer_wrote_byte_for_byte(kafka_broker):
    topic = _create(kafka_broker)
    with Producer(broker=kafka_broker.url) as producer:
        for key, value, headers, timestamp_ms in RECORDS:
            producer.send(topic, value, key=key, partition=0, headers=headers or None,
                          timestamp_ms=timestamp_ms)
        producer.flush(TIMEOUT_S)
    got = _kafka_python_records(kafka_broker, topic, len(RECORDS))
    assert [(r.key, r.value, list(r.headers), r.timestamp) for r in got] == RECORDS


def test_kafka_python_sees_the_earliest_and_latest_offsets_of_a_partition(kafka_broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = _create(kafka_broker)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.kafka_address)
    for i in range(5):
        producer.send(topic, b"%d" % i, partition=0)
    producer.flush(TIMEOUT_S)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_address)
    tp = TopicPartition(topic, 0)
    assert consumer.beginning_offsets([tp]) == {tp: 0}
    assert consumer.end_offsets([tp]) == {tp: 5}
    consumer.close()


def test_kafka_python_admin_creates_lists_and_deletes_a_topic(kafka_broker):
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = unique_topic("admin")
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    assert topic in admin.list_topics()
    with Admin(broker=kafka_broker.url) as plinth_admin:
        assert plinth_admin.describe_topic(topic).partitions == 3
    admin.delete_topics([topic])
    wait_until(lambda: topic not in admin.list_topics(), TIMEOUT_S)
    admin.close()


def test_kafka_python_creates_several_topics_in_one_request_and_each_gets_its_own_answer(
        kafka_broker):
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    # Given one existing topic
    existing, first, second, third = (unique_topic(n) for n in ("old", "new1", "new2", "new3"))
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address)
    admin.create_topics([NewTopic(existing, num_partitions=1, replication_factor=1)])
    # When two new topics are created in one CreateTopics (one Plinth createTopics)
    admin.create_topics([NewTopic(first, num_partitions=2, replication_factor=1),
                         NewTopic(second, num_partitions=3, replication_factor=1)])
    # And then a new one beside the existing one (the batch fails: each is created alone)
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic(third, num_partitions=1, replication_factor=1),
                             NewTopic(existing, num_partitions=5, replication_factor=1)])
    # Then the new ones exist with their partitions, and the existing one is unchanged
    with Admin(broker=kafka_broker.url) as plinth_admin:
        assert [plinth_admin.describe_topic(t).partitions
                for t in (first, second, third, existing)] == [2, 3, 1, 1]
    admin.close()


# --- confluent-kafka (librdkafka) ------------------------------------------------

@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_confluent_kafka_produces_every_compression_type_and_both_clients_read_it(
        kafka_broker, compression):
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import Producer as KafkaProducer
    from confluent_kafka import TopicPartition

    topic = _create(kafka_broker)
    values = [b'{"event": "order", "id": %d, "amount": %d}' % (i, i * 7) for i in range(200)]
    producer = KafkaProducer({"bootstrap.servers": kafka_broker.kafka_address,
                              "compression.type": compression, "enable.idempotence": True,
                              "linger.ms": 5})
    for i, value in enumerate(values):
        producer.produce(topic, value, key=b"k%d" % i, partition=0)
    assert producer.flush(TIMEOUT_S) == 0

    consumer = KafkaConsumer({"bootstrap.servers": kafka_broker.kafka_address,
                              "group.id": unique_topic("g"), "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    wait_until(lambda: _poll_confluent(consumer, got) >= len(values), TIMEOUT_S)
    consumer.close()
    assert [m.value() for m in got] == values
    assert [m.key() for m in got] == [b"k%d" % i for i in range(len(values))]
    assert [r.value for r in _plinth_records(kafka_broker, topic, len(values))] == values


TRANSACTIONS_FAIL_WITHIN_S = 5   # librdkafka retried UNSUPPORTED_VERSION until its timeout


def test_a_transactional_confluent_kafka_producer_fails_at_once_with_a_fatal_error(
        kafka_broker):
    import time

    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka import Producer as KafkaProducer

    # Given a transactional producer (Plinth has no transactions)
    producer = KafkaProducer({"bootstrap.servers": kafka_broker.kafka_address,
                              "transactional.id": unique_topic("tx")})
    # When it initializes its transactions, allowing itself TIMEOUT_S
    started_s = time.monotonic()
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(TIMEOUT_S)
    # Then it fails within seconds, fatally, naming the transactional id's refusal
    assert time.monotonic() - started_s < TRANSACTIONS_FAIL_WITHIN_S
    error = raised.value.args[0]
    assert error.fatal()
    assert error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def _poll_confluent(consumer, got: list) -> int:
    """Take every message librdkafka holds, not one: wait_until sleeps between calls,
    so one message a call made each test read 20 records a second."""
    for message in consumer.consume(num_messages=CONFLUENT_MESSAGES_TAKEN_MAX, timeout=0.2):
        assert message.error() is None, message.error()
        got.append(message)
    return len(got)


# --- aiokafka ----------------------------------------------------------------------

def test_aiokafka_produces_and_consumes_with_keys_and_headers(kafka_broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = _create(kafka_broker)

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.kafka_address)
        await producer.start()
        try:
            for key, value, headers, timestamp_ms in RECORDS:
                await producer.send_and_wait(topic, value, key=key, partition=0,
                                             headers=headers, timestamp_ms=timestamp_ms)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.kafka_address,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            return [await asyncio.wait_for(consumer.getone(), TIMEOUT_S) for _ in RECORDS]
        finally:
            await consumer.stop()

    got = asyncio.run(run())
    assert [(r.key, r.value, list(r.headers), r.timestamp) for r in got] == RECORDS


def test_an_unknown_topic_is_not_created_by_a_kafka_producer_by_default(kafka_broker):
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    topic = unique_topic("unknown")
    producer = KafkaProducer(bootstrap_servers=kafka_broker.kafka_address, max_block_ms=3000)
    with pytest.raises(KafkaTimeoutError):
        producer.send(topic, b"x").get(TIMEOUT_S)
    producer.close()
    with Admin(broker=kafka_broker.url) as admin:
        assert topic not in admin.list_topics()


def _config(broker, topic: str) -> dict[str, str]:
    with Admin(broker=broker.url) as admin:
        return admin.describe_topic(topic).config


def test_incremental_alter_configs_sets_and_deletes_topic_keys_from_librdkafka(kafka_broker):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource, ResourceType)

    topic = _create(kafka_broker)
    with Admin(broker=kafka_broker.url) as admin:
        default_bytes = admin.describe_topic(topic).config["retention.bytes"]
        admin.alter_topic(topic, {"retention.bytes": "1048576"})
    client = AdminClient({"bootstrap.servers": kafka_broker.kafka_address})

    def alter(*entries, validate_only=False):
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
        future = client.incremental_alter_configs([resource], validate_only=validate_only)
        return future[resource].result(TIMEOUT_S)

    set_ms = ConfigEntry("retention.ms", "3600000",
                         incremental_operation=AlterConfigOpType.SET)
    delete_bytes = ConfigEntry("retention.bytes", None,
                               incremental_operation=AlterConfigOpType.DELETE)
    # validate_only changes nothing
    alter(set_ms, delete_bytes, validate_only=True)
    assert _config(kafka_broker, topic)["retention.bytes"] == "1048576"
    alter(set_ms, delete_bytes)
    config = _config(kafka_broker, topic)
    assert (config["retention.ms"], config["retention.bytes"]) == ("3600000", default_bytes)
    # A bad value, an unknown key and APPEND are refused with INVALID_CONFIG, naming them
    for entry, says in ((ConfigEntry("retention.ms", "soon",
                                     incremental_operation=AlterConfigOpType.SET), "retention.ms"),
                        (ConfigEntry("retention.hours", "1",
                                     incremental_operation=AlterConfigOpType.SET), "retention.hours"),
                        (ConfigEntry("cleanup.policy", "compact",
                                     incremental_operation=AlterConfigOpType.APPEND), "not a list")):
        with pytest.raises(KafkaException) as refused:
            alter(entry, validate_only=False)
        assert refused.value.args[0].name() == "INVALID_CONFIG" and says in str(refused.value)
    assert _config(kafka_broker, topic)["retention.ms"] == "3600000"
    # A broker's configs are its command-line options
    broker_id = next(iter(client.list_topics(timeout=TIMEOUT_S).brokers))
    broker = ConfigResource(ResourceType.BROKER, str(broker_id), incremental_configs=[
        ConfigEntry("num.partitions", "3", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as refused:
        client.incremental_alter_configs([broker])[broker].result(TIMEOUT_S)
    assert refused.value.args[0].name() == "INVALID_REQUEST"
    assert "command-line options: read only" in str(refused.value)


def test_kafka_pythons_alter_configs_works_through_either_api(kafka_broker):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    topic = _create(kafka_broker)
    with Admin(broker=kafka_broker.url) as admin:
        defaults = admin.describe_topic(topic).config
        admin.alter_topic(topic, {"retention.bytes": "1048576"})
    client = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address)
    try:
        # AlterConfigs (the whole config): kafka-python re-sends the other keys the
        # topic has changed, so that only retention.ms changes
        whole = client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                     configs={"retention.ms": "7200000"})],
                                     incremental=False)
        assert whole == {"topic": {topic: "OK"}}
        assert _config(kafka_broker, topic) == {**defaults, "retention.ms": "7200000",
                                                "retention.bytes": "1048576"}
        # IncrementalAlterConfigs, which kafka-python picks by itself: DELETE
        deleted = client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={
            "retention.bytes": ("DELETE", None), "retention.ms": "60000"})])
        assert deleted == {"topic": {topic: "OK"}}
    finally:
        client.close()
    assert _config(kafka_broker, topic) == {**defaults, "retention.ms": "60000"}


def test_a_topics_max_message_bytes_refuses_larger_batches_from_either_client(kafka_broker):
    from confluent_kafka import KafkaException
    from confluent_kafka import Producer as KafkaProducer
    from confluent_kafka.admin import AdminClient, NewTopic

    from plinth.errors import RecordTooLargeError

    # Given a topic created by librdkafka's admin with max.message.bytes=2000 and
    # compression.type=producer (what Plinth does; another codec is refused)
    topic, other = unique_topic("maxmsg"), unique_topic("zstd")
    client = AdminClient({"bootstrap.servers": kafka_broker.kafka_address})
    client.create_topics([NewTopic(topic, 1, config={
        "max.message.bytes": "2000", "compression.type": "producer"})])[topic].result(TIMEOUT_S)
    with pytest.raises(KafkaException) as refused:
        client.create_topics([NewTopic(other, 1, config={"compression.type": "zstd"})])[
            other].result(TIMEOUT_S)
    assert refused.value.args[0].name() == "INVALID_CONFIG"
    assert "choose the codec with the producer's compression_type" in str(refused.value)
    # When librdkafka sends a 5,000-byte record, then a 100-byte one
    delivered = []
    producer = KafkaProducer({"bootstrap.servers": kafka_broker.kafka_address, "linger.ms": 0})
    for value in (b"x" * 5000, b"y" * 100):
        producer.produce(topic, value, on_delivery=lambda error, message: delivered.append(
            error and error.name()))
        producer.flush(TIMEOUT_S)
    # Then the first is refused with MSG_SIZE_TOO_LARGE and the second stored
    assert delivered == ["MSG_SIZE_TOO_LARGE", None]
    # And Plinth's producer is refused too, told the key and its value
    with Producer(broker=kafka_broker.url) as plinth_producer:
        with pytest.raises(RecordTooLargeError, match="over the topic's max.message.bytes=2000"):
            plinth_producer.send(topic, b"x" * 5000).get(timeout=TIMEOUT_S)
    with Admin(broker=kafka_broker.url) as admin:
        info = admin.describe_topic(topic)
    assert info.partition_info[0].end_offset == 1
    assert info.config["max.message.bytes"] == "2000"


def test_describe_configs_shows_a_topics_defaults_and_the_brokers_listener(kafka_broker):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    topic = _create(kafka_broker)
    with Admin(broker=kafka_broker.url) as admin:
        admin.alter_topic(topic, {"retention.ms": "3600000"})
    client = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address)
    broker_id = client._client.least_loaded_node()
    configs = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic),
                                       ConfigResource(ConfigResourceType.BROKER, broker_id)],
                                      config_filter="all")
    client.close()
    topic_configs, broker = configs["topic"][topic], configs["broker"][str(broker_id)]
    assert topic_configs["retention.ms"]["value"] == "3600000"
    assert topic_configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    assert topic_configs["retention.bytes"]["config_source"] == "DEFAULT_CONFIG"
    # Every key a topic has, stored or not: what Plinth does, and a factor-1 topic's
    # replication keys
    assert {key: (topic_configs[key]["value"], topic_configs[key]["config_source"])
            for key in ("cleanup.policy", "compression.type", "message.timestamp.type",
                        "min.insync.replicas", "unclean.leader.election.enable")} == {
        "cleanup.policy": ("delete", "DEFAULT_CONFIG"),
        "compression.type": ("producer", "DEFAULT_CONFIG"),
        "message.timestamp.type": ("CreateTime", "DEFAULT_CONFIG"),
        "min.insync.replicas": ("1", "DEFAULT_CONFIG"),
        "unclean.leader.election.enable": ("false", "DEFAULT_CONFIG")}
    assert broker["advertised.listeners"]["value"] == f"PLAINTEXT://{kafka_broker.kafka_address}"
    assert broker["auto.create.topics.enable"]["value"] == "false"
