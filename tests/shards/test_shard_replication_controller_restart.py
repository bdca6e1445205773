"""A leader's in-sync change while the controller restarts (shard_replication.py): the
compare-and-set fails (the controller's handle says UnavailableError), the leader keeps
its old in-sync set (so the high watermark never counts a replica the controller was
not told of), and asks again until the restarted controller answers. Real ShardServers
on 127.0.0.1 and a real disk; the test plays the controller (test_shard_server_replication's
Cluster and FakeController)."""

from __future__ import annotations

import threading

from plinth.errors import UnavailableError
from tests.shards.test_shard_server_replication import cluster, produce  # noqa: F401 (a fixture)

FAILED_ASKS_MIN = 2   # the leader asked again after a failure, at least once


def test_a_leader_keeps_its_in_sync_set_while_the_controller_restarts_and_asks_again(cluster):
    # Given leader s0 with followers s1 and s2, min.insync.replicas=2, and a controller
    # that is restarting: every in-sync change fails as its handle reports it
    c = cluster(lag_time_max_ms=500)
    router = c.router("s0")
    assert produce(router, [b"before"]).error is None
    back = threading.Event()
    failed_asks = []
    answer = c.controller.alter_in_sync

    def restarting(*args):
        if not back.is_set():
            failed_asks.append(args)
            raise UnavailableError("the broker's controller died or was unreachable during "
                                   "alter_in_sync (ActorUnavailableError); retry")
        return answer(*args)

    c.controller.alter_in_sync = restarting
    # When follower s2 stops, so that s0 wants it out of the in-sync set
    c.stop("s2")
    c.wait_for(lambda: len(failed_asks) >= FAILED_ASKS_MIN, "s0 asks again after a failure")
    # Then s0 kept its in-sync set meanwhile (nothing changed without the controller)
    assert c.replication("s0")["in_sync"] == ["s0", "s1", "s2"]
    assert c.controller.leadership.in_sync == ("s0", "s1", "s2")
    # And once the restarted controller answers, the change is made, and acks="all"
    # produces are acknowledged by s0 and s1
    back.set()
    c.wait_for(lambda: c.replication("s0")["in_sync"] == ["s0", "s1"], "s2 leaves the in-sync set")
    assert c.controller.leadership.in_sync == ("s0", "s1")
    reply = produce(router, [b"after"])
    assert (reply.error, reply.base_offset) == (None, 1)
