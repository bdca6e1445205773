"""Kafka's ElectLeaders against a real ``plinth serve --kafka-listen``
(router/kafka/api_elections.py): kafka-python's and confluent-kafka's elect_leaders
on a factor-1 topic (no election needed), on an unknown topic, with an unknown
election type; and a replicated topic whose preferred leader's shard was killed
and came back, which a Kafka preferred election gives back to it.

One broker for the module (Ray, three shards on one node, replicas allowed to share
it, no automatic leader rebalance so that only the test's elections move leaders),
each test with its own topics; the replicated test kills a shard, so it runs last.
"""

from __future__ import annotations


import pytest

from plinth.client.admin import Admin
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.messages import ELECT_LEADERS
from tests.conftest import Broker
from tests.e2e.test_kafka_admin_e2e import raw_request
from tests.shard_processes import kill_after_failover, shard_pids
from tests.support import free_port, unique_topic, wait_until

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def elect_kafka(ray_cluster, tmp_path_factory):
    port = free_port()
    broker = Broker(tmp_path_factory.mktemp("kafka-elect"), ray_cluster, shards=3, extra_args=(
        "--allow-replicas-on-one-node", "--no-auto-leader-rebalance",
        "--kafka-listen", f"127.0.0.1:{port}"))
    broker.kafka_address = f"127.0.0.1:{port}"
    broker.start()
    yield broker
    broker.stop()
    broker.end_leftover_shards()


@pytest.fixture(scope="module")
def kafka_admin(elect_kafka):
    from kafka.admin import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=elect_kafka.kafka_address,
                              request_timeout_ms=TIMEOUT_S * 1000)
    yield client
    client.close()


def confluent_admin(broker):
    """confluent-kafka's AdminClient, whose elect_leaders takes no keyword arguments
    (2.16.1's binding raises SystemError on request_timeout or operation_timeout): its
    wait is socket.timeout.ms, 60 s."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": broker.kafka_address})


def create(broker, partitions: int, replication_factor: int = 1) -> str:
    topic = unique_topic("kelect")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions, replication_factor=replication_factor)
    return topic


def codes(response) -> dict[tuple[str, int], int]:
    """kafka-python's ElectLeaders response: (topic, partition) -> error code."""
    return {(r.topic, p.partition_id): p.error_code
            for r in response.replica_election_results for p in r.partition_result}


def test_kafka_python_hears_no_election_is_needed_for_each_partition_of_a_factor_1_topic(
        elect_kafka, kafka_admin):
    topic = create(elect_kafka, 2)
    response = kafka_admin.elect_leaders(0, {topic: [0, 1]})
    assert response.error_code == kafka.NONE
    assert codes(response) == {(topic, 0): kafka.ELECTION_NOT_NEEDED,
                               (topic, 1): kafka.ELECTION_NOT_NEEDED}


def test_kafka_python_hears_an_unknown_topic_is_unknown(elect_kafka, kafka_admin):
    missing = unique_topic("kelect-missing")
    response = kafka_admin.elect_leaders(0, {missing: [0]}, raise_errors=False)
    assert codes(response) == {(missing, 0): kafka.UNKNOWN_TOPIC_OR_PARTITION}


def test_confluent_kafka_hears_the_same_for_a_factor_1_topic_and_an_unknown_one(elect_kafka):
    from confluent_kafka import ElectionType, TopicPartition

    topic, missing = create(elect_kafka, 2), unique_topic("kelect-missing")
    asked = [TopicPartition(topic, 0), TopicPartition(topic, 1), TopicPartition(missing, 0)]
    admin = confluent_admin(elect_kafka)   # held: a collected client cancels its futures
    result = admin.elect_leaders(ElectionType.PREFERRED, asked).result(TIMEOUT_S)
    found = {(tp.topic, tp.partition): None if error is None else error.code()
             for tp, error in result.items()}
    assert found == {(topic, 0): kafka.ELECTION_NOT_NEEDED, (topic, 1): kafka.ELECTION_NOT_NEEDED,
                     (missing, 0): kafka.UNKNOWN_TOPIC_OR_PARTITION}


@pytest.mark.parametrize("version", [1, 2])
def test_an_unknown_election_type_is_an_invalid_request_electing_nothing(elect_kafka, version):
    topic = create(elect_kafka, 1)
    answer = raw_request(elect_kafka, ELECT_LEADERS, version, {
        "election_type": 7, "topic_partitions": [{"topic": topic, "partitions": [0]}],
        "timeout_ms": TIMEOUT_S * 1000})
    assert answer["error_code"] == kafka.INVALID_REQUEST
    [result] = answer["replica_election_results"]
    [partition] = result["partition_result"]
    assert (result["topic"], partition["partition_id"], partition["error_code"]) == \
        (topic, 0, kafka.INVALID_REQUEST)
    assert "election type 7" in partition["error_message"]


def test_a_v0_request_is_a_preferred_election(elect_kafka):
    topic = create(elect_kafka, 1)
    answer = raw_request(elect_kafka, ELECT_LEADERS, 0, {
        "topic_partitions": [{"topic": topic, "partitions": [0]}], "timeout_ms": 30_000})
    assert answer["replica_election_results"] == [{"topic": topic, "partition_result": [
        {"partition_id": 0, "error_code": kafka.ELECTION_NOT_NEEDED,
         "error_message": f"{topic}-0 has one copy, on "
                          f"{answer_leader(elect_kafka, topic)}; it needs no election"}]}]


def answer_leader(broker, topic: str) -> str:
    with Admin(broker=broker.url) as admin:
        return admin.describe_topic(topic).partition_info[0].shard


def test_a_kafka_preferred_election_gives_partitions_back_to_their_restarted_leader(
        elect_kafka, kafka_admin):
    # Given a factor-3 topic on three shards
    topic = create(elect_kafka, 2, replication_factor=3)
    with Admin(broker=elect_kafka.url) as admin:
        preferred = {p.partition: p.replicas[0]
                     for p in admin.describe_topic(topic).partition_info}
        # When partition 0's preferred leader's shard is killed, Ray restarts it, and it
        # rejoins the in-sync set of both partitions, but leads neither
        killed = preferred[0]
        kill_after_failover(
            wait_until(lambda: shard_pids(elect_kafka.data_dir).get(killed), timeout_s=TIMEOUT_S),
            lambda: all(p.shard != killed for p in admin.describe_topic(topic).partition_info),
            timeout_s=TIMEOUT_S)

        def back_in_sync_not_leading() -> bool:
            infos = admin.describe_topic(topic).partition_info
            return all(killed in p.in_sync_replicas and p.shard != killed for p in infos)
        wait_until(back_in_sync_not_leading, timeout_s=120,
                   explain=lambda: admin.describe_topic(topic).partition_info)
        # And kafka-python asks for a preferred election of both partitions
        response = kafka_admin.elect_leaders(0, {topic: [0, 1]})
        # Then partition 0 is elected (error 0), and each is led by its preferred leader
        assert response.error_code == kafka.NONE
        found = codes(response)
        assert found[(topic, 0)] == kafka.NONE
        assert found[(topic, 1)] == (kafka.NONE if preferred[1] == killed
                                     else kafka.ELECTION_NOT_NEEDED)
        assert {p.partition: p.shard for p in admin.describe_topic(topic).partition_info} == \
            preferred
    # And confluent-kafka's election of every partition lists neither (none is needed)
    from confluent_kafka import ElectionType
    confluent = confluent_admin(elect_kafka)
    everything = confluent.elect_leaders(ElectionType.PREFERRED, None).result(TIMEOUT_S)
    assert {(tp.topic, tp.partition) for tp in everything} & {(topic, 0), (topic, 1)} == set()
