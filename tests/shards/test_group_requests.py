"""Group requests (shards/group_requests.py): real Cap'n Proto requests in, replies out,
committed offsets in a real offset store on disk, a clock the test drives."""

from __future__ import annotations

import pytest

from plinth import limits, protocol
from plinth.errors import (InvalidConfigError, MalformedRequestError, OffsetMetadataTooLargeError,
                           UnavailableError, UnknownGroupError, UnknownMemberIdError)
from plinth.shards.group_requests import GroupRequests


class FakeClock:
    def __init__(self, now_s: float = 1000.0):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def open_groups(tmp_path, clock):
    """Opens GroupRequests on a shard dir (default: one per test), closing all at the end."""
    opened = []

    def open_on(name: str = "shard") -> GroupRequests:
        opened.append(GroupRequests.open(f"shard-{name}", tmp_path / name, clock))
        return opened[-1]
    yield open_on
    for groups in opened:
        groups.close()


def ask(groups: GroupRequests, header: bytes) -> protocol.ReplyView:
    """Decode the request as the shard does, handle it, decode the reply as a client does."""
    return protocol.decode_reply(groups.handle(protocol.decode_request(header)))


def join(groups, member_id="", epoch=0, owned=frozenset(), timeout_ms=3000, request_id=1):
    return ask(groups, protocol.encode_group_heartbeat(
        request_id, "g", member_id, epoch, ["t"], set(owned), timeout_ms, ""))


def test_a_new_member_gets_an_id_and_every_partition_of_its_topics(open_groups):
    # Given a shard that knows topic t has 3 partitions
    groups = open_groups()
    groups.set_partition_counts({"t": 3})
    # When a member joins group g
    reply = join(groups, request_id=7)
    # Then it gets a member id, epoch 1, and all three partitions
    assert reply.request_id == 7 and reply.error is None
    assert reply.heartbeat.member_id and reply.heartbeat.member_epoch == 1
    assert reply.heartbeat.assignment == {("t", 0), ("t", 1), ("t", 2)}
    assert groups.names() == ["g"]


def test_a_session_timeout_outside_the_limits_is_refused_with_the_limits(open_groups):
    groups = open_groups()
    with pytest.raises(InvalidConfigError, match=f"session_timeout_ms=100 is outside "
                                                 f"{limits.SESSION_TIMEOUT_MS_MIN}.."
                                                 f"{limits.SESSION_TIMEOUT_MS_MAX}"):
        join(groups, timeout_ms=100)


def test_a_member_silent_for_its_session_timeout_is_removed_on_the_loops_clock(open_groups, clock):
    # Given a member with a 3 s session
    groups = open_groups()
    groups.set_partition_counts({"t": 1})
    join(groups, timeout_ms=3000)
    assert groups.next_timer_s() == clock.now_s + 3.0
    # When 2.9 s pass / Then it is still a member
    groups.run_timers(clock.now_s + 2.9)
    assert len(groups.info("g").members) == 1
    # When 3.1 s have passed / Then it is gone, and so is its group (it had no offsets)
    groups.run_timers(clock.now_s + 3.1)
    assert groups.names() == [] and groups.next_timer_s() is None


def test_committed_offsets_are_durable_and_answered_after_the_shard_reopens(open_groups):
    # Given offsets committed for group g (no members: a reset, as an admin does)
    groups = open_groups("a")
    groups.set_partition_counts({"t": 2})
    reply = ask(groups, protocol.encode_commit_offsets(
        3, "resetOffsets", "g", "", 0, {("t", 0): 42, ("t", 1): 7}))
    assert reply.error is None
    groups.close()
    # When the shard opens its groups again / Then they come back, in requests and in stats
    reopened = open_groups("a")
    reply = ask(reopened, protocol.encode_group_request(4, "fetchOffsets", "g"))
    assert reply.committed == {("t", 0): 42, ("t", 1): 7}
    assert reopened.committed_offsets() == {"g": {("t", 0): 42, ("t", 1): 7}}


def test_plinth_groups_are_listed_stable_with_members_and_empty_with_offsets_only(open_groups):
    # Given group g with a member, and group a known only by offsets an admin reset
    groups = open_groups()
    groups.set_partition_counts({"t": 1})
    join(groups)
    ask(groups, protocol.encode_commit_offsets(2, "resetOffsets", "a", "", 0, {("t", 0): 5}))
    # When the shard lists its groups / Then by name, a Empty and g Stable, as
    # DescribeGroups shows them, with no classic protocol type
    assert groups.listings() == [protocol.GroupListing("a", "Empty", ""),
                                 protocol.GroupListing("g", "Stable", "")]


def test_metadata_committed_by_a_member_and_a_reset_is_answered_by_fetch_offsets_after_a_reopen(
        open_groups):
    # Given a member's commit with metadata, and a reset of another group with metadata
    groups = open_groups("a")
    groups.set_partition_counts({"t": 2})
    member = join(groups).heartbeat
    reply = ask(groups, protocol.encode_commit_offsets(
        2, "commitOffsets", "g", member.member_id, member.member_epoch,
        {("t", 0): 42, ("t", 1): 7}, metadata={("t", 0): "hello"}))
    assert reply.error is None
    ask(groups, protocol.encode_commit_offsets(3, "resetOffsets", "h", "", 0, {("t", 1): 9},
                                               metadata={("t", 1): "world"}))
    groups.close()
    # When the shard opens its groups again and each group's offsets are fetched
    reopened = open_groups("a")
    g = ask(reopened, protocol.encode_group_request(4, "fetchOffsets", "g"))
    h = ask(reopened, protocol.encode_group_request(5, "fetchOffsets", "h"))
    # Then each offset comes back with the metadata committed with it, if any
    assert (g.committed, g.committed_metadata) == ({("t", 0): 42, ("t", 1): 7},
                                                   {("t", 0): "hello"})
    assert (h.committed, h.committed_metadata) == ({("t", 1): 9}, {("t", 1): "world"})


def test_a_commit_whose_metadata_is_over_the_limit_is_refused_and_stores_nothing(open_groups):
    # Given a group with no members
    groups = open_groups()
    groups.set_partition_counts({"t": 2})
    too_long = "x" * (limits.OFFSET_METADATA_BYTES_MAX + 1)
    # When a commit carries one offset with metadata one byte over the limit
    with pytest.raises(OffsetMetadataTooLargeError, match=f"t-1 is {len(too_long)} bytes"):
        ask(groups, protocol.encode_commit_offsets(
            2, "resetOffsets", "g", "", 0, {("t", 0): 1, ("t", 1): 2},
            metadata={("t", 1): too_long}))
    # Then neither offset was stored
    assert groups.committed_offsets() == {}


def test_deleting_offsets_answers_each_partition_and_keeps_those_its_members_subscribe_to(
        open_groups):
    # Given a group with offsets of topics t and u, then a member subscribed to t
    groups = open_groups()
    groups.set_partition_counts({"t": 1, "u": 2})
    ask(groups, protocol.encode_commit_offsets(1, "resetOffsets", "g", "", 0,
                                               {("t", 0): 3, ("u", 0): 4, ("u", 1): 5}))
    join(groups)
    # When t-0, u-0 and u-7 (no such partition) are deleted
    reply = ask(groups, protocol.encode_delete_offsets(2, "g", {("u", 7), ("t", 0), ("u", 0)}))
    # Then each is answered, by topic then partition: t-0 kept (subscribed), u-0 deleted
    assert reply.request_id == 2 and reply.error is None
    assert [(d.topic, d.partition, type(d.error).__name__) for d in reply.offset_deletions] == [
        ("t", 0, "GroupSubscribedToTopicError"), ("u", 0, "NoneType"),
        ("u", 7, "PartitionOutOfRangeError")]
    assert "subscribed to topic 't'" in str(reply.offset_deletions[0].error)
    assert ask(groups, protocol.encode_group_request(3, "fetchOffsets", "g")).committed == \
        {("t", 0): 3, ("u", 1): 5}
    # And a group unknown here fails whole
    with pytest.raises(UnknownGroupError, match="group 'other' is not known"):
        ask(groups, protocol.encode_delete_offsets(4, "other", {("u", 0)}))


def test_describing_an_unknown_group_says_what_it_lacks_and_names_the_shard(open_groups):
    groups = open_groups("x")
    with pytest.raises(UnknownGroupError, match=r"group 'nope' is not known: it has no members "
                                                r"and no committed offsets \(its coordinator "
                                                r"is shard-x\)"):
        ask(groups, protocol.encode_group_request(5, "describeGroup", "nope"))


def test_a_group_handed_over_keeps_its_members_offsets_and_assignment_on_the_new_shard(
        open_groups, clock):
    # Given group g with one member and a committed offset on shard a
    old, new = open_groups("a"), open_groups("b")
    for groups in (old, new):
        groups.set_partition_counts({"t": 2})
    member = join(old).heartbeat
    ask(old, protocol.encode_commit_offsets(
        2, "commitOffsets", "g", member.member_id, member.member_epoch, {("t", 1): 9}))
    # When shard a hands it over and shard b adopts it, a while later
    clock.now_s += 60
    new.adopt(old.hand_over(["g"]))
    # Then its member's session starts again at the adoption, not at its last heartbeat to a
    assert new.next_timer_s() == clock.now_s + 3.0
    # And the member carries on at b with its id, epoch and partitions, and its offset
    again = join(new, member.member_id, member.member_epoch, member.assignment, request_id=3)
    assert (again.error, again.heartbeat.member_id) == (None, member.member_id)
    assert again.heartbeat.assignment == member.assignment
    assert new.committed_offsets() == {"g": {("t", 1): 9}}
    # And shard a answers for it no more: the client retries at b
    assert old.names() == []
    with pytest.raises(UnavailableError, match="moved to another shard"):
        join(old, member.member_id, member.member_epoch)


def test_the_client_key_the_router_adds_decides_whose_member_it_is(open_groups):
    # Given a member joined by client key B (the router's last frame)
    groups = open_groups()
    groups.set_partition_counts({"t": 1})
    key_b, key_a = b"B" * limits.CLIENT_KEY_TEXT_BYTES, b"A" * limits.CLIENT_KEY_TEXT_BYTES

    def ask_as(key: bytes, header: bytes) -> protocol.ReplyView:
        return protocol.decode_reply(groups.handle(protocol.decode_request(header), [key]))
    b = ask_as(key_b, protocol.encode_group_heartbeat(1, "g", "", 0, ["t"], set(), 3000, ""))
    # When key A sends B's leave / Then it is refused and B stays
    leave = protocol.encode_group_heartbeat(2, "g", b.heartbeat.member_id, protocol.LEAVE_EPOCH,
                                            ["t"], set(), 3000, "")
    with pytest.raises(UnknownMemberIdError, match="for this client"):
        ask_as(key_a, leave)
    assert [m.member_id for m in groups.info("g").members] == [b.heartbeat.member_id]
    # And a key frame longer than a key is malformed
    with pytest.raises(MalformedRequestError, match="holds 100 bytes"):
        ask_as(b"x" * 100, leave)
    # And B itself may leave
    assert ask_as(key_b, leave).error is None and groups.names() == []
