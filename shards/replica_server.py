"""The leader side of replication: the partitions this shard leads, and the
follower fetches it serves (Kafka's ISR protocol, design in shards/replication.py).

Runs in a shard actor, on its loop thread only (shard_server.py), every
method; no locks. For each partition it leads, a ``Led`` holds the
LeaderReplication state machine (its in-sync set, the followers' log ends, the
high watermark) and the leadership record it leads under.

A follower's fetch, [Request replicaFetch], is answered

- NotLeaderError if this shard does not lead the partition, or the fetch names
  a newer leader epoch or a newer controller incarnation than this shard knows
  (this shard may have been deposed: the follower asks again later);
- FencedLeaderEpochError if it names an older leader epoch (the follower has
  not heard of this leader yet);
- with a divergence (KIP-320) if the follower's last epoch ends before its
  fetch offset in this log, or is not in this log: it truncates and asks again;
- with no entries and this log's start offset if its fetch offset is before
  it (retention deleted what the follower lacks): the follower restarts its
  log there (Partition.restart_at) and asks again;
- else with the entries from its fetch offset on, up to this log's END offset
  (not the high watermark: the follower must hold records before they can be
  acknowledged), as stored, with the epochs that wrote them and the high
  watermark: [Reply replicaFetch][entries]. At the log end the fetch parks in
  the shard's fetch purgatory, under the partition's replica key, until the
  leader's next durable append, a deleteRecords (``floor_raised``), or the
  fetch's wait ends. Every answer carries the leader's log start offset as
  readers see it (``log_start_floor``); a fetch of all says each follower's
  (``log_start_offset``), for the deleteRecords waiting on it (deletion_waits.py).

A follower's fetch of every partition it follows here, [Request
replicaFetchAll] (one per follower and leader, as Kafka's per broker pair),
gets each of those answers per partition, in one [Reply replicaFetchAll]
[entries of them all]. It is answered at once if any partition has an answer
of its own (an error, a divergence, a log start) or entries to send; else it
parks in the purgatory under the follower's key (``follower_key``) until a
durable append to any partition the follower follows here, a partition stops
being led here, or its wait ends. The entries of the answer are bounded per
partition (REPLICA_FETCH_BYTES_MAX) and in all (REPLICA_FETCH_ANSWER_BYTES_MAX):
a partition whose entries would pass the whole's bound sends none this time
(its next fetch is answered at once), unless it is the first with entries.
This shard's own followers send only fetches of all (replica_fetcher.py); the
fetch of one partition stays served for a follower of the previous version.

Every fetch goes to LeaderReplication (shards/replication.py), which fences
it, looks its epoch up and, unless it diverges, counts how far the follower
holds the log (its fetch offset is its durable log end); the high watermark it
computes is the partition's, and the acks="all" produces it passes are
answered by group commit. A leader whose followers moved to a newer epoch gets
no more fetches from them, so its high watermark cannot move: a deposed leader
never acknowledges an acks="all" produce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from plinth import limits, protocol
from plinth.errors import (BrokerError, MalformedRequestError, NotEnoughReplicasError,
                           NotLeaderError)
from plinth.format.log_entry import scan_whole_entries
from plinth.shards.deletion_waits import DeletionWaits
from plinth.shards.fetch_purgatory import FetchPurgatory
from plinth.shards.leader_epochs import NO_EPOCH, LeaderEpochs
from plinth.shards.partition import Partition
from plinth.shards.replication import LeaderReplication, epoch_starts_between
from plinth.shards.shard_calls import Leadership


def replica_key(key: tuple[str, int]) -> tuple[str, int, str]:
    """The purgatory key of a partition's parked follower fetches: apart from its
    consumers', which wait for the high watermark, not the log end."""
    return (key[0], key[1], "replicas")


def follower_key(replica_id: str) -> tuple[str, str]:
    """The purgatory key of a follower's parked fetch of all its partitions here (a
    partition's keys are (topic, number): never equal to it)."""
    return ("replicas of", replica_id)


@dataclass(eq=False)
class Led:
    """One partition this shard leads."""

    part: Partition
    leadership: Leadership
    replication: LeaderReplication
    min_insync: int
    # Each follower's last fetch offset (its durable log end), for the lag in stats.
    fetch_offsets: dict[str, int]
    # Each follower's log start offset, as its last fetch said (deletion_waits.py).
    follower_log_starts: dict[str, int] = field(default_factory=dict)

    @property
    def leader_epoch(self) -> int:
        return self.leadership.leader_epoch


class ReplicaServer:
    """The partitions this shard leads, and their followers' fetches. Loop thread only.

    ``reply(envelope, header, payload)`` sends a reply; ``advanced(part)`` is told
    that a partition's high watermark moved (consumers' fetches and acks="all"
    produces wait for it).
    """

    def __init__(self, shard_id: str, purgatory: FetchPurgatory, *,
                 reply: Callable[..., None], advanced: Callable[[Partition], None],
                 lag_time_max_ms: int = limits.REPLICA_LAG_TIME_MS_MAX_DEFAULT):
        self.shard_id = shard_id
        self._purgatory = purgatory
        self._reply = reply
        self._advanced = advanced
        self.lag_time_max_ms = lag_time_max_ms
        self.led: dict[tuple[str, int], Led] = {}
        self.deletions = DeletionWaits(shard_id)   # deleteRecords waiting for followers
        self._answer_parked_fetch = self._answer_parked   # bound once
        self._answer_parked_fetch_all = self._answer_parked_all

    # --- Leading -------------------------------------------------------------------

    def lead(self, part: Partition, leadership: Leadership, min_insync: int,
             now_s: float) -> Led:
        """Lead ``part`` under ``leadership`` (a new leader epoch: it starts at this log's
        end), or take a changed record of the epoch already led (its in-sync set).

        The new epoch enters the partition's history with its first batch
        (``Partition.append(leader_epoch=)`` saves it first): until then the
        history's latest epoch ends at this log's end, which is where the new one
        starts, so a follower's epoch lookup answers the same."""
        led = self.led.get(part.key)
        if led is not None and led.leader_epoch == leadership.leader_epoch:
            led.leadership = leadership
            led.min_insync = led.replication.min_insync = min_insync
            if led.replication.on_leadership(leadership):
                self._advance(led)
            return led
        if led is not None:
            self.stop_leading(part.key, NotLeaderError(
                f"{part.name}: {self.shard_id} leads it in epoch {leadership.leader_epoch} "
                f"now; fetch again"))
        end_offset = part.log.end_offset
        replication = LeaderReplication(part.name, self.shard_id, leadership, min_insync,
                                        min(part.high_watermark, end_offset), end_offset,
                                        self.lag_time_max_ms / 1000, now_s)
        led = self.led[part.key] = Led(part, leadership, replication, min_insync, {})
        return led

    def stop_leading(self, key: tuple[str, int], error: BrokerError) -> Led | None:
        """Stop leading a partition; its parked follower fetches get ``error``."""
        led = self.led.pop(key, None)
        self._purgatory.fail(replica_key(key), error)
        self.deletions.fail(key, error)
        if led is not None:   # their fetches of all partitions answer this one's error
            self._wake_followers(led)
        return led

    def floor_raised(self, part: Partition) -> None:
        """deleteRecords raised a led partition's log start floor: answer the follower
        fetches parked at its end now, so that its followers adopt the floor without
        waiting for the next append (replica_fetcher.py)."""
        led = self.led.get(part.key)
        if led is None:
            return
        self._purgatory.wake(replica_key(part.key))
        self._wake_followers(led)

    def _wake_followers(self, led: Led) -> None:
        for replica in led.leadership.replicas:
            if replica != self.shard_id:
                self._purgatory.wake(follower_key(replica))

    def too_few_in_sync(self, part: Partition) -> BrokerError | None:
        """The error for an acks="all" produce that waited too long, if the in-sync set
        is too small (None otherwise: it timed out)."""
        led = self.led.get(part.key)
        if led is None:
            return NotLeaderError(f"{part.name} is not led by {self.shard_id} any more; retry")
        in_sync = led.leadership.in_sync
        if len(in_sync) < led.min_insync:
            return NotEnoughReplicasError(
                f"{part.name}: in-sync replicas {list(in_sync)} are {len(in_sync)}, fewer "
                f"than min.insync.replicas={led.min_insync}")
        return None

    def on_durable(self, part: Partition, now_s: float) -> None:
        """Group commit made ``part``'s appends durable: count the leader's own log end,
        and wake the follower fetches parked at the old end."""
        led = self.led.get(part.key)
        if led is None:
            return
        if led.replication.on_leader_durable(part.log.end_offset, now_s):
            self._advance(led)
        self._purgatory.wake(replica_key(part.key))
        self._wake_followers(led)

    def _advance(self, led: Led) -> None:
        high_watermark = led.replication.high_watermark
        if high_watermark > led.part.high_watermark:
            led.part.advance(high_watermark)
            self._advanced(led.part)

    # --- Serving follower fetches -----------------------------------------------------

    def serve(self, envelope: list, request: protocol.ReplicaFetchRequest,
              controller_epoch: int, now_s: float) -> None:
        """Answer (or park) a follower's fetch; raises the BrokerError to answer with."""
        led = self._check_fencing(request.topic, request.partition, request.replica_id,
                                  request.leader_epoch, request.controller_epoch,
                                  controller_epoch)
        part = led.part
        plog = part.log
        end_offset = plog.end_offset
        if request.fetch_offset < plog.start_offset:
            # Retention deleted what the follower lacks: it restarts its log at this
            # log's start (Partition.restart_at), told by the answer's logStartOffset.
            self._reply(envelope, protocol.encode_replica_fetch_reply(
                request.request_id, protocol.ReplicaFetchResult(
                    part.high_watermark, plog.start_offset, end_offset,
                    log_start_floor=part.floor)), b"")
            return
        answer = led.replication.on_follower_fetch(
            request.replica_id, request.fetch_offset, request.last_fetched_epoch,
            part.leader_epochs, end_offset, now_s, plog.start_offset)
        if answer.diverged:
            self._reply(envelope, protocol.encode_replica_fetch_reply(
                request.request_id, protocol.ReplicaFetchResult(
                    part.high_watermark, plog.start_offset, end_offset,
                    answer.diverging_epoch, answer.diverging_end_offset,
                    log_start_floor=part.floor)), b"")
            return
        led.fetch_offsets[request.replica_id] = request.fetch_offset
        if answer.high_watermark_moved:
            self._advance(led)
        wait_ms = min(request.wait_ms_max, limits.FETCH_WAIT_MS_MAX)
        if request.fetch_offset >= end_offset and wait_ms:
            parked = (envelope, request, led)
            if self._purgatory.park(replica_key(part.key), now_s + wait_ms / 1000, parked,
                                    self._answer_parked_fetch, request.replica_id):
                return
        self._send_entries(envelope, request, led)

    def _check_fencing(self, topic: str, partition: int, replica_id: str, leader_epoch: int,
                       request_controller_epoch: int, controller_epoch: int) -> Led:
        name = f"{topic}-{partition}"
        led = self.led.get((topic, partition))
        if led is None:
            raise NotLeaderError(f"{self.shard_id} does not lead {name}; {replica_id} "
                                 f"asks again once it learns the new leader")
        if request_controller_epoch > controller_epoch:
            raise NotLeaderError(
                f"{self.shard_id} knows controller epoch {controller_epoch}, older than "
                f"{replica_id}'s {request_controller_epoch}: it may be deposed from {name}")
        # Fenced for an older leader epoch; NotLeader for a newer one, or a shard that
        # is not a follower of the partition (replication.py, invariant 12).
        led.replication.check_fetch_epoch(replica_id, leader_epoch)
        return led

    def _send_entries(self, envelope: list, request: protocol.ReplicaFetchRequest,
                      led: Led) -> None:
        result, data = self._read_entries(led, request.fetch_offset, request.last_fetched_epoch,
                                          request.bytes_max, limits.REPLICA_FETCH_BYTES_MAX)
        self._reply(envelope, protocol.encode_replica_fetch_reply(request.request_id, result),
                    data)

    def _read_entries(self, led: Led, fetch_offset: int, last_fetched_epoch: int,
                      bytes_max: int, room_bytes: int
                      ) -> tuple[protocol.ReplicaFetchResult, bytes | memoryview]:
        """The entries from ``fetch_offset`` up to this log's end, at most ``bytes_max``
        (0: REPLICA_FETCH_BYTES_MAX) and ``room_bytes`` but one whole entry, and the
        answer that goes with them (for a follower whose last entry has
        ``last_fetched_epoch``)."""
        part = led.part
        plog = part.log
        end_offset = plog.end_offset
        data = b""
        if fetch_offset < end_offset and room_bytes > 0:
            bytes_max = min(bytes_max or limits.REPLICA_FETCH_BYTES_MAX,
                            limits.REPLICA_FETCH_BYTES_MAX, room_bytes)
            data = plog.read(fetch_offset, bytes_max, end_offset)
        result = protocol.ReplicaFetchResult(
            part.high_watermark, plog.start_offset, end_offset,
            epoch_starts=_epoch_starts(part.leader_epochs, fetch_offset, data,
                                       last_fetched_epoch),
            log_start_floor=part.floor)
        return result, data

    # --- Serving a follower's fetch of all its partitions ---------------------------------

    def serve_all(self, envelope: list, request: protocol.ReplicaFetchAllRequest,
                  controller_epoch: int, now_s: float) -> None:
        """Answer (or park) a follower's fetch of every partition it follows here; raises
        the BrokerError to answer the whole request with (too many partitions)."""
        if len(request.partitions) > limits.REPLICA_FETCH_PARTITIONS_MAX:
            raise MalformedRequestError(
                f"a replicaFetchAll from {request.replica_id} names {len(request.partitions)} "
                f"partitions, more than {limits.REPLICA_FETCH_PARTITIONS_MAX} "
                f"(REPLICA_FETCH_PARTITIONS_MAX)")
        outcomes, answer_now = [], request.wait_ms_max == 0
        for wanted in request.partitions:
            outcome, ready = self._outcome(wanted, request, controller_epoch, now_s)
            outcomes.append(outcome)
            answer_now = answer_now or ready
        if not answer_now:
            wait_ms = min(request.wait_ms_max, limits.FETCH_WAIT_MS_MAX)
            if self._purgatory.park(follower_key(request.replica_id), now_s + wait_ms / 1000,
                                    (envelope, request, outcomes),
                                    self._answer_parked_fetch_all, request.replica_id):
                return
        self._answer_all(envelope, request, outcomes)

    def _outcome(self, wanted: protocol.ReplicaFetchPartition,
                 request: protocol.ReplicaFetchAllRequest, controller_epoch: int,
                 now_s: float) -> tuple[Led | protocol.ReplicaFetchPartitionResult, bool]:
        """One partition of a fetch of all, as ``serve`` takes a fetch of one: its own
        answer (an error, a log start, a divergence), or its Led to send entries from;
        and whether it may be answered now (its own answer, or entries waiting)."""
        try:
            led = self._check_fencing(wanted.topic, wanted.partition, request.replica_id,
                                      wanted.leader_epoch, request.controller_epoch,
                                      controller_epoch)
        except BrokerError as exc:
            return protocol.ReplicaFetchPartitionResult(exc, None), True
        part = led.part
        plog = part.log
        end_offset = plog.end_offset
        if wanted.fetch_offset < plog.start_offset:   # see serve
            return protocol.ReplicaFetchPartitionResult(None, protocol.ReplicaFetchResult(
                part.high_watermark, plog.start_offset, end_offset,
                log_start_floor=part.floor)), True
        answer = led.replication.on_follower_fetch(
            request.replica_id, wanted.fetch_offset, wanted.last_fetched_epoch,
            part.leader_epochs, end_offset, now_s, plog.start_offset, wanted.append_failed)
        if answer.diverged:
            return protocol.ReplicaFetchPartitionResult(None, protocol.ReplicaFetchResult(
                part.high_watermark, plog.start_offset, end_offset,
                answer.diverging_epoch, answer.diverging_end_offset,
                log_start_floor=part.floor)), True
        led.fetch_offsets[request.replica_id] = wanted.fetch_offset
        led.follower_log_starts[request.replica_id] = wanted.log_start_offset
        self.deletions.check(led)
        if answer.high_watermark_moved:
            self._advance(led)
        return led, wanted.fetch_offset < end_offset

    def _answer_all(self, envelope: list, request: protocol.ReplicaFetchAllRequest,
                    outcomes: list) -> None:
        """Send each partition's answer, and the entries of those led here, within the
        answer's bound (see the module docstring)."""
        room_bytes = min(request.bytes_max or limits.REPLICA_FETCH_ANSWER_BYTES_MAX,
                         limits.REPLICA_FETCH_ANSWER_BYTES_MAX)
        results, chunks, total_bytes = [], [], 0
        for wanted, outcome in zip(request.partitions, outcomes):
            if type(outcome) is not Led:
                results.append(outcome)
                continue
            try:
                result, data = self._read_entries(
                    outcome, wanted.fetch_offset, wanted.last_fetched_epoch, wanted.bytes_max,
                    room_bytes - total_bytes)
            except BrokerError as exc:   # a bad entry (CRC): this partition's answer
                results.append(protocol.ReplicaFetchPartitionResult(exc, None))
                continue
            if total_bytes and total_bytes + len(data) > room_bytes:   # one whole entry too big
                result, data = self._read_entries(outcome, wanted.fetch_offset,
                                                  wanted.last_fetched_epoch, 0, 0)
            results.append(protocol.ReplicaFetchPartitionResult(None, result, len(data)))
            if data:
                chunks.append(data)
                total_bytes += len(data)
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._reply(envelope, protocol.encode_replica_fetch_all_reply(request.request_id, results),
                    payload)

    def _answer_parked_all(self, parked: tuple, error: BrokerError | None) -> None:
        """The purgatory settles a parked fetch of all: entries came, a partition stopped
        being led here, or its wait ended."""
        envelope, request, outcomes = parked
        if error is not None:
            self._reply(envelope, protocol.encode_error(request.request_id, error), b"")
            return
        for i, led in enumerate(outcomes):
            if type(led) is Led and self.led.get(led.part.key) is not led:
                outcomes[i] = protocol.ReplicaFetchPartitionResult(NotLeaderError(
                    f"{led.part.name}: {self.shard_id} stopped leading it"), None)
        self._answer_all(envelope, request, outcomes)

    def _answer_parked(self, parked: tuple, error: BrokerError | None) -> None:
        """The purgatory settles a parked follower fetch: the log grew, its wait ended,
        or ``error`` (leadership moved)."""
        envelope, request, led = parked
        if error is None and self.led.get(led.part.key) is not led:
            error = NotLeaderError(f"{led.part.name}: {self.shard_id} stopped leading it")
        if error is None:
            try:
                self._send_entries(envelope, request, led)
                return
            except BrokerError as exc:
                error = exc
        self._reply(envelope, protocol.encode_error(request.request_id, error), b"")

    # --- In-sync changes and stats ------------------------------------------------------

    def in_sync_proposals(self, now_s: float, pending: set) -> list[tuple[Led, tuple[str, ...]]]:
        """The in-sync changes to ask the controller for now (none for a partition
        whose previous request is in ``pending``)."""
        proposals = []
        for key, led in self.led.items():
            if key in pending:
                continue
            proposal = led.replication.in_sync_change(now_s)
            if proposal is not None:
                proposals.append((led, tuple(proposal)))
        return proposals

    def stats(self, led: Led, now_s: float) -> dict:
        """A led partition's replication state, for stats_snapshot: the followers' lag,
        and what a stuck in-sync set needs explained (the proposal waiting for the
        controller, each follower's last fetch, the fetches parked here)."""
        end_offset = led.part.log.end_offset
        replication = led.replication
        return {"leader_epoch": led.leader_epoch, "min_insync": led.min_insync,
                "partition_epoch": led.leadership.partition_epoch,
                "follower_lag": {replica: max(0, end_offset - offset)
                                 for replica, offset in sorted(led.fetch_offsets.items())},
                "epoch_start_offset": replication.epoch_start_offset,
                "pending_in_sync": replication.pending_in_sync,
                "followers": replication.followers_state(now_s),
                "parked_fetches": {replica: self._purgatory.parked_for(replica)
                                   for replica in led.leadership.replicas
                                   if replica != self.shard_id}}


def _epoch_starts(epochs: LeaderEpochs, fetch_offset: int, data,
                  last_fetched_epoch: int) -> tuple[protocol.EpochStart, ...]:
    """The epochs that start inside the entries ``data`` (read from ``fetch_offset``),
    for the follower's history. The common case, no epoch starting at or after
    ``fetch_offset``, reads no entry header.

    A follower with no epoch (``last_fetched_epoch`` NO_EPOCH: it restarted empty at
    this log's start) is also given the epoch its first entry has, starting there, as
    a Kafka follower takes the epoch of the first batch it appends: without it, its
    history stayed empty, and each later fetch was a divergence."""
    entries = epochs.entries
    if not data or not entries:
        return ()
    starts = []
    if last_fetched_epoch == NO_EPOCH:
        before = [e for e in entries if e.start_offset < fetch_offset]
        if before:
            starts.append(protocol.EpochStart(before[-1].epoch, fetch_offset))
    if entries[-1].start_offset >= fetch_offset:
        *_, (_, last, _) = scan_whole_entries(data, verify_crc=False)
        data_end_offset = last.base_offset + last.record_count
        starts.extend(protocol.EpochStart(e.epoch, e.start_offset)
                      for e in epoch_starts_between(epochs, fetch_offset, data_end_offset))
    return tuple(starts)
