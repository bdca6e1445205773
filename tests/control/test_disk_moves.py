"""Which in-sync replica takes each partition of a leader whose disk refuses writes,
without shards (control/disk_moves.py)."""

from __future__ import annotations

from plinth import limits
from plinth.control.disk_moves import has_room, plan
from plinth.control.metadata import BrokerMetadata, TopicMetadata
from plinth.shards.shard_handle import Leadership, PartitionId

MiB = 1024 * 1024
RESERVE = 4 * MiB
ROOMY = {"free_bytes": 60 * MiB, "total_bytes": 64 * MiB, "reserve_bytes": RESERVE}
FULL = {"free_bytes": 0, "total_bytes": 64 * MiB, "reserve_bytes": RESERVE}
REFUSING = {"free_bytes": RESERVE + MiB, "total_bytes": 64 * MiB, "reserve_bytes": RESERVE}
ERROR = "t-0: no space left"


def record(replicas: str, leader: str, in_sync: str | None = None) -> Leadership:
    return Leadership(replicas=tuple(replicas), leader=leader, leader_epoch=3,
                      in_sync=tuple(in_sync or replicas), partition_epoch=7,
                      controller_epoch=1, eligible=())


def metadata_with(*records: Leadership) -> BrokerMetadata:
    metadata = BrokerMetadata(shards=["a", "b", "c"])
    metadata.topics["t"] = TopicMetadata(len(records), {}, [r.replicas[0] for r in records],
                                         replication_factor=3,
                                         leadership=dict(enumerate(records)))
    return metadata


def test_each_partition_the_full_leader_leads_goes_to_its_first_in_sync_replica_with_room():
    # Given a leads t-0 (preferred a) and t-2 (preferred c, a leading after a failover),
    # and b leads t-1
    metadata = metadata_with(record("abc", "a"), record("bca", "b"), record("cab", "a"))
    # When a's disk refuses writes, every other disk has room
    decided = plan(metadata, "a", ERROR, {"b", "c"}, {"a": FULL, "b": ROOMY, "c": ROOMY}, {})
    # Then each partition a leads goes to its first other in-sync replica (in the
    # replicas' order: the preferred one where it may), planned in its leader epoch
    assert [(a.pid, a.leader, a.to, a.leader_epoch) for a in decided.hand_overs] == [
        (PartitionId("t", 0), "a", "b", 3), (PartitionId("t", 2), "a", "c", 3)]
    assert decided.staying == []
    # And why names the disk's free bytes and its reserve, and what it refused
    assert decided.hand_overs[0].why == \
        f"a's disk refuses writes (0 bytes free, reserve {RESERVE}: {ERROR})"


def test_a_replica_whose_disk_is_under_its_reserve_or_unknown_is_passed_over():
    # Given t-0 led by a, b's disk just above its reserve (it refuses the next batch)
    metadata = metadata_with(record("abc", "a"))
    # When a's disk refuses / Then c takes it, not b
    [ask] = plan(metadata, "a", ERROR, {"b", "c"}, {"a": FULL, "b": REFUSING, "c": ROOMY},
                 {}).hand_overs
    assert ask.to == "c"
    # And a replica whose disk did not answer is passed over too
    [ask] = plan(metadata, "a", ERROR, {"b", "c"}, {"a": FULL, "c": ROOMY}, {}).hand_overs
    assert ask.to == "c"


def test_a_partition_no_other_in_sync_replica_may_take_stays_saying_why_of_each():
    # Given t-0 led by a, b's disk full, c not answering; t-1 led by a with b out of
    # sync and c needing repair
    metadata = metadata_with(record("abc", "a"), record("abc", "a", in_sync="ac"))
    # When a's disk refuses writes
    decided = plan(metadata, "a", ERROR, {"b"}, {"a": FULL, "b": FULL, "c": ROOMY},
                   {("t", 1): {"c"}})
    # Then neither moves, and each says why of each in-sync replica
    assert decided.hand_overs == []
    assert decided.staying == [
        f"t-0: no other in-sync replica may lead it: b has too little room (0 bytes free, "
        f"reserve {RESERVE}); c does not answer",
        "t-1: no other in-sync replica may lead it: c needs repair"]


def test_a_partition_whose_leader_alone_is_in_sync_stays():
    metadata = metadata_with(record("abc", "a", in_sync="a"))
    decided = plan(metadata, "a", ERROR, {"b", "c"}, {"b": ROOMY, "c": ROOMY}, {})
    assert decided.hand_overs == []
    assert decided.staying == ["t-0: no other replica is in sync"]


def test_a_disk_has_room_with_the_move_margin_beyond_its_reserve():
    margin = limits.LEADER_MOVE_DISK_ROOM_BYTES_MIN
    assert has_room({"free_bytes": RESERVE + margin, "reserve_bytes": RESERVE})
    assert not has_room({"free_bytes": RESERVE + margin - 1, "reserve_bytes": RESERVE})
    assert has_room({"free_bytes": margin, "reserve_bytes": 0})   # no reserve
    assert not has_room({})   # not known


def test_a_replica_whose_own_disk_refused_a_write_lately_takes_nothing_so_none_ping_pongs():
    # Given t-0 led by a, whose disk refuses; b said its own disk refused a write a
    # moment ago (b and a may share a disk: b's free bytes say room for small batches)
    metadata = metadata_with(record("abc", "a"))
    disks = {"a": FULL, "b": ROOMY, "c": ROOMY}
    # When a's disk refuses / Then c takes t-0, not b
    [ask] = plan(metadata, "a", ERROR, {"b", "c"}, disks, {}, refused_lately={"b"}).hand_overs
    assert ask.to == "c"
    # And where c refused lately too, t-0 stays, saying so of each
    decided = plan(metadata, "a", ERROR, {"b", "c"}, disks, {}, refused_lately={"b", "c"})
    assert decided.hand_overs == []
    recent = f"refused a write itself within {limits.DISK_REFUSED_RECENT_S:g} s"
    assert decided.staying == [f"t-0: no other in-sync replica may lead it: b {recent}; "
                               f"c {recent}"]
