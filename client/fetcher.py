"""Fetcher: a consumer's fetches, at most one in flight per partition, and the
records they brought.

Client side, on the consumer's thread: it sends on the Consumer's Connection,
and the Consumer, which reads every reply, hands it the fetch replies. For
each assigned partition it keeps a ``PartitionState``: the position (the next
offset handed to the application, which the Consumer moves), the offset to
fetch next, the fetch in flight, and the records fetched but not handed out.

A fetch at the log end is parked by the shard until records arrive or
``fetch_max_wait_ms`` passes, so an idle consumer costs one request per
partition per wait. A consumer of more partitions than it may have fetches in
flight takes turns (``send_fetches``) and parks each for a share of the wait.
A partition with records still buffered is not fetched.
A fetch unanswered for ``fetch_max_wait_ms + request_timeout_ms`` is lost (the
broker restarted, a router went away, the shard hangs) and is sent again; the
partition is failing (``fetch_errors``, logged as below) until a fetch of it is
answered. Long before that, a fetch unanswered for ``fetch_max_wait_ms`` plus
CONSUMER_FETCH_OVERDUE_MARGIN_MS, or a partition still without a position that
long after its reset was asked, is overdue (``overdue``): a healthy shard answers
within the wait, so its shard may hang and the partition is not being read.
Nothing changes for it (it is not failing, and is not asked again); the
consumer's owner may say so (``plinth consume`` does when its --timeout-ms ends).

A fetch reply brings:

- records: every entry's CRC is checked, then each batch's records are
  decoded in C as one list (records before the fetch offset, in a batch that
  starts earlier, are skipped) and buffered; the fetch offset moves past it;
- a transient error (``TRANSIENT_ERRORS``: a shard restarting or moving, the
  router shedding load, object storage unreachable): the partition is asked
  again after a backoff that doubles from ``CLIENT_RETRY_BACKOFF_MS`` up to
  ``CLIENT_RETRY_BACKOFF_MAX_MS`` while they go on, until its fetch succeeds;
  never raised. The partition is failing (``fetch_errors``) until then. Logged
  as Kafka's consumers log retried fetch errors, without flooding the log in a
  long outage: once at WARNING when the partition starts failing (naming it, the
  offset and the error), once at INFO when a fetch of it succeeds again, each
  retry in between at DEBUG;
- offsetOutOfRange: the consumer's ``reset_position(tp)`` (its
  ``auto_offset_reset``), or, if it has none, raised like any other error;
- unknownTopic (the topic was deleted, or never created): never raised, as
  Kafka's consumers do not raise it. The partition stays assigned (a group's
  coordinator takes a deleted topic's partitions away in its next assignment:
  ``on_reply`` says when a topic is first found gone, and the consumer asks for
  it at once) and is failing (``fetch_errors``), asked again every
  CLIENT_RETRY_BACKOFF_MAX_MS (the topic may be created again: then it is read
  on from its position, or from ``auto_offset_reset`` past the new log's end).
  Logged once per topic at WARNING saying so; the other answers while it is
  gone at DEBUG, among them the unavailable a leader shard answers for a
  partition it no longer has (not "retrying until it succeeds": it will not).
  Its partitions' positions are not committed (``gone_topics``): the
  coordinator refuses an offset of a topic that does not exist, and with it the
  whole commit;

A deserializer that raises on a record (records are deserialized as they are
buffered): the records before it are buffered and handed out; then ``take``
raises RecordDeserializationError naming the record, each time, and the
partition is not fetched, until a ``seek`` (past it, to skip it).

A paused partition (``pause``) is not fetched and none of its buffered
records is handed out until it is resumed; its position does not move.

A reply to a fetch that ``seek()``, ``assign()``, ``add()``, ``remove()`` or
``pause()`` replaced is dropped. Nothing here is done per record in Python
unless a deserializer is set: polls hand out slices of the decoded lists.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import deque
from itertools import chain, islice
from collections.abc import Callable, Iterable
from typing import NamedTuple

from plinth import limits, protocol
from plinth.client.arguments import checked_offset
from plinth.client.connection import Connection
from plinth.errors import (TRANSIENT_ERRORS, OffsetOutOfRangeError, PartitionNotAssignedError,
                           PlinthTimeoutError, RecordDeserializationError, UnknownTopicError)
from plinth.format.log_entry import iter_entries
from plinth.format import batch_formats
from plinth.format.record_batch import ConsumerRecord

log = logging.getLogger(__name__)


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class OffsetAndMetadata(NamedTuple):
    """A committed offset with the metadata committed with it (kafka-python's
    OffsetAndMetadata, which ``Consumer.committed(tp, metadata=True)`` answers;
    the leader epoch is not stored: always -1)."""

    offset: int
    metadata: str
    leader_epoch: int = -1


class Overdue(NamedTuple):
    """A partition's request that a healthy shard would have answered by now
    (``Fetcher.overdue``): its fetch at ``offset``, or, with ``offset`` None, its
    position reset; unanswered for ``waited_ms``."""

    offset: int | None
    waited_ms: float


class _BufferedRecords:
    """A partition's fetched records not yet handed out, as the decoded batches.

    Taking n records costs a list slice (or hands over a whole batch's list),
    not n deque pops: at millions of records per second the pops were the
    consumer's biggest cost. Consumer thread only.
    """

    __slots__ = ("_batches", "_first", "_count")

    def __init__(self):
        self._batches: deque[list[ConsumerRecord]] = deque()
        self._first = 0      # position in _batches[0] of the next record to hand out
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


class PartitionState:
    """One assigned partition's reading state. Consumer thread only."""

    __slots__ = ("position", "fetch_offset", "fetch_id", "fetch_sent_s", "retry_at_s",
                 "retry_backoff_s", "fetch_error", "fetch_failing_since_s", "fetch_failures",
                 "records", "failed", "paused", "high_watermark", "position_asked_s")

    def __init__(self, position: int | None = None):
        self.position = position               # next offset handed to the application
        self.fetch_offset = position           # next offset to ask the broker for
        self.fetch_id: int | None = None       # request id of the fetch in flight
        self.fetch_sent_s = 0.0
        self.retry_at_s = 0.0                  # after a transient error: not before this
        self.retry_backoff_s = 0.0             # doubles while the errors go on
        # The transient error its last fetch was answered with, retried; None once a
        # fetch of it succeeds. Since when (time.monotonic()) and how many in a row.
        self.fetch_error: Exception | None = None
        self.fetch_failing_since_s = 0.0
        self.fetch_failures = 0
        self.records = _BufferedRecords()
        # (offset, "key" or "value", the exception) of a record a deserializer raised on:
        # nothing is fetched past it until a seek.
        self.failed: tuple[int, str, Exception] | None = None
        # pause(): not fetched, its buffered records not handed out, until resume().
        self.paused = False
        # The offset after its last record, as the last fetch reply said; None before one.
        self.high_watermark: int | None = None
        # When (time.monotonic()) its position was first asked for (reset_position) and
        # not given since; None while it has one.
        self.position_asked_s: float | None = None


class Fetcher:
    """Consumer thread only. ``reset_position(tp)`` gives ``tp`` a position (with
    ``seek``), or asks for one, leaving it None (the partition is not fetched until it
    has one), or raises; it is called for a partition without one, and after
    offsetOutOfRange if ``reset_out_of_range``."""

    def __init__(self, conn: Connection, *, fetch_max_bytes: int, fetch_max_wait_ms: int,
                 request_timeout_ms: float, reset_position: Callable[[TopicPartition], None],
                 reset_out_of_range: bool, key_deserializer=None, value_deserializer=None):
        self._conn = conn
        self.fetch_max_bytes = fetch_max_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        # A fetch unanswered this long is lost (parked for at most its wait).
        self._fetch_timeout_s = (fetch_max_wait_ms + request_timeout_ms) / 1000
        self._reset_position = reset_position
        self._reset_out_of_range = reset_out_of_range
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self._fetches: dict[int, TopicPartition] = {}     # request id -> its partition
        self._rotation = 0                                 # where take() starts, for fairness
        # The partitions whose buffers hold records, in the order they got them: take()
        # walks these, not every partition (an idle consumer of thousands of
        # partitions spent most of its time asking empty buffers).
        self._buffered: dict[TopicPartition, None] = {}
        self._backing_off: set[TopicPartition] = set()     # retry_at_s set, maybe passed
        self._failed: dict[TopicPartition, None] = {}      # those whose state.failed is set
        self._fetch_turn = 0   # where send_fetches() starts: the first partition it left out
        # Topics a fetch found gone (deleted, or never created), each with the error that
        # said so, until a fetch of one of their partitions succeeds.
        self._gone: dict[str, UnknownTopicError] = {}

    # --- Assignment and position -----------------------------------------------

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions, each from no position yet."""
        self.partitions = {TopicPartition(*tp): PartitionState() for tp in partitions}
        self._gone.clear()
        self._fetches.clear()
        self._buffered.clear()
        self._backing_off.clear()
        self._failed.clear()

    def add(self, tp: TopicPartition, position: int | None) -> None:
        """Read ``tp`` too, from ``position`` (None: the consumer's reset decides)."""
        replaced = self.partitions.get(tp)
        if replaced is not None:
            self._fetches.pop(replaced.fetch_id, None)
            self._buffered.pop(tp, None)
            self._backing_off.discard(tp)
            self._failed.pop(tp, None)
        self.partitions[tp] = PartitionState(position)

    def remove(self, tp: TopicPartition) -> None:
        state = self.partitions.pop(tp)
        self._fetches.pop(state.fetch_id, None)
        self._buffered.pop(tp, None)
        self._backing_off.discard(tp)
        self._failed.pop(tp, None)
        if tp.topic in self._gone and not any(t == tp.topic for t, _ in self.partitions):
            del self._gone[tp.topic]   # found gone again (and said so) if assigned again

    def state(self, topic: str, partition: int) -> PartitionState:
        state = self.partitions.get(TopicPartition(topic, partition))
        if state is None:
            raise self.not_assigned(topic, partition)
        return state

    def not_assigned(self, topic: str, partition: int) -> PartitionNotAssignedError:
        """The error for a call about a partition not assigned, naming (some of) those
        that are."""
        assigned = sorted(self.partitions)
        named = ", ".join(f"{tp.topic}-{tp.partition}"
                          for tp in assigned[:limits.CONSUMER_ERROR_PARTITIONS_NAMED_MAX])
        if len(assigned) > limits.CONSUMER_ERROR_PARTITIONS_NAMED_MAX:
            named += f", ... ({len(assigned)} in all)"
        return PartitionNotAssignedError(
            f"{topic}-{partition} is not assigned to this consumer; assigned: {named or 'none'}")

    def pause(self, partitions: list[TopicPartition], paused: bool) -> None:
        """Pause (or resume) these partitions; every one is checked before any changes.
        A paused partition keeps the records it has buffered, handed out after the
        resume; its fetch in flight is forgotten (its reply dropped, as after a seek),
        so that no fetch of it waits unanswered, or is asked again, while it is paused."""
        states = [self.state(*tp) for tp in partitions]
        for state in states:
            state.paused = paused
            if paused and state.fetch_id is not None:
                self._fetches.pop(state.fetch_id, None)
                state.fetch_id = None

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, state in self.partitions.items() if state.paused}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` next: its buffered records and its fetch in flight
        are dropped. TypeError or ValueError, changing nothing, for an offset that is
        not an int 0 or more (it would fail every fetch after it)."""
        offset = checked_offset("offset", offset)
        state = self.state(*tp)
        state.position = state.fetch_offset = offset
        state.position_asked_s = None
        self._fetches.pop(state.fetch_id, None)
        state.fetch_id = None
        state.records.clear()
        self._buffered.pop(tp, None)
        state.failed = None   # a seek past a record no deserializer takes skips it
        self._failed.pop(tp, None)

    # --- Fetching ----------------------------------------------------------------

    def send_fetches(self) -> None:
        """A fetch for every partition with nothing buffered, nothing in flight and no
        backoff running, as many as the fetches in flight allow. When they run out, the
        next call starts at the first partition left out: starting at the first
        partition each time, a consumer of more partitions than fetches in flight
        re-fetched the same ones (idle at the log end, answered after their wait) and
        never read the others."""
        now = time.monotonic()
        bytes_max, in_flight_max = self._fetch_shape()
        in_flight = len(self._fetches)
        if in_flight >= in_flight_max and not self._oldest_fetch_lost(now):
            return   # no room, and no fetch to ask again: a busy loop's usual case
        wait_ms = self._fetch_wait_ms(in_flight_max)
        items = self.partitions.items()
        start = self._fetch_turn % len(items) if items else 0
        turn = chain(islice(items, start, None), islice(items, start))
        for index, (tp, state) in enumerate(turn, start):
            if state.records or state.failed or state.paused or now < state.retry_at_s:
                continue
            if state.fetch_id is None and in_flight >= in_flight_max:
                # the router refuses fetches past the connection's bytes in flight
                self._fetch_turn = index
                break
            if state.fetch_id is not None:
                if now - state.fetch_sent_s < self._fetch_timeout_s:
                    continue
                # No answer: the broker restarted, a router went away, or the shard
                # hangs. Ask again; the partition is failing until an answer comes.
                self._fetches.pop(state.fetch_id, None)
                self._conn.forget(state.fetch_id)
                self._failing(tp, state, PlinthTimeoutError(
                    f"no answer to the fetch of {tp.topic}-{tp.partition} at offset "
                    f"{state.fetch_offset} within fetch_max_wait_ms + request_timeout_ms = "
                    f"{self._fetch_timeout_s * 1000:.0f} ms"), retry_in_s=0.0)
            if state.position is None:
                self._ask_position(tp, state, now)
                if state.position is None:   # asked, not answered yet: fetched once it is
                    continue
            request_id = self._conn.next_request_id()
            self._conn.send_to(tp, request_id, protocol.encode_fetch(
                request_id, tp.topic, tp.partition, state.fetch_offset, bytes_max, wait_ms))
            in_flight += state.fetch_id is None
            state.fetch_id, state.fetch_sent_s = request_id, now
            self._fetches[request_id] = tp

    def _ask_position(self, tp: TopicPartition, state: PartitionState, now: float) -> None:
        """The consumer's reset_position, noting since when ``tp`` has waited for one."""
        if state.position_asked_s is None:
            state.position_asked_s = now
        self._reset_position(tp)

    def overdue(self) -> dict[TopicPartition, Overdue]:
        """The assigned partitions whose fetch has gone unanswered for more than
        ``fetch_max_wait_ms`` + CONSUMER_FETCH_OVERDUE_MARGIN_MS (a healthy shard answers
        within the wait, even with no record), or whose position was asked for more than
        the margin ago and not given (a reset is answered at once): the shard may hang,
        and the partition is not read. Each with the fetch's offset (None: the reset)
        and how long it has waited. Neither is failing (``fetch_errors``) before its
        request timeout; nothing is asked or changed here."""
        now = time.monotonic()
        margin_s = limits.CONSUMER_FETCH_OVERDUE_MARGIN_MS / 1000
        fetch_overdue_s = self.fetch_max_wait_ms / 1000 + margin_s
        found: dict[TopicPartition, Overdue] = {}
        for tp, state in self.partitions.items():
            if state.fetch_id is not None and now - state.fetch_sent_s > fetch_overdue_s:
                found[tp] = Overdue(state.fetch_offset, (now - state.fetch_sent_s) * 1000)
            elif (state.position is None and state.position_asked_s is not None
                  and now - state.position_asked_s > margin_s):
                found[tp] = Overdue(None, (now - state.position_asked_s) * 1000)
        return found

    def _oldest_fetch_lost(self, now: float) -> bool:
        """Whether the oldest fetch in flight (``_fetches`` is in the order they were
        sent: one asked again is sent anew) went unanswered past its timeout."""
        oldest = next(iter(self._fetches.values()), None)
        return (oldest is not None
                and now - self.partitions[oldest].fetch_sent_s >= self._fetch_timeout_s)

    def _fetch_wait_ms(self, in_flight_max: int) -> int:
        """How long a fetch may be parked at the log end. fetch_max_wait_ms, unless there
        are more partitions than fetches in flight: then their share of it, so that
        taking turns, each partition is still asked about every fetch_max_wait_ms. Parked
        for all of it, a record in a partition of an idle 4,096 waited for its turn for up
        to 8 s. The share is not below FETCH_WAIT_MS_SHARED_MIN, which bounds the requests
        an idle consumer makes (beyond 1,280 partitions at the default wait, a turn comes
        less often: at 4,096, every 1.6 s)."""
        partitions = len(self.partitions)
        if partitions <= in_flight_max:
            return self.fetch_max_wait_ms
        return min(self.fetch_max_wait_ms,
                   max(limits.FETCH_WAIT_MS_SHARED_MIN,
                       self.fetch_max_wait_ms * in_flight_max // partitions))

    def _fetch_shape(self) -> tuple[int, int]:
        """(bytes a fetch asks for, fetches in flight at most): the router lets one
        connection's fetches ask for CLIENT_FETCH_BYTES_IN_FLIGHT_MAX in all, each
        counted as at least FETCH_BYTES_COUNTED_MIN, so many partitions share it."""
        share_bytes = limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // max(1, len(self.partitions))
        bytes_max = min(self.fetch_max_bytes, max(limits.FETCH_BYTES_COUNTED_MIN, share_bytes))
        counted_bytes = max(limits.FETCH_BYTES_COUNTED_MIN, bytes_max)
        return bytes_max, limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // counted_bytes

    def next_retry_s(self) -> float | None:
        """When the earliest backoff ends (time.monotonic()), or None if none runs. Only
        the partitions that backed off are looked at (each poll asks)."""
        now = time.monotonic()
        ended = [tp for tp in self._backing_off if self.partitions[tp].retry_at_s <= now]
        self._backing_off.difference_update(ended)
        return min((self.partitions[tp].retry_at_s for tp in self._backing_off), default=None)

    def on_reply(self, view: protocol.ReplyView, payload) -> bool:
        """A reply that is not the Consumer's own: a fetch's, perhaps a stale one. Whether
        it found a topic gone that was not known to be (see the module)."""
        tp = self._fetches.pop(view.request_id, None)
        if tp is None:
            return False   # a fetch made stale by seek(), assign(), add(), remove() or pause()
        state = self.partitions.get(tp)
        if state is None or state.fetch_id != view.request_id:
            # Those calls forget the fetch they replace; records from a fetch that is
            # not the one in flight would land at the wrong offsets.
            raise AssertionError(f"reply to fetch {view.request_id} of {tp.topic}-{tp.partition}, "
                                 f"whose fetch in flight is {state and state.fetch_id}")
        state.fetch_id = None
        if isinstance(view.error, UnknownTopicError) or (
                isinstance(view.error, TRANSIENT_ERRORS) and tp.topic in self._gone):
            return self._topic_gone(tp, state, view.error)
        if isinstance(view.error, TRANSIENT_ERRORS):
            self._back_off(tp, state, view.error)
            return False
        reset = isinstance(view.error, OffsetOutOfRangeError) and self._reset_out_of_range
        if view.error is not None and not reset:
            raise view.error
        if state.fetch_error is not None:
            self._recovered(tp, state)
        if reset:
            self._ask_position(tp, state, time.monotonic())
            return False
        state.retry_backoff_s = 0.0
        state.high_watermark = view.high_watermark
        if payload is not None and len(payload.buffer):
            self._buffer(tp, state, payload.buffer)
        return False

    def gone_topics(self) -> set[str]:
        """The topics a fetch found deleted (or never created), until a fetch of one of
        their partitions succeeds."""
        return set(self._gone)

    def _topic_gone(self, tp: TopicPartition, state: PartitionState, error: Exception) -> bool:
        """A fetch of ``tp`` found its topic gone (``error``: unknownTopic, or a route
        error once the topic is known gone): ask again in CLIENT_RETRY_BACKOFF_MAX_MS,
        not sooner, and say so once per topic. Whether the topic is newly found gone."""
        newly = tp.topic not in self._gone
        if newly:
            self._gone[tp.topic] = error if isinstance(error, UnknownTopicError) else \
                UnknownTopicError(f"topic {tp.topic!r} was deleted")
            log.warning("topic %r is gone (deleted, or never created): the fetch of %s-%d at "
                        "offset %d was answered %s: %s; its partitions are not read, a group "
                        "member's are taken away by the group's next assignment, and an "
                        "assigned one is asked about every %d ms in case the topic is created "
                        "again", tp.topic, tp.topic, tp.partition, state.fetch_offset,
                        type(error).__name__, error, limits.CLIENT_RETRY_BACKOFF_MAX_MS)
        else:
            log.debug("fetch of %s-%d at offset %d: its topic is still gone (%s: %s); asking "
                      "again in %d ms", tp.topic, tp.partition, state.fetch_offset,
                      type(error).__name__, error, limits.CLIENT_RETRY_BACKOFF_MAX_MS)
        if state.fetch_error is None:
            state.fetch_failing_since_s = time.monotonic()
        state.fetch_failures += 1
        state.fetch_error = self._gone[tp.topic]
        state.retry_backoff_s = limits.CLIENT_RETRY_BACKOFF_MAX_MS / 1000
        state.retry_at_s = time.monotonic() + state.retry_backoff_s
        self._backing_off.add(tp)
        return newly

    def _back_off(self, tp: TopicPartition, state: PartitionState, error: Exception) -> None:
        """A shard restarting or moving, or the router shedding load: ask again, less
        often the longer it lasts."""
        state.retry_backoff_s = min(max(2 * state.retry_backoff_s,
                                        limits.CLIENT_RETRY_BACKOFF_MS / 1000),
                                    limits.CLIENT_RETRY_BACKOFF_MAX_MS / 1000)
        state.retry_at_s = time.monotonic() + state.retry_backoff_s
        self._backing_off.add(tp)
        self._failing(tp, state, error, state.retry_backoff_s)

    def _failing(self, tp: TopicPartition, state: PartitionState, error: Exception,
                 retry_in_s: float) -> None:
        """A fetch of ``tp`` failed (answered with a transient error, or not answered in
        time) and is asked again in ``retry_in_s``: the partition is failing until a
        fetch of it succeeds. Logged at WARNING when it starts failing, then at DEBUG."""
        state.fetch_failures += 1
        if state.fetch_error is None:
            state.fetch_failing_since_s = time.monotonic()
            log.warning("fetch of %s-%d at offset %d failed: %s: %s; retrying until it "
                        "succeeds (the first retry in %.0f ms)", tp.topic, tp.partition,
                        state.fetch_offset, type(error).__name__, error, retry_in_s * 1000)
        else:
            log.debug("fetch of %s-%d at offset %d failed again (%d in a row): %s: %s; "
                      "retrying in %.0f ms", tp.topic, tp.partition, state.fetch_offset,
                      state.fetch_failures, type(error).__name__, error, retry_in_s * 1000)
        state.fetch_error = error

    def _recovered(self, tp: TopicPartition, state: PartitionState) -> None:
        """A fetch of ``tp`` succeeded after failing: say so once, as its failing was."""
        log.info("fetch of %s-%d at offset %d succeeded again after %d failed in %.1f s "
                 "(the last: %s: %s)", tp.topic, tp.partition, state.fetch_offset,
                 state.fetch_failures, time.monotonic() - state.fetch_failing_since_s,
                 type(state.fetch_error).__name__, state.fetch_error)
        state.fetch_error = None
        state.fetch_failures = 0
        self._gone.pop(tp.topic, None)   # created again (or created at last)

    def fetch_errors(self) -> dict[TopicPartition, Exception]:
        """The assigned partitions whose fetches are failing now (their last fetch was
        answered with a transient error, or not answered in time, and is being asked
        again), each with that error."""
        return {tp: state.fetch_error for tp, state in self.partitions.items()
                if state.fetch_error is not None}

    def _buffer(self, tp: TopicPartition, state: PartitionState, data) -> None:
        # Decoded records stay out of the cyclic GC, but deserializers may turn a
        # fetch's hundreds of thousands of keys and values into containers it
        # tracks; none is in a cycle, and collecting while they are made would
        # scan them all, over and over.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for header, batch in iter_entries(data, verify_crc=True):
                records = batch_formats.decode(header.attributes, tp.topic, tp.partition,
                                               header.base_offset, batch, state.fetch_offset)
                state.records.append_batch(self._deserialize(tp, state, records))
                if state.failed is not None:
                    break   # what follows the record is fetched again after a seek past it
                state.fetch_offset = max(state.fetch_offset,
                                         header.base_offset + header.record_count)
        finally:
            if state.records:
                self._buffered[tp] = None
            if gc_was_enabled:
                gc.enable()

    def _deserialize(self, tp: TopicPartition, state: PartitionState,
                     records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """``records`` deserialized; if a deserializer raises, those before the record
        it raised on, and the partition keeps the failure for ``take`` to raise (Kafka's
        consumer: the records before it are handed out, the position stays at it)."""
        if self._key_deserializer is None and self._value_deserializer is None:
            return records
        for index, record in enumerate(records):
            field = "key"
            try:
                if self._key_deserializer is not None and record.key is not None:
                    record.key = self._key_deserializer(record.key)
                field = "value"
                if self._value_deserializer is not None and record.value is not None:
                    record.value = self._value_deserializer(record.value)
            except Exception as exc:   # the user's code: any error is the record's
                state.failed = (record.offset, field, exc)
                state.fetch_offset = record.offset
                self._failed[tp] = None
                return records[:index]
        return records

    def _raise_failed(self) -> None:
        """RecordDeserializationError for the first partition whose records before the
        one a deserializer raised on are all handed out; raised again at each take until
        a seek. A new error each time: one raised again would grow its traceback."""
        for tp in self._failed:
            state = self.partitions[tp]
            if not state.records and not state.paused:
                offset, field, cause = state.failed
                raise RecordDeserializationError(tp.topic, tp.partition, offset, field,
                                                 cause) from cause

    # --- Handing out -------------------------------------------------------------

    def take(self, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Buffered records, at most ``max_records``, starting one partition further each
        call among those with records (fairness), none of a paused partition's. Positions
        are the caller's to move. ValueError for ``max_records`` < 1, which could never
        hand out a record."""
        if max_records < 1:
            raise ValueError(f"max_records={max_records} must be 1 or more")
        if self._failed:
            self._raise_failed()
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        buffered = list(self._buffered)
        if not buffered:
            return out
        self._rotation = (self._rotation + 1) % len(buffered)
        room = max_records
        for tp in buffered[self._rotation:] + buffered[:self._rotation]:
            state = self.partitions[tp]
            if state.paused:
                continue
            records = state.records
            taken = records.take(room)
            if not records:
                del self._buffered[tp]
            out[tp] = taken
            room -= len(taken)
            if room == 0:
                break
        return out
