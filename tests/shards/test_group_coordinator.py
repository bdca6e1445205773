"""group_coordinator.py: membership, incremental hand-over, expiry and commits, no sockets."""

from __future__ import annotations

import pytest

from plinth.errors import (GroupNotEmptyError, InvalidGroupError, NotOwnerError,
                           StaleMemberEpochError, UnavailableError, UnknownMemberIdError)
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
    with pytest.raises(GroupNotEmptyError, match="1 active members"):
        coordinator.reset_offsets("g", {("t", 0): 0})
    coordinator.heartbeat("g", a.member_id, -1, ["t"], set(), SESSION_MS, "", 0.0)
    coordinator.reset_offsets("g", {("t", 0): 3})
    assert coordinator.committed("g") == {("t", 0): 3}


def test_committed_offsets_and_the_assignor_setting_survive_a_restart(tmp_path):
    store = OffsetStore.open(tmp_path)
    coord = GroupCoordinator(store)
    coord.set_partition_counts({"t": 2})
    coord.heartbeat("g", "", 0, ["t"], set(), SESSION_MS, "range", 0.0)
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
    old.commit("g", member.member_id, member.member_epoch, {("t", 0): 41, ("t", 3): 7})
    # When it is handed over to another shard's coordinator
    state = old.hand_over("g")
    new.adopt("g", state, 100.0)
    # Then the new coordinator has its offsets and assignor, and the member carries on
    # there with its id, epoch and partitions
    assert new.committed("g") == {("t", 0): 41, ("t", 3): 7}
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
