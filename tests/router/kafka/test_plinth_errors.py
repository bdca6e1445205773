"""plinth_errors.py: the ACL's refusals (router/acl.py, its own messages) become
Kafka's authorization error of the resource refused: topic, group or cluster; an
object store's failure is UNKNOWN_SERVER_ERROR, as Kafka answers a failed remote
read, not the leader change or disk failure its code alone would say."""

from __future__ import annotations

import json

import pytest

from plinth import protocol, protocol_classic
from plinth.errors import (NotAuthorizedError, RemoteObjectNotFoundError,
                           RemoteStorageUnavailableError, StorageError, UnavailableError)
from plinth.router.acl import Acl
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.plinth_errors import kafka_code


@pytest.fixture
def acl(tmp_path) -> Acl:
    path = tmp_path / "acl.json"
    path.write_text(json.dumps({"User:alice": [
        {"operations": ["produce", "consume"], "topics": "a.*", "groups": "alice.*"}]}))
    return Acl.load(path)


@pytest.mark.parametrize("request_, code", [
    (protocol.ProduceRequest(1, "b.x", 0), kafka.TOPIC_AUTHORIZATION_FAILED),
    (protocol.MetadataRequest(1, ("b.x",)), kafka.TOPIC_AUTHORIZATION_FAILED),
    (protocol.CreateTopicRequest(1, "a.x", 1, {}), kafka.TOPIC_AUTHORIZATION_FAILED),
    (protocol_classic.ClassicJoinRequest(1, "bob.g", "", "", "consumer", (), 10_000, 30_000),
     kafka.GROUP_AUTHORIZATION_FAILED),
    (protocol.CommitOffsetsRequest(1, "bob.g", "m", 1, {("a.x", 0): 1}),
     kafka.GROUP_AUTHORIZATION_FAILED),
    (protocol.CommitOffsetsRequest(1, "alice.g", "m", 1, {("b.x", 0): 1}),
     kafka.TOPIC_AUTHORIZATION_FAILED),
    (protocol.StatusRequest(1), kafka.CLUSTER_AUTHORIZATION_FAILED),
    (protocol.DeleteRecordsRequest(1, "a.x", 0, 5), kafka.TOPIC_AUTHORIZATION_FAILED),
])
def test_each_acl_refusal_maps_to_the_authorization_error_of_what_it_refused(acl, request_, code):
    with pytest.raises(NotAuthorizedError) as caught:
        acl.check("User:alice", request_)
    assert kafka_code(caught.value) == code, str(caught.value)


def test_a_user_without_any_grant_is_refused_by_the_resource_it_asked_for(acl):
    with pytest.raises(NotAuthorizedError) as caught:
        acl.check("User:bob", protocol_classic.ClassicHeartbeatRequest(1, "g", 1, "m"))
    assert kafka_code(caught.value) == kafka.GROUP_AUTHORIZATION_FAILED


def test_every_plinth_error_code_has_its_kafka_code_and_a_kept_offset_is_kafkas_own():
    from plinth.errors import BROKER_ERRORS, GroupSubscribedToTopicError
    from plinth.router.kafka.plinth_errors import _BY_PLINTH_CODE

    assert set(_BY_PLINTH_CODE) == set(BROKER_ERRORS)
    assert kafka_code(GroupSubscribedToTopicError("t-0 kept")) == kafka.GROUP_SUBSCRIBED_TO_TOPIC


@pytest.mark.parametrize("error, code", [
    (RemoteStorageUnavailableError("object storage unavailable: timed out"),
     kafka.UNKNOWN_SERVER_ERROR),
    (RemoteObjectNotFoundError("s3://b/p/t-0/0.log: no such object"), kafka.UNKNOWN_SERVER_ERROR),
    (UnavailableError("shard-1 restarting"), kafka.NOT_LEADER_OR_FOLLOWER),
    (StorageError("EIO"), kafka.KAFKA_STORAGE_ERROR),
])
def test_an_object_stores_failure_after_the_wire_is_an_unknown_server_error(error, code):
    # (decoded as the Kafka listener's backend gets it from the router)
    relayed = protocol.decode_reply(protocol.encode_error(1, error)).error
    assert kafka_code(relayed) == code
