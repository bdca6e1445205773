"""acl.py: grants per client key on topics, groups and the cluster; quotas; strict loading."""

from __future__ import annotations

import json
import typing

import pytest

from plinth import protocol, protocol_classic
from plinth.errors import InvalidConfigError, NotAuthorizedError
from plinth.router.acl import Acl, QuotaRates, needs_of

KEY = "A" * 40
OTHER = "B" * 40


def acl_from(tmp_path, content) -> Acl:
    path = tmp_path / "acl.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return Acl.load(path)


def produce(topic):
    return protocol.ProduceRequest(1, topic, 0)


def fetch(topic):
    return protocol.FetchRequest(1, topic, 0, 0, 1024, 0)


def heartbeat(group, topics=(), owned=frozenset(), epoch=0):
    return protocol.GroupHeartbeatRequest(1, group, "", epoch, tuple(topics), owned, 0, "")


def commit(group, offsets):
    return protocol.CommitOffsetsRequest(1, group, "m", 1, offsets)


# One request of every kind, for the rule that every kind has a rule.
EVERY_KIND = [
    produce("t"), fetch("t"), protocol.ListOffsetsRequest(1, "t", 0), protocol.MetadataRequest(1, ()),
    protocol.CreateTopicRequest(1, "t", 1, {}), protocol.AlterTopicRequest(1, "t", {}),
    protocol.DeleteTopicRequest(1, "t"), protocol.DescribeTopicRequest(1, "t"),
    protocol.ListTopicsRequest(1), heartbeat("g"), commit("g", {}),
    protocol.ResetOffsetsRequest(1, "g", {}), protocol.FetchOffsetsRequest(1, "g"),
    protocol.DescribeGroupRequest(1, "g"), protocol.DeleteGroupRequest(1, "g"),
    protocol.ListGroupsRequest(1), protocol.StatusRequest(1),
    protocol.AddShardsRequest(1, 1), protocol.RemoveShardsRequest(1, 1),
    protocol.ReplicaFetchRequest(1, "t", 0, "shard-1", 0, 0, -1, 1024, 0, 0),
    protocol.MoveShardRequest(1, "shard-1", "d"),
    protocol.ReplicaFetchAllRequest(1, "shard-1", 0, 0, 1024, ()),
    protocol_classic.ClassicJoinRequest(1, "g", "", "", "consumer", (), 10_000, 30_000),
    protocol_classic.ClassicSyncRequest(1, "g", 1, "m", "", "consumer", "range", ()),
    protocol_classic.ClassicHeartbeatRequest(1, "g", 1, "m"),
    protocol_classic.ClassicLeaveRequest(1, "g", (("m", ""),)),
    protocol.ListTopicsPageRequest(1, "", "", 10), protocol.ListGroupsPageRequest(1, "", "", 10),
    protocol.TopicStatsRequest(1, ("t",)),
    protocol.CreateTopicsRequest(1, (protocol.NewTopic("t", 1, {}),)),
    protocol.DeleteRecordsRequest(1, "t", 0, 5),
    protocol.ElectLeadersRequest(1, protocol.ELECTION_PREFERRED, None),
    protocol.DeleteOffsetsRequest(1, "g", frozenset({("t", 0)})),
]


def test_delete_records_needs_admin_on_its_topic_as_kafkas_delete_does(tmp_path):
    # Given a key that may consume and produce "t", and administer "u"
    acl = acl_from(tmp_path, {KEY: [{"operations": ["produce", "consume"], "topics": "t"},
                                    {"operations": ["admin"], "topics": "u"}]})
    # Then it may delete the records of "u" only
    acl.check(KEY, protocol.DeleteRecordsRequest(1, "u", 0, 5))
    with pytest.raises(NotAuthorizedError, match="may not .*topic .t. .deleteRecords."):
        acl.check(KEY, protocol.DeleteRecordsRequest(1, "t", 0, 5))


def test_every_request_kind_has_a_rule():
    # Given one request of every kind of the protocol
    assert {type(r) for r in EVERY_KIND} == set(typing.get_args(protocol.Request))
    # Then the ACL knows what each needs: none is let through for want of a rule
    assert [r.kind for r in EVERY_KIND if needs_of(r) is None] == []


def test_a_grant_allows_its_operations_on_matching_topics_only(tmp_path):
    acl = acl_from(tmp_path, {KEY: [{"operations": ["produce"], "topics": "orders.*"}]})
    acl.check(KEY, produce("orders.eu"))
    with pytest.raises(NotAuthorizedError, match="may not produce to topic 'payments'"):
        acl.check(KEY, produce("payments"))
    with pytest.raises(NotAuthorizedError, match="may not consume from topic 'orders.eu'"):
        acl.check(KEY, fetch("orders.eu"))
    with pytest.raises(NotAuthorizedError, match="may not administer topic 'orders.new'"):
        acl.check(KEY, protocol.CreateTopicRequest(1, "orders.new", 1, {}))


def test_creating_topics_in_one_request_needs_admin_on_every_one_of_them(tmp_path):
    acl = acl_from(tmp_path, {KEY: [{"operations": ["admin"], "topics": "orders.*"}]})
    acl.check(KEY, protocol.CreateTopicsRequest(1, (protocol.NewTopic("orders.eu", 1, {}),
                                                    protocol.NewTopic("orders.us", 1, {}))))
    with pytest.raises(NotAuthorizedError, match="may not administer topic 'payments'"):
        acl.check(KEY, protocol.CreateTopicsRequest(1, (protocol.NewTopic("orders.eu", 1, {}),
                                                        protocol.NewTopic("payments", 1, {}))))


def test_listing_needs_any_grant_and_unknown_keys_get_nothing(tmp_path):
    acl = acl_from(tmp_path, {KEY: [{"operations": ["consume"], "topics": "orders.*"}]})
    acl.check(KEY, protocol.ListTopicsRequest(1))
    acl.check(KEY, protocol.ListGroupsRequest(1))
    acl.check(KEY, protocol.MetadataRequest(1, ("orders.eu",)))
    with pytest.raises(NotAuthorizedError, match="may not see topic 'payments'"):
        acl.check(KEY, protocol.MetadataRequest(1, ("orders.eu", "payments")))
    with pytest.raises(NotAuthorizedError, match="has no grants"):
        acl.check(OTHER, protocol.ListTopicsRequest(1))


def test_the_star_key_applies_to_every_client_besides_its_own_grants(tmp_path):
    acl = acl_from(tmp_path, {"*": [{"operations": ["consume"], "topics": "public.*"}],
                              KEY: [{"operations": ["produce"], "topics": "orders"}]})
    acl.check("C" * 40, fetch("public.news"))
    acl.check(KEY, fetch("public.news"))
    acl.check(KEY, produce("orders"))


def test_a_topic_scoped_grant_never_matches_an_empty_name_nor_a_group(tmp_path):
    # Given a key with every topic operation on every topic, and no group or cluster grant
    acl = acl_from(tmp_path, {KEY: [{"operations": ["produce", "consume", "admin"], "topics": "*"}]})
    # Then an empty topic name, any group and the cluster are refused
    with pytest.raises(NotAuthorizedError, match="may not administer topic ''"):
        acl.check(KEY, protocol.DeleteTopicRequest(1, ""))
    for request in (protocol.FetchOffsetsRequest(1, "payments"), heartbeat("payments", ["a"]),
                    protocol.DescribeGroupRequest(1, "payments"), protocol.FetchOffsetsRequest(1, "")):
        with pytest.raises(NotAuthorizedError, match="group"):
            acl.check(KEY, request)
    for request in (protocol.StatusRequest(1), protocol.AddShardsRequest(1, 1),
                    protocol.RemoveShardsRequest(1, 1)):
        with pytest.raises(NotAuthorizedError, match="needs a grant of the cluster operation"):
            acl.check(KEY, request)


def test_consuming_in_a_group_needs_the_group_and_every_topic_it_names(tmp_path):
    # Given consume on group "billing" and on topics "orders.*"
    acl = acl_from(tmp_path, {KEY: [{"operations": ["consume"], "topics": "orders.*",
                                     "groups": "billing"}]})
    # Then joining, committing and reading offsets of billing on orders.* are allowed
    acl.check(KEY, heartbeat("billing", ["orders.eu"]))
    acl.check(KEY, heartbeat("billing", epoch=protocol.LEAVE_EPOCH))
    acl.check(KEY, commit("billing", {("orders.eu", 0): 5}))
    acl.check(KEY, protocol.FetchOffsetsRequest(1, "billing"))
    # And subscribing, owning or committing another topic, or another group, is not
    with pytest.raises(NotAuthorizedError, match="may not consume from topic 'payments'"):
        acl.check(KEY, heartbeat("billing", ["orders.eu", "payments"]))
    with pytest.raises(NotAuthorizedError, match="may not consume from topic 'payments'"):
        acl.check(KEY, heartbeat("billing", ["orders.eu"], frozenset({("payments", 0)})))
    with pytest.raises(NotAuthorizedError, match="may not consume from topic 'payments'"):
        acl.check(KEY, commit("billing", {("payments", 0): 5}))
    with pytest.raises(NotAuthorizedError, match="may not consume in group 'audit'"):
        acl.check(KEY, heartbeat("audit", ["orders.eu"]))
    # And consume does not describe or reset the group
    with pytest.raises(NotAuthorizedError, match="may not administer group 'billing'"):
        acl.check(KEY, protocol.DescribeGroupRequest(1, "billing"))
    with pytest.raises(NotAuthorizedError, match="may not administer group 'billing'"):
        acl.check(KEY, protocol.DeleteGroupRequest(1, "billing"))


def test_administering_a_group_needs_admin_on_it_and_resetting_consume_on_the_topics(tmp_path):
    # Given admin on group billing (its own grant) and consume on orders.* without a group
    acl = acl_from(tmp_path, {KEY: [{"operations": ["admin"], "groups": "billing"},
                                    {"operations": ["consume"], "topics": "orders.*"}]})
    grants = acl.check(KEY, protocol.DescribeGroupRequest(1, "billing"))
    acl.check(KEY, protocol.DeleteGroupRequest(1, "billing"))
    acl.check(KEY, protocol.ResetOffsetsRequest(1, "billing", {("orders.eu", 0): 0}))
    with pytest.raises(NotAuthorizedError, match="may not consume from topic 'payments'"):
        acl.check(KEY, protocol.ResetOffsetsRequest(1, "billing", {("payments", 0): 0}))
    with pytest.raises(NotAuthorizedError, match="may not administer topic 'orders.eu'"):
        acl.check(KEY, protocol.DeleteTopicRequest(1, "orders.eu"))
    # Then its grants describe billing only, and consume orders.* only
    assert [g for g in ("billing", "audit", "") if grants.may_describe_group(g)] == ["billing"]
    assert [t for t in ("orders.eu", "payments") if grants.may_consume_topic(t)] == ["orders.eu"]


def test_deleting_a_groups_offsets_needs_admin_on_it_and_consume_on_every_topic_named(
        tmp_path):
    # Given admin on group billing and consume on orders.* (as Kafka's DELETE on the
    # group and READ on the topics)
    acl = acl_from(tmp_path, {KEY: [{"operations": ["admin"], "groups": "billing"},
                                    {"operations": ["consume"], "topics": "orders.*"}]})
    acl.check(KEY, protocol.DeleteOffsetsRequest(1, "billing", frozenset({("orders.eu", 0)})))
    # Then a topic it may not consume, or another group, is refused
    with pytest.raises(NotAuthorizedError, match="may not consume from topic 'payments'"):
        acl.check(KEY, protocol.DeleteOffsetsRequest(
            1, "billing", frozenset({("orders.eu", 0), ("payments", 0)})))
    with pytest.raises(NotAuthorizedError, match="may not administer group 'audit'"):
        acl.check(KEY, protocol.DeleteOffsetsRequest(1, "audit", frozenset({("orders.eu", 0)})))


def test_the_cluster_operation_covers_status_and_shards(tmp_path):
    acl = acl_from(tmp_path, {KEY: [{"operations": ["cluster"]}]})
    for request in (protocol.StatusRequest(1), protocol.AddShardsRequest(1, 1),
                    protocol.RemoveShardsRequest(1, 1),
                    protocol.ElectLeadersRequest(1, protocol.ELECTION_PREFERRED, (("t", 0),))):
        acl.check(KEY, request)
    with pytest.raises(NotAuthorizedError):
        acl.check(KEY, protocol.DescribeTopicRequest(1, "orders"))


def test_electing_leaders_needs_the_cluster_operation_even_for_a_topics_admin(tmp_path):
    # Given a key that administers every topic but has no cluster grant
    acl = acl_from(tmp_path, {KEY: [{"operations": ["admin"], "topics": "*"}]})
    # Then it may not move leaders, as Kafka's ElectLeaders needs ALTER on the cluster
    with pytest.raises(NotAuthorizedError, match="cluster"):
        acl.check(KEY, protocol.ElectLeadersRequest(1, protocol.ELECTION_PREFERRED, (("t", 0),)))


def test_quotas_are_read_per_key_and_star_is_every_other_keys_default(tmp_path):
    acl = acl_from(tmp_path, {
        KEY: [{"operations": ["produce"], "topics": "*"}],
        "quotas": {KEY: {"producer_byte_rate": 1000},
                   "*": {"producer_byte_rate": 5000, "consumer_byte_rate": 9000}}})
    assert acl.quota_for(KEY) == QuotaRates(producer_byte_rate=1000)
    assert acl.quota_for(OTHER) == QuotaRates(5000, 9000)
    assert acl.has_quotas
    assert not acl_from(tmp_path, {KEY: []}).has_quotas
    assert acl_from(tmp_path, {KEY: []}).quota_for(KEY) is None


GOOD_GRANT = {"operations": ["consume"], "topics": "orders.*"}
# (what is wrong, the file, what the refusal must name besides the file)
BAD_FILES = [
    ("a misspelt field", {KEY: [{"operations": ["consume"], "topic": "orders.*"}]},
     [KEY, "unknown field 'topic'"]),
    ("a pattern that is a list", {KEY: [{"operations": ["consume"], "topics": ["orders"]}]},
     [KEY, "field 'topics'", "non-empty pattern string"]),
    ("an empty pattern", {KEY: [{"operations": ["consume"], "groups": ""}]},
     [KEY, "field 'groups'"]),
    ("produce without topics", {KEY: [{"operations": ["produce"], "groups": "g"}]},
     [KEY, "operation 'produce' needs field 'topics'"]),
    ("consume without a pattern", {KEY: [{"operations": ["consume"]}]},
     [KEY, "operation 'consume' needs field 'topics' or 'groups'"]),
    ("cluster with a pattern", {KEY: [{"operations": ["cluster"], "topics": "*"}]},
     [KEY, "field 'topics' is used by none of the operations"]),
    ("an unknown operation", {KEY: [{"operations": ["delete-everything"], "topics": "*"}]},
     [KEY, "unknown operations ['delete-everything']"]),
    ("no operations", {KEY: [{"topics": "*"}]}, [KEY, "field 'operations'"]),
    ("grants not a list", {KEY: GOOD_GRANT}, [KEY, "expected a list of grants"]),
    ("a name that is no key", {"alice": [GOOD_GRANT]}, ["'alice' is not a client public key"]),
    ("a quota field misspelt", {KEY: [GOOD_GRANT], "quotas": {KEY: {"producer_rate": 10}}},
     [KEY, "unknown field 'producer_rate'"]),
    ("a quota that is a string", {KEY: [GOOD_GRANT], "quotas": {KEY: {"consumer_byte_rate": "10"}}},
     [KEY, "field 'consumer_byte_rate' must be a positive integer"]),
    ("a quota of zero", {KEY: [GOOD_GRANT], "quotas": {"*": {"producer_byte_rate": 0}}},
     ["key *", "field 'producer_byte_rate'"]),
]


@pytest.mark.parametrize("content, named", [(c, n) for _, c, n in BAD_FILES],
                         ids=[what for what, _, _ in BAD_FILES])
def test_loading_refuses_a_file_that_could_grant_more_than_meant_naming_file_key_and_field(
        tmp_path, content, named):
    with pytest.raises(InvalidConfigError) as refused:
        acl_from(tmp_path, content)
    message = str(refused.value)
    assert str(tmp_path / "acl.json") in message
    for part in named:
        assert part in message, (part, message)


def test_loading_refuses_unreadable_json_and_a_key_given_twice(tmp_path):
    with pytest.raises(InvalidConfigError, match="cannot read ACL file"):
        acl_from(tmp_path, "{not json")
    grant = json.dumps([GOOD_GRANT])
    with pytest.raises(InvalidConfigError, match=f"'{KEY}' appears twice"):
        acl_from(tmp_path, f'{{"{KEY}": {grant}, "{KEY}": []}}')


def test_kafka_group_requests_need_consume_on_their_group(tmp_path):
    acl = acl_from(tmp_path, {KEY: [{"operations": ["consume"], "groups": "team-*"}]})
    acl.check(KEY, protocol_classic.ClassicHeartbeatRequest(1, "team-a", 1, "m"))
    with pytest.raises(NotAuthorizedError, match="group 'other'"):
        acl.check(KEY, protocol_classic.ClassicJoinRequest(1, "other", "", "", "consumer", (),
                                                           10_000, 30_000))


def test_a_kafka_sasl_user_is_named_user_colon_name_and_its_refusals_name_it_in_full(tmp_path):
    # Given an ACL that grants a Kafka user, by its SASL name, produce on orders.*
    acl = acl_from(tmp_path, {"User:alice": [{"operations": ["produce"], "topics": "orders.*"}]})
    # Then it may produce there, and a refusal elsewhere names the whole user
    acl.check("User:alice", produce("orders.eu"))
    with pytest.raises(NotAuthorizedError, match="client User:alice may not produce to topic 'x'"):
        acl.check("User:alice", produce("x"))
    # And another user, in no entry, has no grants, and is told what it lacked
    with pytest.raises(NotAuthorizedError, match="User:bob has no grants, so it may not "
                                                 "consume in group 'g'"):
        acl.check("User:bob", protocol_classic.ClassicHeartbeatRequest(1, "g", 1, "m"))


@pytest.mark.parametrize("key", ["User:", "User:al\tice", "user:alice"])
def test_a_sasl_user_key_without_a_printable_name_is_refused(tmp_path, key):
    with pytest.raises(InvalidConfigError, match="ACL file"):
        acl_from(tmp_path, {key: [{"operations": ["cluster"]}]})


def test_user_star_is_refused_saying_that_star_alone_grants_every_client(tmp_path):
    # Kafka's User:* means every user; here it would grant only a user named "*"
    with pytest.raises(InvalidConfigError, match="'\\*' is not a user name; in the ACL file, "
                                                 "the key \"\\*\" \\(without User:\\) "
                                                 "grants every client"):
        acl_from(tmp_path, {"User:*": [{"operations": ["consume"], "topics": "orders"}]})


def test_refusals_are_sentences_naming_what_was_refused_and_the_grant_it_lacks(tmp_path):
    # Given a key that may only produce to orders.*
    acl = acl_from(tmp_path, {KEY: [{"operations": ["produce"], "topics": "orders.*"}]})
    who = f"client {KEY[:8]}..."

    def refusal(request) -> str:
        with pytest.raises(NotAuthorizedError) as refused:
            acl.check(KEY, request)
        return str(refused.value)

    # When it asks for another topic's metadata (as `plinth produce other` does first),
    # the cluster's status, more shards or every topic's metadata
    # Then each refusal says in words what it may not do and which grant would allow it
    assert refusal(protocol.MetadataRequest(1, ("other",))) == (
        f"{who} may not see topic 'other' (metadata): it needs a grant of any operation "
        f"(produce, consume or admin) on it")
    assert refusal(produce("other")) == (
        f"{who} may not produce to topic 'other' (produce): it needs a grant of produce on it")
    assert refusal(protocol.StatusRequest(1)) == (
        f"{who} may not read the cluster's status: it needs a grant of the cluster operation")
    assert refusal(protocol.AddShardsRequest(1, 1)) == (
        f"{who} may not add shards: it needs a grant of the cluster operation")
    # And a client without any grant is told so first
    acl = acl_from(tmp_path, {OTHER: [{"operations": ["cluster"]}]})
    assert refusal(protocol.MetadataRequest(1, ())) == (
        f"{who} has no grants, so it may not read the cluster's metadata: it needs a grant "
        f"of any operation (produce, consume or admin)")
