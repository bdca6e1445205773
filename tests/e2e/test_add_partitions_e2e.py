"""Growing a topic (Admin.create_partitions, `plinth topic alter --partitions`, and Kafka's
CreatePartitions through the Kafka listener) on a real ``plinth serve``: the new partitions
take records, the old ones keep theirs, the count survives a restart, a consumer group is
given the new partitions, and a count that is not larger is refused with its numbers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from plinth import Admin, Consumer, Producer, topics
from plinth.errors import InvalidPartitionsError
from tests.conftest import Broker
from tests.support import free_port, unique_topic, wait_until

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def broker(ray_cluster, tmp_path_factory):
    port = free_port()
    started = Broker(tmp_path_factory.mktemp("grow"), ray_cluster, shards=2,
                     extra_args=("--kafka-listen", f"127.0.0.1:{port}"))
    started.kafka_address = f"127.0.0.1:{port}"
    started.start()
    yield started
    started.stop()


def _values(url: str, topic: str, partition: int) -> list[bytes]:
    with Consumer(broker=url, auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, partition)])
        with Admin(broker=url) as admin:
            end = admin.list_offsets(topic, partition).end_offset
        got: list[bytes] = []
        wait_until(lambda: got.extend(r.value for rs in consumer.poll(200).values() for r in rs)
                   or len(got) >= end, TIMEOUT_S, explain=lambda: f"{topic}[{partition}]: {got}")
        return got


def _produce(url: str, topic: str, by_partition: dict[int, bytes]) -> None:
    with Producer(broker=url) as producer:
        for future in [producer.send(topic, value, partition=p) for p, value in by_partition.items()]:
            future.get(timeout=TIMEOUT_S)


def test_a_grown_topic_takes_records_in_its_new_partitions_and_keeps_the_old_ones(broker):
    # Given a topic of 2 partitions with a record in each
    topic = unique_topic("grow")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=2)
        _produce(broker.url, topic, {0: b"old-0", 1: b"old-1"})
        # When it grows to 5
        info = admin.create_partitions(topic, 5)
        # Then it has 5, and a new producer writes to the new ones
        assert info.partitions == 5 and admin.describe_topic(topic).partitions == 5
    _produce(broker.url, topic, {2: b"new-2", 4: b"new-4"})
    assert _values(broker.url, topic, 0) == [b"old-0"]
    assert _values(broker.url, topic, 1) == [b"old-1"]
    assert _values(broker.url, topic, 2) == [b"new-2"]
    assert _values(broker.url, topic, 3) == []
    assert _values(broker.url, topic, 4) == [b"new-4"]


def test_a_count_not_above_the_topics_is_refused_with_both_numbers(broker):
    topic = unique_topic("grow")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=3)
        for count in (3, 2):
            with pytest.raises(InvalidPartitionsError, match=f"has 3 partitions; {count} requested"):
                admin.create_partitions(topic, count)
        with pytest.raises(InvalidPartitionsError, match="1 to"):
            admin.create_partitions(topic, 0)
        with pytest.raises(InvalidPartitionsError, match="internal"):
            admin.create_partitions(topics.OFFSETS_TOPIC, 1000)
        assert admin.describe_topic(topic).partitions == 3


def test_the_cli_grows_a_topic_and_says_what_it_has(broker):
    topic = unique_topic("grow")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=1)
    cli = [sys.executable, "-m", "plinth.cli", "--broker", broker.url, "topic", "alter", topic]
    grown = subprocess.run([*cli, "--partitions", "4"], capture_output=True, text=True, timeout=60)
    assert grown.returncode == 0, grown.stderr
    assert f"topic {topic} has 4 partitions" in grown.stdout
    shrunk = subprocess.run([*cli, "--partitions", "2"], capture_output=True, text=True, timeout=60)
    assert shrunk.returncode != 0
    assert "has 4 partitions; 2 requested" in shrunk.stderr + shrunk.stdout
    neither = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert neither.returncode != 0 and "--partitions" in neither.stderr


def test_a_consumer_group_is_given_the_new_partitions(broker):
    # Given a group of one member that owns both partitions of a topic
    topic = unique_topic("grow")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=2)
    with Consumer(topic, broker=broker.url, group=unique_topic("g"),
                  auto_offset_reset="earliest") as consumer:
        wait_until(lambda: consumer.poll(100) is not None and len(consumer.assignment()) == 2,
                   TIMEOUT_S, explain=lambda: f"assigned {consumer.assignment()}")
        # When the topic grows to 4 and a record goes to partition 3
        with Admin(broker=broker.url) as admin:
            admin.create_partitions(topic, 4)
        _produce(broker.url, topic, {3: b"in-a-new-partition"})
        # Then the member is given all 4 and reads the record
        got: list[bytes] = []
        wait_until(lambda: got.extend(r.value for rs in consumer.poll(200).values() for r in rs)
                   or b"in-a-new-partition" in got, TIMEOUT_S,
                   explain=lambda: f"got {got}, assigned {consumer.assignment()}")
        assert {tp.partition for tp in consumer.assignment()} == {0, 1, 2, 3}


def test_kafka_clients_grow_a_topic_through_create_partitions(broker):
    from kafka.admin import KafkaAdminClient, NewPartitions
    from kafka.errors import InvalidPartitionsError as KafkaInvalidPartitions

    topic = unique_topic("grow")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=2)
    client = KafkaAdminClient(bootstrap_servers=broker.kafka_address)
    try:
        # validate_only checks and changes nothing
        client.create_partitions({topic: NewPartitions(3)}, validate_only=True)
        with pytest.raises(KafkaInvalidPartitions):
            client.create_partitions({topic: NewPartitions(2)}, validate_only=True)
        with Admin(broker=broker.url) as admin:
            assert admin.describe_topic(topic).partitions == 2
        client.create_partitions({topic: NewPartitions(3)})
        with pytest.raises(KafkaInvalidPartitions):
            client.create_partitions({topic: NewPartitions(1)})
    finally:
        client.close()
    with Admin(broker=broker.url) as admin:
        assert admin.describe_topic(topic).partitions == 3


def _in_sync(url: str, topic: str) -> list[int]:
    with Admin(broker=url) as admin:
        return [len(p.in_sync_replicas) for p in admin.describe_topic(topic).partition_info]


def test_a_grown_replicated_topic_keeps_its_count_and_records_after_a_restart(ray_cluster,
                                                                              tmp_path):
    # Given a broker whose topics have 2 copies of each partition
    broker = Broker(tmp_path / "data", ray_cluster, shards=2, extra_args=(
        "--allow-replicas-on-one-node", "--default-replication-factor", "2")).start()
    try:
        topic = unique_topic("grow")
        with Admin(broker=broker.url) as admin:
            admin.create_topic(topic, partitions=1)
            # When a topic grows from 1 to 3 partitions and takes a record acks="all"
            admin.create_partitions(topic, 3)
        _produce(broker.url, topic, {2: b"kept"})
        # Then every new partition has both copies in sync
        assert _in_sync(broker.url, topic) == [2, 2, 2]
        # And after a restart the topic still has 3 partitions and the record
        assert broker.stop() == 0
        broker.start()
        with Admin(broker=broker.url) as admin:
            assert admin.describe_topic(topic).partitions == 3
        assert _values(broker.url, topic, 2) == [b"kept"]
        wait_until(lambda: _in_sync(broker.url, topic) == [2, 2, 2], TIMEOUT_S,
                   explain=lambda: f"in sync: {_in_sync(broker.url, topic)}")
    finally:
        broker.stop()
        broker.end_leftover_shards()
