"""Several routers as several Kafka brokers (issue 15): every router's Kafka listener
is a broker in every Metadata answer, partitions' leaders and groups' coordinators are
spread over them, and a client may use any of them for any partition; a router killed
without a goodbye drops out of Metadata once it is silent (ROUTER_SILENT_S_MAX), so
no partition stays led by it."""

from __future__ import annotations

import pytest

from plinth import limits
from tests.support import free_port, unique_topic, wait_until

TIMEOUT_S = 60
PARTITIONS = 8


@pytest.fixture
def two_routers(broker_factory, router_factory):
    cluster = unique_topic("kc")
    server_kafka, router_kafka = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    broker_factory(shards=2, extra_args=("--cluster-name", cluster, "--kafka-listen",
                                         server_kafka))
    router = router_factory(cluster, ("--kafka-listen", router_kafka))
    return server_kafka, router_kafka, router


def _brokers(admin) -> set[str]:
    return {f"{b['host']}:{b['port']}" for b in admin.describe_cluster()["brokers"]}


def _metadata_brokers(bootstrap: str) -> set[str] | None:
    """The brokers a Metadata answer from ``bootstrap`` names; None if none came."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
    except KafkaException:
        return None
    return {f"{b.host}:{b.port}" for b in metadata.brokers.values()}


def test_every_router_is_a_broker_and_the_partitions_leaders_are_spread_over_them(two_routers):
    from kafka.admin import KafkaAdminClient, NewTopic

    server_kafka, router_kafka, _ = two_routers
    admin = KafkaAdminClient(bootstrap_servers=router_kafka)
    wait_until(lambda: _brokers(admin) == {server_kafka, router_kafka}, TIMEOUT_S,
               explain=lambda: f"brokers: {_brokers(admin)}")
    assert all(address.startswith("127.") for address in _brokers(admin))
    topic = unique_topic("spread")
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    [described] = admin.describe_topics([topic])
    leaders = {p["leader_id"] for p in described["partitions"]}
    node_ids = {b["broker_id"] for b in admin.describe_cluster()["brokers"]}
    assert leaders == node_ids
    admin.close()


def test_describe_log_dirs_lists_each_partition_once_under_the_router_metadata_names_leader(
        two_routers):
    from kafka.admin import KafkaAdminClient, NewTopic

    server_kafka, router_kafka, _ = two_routers
    admin = KafkaAdminClient(bootstrap_servers=server_kafka)
    wait_until(lambda: _brokers(admin) == {server_kafka, router_kafka}, TIMEOUT_S,
               explain=lambda: f"brokers: {_brokers(admin)}")
    topic = unique_topic("logdirs")
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    [described] = admin.describe_topics([topic])
    leaders = {p["partition_index"]: p["leader_id"] for p in described["partitions"]}
    # When every broker is asked for the topic's partitions
    listed = [(answer["broker"], p["partition_index"])
              for answer in admin.describe_log_dirs({topic: list(range(PARTITIONS))})
              for log_dir in answer["log_dirs"] for t in log_dir["topics"]
              for p in t["partitions"]]
    # Then each partition is listed once, by its leader: a sum over brokers counts it once
    assert sorted(listed, key=lambda b: b[1]) == sorted(
        ((leader, partition) for partition, leader in leaders.items()), key=lambda b: b[1])
    assert len({broker for broker, _ in listed}) == 2
    admin.close()


def test_records_produced_through_one_router_are_consumed_through_the_other(two_routers):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    server_kafka, router_kafka, _ = two_routers
    topic = unique_topic("across")
    admin = KafkaAdminClient(bootstrap_servers=server_kafka)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=router_kafka, acks="all")
    for i in range(200):
        producer.send(topic, b"%d" % i, key=b"k%d" % i)
    producer.flush(TIMEOUT_S)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=server_kafka, enable_auto_commit=False,
                             consumer_timeout_ms=TIMEOUT_S * 1000)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    values = sorted(int(next(consumer).value) for _ in range(200))
    consumer.close()
    assert values == list(range(200))


def test_a_killed_router_drops_out_of_metadata_and_every_partition_takes_records_again(two_routers):
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    # Given two routers as two Kafka brokers, and a topic led by both
    server_kafka, router_kafka, router = two_routers
    admin = KafkaAdminClient(bootstrap_servers=server_kafka)
    wait_until(lambda: _brokers(admin) == {server_kafka, router_kafka}, TIMEOUT_S,
               explain=lambda: f"brokers: {_brokers(admin)}")
    topic = unique_topic("killed")
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    # When the second router is killed with SIGKILL (it never says it stopped)
    router.kill()
    admin.close()
    # Then within ROUTER_SILENT_S_MAX and a few refreshes it is no broker any more, in
    # the Metadata the server's listener answers (asked by a fresh librdkafka client
    # each time: kafka-python's admin may send its next request to the dead broker)
    wait_until(lambda: _metadata_brokers(server_kafka) == {server_kafka},
               limits.ROUTER_SILENT_S_MAX + 5 * limits.ROUTING_REFRESH_INTERVAL_S + 20,
               interval_s=1, explain=lambda: f"brokers: {_metadata_brokers(server_kafka)}")
    # And a new Kafka producer's record to every partition is acknowledged
    producer = KafkaProducer(bootstrap_servers=server_kafka, acks="all", request_timeout_ms=15_000)
    futures = [producer.send(topic, b"v", partition=p) for p in range(PARTITIONS)]
    assert sorted(f.get(timeout=30).partition for f in futures) == list(range(PARTITIONS))
    producer.close()
