"""Kafka's classic groups at the shard (shards/classic_requests.py, through
group_requests.py): real Cap'n Proto requests in, replies out or sent later,
committed offsets in a real offset store on disk, a clock the test drives."""

from __future__ import annotations

import pytest
from kafka.protocol.old.consumer_protocol import (ConsumerProtocolMemberAssignment_v0,
                                                  ConsumerProtocolMemberMetadata_v0)

from plinth import limits, protocol, protocol_classic
from plinth.errors import (GroupNotEmptyError, GroupSubscribedToTopicError,
                           InconsistentGroupProtocolError, StaleMemberEpochError,
                           UnavailableError)
from plinth.shards.classic_requests import consumer_assignment, subscription_topics
from plinth.shards.group_requests import GroupRequests, SlotLogs
from plinth.shards.classic_group import KafkaError


class FakeClock:
    def __init__(self, now_s: float = 1000.0):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


class Sent:
    """The shard's reply callback: what it was asked to send, decoded."""

    def __init__(self):
        self.replies: list[tuple[list, protocol.ReplyView]] = []

    def __call__(self, envelope: list, header: bytes) -> None:
        self.replies.append((envelope, protocol.decode_reply(header)))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def shard(tmp_path, clock):
    sent = Sent()
    slot_logs = SlotLogs(led=lambda index: None, append=None, check_acks_all=None, reply=sent)
    groups = GroupRequests.open("shard-a", tmp_path / "a", clock, slot_logs=slot_logs)
    groups.set_partition_counts({"t": 4})   # commits are of partitions that exist
    groups.sent = sent
    yield groups
    groups.close()


def handle(groups, request, envelope=("client",), key=b""):
    header = groups.handle(protocol.decode_request(protocol_classic.encode_request(request)),
                           [key], list(envelope))
    return None if header is None else protocol.decode_reply(header).classic


def join(groups, request_id, member_id="", envelope=("client",)):
    return handle(groups, protocol_classic.ClassicJoinRequest(
        request_id, "g", member_id, "", "consumer", (("range", b"subscription"),),
        10_000, 30_000, "client-1", "/127.0.0.1"), envelope)


def settle_join(groups, clock, envelope=("client",)):
    """A new member's two joins (KIP-394), then the initial rebalance delay: its answer."""
    first = join(groups, 1, envelope=envelope)
    assert first.error_code == KafkaError.MEMBER_ID_REQUIRED
    assert join(groups, 2, first.member_id, envelope) is None   # held
    clock.now_s += limits.CLASSIC_INITIAL_REBALANCE_DELAY_MS / 1000 + 0.01
    groups.run_timers(clock.now_s)
    [(to, reply)] = groups.sent.replies
    assert to == list(envelope) and reply.request_id == 2
    return reply.classic


def test_a_held_join_is_answered_through_the_shards_reply_once_the_delay_ends(shard, clock):
    answer = settle_join(shard, clock)
    assert answer.error_code == KafkaError.NONE
    assert answer.generation_id == 1 and answer.leader == answer.member_id
    assert answer.members == [(answer.member_id, "", b"subscription")]


def test_the_timers_come_due_when_the_initial_rebalance_delay_ends(shard, clock):
    first = join(shard, 1)
    join(shard, 2, first.member_id)
    due_s = shard.next_timer_s()
    assert due_s is not None
    assert clock.now_s < due_s <= clock.now_s + limits.CLASSIC_INITIAL_REBALANCE_DELAY_MS / 1000 + 0.01


def test_a_sync_commit_and_describe_show_a_kafka_group_with_its_partitions(shard, clock):
    member = settle_join(shard, clock).member_id
    assignment = ConsumerProtocolMemberAssignment_v0(0, [("t", [0, 2])], b"").encode()
    synced = handle(shard, protocol_classic.ClassicSyncRequest(
        3, "g", 1, member, "", "consumer", "range", ((member, assignment),)))
    assert (synced.error_code, synced.assignment) == (KafkaError.NONE, assignment)
    commit = protocol.encode_commit_offsets(4, "commitOffsets", "g", member, 1, {("t", 0): 42},
                                            classic=True)
    assert protocol.decode_reply(shard.handle(protocol.decode_request(commit), [b""])).error is None
    info = shard.info("g")
    assert (info.protocol_type, info.state, info.epoch, info.leader) == (
        "consumer", "Stable", 1, member)
    assert info.committed == {("t", 0): 42}
    assert info.members[0].assignment == {("t", 0), ("t", 2)}
    assert info.members[0].client_id == "client-1"
    assert "g" in shard.names()


def test_a_kafka_group_is_listed_in_each_state_of_its_rebalance_and_once(shard, clock):
    # Given a new member whose join is held for the initial rebalance delay
    first = join(shard, 1)
    join(shard, 2, first.member_id)
    # Then the group is listed preparing its rebalance, with its protocol type
    assert shard.listings() == [protocol.GroupListing("g", "PreparingRebalance", "consumer")]
    # When the delay ends / Then it waits for the leader's assignment
    clock.now_s += limits.CLASSIC_INITIAL_REBALANCE_DELAY_MS / 1000 + 0.01
    shard.run_timers(clock.now_s)
    assert shard.listings() == [protocol.GroupListing("g", "CompletingRebalance", "consumer")]
    # When the leader syncs and commits (its offsets kept in the shard's offset store)
    member = first.member_id
    handle(shard, protocol_classic.ClassicSyncRequest(
        3, "g", 1, member, "", "consumer", "range", ((member, b""),)))
    commit = protocol.encode_commit_offsets(4, "commitOffsets", "g", member, 1, {("t", 0): 42},
                                            classic=True)
    shard.handle(protocol.decode_request(commit), [b""])
    # Then it is Stable, and listed once: as the Kafka group, not also as offsets alone
    assert shard.listings() == [protocol.GroupListing("g", "Stable", "consumer")]


def test_a_classic_commit_of_another_generation_is_refused_and_stores_nothing(shard, clock):
    member = settle_join(shard, clock).member_id
    commit = protocol.encode_commit_offsets(4, "commitOffsets", "g", member, 7, {("t", 0): 42},
                                            classic=True)
    with pytest.raises(StaleMemberEpochError, match="generation 7"):
        shard.handle(protocol.decode_request(commit), [b""])
    assert shard.info("g").committed == {}


def test_a_plinth_member_cannot_join_a_kafka_group(shard, clock):
    settle_join(shard, clock)
    heartbeat = protocol.encode_group_heartbeat(9, "g", "", 0, ["t"], set(), 3000, "")
    with pytest.raises(InconsistentGroupProtocolError, match="Kafka clients"):
        shard.handle(protocol.decode_request(heartbeat), [b""])


def test_a_kafka_member_cannot_join_a_group_with_plinth_members(shard):
    heartbeat = protocol.encode_group_heartbeat(9, "g", "", 0, ["t"], set(), 3000, "")
    assert protocol.decode_reply(shard.handle(protocol.decode_request(heartbeat), [b""])).error \
        is None
    assert join(shard, 1).error_code == KafkaError.INCONSISTENT_GROUP_PROTOCOL


def test_closing_the_shard_answers_a_held_join_not_coordinator(shard, clock):
    first = join(shard, 1)
    assert join(shard, 2, first.member_id) is None
    shard.close()
    [(_, reply)] = shard.sent.replies
    assert reply.classic.error_code == KafkaError.NOT_COORDINATOR


def kafka_member(groups, clock, protocol_type="consumer", metadata=b"subscription"):
    """A Kafka member in generation 1 of group g, with this metadata for range."""
    def join_as(request_id, member_id=""):
        return handle(groups, protocol_classic.ClassicJoinRequest(
            request_id, "g", member_id, "", protocol_type, (("range", metadata),), 10_000,
            30_000, "client-1", "/127.0.0.1"))
    assert join_as(2, join_as(1).member_id) is None   # held for the initial delay
    clock.now_s += limits.CLASSIC_INITIAL_REBALANCE_DELAY_MS / 1000 + 0.01
    groups.run_timers(clock.now_s)


def delete_offsets(groups, partitions):
    header = groups.handle(protocol.decode_request(
        protocol.encode_delete_offsets(9, "g", set(partitions))), [b""], ["admin"])
    return {(d.topic, d.partition): d.error
            for d in protocol.decode_reply(header).offset_deletions}


def test_offsets_of_topics_a_kafka_groups_consumers_subscribe_to_are_kept_the_others_deleted(
        shard, clock):
    # Given offsets of topics t and u, then a Kafka consumer subscribed to t
    shard.set_partition_counts({"t": 4, "u": 1})
    commit = protocol.CommitOffsetsRequest(1, "g", "", -1, {("t", 0): 3, ("u", 0): 4},
                                           classic=True)
    shard.handle(commit, [b""], ["admin"])
    kafka_member(shard, clock, metadata=ConsumerProtocolMemberMetadata_v0(0, ["t"], b"").encode())
    # When both are deleted / Then t's is kept (GROUP_SUBSCRIBED_TO_TOPIC), u's deleted
    outcomes = delete_offsets(shard, [("t", 0), ("u", 0)])
    assert isinstance(outcomes[("t", 0)], GroupSubscribedToTopicError)
    assert outcomes[("u", 0)] is None
    assert shard.info("g").committed == {("t", 0): 3}


def test_a_kafka_consumers_subscription_not_read_keeps_every_offset(shard, clock):
    # Given a Kafka consumer whose subscription cannot be read, and an offset of u
    shard.set_partition_counts({"t": 4, "u": 1})
    shard.handle(protocol.CommitOffsetsRequest(1, "g", "", -1, {("u", 0): 4}, classic=True),
                 [b""], ["admin"])
    kafka_member(shard, clock, metadata=b"subscription")
    # Then u's offset is kept too: the member may be using it
    assert isinstance(delete_offsets(shard, [("u", 0)])[("u", 0)], GroupSubscribedToTopicError)


def test_a_kafka_group_of_another_protocol_type_keeps_its_offsets_while_it_has_members(
        shard, clock):
    kafka_member(shard, clock, protocol_type="connect")
    with pytest.raises(GroupNotEmptyError, match="group 'g' has 1 active Kafka members of "
                                                 "protocol type 'connect', not 'consumer'"):
        delete_offsets(shard, [("t", 0)])


def test_a_consumer_assignment_is_read_as_kafka_python_writes_it():
    data = ConsumerProtocolMemberAssignment_v0(1, [("a", [0, 1]), ("b", [5])], b"x").encode()
    assert consumer_assignment(data) == {("a", 0), ("a", 1), ("b", 5)}


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\x7f\xff\xff\xff",
                                  b"\x00\x00\x00\x00\x00\x01\xff\xff",
                                  b"\x00\x00\x00\x00\x00\x01\x00\x01t\x7f\xff\xff\xff"])
def test_bytes_that_are_no_consumer_assignment_show_no_partitions(data):
    assert consumer_assignment(data) == set()


def test_consumer_subscriptions_are_read_as_kafka_python_writes_them():
    a = ConsumerProtocolMemberMetadata_v0(0, ["a", "b"], b"x").encode()
    b = ConsumerProtocolMemberMetadata_v0(3, ["c"], b"").encode() + b"\x00\x00\x00\x00"
    assert subscription_topics([a, b]) == {"a", "b", "c"}
    assert subscription_topics([]) == frozenset()


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\xff\xff\xff\xff",
                                  b"\x00\x00\x7f\xff\xff\xff",
                                  b"\x00\x00\x00\x00\x00\x01\x00\x05ab"])
def test_a_subscription_that_cannot_be_read_leaves_the_topics_unknown(data):
    good = ConsumerProtocolMemberMetadata_v0(0, ["a"], b"").encode()
    assert subscription_topics([good, data]) is None


def test_while_the_shard_loads_every_classic_request_is_answered_load_in_progress_and_changes_nothing(
        shard, clock):
    # Given a classic group with a member
    member = settle_join(shard, clock).member_id
    loading = UnavailableError("shard-a is recovering")
    requests = [
        protocol_classic.ClassicJoinRequest(7, "g", member, "", "consumer",
                                            (("range", b"subscription"),), 10_000, 30_000,
                                            "client-1", "/127.0.0.1"),
        protocol_classic.ClassicSyncRequest(8, "g", 1, member, "", "consumer", "range", ()),
        protocol_classic.ClassicHeartbeatRequest(9, "g", 1, member),
        protocol_classic.ClassicLeaveRequest(10, "g", ((member, ""),))]
    for request in requests:
        # When each kind arrives while the shard loads its groups
        decoded = protocol.decode_request(protocol_classic.encode_request(request))
        reply = protocol.decode_reply(shard.refuse_while_loading(decoded, loading))
        # Then it is answered COORDINATOR_LOAD_IN_PROGRESS, Kafka's retriable code
        assert (reply.request_id, reply.classic.error_code) == \
            (request.request_id, KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
    # And the member is still there, in its generation; a Plinth request gets the error
    assert handle(shard, protocol_classic.ClassicHeartbeatRequest(11, "g", 1, member)) \
        .error_code == KafkaError.NONE
    with pytest.raises(UnavailableError, match="shard-a is recovering"):
        shard.refuse_while_loading(protocol.decode_request(
            protocol.encode_group_request(12, "fetchOffsets", "g")), loading)
