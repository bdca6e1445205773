"""Plinth's ACL file as Kafka's ACL bindings (router/kafka/api_acls.py): the mapping of
grants and shell patterns, Kafka's filter semantics, and the answers of DescribeAcls,
CreateAcls and DeleteAcls with and without a file. Against real clients and a real
broker: tests/e2e/test_kafka_acls_e2e.py and test_kafka_admin_e2e.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from plinth.router.acl import Acl, Grant
from plinth.router.kafka import api_acls
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_acls import (
    OP_ALTER, OP_DELETE, OP_DESCRIBE, OP_READ, OP_WRITE, PATTERN_ANY, PATTERN_LITERAL,
    PATTERN_MATCH, PATTERN_PREFIXED, PATTERN_UNKNOWN, RESOURCE_ANY, RESOURCE_CLUSTER,
    RESOURCE_GROUP, RESOURCE_TOPIC, Binding, bindings_of, kafka_pattern)
from plinth.router.kafka.backend import PRINCIPAL
from plinth.router.kafka.codec import RequestHeader

FILE = {
    "User:alice": [{"operations": ["produce", "consume"], "topics": "orders.*",
                    "groups": "billing"}],
    "User:root": [{"operations": ["cluster"]}],
    "*": [{"operations": ["consume"], "topics": "public-?"}],
}


@pytest.fixture
def acl(tmp_path) -> Acl:
    path = tmp_path / "acl.json"
    path.write_text(json.dumps(FILE))
    return Acl.load(path)


def topic(name, pattern, principal, operation):
    return Binding(RESOURCE_TOPIC, name, pattern, principal, "*", operation, 3)


class Gateway:
    def __init__(self, acl):
        self.acl = acl


HEADER = RequestHeader(29, 3, 1, "test")


def acl_filter(resource_type=RESOURCE_ANY, name=None, pattern=PATTERN_ANY, principal=None,
               operation=1, permission=1) -> dict:
    return {"resource_type_filter": resource_type, "resource_name_filter": name,
            "pattern_type_filter": pattern, "principal_filter": principal,
            "host_filter": None, "operation": operation, "permission_type": permission}


def describe(acl, body, user=None) -> dict:
    async def run():
        PRINCIPAL.set(user)
        return await api_acls.describe_acls(Gateway(acl), HEADER, body, None)
    return asyncio.run(run())


@pytest.mark.parametrize("glob, kafka_form", [
    ("orders", ("orders", PATTERN_LITERAL)), ("*", ("*", PATTERN_LITERAL)),
    ("orders.*", ("orders.", PATTERN_PREFIXED)), ("public-?", ("public-?", PATTERN_UNKNOWN)),
    ("a*b*", ("a*b*", PATTERN_UNKNOWN)), ("[ab]x", ("[ab]x", PATTERN_UNKNOWN)),
])
def test_shell_patterns_become_literal_prefixed_or_unknown_kafka_patterns(glob, kafka_form):
    assert kafka_pattern(glob) == kafka_form


def test_each_grant_becomes_the_kafka_bindings_of_its_operations_on_its_resources(acl):
    found = bindings_of(acl)
    assert found == [
        topic("orders.", PATTERN_PREFIXED, "User:alice", OP_READ),
        Binding(RESOURCE_GROUP, "billing", PATTERN_LITERAL, "User:alice", "*", OP_READ, 3),
        topic("orders.", PATTERN_PREFIXED, "User:alice", OP_WRITE),
        Binding(RESOURCE_CLUSTER, "kafka-cluster", PATTERN_LITERAL, "User:root", "*",
                OP_DESCRIBE, 3),
        Binding(RESOURCE_CLUSTER, "kafka-cluster", PATTERN_LITERAL, "User:root", "*",
                OP_ALTER, 3),
        topic("public-?", PATTERN_UNKNOWN, "User:*", OP_READ),
    ]


def test_admin_maps_to_kafkas_topic_and_group_administration():
    operations = {(b.resource_type, b.operation) for b in bindings_of(
        Acl({"User:ops": (Grant(frozenset({"admin"}), "t", "g"),)}))}
    assert (RESOURCE_GROUP, OP_DELETE) in operations and (RESOURCE_TOPIC, OP_DELETE) in operations
    assert (RESOURCE_TOPIC, OP_WRITE) not in operations


def test_a_match_filter_finds_literal_wildcard_and_prefixed_bindings_that_apply_to_a_name():
    bindings = [topic("orders.eu", PATTERN_LITERAL, "User:a", OP_READ),
                topic("*", PATTERN_LITERAL, "User:b", OP_READ),
                topic("orders.", PATTERN_PREFIXED, "User:c", OP_READ),
                topic("ord", PATTERN_LITERAL, "User:d", OP_READ),
                topic("orders.e?", PATTERN_UNKNOWN, "User:e", OP_READ)]
    match = acl_filter(name="orders.eu", pattern=PATTERN_MATCH)
    assert [b.principal for b in bindings if api_acls.matches(match, b)] == \
        ["User:a", "User:b", "User:c"]
    exact = acl_filter(name="orders.", pattern=PATTERN_PREFIXED)
    assert [b.principal for b in bindings if api_acls.matches(exact, b)] == ["User:c"]
    every = acl_filter()
    assert len([b for b in bindings if api_acls.matches(every, b)]) == 5


def test_describe_acls_answers_the_filtered_bindings_grouped_by_resource(acl):
    body = acl_filter(resource_type=RESOURCE_TOPIC, principal="User:alice")
    answer = describe(acl, body, user="root")
    assert answer["error_code"] == kafka.NONE
    assert answer["resources"] == [{
        "resource_type": RESOURCE_TOPIC, "resource_name": "orders.", "pattern_type": PATTERN_PREFIXED,
        "acls": [{"principal": "User:alice", "host": "*", "operation": op, "permission_type": 3}
                 for op in (OP_READ, OP_WRITE)]}]


def test_describe_acls_needs_the_cluster_operation_and_names_who_lacks_it(acl):
    answer = describe(acl, acl_filter(), user="alice")
    assert answer["error_code"] == kafka.CLUSTER_AUTHORIZATION_FAILED
    assert "User:alice may not describe the ACLs: it needs a grant of the cluster operation" \
        in answer["error_message"]
    assert answer["resources"] == []


@pytest.mark.parametrize("field, value", [("resource_type_filter", 0), ("pattern_type_filter", 0),
                                          ("operation", 0), ("permission_type", 9)])
def test_a_filter_with_an_unknown_field_is_an_invalid_request_naming_it(acl, field, value):
    answer = describe(acl, {**acl_filter(), field: value}, user="root")
    assert answer["error_code"] == kafka.INVALID_REQUEST
    assert f" {value} is UNKNOWN" in answer["error_message"]


def test_without_an_acl_file_every_acl_api_answers_security_disabled():
    assert describe(None, acl_filter())["error_code"] == kafka.SECURITY_DISABLED
    created = asyncio.run(api_acls.create_acls(Gateway(None), HEADER, {"creations": [{}]}, None))
    deleted = asyncio.run(api_acls.delete_acls(Gateway(None), HEADER,
                                               {"filters": [acl_filter()]}, None))
    for result in created["results"] + deleted["filter_results"]:
        assert result["error_code"] == kafka.SECURITY_DISABLED
        assert "--acl FILE" in result["error_message"]


def test_create_and_delete_acls_are_refused_per_binding_naming_the_file(acl):
    created = asyncio.run(api_acls.create_acls(Gateway(acl), HEADER,
                                               {"creations": [{}, {}]}, None))
    deleted = asyncio.run(api_acls.delete_acls(Gateway(acl), HEADER, {"filters": [
        acl_filter(), {**acl_filter(), "operation": 0}]}, None))
    assert [r["error_code"] for r in created["results"]] == [kafka.CLUSTER_AUTHORIZATION_FAILED] * 2
    assert str(acl.path) in created["results"][0]["error_message"]
    assert [r["error_code"] for r in deleted["filter_results"]] == [
        kafka.CLUSTER_AUTHORIZATION_FAILED, kafka.INVALID_REQUEST]
    assert str(acl.path) in deleted["filter_results"][0]["error_message"]
