"""The follower side of replication: fetch each followed partition from its leader.

Runs in a shard actor, on its loop thread only (shard_server.py), every
method; no locks, no thread of its own. For each leader shard it keeps one
DEALER to the leader's ROUTER socket, made as the router's shard connections
are (router/shard_connections.py): a CurveZMQ client with the cluster's keys
for tcp://, plain in the 0700 sockets directory for ipc://; the loop's poller
watches it. Messages: [client id][Request replicaFetch] out, [client id]
[Reply replicaFetch][entries] back (the leader sees this shard as a router).

Per followed partition, one fetch at a time (Kafka's ISR protocol):

    fetch(offset = durable log end, last fetched epoch) ──► leader
      entries ──► Partition.append_replicated ──► group commit fsyncs
        ──► on_durable: high watermark = min(leader's, own end) ──► fetch again
      divergence ──► Partition.truncate_to(FollowerReplication.truncation_for(...))
        ──► fetch again
      nothing new (the fetch waited at the leader's end) ──► fetch again
      the leader's log starts after this one ends (retention) ──►
        Partition.restart_at(its start) ──► fetch again
      error, no answer within REPLICA_FETCH_WAIT_MS + REPLICA_FETCH_TIMEOUT_MS,
      leader unknown ──► fetch again after a backoff (REPLICA_FETCH_BACKOFF_MS_MIN,
        doubling up to _MAX); a fetch that went unanswered also replaces the
        connection (the leader restarted, or the path to it broke)

So each partition has at most one request queued or in flight, and a silent
leader costs a few requests a second.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from plinth import limits, protocol
from plinth.cluster_keys import ClusterKeys, is_ipc
from plinth.errors import BrokerError, MalformedReplyError
from plinth.shards.leader_epochs import EpochEntry
from plinth.shards.partition import Partition
from plinth.shards.replication import FollowerReplication
from plinth.shards.shard_calls import Leadership

log = logging.getLogger(__name__)

# A followed partition's state: its fetch is to be sent (at retry_at_s), in flight,
# or waiting for group commit to make the entries it brought durable.
IDLE, IN_FLIGHT, AWAITING_DURABLE = "idle", "in flight", "awaiting durable"


@dataclass(eq=False)
class Followed:
    """One partition this shard follows."""

    part: Partition
    leadership: Leadership
    replication: FollowerReplication
    state: str = IDLE
    request_id: int = 0
    deadline_s: float = 0.0          # in flight: given up at this time
    retry_at_s: float = 0.0          # idle: send no earlier than this
    backoff_ms: int = 0              # 0 after a success
    leader_high_watermark: int = 0
    leader_end_offset: int = 0
    fetches: int = 0                 # answered, for stats
    failures: int = 0                # refused, lost or unsendable, for stats

    @property
    def leader(self) -> str:
        return self.leadership.leader


class ReplicaFetcher:
    """The partitions this shard follows and its DEALERs to their leaders. Loop thread only.

    ``written(part)``: entries were appended (group commit fsyncs them).
    ``advanced(part)``: the partition's high watermark moved (consumers wait on it).
    """

    def __init__(self, shard_id: str, context: zmq.Context, poller: zmq.Poller,
                 cluster_keys: ClusterKeys | None, *, written: Callable[[Partition], None],
                 advanced: Callable[[Partition], None], clock_s: Callable[[], float]):
        self.shard_id = shard_id
        self._client_id = shard_id.encode()
        self._context = context
        self._poller = poller
        self._cluster_keys = cluster_keys
        self._written = written
        self._advanced = advanced
        self._clock_s = clock_s
        self.controller_epoch = 0
        self.followed: dict[tuple[str, int], Followed] = {}
        self._addresses: dict[str, str] = {}
        self._dealers: dict[str, tuple[str, zmq.Socket]] = {}     # leader -> (address, DEALER)
        self._leader_of_dealer: dict[zmq.Socket, str] = {}
        self._in_flight: dict[int, Followed] = {}                   # by request id
        self._request_ids = itertools.count(1)
        self._next_timer_s: float | None = None
        self._closed = False            # close() ran: no DEALER opens any more

    # --- Peers and followed partitions ------------------------------------------

    def set_peers(self, addresses: dict[str, str], controller_epoch: int) -> None:
        """Every shard's address: a leader at a new address gets a new DEALER (what
        the old one had in flight is given up and fetched again)."""
        self._addresses = dict(addresses)
        self.controller_epoch = max(self.controller_epoch, controller_epoch)
        for leader, (address, _) in list(self._dealers.items()):
            if self._addresses.get(leader) != address:
                self._disconnect(leader)
        self._schedule(self._clock_s())

    def follow(self, part: Partition, leadership: Leadership) -> None:
        """Follow ``part``'s leader as ``leadership`` says; a new leader or epoch starts a
        new fetch (an answer to the old one is dropped)."""
        current = self.followed.get(part.key)
        if current is not None and (current.leader, current.leadership.leader_epoch) == \
                (leadership.leader, leadership.leader_epoch):
            current.leadership = leadership
            return
        if current is not None:
            self._drop_in_flight(current)
        replication = FollowerReplication(
            part.name, self.shard_id, leadership, part.log.end_offset, part.leader_epochs,
            high_watermark=part.high_watermark, needs_repair=part.needs_repair)
        self.followed[part.key] = Followed(part, leadership, replication)
        self._schedule(self._clock_s())

    def unfollow(self, key: tuple[str, int]) -> Followed | None:
        followed = self.followed.pop(key, None)
        if followed is not None:
            self._drop_in_flight(followed)
        return followed

    def close(self) -> None:
        """Close every DEALER, for good: the loop may run a round or two more before it
        stops, and a DEALER opened then would keep the context's term() waiting."""
        self._closed = True
        for leader in list(self._dealers):
            self._disconnect(leader)

    # --- Replies ---------------------------------------------------------------------

    def on_readable(self, sock: zmq.Socket) -> bool:
        """Read the answers on a leader's DEALER; False if ``sock`` is not one of them."""
        if sock not in self._leader_of_dealer:
            return False
        for _ in range(limits.GROUP_COMMIT_REQUESTS_MAX):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._on_reply(frames)
        return True

    def _on_reply(self, frames: list) -> None:
        if len(frames) < 2:
            log.warning("%s: dropped a replica fetch answer of %d frames", self.shard_id,
                        len(frames))
            return
        try:
            reply = protocol.decode_reply(frames[1].buffer)
        except MalformedReplyError as exc:
            log.warning("%s: dropped a replica fetch answer: %s", self.shard_id, exc)
            return
        followed = self._in_flight.pop(reply.request_id, None)
        if followed is None or followed.request_id != reply.request_id:
            return   # the answer to a fetch given up or of an older leadership
        now_s = self._clock_s()
        if reply.error is not None or reply.replica_fetch is None:
            self._failed(followed, now_s, reply.error or MalformedReplyError(
                f"a {reply.kind} answer to a replicaFetch"))
            return
        payload = frames[2].buffer if len(frames) > 2 else b""
        try:
            self._apply(followed, reply.replica_fetch, payload, now_s)
        except BrokerError as exc:   # a bad entry (CRC), a disk error: fetch again later
            self._failed(followed, now_s, exc)
        except AssertionError:       # an invariant broke: stop the loop rather than go on
            raise
        except Exception as exc:     # a bug here must not stop the loop of every partition
            log.exception("%s: applying a fetch of %s failed", self.shard_id, followed.part.name)
            self._failed(followed, now_s, exc)

    def _apply(self, followed: Followed, result: protocol.ReplicaFetchResult, entries,
               now_s: float) -> None:
        part = followed.part
        followed.leader_high_watermark = result.high_watermark
        followed.leader_end_offset = result.log_end_offset
        followed.backoff_ms = 0
        followed.fetches += 1
        if result.diverges:
            end_offset = followed.replication.truncation_for(
                result.diverging_epoch, result.diverging_end_offset, part.leader_epochs,
                part.log.end_offset)
            log.info("%s: %s diverges from leader %s at epoch %d: truncating from %d to %d",
                     self.shard_id, part.name, followed.leader, result.diverging_epoch,
                     part.log.end_offset, end_offset)
            part.truncate_to(end_offset)
            self._idle(followed, now_s)
        elif part.log.end_offset < result.log_start_offset:
            log.info("%s: %s ends at %d, before its leader's log start %d: restarting it there",
                     self.shard_id, part.name, part.log.end_offset, result.log_start_offset)
            part.restart_at(result.log_start_offset)
            self._idle(followed, now_s)
        elif len(entries):
            starts = [EpochEntry(epoch, start) for epoch, start in result.epoch_starts]
            part.append_replicated(entries, starts)
            followed.state = AWAITING_DURABLE
            self._written(part)
        else:
            self._follow_high_watermark(followed)
            self._idle(followed, now_s)

    def on_durable(self, part: Partition) -> None:
        """Group commit made the fetched entries durable: move the high watermark and
        fetch the next ones."""
        followed = self.followed.get(part.key)
        if followed is None or followed.state != AWAITING_DURABLE:
            return
        self._follow_high_watermark(followed)
        self._idle(followed, self._clock_s())

    def _follow_high_watermark(self, followed: Followed) -> None:
        part = followed.part
        high_watermark = followed.replication.on_entries_durable(
            part.log.end_offset, followed.leader_high_watermark)
        if part.needs_repair:   # a recovery cut entries here: caught up again?
            part.note_caught_up(followed.leader_high_watermark)
        if high_watermark > part.high_watermark:
            part.advance(high_watermark)
            self._advanced(part)

    def _failed(self, followed: Followed, now_s: float, error: BaseException) -> None:
        backoff_ms = min(max(followed.backoff_ms * 2, limits.REPLICA_FETCH_BACKOFF_MS_MIN),
                         limits.REPLICA_FETCH_BACKOFF_MS_MAX)
        followed.backoff_ms = backoff_ms
        followed.failures += 1
        log.info("%s: fetching %s from %s failed (%s); again in %d ms", self.shard_id,
                 followed.part.name, followed.leader or "no leader", error, backoff_ms)
        self._idle(followed, now_s + backoff_ms / 1000)

    def _idle(self, followed: Followed, retry_at_s: float) -> None:
        followed.state = IDLE
        followed.retry_at_s = retry_at_s
        if retry_at_s <= self._clock_s():
            self._send(followed, retry_at_s)
        else:
            self._schedule(retry_at_s)

    # --- Sending and timers -------------------------------------------------------------

    def _send(self, followed: Followed, now_s: float) -> None:
        dealer = self._dealer(followed.leader)
        if dealer is None:
            self._failed(followed, now_s, LookupError(f"no address for {followed.leader!r}"))
            return
        part = followed.part
        fetch_offset, last_fetched_epoch = followed.replication.next_fetch(
            part.log.end_offset, part.leader_epochs)
        request_id = next(self._request_ids)
        header = protocol.encode_replica_fetch(
            request_id, part.topic, part.partition, self.shard_id,
            followed.leadership.leader_epoch, fetch_offset, last_fetched_epoch,
            limits.REPLICA_FETCH_BYTES_MAX, limits.REPLICA_FETCH_WAIT_MS, self.controller_epoch)
        try:
            dealer.send_multipart([self._client_id, header], zmq.NOBLOCK)
        except zmq.Again:
            self._failed(followed, now_s, BlockingIOError("the leader's socket is full"))
            return
        followed.state, followed.request_id = IN_FLIGHT, request_id
        followed.deadline_s = now_s + (limits.REPLICA_FETCH_WAIT_MS
                                       + limits.REPLICA_FETCH_TIMEOUT_MS) / 1000
        self._in_flight[request_id] = followed
        self._schedule(followed.deadline_s)

    def next_timer_s(self) -> float | None:
        """When the loop must call ``run_timers`` next; None if nothing waits."""
        return self._next_timer_s

    def run_timers(self, now_s: float) -> None:
        """Send the fetches whose backoff ended; give up those unanswered too long."""
        if self._next_timer_s is None or now_s < self._next_timer_s:
            return
        self._next_timer_s = None
        for followed in list(self.followed.values()):
            if followed.state == IDLE and followed.retry_at_s <= now_s:
                self._send(followed, now_s)
            elif followed.state == IN_FLIGHT and followed.deadline_s <= now_s:
                self._drop_in_flight(followed)
                self._disconnect(followed.leader)   # its answers would come too late
                self._failed(followed, now_s, TimeoutError("no answer"))
            elif followed.state == IDLE:
                self._schedule(followed.retry_at_s)
            elif followed.state == IN_FLIGHT:
                self._schedule(followed.deadline_s)

    def _schedule(self, at_s: float) -> None:
        if self._next_timer_s is None or at_s < self._next_timer_s:
            self._next_timer_s = at_s

    def _drop_in_flight(self, followed: Followed) -> None:
        if followed.state == IN_FLIGHT:
            self._in_flight.pop(followed.request_id, None)
        followed.state = IDLE
        followed.request_id = 0

    # --- Connections -----------------------------------------------------------------

    def _dealer(self, leader: str) -> zmq.Socket | None:
        address = self._addresses.get(leader)
        if not leader or address is None or self._closed:
            return None
        current = self._dealers.get(leader)
        if current is not None:
            return current[1]
        dealer = self._context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.SNDHWM, limits.SOCKET_MESSAGES_HWM)
        dealer.setsockopt(zmq.RCVHWM, limits.SOCKET_MESSAGES_HWM)
        dealer.setsockopt(zmq.MAXMSGSIZE, limits.FRAME_BYTES_MAX)
        dealer.setsockopt(zmq.LINGER, 0)
        if self._cluster_keys is not None and not is_ipc(address):   # see cluster_keys.py
            self._cluster_keys.apply_client(dealer)
        dealer.connect(address)
        self._dealers[leader] = (address, dealer)
        self._leader_of_dealer[dealer] = leader
        self._poller.register(dealer, zmq.POLLIN)
        return dealer

    def _disconnect(self, leader: str) -> None:
        current = self._dealers.pop(leader, None)
        if current is None:
            return
        dealer = current[1]
        del self._leader_of_dealer[dealer]
        self._poller.unregister(dealer)
        dealer.close(linger=0)
        for followed in self.followed.values():
            if followed.leader == leader and followed.state == IN_FLIGHT:
                self._drop_in_flight(followed)
                self._failed(followed, self._clock_s(), ConnectionError("connection replaced"))

    # --- Stats -------------------------------------------------------------------------

    def stats(self, followed: Followed) -> dict:
        """A followed partition's replication state, for stats_snapshot."""
        return {"leader_epoch": followed.leadership.leader_epoch, "fetch_state": followed.state,
                "fetches": followed.fetches, "fetch_failures": followed.failures,
                "leader_end_offset": followed.leader_end_offset,
                "follower_lag": max(0, followed.leader_end_offset - followed.part.log.end_offset)}
