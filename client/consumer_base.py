"""ConsumerBase: what Consumer and AIOConsumer share that does no I/O.

Client side, on whatever thread or task uses the consumer (one at a time, as
each consumer's module says). The two consumers differ in how they wait (the
caller's thread, or the caller's event loop), never in what they send or how
they read a reply; this holds the parts that neither waits in: the positions
handed out, the commitOffsets request, the dispatch of a reply to the commit
it answers or to the Fetcher, the rejoin a refused commit asks for, what an
assignment changes (revoked, added, or lost with the membership), whether
records may be handed out (not while the session may have ended), and the
calls that only read or mark the Fetcher's partitions (pause, resume, paused,
highwater), and the position resets the Fetcher asks for, which go on the
consumer's own connection and are answered with its fetch replies
(position_resets.py): neither consumer's poll waits for one.

A subclass sets, before any of these run:

- ``_fetcher``: its Fetcher (client/fetcher.py);
- ``_commits``: its AsyncCommits (async_commits.py), on its connection;
  ``_auto_commit_sent``: None; ``_last_commit_s``: time.monotonic() at its start;
  ``enable_auto_commit`` and ``auto_commit_interval_s``: its options;
- ``_committed_positions``: TopicPartition -> the offset last committed;
- ``_membership``: its group membership, or None without a group;
- ``group``: the group's name, or None;
- ``auto_offset_reset``: its option; ``_resets``: ``_position_resets(conn)``'s
  answer, made after ``_fetcher`` (whose ``reset_position`` is ``_reset_later``);
- optionally ``_check_open()``: raise if the consumer may not be used now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from plinth import limits, protocol
from plinth.client.async_commits import AsyncCommit
from plinth.client.arguments import checked_commit_offsets, checked_topic_partition
from plinth.client.connection import Connection
from plinth.client.fetcher import Overdue, TopicPartition
from plinth.client.position_resets import PositionResets
from plinth.errors import (BrokerError, OffsetOutOfRangeError, StaleMemberEpochError,
                           UnknownMemberIdError)

log = logging.getLogger(__name__)


def group_option(group: str | None, group_id: str | None) -> str | None:
    """``group``, or ``group_id`` (kafka-python's and aiokafka's name); ValueError if
    both are given, even alike, as broker and bootstrap_servers are refused
    (connection.py ``_one_broker_option``): one option has one name per call."""
    if group is not None and group_id is not None:
        raise ValueError(f"group={group!r} and group_id={group_id!r} both name the consumer "
                         f"group; give one")
    return group if group is not None else group_id


def checked_times(timestamps) -> dict[tuple[str, int], int]:
    """offsets_for_times' argument, every key and time checked before any is asked:
    TypeError for a time that is not an int, or a key that is not a (topic, partition)
    pair, or for anything but a dict of them; ValueError for an int outside ms since
    the epoch (an Int64 on the wire)."""
    if not isinstance(timestamps, Mapping):
        raise TypeError(f"offsets_for_times takes {{(topic, partition): ms since the epoch}}, "
                        f"got {timestamps!r} ({type(timestamps).__name__})")
    for tp, timestamp_ms in timestamps.items():
        checked_topic_partition("offsets_for_times", tp)
        wrong_type = isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int)
        if wrong_type or not 0 <= timestamp_ms <= limits.INT64_MAX:
            raise (TypeError if wrong_type else ValueError)(
                f"the time for {tp[0]}-{tp[1]} is {timestamp_ms!r}: it must be an int of ms "
                f"since the epoch, 0..{limits.INT64_MAX}")
    return dict(timestamps)


def checked_tp(call: str, topic, partition) -> TopicPartition:
    """A call's (topic, partition) arguments as a TopicPartition, each checked (a str
    partition was read as a partition not assigned)."""
    return TopicPartition(*checked_topic_partition(call, (topic, partition)))


# The default of an argument left out, where None is a value the caller may give
# wrongly (``position("t", None)`` is refused as a partition that is no int).
OMITTED = object()


def checked_tp_of(call: str, topic, partition=OMITTED) -> TopicPartition:
    """A call's partition, given as ``(topic, partition)`` or as aiokafka's single
    TopicPartition (``partition`` left out), checked. TypeError for a topic alone,
    naming both forms."""
    if partition is OMITTED:
        if not isinstance(topic, tuple):
            raise TypeError(f"{call}() takes a TopicPartition or a topic and a partition, "
                            f"got {topic!r} alone")
        return TopicPartition(*checked_topic_partition(call, topic))
    return checked_tp(call, topic, partition)


def checked_seek(topic, partition=OMITTED, offset=OMITTED) -> tuple[TopicPartition, object]:
    """seek's arguments, ``(topic, partition, offset)`` or kafka-python's
    ``(TopicPartition, offset)``: the partition checked, and the offset (the Fetcher
    checks it). TypeError naming both forms when the offset is missing, which
    Python's own message told as a missing ``partition``."""
    if offset is not OMITTED:   # (partition OMITTED: seek(TopicPartition, offset=N))
        return checked_tp_of("seek", topic, partition), offset
    if partition is OMITTED or not isinstance(topic, tuple):
        given = ", ".join(repr(a) for a in (topic, partition) if a is not OMITTED)
        raise TypeError(f"seek({given}) gives no offset: seek(topic, partition, offset) or "
                        f"seek(TopicPartition(topic, partition), offset)")
    return checked_tp_of("seek", topic), partition


def checked_tps(call: str, partitions: tuple) -> list[TopicPartition]:
    """seek_to_beginning's and seek_to_end's ``*partitions``, every one checked before
    any is asked (a topic's name alone was read as its characters)."""
    return [TopicPartition(*checked_topic_partition(call, tp)) for tp in partitions]


def checked_partitions(call: str, partitions) -> list[TopicPartition]:
    """A call's ``partitions`` (a list or set of (topic, partition)s: beginning_offsets',
    end_offsets'), each checked before any is asked; TypeError for a single pair or a
    str, which would be read as its parts."""
    if isinstance(partitions, (str, bytes, tuple)) or not isinstance(partitions, Iterable):
        raise TypeError(f"{call} takes a list of (topic, partition) pairs, got {partitions!r} "
                        f"({type(partitions).__name__})")
    return [TopicPartition(*checked_topic_partition(call, tp)) for tp in partitions]


class CommitOffsets(dict):
    """{(topic, partition): offset} to commit, and ``metadata``: the string to store
    with some of them (where not empty), as a Kafka client's commit stores it.
    ``parts()``: itself split as protocol.commit_offsets_parts splits offsets (room
    made for the metadata), each part a CommitOffsets with its partitions' metadata,
    which ``ConsumerBase._encode_commit`` sends."""

    def __init__(self, offsets: Mapping, metadata: Mapping | None = None):
        super().__init__(offsets)
        self.metadata = dict(metadata or {})

    def parts(self) -> list["CommitOffsets"]:
        return [CommitOffsets(part, {tp: self.metadata[tp] for tp in part
                                     if tp in self.metadata})
                for part in protocol.commit_offsets_parts(self, self.metadata)]


class ConsumerBase:
    def _check_open(self) -> None:
        """Raise if the consumer may not be used now (AIOConsumer: before start(), after
        stop()); the sync Consumer has no such state before its first poll."""

    # --- Pausing (the consumer's thread, or a task on its loop) ---------------------------

    def pause(self, *partitions: tuple[str, int]) -> None:
        """Fetch nothing more of these partitions and hand out none of their records
        until ``resume``; their positions do not move (kafka-python's pause). Records
        already fetched are kept, not handed out while paused. Every partition is
        checked before any is paused: PartitionNotAssignedError (a ValueError) for one
        not assigned, as kafka-python raises IllegalStateError. A partition the group
        revokes, or a new ``assign``, forgets its pause."""
        self._check_open()
        self._fetcher.pause(checked_tps("pause", partitions), True)

    def resume(self, *partitions: tuple[str, int]) -> None:
        """Fetch and hand out these paused partitions again, from their positions;
        PartitionNotAssignedError as ``pause``. Resuming one not paused changes nothing."""
        self._check_open()
        self._fetcher.pause(checked_tps("resume", partitions), False)

    def paused(self) -> set[TopicPartition]:
        """The partitions paused with ``pause`` and not resumed."""
        self._check_open()
        return self._fetcher.paused()

    def highwater(self, partition: tuple[str, int]) -> int | None:
        """The offset after the last record of ``partition`` (its high watermark), as the
        last fetch reply of it said; None before one came (kafka-python's and aiokafka's
        call: it asks nothing). PartitionNotAssignedError for a partition not assigned."""
        self._check_open()
        state = self._fetcher.state(*checked_topic_partition("highwater", partition))
        return state.high_watermark

    def fetch_errors(self) -> dict[TopicPartition, Exception]:
        """The assigned partitions whose fetches are failing now, each with the error its
        last fetch was answered with: a transient one (object storage unreachable, a
        shard restarting), which the consumer retries until a fetch succeeds and never
        raises; empty while every fetch works. It asks nothing. A poll that returned no
        records while this is not empty did not find "no records": it could not read
        them (``plinth consume`` says so when its --timeout-ms ends). Kafka's consumers
        have no such call; they only log these errors, as this one does (fetcher.py).
        A partition whose position reset is failing (asked again after a backoff:
        position_resets.py) is among them, with its reset's error."""
        self._check_open()
        return {**self._fetcher.fetch_errors(), **self._resets.errors()}

    def overdue_fetches(self) -> dict[TopicPartition, Overdue]:
        """The assigned partitions whose fetch (or position reset) has gone unanswered
        for clearly longer than a healthy shard takes (fetcher.py, ``Fetcher.overdue``),
        each with the fetch's offset (None: the reset) and how long it has waited: the
        shard may hang, and they are not read. It asks nothing and the consumer waits on."""
        self._check_open()
        return self._fetcher.overdue()

    def heartbeat_error(self) -> Exception | None:
        """The error this consumer's group heartbeats are failing with now (its
        coordinator unreachable, or a shard not answering), which it retries and never
        raises; None without a group or while they work. It asks nothing. A consumer
        whose heartbeats fail may hold no partitions (it cannot join): a poll with no
        records then did not find "no records" (``plinth consume --group`` says so when
        its --timeout-ms ends). Kafka's consumers only log this, as this one does."""
        self._check_open()
        return None if self._membership is None else self._membership.heartbeat_error()

    def heartbeat_unanswered_ms(self) -> float | None:
        """How long this consumer's group heartbeat in flight has gone unanswered (ms);
        None without a group or while none is in flight (group_membership.py). It asks
        nothing."""
        self._check_open()
        return None if self._membership is None else self._membership.heartbeat_unanswered_ms()

    def _positions(self, partitions=None) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the offset after the last record handed out, of
        ``partitions`` (None: every one with a position), but none of a topic found
        gone (deleted): the coordinator would refuse the whole commit for it, and with
        it every other partition's offset, auto-commit after auto-commit."""
        gone = self._fetcher.gone_topics()
        return {tuple(tp): state.position for tp, state in self._fetcher.partitions.items()
                if state.position is not None and (partitions is None or tp in partitions)
                and tp.topic not in gone}

    def _offsets_to_commit(self, offsets) -> "CommitOffsets":
        """A commit's offsets, checked (``checked_commit_offsets``), with their metadata;
        None: the positions handed out. Raises if the consumer may not commit now."""
        if self._membership is None and self.group is not None:
            raise ValueError(f"commit needs a subscription: the consumer in group "
                             f"{self.group!r} has not subscribed to any topic")
        if self._membership is None:
            raise ValueError(f"commit needs a consumer group: {type(self).__name__}(..., "
                             f"group='name')")
        self._membership.raise_if_left_unpolled()
        if offsets is None:
            return CommitOffsets(self._positions())
        return CommitOffsets(*checked_commit_offsets("commit", offsets))

    def _note_committed(self, offsets: dict) -> None:
        """A commit of ``offsets`` (one part of it) was taken by the coordinator."""
        self._committed_positions.update({TopicPartition(*tp): o for tp, o in offsets.items()})

    def _encode_commit(self, request_id: int, offsets: dict, membership=None) -> bytes:
        """A commitOffsets request as ``membership``'s member (default: the consumer's),
        with the metadata of ``offsets`` if it is a CommitOffsets (a part of one)."""
        member_id, epoch = (membership or self._membership).identity()
        return protocol.encode_commit_offsets(request_id, "commitOffsets", self.group, member_id,
                                              epoch, offsets, metadata=getattr(
                                                  offsets, "metadata", None) or None)

    # --- Commits sent without waiting (async_commits.py) ------------------------------------

    def _auto_commit(self) -> None:
        """Every auto_commit_interval_ms, commit what changed without waiting; the poll
        calls it in each pass. One auto-commit at a time: while the last is in flight
        the next waits (and goes as soon as that one ends), so a coordinator that does
        not answer holds one commit, not one per interval, and is warned of once."""
        now_s = time.monotonic()
        if (not self.enable_auto_commit or now_s - self._last_commit_s < self.auto_commit_interval_s
                or (self._auto_commit_sent is not None and self._auto_commit_sent.in_flight)):
            return
        self._last_commit_s = now_s
        changed = {tp: o for tp, o in self._positions().items()
                   if self._committed_positions.get(TopicPartition(*tp)) != o}
        parts = protocol.commit_offsets_parts(changed)
        if parts:
            self._auto_commit_sent = AsyncCommit(changed, None, len(parts))
            self._commits.send(parts, self._auto_commit_sent, self._encode_commit)

    def _expire_commits(self) -> None:
        """End the commit parts unanswered within request_timeout_ms, each with its
        timeout; the poll calls it in each pass."""
        for part, commit, error in self._commits.expired():
            self._commit_part_ended(part, commit, error)

    def _give_up_commits(self, timeout_ms: float) -> None:
        """End every commit part still in flight with close's timeout: close() calls it
        once it has waited ``timeout_ms`` for them."""
        for part, commit, error in self._commits.given_up(timeout_ms):
            self._commit_part_ended(part, commit, error)

    def _on_commit_reply(self, view: protocol.ReplyView) -> None:
        part, commit = self._commits.pop(view.request_id)
        self._check_membership(view.error)
        self._commit_part_ended(part, commit, view.error)

    def _commit_part_ended(self, part: dict, commit: AsyncCommit, error: Exception | None) -> None:
        """One part answered (``error`` None: taken) or expired; after the last part the
        commit's callback runs once with its offsets and the first error of its parts
        (without a callback a failure is logged)."""
        if error is None:
            self._note_committed(part)
        commit.error = commit.error or error
        commit.parts_left -= 1
        if commit.in_flight:
            return
        if commit.callback is not None:
            commit.callback(commit.offsets, commit.error)
        elif commit.error is not None:
            what = "auto-commit" if commit is self._auto_commit_sent else "async commit"
            log.warning("group %s: %s failed: %s", self.group, what, commit.error)

    def _on_reply(self, view: protocol.ReplyView, payload) -> None:
        if view.request_id in self._commits:
            self._on_commit_reply(view)
        elif not self._on_reset_reply(view) and self._fetcher.on_reply(view, payload) and \
                self._membership is not None:
            # A topic found deleted: its coordinator, which knows it too, takes its
            # partitions away in the answer to a heartbeat; ask for that one now.
            self._membership.heartbeat_now()

    # --- Position resets (position_resets.py) ----------------------------------------------

    def _position_resets(self, conn: Connection) -> PositionResets:
        """The resets of this consumer's partitions, asked on ``conn`` (its own)."""
        return PositionResets(conn, request_timeout_ms=self.request_timeout_ms,
                              earliest=self.auto_offset_reset == "earliest",
                              waiting=self._waiting_for_reset, seek=self._fetcher.seek)

    def _reset_later(self, tp: TopicPartition) -> None:
        """The Fetcher's reset_position (a partition without a position, or after
        offsetOutOfRange): no position until the reset asked for it is answered; the
        poll does not wait for it."""
        self._refuse_without_reset(tp)
        self._fetcher.partitions[tp].position = None
        self._resets.ask(tp)

    def _refuse_without_reset(self, tp: TopicPartition) -> None:
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(f"no position for {tp.topic}-{tp.partition} and "
                                        f"auto_offset_reset='none'")

    def _waiting_for_reset(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` is assigned and still has no position (a reset's late answer
        for any other is dropped: it was seek()ed, or is no longer assigned)."""
        state = self._fetcher.partitions.get(tp)
        return state is not None and state.position is None

    def _on_reset_reply(self, view: protocol.ReplyView) -> bool:
        """Whether ``view`` answers a position reset (then applied, or raised)."""
        return self._resets.on_reply(view)

    def _take_records(self, max_records: int) -> dict[TopicPartition, list]:
        """The Fetcher's ready records, or none while the group membership forbids
        handing any out: its session may have ended and its partitions moved to
        another member (a heartbeat is on its way to tell), or they were lost and
        ``_assignment_change`` has not dropped them yet."""
        if self._membership is not None and not self._membership.records_allowed():
            return {}
        return self._fetcher.take(max_records)

    def _assignment_change(self) -> tuple[set, set, bool] | None:
        """(revoked, added, lost) of the coordinator's newest assignment, None if it
        changes nothing. ``lost``: the membership was lost (the session ended, or the
        member was fenced), and every partition owned is revoked, even one the new
        membership is given again: other members may have read them meanwhile. They
        are dropped with their buffered records, as Kafka's consumer drops lost
        partitions (onPartitionsLost), though on_revoke is called; their commit
        (``_lost_positions``) goes without a membership, which the coordinator takes
        only from a group without members (as after its failover, which forgets them)
        and refuses while another may own them."""
        target = self._membership.take_target()
        if target is None:
            return None
        target = {TopicPartition(*tp) for tp in target}
        owned = set(self._fetcher.partitions)
        if not self._membership.target_lost:
            return owned - target, target - owned, False
        if owned:
            log.warning("group %s: partitions %s lost with the membership (its session "
                        "ended, or it was fenced): dropped with their buffered records, "
                        "their positions committed only if the group has no members now "
                        "and they are ahead of its commits; rejoining", self.group,
                        ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(owned)))
        return owned, target, True

    def _lost_positions(self, lost: set, committed: Mapping) -> dict:
        """The positions of lost partitions worth committing: those ahead of the
        group's ``committed`` offsets (or with none). Another member may have owned
        them, read further and left meanwhile (the group then has no members, and a
        member-less commit is taken): committing a lost position behind its commits
        would make the group read those records again (and undo an administrator's
        reset or deletion made since, where one is behind)."""
        return {tp: offset for tp, offset in self._positions(lost).items()
                if committed.get(TopicPartition(*tp), -1) < offset}

    def _check_membership(self, error: BrokerError | None) -> None:
        """A commit refused because the coordinator does not know this member (it moved
        to another shard, or the session ended): heartbeat now to learn it and rejoin,
        rather than at the next heartbeat interval."""
        if isinstance(error, (UnknownMemberIdError, StaleMemberEpochError)) and \
                self._membership is not None:   # (an async commit's reply after unsubscribe)
            self._membership.heartbeat_now()
