"""ElectLeaders (router/kafka/api_elections.py): Kafka's request as one Plinth
electLeaders, answered by a backend that plays the router and its controller; each
partition's outcome as Kafka's error code and message, and the requests refused as a
whole as Kafka's getErrorResponse answers them. Against a real broker:
tests/e2e/test_kafka_elect_leaders_e2e.py."""

from __future__ import annotations

import asyncio

from plinth import limits, protocol
from plinth.errors import (ElectionNotNeededError, NotAuthorizedError, PlinthTimeoutError,
                           PreferredLeaderNotAvailableError, UnknownTopicError)
from plinth.router.kafka import codec
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_cluster import api_versions
from plinth.router.kafka.api_elections import elect_leaders
from plinth.router.kafka.gateway import KafkaGateway
from plinth.router.kafka.messages import ELECT_LEADERS
from tests.router.kafka.kafka_python_bridge import kafka_python_class
from tests.router.kafka.router_backend import Gateway, RouterBackend

# The cluster the backend plays: topic -> (partitions, replicated).
TOPICS = {"orders": (3, True), "plain": (2, False)}


class ControllerLikeBackend(RouterBackend):
    """A backend that plays the router and its controller: answers electLeaders as the
    controller would for TOPICS: partition 0 of "orders" is elected, partition 1 needs
    no election, partition 2's preferred leader is not in sync; "plain" (one copy)
    needs none; an unknown topic is unknownTopic. ``error``: the whole request is
    answered with it instead. ``None`` partitions: every partition of every replicated
    topic, as the controller does."""

    def __init__(self, error=None):
        super().__init__()
        self._error = error

    def answer(self, request_id: int, request: protocol.ElectLeadersRequest) -> bytes:
        if self._error is not None:
            if isinstance(self._error, PlinthTimeoutError):
                raise self._error   # the backend's own: no reply within timeout_ms
            return protocol.encode_error(request_id, self._error)
        partitions = request.partitions if request.partitions is not None else [
            (t, p) for t, (count, replicated) in sorted(TOPICS.items()) if replicated
            for p in range(count)]
        results = [self._result(t, p) for t, p in sorted(partitions)]
        return protocol.encode_elections_reply(request_id, results)

    @staticmethod
    def _result(topic: str, partition: int) -> protocol.ElectionResult:
        if topic not in TOPICS:
            return protocol.ElectionResult(topic, partition, "", UnknownTopicError(
                f"topic {topic!r} does not exist"))
        if not TOPICS[topic][1]:
            return protocol.ElectionResult(topic, partition, "shard-0", ElectionNotNeededError(
                f"{topic}-{partition} has one copy, on shard-0; it needs no election"))
        error = {0: None,
                 1: ElectionNotNeededError(f"{topic}-1 is led by its preferred leader shard-1"),
                 2: PreferredLeaderNotAvailableError(f"{topic}-2: shard-2 is not in sync")
                 }[partition]
        return protocol.ElectionResult(topic, partition, f"shard-{partition}", error)


class Header:
    client_id = "test"


def elect(backend, topic_partitions, election_type=0, **extra) -> dict:
    body = {"election_type": election_type, "timeout_ms": 60_000,
            "topic_partitions": None if topic_partitions is None else [
                {"topic": t, "partitions": ps} for t, ps in topic_partitions.items()]} | extra
    return asyncio.run(elect_leaders(Gateway(backend), Header(), body, None))


def outcomes(response) -> dict[tuple[str, int], tuple[int, str | None]]:
    return {(r["topic"], p["partition_id"]): (p["error_code"], p["error_message"])
            for r in response["replica_election_results"] for p in r["partition_result"]}


def test_each_partition_is_answered_with_its_elections_kafka_code_and_message():
    backend = ControllerLikeBackend()
    response = elect(backend, {"orders": [2, 0, 1], "plain": [0], "gone": [4]})
    assert response["error_code"] == kafka.NONE
    assert [r["topic"] for r in response["replica_election_results"]] == ["gone", "orders",
                                                                         "plain"]
    assert outcomes(response) == {
        ("orders", 0): (kafka.NONE, None),
        ("orders", 1): (kafka.ELECTION_NOT_NEEDED, "orders-1 is led by its preferred leader shard-1"),
        ("orders", 2): (kafka.PREFERRED_LEADER_NOT_AVAILABLE, "orders-2: shard-2 is not in sync"),
        ("plain", 0): (kafka.ELECTION_NOT_NEEDED,
                       "plain-0 has one copy, on shard-0; it needs no election"),
        ("gone", 4): (kafka.UNKNOWN_TOPIC_OR_PARTITION, "topic 'gone' does not exist")}
    # One Plinth request carried them all, the type as asked
    [request] = backend.asked
    assert request.election_type == protocol.ELECTION_PREFERRED
    assert sorted(request.partitions) == [("gone", 4), ("orders", 0), ("orders", 1),
                                          ("orders", 2), ("plain", 0)]


def test_an_unclean_election_is_asked_as_unclean():
    backend = ControllerLikeBackend()
    elect(backend, {"orders": [0]}, election_type=protocol.ELECTION_UNCLEAN)
    assert backend.asked[0].election_type == protocol.ELECTION_UNCLEAN


def test_null_topic_partitions_asks_for_every_partition_and_omits_those_not_needing_one():
    # Given a request for every partition of every topic
    backend = ControllerLikeBackend()
    response = elect(backend, None)
    # Then Plinth is asked for all of them, and, as Kafka's controller answers, only the
    # partitions elected or refused are listed
    assert backend.asked[0].partitions is None
    assert outcomes(response) == {
        ("orders", 0): (kafka.NONE, None),
        ("orders", 2): (kafka.PREFERRED_LEADER_NOT_AVAILABLE, "orders-2: shard-2 is not in sync")}


def test_an_unknown_election_type_is_an_invalid_request_and_elects_nothing():
    backend = ControllerLikeBackend()
    response = elect(backend, {"orders": [0, 1]}, election_type=2)
    assert backend.asked == []
    assert response["error_code"] == kafka.INVALID_REQUEST
    message = "election type 2 is neither 0 (preferred) nor 1 (unclean)"
    assert outcomes(response) == {("orders", 0): (kafka.INVALID_REQUEST, message),
                                  ("orders", 1): (kafka.INVALID_REQUEST, message)}


def test_a_user_without_the_cluster_grant_is_refused_at_the_top_and_on_every_partition():
    refusal = NotAuthorizedError("User:bob may not elect leaders: it needs a grant of the cluster operation")
    response = elect(ControllerLikeBackend(refusal), {"orders": [0], "plain": [1]})
    assert response["error_code"] == kafka.CLUSTER_AUTHORIZATION_FAILED
    assert outcomes(response) == {
        ("orders", 0): (kafka.CLUSTER_AUTHORIZATION_FAILED, str(refusal)),
        ("plain", 1): (kafka.CLUSTER_AUTHORIZATION_FAILED, str(refusal))}
    # Asked for every partition, the refusal lists none (Kafka's "empty array")
    everything = elect(ControllerLikeBackend(refusal), None)
    assert everything["error_code"] == kafka.CLUSTER_AUTHORIZATION_FAILED
    assert everything["replica_election_results"] == []


def test_a_partition_refused_on_its_topic_is_topic_authorization_failed():
    class TopicRefusingBackend(ControllerLikeBackend):
        @staticmethod
        def _result(topic, partition):
            return protocol.ElectionResult(topic, partition, "", NotAuthorizedError(
                f"User:bob may not administer topic {topic!r} (electLeaders)"))
    response = elect(TopicRefusingBackend(), {"orders": [0]})
    assert response["error_code"] == kafka.NONE
    assert outcomes(response)[("orders", 0)][0] == kafka.TOPIC_AUTHORIZATION_FAILED


def test_no_answer_in_time_is_request_timed_out_and_the_wait_is_the_requests_timeout():
    backend = ControllerLikeBackend(PlinthTimeoutError("no reply from the router within 250 ms"))
    response = elect(backend, {"orders": [0]}, timeout_ms=250)
    assert response["error_code"] == kafka.REQUEST_TIMED_OUT
    assert outcomes(response)[("orders", 0)][0] == kafka.REQUEST_TIMED_OUT
    elect(backend, {"orders": [0]}, timeout_ms=10**9)
    elect(backend, {"orders": [0]}, timeout_ms=0)
    assert backend.timeouts_ms == [250, limits.KAFKA_ELECT_LEADERS_WAIT_MS_MAX,
                                   limits.KAFKA_ELECT_LEADERS_WAIT_MS_MAX]


def test_a_negative_partition_is_unknown_and_not_asked_and_duplicates_answer_once():
    backend = ControllerLikeBackend()
    response = elect(backend, {"orders": [-1, 0, 0]})
    assert backend.asked[0].partitions == (("orders", 0),)
    found = outcomes(response)
    assert found[("orders", -1)][0] == kafka.UNKNOWN_TOPIC_OR_PARTITION
    assert "no partition -1" in found[("orders", -1)][1]
    assert sum(len(r["partition_result"]) for r in response["replica_election_results"]) == 2


def test_partitions_that_do_not_fit_a_plinth_request_are_refused_naming_the_limit():
    backend = ControllerLikeBackend()
    many = {f"topic-{i:04d}-{'x' * 200}": [0] for i in range(400)}
    response = elect(backend, many)
    assert backend.asked == []
    assert response["error_code"] == kafka.INVALID_REQUEST
    message = outcomes(response)[(next(iter(many)), 0)][1]
    assert "an election of 400 partitions" in message
    assert f"over the request header limit of {limits.HEADER_BYTES_MAX}" in message


def test_a_v0_request_elects_preferred_leaders_and_kafka_python_reads_its_answer():
    # Given kafka-python's v0 request (no election type), decoded by our codec
    request = kafka_python_class(ELECT_LEADERS, "Request")(
        topic_partitions=[("orders", [0, 2])], timeout_ms=5000)
    request.with_header(correlation_id=3, client_id="kp")
    header, body = codec.decode_request(bytes(request.encode(header=True, version=0)))
    # When it is answered and encoded as v0
    backend = ControllerLikeBackend()
    response = asyncio.run(elect_leaders(Gateway(backend), header, body, None))
    frame = b"".join(bytes(b) for b in codec.encode_response(header, response))
    # Then a preferred election was asked, and kafka-python reads both partitions' outcomes
    assert backend.asked[0].election_type == protocol.ELECTION_PREFERRED
    theirs = kafka_python_class(ELECT_LEADERS, "Response").decode(frame[4:], version=0,
                                                                  header=True)
    [result] = theirs.replica_election_results
    assert result.topic == "orders"
    assert [(p.partition_id, p.error_code) for p in result.partition_result] == [
        (0, kafka.NONE), (2, kafka.PREFERRED_LEADER_NOT_AVAILABLE)]


def test_api_versions_advertises_elect_leaders_v0_to_v2():
    gateway = KafkaGateway(backend=None, cluster=None)
    answer = asyncio.run(api_versions(gateway, None, {}, None))
    assert {"api_key": 43, "min_version": 0, "max_version": 2} in answer["api_keys"]
