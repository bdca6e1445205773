"""The wire of ``plinth topic elect-leaders`` (electLeaders and its elections reply)
and the client's checks of its arguments (client/admin.py)."""

from __future__ import annotations

import pytest

from plinth import protocol
from plinth.client.admin import election_partitions, election_type_code
from plinth.client.fetcher import TopicPartition
from plinth.errors import ElectionNotNeededError, PreferredLeaderNotAvailableError


def test_an_elect_leaders_request_carries_its_partitions_by_topic_then_partition():
    # Given partitions asked out of order, one twice
    frame = protocol.encode_elect_leaders(7, protocol.ELECTION_PREFERRED,
                                          [("b", 1), ("a", 2), ("a", 0), ("b", 1)])
    # When the router decodes it, Then each is there once, in order
    assert protocol.decode_request(frame) == protocol.ElectLeadersRequest(
        7, protocol.ELECTION_PREFERRED, (("a", 0), ("a", 2), ("b", 1)))


def test_an_elect_leaders_request_for_every_partition_carries_none():
    frame = protocol.encode_elect_leaders(8, protocol.ELECTION_UNCLEAN, None)
    assert protocol.decode_request(frame) == protocol.ElectLeadersRequest(
        8, protocol.ELECTION_UNCLEAN, None)


def test_an_empty_list_of_partitions_is_not_every_partition():
    frame = protocol.encode_elect_leaders(9, protocol.ELECTION_PREFERRED, [])
    assert protocol.decode_request(frame).partitions == ()


def test_an_elections_reply_round_trips_each_partitions_leader_and_error():
    # Given one partition elected and two refused
    results = [protocol.ElectionResult("a", 0, "shard-0"),
               protocol.ElectionResult("a", 1, "shard-1", ElectionNotNeededError(
                   "a-1: its preferred leader shard-1 leads it already")),
               protocol.ElectionResult("b", 0, "shard-2", PreferredLeaderNotAvailableError(
                   "b-0: its preferred leader shard-0 is not in sync"))]
    # When it goes over the wire
    got = protocol.decode_reply(protocol.encode_elections_reply(3, results)).elections
    # Then every field comes back, the errors as their classes with their messages
    assert [(r.topic, r.partition, r.leader, type(r.error), str(r.error)) for r in got] == \
        [(r.topic, r.partition, r.leader, type(r.error), str(r.error)) for r in results]


@pytest.mark.parametrize("given,code", [("preferred", 0), ("unclean", 1), (0, 0), (1, 1)])
def test_an_election_type_is_its_kafka_name_or_number(given, code):
    assert election_type_code(given) == code


@pytest.mark.parametrize("given", ["PREFERRED", 2, -1, True, None, 0.0])
def test_any_other_election_type_is_refused_naming_both_types(given):
    with pytest.raises(ValueError, match="neither 'preferred' \\(0\\) nor 'unclean' \\(1\\)"):
        election_type_code(given)


def test_partitions_are_taken_as_a_dict_of_topics_or_as_pairs():
    assert election_partitions({"a": [0, 2], "b": [1]}) == [("a", 0), ("a", 2), ("b", 1)]
    assert election_partitions([TopicPartition("a", 3), ("b", 0)]) == [("a", 3), ("b", 0)]
    assert election_partitions(None) is None


@pytest.mark.parametrize("given", [[("a", -1)], [("a", 4096)], [(1, 0)], [("a", "0")],
                                   [("a", 0, 1)], [("a", True)]])
def test_a_partition_that_cannot_exist_is_refused_before_anything_is_sent(given):
    with pytest.raises(ValueError, match="not a \\(topic, partition\\) pair with 0 <= "
                                         "partition < 4096"):
        election_partitions(given)


@pytest.mark.parametrize("given", ["pay", b"pay"])
def test_a_topic_name_alone_is_refused_saying_how_to_name_its_partitions(given):
    # It was read as its characters: "('p',) is not a (topic, partition) pair"
    with pytest.raises(TypeError, match=r"elect_leaders takes \(topic, partition\) pairs or "
                                        r"\{topic: \[partitions\]\}, not a "
                                        rf"{type(given).__name__}: .*pass \{{{given!r}: "):
        election_partitions(given)
