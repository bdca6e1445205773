"""group_coordinator.py: membership, incremental hand-over, expiry and commits, no sockets."""

from __future__ import annotations

import pytest

from plinth import limits, protocol
from plinth.errors import (GroupMaxSizeReachedError, GroupNotEmptyError,
                           GroupSubscribedToTopicError, InvalidGroupError, NotOwnerError,
                           OffsetMetadataTooLargeError, OffsetOutOfRangeError,
                           PartitionOutOfRangeError,
                           StaleMemberEpochError, TooManyGroupsError, UnavailableError,
                           UnknownGroupError, UnknownMemberIdError, UnknownTopicError)
from plinth.shards.group_coordinator import GroupCoordinator
from plinth.shards.offset_store import OffsetStore

SESSION_MS = 3000


@pytest.fixture
def coordinator(tmp_path):
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 6})
    yield coord
    store.close()


def join(coord, now=0.0, group="g"):
    return coord.heartbeat(group, "", 0, ["t"], set(), SESSION_MS, "", now)


def beat(coord, result, owned, now=0.0, group="g"):
    return coord.heartbeat(group, result.member_id, result.member_epoch, ["t"], owned,
                           SESSION_MS, "", now)


def test_a_lone_member_gets_every_partition(coordinator):
    first = join(coordinator)
    assert first.assignment == {("t", p) for p in range(6)}
    assert first.member_epoch == 1 and first.heartbeat_interval_ms == SESSION_MS // 5


def test_a_partition_moves_only_after_its_old_owner_reports_it_revoked(coordinator):
    # Given member A owning all six partitions
    a = join(coordinator)
    a = beat(coordinator, a, a.assignment)
    owned_a = set(a.assignment)
    # When B joins
    b = join(coordinator)
    # Then B gets nothing yet (A still owns everything) and A is told to give up three
    assert b.assignment == set()
    a = beat(coordinator, a, owned_a)
    kept = a.assignment
    assert len(kept) == 3 and kept < owned_a
    # And once A reports it owns only what it kept, B gets the other three
    a = beat(coordinator, a, kept)
    b = beat(coordinator, b, set())
    assert b.assignment == owned_a - kept


def test_partitions_told_to_a_member_are_not_given_to_another_before_it_reports_them_revoked(
        coordinator):
    # Given member A told to own all six partitions, which it has not reported yet
    a = join(coordinator)
    # When B joins before A's next heartbeat
    b = join(coordinator)
    # Then B gets nothing: A may be taking all six while B's answer travels
    assert b.assignment == set()
    # And a report of A's sent before it took its answer frees nothing either
    a = beat(coordinator, a, set())
    kept = a.assignment
    assert len(kept) == 3
    assert beat(coordinator, b, set()).assignment == set()
    # Only A's report after the answer that took three away frees them
    a = beat(coordinator, a, kept)
    b = beat(coordinator, b, set())
    assert b.assignment == {("t", p) for p in range(6)} - kept


def test_a_member_waiting_for_partitions_their_old_owner_has_not_revoked_comes_back_soon(
        coordinator):
    # Given A owning all six partitions, and B joining
    a = beat(coordinator, join(coordinator), {("t", p) for p in range(6)})
    b = join(coordinator)
    # Then B, waiting for three of them, is asked back after the shortest interval
    assert b.assignment == set()
    assert b.heartbeat_interval_ms == limits.HEARTBEAT_INTERVAL_MS_MIN
    # And A, told to give them up, and B once it has them, at the usual interval
    a = beat(coordinator, a, a.assignment)
    a = beat(coordinator, a, a.assignment)
    assert a.heartbeat_interval_ms == SESSION_MS // 5
    b = beat(coordinator, b, set())
    assert len(b.assignment) == 3 and b.heartbeat_interval_ms == SESSION_MS // 5


def test_a_silent_member_is_expired_after_its_session_timeout_and_its_partitions_freed(coordinator):
    a = join(coordinator, now=0.0)
    a = beat(coordinator, a, a.assignment, now=0.0)
    b = join(coordinator, now=0.0)
    # A keeps heartbeating with its three kept partitions; B never comes back
    a = beat(coordinator, a, a.assignment, now=0.0)
    a = beat(coordinator, a, a.assignment, now=0.0)
    assert coordinator.expire(now_s=SESSION_MS / 1000 - 0.1) == []
    a = beat(coordinator, a, a.assignment, now=SESSION_MS / 1000 - 0.1)
    assert coordinator.expire(now_s=SESSION_MS / 1000 + 0.1) == [("g", b.member_id)]
    a = beat(coordinator, a, a.assignment, now=SESSION_MS / 1000 + 0.2)
    assert a.assignment == {("t", p) for p in range(6)}


def test_unknown_and_fenced_members_are_told_to_rejoin(coordinator):
    a = join(coordinator)
    with pytest.raises(UnknownMemberIdError, match="rejoin"):
        coordinator.heartbeat("g", "nobody", 1, ["t"], set(), SESSION_MS, "", 0.0)
    with pytest.raises(StaleMemberEpochError, match=f"epoch {a.member_epoch + 5}"):
        coordinator.heartbeat("g", a.member_id, a.member_epoch + 5, ["t"], set(), SESSION_MS, "", 0.0)


def test_a_leaving_member_frees_its_partitions_at_once(coordinator):
    a = join(coordinator)
    b = join(coordinator)
    coordinator.heartbeat("g", a.member_id, -1, ["t"], set(), SESSION_MS, "", 0.0)
    b = beat(coordinator, b, set())
    assert b.assignment == {("t", p) for p in range(6)}


def test_commits_are_accepted_only_for_owned_partitions(coordinator):
    a = join(coordinator)
    coordinator.commit("g", a.member_id, a.member_epoch, {("t", 0): 10})
    assert coordinator.committed("g") == {("t", 0): 10}
    b = join(coordinator)
    with pytest.raises(NotOwnerError, match="does not own t-"):
        coordinator.commit("g", b.member_id, b.member_epoch, {("t", 0): 11})
    with pytest.raises(UnknownMemberIdError):
        coordinator.commit("g", "ghost", 1, {("t", 0): 12})


def test_offsets_can_be_reset_only_while_the_group_has_no_members(coordinator):
    a = join(coordinator)
    with pytest.raises(GroupNotEmptyError, match="1 active member;"):
        coordinator.reset_offsets("g", {("t", 0): 0})
    coordinator.heartbeat("g", a.member_id, -1, ["t"], set(), SESSION_MS, "", 0.0)
    coordinator.reset_offsets("g", {("t", 0): 3})
    assert coordinator.committed("g") == {("t", 0): 3}


def test_each_kind_of_commit_stores_the_metadata_given_with_its_offsets(coordinator):
    # Given a member's commit with metadata for one of its two offsets
    a = join(coordinator)
    coordinator.commit("g", a.member_id, a.member_epoch, {("t", 0): 10, ("t", 1): 11},
                       metadata={("t", 0): "member's"})
    # Then the group has it back with its offsets
    assert coordinator.committed("g") == {("t", 0): 10, ("t", 1): 11}
    assert coordinator.committed_metadata("g") == {("t", 0): "member's"}
    # And a Kafka client's commit and an administrator's reset (no members) store theirs
    coordinator.commit_classic("kafka", {("t", 2): 5}, {("t", 2): "streams state"})
    coordinator.reset_offsets("reset", {("t", 3): 0}, {("t", 3): "reset by ops"})
    assert coordinator.committed_metadata("kafka") == {("t", 2): "streams state"}
    assert coordinator.committed_metadata("reset") == {("t", 3): "reset by ops"}


@pytest.mark.parametrize("commit", ["member", "classic", "reset"])
def test_metadata_over_the_limit_refuses_the_whole_commit_naming_group_partition_size_and_limit(
        coordinator, commit):
    # Given a commit of two offsets: one's metadata at the limit, the other's one byte
    # over (counted in UTF-8 bytes: "é" is two)
    limit = limits.OFFSET_METADATA_BYTES_MAX
    offsets = {("t", 0): 1, ("t", 1): 2}
    metadata = {("t", 0): "a" * limit, ("t", 1): "é" * (limit // 2) + "b"}
    a = join(coordinator) if commit == "member" else None
    # When it is committed
    with pytest.raises(OffsetMetadataTooLargeError,
                       match=f"group 'g': the metadata of the offset of t-1 is {limit + 1} "
                             f"bytes, over the limit of {limit} bytes"):
        if commit == "member":
            coordinator.commit("g", a.member_id, a.member_epoch, offsets, metadata=metadata)
        elif commit == "classic":
            coordinator.commit_classic("g", offsets, metadata)
        else:
            coordinator.reset_offsets("g", offsets, metadata)
    # Then nothing of it was stored: Plinth's commits are all or none
    assert coordinator.committed("g") == {} and coordinator.committed_metadata("g") == {}


def test_a_group_is_deleted_only_without_members_and_stays_deleted_after_a_restart(tmp_path):
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 2})
    a = join(coord)
    coord.commit("g", a.member_id, a.member_epoch, {("t", 0): 5})
    coord.reset_offsets("kept", {("t", 1): 7})
    with pytest.raises(GroupNotEmptyError, match="1 active member; stop them before deleting"):
        coord.delete_group("g")
    coord.heartbeat("g", a.member_id, -1, ["t"], set(), SESSION_MS, "", 0.0)   # leaves
    coord.delete_group("g")
    assert coord.committed("g") == {} and "g" not in store.groups()
    with pytest.raises(UnknownGroupError, match="no committed offsets to delete"):
        coord.delete_group("g")
    store.close()
    # The deletion is in the log: after a reopen the group is still gone, the other kept
    store = OffsetStore.open(tmp_path)
    assert store.groups() == {"kept"} and store.offsets("kept") == {("t", 1): 7}
    store.close()


def test_deleting_a_topic_forgets_every_groups_offsets_of_it_and_a_group_left_without_any(
        tmp_path):
    # Given a group with offsets of two topics, one with a member and offsets of one
    # topic, and one with offsets of the other topic only
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 2, "old": 2})
    coord.reset_offsets("both", {("t", 0): 4, ("old", 0): 5, ("old", 1): 6})
    a = join(coord, group="busy")
    coord.commit("busy", a.member_id, a.member_epoch, {("t", 1): 1})
    coord.reset_offsets("only-old", {("old", 1): 9})
    # When the controller's view no longer has topic old (it was deleted)
    coord.set_partition_counts({"t": 2})
    # Then its offsets are gone from every group, the group that had nothing else is
    # deleted, and the others keep the rest
    assert coord.committed("both") == {("t", 0): 4}
    assert coord.committed("busy") == {("t", 1): 1}
    assert "only-old" not in store.groups() and coord.committed("only-old") == {}
    store.close()
    # And so after a restart: a topic created again under the name starts afresh
    store = OffsetStore.open(tmp_path)
    assert store.groups() == {"both", "busy"}
    assert store.offsets("both") == {("t", 0): 4}
    store.close()


def test_a_group_whose_offsets_went_with_a_deleted_topic_while_it_had_members_goes_with_them(
        tmp_path):
    # Given a group whose one member committed offsets of topic old only
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"old": 2})
    member = coord.heartbeat("busy", "", 0, ["old"], set(), SESSION_MS, "", 0.0)
    coord.commit("busy", member.member_id, member.member_epoch, {("old", 0): 3})
    # When topic old is deleted while the member is still in the group, and it leaves
    coord.set_partition_counts({})
    coord.heartbeat("busy", member.member_id, protocol.LEAVE_EPOCH, ["old"], set(),
                    SESSION_MS, "", 0.0)
    # Then the group, with neither members nor offsets, is gone as any such group is:
    # it was kept (its stored assignor setting), listed as Empty with no offsets for
    # the offsets' retention, while groups deleted at another moment were unknown
    assert coord.group_names() == [] and "busy" not in store.groups()
    store.close()
    store = OffsetStore.open(tmp_path)
    assert store.groups() == set()
    store.close()


def test_deleting_some_offsets_forgets_them_durably_and_an_offset_never_committed_is_no_error(
        tmp_path):
    # Given a group without members with offsets of three partitions
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 6})
    coord.reset_offsets("g", {("t", 0): 1, ("t", 1): 2, ("t", 2): 3}, {("t", 0): "meta"})
    # When two of them and one never committed are deleted
    outcomes = coord.delete_offsets("g", [("t", 1), ("t", 5), ("t", 0)])
    # Then each is answered without an error, by partition, and only the third is left
    assert outcomes == {("t", 0): None, ("t", 1): None, ("t", 5): None}
    assert coord.committed("g") == {("t", 2): 3} and coord.committed_metadata("g") == {}
    store.close()
    # And so after a restart: the deletions are in the offsets log
    store = OffsetStore.open(tmp_path)
    assert store.offsets("g") == {("t", 2): 3} and store.metadata("g") == {}
    store.close()


def test_deleting_offsets_keeps_those_of_topics_the_members_subscribe_to_and_deletes_the_rest(
        tmp_path):
    # Given a group with offsets of topics t and u, and then a member subscribed to t
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 2, "u": 2})
    coord.reset_offsets("g", {("t", 0): 4, ("u", 0): 5, ("u", 1): 6})
    join(coord)
    # When offsets of both topics are deleted
    outcomes = coord.delete_offsets("g", [("t", 0), ("u", 0), ("u", 1)])
    # Then t's is kept, naming the member that subscribes, and u's are deleted (Kafka's
    # GROUP_SUBSCRIBED_TO_TOPIC for that partition only)
    assert isinstance(outcomes[("t", 0)], GroupSubscribedToTopicError)
    assert "group 'g': cannot delete the offset of t-0: the group has 1 active member, 1 " \
        "of them subscribed to topic 't'" in str(outcomes[("t", 0)])
    assert outcomes[("u", 0)] is None and outcomes[("u", 1)] is None
    assert coord.committed("g") == {("t", 0): 4}
    store.close()


def test_deleting_offsets_keeps_those_a_kafka_groups_members_subscribe_to(coordinator):
    # Given offsets of topics t and u committed by a Kafka group, whose members
    # (classic_requests.py says) subscribe to t
    coordinator.set_partition_counts({"t": 6, "u": 1})
    coordinator.commit_classic("g", {("t", 0): 4, ("u", 0): 5})
    # When both are deleted
    outcomes = coordinator.delete_offsets("g", [("t", 0), ("u", 0)],
                                          classic_subscribes=lambda topic: topic == "t")
    # Then t's is kept and u's deleted
    assert isinstance(outcomes[("t", 0)], GroupSubscribedToTopicError)
    assert "its Kafka members subscribe to topic 't'" in str(outcomes[("t", 0)])
    assert outcomes[("u", 0)] is None and coordinator.committed("g") == {("t", 0): 4}
    # And a Kafka group with members but no offsets is known: nothing to delete is no error
    assert coordinator.delete_offsets("k", [("u", 0)], classic_subscribes=lambda _: False) == \
        {("u", 0): None}


def test_deleting_offsets_of_an_unknown_group_fails_whole_and_of_unknown_partitions_each(
        coordinator):
    with pytest.raises(UnknownGroupError, match="group 'nobody' is not known: it has no "
                                                "members and no committed offsets"):
        coordinator.delete_offsets("nobody", [("t", 0)])
    # Given a group with an offset of t-0
    coordinator.reset_offsets("g", {("t", 0): 1, ("t", 1): 1})
    # When it is deleted with partitions that do not exist
    outcomes = coordinator.delete_offsets("g", [("nope", 0), ("t", 6), ("t", 0)])
    # Then those are refused each, naming the partition, and the existing one is deleted
    assert isinstance(outcomes[("nope", 0)], UnknownTopicError)
    assert "cannot delete the offset of nope-0: unknown topic 'nope'" in \
        str(outcomes[("nope", 0)])
    assert isinstance(outcomes[("t", 6)], PartitionOutOfRangeError)
    assert "t-6: topic 't' has 6 partitions" in str(outcomes[("t", 6)])
    assert outcomes[("t", 0)] is None and coordinator.committed("g") == {("t", 1): 1}


def test_a_group_left_without_members_or_offsets_by_deleting_offsets_is_deleted(tmp_path):
    # Given a group without members with one offset
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 2})
    coord.reset_offsets("g", {("t", 0): 1})
    # When it is deleted
    coord.delete_offsets("g", [("t", 0)])
    # Then the group is gone, as Kafka deletes an empty group without offsets, and
    # stays gone after a restart
    assert "g" not in store.groups() and coord.group_names() == []
    with pytest.raises(UnknownGroupError):
        coord.delete_offsets("g", [("t", 0)])
    store.close()
    store = OffsetStore.open(tmp_path)
    assert store.groups() == set()
    store.close()


def test_offsets_of_partitions_that_do_not_exist_or_negative_ones_are_refused(coordinator):
    # Given topic t with 6 partitions (the fixture)
    with pytest.raises(UnknownTopicError, match="group 'g'.*nope-0: unknown topic 'nope'"):
        coordinator.reset_offsets("g", {("t", 0): 1, ("nope", 0): 1})
    with pytest.raises(PartitionOutOfRangeError, match="t-6: topic 't' has 6 partitions"):
        coordinator.reset_offsets("g", {("t", 6): 1})
    with pytest.raises(OffsetOutOfRangeError, match="offset -5 of t-0 is negative"):
        coordinator.reset_offsets("g", {("t", 0): -5})
    with pytest.raises(UnknownTopicError, match="unknown topic 'nope'"):
        coordinator.commit("g", "", 0, {("nope", 0): 1})   # a consumer without members
    with pytest.raises(UnknownTopicError, match="unknown topic 'nope'"):
        coordinator.commit_classic("g", {("nope", 0): 1})
    assert coordinator.committed("g") == {}
    # A member's negative offset is refused too; a Kafka client's is stored, as Kafka does
    a = join(coordinator)
    with pytest.raises(OffsetOutOfRangeError, match="offset -1 of t-0 is negative"):
        coordinator.commit("g", a.member_id, a.member_epoch, {("t", 0): -1})
    coordinator.commit_classic("k", {("t", 0): -1})
    assert coordinator.committed("k") == {("t", 0): -1}


def test_committed_offsets_and_the_assignor_setting_survive_a_restart(tmp_path):
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 2})
    member = coord.heartbeat("g", "", 0, ["t"], set(), SESSION_MS, "range", 0.0)
    # (a group's assignor is stored with its first commit)
    coord.commit("g", member.member_id, member.member_epoch, {("t", 0): 1})
    for i in range(50):
        coord.reset_offsets("h", {("t", 0): i, ("t", 1): 2 * i})
    store.close()
    # When the store is opened again, it replays and compacts the log
    store = OffsetStore.open(tmp_path)
    assert store.offsets("h") == {("t", 0): 49, ("t", 1): 98}
    assert store.setting("g", "assignor") == "range"
    assert store.compaction.records_read > store.compaction.records_kept == 4
    store.close()
    # And a second reopen finds exactly the compacted records
    store = OffsetStore.open(tmp_path)
    assert store.compaction.records_read == store.compaction.records_kept == 4
    assert coord.describe("g").assignor == "range"
    store.close()


def test_bad_group_names_are_refused(coordinator):
    with pytest.raises(InvalidGroupError, match="group name"):
        coordinator.heartbeat("bad name", "", 0, ["t"], set(), SESSION_MS, "", 0.0)


def test_a_torn_tail_of_the_offsets_log_loses_only_the_torn_commit(tmp_path):
    # Given two durable commits
    store = OffsetStore.open(tmp_path)
    store.commit("g", {("t", 0): 5})
    store.commit("g", {("t", 0): 6})
    store.close()
    # When the last bytes of the log are torn off by a crash
    log_file = sorted((tmp_path / "__consumer_offsets").glob("*.log"))[-1]
    data = log_file.read_bytes()
    log_file.write_bytes(data[:-3])
    # Then recovery cuts the torn commit and keeps the one before it
    store = OffsetStore.open(tmp_path)
    assert store.offsets("g") == {("t", 0): 5}
    store.close()


def test_a_group_handed_over_keeps_its_offsets_at_the_new_coordinator_and_is_refused_here(tmp_path):
    # Given a group with committed offsets on one shard's coordinator
    old_store, new_store = OffsetStore.open(tmp_path / "old"), OffsetStore.open(tmp_path / "new")
    old, new = GroupCoordinator(old_store), GroupCoordinator(new_store)
    for coord in (old, new):
        coord.set_partition_counts({"t": 6})
    member = join(old)
    old.commit("g", member.member_id, member.member_epoch, {("t", 0): 41, ("t", 3): 7},
               metadata={("t", 3): "kept"})
    # When it is handed over to another shard's coordinator
    state = old.hand_over("g")
    new.adopt("g", state, 100.0)
    # Then the new coordinator has its offsets (with their metadata) and assignor, and
    # the member carries on there with its id, epoch and partitions
    assert new.committed("g") == {("t", 0): 41, ("t", 3): 7}
    assert new.committed_metadata("g") == {("t", 3): "kept"}
    assert new.describe("g").assignor == old_store.setting("g", "assignor")
    carried_on = beat(new, member, member.assignment, now=100.0)
    assert (carried_on.member_id, carried_on.member_epoch, carried_on.assignment) == \
        (member.member_id, member.member_epoch, member.assignment)
    # And its session starts again on the new coordinator's clock
    assert new.expire(100.0 + SESSION_MS / 1000 - 0.1) == []
    assert new.expire(100.0 + SESSION_MS / 1000 + 2 * SESSION_MS / 1000) == [("g", member.member_id)]
    # And the old one answers "unavailable" (retry elsewhere), even after a restart
    old_store.close()
    old_store = OffsetStore.open(tmp_path / "old")
    old = GroupCoordinator(old_store)
    with pytest.raises(UnavailableError, match="moved to another shard"):
        join(old)
    with pytest.raises(UnavailableError):
        old.committed("g")
    assert old.group_names() == [] and new.group_names() == ["g"]
    # And a group that comes back is coordinated here again
    old.adopt("g", new.hand_over("g"), 0.0)
    assert old.committed("g") == {("t", 0): 41, ("t", 3): 7}
    old_store.close()
    new_store.close()


# --- Whose member it is (issue 11, finding 2) ----------------------------------------------

def test_another_client_key_cannot_leave_heartbeat_or_commit_as_a_member_it_did_not_join(
        coordinator):
    # Given client key B's member owning every partition
    b = coordinator.heartbeat("g", "", 0, ["t"], set(), SESSION_MS, "", 0.0, client_key="B")
    b = coordinator.heartbeat("g", b.member_id, b.member_epoch, ["t"], b.assignment, SESSION_MS,
                              "", 0.0, client_key="B")
    # When client key A leaves, heartbeats and commits with B's member id and epoch
    for epoch in (-1, b.member_epoch):
        with pytest.raises(UnknownMemberIdError, match="for this client"):
            coordinator.heartbeat("g", b.member_id, epoch, ["t"], set(), SESSION_MS, "", 0.0,
                                  client_key="A")
    with pytest.raises(UnknownMemberIdError):
        coordinator.commit("g", b.member_id, b.member_epoch, {("t", 0): 5}, client_key="A")
    # Then B is still the member, with its epoch and partitions, and nothing was committed
    again = coordinator.heartbeat("g", b.member_id, b.member_epoch, ["t"], b.assignment,
                                  SESSION_MS, "", 0.0, client_key="B")
    assert (again.member_id, again.member_epoch, again.assignment) == \
        (b.member_id, b.member_epoch, b.assignment)
    assert coordinator.committed("g") == {}


def test_a_heartbeat_with_an_old_epoch_is_refused_and_changes_nothing(coordinator):
    # Given member A whose epoch was bumped twice (it was told twice of new partitions)
    a = join(coordinator)
    a = beat(coordinator, a, a.assignment)
    b = join(coordinator)
    a = beat(coordinator, a, a.assignment)       # told to give up three: epoch bumped
    a = beat(coordinator, a, a.assignment)       # reports it: no bump
    b = beat(coordinator, b, set())              # B gets three
    assert a.member_epoch >= 2 and len(a.assignment) == 3
    # When someone heartbeats as A with an epoch two behind, claiming every partition
    with pytest.raises(StaleMemberEpochError, match=f"its epoch is {a.member_epoch}"):
        coordinator.heartbeat("g", a.member_id, a.member_epoch - 2, ["t"],
                              {("t", p) for p in range(6)}, SESSION_MS, "", 0.0)
    # Then A and B keep what they had
    assert beat(coordinator, a, a.assignment).assignment == a.assignment
    assert beat(coordinator, b, b.assignment).assignment == b.assignment


def test_a_member_whose_last_answer_was_lost_may_come_back_with_the_epoch_before(coordinator):
    # Given member A told of its partitions (epoch 1) without hearing the answer
    a = join(coordinator)
    assert a.member_epoch == 1
    # When it heartbeats with epoch 0, owning nothing / Then it is answered as usual
    again = coordinator.heartbeat("g", a.member_id, 0, ["t"], set(), SESSION_MS, "", 0.0)
    assert (again.member_epoch, again.assignment) == (1, a.assignment)


# --- Bounds (issue 11, finding 6) ----------------------------------------------------------

def test_a_group_beyond_the_shards_limit_is_refused_with_too_many_groups(coordinator, monkeypatch):
    # Given a shard allowed three groups, two with members and one with offsets only
    monkeypatch.setattr(limits, "GROUPS_PER_SHARD_MAX", 3)
    join(coordinator, group="g1")
    g2 = join(coordinator, group="g2")
    coordinator.reset_offsets("g3", {("t", 0): 1})
    # When a fourth group is joined or given offsets / Then it is refused, naming the limit
    with pytest.raises(TooManyGroupsError, match="coordinates 3 groups.*GROUPS_PER_SHARD_MAX 3"):
        join(coordinator, group="g4")
    with pytest.raises(TooManyGroupsError):
        coordinator.reset_offsets("g4", {("t", 0): 1})
    # And the groups there still take members
    join(coordinator, group="g1")
    join(coordinator, group="g3")
    # And once a group without offsets loses its members, there is room again
    coordinator.heartbeat("g2", g2.member_id, -1, ["t"], set(), SESSION_MS, "", 0.0)
    join(coordinator, group="g4")


def test_one_client_key_cannot_fill_a_group_that_another_uses(coordinator, monkeypatch):
    # Given a limit of two members per client key in one group
    monkeypatch.setattr(limits, "GROUP_MEMBERS_PER_CLIENT_KEY_MAX", 2)
    for _ in range(2):
        coordinator.heartbeat("g", "", 0, ["t"], set(), SESSION_MS, "", 0.0, client_key="A")
    # When A joins a third member / Then it is refused, naming the key and the limit
    with pytest.raises(GroupMaxSizeReachedError, match="2 members in group 'g'.*PER_CLIENT_KEY_MAX 2"):
        coordinator.heartbeat("g", "", 0, ["t"], set(), SESSION_MS, "", 0.0, client_key="A")
    # And B still joins, and A may join other groups
    coordinator.heartbeat("g", "", 0, ["t"], set(), SESSION_MS, "", 0.0, client_key="B")
    coordinator.heartbeat("h", "", 0, ["t"], set(), SESSION_MS, "", 0.0, client_key="A")


def test_the_members_of_all_groups_of_a_shard_are_bounded(coordinator, monkeypatch):
    monkeypatch.setattr(limits, "GROUP_MEMBERS_PER_SHARD_MAX", 3)
    for group in ("g1", "g2", "g3"):
        join(coordinator, group=group)
    with pytest.raises(GroupMaxSizeReachedError, match="3 members.*PER_SHARD_MAX 3"):
        join(coordinator, group="g1")


class WallClock:
    def __init__(self, now_ms: int = 1_000_000):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def test_a_group_without_members_leaves_memory_and_its_offsets_expire_after_the_retention(
        tmp_path):
    # Given a group that committed offsets, and a group that never did
    wall = WallClock()
    store = OffsetStore.open(tmp_path, wall)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 6})
    a = join(coord, group="kept")
    coord.commit("kept", a.member_id, a.member_epoch, {("t", 0): 7})
    b = join(coord, group="passing")
    # When both lose their members (one leaves, the other's session ends)
    coord.heartbeat("kept", a.member_id, -1, ["t"], set(), SESSION_MS, "", 0.0)
    assert coord.expire(SESSION_MS / 1000 + 1) == [("passing", b.member_id)]
    # Then the group without offsets is gone; the other keeps only its offsets
    assert coord.group_names() == ["kept"] and coord.member_count() == 0
    assert not coord.describe("kept").members and coord.committed("kept") == {("t", 0): 7}
    # And its offsets stay until the retention has passed since its member left
    wall.now_ms += limits.OFFSETS_RETENTION_MS - 1
    coord.expire(SESSION_MS / 1000 + 2)
    assert coord.committed("kept") == {("t", 0): 7}
    wall.now_ms += 2
    assert coord.next_expiry_s(5.0) == 5.0   # due: the loop comes at once
    coord.expire(SESSION_MS / 1000 + 3)
    assert coord.group_names() == [] and coord.committed("kept") == {}
    store.close()
    # And they stay deleted after a restart
    store = OffsetStore.open(tmp_path, wall)
    assert GroupCoordinator(store).group_names() == []
    store.close()


def test_offsets_of_a_group_left_empty_before_a_restart_still_expire_after_it(tmp_path):
    # Given a group's offsets reset (no members) at a time T, and a restart
    wall = WallClock()
    store = OffsetStore.open(tmp_path, wall)
    first = GroupCoordinator(store)
    first.set_partition_counts({"t": 1})
    first.reset_offsets("g", {("t", 0): 3})
    store.close()
    store = OffsetStore.open(tmp_path, wall)
    coord = GroupCoordinator(store)
    # When the retention has passed since T / Then they are deleted
    wall.now_ms += limits.OFFSETS_RETENTION_MS + 1
    coord.expire(0.0)
    assert coord.group_names() == []
    store.close()


def test_after_a_restart_members_have_a_session_timeout_to_rejoin_before_offsets_expire(
        tmp_path):
    # Given a group whose member last committed longer ago than the retention
    wall = WallClock()
    store = OffsetStore.open(tmp_path, wall)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 6})
    member = join(coord)
    coord.commit("g", member.member_id, member.member_epoch, {("t", 0): 7})
    wall.now_ms += 2 * limits.OFFSETS_RETENTION_MS
    store.close()
    # When the shard restarts (membership is not stored: the group looks empty)
    store = OffsetStore.open(tmp_path, wall)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 6})
    coord.expire(0.0)
    # Then its offsets are kept while its members may still come back
    assert coord.committed("g") == {("t", 0): 7}
    # And a member that rejoins keeps them for as long as the group has members
    join(coord)
    wall.now_ms += limits.SESSION_TIMEOUT_MS_MAX + 1
    coord.expire(0.0)
    assert coord.committed("g") == {("t", 0): 7}
    store.close()


# --- Assignment work in steps (issue 11, finding 6) ------------------------------------------

class WorkClock:
    """Every reading is a millisecond later: each assignment step 'takes' 1 ms."""

    def __init__(self):
        self.now_s = 0.0

    def __call__(self) -> float:
        self.now_s += 0.001
        return self.now_s


def test_a_large_groups_assignment_is_spread_over_loop_rounds_and_then_answered(tmp_path):
    # Given a topic of 4,096 partitions, and assignment steps that 'take' 1 ms each
    work = WorkClock()
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store, work)
    coord.set_partition_counts({"big": 4096})
    # When 20 members join
    members = [coord.heartbeat("g", "", 0, ["big"], set(), SESSION_MS, "", 0.0)
               for _ in range(20)]
    # Then they are answered before the assignment is done, and asked to come back soon
    assert coord.assignment_pending()
    assert {m.heartbeat_interval_ms for m in members} == {limits.HEARTBEAT_INTERVAL_MS_MIN}
    # And each loop round does at most its budget of steps, and one more
    rounds = 0
    while coord.assignment_pending():
        started_s = work.now_s
        coord.run_assignments()
        assert work.now_s - started_s <= 2 * (limits.GROUP_ASSIGNMENT_ROUND_MS + 1) / 1000
        rounds += 1
        if rounds > 100_000:
            raise AssertionError("the assignment never finished")
    assert rounds > 10
    # And once it is done, every member gets its share of every partition
    answers = [coord.heartbeat("g", m.member_id, m.member_epoch, ["big"], set(), SESSION_MS,
                               "", 0.0).assignment for m in members]
    assert {len(a) for a in answers} <= {204, 205}
    assert set().union(*answers) == {("big", p) for p in range(4096)}
    store.close()


AUDIT = "plinth.shards.group_coordinator"


def audit_lines(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == AUDIT]


def test_resets_deletes_of_offsets_and_group_deletes_are_each_one_info_line_old_to_new(
        coordinator, caplog):
    # Given a group with committed offsets of two partitions
    coordinator.reset_offsets("billing", {("t", 0): 10, ("t", 1): 20})
    caplog.clear()
    with caplog.at_level("INFO", logger=AUDIT):
        # When an administrator resets one and sets a third, deletes one, then the group
        coordinator.reset_offsets("billing", {("t", 0): 0, ("t", 2): 5})
        coordinator.delete_offsets("billing", [("t", 1), ("t", 4)])
        coordinator.delete_group("billing")
    # Then each mutation is one INFO line naming the group, partitions, old -> new
    assert audit_lines(caplog) == [
        ("INFO", "group 'billing': offsets of 2 partitions reset: t-0 10 -> 0, t-2 none -> 5"),
        ("INFO", "group 'billing': committed offsets of 1 partition deleted: t-1 20 -> none"),
        ("INFO", "group 'billing' deleted, with its committed offsets of 2 partitions: "
                 "t-0 0 -> none, t-2 5 -> none")]


def test_a_reset_of_many_partitions_names_the_first_twenty_and_counts_the_rest(tmp_path, caplog):
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 25})
    with caplog.at_level("INFO", logger=AUDIT):
        coord.reset_offsets("g", {("t", p): 0 for p in range(25)})
    store.close()
    [(level, line)] = audit_lines(caplog)
    assert line.startswith("group 'g': offsets of 25 partitions reset: t-0 none -> 0, ")
    assert line.endswith("t-19 none -> 0, ... (5 more)") and "t-20 " not in line


def test_an_offsets_only_group_shows_the_assignor_its_members_chose_or_none(coordinator):
    # Given a Kafka group's commit (its members chose their assignor client-side)
    coordinator.commit_classic("kafka", {("t", 0): 5})
    # And a Plinth group whose member chose "range", committed and left
    member = coordinator.heartbeat("plinth", "", 0, ["t"], set(), SESSION_MS, "range", 0.0)
    coordinator.commit("plinth", member.member_id, member.member_epoch, {("t", 0): 3})
    coordinator.heartbeat("plinth", member.member_id, -1, ["t"], set(), SESSION_MS, "range",
                          0.0)
    # Then neither is described with Plinth's default it never used
    assert coordinator.describe("kafka").assignor == ""
    assert (coordinator.describe("plinth").assignor, coordinator.describe("plinth").members) \
        == ("range", {})
