"""The controller's side of replication (issue 12), without Ray: replicated topics are
placed, opened on every replica with their leadership record and saved; the controller
epoch grows at every start; peers and records reach the shards; in-sync changes are a
compare-and-set; describe, status and routing show leaders. Real shard actors reached in
process on a real disk (broker_without_ray.py); the byte replication itself is the
shards' (not tested here)."""

from __future__ import annotations

import json

import pytest
import ray.exceptions

from plinth.control import placement
from plinth.control.leader_lease import LeaderLease
from plinth.errors import (FencedLeaderEpochError, InvalidConfigError, RequestTimedOutError,
                           InvalidReplicationFactorError)
from plinth.shards.shard_handle import PartitionId
from tests.control.broker_without_ray import THREE
from tests.control.test_metadata import metadata_with_a_replicated_topic
from tests.in_process_shards import ONE_NODE
from plinth.control.nodes import Node

THREE_NODES = [Node(f"node-{n}", "127.0.0.1", True, f"plinth-node:{n}") for n in "abc"]
ON_ONE_NODE = {"allow_replicas_on_one_node": True}


def test_a_factor_3_topic_is_opened_on_three_replicas_led_by_the_placement_owner(brokers):
    # Given three shards on one node, replicas allowed to share it
    broker = brokers(3, **ON_ONE_NODE)
    # When a topic with 4 partitions and 3 replicas is created
    broker.controller.create_topic("orders", 4, {}, 3)
    # Then each partition's record names the three shards, the rendezvous owner first and
    # leading at epoch 0, every replica in sync, written by this controller's epoch
    metadata = broker.metadata_on_disk()
    topic = metadata.topics["orders"]
    assert topic.replication_factor == 3 and topic.config["min.insync.replicas"] == "2"
    for p in range(4):
        record = topic.leadership[p]
        assert record.replicas[0] == record.leader == placement.shard_for("orders", p, THREE)
        assert sorted(record.replicas) == THREE and record.in_sync == record.replicas
        assert (record.leader_epoch, record.controller_epoch) == (0, metadata.controller_epoch)
    # And every shard serves every partition with its record (in its manifest)
    for shard_id in THREE:
        partitions = broker.manifest(shard_id).partitions
        assert {pid.partition: spec.leadership for pid, spec in partitions.items()} == \
            topic.leadership
    # And routers send each partition's requests to its leader
    assert list(broker.controller.routing().owners["orders"]) == [topic.leadership[p].leader
                                                                  for p in range(4)]


def test_describe_shows_each_partitions_leader_replicas_in_sync_epoch_and_high_watermark(brokers):
    # Given a factor-3 topic with records in partition 0, acknowledged once in sync
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("orders", 2, {}, 3)
    assert broker.produce("orders", 0, [b"a", b"b", b"c"], acks=-1) == 0
    # When it is described
    infos = broker.controller.describe_topic("orders").partition_info
    # Then each partition shows its leader, replicas, in-sync replicas, epoch and HW,
    # and its offsets (from the leader: three records in partition 0)
    record = broker.metadata_on_disk().topics["orders"].leadership[0]
    assert (infos[0].shard, infos[0].replicas, infos[0].in_sync_replicas) == \
        (record.leader, list(record.replicas), list(record.in_sync))
    assert (infos[0].leader_epoch, infos[0].high_watermark, infos[0].end_offset) == (0, 3, 3)
    assert (infos[1].high_watermark, infos[1].end_offset) == (0, 0)


def test_a_factor_1_topic_describes_its_one_replica_and_persists_as_before(brokers):
    # Given the default factor on one node
    broker = brokers(2)
    broker.controller.create_topic("plain", 2, {})
    # Then the topic has one copy, stored without replication keys
    raw = json.loads((broker.data_dir / "metadata.json").read_text())["topics"]["plain"]
    assert set(raw) == {"partitions", "config", "placement", "topic_id"}   # (ids: every topic)
    assert "min.insync.replicas" not in raw["config"]
    info = broker.controller.describe_topic("plain").partition_info[1]
    assert info.replicas == info.in_sync_replicas == [info.shard] and info.leader_epoch == 0
    assert all(spec.leadership is None for spec in broker.manifest(info.shard).partitions.values())


def test_a_factor_above_a_single_shard_is_refused_in_the_singular(brokers):
    broker = brokers(1)
    with pytest.raises(InvalidReplicationFactorError,
                       match="replication factor 2 is more than the broker's 1 shard: each"):
        broker.controller.create_topic("orders", 1, {}, replication_factor=2)


@pytest.mark.parametrize("factor, options, message", [
    (4, ON_ONE_NODE, "replication factor 4 is more than the broker's 3 shards: each"),
    (2, {}, "replication factor 2 is more than the 1 node.* --allow-replicas-on-one-node"),
    (6, ON_ONE_NODE, "replication factor 6 is outside 1..5"),
    (-1, ON_ONE_NODE, "replication factor -1 is outside 1..5"),
])
def test_a_factor_the_shards_or_nodes_cannot_hold_is_refused_naming_the_numbers(
        brokers, factor, options, message):
    # Given three shards on one node
    broker = brokers(3, **options)
    # When a topic asks for more copies than they can hold, Then it is refused, and
    # nothing is created
    with pytest.raises(InvalidReplicationFactorError, match=f"topic 'orders': {message}"):
        broker.controller.create_topic("orders", 1, {}, factor)
    assert broker.controller.list_topics() == []


def test_a_min_insync_above_the_factor_is_refused_naming_both(brokers):
    broker = brokers(3, **ON_ONE_NODE)
    with pytest.raises(InvalidConfigError, match="min.insync.replicas=3 is outside 1..2"):
        broker.controller.create_topic("orders", 1, {"min.insync.replicas": "3"}, 2)


def test_the_default_factor_is_1_on_one_node_and_3_on_three(brokers):
    # Given a broker on one node, When a topic is created without a factor, Then it has 1
    one = brokers(3, **ON_ONE_NODE)
    one.controller.create_topic("t", 1, {})
    assert one.metadata_on_disk().topics["t"].replication_factor == 1
    # Given three shards on three nodes, Then a topic without a factor has 3 replicas, on
    # the three nodes
    three = brokers(3, nodes=THREE_NODES, data_dir=one.data_dir.parent / "three")
    three.controller.create_topic("t", 1, {})
    metadata = three.metadata_on_disk()
    assert metadata.topics["t"].replication_factor == 3
    assert len({metadata.shard_nodes[s] for s in metadata.topics["t"].leadership[0].replicas}) == 3


def test_a_server_default_factor_applies_to_topics_created_without_one(brokers):
    broker = brokers(3, default_replication_factor=2, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {})
    assert broker.metadata_on_disk().topics["t"].replication_factor == 2
    with pytest.raises(InvalidReplicationFactorError, match="--default-replication-factor 0"):
        brokers(3, default_replication_factor=0)


def test_a_server_default_factor_the_shards_cannot_hold_is_refused_at_start_naming_the_option(
        brokers, tmp_path):
    # Given a default factor of 3 on 1 shard, and on 3 shards of one node (replicas not
    # allowed to share it)
    # When each server starts, Then it is refused, naming the option, the factor and the
    # shards or nodes, as --offsets-replication-factor is (it started, and refused every
    # topic created without a factor)
    with pytest.raises(InvalidConfigError,
                       match="--default-replication-factor 3 is more than the broker's 1 "
                             "shard: each replica needs its own shard, so every topic created "
                             "without a factor would be refused: give a smaller factor"):
        brokers(1, default_replication_factor=3)
    with pytest.raises(InvalidConfigError,
                       match="--default-replication-factor 3 is more than the 1 node the "
                             "shards run on: .* --allow-replicas-on-one-node"):
        brokers(3, data_dir=tmp_path / "one-node", default_replication_factor=3)
    # And with replicas allowed on one node, 3 shards start and take the factor
    broker = brokers(3, data_dir=tmp_path / "allowed", default_replication_factor=3,
                     **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {})
    assert broker.metadata_on_disk().topics["t"].replication_factor == 3


def test_removing_shards_below_the_servers_default_factor_is_refused_naming_it(brokers):
    # Given a server whose default factor is 3, on 3 shards (a removal below its offsets
    # factor is refused for the offsets topic's replicas: test_controller_offsets_topic)
    option = "default"
    broker = brokers(3, default_replication_factor=3, offsets_replication_factor=1,
                     **ON_ONE_NODE)
    # When a shard is removed, Then it is refused naming the option and what is left (it
    # was removed, and the server then refused to start with the option again)
    with pytest.raises(InvalidConfigError,
                       match=f"cannot remove 1 shard: the server's --{option}-replication-factor "
                             f"is 3, and the 2 shards it leaves on 1 node\\(s\\) can hold 2 "
                             f"copies .* restart it with a smaller --{option}-replication-factor"):
        broker.controller.remove_shards(1)
    # And nothing changed: the three shards still take writes
    assert broker.metadata_on_disk().shards == THREE


def test_every_start_bumps_the_controller_epoch_and_restamps_every_record(brokers):
    # Given a broker with a factor-2 topic
    broker = brokers(3, **ON_ONE_NODE)
    first_epoch = broker.metadata_on_disk().controller_epoch
    broker.controller.create_topic("t", 1, {}, 2)
    before = broker.metadata_on_disk().topics["t"].leadership[0]
    # When the server restarts
    broker = brokers(3, **ON_ONE_NODE)
    # Then the controller epoch grew by one, saved, and the record carries it, as a change
    metadata = broker.metadata_on_disk()
    assert metadata.controller_epoch == first_epoch + 1
    after = metadata.topics["t"].leadership[0]
    assert (after.controller_epoch, after.partition_epoch) == (first_epoch + 1,
                                                               before.partition_epoch + 1)
    # And every shard knows every peer's address and the new epoch, and its replicas
    # were opened with the new record
    addresses = broker.controller.routing().shard_addresses
    for shard_id in THREE:
        server = broker.shards.handles[shard_id].actor._server
        replication = server._replication
        assert replication._fetcher._addresses == addresses
        assert replication.controller_epoch == first_epoch + 1
    for shard_id in after.replicas:
        assert broker.manifest(shard_id).partitions[PartitionId("t", 0)].leadership == after


def test_a_shard_at_a_new_address_makes_every_shard_learn_it_and_gets_its_records(brokers):
    # Given a factor-3 topic
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    # When shard-2's process restarts at a new address and announces itself (Ray delivers
    # the announcement once the new actor is up; in process it comes during its
    # constructor, before the handle has it, so the test delivers it again after)
    handle = broker.shards.handles["shard-2"]
    handle.restart()
    broker.controller.shard_started("shard-2", handle.actor.address())
    # Then every shard has its new address
    address = broker.controller.routing().shard_addresses["shard-2"]
    for shard_id in THREE:
        assert broker.shards.handles[shard_id].actor._server._replication._fetcher._addresses["shard-2"] == address
    # And shard-2 has the partition's current record
    record = broker.metadata_on_disk().topics["t"].leadership[0]
    assert broker.shards.handles["shard-2"].actor._server._replication._leadership[("t", 0)] == record


def test_an_in_sync_change_is_a_compare_and_set_saved_and_pushed_to_the_replicas(brokers):
    # Given a factor-3 topic
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    record = broker.metadata_on_disk().topics["t"].leadership[0]
    follower = record.replicas[2]
    # When its leader asks to drop a follower, at the current epochs
    changed = broker.controller.alter_in_sync(record.leader, PartitionId("t", 0),
                                              record.leader_epoch, record.partition_epoch,
                                              record.replicas[:2])
    # Then the record changed (a new partition epoch), is saved, and the other replicas have it
    assert changed.in_sync == record.replicas[:2]
    assert changed.partition_epoch == record.partition_epoch + 1
    assert broker.metadata_on_disk().topics["t"].leadership[0] == changed
    for shard_id in record.replicas[1:]:
        assert broker.manifest(shard_id).partitions[PartitionId("t", 0)].leadership == changed
    # And the partition counts as under-replicated, not offline
    status = broker.controller.status()
    assert (status.under_replicated_partitions, status.offline_partitions) == (1, 0)
    [state] = broker.controller.partition_replication()
    assert (state.replicas, state.in_sync, state.leader) == (3, 2, record.leader)
    # And a request at the old partition epoch is fenced, changing nothing
    with pytest.raises(FencedLeaderEpochError):
        broker.controller.alter_in_sync(record.leader, PartitionId("t", 0), record.leader_epoch,
                                        record.partition_epoch, record.replicas)
    assert broker.metadata_on_disk().topics["t"].leadership[0] == changed
    assert follower not in changed.in_sync


def test_an_in_sync_change_of_a_partition_that_is_not_replicated_is_refused(brokers):
    broker = brokers(2)
    broker.controller.create_topic("t", 1, {})
    with pytest.raises(InvalidConfigError, match="t-0 is not replicated"):
        broker.controller.alter_in_sync("shard-0", PartitionId("t", 0), 0, 0, ("shard-0",))


def test_a_partition_whose_leader_shard_is_down_counts_as_offline(brokers):
    # Given a factor-2 topic and a factor-1 topic
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("r", 1, {}, 2)
    broker.controller.create_topic("p", 1, {})
    leader = broker.metadata_on_disk().topics["r"].leadership[0].leader
    # When the leader's shard fails a call (it is down)
    broker.controller._shards.failures[leader] = f"{leader} is down"
    # Then the partitions it leads are offline
    states = {s.topic: s for s in broker.controller.partition_replication()}
    assert states["r"].offline
    assert states["p"].offline == (broker.owner("p", 0) == leader)


def test_replicated_metadata_written_by_hand_starts(brokers, tmp_path):
    # Given a data dir whose metadata has a factor-3 topic led by shard-1 at epoch 2
    data_dir = tmp_path / "given"
    data_dir.mkdir()
    metadata_with_a_replicated_topic().save(data_dir / "metadata.json")
    # (and its replicas' directories, empty: a replica whose directory is missing lost
    # its disk, and needs repair; test_controller_repair.py)
    for shard_id in ("shard-0", "shard-1", "shard-2"):
        (data_dir / "shards" / shard_id / "events-0").mkdir(parents=True)
    # When the broker starts on it
    broker = brokers(3, data_dir=data_dir, **ON_ONE_NODE)
    # Then requests for the partition go to its leader, and it describes as saved
    assert broker.owner("events", 0) == "shard-1"
    info = broker.controller.describe_topic("events").partition_info[0]
    assert (info.shard, info.leader_epoch, info.in_sync_replicas) == \
        ("shard-1", 2, ["shard-1", "shard-2"])


# --- The leader lease (check_leaders) -------------------------------------------------

def not_answering_once(broker, shard_id: str) -> None:
    """The shard's next ping fails, as a dead (or paused) shard's does."""
    broker.shards.handles[shard_id].fail_next("address", ray.exceptions.ActorDiedError())


def test_a_leader_that_does_not_answer_is_replaced_by_an_in_sync_replica_and_fenced(brokers):
    # Given a factor-3 topic, and its leader's shard that stops answering
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 3)
    before = broker.metadata_on_disk().topics["t"].leadership[0]
    assert broker.controller.check_leaders() == []   # all answer: nothing changes
    not_answering_once(broker, before.leader)
    # When the controller checks the leaders
    changes = broker.controller.check_leaders()
    # Then the next in-sync replica leads, in a new leader epoch, the lost one out of sync
    after = broker.metadata_on_disk().topics["t"].leadership[0]
    assert changes == [(PartitionId("t", 0), before.replicas[1])]
    assert (after.leader, after.leader_epoch) == (before.replicas[1], before.leader_epoch + 1)
    assert after.in_sync == before.replicas[1:] and after.partition_epoch > before.partition_epoch
    # And the replicas that answer have the record, and routers send writes to the new leader
    for shard_id in before.replicas[1:]:
        assert broker.manifest(shard_id).partitions[PartitionId("t", 0)].leadership == after
    assert broker.owner("t", 0) == before.replicas[1]
    # And the old leader, answering again, stays a follower until the leader adds it back
    assert broker.controller.check_leaders() == []
    assert broker.metadata_on_disk().topics["t"].leadership[0] == after


def offline_factor_2_topic(broker, name: str):
    """A factor-2 topic ``name`` whose two replicas stopped answering and that a leader
    check took offline; returns its record from before."""
    broker.controller.create_topic(name, 1, {}, 2)
    record = broker.metadata_on_disk().topics[name].leadership[0]
    for shard_id in record.replicas:
        not_answering_once(broker, shard_id)
    assert broker.controller.check_leaders() == [(PartitionId(name, 0), "")]
    return record


def test_a_partition_whose_replicas_all_stop_answering_goes_offline_and_comes_back(brokers):
    # Given a factor-2 topic whose two replicas stop answering
    broker = brokers(3, **ON_ONE_NODE)
    # When the leaders are checked / Then the partition has no leader: offline
    record = offline_factor_2_topic(broker, "t")
    assert broker.controller.status().offline_partitions == 1
    assert broker.owner("t", 0) == ""
    # And when its replicas answer again, an in-sync one leads again
    [(_, leader)] = broker.controller.check_leaders()
    assert leader in record.in_sync and broker.controller.status().offline_partitions == 0


def test_a_leader_slow_to_answer_once_keeps_leading_and_twice_in_a_row_is_replaced(brokers):
    # Given a factor-2 topic whose leader does not answer one ping in time
    broker = brokers(3, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 2)
    record = broker.metadata_on_disk().topics["t"].leadership[0]
    slow = RequestTimedOutError(f"{record.leader} did not answer address within 0.75 s")
    broker.shards.handles[record.leader].fail_next("address", slow)
    # When the leaders are checked / Then it keeps leading (it may be busy)
    assert broker.controller.check_leaders() == []
    # And when it misses the next ping too, it is replaced
    broker.shards.handles[record.leader].fail_next("address", slow)
    assert broker.controller.check_leaders() == [(PartitionId("t", 0), record.replicas[1])]


class UnstartedLease(LeaderLease):
    """A real lease whose thread never starts: the test reads whether it is wanted."""

    def __init__(self):
        super().__init__(check=lambda: None)


def test_the_lease_is_wanted_exactly_while_a_replicated_partition_exists(brokers):
    # Given a controller with its own lease, and only a factor-1 topic
    lease = UnstartedLease()
    broker = brokers(3, start_lease=lambda: lease, **ON_ONE_NODE)
    broker.controller.create_topic("plain", 1, {}, 1)
    # Then its lease sleeps: there is no leader to lose
    assert not lease.wanted
    # When a factor-3 topic is created / Then the lease checks
    broker.controller.create_topic("t", 1, {}, 3)
    assert lease.wanted
    # And when it is deleted again, the lease sleeps again
    broker.controller.delete_topic("t")
    assert not lease.wanted


def test_a_restarted_controller_wants_its_lease_for_the_replicated_topics_it_loaded(brokers):
    # Given a broker with a factor-2 topic
    brokers(3, **ON_ONE_NODE).controller.create_topic("t", 1, {}, 2)
    # When the controller starts again on the same data dir
    lease = UnstartedLease()
    brokers(3, start_lease=lambda: lease, **ON_ONE_NODE)
    # Then its lease checks from the start
    assert lease.wanted


def test_a_controller_shutting_down_stops_its_lease_and_elects_no_more(brokers):
    # Given a factor-2 topic whose leader stops answering
    lease = UnstartedLease()
    broker = brokers(3, start_lease=lambda: lease, **ON_ONE_NODE)
    broker.controller.create_topic("t", 1, {}, 2)
    record = broker.metadata_on_disk().topics["t"].leadership[0]
    not_answering_once(broker, record.leader)
    # When the controller shuts down (its shards stop)
    broker.controller.shutdown(5.0)
    # Then its lease is stopped, and a check queued behind the shutdown elects nobody
    assert lease._stopping
    assert broker.controller.check_leaders() == []
    assert broker.metadata_on_disk().topics["t"].leadership[0] == record


def test_a_restarted_leader_announcing_itself_gets_its_partitions_a_new_leader_epoch(brokers):
    # Given a factor-3 topic and a factor-2 topic the same shard leads, and one it follows
    broker = brokers(3, **ON_ONE_NODE)
    for name, factor in (("a", 3), ("b", 2)):
        broker.controller.create_topic(name, 4, {}, factor)
    metadata = broker.metadata_on_disk()
    leader = metadata.topics["a"].leadership[0].leader
    before = {(n, p): r for n, t in metadata.topics.items() for p, r in t.leadership.items()}
    # When its process restarts and announces itself (delivered again after its
    # constructor, as Ray does: see the test of a new address)
    handle = broker.shards.handles[leader]
    handle.restart()
    broker.controller.shard_started(leader, handle.actor.address())
    # Then every partition it led is in a new leader epoch (it lost its leader state),
    # led by the first in-sync replica that answers, and the others are unchanged
    after = broker.metadata_on_disk()
    for (name, p), record in before.items():
        now = after.topics[name].leadership[p]
        if record.leader == leader:
            # (Not necessarily in_sync[0]: a restarted shard whose first call failed while
            # its new actor started is passed over, and may be back in sync by now.)
            assert now.leader_epoch > record.leader_epoch and now.leader in now.in_sync
        else:
            assert now == record
