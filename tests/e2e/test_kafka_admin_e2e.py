"""Kafka admin APIs that tools call, against a real ``plinth serve --kafka-listen``
(issue 15): DescribeLogDirs (router/kafka/api_log_dirs.py) and
DescribeTopicPartitions (api_cluster.py) and ListConfigResources (api_configs.py)
through kafka-python's KafkaAdminClient (confluent-kafka 2.16 has neither
describe_log_dirs nor a call that sends DescribeTopicPartitions), and the ACL APIs
of a broker without an ACL file (api_acls.py) through confluent-kafka and
kafka-python.

One broker (Ray, two shards, the router and its Kafka listener) for the module;
each test has its own topics; a test that stops a shard starts a broker of its own.
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import time
from contextlib import contextmanager

import pytest

from plinth.client.admin import Admin
from plinth.control.controller_handle import ControllerHandle
from plinth.errors import PlinthTimeoutError, UnknownTopicError
from plinth.router.kafka import codec
from plinth.router.kafka.error_codes import INVALID_REQUEST, REQUEST_TIMED_OUT, UNKNOWN_TOPIC_ID
from plinth.router.kafka.messages import (
    CREATE_ACLS, CREATE_PARTITIONS, CREATE_TOPICS, DELETE_ACLS, DELETE_TOPICS, DESCRIBE_ACLS,
    DESCRIBE_LOG_DIRS, DESCRIBE_TOPIC_PARTITIONS, LIST_CONFIG_RESOURCES, METADATA)
from tests.router.kafka.kafka_python_bridge import flexible, random_body
from plinth.client.producer import Producer
from plinth.server import namespace_for
from tests.shard_processes import shard_pids
from tests.support import free_port, unique_topic, wait_until

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def kafka_admin(kafka_broker):
    from kafka.admin import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address,
                              request_timeout_ms=TIMEOUT_S * 1000)
    yield client
    client.close()


def create(broker, partitions: int) -> str:
    topic = unique_topic("kadm")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=partitions)
    return topic


def raw_request(broker, api, version: int, body: dict) -> dict:
    """One request through the project's own codec on a fresh connection; the
    response body decoded."""
    with kafka_connection(broker) as sock:
        send_request(sock, api, version, body)
        return received_response(sock, api, version)


def kafka_connection(broker) -> socket.socket:
    host, _, port = broker.kafka_address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=TIMEOUT_S)


def send_request(sock: socket.socket, api, version: int, body: dict) -> None:
    sock.sendall(b"".join(bytes(b) for b in codec.encode_request(
        codec.RequestHeader(api.key, version, 7, "raw"), body)))


def received_response(sock: socket.socket, api, version: int) -> dict:
    size = int.from_bytes(received(sock, 4), "big")
    correlation_id, answer = codec.decode_response(api.key, version, received(sock, size))
    assert correlation_id == 7
    return answer


def received(sock, count: int) -> bytes:
    got = b""
    while len(got) < count:
        chunk = sock.recv(count - len(got))
        assert chunk, f"connection closed after {len(got)} of {count} bytes"
        got += chunk
    return got


def sizes(kafka_admin, topic_partitions) -> dict[tuple[str, int], int]:
    """(topic, partition) -> size in bytes, over every broker's log dirs."""
    found = {}
    for broker in kafka_admin.describe_log_dirs(topic_partitions):
        for log_dir in broker["log_dirs"]:
            assert log_dir["error_code"] == 0, log_dir
            for topic in log_dir["topics"]:
                for p in topic["partitions"]:
                    assert (p["offset_lag"], p["is_future_key"]) == (0, False)
                    found[(topic["name"], p["partition_index"])] = p["partition_size"]
    return found


def test_describe_log_dirs_names_the_data_dir_and_each_partitions_size_growing_with_records(
        kafka_broker, kafka_admin):
    # Given a topic of 2 partitions, empty
    topic = create(kafka_broker, partitions=2)
    before = sizes(kafka_admin, {topic: [0, 1]})
    assert set(before) == {(topic, 0), (topic, 1)}
    # Then the one log dir is the broker's data dir, on a volume with room
    [answer] = kafka_admin.describe_log_dirs({topic: [0]})
    [log_dir] = answer["log_dirs"]
    assert log_dir["log_dir"] == str(kafka_broker.data_dir.resolve())
    assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
    # When records go to partition 1 only
    with Producer(broker=kafka_broker.url) as producer:
        for i in range(200):
            producer.send(topic, b"x" * 500, partition=1)
        producer.flush()
    # Then partition 1 grows by at least the values' bytes, and partition 0 does not
    grown = wait_until(lambda: (lambda s: s if s[(topic, 1)] >= before[(topic, 1)] + 100_000
                                else None)(sizes(kafka_admin, {topic: [0, 1]})), TIMEOUT_S)
    assert grown[(topic, 0)] == before[(topic, 0)]


def test_describe_log_dirs_answers_only_the_partitions_asked_and_leaves_unknown_topics_out(
        kafka_broker, kafka_admin):
    topic, other = create(kafka_broker, partitions=3), create(kafka_broker, partitions=1)
    # A partition filter, a partition the topic lacks, and a topic that does not exist
    assert set(sizes(kafka_admin, {topic: [2, 7], unique_topic("missing"): [0]})) == {(topic, 2)}
    # No filter: every topic's every partition, these two among them
    every = sizes(kafka_admin, None)
    assert {(topic, 0), (topic, 1), (topic, 2), (other, 0)} <= set(every)


@pytest.mark.parametrize("version", [0, 4])
def test_describe_log_dirs_of_null_topics_lists_every_topic(kafka_broker, version):
    topic = create(kafka_broker, partitions=2)
    answer = raw_request(kafka_broker, DESCRIBE_LOG_DIRS, version, {"topics": None})
    [log_dir] = answer["results"]
    listed = {t["name"]: sorted(p["partition_index"] for p in t["partitions"])
              for t in log_dir["topics"]}
    assert listed[topic] == [0, 1]
    # v4 adds the volume's bytes (decoded as their default, -1, before it)
    assert (log_dir["total_bytes"] > 0) == (version >= 4)


def test_describe_topic_partitions_pages_through_partitions_as_metadata_describes_them(
        kafka_broker, kafka_admin):
    # Given two topics of 3 and 2 partitions, and Metadata's view of them
    first, second = sorted([create(kafka_broker, partitions=3), create(kafka_broker, partitions=2)])
    from confluent_kafka.admin import AdminClient

    listed = AdminClient({"bootstrap.servers": kafka_broker.kafka_address}).list_topics(
        timeout=TIMEOUT_S).topics   # librdkafka's Metadata request
    metadata = {(name, p.id): (p.leader, list(p.replicas), list(p.isrs))
                for name in (first, second) for p in listed[name].partitions.values()}
    # When kafka-python pages through them 2 partitions at a time
    seen, cursor, pages = {}, None, 0
    while pages == 0 or cursor is not None:
        answer = kafka_admin.describe_topic_partitions([second, first], 2, cursor)
        cursor, pages = answer["next_cursor"], pages + 1
        for topic in answer["topics"]:
            assert topic["error_code"] == 0, topic
            for p in topic["partitions"]:
                assert (topic["name"], p["partition_index"]) not in seen
                seen[(topic["name"], p["partition_index"])] = (
                    p["leader_id"], p["replica_nodes"], p["isr_nodes"])
        assert pages <= 5, "more pages than partitions"
    # Then 3 pages gave every partition once, with Metadata's leader, replicas and isr
    assert pages == 3
    assert seen == metadata


def test_describe_topic_partitions_of_an_unknown_topic_is_unknown_topic_or_partition(
        kafka_broker, kafka_admin):
    topic, missing = create(kafka_broker, partitions=1), unique_topic("missing")
    answer = kafka_admin.describe_topic_partitions([topic, missing])
    codes = {t["name"]: (t["error_code"], len(t["partitions"])) for t in answer["topics"]}
    assert codes == {topic: (0, 1), missing: (3, 0)}
    assert answer["next_cursor"] is None


def test_list_config_resources_lists_the_topics_and_brokers_that_describe_configs_answers(
        kafka_broker, kafka_admin):
    from kafka.admin import ConfigResource, ConfigResourceType

    # Given a topic, and the brokers a Kafka client is told of
    topic = create(kafka_broker, partitions=1)
    brokers = [str(b["broker_id"]) for b in kafka_admin.describe_cluster()["brokers"]]
    # When kafka-python lists the config resources, of every type and of one
    listed = kafka_admin.list_config_resources()
    # Then they are the topics, this one among them, and the brokers
    assert set(listed) == {"topic", "broker"} and topic in listed["topic"]
    assert sorted(listed["broker"]) == sorted(brokers)
    assert kafka_admin.list_config_resources(["BROKER"]) == {"broker": listed["broker"]}
    # And each of them is one DescribeConfigs answers
    described = kafka_admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic),
         ConfigResource(ConfigResourceType.BROKER, brokers[0])], config_filter="all")
    assert described["topic"][topic]["retention.ms"]
    assert described["broker"][brokers[0]]["advertised.listeners"]
    # And the types Plinth holds none of list nothing: groups, and client metrics (v0,
    # Kafka 3.7's ListClientMetricsResources)
    assert kafka_admin.list_config_resources(["GROUP", "CLIENT_METRICS"]) == {}
    assert raw_request(kafka_broker, LIST_CONFIG_RESOURCES, 0, {}) == \
        {"throttle_time_ms": 0, "error_code": 0, "config_resources": []}
    # And a type Kafka does not define is an invalid request
    assert raw_request(kafka_broker, LIST_CONFIG_RESOURCES, 1, {"resource_types": [3]}) == \
        {"throttle_time_ms": 0, "error_code": INVALID_REQUEST, "config_resources": []}


def test_without_an_acl_file_the_acl_apis_answer_security_disabled_saying_where_acls_come_from(
        kafka_broker, kafka_admin):
    import kafka.errors as errors
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       AdminClient, ResourcePatternType, ResourceType)
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, ResourcePatternFilter)
    from kafka.admin import ResourceType as KafkaPythonResourceType

    # kafka-python's describe_acls raises the answer's error and message
    with pytest.raises(errors.SecurityDisabledError, match="--acl FILE"):
        kafka_admin.describe_acls(ACLFilter(
            principal=None, host=None, operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(KafkaPythonResourceType.ANY, None,
                                                   ACLResourcePatternType.ANY)))
    # confluent-kafka's create_acls fails each binding with it
    admin = AdminClient({"bootstrap.servers": kafka_broker.kafka_address})
    binding = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:a", "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
    [future] = admin.create_acls([binding]).values()
    with pytest.raises(KafkaException) as raised:
        future.result(TIMEOUT_S)
    assert raised.value.args[0].name() == "SECURITY_DISABLED"
    assert "this broker has no ACL file" in raised.value.args[0].str()


NEW_APIS = (DESCRIBE_LOG_DIRS, DESCRIBE_TOPIC_PARTITIONS, DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS,
            LIST_CONFIG_RESOURCES)


@pytest.mark.parametrize("api", NEW_APIS, ids=lambda api: api.name)
def test_random_well_formed_requests_of_these_apis_are_answered_and_the_listener_lives_on(
        kafka_broker, api):
    # Given requests of every version with random values in every field (names, a
    # negative limit or cursor, enum numbers Kafka does not have, null filters)
    rng = random.Random(api.key)
    for version in range(api.versions[0], api.versions[1] + 1):
        for _ in range(6):
            body = random_body(rng, api.request, version, flexible(api, version))
            # When one is sent, Then an answer comes back that decodes (raw_request
            # asserts it), with no error left unexplained
            answer = raw_request(kafka_broker, api, version, body)
            assert_explained(answer)
    # And the listener still serves a real client
    from kafka.admin import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address)
    assert client.describe_cluster()["brokers"]
    client.close()


def assert_explained(answer) -> None:
    """Every non-zero error code beside an error message carries that message."""
    if isinstance(answer, dict):
        if answer.get("error_code") and "error_message" in answer:
            assert answer["error_message"], answer
        for value in answer.values():
            assert_explained(value)
    elif isinstance(answer, list):
        for value in answer:
            assert_explained(value)


def test_a_topic_named_twice_is_answered_once_as_an_invalid_request_and_nothing_is_done(
        kafka_broker):
    # Given names for a new topic, an existing one and a topic to delete
    new, other, existing = unique_topic("dup"), unique_topic("dup"), create(kafka_broker, 1)
    plain = {"num_partitions": 1, "replication_factor": -1, "assignments": [], "configs": []}
    # When CreateTopics names the new one twice, beside another
    created = raw_request(kafka_broker, CREATE_TOPICS, 5, {"topics": [
        {"name": new, **plain}, {"name": other, **plain}, {"name": new, **plain}],
        "timeout_ms": 5_000, "validate_only": False})
    # Then each name is answered once, the twice-named one INVALID_REQUEST, the other created
    assert [(t["name"], t["error_code"]) for t in created["topics"]] == [
        (new, INVALID_REQUEST), (other, 0)]
    # And CreatePartitions and DeleteTopics of a topic named twice do nothing with it
    grown = raw_request(kafka_broker, CREATE_PARTITIONS, 2, {"topics": [
        {"name": existing, "count": 2, "assignments": None},
        {"name": existing, "count": 3, "assignments": None}],
        "timeout_ms": 5_000, "validate_only": False})
    assert [(r["name"], r["error_code"]) for r in grown["results"]] == [(existing, INVALID_REQUEST)]
    deleted = raw_request(kafka_broker, DELETE_TOPICS, 4, {
        "topic_names": [existing, other, existing], "timeout_ms": 5_000})
    assert [(r["name"], r["error_code"]) for r in deleted["responses"]] == [
        (existing, INVALID_REQUEST), (other, 0)]
    with Admin(broker=kafka_broker.url) as admin:
        names = admin.list_topics()
        assert new not in names and other not in names
        assert admin.describe_topic(existing).partitions == 1


@pytest.mark.parametrize("topic, code", [
    ({"num_partitions": 1, "replication_factor": -1, "configs": []}, 0),
    ({"num_partitions": 3, "replication_factor": 9, "configs": []}, 38),   # INVALID_REPLICATION_FACTOR
    ({"num_partitions": 100_000, "replication_factor": -1, "configs": []}, 37),   # INVALID_PARTITIONS
    ({"num_partitions": 1, "replication_factor": -1,
      "configs": [{"name": "retention.ms", "value": "x"}]}, 40),           # INVALID_CONFIG
    ("existing", 36),                                                       # TOPIC_ALREADY_EXISTS
], ids=["good", "replication-factor", "too-many-partitions", "config", "exists"])
def test_validate_only_create_topics_answers_as_the_create_would_and_creates_nothing(
        kafka_broker, topic, code):
    # Given a topic to create (or one that exists)
    name = create(kafka_broker, 1) if topic == "existing" else unique_topic("valid")
    fields = {"num_partitions": 1, "replication_factor": -1, "configs": []} \
        if topic == "existing" else topic
    # When CreateTopics validates it only
    answer = raw_request(kafka_broker, CREATE_TOPICS, 5, {"topics": [
        {"name": name, "assignments": [], **fields}], "timeout_ms": 5_000, "validate_only": True})
    # Then its answer is the create's, and nothing new exists
    assert [(t["name"], t["error_code"]) for t in answer["topics"]] == [(name, code)]
    with Admin(broker=kafka_broker.url) as admin:
        assert (name in admin.list_topics()) == (topic == "existing")


def test_delete_topics_by_topic_id_deletes_only_the_topic_that_has_that_id(kafka_broker):
    import uuid

    # Given a topic whose id was read, then deleted and created again under its name
    with Admin(broker=kafka_broker.url) as admin:
        name = create(kafka_broker, 1)
        old_id = uuid.UUID(hex=admin.describe_topic(name).topic_id)
        admin.delete_topic(name)
        admin.create_topic(name, partitions=2)
        new_id = uuid.UUID(hex=admin.describe_topic(name).topic_id)

    def delete_by_id(topic_id: uuid.UUID) -> dict:
        answer = raw_request(kafka_broker, DELETE_TOPICS, 6, {
            "topics": [{"name": None, "topic_id": topic_id}], "timeout_ms": 5_000})
        return answer["responses"][0]

    # When DeleteTopics v6 names it by the old id / Then UNKNOWN_TOPIC_ID, and it stays
    stale = delete_by_id(old_id)
    assert (stale["error_code"], stale["topic_id"]) == (UNKNOWN_TOPIC_ID, old_id)
    assert f"no topic has topic id {old_id.hex}" == stale["error_message"]
    with Admin(broker=kafka_broker.url) as admin:
        assert admin.describe_topic(name).partitions == 2
    # When it names it by its id / Then it is deleted, answered with its name
    deleted = delete_by_id(new_id)
    assert (deleted["name"], deleted["topic_id"], deleted["error_code"]) == (name, new_id, 0)
    with Admin(broker=kafka_broker.url) as admin:
        assert name not in admin.list_topics()


def test_kafka_answers_carry_each_topics_own_id_the_one_plinth_describes(kafka_broker):
    import uuid

    from plinth.router.kafka.messages import METADATA
    from plinth.router.kafka.wire import UUID_ZERO

    def plinth_id(name: str) -> uuid.UUID:
        with Admin(broker=kafka_broker.url) as admin:
            return uuid.UUID(hex=admin.describe_topic(name).topic_id)

    def new_topic(name: str) -> dict:
        return {"name": name, "num_partitions": 1, "replication_factor": -1,
                "assignments": [], "configs": []}

    # CreateTopics v7 answers the new topic's id, one topic alone and several at once
    alone, first, second = (unique_topic("kid") for _ in range(3))
    for names in ([alone], [first, second]):
        answer = raw_request(kafka_broker, CREATE_TOPICS, 7, {
            "topics": [new_topic(name) for name in names], "timeout_ms": 30_000,
            "validate_only": False})
        for name, topic in zip(names, answer["topics"]):
            assert (topic["name"], topic["error_code"]) == (name, 0)
            assert topic["topic_id"] == plinth_id(name) != UUID_ZERO
    # A validate-only create has no topic, so no id
    checked = raw_request(kafka_broker, CREATE_TOPICS, 7, {
        "topics": [new_topic(unique_topic("kid"))], "timeout_ms": 30_000,
        "validate_only": True})["topics"][0]
    assert (checked["error_code"], checked["topic_id"]) == (0, UUID_ZERO)
    # Metadata v12 and DescribeTopicPartitions answer it too
    metadata = raw_request(kafka_broker, METADATA, 12, {
        "topics": [{"topic_id": UUID_ZERO, "name": alone}],
        "allow_auto_topic_creation": False, "include_topic_authorized_operations": False})
    assert metadata["topics"][0]["topic_id"] == plinth_id(alone)
    described = raw_request(kafka_broker, DESCRIBE_TOPIC_PARTITIONS, 0, {
        "topics": [{"name": first}], "response_partition_limit": 10, "cursor": None})
    assert described["topics"][0]["topic_id"] == plinth_id(first)
    # DeleteTopics v6 by name echoes the id of the topic it deleted
    deleted_id = plinth_id(second)
    deleted = raw_request(kafka_broker, DELETE_TOPICS, 6, {
        "topics": [{"name": second, "topic_id": UUID_ZERO},
                   {"name": "no-such-topic", "topic_id": UUID_ZERO}],
        "timeout_ms": 5_000})["responses"]
    assert [(r["name"], r["error_code"] == 0, r["topic_id"]) for r in deleted] == [
        (second, True, deleted_id), ("no-such-topic", False, UUID_ZERO)]


@contextmanager
def change_held_by_a_stopped_shard(broker_factory):
    """For the block: a broker of its own (a shard is stopped) with a Kafka listener,
    a topic on the stopped shard, and its controller's change thread held by a
    Plinth alter of that topic, which its client (request_timeout_ms 2 s) gave up on;
    yields the broker. After the block the shard continues, and the alter is made."""
    port = free_port()
    broker = broker_factory(shards=2, extra_args=("--kafka-listen", f"127.0.0.1:{port}"))
    broker.kafka_address = f"127.0.0.1:{port}"
    controller = ControllerHandle.find(namespace_for(broker.data_dir, None))
    stalled = create(broker, 1)
    owner = controller.routing().owners[stalled][0]
    pid = wait_until(lambda: shard_pids(broker.data_dir).get(owner), timeout_s=60)
    with Admin(broker=broker.url, request_timeout_ms=2_000) as impatient:
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(PlinthTimeoutError):
                impatient.alter_topic(stalled, {"retention.ms": "7200000"})
            yield broker
        finally:
            os.kill(pid, signal.SIGCONT)
        # The router serves the oldest change first: one sent after this is made after
        # every change queued in the block.
        impatient.request_timeout_ms = 120_000
        wait_until(lambda: impatient.describe_topic(stalled).config.get("retention.ms")
                   == "7200000", timeout_s=60)


def new_topic(name: str, partitions: int = 1) -> dict:
    return {"name": name, "num_partitions": partitions, "replication_factor": -1,
            "assignments": [], "configs": []}


def test_a_create_topics_queued_past_its_timeout_behind_a_stopped_shard_is_never_made(
        broker_factory):
    late = unique_topic("late")
    with change_held_by_a_stopped_shard(broker_factory) as broker:
        # When a CreateTopics with a timeout of 2 s waits behind a change held by a
        # stopped shard (the controller makes one at a time)
        answer = raw_request(broker, CREATE_TOPICS, 5, {
            "topics": [new_topic(late)], "timeout_ms": 2_000, "validate_only": False})
        # Then it is answered REQUEST_TIMED_OUT
        assert [(t["name"], t["error_code"]) for t in answer["topics"]] == \
            [(late, REQUEST_TIMED_OUT)]
    # And once the shard runs again and the change before it is made, it never is
    with Admin(broker=broker.url, request_timeout_ms=60_000) as admin:
        admin.create_topic(unique_topic("after"), 1)
        with pytest.raises(UnknownTopicError):
            admin.describe_topic(late)


def test_another_connections_metadata_is_answered_while_a_kafka_change_waits(broker_factory):
    fresh = unique_topic("fresh")
    with change_held_by_a_stopped_shard(broker_factory) as broker:
        # Given a CreateTopics on one connection queued behind a change a stopped shard
        # holds (the controller makes one change at a time; a create is no longer placed
        # on a stopped shard, so it waits here, not on the shard), and a Metadata sent
        # after it on that connection
        waiting = kafka_connection(broker)
        send_request(waiting, CREATE_TOPICS, 5, {
            "topics": [new_topic(fresh, 2)], "timeout_ms": 120_000, "validate_only": False})
        send_request(waiting, METADATA, 1, {"topics": [{"name": fresh}]})
        # When another connection asks for the metadata, Then it is answered at once
        asked_s = time.monotonic()
        answer = raw_request(broker, METADATA, 1, {"topics": None})
        assert time.monotonic() - asked_s < 10
        assert answer["brokers"] and fresh not in {t["name"] for t in answer["topics"]}
        # while the CreateTopics still waits
        assert not select.select([waiting], [], [], 0)[0], "the CreateTopics was answered"
    # And once the shard runs again and the change before it is made, the topic is made,
    # and the Metadata sent after the CreateTopics on its connection finds it
    with waiting:
        waiting.settimeout(120)
        created = received_response(waiting, CREATE_TOPICS, 5)
        assert [(t["name"], t["error_code"]) for t in created["topics"]] == [(fresh, 0)]
        described = received_response(waiting, METADATA, 1)
        assert [(t["name"], t["error_code"]) for t in described["topics"]] == [(fresh, 0)]
