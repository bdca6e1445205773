"""The wire of ``plinth shards move`` (moveShard and its shardMove reply) and the node
names ``plinth status`` prints for it."""

from __future__ import annotations

from plinth import protocol


def test_a_move_shard_request_round_trips_with_its_options():
    # Given a moveShard request with two of its three options set
    frame = protocol.encode_move_shard(7, "shard-1", "d", accept_data_loss=True, force=True)
    # When the router decodes it, Then every field is as sent
    assert protocol.decode_request(frame) == protocol.MoveShardRequest(
        7, "shard-1", "d", allow_replicas_on_one_node=False, accept_data_loss=True, force=True)


def test_a_shard_move_reply_round_trips_its_nodes_and_partitions():
    move = protocol.ShardMove("shard-1", "b", "d", "tcp://127.0.0.1:7501",
                              [("t", 0), ("t", 2)], [("plain", 1)])
    reply = protocol.decode_reply(protocol.encode_shard_move_reply(3, move))
    assert (reply.kind, reply.shard_move) == ("shardMove", move)


def test_status_carries_each_nodes_name_and_each_shards_node():
    # Given a status with a named node and a shard on it
    shard = protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7501", True, 2, 10, 0.0, 0.0,
                                 node="a")
    info = protocol.StatusInfo([("id-a", "127.0.0.1", True), ("id-x", "127.0.0.1", False)],
                               [shard], [], node_names={"id-a": "a"})
    # When it goes over the wire, Then the names come back (none for an unnamed node)
    status = protocol.decode_reply(protocol.encode_status_reply(1, info)).status
    assert status.node_names == {"id-a": "a"} and status.shards[0].node == "a"
