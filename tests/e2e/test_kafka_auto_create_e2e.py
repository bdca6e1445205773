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
