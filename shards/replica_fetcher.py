"""The follower side of replication: fetch the followed partitions from their leaders.

Runs in a shard actor, on its loop thread only (shard_server.py), every
method; no locks, no thread of its own. For each leader shard it keeps one
DEALER to the leader's ROUTER socket, made as the router's shard connections
are (router/shard_connections.py): a CurveZMQ client with the cluster's keys
for tcp://, plain in the 0700 sockets directory for ipc://; the loop's poller
watches it. Messages: [client id][Request replicaFetchAll] out, [client id]
[Reply replicaFetchAll][entries] back (the leader sees this shard as a router).

One fetch per leader carries every partition this shard follows there (a
``LeaderLink``; Kafka's one fetch per broker pair), each with its own fetch
offset and last fetched epoch; the leader answers each partition as it would a
fetch of its own, and holds the fetch until any of them has entries (or its
wait ends). Per partition (Kafka's ISR protocol):

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

Fetches go at the end of a loop round (``run_timers``, after group commit):
one per leader with every partition that became ready in the round (answered
with nothing new, or its entries now durable) and is not backing off, at most
REPLICA_FETCH_PARTITIONS_MAX (those the leader said have entries waiting
first, the rest in turns). Each partition is in at most one fetch; a leader
has at most REPLICA_FETCHES_IN_FLIGHT_MAX in flight, so that a partition whose
entries became durable need not wait for a fetch of the others parked at the
leader (acks="all" waits for this round trip). So an idle leader costs two
fetches a second however many partitions it leads here, and a silent one a few.

A full disk: a partition whose fetched entries the disk refused says so in its
next fetches (``appendFailed``) until an append succeeds, and every partition
says so while the shard's file system has less than REPLICA_DISK_ROOM_BYTES_MIN
free (``has_room``, the shard's DiskReserve): its leader keeps it out of the
in-sync set (shards/replication.py, rules 8 and 9), so that acks="all" produces
are not taken for a replica that cannot hold them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from plinth import limits, protocol
from plinth.cluster_keys import ClusterKeys, is_ipc
from plinth.errors import BrokerError, MalformedReplyError, StorageError
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
    request_id: int = 0              # in flight: the fetch carrying it
    retry_at_s: float = 0.0          # idle: send no earlier than this
    backoff_ms: int = 0              # 0 after a success
    leader_high_watermark: int = 0
    leader_end_offset: int = 0
    # The leader's log start floor (deleteRecords; 0: none), last answered.
    leader_log_start_floor: int = 0
    fetches: int = 0                 # answered, for stats
    failures: int = 0                # refused, lost or unsendable, for stats
    # The disk refused the last append of fetched entries (a full disk): the next
    # fetches say so, and the leader takes this replica out of the in-sync set at
    # once rather than after the lag time (during which it took acks="all" produces
    # that no high watermark could pass).
    append_failed: bool = False

    @property
    def leader(self) -> str:
        return self.leadership.leader


@dataclass(eq=False)
class LeaderLink:
    """The partitions this shard follows on one leader, and the fetches of them in
    flight: request id -> (the partitions it carries, in order; when it is given up)."""

    leader: str
    partitions: dict[tuple[str, int], Followed] = field(default_factory=dict)
    in_flight: dict[int, tuple[list[Followed], float]] = field(default_factory=dict)
    turn: int = 0                    # where the next fetch of too many partitions starts
    fetches: int = 0                 # sent, for stats


class ReplicaFetcher:
    """The partitions this shard follows and its DEALERs to their leaders. Loop thread only.

    ``written(part)``: entries were appended (group commit fsyncs them).
    ``advanced(part)``: the partition's high watermark moved (consumers wait on it).
    """

    def __init__(self, shard_id: str, context: zmq.Context, poller: zmq.Poller,
                 cluster_keys: ClusterKeys | None, *, written: Callable[[Partition], None],
                 advanced: Callable[[Partition], None], clock_s: Callable[[], float],
                 has_room: Callable[[int], bool]):
        self.shard_id = shard_id
        self._client_id = shard_id.encode()
        self._context = context
        self._poller = poller
        self._cluster_keys = cluster_keys
        self._written = written
        self._advanced = advanced
        self._clock_s = clock_s
        self._has_room = has_room
        self._disk_short = False        # the last fetch said the disk has no room
        self.controller_epoch = 0
        self.followed: dict[tuple[str, int], Followed] = {}
        # One per leader shard ever followed here: bounded by the cluster's shards.
        self.links: dict[str, LeaderLink] = {}
        self._addresses: dict[str, str] = {}
        self._dealers: dict[str, tuple[str, zmq.Socket]] = {}     # leader -> (address, DEALER)
        self._leader_of_dealer: dict[zmq.Socket, str] = {}
        self._in_flight: dict[int, LeaderLink] = {}                 # by request id
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
            self.unfollow(part.key)
        replication = FollowerReplication(
            part.name, self.shard_id, leadership, part.log.end_offset, part.leader_epochs,
            high_watermark=part.high_watermark, needs_repair=part.needs_repair)
        followed = self.followed[part.key] = Followed(part, leadership, replication)
        link = self.links.get(leadership.leader)
        if link is None:
            link = self.links[leadership.leader] = LeaderLink(leadership.leader)
        link.partitions[part.key] = followed
        self._schedule(self._clock_s())

    def unfollow(self, key: tuple[str, int]) -> Followed | None:
        followed = self.followed.pop(key, None)
        if followed is not None:
            self._drop_in_flight(followed)
            link = self.links.get(followed.leader)
            if link is not None:
                link.partitions.pop(key, None)
            self._schedule(self._clock_s())   # the link may have waited for it to be durable
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
        link = self._in_flight.pop(reply.request_id, None)
        fetch = None if link is None else link.in_flight.pop(reply.request_id, None)
        if fetch is None:
            return   # the answer to a fetch given up
        sent = fetch[0]
        now_s = self._clock_s()
        payload = frames[2].buffer if len(frames) > 2 else memoryview(b"")
        error = reply.error or _malformed(reply, len(sent), len(payload))
        if error is not None:
            for followed in sent:
                if self._awaits(followed, reply.request_id):
                    self._failed(followed, now_s, error)
        else:
            self._apply_all(reply, sent, payload, now_s)
        self._schedule(now_s)   # the next fetch goes at the end of this loop round

    def _awaits(self, followed: Followed, request_id: int) -> bool:
        """``followed`` is still followed here and waits for fetch ``request_id``."""
        return followed.state == IN_FLIGHT and followed.request_id == request_id and \
            self.followed.get(followed.part.key) is followed

    def _apply_all(self, reply: protocol.ReplyView, sent: list[Followed], payload,
                   now_s: float) -> None:
        position = 0
        for followed, answer in zip(sent, reply.replica_fetch_all):
            entries = payload[position:position + answer.entries_bytes]
            position += answer.entries_bytes
            if not self._awaits(followed, reply.request_id):
                continue   # unfollowed, or following a new leader or epoch, meanwhile
            if answer.error is not None:
                self._failed(followed, now_s, answer.error)
                continue
            try:
                self._apply(followed, answer.result, entries, now_s)
            except BrokerError as exc:   # a bad entry (CRC), a disk error: fetch again later
                self._failed(followed, now_s, exc)
            except AssertionError:       # an invariant broke: stop the loop rather than go on
                raise
            except Exception as exc:     # a bug here must not stop the loop of every partition
                log.exception("%s: applying a fetch of %s failed", self.shard_id,
                              followed.part.name)
                self._failed(followed, now_s, exc)

    def _apply(self, followed: Followed, result: protocol.ReplicaFetchResult, entries,
               now_s: float) -> None:
        part = followed.part
        followed.leader_high_watermark = result.high_watermark
        followed.leader_log_start_floor = result.log_start_floor
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
            try:
                part.append_replicated(entries, starts)
            except StorageError:
                followed.append_failed = True
                raise
            followed.append_failed = False
            followed.state = AWAITING_DURABLE
            self._written(part)
        else:
            self._follow_high_watermark(followed)
            self._idle(followed, now_s)

    def on_durable(self, part: Partition) -> None:
        """Group commit made the fetched entries durable: move the high watermark and
        fetch the next ones (once the leader's other partitions are durable too)."""
        followed = self.followed.get(part.key)
        if followed is None or followed.state != AWAITING_DURABLE:
            return
        self._follow_high_watermark(followed)
        self._idle(followed, self._clock_s())   # fetched again at the end of this loop round

    def _follow_high_watermark(self, followed: Followed) -> None:
        part = followed.part
        high_watermark = followed.replication.on_entries_durable(
            part.log.end_offset, followed.leader_high_watermark)
        if part.needs_repair:   # a recovery cut entries here: caught up again?
            part.note_caught_up(followed.leader_high_watermark)
        if high_watermark > part.high_watermark:
            part.advance(high_watermark)
            self._advanced(part)
        self._adopt_floor(followed)

    def _adopt_floor(self, followed: Followed) -> None:
        """Take the leader's log start floor (deleteRecords), up to this replica's high
        watermark, so that a failover never serves here what the leader deleted. A
        disk that refuses it is logged; the next answer tries again."""
        part = followed.part
        if followed.leader_log_start_floor <= part.floor:
            return
        try:
            if part.adopt_leader_floor(followed.leader_log_start_floor):
                log.info("%s: %s follows leader %s's log start offset to %d", self.shard_id,
                         part.name, followed.leader, part.log_start_offset)
        except StorageError as exc:
            log.error("%s: %s", self.shard_id, exc)

    def _failed(self, followed: Followed, now_s: float, error: BaseException) -> None:
        backoff_ms = min(max(followed.backoff_ms * 2, limits.REPLICA_FETCH_BACKOFF_MS_MIN),
                         limits.REPLICA_FETCH_BACKOFF_MS_MAX)
        followed.backoff_ms = backoff_ms
        followed.failures += 1
        log.info("%s: fetching %s from %s failed (%s); again in %d ms", self.shard_id,
                 followed.part.name, followed.leader or "no leader", error, backoff_ms)
        self._idle(followed, now_s + backoff_ms / 1000)

    def _idle(self, followed: Followed, retry_at_s: float) -> None:
        """``followed`` goes in its leader's next fetch sent at or after ``retry_at_s``."""
        followed.state = IDLE
        followed.request_id = 0
        followed.retry_at_s = retry_at_s
        self._schedule(retry_at_s)

    # --- Sending and timers -------------------------------------------------------------

    def _send(self, link: LeaderLink, now_s: float) -> None:
        """Send ``link``'s leader one fetch of its partitions that may go now, unless
        REPLICA_FETCHES_IN_FLIGHT_MAX are in flight (the next one carries them)."""
        if len(link.in_flight) >= limits.REPLICA_FETCHES_IN_FLIGHT_MAX or self._closed:
            return
        ready = [followed for followed in link.partitions.values()
                 if followed.state == IDLE and followed.retry_at_s <= now_s]
        if not ready:
            return       # each waiting one scheduled its retry
        if len(ready) > limits.REPLICA_FETCH_PARTITIONS_MAX:
            ready = self._turn_of(link, ready)
        dealer = self._dealer(link.leader)
        if dealer is None:
            for followed in ready:
                self._failed(followed, now_s, LookupError(f"no address for {link.leader!r}"))
            return
        request_id = next(self._request_ids)
        disk_short = self._disk_is_short()
        header = protocol.encode_replica_fetch_all(
            request_id, self.shard_id, self.controller_epoch, limits.REPLICA_FETCH_WAIT_MS,
            limits.REPLICA_FETCH_ANSWER_BYTES_MAX, [self._wanted(f, disk_short) for f in ready])
        try:
            dealer.send_multipart([self._client_id, header], zmq.NOBLOCK)
        except zmq.Again:
            for followed in ready:
                self._failed(followed, now_s, BlockingIOError("the leader's socket is full"))
            return
        for followed in ready:
            followed.state, followed.request_id = IN_FLIGHT, request_id
        deadline_s = now_s + (limits.REPLICA_FETCH_WAIT_MS + limits.REPLICA_FETCH_TIMEOUT_MS) / 1000
        link.in_flight[request_id] = (ready, deadline_s)
        link.fetches += 1
        self._in_flight[request_id] = link
        self._schedule(deadline_s)

    def _wanted(self, followed: Followed, disk_short: bool) -> protocol.ReplicaFetchPartition:
        part = followed.part
        fetch_offset, last_fetched_epoch = followed.replication.next_fetch(
            part.log.end_offset, part.leader_epochs)
        return protocol.ReplicaFetchPartition(
            part.topic, part.partition, followed.leadership.leader_epoch, fetch_offset,
            last_fetched_epoch, limits.REPLICA_FETCH_BYTES_MAX, part.log_start_offset,
            followed.append_failed or disk_short)

    def _disk_is_short(self) -> bool:
        """Whether the shard's file system has less than REPLICA_DISK_ROOM_BYTES_MIN
        free (see the module); said in the log when that changes."""
        short = not self._has_room(limits.REPLICA_DISK_ROOM_BYTES_MIN)
        if short != self._disk_short:
            self._disk_short = short
            if short:
                log.warning("%s: its file system has less than %d bytes free (one fetch): "
                            "its fetches ask its leaders to keep it out of the in-sync "
                            "replicas until it has room", self.shard_id,
                            limits.REPLICA_DISK_ROOM_BYTES_MIN)
            else:
                log.info("%s: its file system has room again (%d bytes free or more): "
                         "it may rejoin the in-sync replicas", self.shard_id,
                         limits.REPLICA_DISK_ROOM_BYTES_MIN)
        return short

    @staticmethod
    def _turn_of(link: LeaderLink, ready: list[Followed]) -> list[Followed]:
        """REPLICA_FETCH_PARTITIONS_MAX of ``ready``: those the leader said have entries
        waiting first, the others from where the last such fetch stopped."""
        count = limits.REPLICA_FETCH_PARTITIONS_MAX
        link.turn %= len(ready)
        turned = ready[link.turn:] + ready[:link.turn]
        link.turn += count
        turned.sort(key=lambda f: f.leader_end_offset <= f.part.log.end_offset)   # stable
        return turned[:count]

    def next_timer_s(self) -> float | None:
        """When the loop must call ``run_timers`` next; None if nothing waits."""
        return self._next_timer_s

    def run_timers(self, now_s: float) -> None:
        """Send the fetches whose backoff ended; give up those unanswered too long."""
        if self._next_timer_s is None or now_s < self._next_timer_s:
            return
        self._next_timer_s = None
        for link in list(self.links.values()):
            deadlines = [deadline_s for _, deadline_s in link.in_flight.values()]
            if deadlines and min(deadlines) <= now_s:
                self._disconnect(link.leader)   # its answers would come too late
            elif deadlines:
                self._schedule(min(deadlines))
            self._send(link, now_s)
            for followed in link.partitions.values():
                if followed.state == IDLE and followed.retry_at_s > now_s:
                    self._schedule(followed.retry_at_s)

    def _schedule(self, at_s: float) -> None:
        if self._next_timer_s is None or at_s < self._next_timer_s:
            self._next_timer_s = at_s

    def _drop_in_flight(self, followed: Followed) -> None:
        """``followed`` leaves the fetch carrying it (its answer to it is dropped)."""
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
        link = self.links.get(leader)
        if link is None:
            return
        now_s = self._clock_s()
        for request_id, (sent, _) in list(link.in_flight.items()):
            self._in_flight.pop(request_id, None)
            for followed in sent:
                if self._awaits(followed, request_id):
                    self._failed(followed, now_s, ConnectionError(
                        "no answer in time, or the leader moved: connection replaced"))
        link.in_flight.clear()

    # --- Stats -------------------------------------------------------------------------

    def stats(self, followed: Followed, now_s: float) -> dict:
        """A followed partition's replication state, for stats_snapshot: with its fetch's
        state, its link to the leader (fetches in flight, the address connected to and
        the address the controller gave), so that a follower that stops catching up
        explains itself."""
        link = self.links.get(followed.leader)
        in_flight = link.in_flight if link is not None else {}
        dealer = self._dealers.get(followed.leader)
        return {"leader_epoch": followed.leadership.leader_epoch, "fetch_state": followed.state,
                "fetches": followed.fetches, "fetch_failures": followed.failures,
                "leader_end_offset": followed.leader_end_offset,
                "leader_high_watermark": followed.leader_high_watermark,
                "follower_lag": max(0, followed.leader_end_offset - followed.part.log.end_offset),
                "request_id": followed.request_id, "backoff_ms": followed.backoff_ms,
                "retry_in_s": round(followed.retry_at_s - now_s, 3),
                "link_fetches_sent": link.fetches if link is not None else 0,
                "link_in_flight": {request_id: [len(sent), round(deadline_s - now_s, 3)]
                                   for request_id, (sent, deadline_s) in in_flight.items()},
                "connected_to": dealer[0] if dealer is not None else None,
                "leader_address": self._addresses.get(followed.leader),
                "next_timer_in_s": None if self._next_timer_s is None
                else round(self._next_timer_s - now_s, 3)}


def _malformed(reply: protocol.ReplyView, partitions: int,
               payload_bytes: int) -> BrokerError | None:
    """What is wrong with an answer to a fetch of ``partitions`` partitions, if anything."""
    if reply.kind != "replicaFetchAll":
        return MalformedReplyError(f"a {reply.kind} answer to a replicaFetchAll")
    results = reply.replica_fetch_all
    if len(results) != partitions:
        return MalformedReplyError(f"{len(results)} partitions in the answer to a replicaFetchAll "
                                   f"of {partitions}")
    entries_bytes = sum(r.entries_bytes for r in results)
    if entries_bytes != payload_bytes:
        return MalformedReplyError(f"the answer's partitions hold {entries_bytes} bytes of "
                                   f"entries, its payload {payload_bytes}")
    return None
