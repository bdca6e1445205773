"""Consumer: read partitions from any offset, long-polling for new records.

Client side, in the conventions of kafka-python: ``Consumer(*topics)`` reads
every partition of the topics; ``assign([(topic, partition)])`` reads exactly
those. ``poll()`` returns {TopicPartition: [ConsumerRecord]}; iterating the
consumer yields records one by one. One thread at a time may use a Consumer:
poll() does its network I/O on the caller's thread, there is no background
thread (except a group member's heartbeat thread). ``offsets_for_times`` finds,
per partition, the first record stamped at or after a time, exactly (the shard
reads it from its time index and that one batch: shards/time_lookup.py); seek
there to read from it.

The fetches and the records they bring are the Fetcher's (fetcher.py): at most
one fetch in flight per partition, parked by the shard at the log end,
transient errors retried with backoff, every entry's CRC checked before its
records are handed out. The Consumer keeps the public API, the positions it
has handed out, consumer groups and commits. A partition without a position is
reset (``auto_offset_reset``) by a request the poll does not wait for
(position_resets.py): a shard that hangs holds back its own partitions only.

With ``group="name"`` the consumer joins a consumer group instead (with the
constructor's topics, or at ``subscribe``, which takes kafka-python's
ConsumerRebalanceListener): the group's coordinator (a shard) assigns it a
share of the topics' partitions and moves them between members as they come
and go (see
group_membership.py and shards/group_coordinator.py). Partition changes are
applied inside ``poll()``: revoked partitions are committed (with auto-commit)
and dropped first, then new ones start from the group's committed offset, or
from ``auto_offset_reset`` when there is none. Delivery is at least once:
auto-commit commits only positions of records already handed to the
application.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from typing import NamedTuple

from plinth import limits, protocol
from plinth import topics as topics_rules
from plinth.client.admin import Admin
from plinth.client.async_commits import AsyncCommit, AsyncCommits
from plinth.client.arguments import (LISTENER_METHODS, checked_bool, checked_callable,
                                     checked_int, checked_listener, checked_ms, checked_str,
                                     checked_topic_names, checked_topic_partitions)
from plinth.client.connection import Connection, broker_address
from plinth.client.consumer_base import (OMITTED, ConsumerBase, checked_partitions,
                                         checked_seek, checked_times, checked_tp_of,
                                         checked_tps, group_option)
from plinth.client.fetcher import Fetcher, OffsetAndMetadata, PartitionState, TopicPartition
from plinth.client.group_membership import GroupMembership
from plinth.client.kafka_option_names import kafka_option_names
from plinth.errors import BrokerError, ClientError, ClosedError, UnknownTopicError
from plinth.format.record_batch import ConsumerRecord

log = logging.getLogger(__name__)

OFFSET_RESETS = ("earliest", "latest", "none")

__all__ = ["Consumer", "ConsumerRebalanceListener", "OffsetAndTimestamp", "TopicPartition",
           "OFFSET_RESETS"]


class OffsetAndTimestamp(NamedTuple):
    """offsets_for_times' answer for one partition (kafka-python's name and fields):
    the first record stamped at or after the time asked, and its timestamp, in
    object storage too (shards/tier/remote_time_lookup.py)."""

    offset: int
    timestamp: int


def check_options(topics, auto_offset_reset: str, fetch_max_bytes: int, fetch_max_wait_ms: int,
                  group: str | None, *, request_timeout_ms: float, consumer_timeout_ms: float,
                  max_poll_records: int, enable_auto_commit: bool,
                  auto_commit_interval_ms: float, session_timeout_ms: int,
                  group_assignor: str, direct_to_shards: bool,
                  max_poll_interval_ms: int) -> None:
    """TypeError or ValueError for an option out of range (Consumer's and AIOConsumer's,
    alike): checked here rather than refused by the group's coordinator in every
    heartbeat, which the consumer would only log, or failing as a bare TypeError at
    the first iteration. Any thread."""
    checked_topic_names("topics", topics)
    if auto_offset_reset not in OFFSET_RESETS:
        raise ValueError(f"auto_offset_reset={auto_offset_reset!r} is not one of {OFFSET_RESETS}")
    checked_int("fetch_max_bytes", fetch_max_bytes, 1, limits.FETCH_BYTES_MAX)
    checked_int("fetch_max_wait_ms", fetch_max_wait_ms, 0, limits.FETCH_WAIT_MS_MAX)
    # 0 ms would time every request out at once ("within 1 ms").
    checked_ms("request_timeout_ms", request_timeout_ms, 1)
    checked_ms("consumer_timeout_ms", consumer_timeout_ms, 0, inf_means="never: the default")
    checked_bool("enable_auto_commit", enable_auto_commit)
    checked_ms("auto_commit_interval_ms", auto_commit_interval_ms, 0)
    checked_bool("direct_to_shards", direct_to_shards)
    checked_int("max_poll_records", max_poll_records, 1, limits.CONSUMER_POLL_RECORDS_MAX)
    checked_int("session_timeout_ms", session_timeout_ms, limits.SESSION_TIMEOUT_MS_MIN,
                limits.SESSION_TIMEOUT_MS_MAX)
    checked_int("max_poll_interval_ms", max_poll_interval_ms, limits.MAX_POLL_INTERVAL_MS_MIN,
                limits.CLIENT_OPTION_MS_MAX)
    checked_str("group_assignor", group_assignor)
    if group_assignor not in ("",) + protocol.GROUP_ASSIGNORS:
        raise ValueError(f"group_assignor={group_assignor!r} is not one of "
                         f"{protocol.GROUP_ASSIGNORS} (or '': the group's, else the default)")
    if group is not None:
        checked_group(group)


def check_callables(key_deserializer, value_deserializer, on_assign, on_revoke) -> None:
    """TypeError naming a deserializer or rebalance callback that is not callable (nor
    None): else it failed only at the first record or rebalance, inside poll."""
    for name, value, what in (
            ("key_deserializer", key_deserializer, "a callable turning a key's bytes into a key"),
            ("value_deserializer", value_deserializer,
             "a callable turning a value's bytes into a value"),
            ("on_assign", on_assign, "a callable taking the set of partitions assigned"),
            ("on_revoke", on_revoke, "a callable taking the set of partitions revoked")):
        checked_callable(name, value, what)


def checked_group(group) -> str:
    """A group's name, as the coordinator would take it (else it is refused only at the
    first poll): TypeError, or InvalidGroupError naming the rule."""
    checked_str("group", group)
    topics_rules.validate_group_name(group)
    return group


def checked_subscription(topics, pattern) -> list[str]:
    """subscribe's ``topics`` as a list of names (Consumer's and AIOConsumer's); an
    empty list is refused, as kafka-python refuses it (a group member subscribed to
    nothing would hold up the group's resets and deletes, reading nothing)."""
    if pattern is not None:
        raise TypeError(f"subscribe(pattern={pattern!r}): topic patterns are not supported; "
                        f"give a list of topic names")
    names = checked_topic_names("subscribe", topics)
    if not names:
        raise ValueError("subscribe([]) names no topic: give at least one, or call "
                         "unsubscribe() to read nothing")
    return names


class ConsumerRebalanceListener:
    """kafka-python's listener: subclass it and give it to ``subscribe``. Called from
    ``poll`` on the consumer's thread, as ``on_revoke`` and ``on_assign`` are."""

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before the partitions go (their positions were auto-committed)."""

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """After the partitions came, each at its committed offset or reset."""


def checked_sync_listener(listener) -> None:
    """subscribe's ``listener`` for the sync consumer: a ConsumerRebalanceListener whose
    methods are not coroutine functions (the sync consumer would make their coroutines
    and never run them: AIOConsumer awaits them), or None."""
    checked_listener("listener", listener)
    for method in LISTENER_METHODS:
        if listener is not None and inspect.iscoroutinefunction(getattr(listener, method)):
            raise TypeError(f"listener.{method} is a coroutine function: the sync Consumer "
                            f"would never run it; give a plain method, or use AIOConsumer, "
                            f"which awaits it")


def checked_max_records(max_records: int | None, default: int) -> int:
    """poll's and getmany's ``max_records``: None means ``default`` (max_poll_records)."""
    if max_records is None:
        return default
    return checked_int("max_records", max_records, 1, limits.CONSUMER_POLL_RECORDS_MAX)


@kafka_option_names
class Consumer(ConsumerBase):
    def __init__(self, *topics: str, broker: str | None = None,
                 bootstrap_servers: str | list[str] | None = None,
                 auto_offset_reset: str = "latest",
                 fetch_max_bytes: int = limits.FETCH_BYTES_DEFAULT,
                 fetch_max_wait_ms: int = limits.FETCH_WAIT_MS_DEFAULT,
                 request_timeout_ms: float = limits.CLIENT_REQUEST_TIMEOUT_MS_DEFAULT,
                 consumer_timeout_ms: float = float("inf"),
                 max_poll_records: int = limits.CONSUMER_POLL_RECORDS_DEFAULT,
                 key_deserializer=None, value_deserializer=None,
                 group: str | None = None, group_id: str | None = None,
                 enable_auto_commit: bool = True,
                 auto_commit_interval_ms: float = limits.AUTO_COMMIT_INTERVAL_MS_DEFAULT,
                 session_timeout_ms: int = limits.SESSION_TIMEOUT_MS_DEFAULT,
                 max_poll_interval_ms: int = limits.MAX_POLL_INTERVAL_MS_DEFAULT,
                 group_assignor: str = "", on_assign=None, on_revoke=None,
                 curve_key_file: str | None = None, curve_server_key_file: str | None = None,
                 direct_to_shards: bool = True):
        """``direct_to_shards``: fetch straight from the leader shard's direct socket
        where the broker offers one (as Producer's); False: through the router.
        ``max_poll_interval_ms``: a group member that goes this long without a poll()
        leaves the group, its partitions moving to other members, and rejoins at its
        next poll() (Kafka's max.poll.interval.ms; group_membership.py)."""
        group = group_option(group, group_id)
        check_options(topics, auto_offset_reset, fetch_max_bytes, fetch_max_wait_ms, group,
                      request_timeout_ms=request_timeout_ms,
                      consumer_timeout_ms=consumer_timeout_ms, max_poll_records=max_poll_records,
                      enable_auto_commit=enable_auto_commit,
                      auto_commit_interval_ms=auto_commit_interval_ms,
                      session_timeout_ms=session_timeout_ms, group_assignor=group_assignor,
                      direct_to_shards=direct_to_shards,
                      max_poll_interval_ms=max_poll_interval_ms)
        check_callables(key_deserializer, value_deserializer, on_assign, on_revoke)
        self.auto_offset_reset = auto_offset_reset
        self.request_timeout_ms = request_timeout_ms
        self.consumer_timeout_ms = consumer_timeout_ms
        self.max_poll_records = max_poll_records
        self._conn = Connection(broker_address(broker, curve_key_file, curve_server_key_file,
                                               bootstrap_servers), direct=direct_to_shards)
        self._admin = Admin(broker=self._conn.address, request_timeout_ms=request_timeout_ms)
        self._fetcher = Fetcher(
            self._conn, fetch_max_bytes=fetch_max_bytes, fetch_max_wait_ms=fetch_max_wait_ms,
            request_timeout_ms=request_timeout_ms, reset_position=self._reset_later,
            reset_out_of_range=auto_offset_reset != "none",
            key_deserializer=key_deserializer, value_deserializer=value_deserializer)
        self._resets = self._position_resets(self._conn)
        # Iteration: lists polled but not yet started, and the one being yielded.
        self._iterated: deque[tuple[TopicPartition, list[ConsumerRecord]]] = deque()
        self._iterating = iter(())
        self._iterating_tp: TopicPartition | None = None
        self._iterating_state: PartitionState | None = None
        self._closed = False
        self.group = group
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_s = auto_commit_interval_ms / 1000
        self.session_timeout_ms = session_timeout_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.group_assignor = group_assignor
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._membership: GroupMembership | None = None
        self._commits = AsyncCommits(self._conn, request_timeout_ms=request_timeout_ms)
        self._auto_commit_sent: AsyncCommit | None = None   # the last auto-commit sent
        # commit_async calls that had nothing to send: (callback, offsets), called in the
        # next poll, never from inside commit_async (kafka-python's order).
        self._commits_done: deque[tuple] = deque()
        self._last_commit_s = time.monotonic()
        self._committed_positions: dict[TopicPartition, int] = {}
        # The partitions a rebalance is revoking, while its commit and on_revoke run.
        self._revoking: set[TopicPartition] = set()
        self._subscribed: list[str] | None = None   # subscribe's topics; None after assign
        if topics:
            try:
                self.subscribe(list(topics))
            except BaseException:   # an unknown topic, a refused handshake: leave no socket open
                self.close()
                raise

    @property
    def fetch_max_bytes(self) -> int:
        return self._fetcher.fetch_max_bytes

    @property
    def fetch_max_wait_ms(self) -> int:
        return self._fetcher.fetch_max_wait_ms

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- Assignment and position -----------------------------------------------

    def subscribe(self, topics: list[str] | None = None, pattern: str | None = None,
                  listener: ConsumerRebalanceListener | None = None) -> None:
        """Read these topics: all their partitions, or with a group the member's share.
        ``topics`` is a list of names (TypeError for a single str, which would
        otherwise be read as its characters); topic patterns are not supported
        (TypeError naming ``pattern``: ``topics`` has a default only so that
        kafka-python's ``subscribe(pattern=...)`` is told that).
        ``listener``: kafka-python's ConsumerRebalanceListener, whose methods replace
        ``on_assign``/``on_revoke`` (called inside ``poll``, as they are). A group
        member subscribing again leaves first, as ``unsubscribe`` (its callbacks,
        not the new listener's, hear its partitions revoked), and joins with the new
        topics as a new member. Nothing changes if the topics are refused. The
        consumer's thread."""
        self._check_open()
        topics = checked_subscription(topics, pattern)
        checked_sync_listener(listener)
        counts = [self._admin.partition_count(t) for t in topics]   # unknown topics fail here
        if self._membership is not None:
            self.unsubscribe()
        if listener is not None:
            self._on_assign = listener.on_partitions_assigned
            self._on_revoke = listener.on_partitions_revoked
        if self.group is None:
            self.assign([(t, p) for t, count in zip(topics, counts) for p in range(count)])
            self._subscribed = topics
            return
        self._membership = GroupMembership(
            self._conn.address, self.group, topics, session_timeout_ms=self.session_timeout_ms,
            assignor=self.group_assignor, request_timeout_ms=self.request_timeout_ms,
            max_poll_interval_ms=self.max_poll_interval_ms)
        self._membership.start()
        self._subscribed = topics

    def unsubscribe(self) -> None:
        """Drop the subscription and every partition (kafka-python's call). A group
        member leaves its group as close() leaves it: it commits what it handed out
        (with auto-commit), calls on_revoke with the partitions it owned, then leaves,
        so they move to other members at once; a later ``subscribe`` joins as a new
        member. Without a group, what ``assign([])`` does. The consumer's thread."""
        self._check_open()
        try:
            if self._membership is not None:
                self._leave_group()
        finally:
            self._fetcher.assign([])
            self._drop_iterated()
            self._subscribed = None

    def _leave_group(self) -> None:
        owned = set(self._fetcher.partitions) - self._revoking   # (on_revoke heard those)
        try:
            if self.enable_auto_commit:
                self._commit_quietly(owned)
            if owned and self._on_revoke is not None:
                self._on_revoke(owned)
        finally:
            self._membership.close()
            self._membership = None
            self._committed_positions.clear()

    def subscription(self) -> set[str] | None:
        """The topics of the last ``subscribe`` (or the constructor's), as a set; None
        if there is none, or ``assign`` replaced it (kafka-python's answers)."""
        return set(self._subscribed) if self._subscribed else None

    def topics(self) -> set[str]:
        """The names of every topic the broker has (kafka-python's call; the
        consumer's Admin.list_topics). The consumer's thread."""
        self._check_open()
        return set(self._admin.list_topics())

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The topic's partition ids, asked of the broker; None for a topic it does not
        have (kafka-python's answers). The consumer's thread."""
        self._check_open()
        try:
            return set(range(self._admin.partition_count(checked_str("topic", topic))))
        except UnknownTopicError:
            return None

    def assign(self, partitions: list[tuple[str, int]]) -> None:
        """Read exactly these (topic, partition) pairs; not for group members."""
        self._check_open()
        partitions = checked_topic_partitions("assign", partitions)
        if self.group is not None:
            raise ValueError(f"consumer is in group {self.group!r}: partitions come from the "
                             f"group; use subscribe")
        self._fetcher.assign(partitions)
        self._drop_iterated()
        self._subscribed = None

    def assignment(self) -> set[TopicPartition]:
        return set(self._fetcher.partitions)

    def seek(self, topic, partition=OMITTED, offset=OMITTED) -> None:
        """Read ``topic``/``partition`` from ``offset`` next: ``seek(topic, partition,
        offset)``, or kafka-python's ``seek(TopicPartition, offset)``."""
        self._check_open()
        tp, offset = checked_seek(topic, partition, offset)
        self._fetcher.seek(tp, offset)
        self._drop_iterated({tp})

    def pause(self, *partitions: tuple[str, int]) -> None:
        """ConsumerBase.pause; records polled for iteration but not yet yielded are
        dropped too, and fetched again from the position after the resume (kafka-python's
        iterator checks each record's partition alike). The consumer's thread."""
        super().pause(*partitions)
        paused = set(checked_tps("pause", partitions))
        iterated = paused & ({tp for tp, _ in self._iterated} | {self._iterating_tp})
        for tp in iterated:
            self._fetcher.seek(tp, self._fetcher.partitions[tp].position)
        self._drop_iterated(iterated)

    def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        self._check_open()
        for tp in checked_tps("seek_to_beginning", partitions) or list(self._fetcher.partitions):
            self.seek(*tp, self._admin.list_offsets(*tp, require_listed=True).start_offset)

    def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        self._check_open()
        for tp in checked_tps("seek_to_end", partitions) or list(self._fetcher.partitions):
            self.seek(*tp, self._admin.list_offsets(*tp).end_offset)

    def offsets_for_times(self, timestamps: dict[tuple[str, int], int]
                          ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """For each (topic, partition): the first record, in offset order, whose
        timestamp (ms since the epoch) is >= the one given, as OffsetAndTimestamp, or
        None if no record is (kafka-python's call). The partitions need not be
        assigned; seek to the offsets to read from there. Every timestamp is checked
        before any is asked: TypeError or ValueError naming one that is not an int of
        ms since the epoch (0..2**63-1)."""
        self._check_open()
        found = {}
        for (topic, partition), timestamp_ms in checked_times(timestamps).items():
            info = self._admin.list_offsets(topic, partition, timestamp_ms)
            found[TopicPartition(topic, partition)] = (
                None if info.found_offset == protocol.OFFSET_NONE
                else OffsetAndTimestamp(info.found_offset, info.found_timestamp_ms))
        return found

    def beginning_offsets(self, partitions: list[tuple[str, int]]) -> dict[TopicPartition, int]:
        """Each partition's first offset (its log start), asked of the broker, one
        request each (kafka-python's call). The partitions need not be assigned; no
        position moves. Every partition is checked before any is asked."""
        self._check_open()
        return {tp: self._admin.list_offsets(*tp, require_listed=True).start_offset
                for tp in checked_partitions("beginning_offsets", partitions)}

    def end_offsets(self, partitions: list[tuple[str, int]]) -> dict[TopicPartition, int]:
        """Each partition's end offset (its high watermark: the offset after its last
        record), asked of the broker as ``beginning_offsets`` asks."""
        self._check_open()
        return {tp: self._admin.list_offsets(*tp).end_offset
                for tp in checked_partitions("end_offsets", partitions)}

    def position(self, topic, partition: int = OMITTED) -> int:
        """The offset of the next record handed out (reset as auto_offset_reset says if
        there is none yet): ``position(topic, partition)``, or kafka-python's
        ``position(TopicPartition)``."""
        self._check_open()
        tp = checked_tp_of("position", topic, partition)
        state = self._fetcher.state(*tp)
        if state.position is None:
            self._reset(tp)
        return state.position

    def _reset(self, tp: TopicPartition) -> None:
        """Give ``tp`` a position as ``auto_offset_reset`` says, now (``position``)."""
        self._refuse_without_reset(tp)
        earliest = self.auto_offset_reset == "earliest"
        info = self._admin.list_offsets(tp.topic, tp.partition, require_listed=earliest)
        offset = info.start_offset if earliest else info.end_offset
        self.seek(tp.topic, tp.partition, offset)

    # --- Polling -----------------------------------------------------------------

    def poll(self, timeout_ms: float = 0, max_records: int | None = None) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records ready within ``timeout_ms``, at most ``max_records`` of them (None:
        max_poll_records; ValueError below 1). ``timeout_ms`` is a number of ms,
        0..CLIENT_OPTION_MS_MAX (0, the default: what is ready now); None is refused
        (TypeError), as kafka-python's poll refuses it, rather than read as "at once"
        or as "for ever". A group member's poll may overrun
        ``timeout_ms`` while it applies a new assignment: the revoked partitions'
        commit and the new ones' committed offsets are each bounded by
        request_timeout_ms, not by the poll's timeout (as rebalance callbacks may
        overrun kafka-python's poll). The consumer's thread."""
        checked_ms("timeout_ms", timeout_ms, 0)
        out = self._poll(timeout_ms, checked_max_records(max_records, self.max_poll_records))
        partitions = self._fetcher.partitions
        for tp, records in out.items():
            partitions[tp].position = records[-1].offset + 1
        return out

    def _poll(self, timeout_ms: float, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Like poll, but leaves positions to the caller (the iterator sets them per record)."""
        if self._closed:
            raise ClosedError("consumer is closed")
        deadline = time.monotonic() + timeout_ms / 1000
        while self._commits_done:
            callback, offsets = self._commits_done.popleft()
            callback(offsets, None)
        while True:
            if self._membership is not None:
                self._membership.note_poll()
                self._membership.raise_if_refused()
                self._rebalance()
            if self._membership is not None:   # (a callback may have unsubscribed)
                self._auto_commit()
            self._resets.expire()
            self._expire_commits()
            self._fetcher.send_fetches()
            out = self._take_records(max_records)
            remaining_ms = (deadline - time.monotonic()) * 1000
            if out or remaining_ms <= 0:
                return out
            if self._membership is not None:   # wake up to apply a new assignment
                remaining_ms = min(remaining_ms, limits.CONSUMER_GROUP_POLL_SLICE_MS)
            for wake_s in (self._fetcher.next_retry_s(), self._resets.next_event_s(),
                           self._commits.next_expiry_s()):
                if wake_s is not None:   # to ask again, or end what timed out
                    remaining_ms = min(remaining_ms, (wake_s - time.monotonic()) * 1000)
            got = self._conn.recv(max(0.0, remaining_ms))
            while got is not None:
                self._on_reply(*got)
                got = self._conn.recv(0)

    def __iter__(self):
        return self

    def __next__(self) -> ConsumerRecord:
        """Next record; StopIteration after consumer_timeout_ms without one."""
        if self._membership is not None and not self._membership.records_allowed():
            self._poll_until_allowed()
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
        self._iterating_tp, self._iterating_state = tp, self._fetcher.partitions[tp]
        return next(self._iterating)

    def _drop_iterated(self, partitions: set | None = None) -> None:
        """Forget the records polled for iteration from these (topic, partition)s; None: all."""
        self._iterated = deque(chunk for chunk in self._iterated
                               if partitions is not None and chunk[0] not in partitions)
        if partitions is None or self._iterating_tp in partitions:
            self._iterating, self._iterating_tp = iter(()), None

    def _poll_until_allowed(self) -> None:
        """While the group membership forbids handing out records (its partitions were
        lost: the session ended, or the member left for want of a poll; or the session
        may have ended), poll instead, as poll() hands none out then: the poll that
        drops lost partitions drops their records polled for iteration too, which
        another member may be reading. StopIteration after consumer_timeout_ms."""
        deadline = time.monotonic() + self.consumer_timeout_ms / 1000
        while self._membership is not None and not self._membership.records_allowed():
            remaining_ms = min((deadline - time.monotonic()) * 1000,
                               limits.CONSUMER_ITERATION_POLL_SLICE_MS)
            if remaining_ms <= 0:
                raise StopIteration
            self._iterated.extend(self._poll(remaining_ms, self.max_poll_records).items())

    def _refill_iterated(self) -> None:
        deadline = time.monotonic() + self.consumer_timeout_ms / 1000
        while True:
            remaining_ms = min((deadline - time.monotonic()) * 1000,
                               limits.CONSUMER_ITERATION_POLL_SLICE_MS)
            polled = self._poll(max(0.0, remaining_ms), self.max_poll_records)
            if polled:
                self._iterated.extend(polled.items())
                return
            if time.monotonic() >= deadline:
                raise StopIteration

    # --- Groups: rebalance and commits (consumer thread) ------------------------------

    def _rebalance(self) -> None:
        """Apply the coordinator's newest assignment: revoke first (lost partitions
        too, see ``_lost_positions``), then add. A callback that unsubscribes (or
        subscribes again) ends it: the partitions are the leave's to drop."""
        membership = self._membership
        change = self._assignment_change()
        if change is None:
            return
        revoked, added, lost = change
        if revoked:
            self._revoking = revoked
            try:
                self._commit_revoked(revoked, lost)
                if self._on_revoke is not None:
                    self._on_revoke(revoked)
            finally:
                self._revoking = set()
            if self._membership is not membership:
                return
            for tp in revoked:
                self._fetcher.remove(tp)
            self._drop_iterated(revoked)
        if added:
            committed = self._fetch_committed()
            for tp in added:
                self._fetcher.add(tp, committed.get(tp))
                if tp in committed:
                    self._committed_positions[tp] = committed[tp]
            if self._on_assign is not None:
                self._on_assign(added)
            if self._membership is not membership:
                return
        membership.set_owned(set(self._fetcher.partitions))

    def _commit_revoked(self, revoked: set, lost: bool) -> None:
        if not self.enable_auto_commit:
            return
        if not lost:
            self._commit_quietly(revoked)
            return
        try:
            positions = self._lost_positions(revoked, self._fetch_committed())
            if positions:
                self.commit(positions)
        except (BrokerError, ClientError) as exc:
            log.warning("group %s: commit of lost partitions failed: %s", self.group, exc)

    def commit(self, offsets: dict | None = None) -> None:
        """Commit positions (default: of every record handed out so far) and wait;
        retried while the group's coordinator is unavailable, up to request_timeout_ms.
        ``offsets``: {(topic, partition): offset}, each offset an int, kafka-python's
        OffsetAndMetadata or aiokafka's (offset, metadata); the metadata is stored with
        the offset (arguments.py, ``checked_commit_offsets``). The consumer's thread."""
        self._check_open()
        for part in self._offsets_to_commit(offsets).parts():
            try:
                self._conn.request_retrying(
                    lambda request_id, part=part: self._encode_commit(request_id, part),
                    self.request_timeout_ms)
            except BrokerError as exc:
                self._check_membership(exc)
                raise
            self._note_committed(part)

    def commit_async(self, offsets: dict | None = None, callback=None) -> None:
        """Commit without waiting (``offsets`` as ``commit`` takes them);
        ``callback(offsets, error_or_None)`` runs in a later poll, once, whatever the
        outcome. With nothing to commit (no offsets given and
        none handed out yet, as before the first poll) nothing is sent and the callback
        runs in the next poll with ({}, None), as kafka-python's does. The consumer's
        thread."""
        self._check_open()
        offsets = self._offsets_to_commit(offsets)
        parts = offsets.parts()
        if not parts:
            if callback is not None:
                self._commits_done.append((callback, offsets))
            return
        self._commits.send(parts, AsyncCommit(offsets, callback, len(parts)), self._encode_commit)

    def _commit_quietly(self, partitions=None) -> None:
        try:
            self.commit(self._positions(partitions))
        except (BrokerError, ClientError) as exc:
            log.warning("group %s: commit failed: %s", self.group, exc)

    def _fetch_committed(self) -> dict[TopicPartition, int]:
        return {tp: found.offset for tp, found in self._fetch_offsets_and_metadata().items()}

    def _fetch_offsets_and_metadata(self, timeout_ms: float | None = None
                                    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The group's committed offsets, with their metadata ("" where none)."""
        view, _ = self._conn.request_retrying(
            lambda request_id: protocol.encode_group_request(request_id, "fetchOffsets", self.group),
            self.request_timeout_ms if timeout_ms is None else timeout_ms)
        return {TopicPartition(*tp): OffsetAndMetadata(offset, view.committed_metadata.get(tp, ""))
                for tp, offset in view.committed.items()}

    def committed(self, topic, partition: int = OMITTED, metadata: bool = False,
                  timeout_ms: float | None = None) -> int | OffsetAndMetadata | None:
        """The group's committed offset for a partition, or None: ``committed(topic,
        partition)``, or kafka-python's ``committed(TopicPartition, metadata=False,
        timeout_ms=None)``, whose ``metadata=True`` answers an OffsetAndMetadata
        (offset, the metadata committed with it, leader_epoch -1: not stored).
        ``timeout_ms``: how long to wait for the answer (None: request_timeout_ms),
        then PlinthTimeoutError. The consumer's thread."""
        self._check_open()
        if isinstance(topic, tuple) and isinstance(partition, bool):
            partition, metadata = OMITTED, partition   # kafka-python's committed(tp, True)
        tp = checked_tp_of("committed", topic, partition)
        metadata = checked_bool("committed metadata", metadata)
        if timeout_ms is not None:
            checked_ms("committed timeout_ms", timeout_ms, 1)
        if self.group is None:
            raise ValueError("committed() needs a consumer group")
        found = self._fetch_offsets_and_metadata(timeout_ms).get(tp)
        if found is None or metadata:
            return found
        return found.offset

    def _check_open(self) -> None:
        """ClosedError once close() was called: every call but ``assignment`` and
        ``subscription`` (which only read) and ``close`` (which may repeat)."""
        if self._closed:
            raise ClosedError("consumer is closed")

    def close(self, autocommit: bool = True, timeout_ms: float | None = None) -> None:
        """Commit what was handed out (with auto-commit, unless ``autocommit`` is False),
        wait for the commits sent without waiting to be answered, leave the group, close
        the sockets: kafka-python's close(autocommit, timeout_ms). The commits still
        unanswered after ``timeout_ms`` (None: request_timeout_ms) end with
        PlinthTimeoutError, so every commit_async callback runs, here at the latest, as
        the Java consumer's close() waits for its pending async commits. A second close
        does nothing. The consumer's thread."""
        autocommit = checked_bool("autocommit", autocommit)
        timeout_ms = (self.request_timeout_ms if timeout_ms is None
                      else checked_ms("close timeout_ms", timeout_ms, 0))
        if self._closed:
            return
        deadline_s = time.monotonic() + timeout_ms / 1000
        try:
            if self._membership is not None and self.enable_auto_commit and autocommit:
                self._commit_quietly()
            self._finish_commits(deadline_s, timeout_ms)
            if self._membership is not None:
                self._membership.close()
        finally:
            self._closed = True
            self._conn.close()
            self._admin.close()

    def _finish_commits(self, deadline_s: float, timeout_ms: float) -> None:
        """close(): read replies until every commit sent without waiting has ended
        (answered, or expired after request_timeout_ms) or ``deadline_s`` passes, end
        the rest, and run the callbacks of the commits that had nothing to send."""
        while (expiry_s := self._commits.next_expiry_s()) is not None:
            now_s = time.monotonic()
            if now_s >= deadline_s:
                break
            got = self._conn.recv((min(deadline_s, expiry_s) - now_s) * 1000)
            if got is not None:
                self._on_reply(*got)
            self._expire_commits()
        self._give_up_commits(timeout_ms)
        while self._commits_done:
            callback, offsets = self._commits_done.popleft()
            callback(offsets, None)
