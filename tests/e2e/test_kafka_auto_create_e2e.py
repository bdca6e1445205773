"""Kafka's auto.create.topics.enable (issue 15): ``--kafka-auto-create-topics`` creates
a topic a Kafka client asks for; without it (tests/e2e/test_kafka_clients_e2e.py) an
unknown topic stays unknown."""

from __future__ import annotations

from plinth.client.admin import Admin
from tests.support import free_port, unique_topic

TIMEOUT_S = 60


def test_a_kafka_producer_creates_the_topic_it_writes_to_when_auto_creation_is_on(
        broker_factory):
    from kafka import KafkaProducer

    kafka_address = f"127.0.0.1:{free_port()}"
    broker = broker_factory(extra_args=("--kafka-listen", kafka_address,
                                        "--kafka-auto-create-topics"))
    topic = unique_topic("auto")
    producer = KafkaProducer(bootstrap_servers=kafka_address)
    metadata = producer.send(topic, b"first").get(TIMEOUT_S)
    producer.close()
    assert (metadata.topic, metadata.partition, metadata.offset) == (topic, 0, 0)
    with Admin(broker=broker.url) as admin:
        assert admin.describe_topic(topic).partitions == 1


def test_a_producer_to_a_name_no_topic_may_have_fails_at_once_and_nothing_is_tried(
        broker_factory):
    import time

    from confluent_kafka import KafkaError
    from confluent_kafka import Producer as KafkaProducer

    from plinth.router.kafka.messages import METADATA
    from tests.e2e.test_kafka_admin_e2e import raw_request

    # Given a broker that creates the topics Kafka clients ask for (unreplicated:
    # no __consumer_offsets topic)
    kafka_address = f"127.0.0.1:{free_port()}"
    broker = broker_factory(extra_args=("--kafka-listen", kafka_address,
                                        "--kafka-auto-create-topics"))
    broker.kafka_address = kafka_address
    names = ["bad name!", "x" * 300, "__consumer_offsets"]
    # When Metadata asks for names no topic may have, allowing their creation
    answer = raw_request(broker, METADATA, 9, {
        "topics": [{"name": n} for n in names], "allow_auto_topic_creation": True,
        "include_cluster_authorized_operations": False,
        "include_topic_authorized_operations": False})
    # Then each is INVALID_TOPIC_EXCEPTION, and none exists
    assert [(t["name"], t["error_code"]) for t in answer["topics"]] == [(n, 17) for n in names]
    with Admin(broker=broker.url) as admin:
        assert not set(names) & set(admin.list_topics())
    # And a producer to one fails within seconds, not after its message timeout
    failed: list = []
    producer = KafkaProducer({"bootstrap.servers": kafka_address})
    started_s = time.monotonic()
    producer.produce("bad name!", b"x", on_delivery=lambda err, msg: failed.append(err))
    producer.flush(TIMEOUT_S)
    assert time.monotonic() - started_s < 10
    assert [e.code() for e in failed] == [KafkaError.TOPIC_EXCEPTION]
