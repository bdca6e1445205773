"""ShardActor without Ray, replication: a partition's leadership record and its topic's
min.insync.replicas reach the shard at open, after a restart, and when altered."""

from __future__ import annotations

import dataclasses
import time

import zmq

from plinth import protocol
from plinth.errors import NotEnoughReplicasError, NotLeaderError
from plinth.format.record_batch import BatchBuilder
from plinth.shards.actor import ShardActor
from plinth.shards.shard_calls import Leadership, PartitionId, PartitionSpec

PID = PartitionId("t", 0)
# shard-0 leads t-0 with two other replicas, alone in sync (they have not fetched yet).
LEADING = Leadership(replicas=("shard-0", "shard-1", "shard-2"), leader="shard-0",
                     leader_epoch=3, in_sync=("shard-0",), partition_epoch=5, controller_epoch=1)


def produce(address: str, acks: int) -> protocol.ReplyView:
    builder = BatchBuilder()
    builder.append(None, b"v", time.time_ns() // 1_000_000, None)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send_multipart([b"c", protocol.encode_produce(1, "t", 0, acks), builder.build()])
        assert sock.poll(10_000), "no reply from the shard"
        return protocol.decode_reply(sock.recv_multipart()[1])
    finally:
        sock.close()


def test_a_partition_opened_with_a_leadership_follows_its_min_insync_across_restart_and_alter(
        tmp_path):
    # Given a shard opening t-0 as its leader in epoch 3, min.insync.replicas=1
    actor = ShardActor("shard-0", str(tmp_path / "shard-0"), bind_host="127.0.0.1")
    try:
        actor.open_partitions([PartitionSpec("t", 0, {"min.insync.replicas": "1"},
                                             leadership=LEADING)])
        # Then acks="all" is acknowledged with the leader alone in sync
        assert produce(actor.address(), -1).error is None
        # When the shard restarts (from its manifest)
        actor.shutdown(5)
        actor = ShardActor("shard-0", str(tmp_path / "shard-0"), bind_host="127.0.0.1")
        # Then it does not lead t-0 again in the epoch it led before (invariant 13)
        refused = produce(actor.address(), 1).error
        assert isinstance(refused, NotLeaderError) and "epoch 3 before it restarted" in \
            refused.message
        # When the controller elects it again, in epoch 4
        actor.set_leadership([(PID, dataclasses.replace(LEADING, leader_epoch=4,
                                                        partition_epoch=6))])
        # Then it leads, and acks="all" is acknowledged again
        reply = produce(actor.address(), -1)
        assert (reply.error, reply.base_offset) == (None, 1)
        # When the topic's min.insync.replicas becomes 2
        actor.alter_partitions([PID], {"min.insync.replicas": "2"})
        # Then acks="all" is refused, acks=1 still taken
        assert isinstance(produce(actor.address(), -1).error, NotEnoughReplicasError)
        assert produce(actor.address(), 1).error is None
        # When the controller names another leader
        actor.set_leadership([(PID, Leadership(
            replicas=LEADING.replicas, leader="shard-1", leader_epoch=5,
            in_sync=("shard-1",), partition_epoch=7, controller_epoch=1))])
        # Then a produce here is refused: this shard does not lead t-0
        assert isinstance(produce(actor.address(), 1).error, NotLeaderError)
    finally:
        actor.shutdown(5)
