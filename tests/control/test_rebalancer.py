"""Rebalancer: changes of shards through the controller (plinth shards add/remove) on real
shard actors reached in process: partitions and groups move, a failed group move is undone,
a failed or crashed change is finished by the next start, drained shards retire."""

from __future__ import annotations

import pytest
import ray.exceptions

from plinth import limits, protocol
from plinth.control import metadata as metadata_module
from plinth.control import placement
from plinth.errors import InvalidConfigError, UnavailableError
from tests.control.broker_without_ray import THREE, TWO, group_that_moves, topic_that_moves
from plinth.shards.shard_calls import PartitionId
from tests.in_process_shards import ControllerCrash
from tests.shard_requests import commit_offsets, committed_offsets, produce
from tests.support import wait_until


def test_adding_a_shard_moves_writes_at_the_end_offset_without_copying_records(brokers):
    # Given a topic with three records in each of its 8 partitions
    broker = brokers(2)
    topic = topic_that_moves(8, TWO, THREE)
    broker.controller.create_topic(topic, 8, {})
    for partition in range(8):
        broker.produce(topic, partition, [b"a", b"b", b"c"])
    # When a shard is added
    moves = broker.controller.add_shards(1)
    # Then exactly the partitions the new shard wins move to it, at offset 3
    after = placement.place_topic(topic, 8, THREE)
    assert moves == [protocol.PartitionMove(topic, p, placement.shard_for(topic, p, TWO), "shard-2", 3)
                     for p in range(8) if after[p] == "shard-2"]
    routing = broker.controller.routing()
    for move in moves:
        # And the old owner keeps offsets 0..2 for reads and refuses writes
        assert routing.holder(topic, move.partition, 2) == move.from_shard
        with pytest.raises(UnavailableError, match="moved away"):
            produce(broker.address(move.from_shard), topic, move.partition, [b"late"])
        # And the new owner continues at 3
        assert routing.owner(topic, move.partition) == "shard-2"
        assert broker.produce(topic, move.partition, [b"d"]) == 3
    assert broker.metadata_on_disk().topics[topic].ranges == {
        m.partition: [(0, m.from_shard), (3, "shard-2")] for m in moves}
    # And describe merges both ranges of a moved partition
    merged = broker.controller.describe_topic(topic).partition_info[moves[0].partition]
    assert (merged.shard, merged.start_offset, merged.end_offset) == ("shard-2", 0, 4)


def two_shards_and_a_group_that_moves(brokers, offsets: dict[tuple[str, int], int]):
    """A broker of two shards with a topic "orders", and a group whose name will hash to a
    third shard, with ``offsets`` committed on its coordinator: (broker, group, coordinator)."""
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    group = group_that_moves(TWO, THREE)
    old = placement.shard_for_group(group, TWO)
    commit_offsets(broker.address(old), group, offsets)
    return broker, group, old


def test_adding_a_shard_moves_the_groups_that_now_hash_to_it_with_their_offsets(brokers):
    # Given a group with committed offsets on its coordinator
    broker, group, old = two_shards_and_a_group_that_moves(brokers, {("orders", 0): 7})
    # When a shard is added that the group's name now hashes to
    broker.controller.add_shards(1)
    # Then the new coordinator has it with its offsets, and the old one lists it no more
    new = placement.shard_for_group(group, THREE)
    assert committed_offsets(broker.address(new), group) == {("orders", 0): 7}
    assert group not in broker.shards.handles[old].group_names().result()
    assert broker.controller.list_groups() == [protocol.GroupListing(group, "Empty")]
    assert broker.metadata_on_disk().groups_moving_from is None


def test_a_group_move_that_fails_half_way_is_undone_and_the_shards_are_unchanged(brokers):
    # Given a group whose name would hash to a third shard, which fails to adopt it
    broker, group, old = two_shards_and_a_group_that_moves(brokers, {("orders", 1): 4})
    broker.shards.when_started("shard-2", lambda new: new.fail_next(
        "adopt_groups", UnavailableError("shard-2: disk full")))
    # When a shard is added, Then the command fails
    with pytest.raises(UnavailableError, match="disk full"):
        broker.controller.add_shards(1)
    # And the group is back on its old coordinator with its offsets
    assert committed_offsets(broker.address(old), group) == {("orders", 1): 4}
    # And the broker still has its two shards, no move pending, no partition moved
    metadata = broker.metadata_on_disk()
    assert (metadata.shards, metadata.groups_moving_from) == (TWO, None)
    assert broker.controller.routing().shard_ids == tuple(TWO)
    assert list(broker.controller.routing().owners["orders"]) == placement.place_topic("orders", 2, TWO)
    # And the new shard's actor was stopped, its pin not kept
    assert broker.shards.find_shard("shard-2") is None
    assert "shard-2" not in metadata.shard_nodes


def test_a_partition_move_that_fails_half_way_keeps_the_earlier_moves_and_a_restart_finishes_it(
        brokers, monkeypatch):
    # Given a topic with records, two of whose partitions will move to a new shard, one
    # move per batch
    monkeypatch.setattr(limits, "PARTITION_MOVES_PER_SAVE_MAX", 1)
    broker = brokers(2)
    topic = topic_that_moves(8, TWO, THREE, moving_min=2)
    broker.controller.create_topic(topic, 8, {})
    for partition in range(8):
        broker.produce(topic, partition, [b"a", b"b"])
    moving = [p for p in range(8) if placement.shard_for(topic, p, THREE) == "shard-2"]
    broker.shards.when_started("shard-2", lambda new: new.fail_next(
        "open_partitions", ray.exceptions.ActorDiedError(), after_calls=1))
    # When the new shard dies while the second partition moves to it
    with pytest.raises(UnavailableError, match=f"cannot move {topic}-{moving[1]} from"):
        broker.controller.add_shards(1)
    # Then the first move is kept, durable; the second partition still belongs to its old owner
    metadata = broker.metadata_on_disk()
    assert metadata.shards == THREE
    assert metadata.topics[topic].placement[moving[0]] == "shard-2"
    assert metadata.topics[topic].placement[moving[1]] == placement.shard_for(topic, moving[1], TWO)
    # And after a restart the move is finished: the partition continues on the new shard at 2
    broker = brokers(2)
    assert broker.controller.routing().owner(topic, moving[1]) == "shard-2"
    assert broker.produce(topic, moving[1], [b"c"]) == 2


def test_partitions_moving_between_two_shards_move_in_one_seal_one_open_and_one_save(
        brokers, monkeypatch):
    # Given a topic with records, many of whose partitions move to a new shard
    broker = brokers(2)
    topic = topic_that_moves(64, TWO, THREE, moving_min=8)
    broker.controller.create_topic(topic, 64, {})
    for partition in range(64):
        broker.produce(topic, partition, [b"a"])
    writes = []
    real_write = metadata_module.write_file_atomically
    monkeypatch.setattr(metadata_module, "write_file_atomically",
                        lambda *args, **kw: (writes.append(args[0]), real_write(*args, **kw)))
    # When a shard is added
    moves = broker.controller.add_shards(1)
    # Then every partition that hashes to it moved, at its end offset, and the metadata was
    # written once per pair of shards moves went between, beside the change's own writes
    moved = sorted(m.partition for m in moves)
    assert moved == [p for p in range(64) if placement.shard_for(topic, p, THREE) == "shard-2"]
    assert len(moved) >= 8 and all(m.offset == 1 for m in moves)
    pairs = {(m.from_shard, m.to_shard) for m in moves}
    assert len(writes) == len(pairs) + 3   # shards set; groups moved; moves done
    assert [broker.produce(topic, p, [b"b"]) for p in moved] == [1] * len(moved)


@pytest.mark.parametrize("crash_at", ["group_names", "open_partitions"])
def test_a_crash_between_the_steps_of_adding_a_shard_is_finished_at_the_next_start(brokers, crash_at):
    # Given a topic with records and a group with offsets, both of which will move
    broker = brokers(2)
    topic, group = topic_that_moves(4, TWO, THREE), group_that_moves(TWO, THREE)
    broker.controller.create_topic(topic, 4, {})
    for partition in range(4):
        broker.produce(topic, partition, [b"a", b"b", b"c"])
    commit_offsets(broker.address(placement.shard_for_group(group, TWO)), group, {(topic, 0): 3})
    # When the controller dies after recording the third shard: before it asks the old
    # shards for their groups, or after sealing a partition, before its new owner opens it
    for handle in broker.shards.handles.values():
        handle.crash_controller_at(crash_at)
    broker.shards.when_started("shard-2", lambda new: new.crash_controller_at(crash_at))
    with pytest.raises(ControllerCrash):
        broker.controller.add_shards(1)
    assert broker.metadata_on_disk().shards == THREE
    # And the server starts again
    broker = brokers(2)
    # Then the group is on its new coordinator with its offsets, every partition is owned
    # by the shard it hashes to among three, and each continues after its records
    assert committed_offsets(broker.address(placement.shard_for_group(group, THREE)), group) \
        == {(topic, 0): 3}
    assert list(broker.controller.routing().owners[topic]) == placement.place_topic(topic, 4, THREE)
    assert [broker.produce(topic, p, [b"d"]) for p in range(4)] == [3, 3, 3, 3]
    assert broker.metadata_on_disk().groups_moving_from is None


def test_a_removed_shard_hands_back_writes_and_groups_and_retires_once_it_holds_nothing(brokers):
    # Given three shards, a topic with records on the third, and a group it coordinates
    broker = brokers(3)
    topic, group = topic_that_moves(4, TWO, THREE), group_that_moves(TWO, THREE)
    broker.controller.create_topic(topic, 4, {})
    moving = [p for p in range(4) if placement.shard_for(topic, p, THREE) == "shard-2"]
    for partition in moving:
        broker.produce(topic, partition, [b"a"])
    commit_offsets(broker.address("shard-2"), group, {(topic, 0): 1})
    # When the newest shard is removed
    moves = broker.controller.remove_shards(1)
    # Then its partitions' writes and its group go back to the other two
    assert [(m.partition, m.from_shard, m.offset) for m in moves] == [(p, "shard-2", 1) for p in moving]
    assert list(broker.controller.routing().owners[topic]) == placement.place_topic(topic, 4, TWO)
    assert committed_offsets(broker.address(placement.shard_for_group(group, TWO)), group) \
        == {(topic, 0): 1}
    # And it drains: it serves its older ranges until they are gone
    status = {s.shard_id: s for s in broker.controller.status().shards}
    assert status["shard-2"].draining and status["shard-2"].alive
    assert broker.metadata_on_disk().draining == ["shard-2"]
    # When the topic is deleted, Then it holds nothing and is retired: forgotten and stopped
    broker.controller.delete_topic(topic)
    metadata = broker.metadata_on_disk()
    assert (metadata.shards, metadata.draining, sorted(metadata.shard_nodes)) == (TWO, [], TWO)
    assert "shard-2" not in {s.shard_id for s in broker.controller.status().shards}
    with pytest.raises(UnavailableError, match="shard-2 is down"):
        broker.shards.handles["shard-2"].group_names().result()


def test_a_removed_shard_that_holds_no_records_retires_at_once(brokers):
    # Given three shards and a topic with no records
    broker = brokers(3)
    broker.controller.create_topic(topic_that_moves(4, TWO, THREE), 4, {})
    # When the newest shard is removed
    broker.controller.remove_shards(1)
    # Then it is retired by the command itself: its empty ranges are forgotten, it is stopped
    metadata = broker.metadata_on_disk()
    assert (metadata.shards, metadata.draining) == (TWO, [])
    assert all(r.shard_id != "shard-2" for topic in metadata.topics.values()
               for ranges in topic.ranges.values() for r in ranges)
    with pytest.raises(UnavailableError, match="shard-2 is down"):
        broker.shards.handles["shard-2"].group_names().result()


def test_a_removed_shard_retires_once_retention_has_deleted_its_last_range(brokers):
    # Given a removed shard that keeps one partition's older range, with a record
    broker = brokers(3)
    topic = topic_that_moves(4, TWO, THREE)
    broker.controller.create_topic(topic, 4, {})
    partition = next(p for p in range(4) if placement.shard_for(topic, p, THREE) == "shard-2")
    broker.produce(topic, partition, [b"old"])
    broker.controller.remove_shards(1)
    assert broker.metadata_on_disk().draining == ["shard-2"]
    # When retention deletes it (the shard checks every few seconds)
    broker.controller.alter_topic(topic, {"retention.ms": "1"})
    # Then a status call forgets that range and retires the shard
    wait_until(lambda: "shard-2" not in {s.shard_id for s in broker.controller.status().shards},
               timeout_s=30, interval_s=0.5)
    metadata = broker.metadata_on_disk()
    assert metadata.draining == [] and metadata.topics[topic].ranges_of(partition)[0].shard_id != "shard-2"


def test_forgotten_ranges_are_logged_as_never_written_or_as_emptied_by_retention(
        brokers, caplog):
    # Given a removed shard that held the writes of several partitions, one with a record
    broker = brokers(3)
    topic = topic_that_moves(16, TWO, THREE, moving_min=4)
    broker.controller.create_topic(topic, 16, {})
    held = [p for p in range(16) if placement.shard_for(topic, p, THREE) == "shard-2"]
    written, empty = held[0], held[1:]
    broker.produce(topic, written, [b"old"])
    # When it is removed, its empty ranges are forgotten at once
    with caplog.at_level("INFO", logger="plinth.control.rebalancer"):
        broker.controller.remove_shards(1)
    # Then the log says they were empty when their writes moved away, not "retention"
    lines = [r.getMessage() for r in caplog.records if "forgot its ranges" in r.getMessage()]
    names = ", ".join(f"{topic}-{p}" for p in empty[:5])
    assert lines == [f"shard-2: forgot its ranges of {len(empty)} partitions, empty when "
                     f"their writes moved away ({names}"
                     + (f", ... ({len(empty) - 5} more)" if len(empty) > 5 else "")
                     + "); deleted its empty logs of them"]
    caplog.clear()
    # And when retention deletes the written one's record, that is what its line says
    with caplog.at_level("INFO", logger="plinth.control.rebalancer"):
        broker.controller.alter_topic(topic, {"retention.ms": "1"})
        wait_until(lambda: "shard-2" not in {s.shard_id for s in broker.controller.status().shards},
                   timeout_s=30, interval_s=0.5)
    lines = [r.getMessage() for r in caplog.records if "forgot its ranges" in r.getMessage()]
    assert lines == [f"shard-2: forgot its ranges of 1 partition, whose records retention "
                     f"deleted since their writes moved away ({topic}-{written}: 1 offsets); "
                     f"deleted its empty logs of them"]


def test_ranges_retention_emptied_on_a_removed_shard_are_forgotten_in_one_save(
        brokers, monkeypatch):
    # Given a removed shard that keeps the older ranges of several partitions, each with a
    # record, until retention deleted every one of them
    broker = brokers(3)
    topic = topic_that_moves(16, TWO, THREE, moving_min=4)
    broker.controller.create_topic(topic, 16, {})
    held = [p for p in range(16) if placement.shard_for(topic, p, THREE) == "shard-2"]
    for partition in held:
        broker.produce(topic, partition, [b"old"])
    broker.controller.remove_shards(1)
    broker.controller.alter_topic(topic, {"retention.ms": "1"})
    shard = broker.shards.handles["shard-2"]
    pids = [PartitionId(topic, p) for p in held]
    wait_until(lambda: all(i.size_bytes == 0 for i in shard.partition_infos(pids).result()),
               timeout_s=30, interval_s=0.5)
    # When the controller next prunes the ranges
    writes = []
    real_write = metadata_module.write_file_atomically
    monkeypatch.setattr(metadata_module, "write_file_atomically",
                        lambda *args, **kw: (writes.append(args[0]), real_write(*args, **kw)))
    broker.controller.status()
    # Then it forgot every one of them, writing the metadata once for them all (and once
    # more for the shard's retirement)
    metadata = broker.metadata_on_disk()
    assert all(r.shard_id != "shard-2" for p in held for r in metadata.topics[topic].ranges_of(p))
    assert metadata.draining == [] and len(held) >= 4 and len(writes) == 2


def test_removing_every_shard_or_adding_beyond_the_limit_is_refused(brokers):
    broker = brokers(2)
    with pytest.raises(InvalidConfigError, match="cannot remove 2 of 2 shards: at least one must stay"):
        broker.controller.remove_shards(2)
    with pytest.raises(InvalidConfigError, match="at most 256 shards"):
        broker.controller.add_shards(255)
