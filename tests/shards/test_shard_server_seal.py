"""ShardServer.seal_range of a replicated partition (issue 12: its replica set moves): the
leader stops taking writes at once, but its seal is final only once every in-sync
replica holds its log's end; a follower stops following where the leader sealed it and
then serves the range up to there. Real ShardServers on 127.0.0.1 and a real disk, the
test playing the controller (test_shard_server_replication.py's Cluster)."""

from __future__ import annotations

from plinth.errors import UnavailableError
from tests.shards.test_shard_server_replication import cluster, produce   # noqa: F401 (fixture)
from tests.shards.test_shard_server import fetch, values_in


def test_a_leaders_seal_is_final_only_once_every_in_sync_replica_holds_its_log_end(cluster):
    # Given a leader s0 whose record "b" (acks=1) in-sync follower s2 does not hold: s2 is
    # down, and stays in sync (its lag time is long)
    c = cluster(lag_time_max_ms=60_000)
    router = c.router("s0")
    assert produce(router, [b"a"]).error is None
    c.stop("s2")
    assert produce(router, [b"b"], acks=1).base_offset == 1
    s0 = c.servers["s0"]
    # When the leader is sealed
    end_offset, _, complete = s0.call(s0.seal_range, "t", 0)
    # Then it is not final: its high watermark, 1, is short of its log end, 2
    assert (end_offset, complete) == (1, False)
    # And it refuses writes at once
    reply = produce(router, [b"late"], acks=1)
    assert isinstance(reply.error, UnavailableError) and "moved away" in str(reply.error)
    # When s2 is back and fetches the rest, Then the leader's seal is final at 2
    c.start("s2")
    c.wait_for(lambda: s0.call(s0.seal_range, "t", 0)[2], "the seal is final")
    assert s0.call(s0.seal_range, "t", 0)[:1] == (2,)


def test_a_follower_sealed_at_the_leaders_end_serves_the_range_and_stops_following(cluster):
    # Given three replicas holding "a", "b", the leader sealed there
    c = cluster()
    assert produce(c.router("s0"), [b"a", b"b"]).error is None
    c.wait_converged(c.ids, 2)
    s0, s1, s2 = (c.servers[s] for s in c.ids)
    assert s0.call(s0.seal_range, "t", 0)[::2] == (2, True)
    # When follower s1 is sealed at 2, Then it holds the range whole: final
    assert s1.call(s1.seal_range, "t", 0, 2)[::2] == (2, True)
    # And it serves it, up to 2, and neither leads nor follows it any more
    reply, payload = fetch(c.router("s1"), 0)
    assert (reply.error, reply.high_watermark, values_in(payload)) == (None, 2, [b"a", b"b"])
    assert ("t", 0) not in s1.call(s1.stats_snapshot)["replication"]
    # And a follower asked to seal where its log does not end says it does not hold it
    assert s2.call(s2.seal_range, "t", 0, 5)[::2] == (2, False)
