"""ShardActor without Ray, repair (issue 12): ``open_partitions`` answers how it found each
partition (created empty, recovered whole, needs repair), so that the controller can keep
a replica that lost records out of the in-sync set and out of elections. A real
ShardServer on a real disk; a "restart" is a new ShardActor on the same directory, a
"wiped disk" its directory deleted while it is down."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from plinth.errors import NotLeaderError
from plinth.shards.actor import ShardActor
from plinth.shards.partition import NEEDS_REPAIR_FILE
from plinth.shards.shard_calls import (OPENED_CREATED_EMPTY, OPENED_LOST, OPENED_NEEDS_REPAIR,
                                       OPENED_RECOVERED_WHOLE, Leadership, PartitionId,
                                       PartitionSpec)
from tests.shards.test_actor_replication import produce

PID = PartitionId("t", 0)
# shard-0 follows t-0, led by shard-1 (which is not running: nothing is fetched).
FOLLOWING = Leadership(replicas=("shard-1", "shard-0"), leader="shard-1", leader_epoch=2,
                       in_sync=("shard-1", "shard-0"), partition_epoch=3, controller_epoch=1)
# shard-0 leads t-0 alone in sync in leader epoch 2.
LEADING = Leadership(replicas=("shard-0", "shard-1"), leader="shard-0", leader_epoch=2,
                     in_sync=("shard-0",), partition_epoch=3, controller_epoch=1)
CONFIG = {"min.insync.replicas": "1"}


@pytest.fixture
def shard(tmp_path):
    """``shard.start()`` starts shard-0 on tmp_path/shard-0 (again: a restart after the
    running one stopped); the last one is stopped at the end."""
    class Shard:
        directory = tmp_path / "shard-0"
        actor: ShardActor | None = None

        def start(self) -> ShardActor:
            self.stop()
            self.actor = ShardActor("shard-0", str(self.directory), bind_host="127.0.0.1")
            return self.actor

        def stop(self) -> None:
            if self.actor is not None:
                self.actor.shutdown(5)
                self.actor = None

    made = Shard()
    yield made
    made.stop()


def corrupt_last_entry(partition_dir: Path) -> None:
    """Flip a byte near the end of the newest segment: recovery cuts its last entry."""
    segment = sorted(partition_dir.glob("*.log"))[-1]
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))


def test_open_partitions_answers_created_empty_then_recovered_whole_after_a_restart(shard):
    # Given a shard that creates a replicated and a one-copy partition
    actor = shard.start()
    opened = actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=LEADING),
                                    PartitionSpec("u", 0, {})])
    # Then both were created empty
    assert opened == {PID: OPENED_CREATED_EMPTY, PartitionId("u", 0): OPENED_CREATED_EMPTY}
    assert produce(actor.address(), 1).error is None
    # When it restarts and the controller opens them again
    actor = shard.start()
    opened = actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=LEADING),
                                    PartitionSpec("u", 0, {})], existing=True)
    # Then both recovered whole
    assert opened == {PID: OPENED_RECOVERED_WHOLE, PartitionId("u", 0): OPENED_RECOVERED_WHOLE}


def test_a_replica_whose_recovery_cut_entries_answers_needs_repair_until_it_catches_up(shard):
    # Given a replica that led t-0 and holds two batches
    actor = shard.start()
    actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=LEADING)])
    assert produce(actor.address(), 1).error is None
    assert produce(actor.address(), 1).error is None
    # When its last entry is corrupted while it is down, and it restarts
    shard.stop()
    corrupt_last_entry(shard.directory / "t-0")
    actor = shard.start()
    # Then opening the partition answers that it needs repair, with the mark on disk
    opened = actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=FOLLOWING)],
                                   existing=True)
    assert opened == {PID: OPENED_NEEDS_REPAIR}
    assert (shard.directory / "t-0" / NEEDS_REPAIR_FILE).exists()
    # And again after another restart, which cuts nothing (the mark is kept)
    actor = shard.start()
    assert actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=FOLLOWING)],
                                 existing=True) == {PID: OPENED_NEEDS_REPAIR}
    assert actor.stats()["replication"][("t", 0)]["needs_repair"] is True


def test_a_replica_whose_directory_was_wiped_is_opened_by_the_controller_as_needing_repair(shard):
    # Given the leader of t-0, holding a record
    actor = shard.start()
    actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=LEADING)])
    assert produce(actor.address(), 1).error is None
    # When its whole data directory (manifest included) is deleted while it is down
    shard.stop()
    shutil.rmtree(shard.directory)
    actor = shard.start()
    # Then it serves nothing by itself (it knows no partition), and when the controller
    # opens the partitions it held, the replicated one needs repair
    # (the record still names it leader: the controller has not heard of its loss yet)
    assert actor.stats()["logs"] == {}
    opened = actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=LEADING),
                                    PartitionSpec("u", 0, {})], existing=True)
    # and the one of one copy is lost (its records are gone: the controller says so)
    assert opened == {PID: OPENED_NEEDS_REPAIR, PartitionId("u", 0): OPENED_LOST}
    # And it does not lead, empty, in the leader epoch it led before (its followers
    # would truncate to its empty log)
    assert "before it restarted" in produce(actor.address(), 1).error.message


def test_a_new_partition_of_a_new_topic_created_empty_does_not_need_repair(shard):
    # Given a shard, When a new topic's replicated partition is created (not existing)
    actor = shard.start()
    opened = actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=LEADING)])
    # Then it is created empty, leads, and takes writes
    assert opened == {PID: OPENED_CREATED_EMPTY}
    assert produce(actor.address(), -1).error is None


def test_reopening_an_open_partition_as_existing_keeps_it_serving(shard):
    # Given a shard leading t-0 with a record acknowledged (its high watermark is 1)
    actor = shard.start()
    actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=LEADING)])
    assert produce(actor.address(), -1).error is None
    # When the controller opens it again as existing (a shard_started delivered twice)
    opened = actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=LEADING)],
                                   existing=True)
    # Then it is not treated as restarted: it still leads in its epoch, nothing is marked
    assert opened == {PID: OPENED_CREATED_EMPTY}
    reply = produce(actor.address(), -1)
    assert (reply.error, reply.base_offset) == (None, 1)


def test_a_replica_that_needs_repair_does_not_lead_even_when_a_record_names_it(shard):
    # Given a replica whose recovery cut its last entry (it needs repair)
    actor = shard.start()
    actor.open_partitions([PartitionSpec("t", 0, CONFIG, leadership=FOLLOWING)])
    actor.set_leadership([(PID, LEADING)])
    assert produce(actor.address(), 1).error is None
    assert produce(actor.address(), 1).error is None
    shard.stop()
    corrupt_last_entry(shard.directory / "t-0")
    actor = shard.start()
    # When a record names it leader in a newer leader epoch (a controller that did not
    # hear of the repair: invariant 14)
    newer = dataclasses.replace(LEADING, leader_epoch=5, partition_epoch=9)
    actor.set_leadership([(PID, newer)])
    # Then it does not lead: its log may lack acknowledged records
    refused = produce(actor.address(), 1).error
    assert isinstance(refused, NotLeaderError), refused
    assert actor.stats()["replication"][("t", 0)]["role"] != "leader"
