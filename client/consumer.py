"""Consumer: read partitions from any offset, long-polling for new records.

Client side, in the conventions of kafka-python: ``Consumer(*topics)`` reads
every partition of the topics; ``assign([(topic, partition)])`` reads exactly
those. ``poll()`` returns {TopicPartition: [ConsumerRecord]}; iterating the
consumer yields records one by one. One thread at a time may use a Consumer:
poll() does its network I/O on the caller's thread, there is no background
thread.

With ``group="name"`` the consumer joins a consumer group instead: the
group's coordinator (a shard) assigns it a share of the topics' partitions
and moves them between members as they come and go (see
group_membership.py and shards/group_coordinator.py). Partition changes are
applied inside ``poll()``: revoked partitions are committed (with auto-commit)
and dropped first, then new ones start from the group's committed offset, or
from ``auto_offset_reset`` when there is none. Delivery is at least once:
auto-commit commits only positions of records already handed to the
application.

Each assigned partition has at most one fetch in flight. A fetch at the log
end is parked by the shard until records arrive or ``fetch_max_wait_ms``
passes, so an idle consumer costs one request per partition per wait.
Every entry's CRC is checked before its records are handed out.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import deque
from typing import NamedTuple

from plinth import limits, protocol
from plinth.client.admin import Admin
from plinth.client.connection import Connection, broker_address
from plinth.format.record_batch import ConsumerRecord, decode_records
from plinth.client.group_membership import GroupMembership
from plinth.errors import (TRANSIENT_ERRORS, BrokerError, ClientError, ClosedError,
                           OffsetOutOfRangeError)
from plinth.format.log_entry import iter_entries

log = logging.getLogger(__name__)

OFFSET_RESETS = ("earliest", "latest", "none")
# How long a group member's poll waits on the socket before it checks for a
# new assignment again.
_GROUP_POLL_SLICE_MS = 100


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class _BufferedRecords:
    """A partition's fetched records not yet handed out, as the decoded batches.

    Taking n records costs a list slice (or hands over a whole batch's list),
    not n deque pops: at millions of records per second the pops were the
    consumer's biggest cost. Consumer thread only.
    """

    __slots__ = ("_batches", "_first", "_count")

    def __init__(self):
        self._batches: deque[list[ConsumerRecord]] = deque()
        self._first = 0      # index in _batches[0] of the next record to hand out
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append_batch(self, records: list[ConsumerRecord]) -> None:
        if records:
            self._batches.append(records)
            self._count += len(records)

    def take(self, limit: int) -> list[ConsumerRecord]:
        """Up to ``limit`` records, oldest first, removed from the buffer."""
        taken: list[ConsumerRecord] = []
        while len(taken) < limit and self._batches:
            batch = self._batches[0]
            end = self._first + limit - len(taken)
            if end >= len(batch):
                part = batch if self._first == 0 else batch[self._first:]
                self._batches.popleft()
                self._first = 0
            else:
                part = batch[self._first:end]
                self._first = end
            if taken:
                taken.extend(part)
            else:
                taken = part      # a whole batch's list is handed over, not copied
        self._count -= len(taken)
        return taken

    def clear(self) -> None:
        self._batches.clear()
        self._first = self._count = 0


class _PartitionState:
    __slots__ = ("position", "fetch_offset", "fetch_id", "fetch_sent_s", "retry_at_s",
                 "retry_backoff_s", "records")

    def __init__(self):
        self.position: int | None = None       # next offset handed to the application
        self.fetch_offset: int | None = None   # next offset to ask the broker for
        self.fetch_id: int | None = None       # request id of the fetch in flight
        self.fetch_sent_s = 0.0
        self.retry_at_s = 0.0                  # after a transient error: not before this
        self.retry_backoff_s = 0.0             # doubles while the errors go on
        self.records = _BufferedRecords()


class Consumer:
    def __init__(self, *topics: str, broker: str | None = None,
                 auto_offset_reset: str = "latest",
                 fetch_max_bytes: int = limits.FETCH_BYTES_DEFAULT,
                 fetch_max_wait_ms: int = limits.FETCH_WAIT_MS_DEFAULT,
                 request_timeout_ms: float = limits.CLIENT_REQUEST_TIMEOUT_MS_DEFAULT,
                 consumer_timeout_ms: float = float("inf"),
                 max_poll_records: int = 500,
                 key_deserializer=None, value_deserializer=None,
                 group: str | None = None, enable_auto_commit: bool = True,
                 auto_commit_interval_ms: float = limits.AUTO_COMMIT_INTERVAL_MS_DEFAULT,
                 session_timeout_ms: int = limits.SESSION_TIMEOUT_MS_DEFAULT,
                 group_assignor: str = "", on_assign=None, on_revoke=None,
                 curve_key_file: str | None = None, curve_server_key_file: str | None = None):
        if auto_offset_reset not in OFFSET_RESETS:
            raise ValueError(f"auto_offset_reset={auto_offset_reset!r} is not one of {OFFSET_RESETS}")
        if not 0 < fetch_max_bytes <= limits.FETCH_BYTES_MAX:
            raise ValueError(f"fetch_max_bytes={fetch_max_bytes} must be 1..{limits.FETCH_BYTES_MAX}")
        if not 0 <= fetch_max_wait_ms <= limits.FETCH_WAIT_MS_MAX:
            raise ValueError(f"fetch_max_wait_ms={fetch_max_wait_ms} must be 0..{limits.FETCH_WAIT_MS_MAX}")
        self.auto_offset_reset = auto_offset_reset
        self.fetch_max_bytes = fetch_max_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.request_timeout_ms = request_timeout_ms
        self.consumer_timeout_ms = consumer_timeout_ms
        self.max_poll_records = max_poll_records
        # A fetch unanswered this long is lost (parked for at most its wait).
        self._fetch_timeout_s = (fetch_max_wait_ms + request_timeout_ms) / 1000
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self._conn = Connection(broker_address(broker, curve_key_file, curve_server_key_file))
        self._admin = Admin(broker=self._conn.address, request_timeout_ms=request_timeout_ms)
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._fetches: dict[int, TopicPartition] = {}
        # Iteration: lists polled but not yet started, and the one being yielded.
        self._iterated: deque[tuple[TopicPartition, list[ConsumerRecord]]] = deque()
        self._iterating = iter(())
        self._iterating_tp: TopicPartition | None = None
        self._iterating_state: _PartitionState | None = None
        self._rotation = 0                                 # where _take starts, for fairness
        self._closed = False
        self.group = group
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_s = auto_commit_interval_ms / 1000
        self.session_timeout_ms = session_timeout_ms
        self.group_assignor = group_assignor
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._membership: GroupMembership | None = None
        self._commits: dict[int, object] = {}             # async commit id -> callback
        self._last_commit_s = time.monotonic()
        self._committed_positions: dict[TopicPartition, int] = {}
        if group is not None and not topics:
            raise ValueError("a consumer in a group needs topics: Consumer('topic', group=...)")
        if topics:
            self.subscribe(list(topics))

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- Assignment and position -----------------------------------------------

    def subscribe(self, topics: list[str]) -> None:
        """Read these topics: all their partitions, or with a group the member's share."""
        counts = [self._admin.partition_count(t) for t in topics]   # unknown topics fail here
        if self.group is None:
            self.assign([(t, p) for t, count in zip(topics, counts) for p in range(count)])
            return
        if self._membership is not None:
            raise ValueError(f"consumer already subscribed in group {self.group!r}")
        self._membership = GroupMembership(
            self._conn.address, self.group, topics, session_timeout_ms=self.session_timeout_ms,
            assignor=self.group_assignor, request_timeout_ms=self.request_timeout_ms)
        self._membership.start()

    def assign(self, partitions: list[tuple[str, int]]) -> None:
        """Read exactly these (topic, partition) pairs; not for group members."""
        if self.group is not None:
            raise ValueError(f"consumer is in group {self.group!r}: partitions come from the "
                             f"group; use subscribe")
        self._partitions = {TopicPartition(*tp): _PartitionState() for tp in partitions}
        self._fetches.clear()
        self._drop_iterated()

    def assignment(self) -> set[TopicPartition]:
        return set(self._partitions)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``topic``/``partition`` from ``offset`` next."""
        state = self._state(topic, partition)
        state.position = state.fetch_offset = offset
        state.fetch_id = None
        state.records.clear()
        self._drop_iterated({(topic, partition)})

    def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        for tp in partitions or list(self._partitions):
            self.seek(*tp, self._admin.list_offsets(*tp).start_offset)

    def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        for tp in partitions or list(self._partitions):
            self.seek(*tp, self._admin.list_offsets(*tp).end_offset)

    def position(self, topic: str, partition: int) -> int:
        state = self._state(topic, partition)
        if state.position is None:
            self._reset(TopicPartition(topic, partition), state)
        return state.position

    def _state(self, topic: str, partition: int) -> _PartitionState:
        state = self._partitions.get(TopicPartition(topic, partition))
        if state is None:
            raise ValueError(f"{topic}-{partition} is not assigned to this consumer")
        return state

    def _reset(self, tp: TopicPartition, state: _PartitionState) -> None:
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(f"no position for {tp.topic}-{tp.partition} and "
                                        f"auto_offset_reset='none'")
        info = self._admin.list_offsets(tp.topic, tp.partition)
        offset = info.start_offset if self.auto_offset_reset == "earliest" else info.end_offset
        self.seek(tp.topic, tp.partition, offset)

    # --- Polling -----------------------------------------------------------------

    def poll(self, timeout_ms: float = 0, max_records: int | None = None) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records ready within ``timeout_ms``, at most ``max_records`` of them."""
        out = self._poll(timeout_ms, max_records or self.max_poll_records)
        for tp, records in out.items():
            self._partitions[tp].position = records[-1].offset + 1
        return out

    def _poll(self, timeout_ms: float, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Like poll, but leaves positions to the caller (the iterator sets them per record)."""
        if self._closed:
            raise ClosedError("consumer is closed")
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            if self._membership is not None:
                self._rebalance()
                self._auto_commit()
            self._send_fetches()
            out = self._take(max_records)
            remaining_ms = (deadline - time.monotonic()) * 1000
            if out or remaining_ms <= 0:
                return out
            if self._membership is not None:   # wake up to apply a new assignment
                remaining_ms = min(remaining_ms, _GROUP_POLL_SLICE_MS)
            now = time.monotonic()
            retries_s = [st.retry_at_s for st in self._partitions.values() if st.retry_at_s > now]
            if retries_s:   # wake up to ask again after a transient error
                remaining_ms = min(remaining_ms, (min(retries_s) - now) * 1000)
            got = self._conn.recv(remaining_ms)
            while got is not None:
                self._on_reply(*got)
                got = self._conn.recv(0)

    def __iter__(self):
        return self

    def __next__(self) -> ConsumerRecord:
        """Next record; StopIteration after consumer_timeout_ms without one."""
        record = next(self._iterating, None)   # records are never None
        if record is None:
            record = self._start_next_polled()
        self._iterating_state.position = record.offset + 1   # handed out: committable
        return record

    def _start_next_polled(self) -> ConsumerRecord:
        """The first record of the next polled list, which becomes the one iterated."""
        if not self._iterated:
            self._refill_iterated()
        tp, records = self._iterated.popleft()
        self._iterating = iter(records)
        self._iterating_tp, self._iterating_state = tp, self._partitions[tp]
        return next(self._iterating)

    def _drop_iterated(self, partitions: set | None = None) -> None:
        """Forget the records polled for iteration from these (topic, partition)s; None: all."""
        self._iterated = deque(chunk for chunk in self._iterated
                               if partitions is not None and chunk[0] not in partitions)
        if partitions is None or self._iterating_tp in partitions:
            self._iterating, self._iterating_tp = iter(()), None

    def _refill_iterated(self) -> None:
        deadline = time.monotonic() + self.consumer_timeout_ms / 1000
        while True:
            remaining_ms = min((deadline - time.monotonic()) * 1000, 1000.0)
            polled = self._poll(max(0.0, remaining_ms), self.max_poll_records)
            if polled:
                self._iterated.extend(polled.items())
                return
            if time.monotonic() >= deadline:
                raise StopIteration

    def _send_fetches(self) -> None:
        now = time.monotonic()
        for tp, state in self._partitions.items():
            if state.records or now < state.retry_at_s:
                continue
            if state.fetch_id is not None:
                if now - state.fetch_sent_s < self._fetch_timeout_s:
                    continue
                # No answer: the broker restarted, or a router went away. Ask again.
                self._fetches.pop(state.fetch_id, None)
            if state.position is None:
                self._reset(tp, state)
            request_id = self._conn.next_request_id()
            self._conn.send(protocol.encode_fetch(request_id, tp.topic, tp.partition,
                                                  state.fetch_offset, self.fetch_max_bytes,
                                                  self.fetch_max_wait_ms))
            state.fetch_id, state.fetch_sent_s = request_id, now
            self._fetches[request_id] = tp

    def _on_reply(self, view: protocol.ReplyView, payload) -> None:
        if view.request_id in self._commits:
            self._on_commit_reply(view)
            return
        tp = self._fetches.pop(view.request_id, None)
        state = self._partitions.get(tp) if tp is not None else None
        if state is None or state.fetch_id != view.request_id:
            return   # a fetch made stale by seek() or assign()
        state.fetch_id = None
        if isinstance(view.error, OffsetOutOfRangeError) and self.auto_offset_reset != "none":
            self._reset(tp, state)
            return
        if isinstance(view.error, TRANSIENT_ERRORS):
            # A shard restarting or moving, or the router shedding load: ask again,
            # less often the longer it lasts.
            state.retry_backoff_s = min(max(2 * state.retry_backoff_s,
                                            limits.CLIENT_RETRY_BACKOFF_MS / 1000),
                                        limits.CLIENT_RETRY_BACKOFF_MAX_MS / 1000)
            state.retry_at_s = time.monotonic() + state.retry_backoff_s
            log.info("fetch of %s-%d at offset %d: %s; retrying in %.0f ms", tp.topic,
                     tp.partition, state.fetch_offset, view.error, state.retry_backoff_s * 1000)
            return
        if view.error is not None:
            raise view.error
        state.retry_backoff_s = 0.0
        if payload is not None and len(payload.buffer):
            self._buffer(tp, state, payload.buffer)

    def _buffer(self, tp: TopicPartition, state: _PartitionState, data) -> None:
        # Decoded records stay out of the cyclic GC, but deserializers may turn a
        # fetch's hundreds of thousands of keys and values into containers it
        # tracks; none is in a cycle, and collecting while they are made would
        # scan them all, over and over.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for header, batch in iter_entries(data, verify_crc=True):
                records = decode_records(tp.topic, tp.partition, header.base_offset, batch,
                                         offset_min=state.fetch_offset)
                state.records.append_batch(self._deserialize(records))
                state.fetch_offset = max(state.fetch_offset,
                                         header.base_offset + header.record_count)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _deserialize(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        if self._key_deserializer is None and self._value_deserializer is None:
            return records
        for record in records:
            if self._key_deserializer is not None and record.key is not None:
                record.key = self._key_deserializer(record.key)
            if self._value_deserializer is not None and record.value is not None:
                record.value = self._value_deserializer(record.value)
        return records

    def _take(self, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Buffered records, starting one partition further each call (fairness)."""
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        items = list(self._partitions.items())
        if not items:
            return out
        self._rotation = (self._rotation + 1) % len(items)
        room = max_records
        for tp, state in items[self._rotation:] + items[:self._rotation]:
            taken = state.records.take(room)
            if not taken:
                continue
            out[tp] = taken
            room -= len(taken)
            if room == 0:
                break
        return out

    # --- Groups: rebalance and commits (consumer thread) ------------------------------

    def _rebalance(self) -> None:
        """Apply the coordinator's newest assignment: revoke first, then add."""
        target = self._membership.take_target()
        if target is None:
            return
        target = {TopicPartition(*tp) for tp in target}
        revoked = set(self._partitions) - target
        if revoked:
            if self.enable_auto_commit:
                self._commit_quietly(revoked)
            if self._on_revoke is not None:
                self._on_revoke(revoked)
            for tp in revoked:
                del self._partitions[tp]
            self._drop_iterated(revoked)
        added = target - set(self._partitions)
        if added:
            committed = self._fetch_committed()
            for tp in added:
                state = self._partitions[tp] = _PartitionState()
                if tp in committed:
                    state.position = state.fetch_offset = committed[tp]
                    self._committed_positions[tp] = committed[tp]
            if self._on_assign is not None:
                self._on_assign(added)
        self._membership.set_owned(set(self._partitions))

    def _positions(self, partitions=None) -> dict[tuple[str, int], int]:
        return {tuple(tp): state.position for tp, state in self._partitions.items()
                if state.position is not None and (partitions is None or tp in partitions)}

    def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Commit positions (default: of every record handed out so far) and wait;
        retried while the group's coordinator is unavailable, up to request_timeout_ms."""
        offsets = self._offsets_to_commit(offsets)
        if not offsets:
            return
        self._conn.request_retrying(lambda request_id: self._encode_commit(request_id, offsets),
                                    self.request_timeout_ms)
        self._committed_positions.update({TopicPartition(*tp): o for tp, o in offsets.items()})

    def commit_async(self, offsets: dict[tuple[str, int], int] | None = None,
                     callback=None) -> None:
        """Commit without waiting; ``callback(offsets, error_or_None)`` runs in a later poll."""
        offsets = self._offsets_to_commit(offsets)
        if offsets:
            request_id = self._conn.next_request_id()
            self._conn.send(self._encode_commit(request_id, offsets))
            self._commits[request_id] = (offsets, callback)

    def _offsets_to_commit(self, offsets) -> dict:
        if self._membership is None:
            raise ValueError("commit needs a consumer group: Consumer(..., group='name')")
        return self._positions() if offsets is None else dict(offsets)

    def _encode_commit(self, request_id: int, offsets: dict) -> bytes:
        member_id, epoch = self._membership.identity()
        return protocol.encode_commit_offsets(request_id, "commitOffsets", self.group, member_id,
                                              epoch, offsets)

    def _on_commit_reply(self, view: protocol.ReplyView) -> None:
        offsets, callback = self._commits.pop(view.request_id)
        if view.error is None:
            self._committed_positions.update({TopicPartition(*tp): o for tp, o in offsets.items()})
        elif callback is None:
            log.warning("group %s: async commit failed: %s", self.group, view.error)
        if callback is not None:
            callback(offsets, view.error)

    def _commit_quietly(self, partitions=None) -> None:
        try:
            self.commit(self._positions(partitions))
        except (BrokerError, ClientError) as exc:
            log.warning("group %s: commit failed: %s", self.group, exc)

    def _auto_commit(self) -> None:
        now = time.monotonic()
        if not self.enable_auto_commit or now - self._last_commit_s < self.auto_commit_interval_s:
            return
        self._last_commit_s = now
        changed = {tp: o for tp, o in self._positions().items()
                   if self._committed_positions.get(TopicPartition(*tp)) != o}
        if changed:
            self.commit_async(changed)

    def _fetch_committed(self) -> dict[TopicPartition, int]:
        view, _ = self._conn.request_retrying(
            lambda request_id: protocol.encode_group_request(request_id, "fetchOffsets", self.group),
            self.request_timeout_ms)
        return {TopicPartition(*tp): offset for tp, offset in view.committed.items()}

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset for a partition, or None."""
        if self.group is None:
            raise ValueError("committed() needs a consumer group")
        return self._fetch_committed().get(TopicPartition(topic, partition))

    def close(self) -> None:
        """Commit (with auto-commit), leave the group, close the sockets."""
        if self._closed:
            return
        try:
            if self._membership is not None:
                if self.enable_auto_commit:
                    self._commit_quietly()
                self._membership.close()
        finally:
            self._closed = True
            self._conn.close()
            self._admin.close()
