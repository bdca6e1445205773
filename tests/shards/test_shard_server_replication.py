"""ShardServer replication: a leader and its followers, real ShardServers with real
sockets on 127.0.0.1 and a real disk, in one process, no Ray.

The test plays the controller: it sends each shard the others' addresses
(set_peers) and the partition's leadership record (open_partition(leadership=)
/ set_leadership), and answers the leader's in-sync changes with a
compare-and-set on the record it holds (FakeController, the controller's side of
ControllerAnnouncements.alter_in_sync). A DEALER plays the router, speaking the
wire protocol: [client id][Request][payload]? out, [client id][Reply][payload]? back.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import ExitStack

import pytest
import zmq

from plinth import limits, protocol
from plinth.cluster_keys import ClusterKeys
from plinth.errors import (FencedLeaderEpochError, NotEnoughReplicasBeforeWriteError,
                           NotEnoughReplicasError, NotLeaderError, RequestTimedOutError,
                           StorageError)
from plinth.format.record_batch import BatchBuilder
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_calls import Leadership, PartitionId
from plinth.shards.shard_server import ShardServer
from tests.support import LostWriteback

NOW_MS = time.time_ns() // 1_000_000
CLIENT = b"client-1"
PID = PartitionId("t", 0)
KEY = ("t", 0)
WAIT_S = 10.0


class FakeController:
    """The controller's side of alter_in_sync: a compare-and-set on the record it holds
    (control/leadership.py does it for real), which it then pushes to the replicas."""

    def __init__(self, leadership: Leadership):
        self.leadership = leadership
        self.servers: dict[str, ShardServer] = {}
        self.refused = 0
        self.disk_refusals: list[tuple[str, str]] = []   # (shard, error) nudges
        self._lock = threading.Lock()

    def leader_disk_refused(self, shard_id: str, error: str) -> None:
        self.disk_refusals.append((shard_id, error))

    def shard_started(self, shard_id: str, address: str, direct_address: str = "",
                      pid: int = 0) -> None:
        pass

    def alter_in_sync(self, shard_id, partition, leader_epoch, partition_epoch, in_sync):
        with self._lock:
            current = self.leadership
            if (shard_id, leader_epoch, partition_epoch) != \
                    (current.leader, current.leader_epoch, current.partition_epoch):
                self.refused += 1
                raise FencedLeaderEpochError(f"stale: {leader_epoch}/{partition_epoch}, "
                                             f"holding {current}")
            eligible = tuple(r for r in current.in_sync if r not in in_sync)
            self.leadership = dataclasses.replace(
                current, in_sync=tuple(in_sync), partition_epoch=partition_epoch + 1,
                eligible=eligible if len(in_sync) < 2 else ())
            return self.leadership

    def elect(self, leader: str, in_sync: tuple[str, ...]) -> Leadership:
        """A new leader (leader epoch and partition epoch + 1), as an election does."""
        with self._lock:
            current = self.leadership
            self.leadership = dataclasses.replace(
                current, leader=leader, in_sync=in_sync, eligible=(),
                leader_epoch=current.leader_epoch + 1,
                partition_epoch=current.partition_epoch + 1)
            return self.leadership


class Cluster:
    """Shards s0 (the first leader), s1, s2 on one partition (``PARTITION``: t-0)."""

    PARTITION = PID

    def __init__(self, tmp_path, stack: ExitStack, *, min_insync: int = 2,
                 lag_time_max_ms: int = 1_000, cluster_keys: ClusterKeys | None = None,
                 log_config: LogConfig = LogConfig(), direct_clients: bool = False):
        self.tmp_path, self.stack = tmp_path, stack
        self.direct_clients = direct_clients
        self.ids = ("s0", "s1", "s2")
        self.min_insync, self.lag_time_max_ms, self.keys = min_insync, lag_time_max_ms, cluster_keys
        self.log_config = log_config
        self.controller = FakeController(Leadership(
            replicas=self.ids, leader="s0", leader_epoch=1, in_sync=self.ids,
            partition_epoch=1, controller_epoch=1))
        self.servers: dict[str, ShardServer] = {}
        for shard_id in self.ids:
            self.start(shard_id)

    def start(self, shard_id: str, leadership: Leadership | None = None,
              restarted: bool = False) -> ShardServer:
        srv = ShardServer(shard_id, self.tmp_path / shard_id, "127.0.0.1",
                          cluster_keys=self.keys, controller=self.controller,
                          replica_lag_time_max_ms=self.lag_time_max_ms,
                          direct_clients=self.direct_clients)
        srv.start()
        self.servers[shard_id] = srv
        self.push_peers()
        srv.call(srv.open_partition, self.PARTITION.topic, self.PARTITION.partition,
                 self.log_config, 0, False, None, leadership or self.controller.leadership,
                 self.min_insync, restarted)
        return srv

    def stop(self, shard_id: str) -> None:
        self.servers.pop(shard_id).stop(5)

    def push_peers(self) -> None:
        addresses = {sid: srv.address for sid, srv in self.servers.items()}
        for srv in self.servers.values():
            srv.call(srv.set_peers, addresses, 1)

    def push_leadership(self, leadership: Leadership, to: tuple[str, ...]) -> None:
        for shard_id in to:
            srv = self.servers[shard_id]
            srv.call(srv.set_leadership, [(self.PARTITION, leadership)])

    def replication(self, shard_id: str) -> dict:
        srv = self.servers[shard_id]
        return srv.call(srv.stats_snapshot)["replication"][(self.PARTITION.topic, self.PARTITION.partition)]

    def wait_for(self, predicate, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {WAIT_S} s: {what}")
            time.sleep(0.02)

    def log_start(self, shard_id: str) -> int:
        srv = self.servers[shard_id]
        return srv.call(srv.stats_snapshot)["logs"][KEY]["start_offset"]

    def log_bytes(self, shard_id: str) -> bytes:
        """The partition's log on disk (one segment: the tests write little)."""
        (segment,) = (self.tmp_path / shard_id / "t-0").glob("*.log")
        return segment.read_bytes()

    def wait_converged(self, shard_ids: tuple[str, ...], end_offset: int) -> None:
        self.wait_for(lambda: all(self.replication(sid)["log_end_offset"] == end_offset
                                  and self.replication(sid)["high_watermark"] == end_offset
                                  for sid in shard_ids),
                      f"{shard_ids} hold and may serve up to offset {end_offset}")

    def router(self, shard_id: str, keys: ClusterKeys | None = None) -> zmq.Socket:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            keys.apply_client(sock)
        sock.connect(self.servers[shard_id].address)
        self.stack.callback(sock.close)
        return sock


@pytest.fixture
def cluster(tmp_path):
    with ExitStack() as stack:
        made = []

        def make(**options) -> Cluster:
            made.append(Cluster(tmp_path, stack, **options))
            return made[0]
        yield make
        for c in made:
            for shard_id in list(c.servers):
                c.stop(shard_id)


def batch_of(values: list[bytes]) -> bytes:
    builder = BatchBuilder()
    for value in values:
        builder.append(None, value, NOW_MS, None)
    return builder.build()


_request_ids = iter(range(1, 1 << 30))


def send_produce(sock, values: list[bytes], acks: int = -1) -> int:
    request_id = next(_request_ids)
    sock.send_multipart([CLIENT, protocol.encode_produce(request_id, "t", 0, acks),
                         batch_of(values)])
    return request_id


def reply_of(sock, timeout_ms: int = int(WAIT_S * 1000)) -> protocol.ReplyView:
    assert sock.poll(timeout_ms), f"no reply in {timeout_ms} ms"
    frames = sock.recv_multipart()
    return protocol.decode_reply(frames[1])


def produce(sock, values: list[bytes], acks: int = -1) -> protocol.ReplyView:
    send_produce(sock, values, acks)
    return reply_of(sock)


# --- acks="all" and the followers' copies ------------------------------------------

def test_acks_all_produces_are_acknowledged_and_every_follower_holds_the_same_bytes(cluster):
    # Given a leader s0 and two followers, min.insync.replicas=2
    c = cluster()
    router = c.router("s0")
    # When a router sends five acks="all" produces
    replies = [produce(router, [b"v%d-%d" % (i, j) for j in range(3)]) for i in range(5)]
    # Then each is acknowledged at its offset, and the high watermark passed it
    assert [(r.error, r.base_offset) for r in replies] == [(None, 3 * i) for i in range(5)]
    assert c.replication("s0")["high_watermark"] == 15
    # And both followers hold the leader's log byte for byte, readable to 15
    c.wait_converged(c.ids, 15)
    assert c.log_bytes("s1") == c.log_bytes("s2") == c.log_bytes("s0")
    assert c.replication("s0")["role"] == "leader"
    assert c.replication("s1")["role"] == "follower"
    assert c.replication("s0")["follower_lag"] == {"s1": 0, "s2": 0}


def test_the_replication_stats_say_why_a_follower_is_out_of_sync(cluster):
    # Given a leader s0 and two followers in sync, with the lag time of 1 s
    c = cluster()
    produce(c.router("s0"), [b"a", b"b"])
    c.wait_converged(c.ids, 2)
    # Then a follower says which address it fetches from, and the leader's view of it
    follower = c.replication("s1")
    assert follower["leader_address"] == follower["connected_to"] == c.servers["s0"].address
    assert follower["link_fetches_sent"] > 0 and follower["backoff_ms"] == 0
    # When s2 stops and leaves the in-sync set
    c.stop("s2")
    c.wait_for(lambda: c.replication("s0")["in_sync"] == ["s0", "s1"], "s2 leaves")
    # Then the leader's stats say it has not fetched for the lag time, and would not be
    # proposed back; s1 still would
    followers = c.replication("s0")["followers"]
    assert followers["s2"]["last_fetch_ago_s"] > c.lag_time_max_ms / 1000
    assert (followers["s2"]["wanted_in_sync"], followers["s1"]["wanted_in_sync"]) == (False, True)
    assert c.replication("s0")["pending_in_sync"] is None


def test_a_produce_to_a_follower_is_refused_with_not_leader(cluster):
    # Given s1 follows t-0
    c = cluster()
    # When a router sends it a produce, Then it refuses: it does not lead t-0
    reply = produce(c.router("s1"), [b"x"], acks=1)
    assert isinstance(reply.error, NotLeaderError) and "s0" in reply.error.message


def test_a_direct_fetch_at_a_follower_is_refused_with_not_leader_and_served_at_the_leader(
        cluster):
    # Given s0 leads t-0 and s1 follows it, both with direct sockets, a record stored
    c = cluster(direct_clients=True)
    produce(c.router("s0"), [b"x"], acks=-1)
    fetch = protocol.encode_fetch(7, PID.topic, PID.partition, 0, 1 << 20, 0)
    replies = {}
    for shard_id in ("s0", "s1"):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(c.servers[shard_id].direct_address)
        try:
            # When a direct client fetches t-0 at each
            sock.send_multipart([fetch])
            assert sock.poll(int(WAIT_S * 1000))
            replies[shard_id] = protocol.decode_reply(sock.recv_multipart()[0])
        finally:
            sock.close()
    # Then the follower refuses (the client's route is stale: it asks the router), the
    # leader serves
    assert isinstance(replies["s1"].error, NotLeaderError)
    assert replies["s0"].error is None and replies["s0"].high_watermark == 1


def test_acks_all_waits_for_the_in_sync_followers_not_only_the_leaders_fsync(cluster):
    # Given a cluster whose followers are both stopped, still in sync (a long lag time)
    c = cluster(lag_time_max_ms=60_000)
    c.stop("s1")
    c.stop("s2")
    router = c.router("s0")
    # When an acks=1 and an acks="all" produce arrive
    acks_one = produce(router, [b"one"], acks=1)
    send_produce(router, [b"all"], acks=-1)
    # Then the acks=1 one is acknowledged at once, the acks="all" one is not
    assert acks_one.error is None and acks_one.base_offset == 0
    assert not router.poll(1000)
    assert c.replication("s0")["high_watermark"] == 0
    # And once the followers come back and fetch, it is
    c.start("s1")
    assert not router.poll(500)   # s2, in sync, does not hold it yet
    c.start("s2")
    reply = reply_of(router)
    assert reply.error is None and reply.base_offset == 1


def test_with_one_of_two_followers_stopped_acks_all_is_still_acknowledged(cluster):
    # Given three replicas, min.insync.replicas=2, and follower s2 stopped
    c = cluster(lag_time_max_ms=500)
    router = c.router("s0")
    assert produce(router, [b"before"]).error is None
    c.stop("s2")
    # When acks="all" produces arrive, before and after s2 leaves the in-sync set
    first = produce(router, [b"a"])
    c.wait_for(lambda: c.replication("s0")["in_sync"] == ["s0", "s1"], "s2 leaves the in-sync set")
    second = produce(router, [b"b"])
    # Then both are acknowledged: the leader and s1 are enough
    assert (first.error, first.base_offset, second.error, second.base_offset) == \
        (None, 1, None, 2)


def test_with_both_followers_stopped_acks_all_gets_not_enough_replicas(cluster, monkeypatch):
    # Given three replicas, min.insync.replicas=2, and an acks="all" wait far longer than
    # the test waits for any reply
    monkeypatch.setattr(limits, "ACKS_ALL_WAIT_MS_MAX", 600_000)
    c = cluster(lag_time_max_ms=500)
    router = c.router("s0")
    assert produce(router, [b"before"]).error is None
    # When both followers stop (or cannot append: a full disk), with an acks="all"
    # produce waiting
    c.stop("s1")
    c.stop("s2")
    send_produce(router, [b"waiting"])
    # Then the in-sync set shrinks to the leader alone
    c.wait_for(lambda: c.replication("s0")["in_sync"] == ["s0"], "the in-sync set shrinks")
    # And the waiting produce is answered NotEnoughReplicas as the set shrinks below the
    # minimum, naming it, not once its wait ends (the high watermark cannot move until
    # a follower is back; Kafka's DelayedProduce answers at the shrink too)
    waiting = reply_of(router)
    assert isinstance(waiting.error, NotEnoughReplicasError)
    assert waiting.error.message == ("t-0: in-sync replicas ['s0'] are 1, fewer than "
                                     "min.insync.replicas=2")
    # And a new acks="all" produce is refused at once, naming the set and the minimum,
    # and appends nothing
    end_offset = c.replication("s0")["log_end_offset"]
    send_produce(router, [b"late"])
    refused = reply_of(router, timeout_ms=1000)
    assert isinstance(refused.error, NotEnoughReplicasError)
    assert c.replication("s0")["log_end_offset"] == end_offset
    assert "t-0" in refused.error.message and "s0" in refused.error.message
    assert "2" in refused.error.message
    # And acks=1 is still taken
    assert produce(router, [b"one"], acks=1).error is None


def disk_refuses(c: Cluster, shard_id: str, refuses: bool = True) -> None:
    """``shard_id``'s disk refuses every append of fetched entries to t-0 (full), or
    takes them again."""
    srv = c.servers[shard_id]

    def full(entries, epoch_starts):
        raise StorageError(f"cannot append to t-0 in {c.tmp_path / shard_id}: [Errno 28] No "
                           f"space left on device")

    def on_loop():
        part = srv._partitions[(c.PARTITION.topic, c.PARTITION.partition)]
        if refuses:
            part.append_replicated = full
        else:
            del part.append_replicated
    srv.call(on_loop)


def test_followers_whose_disks_refuse_appends_leave_the_in_sync_set_at_once_and_rejoin_later(
        cluster):
    # Given three replicas, min.insync.replicas=2, and a lag time far longer than the
    # test waits for anything
    c = cluster(lag_time_max_ms=600_000)
    router = c.router("s0")
    assert produce(router, [b"before"]).error is None
    # When both followers' disks refuse what they fetch (full), with a produce waiting
    disk_refuses(c, "s1")
    disk_refuses(c, "s2")
    send_produce(router, [b"waiting"])
    # Then their next fetches say so, and the leader takes them out of the in-sync set
    # then, not after the lag time (as Kafka takes an offline log dir's replicas out)
    c.wait_for(lambda: c.replication("s0")["in_sync"] == ["s0"], "the in-sync set shrinks")
    # And the waiting produce, appended, is answered as perhaps stored; the next one is
    # refused before its append
    waiting = reply_of(router)
    assert type(waiting.error) is NotEnoughReplicasError
    assert type(produce(router, [b"late"]).error) is NotEnoughReplicasBeforeWriteError
    # And once their disks take writes again, they catch up and rejoin
    disk_refuses(c, "s1", False)
    disk_refuses(c, "s2", False)
    c.wait_for(lambda: c.replication("s0")["in_sync"] == ["s0", "s1", "s2"], "they rejoin")
    assert produce(router, [b"after"]).error is None


def test_a_follower_retries_a_silent_leader_with_backoff_and_catches_up_at_its_new_address(
        cluster, monkeypatch):
    # Given s1 and s2 follow s0, which holds offset 0 in sync with them, and give up a
    # fetch 300 ms after its wait
    monkeypatch.setattr(limits, "REPLICA_FETCH_TIMEOUT_MS", 300)
    c = cluster()
    assert produce(c.router("s0"), [b"a"]).error is None
    c.wait_converged(c.ids, 1)
    # When s0 stops for 3 s
    c.stop("s0")
    failures_before = c.replication("s1")["fetch_failures"]
    time.sleep(3)   # the span measured: how many fetches a silent leader costs
    failures = c.replication("s1")["fetch_failures"] - failures_before
    # Then s1 tried again only a few times (backoff up to REPLICA_FETCH_BACKOFF_MS_MAX)
    assert 1 <= failures <= 10, failures
    # And when s0 comes back at a new address, its followers fetch from it again
    c.start("s0")
    assert produce(c.router("s0"), [b"b"]).error is None
    c.wait_converged(c.ids, 2)


def test_a_follower_refused_by_its_leader_backs_off_instead_of_spinning(cluster):
    # Given s1 told that s2 leads epoch 2, while s2 has not heard of it (it refuses)
    c = cluster()
    told = dataclasses.replace(c.controller.leadership, leader="s2", leader_epoch=2,
                               in_sync=("s1", "s2"), partition_epoch=2)
    c.push_leadership(told, ("s1",))
    c.wait_for(lambda: c.replication("s1")["fetch_failures"] >= 1, "s2 refuses s1's fetch")
    failures_before = c.replication("s1")["fetch_failures"]
    # When 2 s pass
    time.sleep(2)   # the span measured: how often a refused follower asks again
    # Then s1 asked only a few times (backoff doubling from 50 ms to 2 s), not thousands
    failures = c.replication("s1")["fetch_failures"] - failures_before
    assert 1 <= failures <= 8, failures


def test_a_follower_whose_disk_was_lost_is_rebuilt_from_the_leader_and_marked_until_then(
        cluster, tmp_path):
    import shutil

    # Given all three replicas hold offsets 0..2
    c = cluster(min_insync=1)
    router = c.router("s0")
    assert produce(router, [b"a", b"b", b"c"]).error is None
    c.wait_converged(c.ids, 3)
    # When s2 restarts without its partition's directory (a lost disk), the leader away
    c.stop("s0")
    c.stop("s2")
    shutil.rmtree(tmp_path / "s2" / "t-0")
    c.start("s2", restarted=True)
    # Then it needs repair
    assert c.replication("s2")["needs_repair"]
    # And once the leader is back, it rebuilds the log from it, byte for byte, and is repaired
    c.start("s0")
    c.wait_converged(c.ids, 3)
    assert c.log_bytes("s2") == c.log_bytes("s0")
    c.wait_for(lambda: not c.replication("s2")["needs_repair"], "s2 is repaired")


def test_a_follower_behind_the_leaders_log_start_restarts_its_log_there(
        cluster, monkeypatch):
    # Given 4 KiB segments keeping at most 8 KiB, retention checked every 50 ms
    monkeypatch.setattr(limits, "RETENTION_CHECK_INTERVAL_S", 0.05)
    c = cluster(min_insync=1, log_config=LogConfig(segment_bytes_max=4096, retention_bytes=8192))
    router = c.router("s0")
    assert produce(router, [b"first"]).error is None
    c.wait_converged(c.ids, 1)
    # When both followers are stopped while the leader writes and deletes old segments
    c.stop("s1")
    c.stop("s2")
    for i in range(40):
        assert produce(router, [b"%04d" % i + b"x" * 1000], acks=1).error is None
    c.wait_for(lambda: c.log_start("s0") > 1, "retention deletes the leader's first segments")
    # Then, back, they restart their logs at the leader's start and catch up
    c.start("s1")
    c.start("s2")
    c.wait_converged(c.ids, 41)
    assert c.log_start("s1") == c.log_start("s2") >= c.log_start("s0") > 1


def test_a_restarted_leader_serves_only_what_its_in_sync_replicas_hold(cluster):
    # Given offset 0 on every replica, and offset 1 on the leader s0 alone
    c = cluster(lag_time_max_ms=60_000)
    router = c.router("s0")
    assert produce(router, [b"a"]).error is None
    c.wait_converged(c.ids, 1)
    c.stop("s1")
    c.stop("s2")
    assert produce(router, [b"only-on-s0"], acks=1).error is None
    # When s0 restarts (from its manifest's record) and is elected again in epoch 2
    c.stop("s0")
    c.start("s0", restarted=True)
    elected = c.controller.elect("s0", c.ids)
    c.push_leadership(elected, ("s0",))
    # Then it does not make offset 1 readable: its followers do not hold it
    state = c.replication("s0")
    assert (state["role"], state["log_end_offset"]) == ("leader", 2)
    assert state["high_watermark"] <= 1
    # And once they are back and hold it, it is
    c.start("s1", elected)
    c.start("s2", elected)
    c.wait_converged(c.ids, 2)


# --- Divergence and fencing -----------------------------------------------------------

def test_a_follower_with_a_divergent_tail_truncates_to_the_leaders_epoch_end_and_converges(
        cluster):
    # Given all three replicas hold offsets 0..1 (leader s0, epoch 1)
    c = cluster(min_insync=1)
    router = c.router("s0")
    assert produce(router, [b"a", b"b"]).error is None
    c.wait_converged(c.ids, 2)
    # And s0 alone then wrote offsets 2..4 (s1 and s2 were stopped), acknowledged to no one
    c.stop("s1")
    c.stop("s2")
    assert produce(router, [b"x", b"y", b"z"], acks=1).error is None
    # When s1 is elected in epoch 2 with s2, writes one record, and s0 learns it follows
    elected = c.controller.elect("s1", ("s1", "s2"))
    c.start("s1", elected)
    c.start("s2", elected)
    c.push_leadership(elected, ("s0",))
    assert produce(c.router("s1"), [b"new"]).error is None
    # Then s0 truncates its tail (offsets 2..4 of epoch 1) and converges on s1's log
    c.wait_converged(c.ids, 3)
    assert c.log_bytes("s0") == c.log_bytes("s1") == c.log_bytes("s2")
    assert c.replication("s0")["role"] == "follower"


def test_a_deposed_leader_is_fenced_and_never_acknowledges_acks_all(cluster, monkeypatch):
    # Given leader s0 in epoch 1, and an acks="all" wait of 2 s
    monkeypatch.setattr(limits, "ACKS_ALL_WAIT_MS_MAX", 2_000)
    c = cluster(lag_time_max_ms=60_000)
    old_router = c.router("s0")
    assert produce(old_router, [b"a"]).error is None
    c.wait_converged(c.ids, 1)
    # When s1 is elected in epoch 2 and s2 follows it, while s0 never hears of it
    elected = c.controller.elect("s1", ("s1", "s2"))
    c.push_leadership(elected, ("s1", "s2"))
    # Then an acks="all" produce to the deposed s0 is never acknowledged
    deposed = produce(old_router, [b"lost"])
    assert isinstance(deposed.error, (RequestTimedOutError, NotEnoughReplicasError))
    # And the new leader takes acks="all" produces with s2
    assert produce(c.router("s1"), [b"b"]).error is None
    # And a fetch of the old epoch is fenced by the new leader; one of the new epoch is
    # refused by the deposed one
    fenced = replica_fetch(c.router("s1"), "s2", leader_epoch=1)
    assert isinstance(fenced.error, FencedLeaderEpochError)
    refused = replica_fetch(old_router, "s2", leader_epoch=2)
    assert isinstance(refused.error, NotLeaderError)


def replica_fetch(sock, replica_id: str, leader_epoch: int, fetch_offset: int = 0,
                  last_fetched_epoch: int = -1, timeout_ms: int = 5000) -> protocol.ReplyView:
    sock.send_multipart([CLIENT, protocol.encode_replica_fetch(
        next(_request_ids), "t", 0, replica_id, leader_epoch, fetch_offset, last_fetched_epoch,
        1 << 20, 0, 1)])
    return reply_of(sock, timeout_ms)


def test_a_replica_fetch_is_answered_with_the_leaders_entries_and_their_epochs(cluster):
    # Given leader s0 in epoch 1 holding offsets 0..2
    c = cluster()
    router = c.router("s0")
    assert produce(router, [b"a", b"b", b"c"]).error is None
    # When a follower fetches from offset 0 in epoch 1
    sock = c.router("s0")
    sock.send_multipart([CLIENT, protocol.encode_replica_fetch(
        99, "t", 0, "s2", 1, 0, -1, 1 << 20, 0, 1)])
    assert sock.poll(5000)
    frames = sock.recv_multipart()
    reply = protocol.decode_reply(frames[1])
    # Then it gets the log's bytes as stored, the epoch that wrote them, and the ends
    result = reply.replica_fetch
    assert reply.error is None and frames[2] == c.log_bytes("s0")
    assert result.epoch_starts == (protocol.EpochStart(1, 0),)
    assert (result.log_end_offset, result.diverges) == (3, False)
    # And a fetch claiming epoch 1 past the leader's end is told where epoch 1 ends
    diverging = replica_fetch(sock, "s2", 1, fetch_offset=7, last_fetched_epoch=1)
    assert (diverging.replica_fetch.diverging_epoch,
            diverging.replica_fetch.diverging_end_offset) == (1, 3)


# --- The authenticated hop -------------------------------------------------------------

def test_with_the_cluster_keys_followers_replicate_and_a_keyless_dealer_gets_nothing(cluster):
    # Given three shards with the cluster's keys (CurveZMQ on tcp)
    keys = ClusterKeys.generate()
    c = cluster(cluster_keys=keys)
    # When a member produces acks="all"
    assert produce(c.router("s0", keys), [b"secret"]).error is None
    # Then the followers replicate it over the authenticated hop
    c.wait_converged(c.ids, 1)
    # And a DEALER without the keys sending a replicaFetch gets no answer at all
    keyless = c.router("s0")
    keyless.send_multipart([CLIENT, protocol.encode_replica_fetch(
        5, "t", 0, "s1", 1, 0, -1, 1 << 20, 0, 1)])
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert not keyless.poll(100)


# --- A leader's failed fsync ------------------------------------------------------------

def test_a_leader_whose_fsync_fails_refuses_produces_asks_to_be_moved_and_catches_up_as_follower(
        cluster, monkeypatch, caplog):
    # Given a leader s0 and two followers holding offset 0
    c = cluster()
    router = c.router("s0")
    assert produce(router, [b"a"]).error is None
    c.wait_converged(c.ids, 1)
    # When s0's disk loses the writeback of its next fsync (the kernel says so once)
    fsync = LostWriteback(monkeypatch, within=f"/{'s0'}/")
    fsync.armed = True
    failed = produce(router, [b"b"])
    # Then that produce fails, and so does the next: no later fsync of its log passes
    # what the disk lost (before: the next one did, and acknowledged it), and s0 does
    # not cut inside its leader epoch, but asks the controller to move it
    assert "fsync of t-0 failed" in str(failed.error)
    assert "not cut yet" in str(produce(router, [b"c"]).error)
    c.wait_for(lambda: c.controller.disk_refusals, "s0 told the controller")
    assert c.controller.disk_refusals[0][0] == "s0"
    # (in one line, not one per refused produce: producers retry every few ms)
    assert len([r for r in caplog.records if "asks the controller to move it" in
                r.getMessage()]) == 1
    # And once s1 leads, s0 follows: its next fsync fails, so it cuts what it had not
    # written and fetches it again, and ends with s1's log, byte for byte
    elected = c.controller.elect("s1", ("s1", "s2"))
    c.push_leadership(elected, c.ids)
    assert produce(c.router("s1"), [b"d"]).error is None
    end = c.replication("s1")["log_end_offset"]
    c.wait_for(lambda: c.replication("s0")["log_end_offset"] == end
               and c.log_bytes("s0") == c.log_bytes("s1"), "s0 holds s1's log")
