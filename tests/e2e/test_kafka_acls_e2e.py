"""Kafka's ACL APIs against a real ``plinth serve`` with an ACL file (issue 15,
router/kafka/api_acls.py): confluent-kafka's and kafka-python's describe_acls see
the file's grants as Kafka bindings, filtered as Kafka filters them; a user without
the cluster operation is refused; create_acls and delete_acls are refused per
binding with a message naming the file; only a user with the cluster operation
is told the log dirs (DescribeLogDirs: the data dir's path and disk sizes). (Without an ACL file:
test_kafka_admin_e2e.py.)

One broker for the module, with CurveZMQ keys, the ACL file and SASL users on its
Kafka listener (SASL_PLAINTEXT on 127.0.0.1, PLAIN).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest

from tests.conftest import Broker
from tests.e2e.test_security_e2e import keygen
from tests.support import free_port, unique_topic

TIMEOUT_S = 60
PASSWORDS = {"root": "root-secret-pw", "alice": "alice-secret-pw"}
ACL = {
    "User:root": [{"operations": ["cluster"]}],
    "User:alice": [{"operations": ["produce", "consume"], "topics": "orders.*",
                    "groups": "billing"}],
    "*": [{"operations": ["consume"], "topics": "public-?"}],
}


@pytest.fixture(scope="module")
def acl_kafka(ray_cluster, tmp_path_factory):
    directory = tmp_path_factory.mktemp("kafka-acl")
    keys, authorized = directory / "keys", directory / "authorized"
    authorized.mkdir()
    _, server_secret = keygen(keys, "server")
    acl = directory / "acl.json"
    acl.write_text(json.dumps(ACL))
    users = directory / "users.json"
    for name, password in PASSWORDS.items():
        subprocess.run([sys.executable, "-m", "plinth.cli", "kafka-user", "add", str(users),
                        name, "--password-stdin"], input=password + "\n", text=True,
                       check=True, capture_output=True)
    port = free_port()
    broker = Broker(directory / "data", ray_cluster, shards=1, extra_args=(
        "--curve-secret-key", str(server_secret), "--authorized-keys", str(authorized),
        "--acl", str(acl), "--kafka-sasl-users", str(users),
        "--cluster-name", unique_topic("kafka-acl"), "--kafka-listen", f"127.0.0.1:{port}"))
    broker.kafka_address, broker.acl_file = f"127.0.0.1:{port}", acl
    broker.start()
    yield broker
    broker.stop()


def confluent_admin(broker, user: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": broker.kafka_address,
                        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                        "sasl.username": user, "sasl.password": PASSWORDS[user]})


def kafka_python_admin(broker, user: str):
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=broker.kafka_address,
                            security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                            sasl_plain_username=user, sasl_plain_password=PASSWORDS[user],
                            request_timeout_ms=TIMEOUT_S * 1000)


def any_filter(**kwargs):
    from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType,
                                       ResourcePatternType, ResourceType)

    given = dict(restype=ResourceType.ANY, name=None, resource_pattern_type=ResourcePatternType.ANY,
                 principal=None, host=None, operation=AclOperation.ANY,
                 permission_type=AclPermissionType.ANY) | kwargs
    return AclBindingFilter(**given)


def described(bindings) -> set[tuple]:
    return {(b.restype.name, b.name, b.resource_pattern_type.name, b.principal, b.host,
             b.operation.name, b.permission_type.name) for b in bindings}


def test_confluent_kafka_describes_the_acl_files_grants_as_kafka_bindings(acl_kafka):
    admin = confluent_admin(acl_kafka, "root")
    found = described(admin.describe_acls(any_filter()).result(TIMEOUT_S))
    assert found == {
        ("TOPIC", "orders.", "PREFIXED", "User:alice", "*", "READ", "ALLOW"),
        ("TOPIC", "orders.", "PREFIXED", "User:alice", "*", "WRITE", "ALLOW"),
        ("GROUP", "billing", "LITERAL", "User:alice", "*", "READ", "ALLOW"),
        ("BROKER", "kafka-cluster", "LITERAL", "User:root", "*", "DESCRIBE", "ALLOW"),
        ("BROKER", "kafka-cluster", "LITERAL", "User:root", "*", "ALTER", "ALLOW"),
        ("TOPIC", "public-?", "UNKNOWN", "User:*", "*", "READ", "ALLOW"),
    }


def test_confluent_kafkas_filters_select_as_kafkas_do(acl_kafka):
    from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

    admin = confluent_admin(acl_kafka, "root")
    # MATCH: the bindings that apply to one topic name (the prefixed one)
    match = admin.describe_acls(any_filter(
        restype=ResourceType.TOPIC, name="orders.eu",
        resource_pattern_type=ResourcePatternType.MATCH)).result(TIMEOUT_S)
    assert {(b.name, b.operation) for b in match} == {("orders.", AclOperation.READ),
                                                     ("orders.", AclOperation.WRITE)}
    # A principal and an operation
    writes = admin.describe_acls(any_filter(principal="User:alice",
                                            operation=AclOperation.WRITE)).result(TIMEOUT_S)
    assert [(b.restype, b.name) for b in writes] == [(ResourceType.TOPIC, "orders.")]
    # A LITERAL filter on a name granted only by prefix: nothing
    assert admin.describe_acls(any_filter(
        name="orders.", resource_pattern_type=ResourcePatternType.LITERAL)).result(TIMEOUT_S) == []


def test_a_user_without_the_cluster_operation_may_not_describe_acls(acl_kafka):
    import kafka.errors as errors
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, ResourcePatternFilter, ResourceType)

    # kafka-python raises the answer's error, with its message
    admin = kafka_python_admin(acl_kafka, "alice")
    try:
        with pytest.raises(errors.ClusterAuthorizationFailedError,
                           match="User:alice may not describe the ACLs: it needs a grant of "
                                 "the cluster operation"):
            admin.describe_acls(ACLFilter(
                principal=None, host=None, operation=ACLOperation.ANY,
                permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(ResourceType.ANY, None,
                                                       ACLResourcePatternType.ANY)))
    finally:
        admin.close()
    # librdkafka (2.16) drops DescribeAcls' top-level error code and answers an empty
    # list, as it does for Kafka's own refusal: no binding is shown
    assert confluent_admin(acl_kafka, "alice").describe_acls(any_filter()).result(TIMEOUT_S) == []


def test_confluent_kafkas_create_and_delete_acls_are_refused_naming_the_acl_file(acl_kafka):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       ResourcePatternType, ResourceType)

    admin = confluent_admin(acl_kafka, "root")
    binding = AclBinding(ResourceType.TOPIC, "orders.new", ResourcePatternType.LITERAL,
                         "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW)
    for future in [*admin.create_acls([binding]).values(),
                   *admin.delete_acls([any_filter(principal="User:alice")]).values()]:
        with pytest.raises(KafkaException) as raised:
            future.result(TIMEOUT_S)
        error = raised.value.args[0]
        assert error.name() == "CLUSTER_AUTHORIZATION_FAILED"
        assert str(acl_kafka.acl_file) in error.str() and "--acl" in error.str()
    # And nothing changed
    assert len(admin.describe_acls(any_filter()).result(TIMEOUT_S)) == 6


def test_kafka_python_describes_and_is_refused_creating_acls(acl_kafka):
    import kafka.errors as errors
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, ResourcePattern, ResourcePatternFilter,
                             ResourceType)

    admin = kafka_python_admin(acl_kafka, "root")
    try:
        acls, error = admin.describe_acls(ACLFilter(
            principal="User:alice", host="*", operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(ResourceType.GROUP, None,
                                                   ACLResourcePatternType.ANY)))
        assert error is errors.NoError
        assert [(a.resource_pattern.resource_name, a.operation) for a in acls] == \
            [("billing", ACLOperation.READ)]
        created = admin.create_acls([ACL("User:alice", "*", ACLOperation.WRITE,
                                         ACLPermissionType.ALLOW,
                                         ResourcePattern(ResourceType.TOPIC, "x",
                                                         ACLResourcePatternType.LITERAL))])
        # (kafka-python keeps only the error's class, not its message)
        assert created == {"succeeded": [], "failed": [errors.ClusterAuthorizationFailedError]}
    finally:
        admin.close()


def test_only_a_user_with_the_cluster_operation_may_elect_leaders(acl_kafka):
    # (ElectLeaders: router/kafka/api_elections.py; Kafka asks ALTER on the cluster)
    import kafka.errors as errors

    orders = unique_topic("orders.")
    for user, top, partition in (("alice", errors.ClusterAuthorizationFailedError.errno,
                                  errors.ClusterAuthorizationFailedError.errno),
                                 ("root", 0, errors.UnknownTopicOrPartitionError.errno)):
        admin = kafka_python_admin(acl_kafka, user)
        try:
            response = admin.elect_leaders(0, {orders: [0]}, raise_errors=False)
        finally:
            admin.close()
        # alice (produce and consume on orders.*) is refused as a whole; root passes the
        # check, and hears that the topic is not there
        assert response.error_code == top, user
        [result] = response.replica_election_results
        assert [(p.partition_id, p.error_code) for p in result.partition_result] == \
            [(0, partition)], user
        if user == "alice":
            assert "may not elect leaders: it needs a grant of the cluster operation" in \
                result.partition_result[0].error_message


def test_only_a_user_with_the_cluster_operation_is_told_the_log_dirs(acl_kafka):
    # Given alice, who may produce and consume some topics, and root, who holds the
    # cluster operation (Kafka's DESCRIBE on the cluster)
    data_dir = str(acl_kafka.data_dir.resolve())
    # When each asks for the broker's log dirs (kafka-python drops the v3+ top-level
    # error code: a refusal is an empty list of log dirs)
    with contextlib.closing(kafka_python_admin(acl_kafka, "alice")) as admin:
        refused = admin.describe_log_dirs()
    with contextlib.closing(kafka_python_admin(acl_kafka, "root")) as admin:
        told = admin.describe_log_dirs()
    # Then alice is told no log dir: neither the data dir's path nor its volume's sizes
    assert [answer["log_dirs"] for answer in refused] == [[]]
    assert data_dir not in repr(refused)
    # And root is told the data dir and the volume's sizes
    [[log_dir]] = [answer["log_dirs"] for answer in told]
    assert log_dir["log_dir"] == data_dir and 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
