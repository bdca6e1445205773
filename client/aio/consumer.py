"""AIOConsumer: the Consumer for asyncio, in aiokafka's conventions.

Client side, on the caller's event loop: no thread. The fetches, the CRC
checks and the decoding of records are the sync consumer's Fetcher
(client/fetcher.py, the C decoders), on a connection whose waits are awaited
(client/aio/connection.py); a group member heartbeats from a task
(client/aio/group_membership.py) with the sync membership's logic.

    async with AIOConsumer("orders", broker=url, group="billing",
                           auto_offset_reset="earliest") as consumer:
        async for record in consumer:
            ...
        batches = await consumer.getmany(timeout_ms=500, max_records=1000)
        await consumer.commit()

Options, defaults and errors are the sync Consumer's (``group``; aiokafka's
``group_id`` is taken as the same). What differs:

- ``await start()`` first (or ``async with``); a call before it raises
  ClosedError, but for ``subscribe``, ``assign``, ``unsubscribe``,
  ``subscription`` and ``assignment`` (aiokafka's ``assign([tp]); await
  start()``). ``subscribe`` and ``assign`` take effect at once when no I/O is
  needed, else in ``start()`` or the next ``getmany``.
- Rebalance callbacks: a ConsumerRebalanceListener (aiokafka's), given to
  ``subscribe(topics, listener=...)``, or ``on_assign``/``on_revoke``; each may
  be a coroutine function, and is awaited. They run inside ``getmany`` (revoke
  first, after an auto-commit of the revoked partitions), as the sync
  consumer's run inside ``poll()``.
- ``async for`` ends (StopAsyncIteration) after ``consumer_timeout_ms``
  without a record (default: never) or when the consumer is stopped.
- A partition without a position is reset (``auto_offset_reset``) by a request
  ``getmany`` does not wait for, as the sync consumer's poll does not
  (client/position_resets.py): a shard that does not answer the listOffsets
  holds back its own partitions only, never ``getmany`` past its ``timeout_ms``;
  the reset's error is in ``fetch_errors()`` while it is retried.

Tasks. Any task on the loop that started it may call it, one call at a time:
the calls that talk to the broker take turns on an asyncio.Lock (a
``getmany`` holds it for at most its ``timeout_ms``), as one thread at a time
uses a sync Consumer; ``stop()`` ends a ``getmany`` in progress at once (it
returns {}) rather than wait for its turn. Delivery is at least once, as the
sync consumer's.

Its coroutines awaited on another loop (a second ``asyncio.run``) raise
WrongEventLoopError at once (client/aio/event_loop.py), with a group or without:
a member's heartbeat task belongs to the first loop, so on another its
partitions would move to other members while it went on reading them; a
consumer without a group is refused alike, one rule for every asyncio client
(its lock and its admin belong to the first loop too). ``stop()`` there, once
that loop is closed or not running, closes the sockets without the leave or
the last commit (none can be awaited there) and raises the error saying so.
The methods that are not coroutines (``subscribe``, ``assign``, ``seek``,
``assignment``) need no loop and are not checked.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import NamedTuple

from plinth import limits, protocol
from plinth.client.aio.admin import AIOAdmin
from plinth.client.aio.connection import AIOConnection
from plinth.client.aio.event_loop import (check_loop, refuse_release_while_running,
                                          wrong_loop_error)
from plinth.client.aio.group_membership import AIOGroupMembership
from plinth.client.async_commits import AsyncCommit, AsyncCommits
from plinth.client.arguments import (checked_listener, checked_ms, checked_str,
                                     checked_topic_partitions)
from plinth.client.connection import broker_address
from plinth.client.consumer import (OffsetAndTimestamp, check_callables, check_options,
                                    checked_group, checked_max_records, checked_subscription)
from plinth.client.consumer_base import (OMITTED, ConsumerBase, checked_partitions,
                                         checked_seek, checked_times, checked_tp_of,
                                         checked_tps, group_option)
from plinth.client.fetcher import Fetcher, TopicPartition
from plinth.client.kafka_option_names import kafka_option_names
from plinth.errors import BrokerError, ClientError, ClosedError
from plinth.format.record_batch import ConsumerRecord

log = logging.getLogger(__name__)

__all__ = ["AIOConsumer", "ConsumerRebalanceListener", "OffsetAndTimestamp", "TopicPartition"]


class ConsumerRebalanceListener:
    """aiokafka's listener: subclass it and give it to ``subscribe``. Either method may
    be a coroutine function. Called from ``getmany`` on the consumer's task."""

    def on_partitions_revoked(self, revoked: set[TopicPartition]):
        """Before the partitions go (their positions were auto-committed)."""

    def on_partitions_assigned(self, assigned: set[TopicPartition]):
        """After the partitions came, each at its committed offset or reset."""


class _Leaving(NamedTuple):
    """A membership unsubscribe() dropped: what its leave commits and revokes."""

    membership: AIOGroupMembership
    positions: dict          # (topic, partition) -> the offset after the last handed out
    owned: set               # TopicPartitions it owned
    on_revoke: object        # the callback of its subscription (a later one may replace it)


async def _call(callback, partitions: set[TopicPartition]) -> None:
    """A rebalance callback, awaited if it is a coroutine."""
    if callback is None:
        return
    outcome = callback(partitions)
    if inspect.isawaitable(outcome):
        await outcome


@kafka_option_names
class AIOConsumer(ConsumerBase):
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
        """The sync Consumer's options, checked alike; nothing connects until
        ``start()``. Any thread."""
        group = group_option(group, group_id)
        # A group's topics may come later, from subscribe() (aiokafka's way): start() checks.
        check_options(topics, auto_offset_reset, fetch_max_bytes, fetch_max_wait_ms, None,
                      request_timeout_ms=request_timeout_ms,
                      consumer_timeout_ms=consumer_timeout_ms, max_poll_records=max_poll_records,
                      enable_auto_commit=enable_auto_commit,
                      auto_commit_interval_ms=auto_commit_interval_ms,
                      session_timeout_ms=session_timeout_ms, group_assignor=group_assignor,
                      max_poll_interval_ms=max_poll_interval_ms,
                      direct_to_shards=direct_to_shards)
        check_callables(key_deserializer, value_deserializer, on_assign, on_revoke)
        if group is not None:
            checked_group(group)
        self.auto_offset_reset = auto_offset_reset
        self.request_timeout_ms = request_timeout_ms
        self.consumer_timeout_ms = consumer_timeout_ms
        self.max_poll_records = max_poll_records
        self.group = group
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_s = auto_commit_interval_ms / 1000
        self.session_timeout_ms = session_timeout_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.group_assignor = group_assignor
        self._address = broker_address(broker, curve_key_file, curve_server_key_file,
                                       bootstrap_servers)
        self._fetch_options = dict(
            fetch_max_bytes=fetch_max_bytes, fetch_max_wait_ms=fetch_max_wait_ms,
            request_timeout_ms=request_timeout_ms, reset_out_of_range=auto_offset_reset != "none",
            key_deserializer=key_deserializer, value_deserializer=value_deserializer)
        self._direct = direct_to_shards
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._subscription: list[str] | None = list(topics) if topics else None
        # subscribe's topics, applied or not (``_subscription`` is the one not applied
        # yet); None after assign.
        self._subscribed: list[str] | None = self._subscription
        # assign()'s partitions before start(), which assigns them; None: no assign().
        self._assigned: list[tuple[str, int]] | None = None
        # Partition counts learned with the subscription: partitions_for_topic's answers.
        self._partition_counts: dict[str, int] = {}
        self._membership: AIOGroupMembership | None = None
        # The membership unsubscribe() dropped, with what it owned and had handed out:
        # its commit, on_revoke and leave are awaited by the next turn (_finish_leaving).
        self._leaving: _Leaving | None = None
        self._leave_task: asyncio.Task | None = None   # _leave_in_turn, once unsubscribed
        # The partitions a rebalance is revoking, while its commit and on_revoke run.
        self._revoking: set[TopicPartition] = set()
        self._commits: AsyncCommits | None = None   # start()'s
        self._auto_commit_sent: AsyncCommit | None = None   # the last auto-commit sent
        self._last_commit_s = time.monotonic()
        self._committed_positions: dict[TopicPartition, int] = {}
        self._fetcher: Fetcher | None = None
        self._closed = False
        self._closed_why = "stop() was called"   # what ClosedError says once _closed
        self._stopping = False   # stop() began: a getmany in progress returns, new calls fail
        self._turn = asyncio.Lock()
        self._stop_task: asyncio.Task | None = None   # stop()'s work (_stop_in_task)
        self._loop: asyncio.AbstractEventLoop | None = None   # start()'s; its tasks run there

    # --- Lifetime (the task that owns the consumer) -------------------------------------

    async def start(self) -> None:
        """Connect; subscribe to the topics given (unknown topics fail here), or read the
        partitions an assign() before it gave. ClosedError after stop(), even one before
        start(): a stopped consumer stays stopped."""
        if self._closed:
            raise self._closed_error()
        if self._fetcher is not None:
            raise ValueError("AIOConsumer.start() was already called")
        if self.group is not None and not self._subscription:
            raise ValueError("a consumer in a group needs topics: AIOConsumer('topic', "
                             "group=...) or subscribe() before start()")
        self._loop = asyncio.get_running_loop()
        self._conn = AIOConnection(self._address, direct=self._direct)
        self._admin = AIOAdmin(broker=self._address, request_timeout_ms=self.request_timeout_ms)
        self._fetcher = Fetcher(self._conn, reset_position=self._reset_later,
                                **self._fetch_options)
        self._resets = self._position_resets(self._conn)
        self._commits = AsyncCommits(self._conn, request_timeout_ms=self.request_timeout_ms)
        if self._assigned is not None:
            self._fetcher.assign(self._assigned)
        try:
            async with self._turn:
                await self._apply_subscription()
        except BaseException as exc:   # an unknown topic, a timeout: leave no socket open
            self._closed = True
            self._closed_why = f"start() failed ({type(exc).__name__}: {exc})"
            self._conn.close()
            await self._admin.close()
            raise

    async def __aenter__(self) -> "AIOConsumer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Commit (with auto-commit), leave the group, close the sockets. A getmany
        in progress in another task returns {} at once (getone raises ClosedError,
        ``async for`` ends), as aiokafka's stop() ends it: else stop() would wait for
        its whole timeout_ms for the turn. On another loop than start()'s: see
        ``_release_elsewhere``. Any task on start()'s loop.

        The work runs in a task of its own (``_stop_in_task``), which stop() awaits
        shielded: cancelling stop() (``wait_for(stop(), t)`` running out, a task
        cancelled inside ``async with``) cancels only the wait, and the stop goes on to
        the end by itself; a later stop() awaits the same task. Cut short, the leave
        left a member heartbeating for as long as the process ran, holding its
        partitions, and a later stop() found the consumer closed and did nothing."""
        if self._closed:
            return
        if self._fetcher is None:   # never started (a failed start() set _closed)
            self._closed = True
            return
        if asyncio.get_running_loop() is not self._loop:
            self._release_elsewhere()
        if self._stop_task is None:
            self._stopping = True
            self._conn.wake()
            self._stop_task = self._loop.create_task(
                self._stop_in_task(), name=f"plinth-aio-consumer-stop-{self.group}")
            self._stop_task.add_done_callback(self._stopped)
        await asyncio.shield(self._stop_task)

    def _stopped(self, _task: asyncio.Task) -> None:
        """The stop task's end. One cancelled before its first step (asyncio.run ending
        right after stop() began) never ran its ``finally``: release all here."""
        if not self._closed:
            self._closed = True
            self._end_now()

    async def _stop_in_task(self) -> None:
        """stop()'s work: the last commit and the leave, in turn, then the release of the
        rest (``_end_now``). Cancelled itself (asyncio.run ending cancels the tasks left),
        it still ends every task and socket of the consumer, at once: the coordinator
        then expires the member after session_timeout_ms."""
        try:
            async with self._turn:
                await self._finish_leaving()
                if self._membership is not None:
                    if self.enable_auto_commit:
                        await self._commit_quietly()
                    await self._membership.close()
        finally:
            self._closed = True
            ending = self._end_now()
            if ending:   # cancelled just now: they end on the loop's next turns
                await asyncio.wait(ending)

    def _end_now(self) -> set[asyncio.Task]:
        """Release what the stop has not, without awaiting (no cancellation can cut it
        short): the heartbeat tasks and the leave task cancelled, the sockets closed.
        The tasks cancelled that have yet to end."""
        ending = set()
        memberships = [self._membership, self._leaving and self._leaving.membership]
        for membership in memberships:
            if membership is not None:
                ending.add(membership.end_now())
        if self._leave_task is not None and not self._leave_task.done():
            self._leave_task.cancel()   # it waits for the turn, or its leave was cut short
            ending.add(self._leave_task)
        self._conn.close()
        self._admin.release()
        ending.discard(None)
        return ending

    def _release_elsewhere(self) -> None:
        """stop() awaited on another loop than start()'s, where neither the last commit
        nor the leave can be awaited: close the sockets, then raise WrongEventLoopError
        saying what was not done. Raises it, closing nothing, while start()'s loop runs
        in another thread (its tasks still use the sockets)."""
        refuse_release_while_running(self._loop, "AIOConsumer", "stop")
        self._closed = True
        outcome = "Its sockets are closed"
        if self._leaving is not None:   # unsubscribed: its leave was not awaited either
            self._leaving.membership.abandon()
        if self._membership is not None:
            member_id, _ = self._membership.identity()
            self._membership.abandon()
            outcome += (f"; member {member_id!r} did not leave group {self.group!r} (its "
                        f"partitions move to other members once session_timeout_ms="
                        f"{self.session_timeout_ms} passes) and did not commit the records "
                        f"handed out since its last commit (they will be read again)")
        self._conn.close()
        self._admin.release()
        raise wrong_loop_error("AIOConsumer", "stop", self._loop, outcome)

    def _closed_error(self) -> ClosedError:
        """The error of every call but stop() once the consumer is closed, saying why
        (a failed start() was else told only as "closed" by the calls after it)."""
        return ClosedError(f"consumer is closed: {self._closed_why}; an AIOConsumer cannot "
                           f"start again, make a new one")

    def _check_not_closed(self) -> None:
        """Closed or stopping: ClosedError saying which. The calls allowed before start()."""
        if self._closed:
            raise self._closed_error()
        if self._stopping:
            raise ClosedError("consumer is stopping: stop() was called")

    def _check_open(self) -> None:
        self._check_not_closed()
        if self._fetcher is None:
            raise ClosedError("consumer is not started: await consumer.start() first")

    def _check_call(self, call: str) -> None:
        """A coroutine's first check: open, and on start()'s loop (else
        WrongEventLoopError). Before the turn, which belongs to that loop too."""
        self._check_open()
        check_loop(self._loop, "AIOConsumer", call)

    # --- Assignment and position ----------------------------------------------------------

    def subscribe(self, topics: list[str] | None = None, pattern: str | None = None,
                  listener: ConsumerRebalanceListener | None = None) -> None:
        """Read these topics: all their partitions, or with a group the member's share;
        takes effect in ``start()`` or the next ``getmany``. ``listener``: the group's
        rebalance callbacks. ``topics`` is a list of names (TypeError for a single str);
        topic patterns are not supported (TypeError naming ``pattern``: ``topics`` has
        a default only so that aiokafka's ``subscribe(pattern=...)`` is told that). A
        group member subscribing again leaves first, as ``unsubscribe`` (its callbacks,
        not the new listener's, hear its partitions revoked), and joins with the new
        topics as a new member. Any task on the loop."""
        if self._closed:
            raise self._closed_error()
        topics = checked_subscription(topics, pattern)
        checked_listener("listener", listener)
        if self._membership is not None:
            self.unsubscribe()
        if listener is not None:
            self._on_assign = listener.on_partitions_assigned
            self._on_revoke = listener.on_partitions_revoked
        self._subscription = self._subscribed = topics
        self._assigned = None

    def unsubscribe(self) -> None:
        """Drop the subscription and every partition, at once (aiokafka's call, a plain
        one too). A group member's leave runs in a task of its own, as aiokafka's, once
        it has the turn (a ``getmany`` in progress ends its turn first): it commits what
        it handed out (with auto-commit), calls on_revoke with the partitions it owned,
        then leaves, so they move to other members; a later ``subscribe`` joins as a
        new member, after that (the next ``getmany`` or ``stop()`` awaits the leave if
        it has not run yet). Without a group, what ``assign([])`` does. Any task on
        start()'s loop; before start() it only drops the subscription given."""
        if self._closed:
            raise self._closed_error()
        self._subscription = self._subscribed = None
        self._assigned = None
        if self._fetcher is None:
            return
        self._check_call("unsubscribe")
        if self._membership is not None:
            owned = set(self._fetcher.partitions) - self._revoking   # (on_revoke heard those)
            self._leaving = _Leaving(self._membership, self._positions(owned), owned,
                                     self._on_revoke)
            self._membership = None
            self._committed_positions.clear()
            if self._leave_task is None or self._leave_task.done():
                self._leave_task = self._loop.create_task(self._leave_in_turn())
        self._fetcher.assign([])

    async def _leave_in_turn(self) -> None:
        """The leave task: unsubscribe()'s leave as soon as the turn is free, so that
        the partitions move to other members without waiting for a getmany."""
        async with self._turn:
            if self._closed:
                return
            try:
                await self._finish_leaving()
            except Exception:   # no caller to raise to: an on_revoke's error, logged
                log.exception("group %s: leaving after unsubscribe()", self.group)

    async def _finish_leaving(self) -> None:
        """The leave unsubscribe() began: commit (with auto-commit), on_revoke, leave.
        Turn held."""
        leaving, self._leaving = self._leaving, None
        if leaving is None:
            return
        try:
            if self.enable_auto_commit and leaving.positions:
                await self._commit_as(leaving.membership, leaving.positions)
            if leaving.owned:
                await _call(leaving.on_revoke, leaving.owned)
        finally:
            await leaving.membership.close()

    async def _commit_as(self, membership: AIOGroupMembership, positions: dict) -> None:
        """Commit ``positions`` as ``membership``'s member, which the consumer no longer
        has; a failure is logged (the records will be read again)."""
        try:
            for part in protocol.commit_offsets_parts(positions):
                await self._request_commit(membership, part)
        except (BrokerError, ClientError) as exc:
            log.warning("group %s: the commit before leaving failed: %s", self.group, exc)

    def subscription(self) -> set[str]:
        """The topics of the last ``subscribe`` (or the constructor's), applied or not;
        an empty set if there is none or ``assign`` replaced it (aiokafka's answers).
        Any task; before start() too."""
        return set(self._subscribed or ())

    async def topics(self) -> set[str]:
        """The names of every topic the broker has (aiokafka's call; the consumer's
        AIOAdmin.list_topics). Any task on start()'s loop."""
        self._check_call("topics")
        return set(await self._admin.list_topics())

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The partition ids of a topic of the subscription, as learned when it was
        applied; None for another topic, or before then: like aiokafka's, it asks
        nothing of the broker and knows only the metadata the consumer has. Any task."""
        count = self._partition_counts.get(checked_str("topic", topic))
        return None if count is None else set(range(count))

    async def _apply_subscription(self) -> None:
        """Ask the partition counts of a new subscription; join the group. Turn held.
        A subscription that fails (an unknown topic) stays, and fails each getmany until
        subscribe() or assign() replaces it, as the sync subscribe() raises: dropped, the
        old assignment went on with no notice after one error."""
        topics = self._subscription
        if not topics:
            self._subscription = None
            return
        counts = [await self._admin.partition_count(t) for t in topics]   # unknown topics fail here
        if self._subscription is not topics:
            return   # replaced while the counts were awaited: the newer one applies, or none
        self._subscription = None
        self._partition_counts.update(zip(topics, counts))
        if self.group is None:
            self._fetcher.assign([(t, p) for t, count in zip(topics, counts) for p in range(count)])
            return
        if self._membership is not None:
            raise AssertionError(f"group {self.group!r}: a second membership would leak the "
                                 f"first (unsubscribe() hands it to _leaving)")
        self._membership = AIOGroupMembership(
            self._address, self.group, topics, session_timeout_ms=self.session_timeout_ms,
            assignor=self.group_assignor, request_timeout_ms=self.request_timeout_ms,
            max_poll_interval_ms=self.max_poll_interval_ms)
        self._membership.start()

    def assign(self, partitions: list[tuple[str, int]]) -> None:
        """Read exactly these (topic, partition) pairs; not for group members. Before
        start() too, as aiokafka's ``assign([tp]); await start()``: start() assigns
        them (as it applies a subscribe() before it). Any task on the loop."""
        self._check_not_closed()
        partitions = checked_topic_partitions("assign", partitions)
        if self.group is not None:
            raise ValueError(f"consumer is in group {self.group!r}: partitions come from the "
                             f"group; use subscribe")
        self._subscription = None   # replaces one not applied yet (or failing), as it replaces
        self._subscribed = None
        if self._fetcher is None:
            self._assigned = partitions
            return
        self._fetcher.assign(partitions)

    def assignment(self) -> set[TopicPartition]:
        """The partitions read; before start(), those an assign() gave (aiokafka's)."""
        self._check_not_closed()
        if self._fetcher is None:
            return {TopicPartition(*tp) for tp in self._assigned or ()}
        return set(self._fetcher.partitions)

    def seek(self, topic, partition=OMITTED, offset=OMITTED) -> None:
        """Read ``topic``/``partition`` from ``offset`` next (buffered records dropped):
        ``seek(topic, partition, offset)``, or aiokafka's ``seek(TopicPartition,
        offset)``."""
        self._check_open()
        tp, offset = checked_seek(topic, partition, offset)
        self._fetcher.seek(tp, offset)

    async def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        self._check_call("seek_to_beginning")
        for tp in checked_tps("seek_to_beginning", partitions) or list(self._fetcher.partitions):
            self.seek(*tp, (await self._admin.list_offsets(*tp, require_listed=True)).start_offset)

    async def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        self._check_call("seek_to_end")
        for tp in checked_tps("seek_to_end", partitions) or list(self._fetcher.partitions):
            self.seek(*tp, (await self._admin.list_offsets(*tp)).end_offset)

    async def beginning_offsets(self, partitions: list[tuple[str, int]]
                                ) -> dict[TopicPartition, int]:
        """Consumer.beginning_offsets: each partition's first offset (aiokafka's call)."""
        self._check_call("beginning_offsets")
        return {tp: (await self._admin.list_offsets(*tp, require_listed=True)).start_offset
                for tp in checked_partitions("beginning_offsets", partitions)}

    async def end_offsets(self, partitions: list[tuple[str, int]]) -> dict[TopicPartition, int]:
        """Consumer.end_offsets: each partition's high watermark (aiokafka's call)."""
        self._check_call("end_offsets")
        return {tp: (await self._admin.list_offsets(*tp)).end_offset
                for tp in checked_partitions("end_offsets", partitions)}

    async def position(self, topic, partition: int = OMITTED) -> int:
        """The offset of the next record handed out (reset as auto_offset_reset says
        if there is none yet): ``position(topic, partition)``, or aiokafka's
        ``position(TopicPartition)``."""
        self._check_call("position")
        tp = checked_tp_of("position", topic, partition)
        state = self._fetcher.state(*tp)
        if state.position is None:
            await self._reset(tp)
        return state.position

    async def offsets_for_times(self, timestamps: dict[tuple[str, int], int]
                                ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """Consumer.offsets_for_times: the first record at or after each time."""
        self._check_call("offsets_for_times")
        found = {}
        for (topic, partition), timestamp_ms in checked_times(timestamps).items():
            info = await self._admin.list_offsets(topic, partition, timestamp_ms)
            found[TopicPartition(topic, partition)] = (
                None if info.found_offset == protocol.OFFSET_NONE
                else OffsetAndTimestamp(info.found_offset, info.found_timestamp_ms))
        return found

    async def _reset(self, tp: TopicPartition) -> None:
        """Give ``tp`` a position as ``auto_offset_reset`` says, unless it got one
        (a seek) while the offsets were asked."""
        self._refuse_without_reset(tp)
        earliest = self.auto_offset_reset == "earliest"
        info = await self._admin.list_offsets(tp.topic, tp.partition, require_listed=earliest)
        offset = info.start_offset if earliest else info.end_offset
        state = self._fetcher.partitions.get(tp)
        if state is not None and state.position is None:
            self._fetcher.seek(tp, offset)

    # --- Polling ----------------------------------------------------------------------------

    async def getmany(self, *partitions: tuple[str, int], timeout_ms: float = 0,
                      max_records: int | None = None
                      ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records ready within ``timeout_ms``, at most ``max_records`` of them
        (default max_poll_records): {TopicPartition: [ConsumerRecord]}; with
        ``partitions`` (aiokafka's form), only theirs (each assigned, else
        PartitionNotAssignedError; the others' records stay buffered). ``timeout_ms``
        and ``max_records`` are checked as Consumer.poll checks them (``timeout_ms``
        0..CLIENT_OPTION_MS_MAX, None refused) and taken by keyword only, as
        aiokafka's. Any task on start()'s loop."""
        self._check_call("getmany")
        only = self._checked_only("getmany", partitions)
        checked_ms("timeout_ms", timeout_ms, 0)
        async with self._turn:
            out = await self._poll(timeout_ms,
                                   checked_max_records(max_records, self.max_poll_records),
                                   only)
        partitions = self._fetcher.partitions
        for tp, records in out.items():
            partitions[tp].position = records[-1].offset + 1
        return out

    async def getone(self, *partitions: tuple[str, int]) -> ConsumerRecord:
        """The next record (with ``partitions``, aiokafka's form: of one of them),
        awaited for as long as it takes."""
        self._check_call("getone")   # else the refusal would name getmany
        self._checked_only("getone", partitions)
        while True:
            out = await self.getmany(*partitions,
                                     timeout_ms=limits.CONSUMER_ITERATION_POLL_SLICE_MS,
                                     max_records=1)
            for records in out.values():
                return records[0]

    def __aiter__(self) -> "AIOConsumer":
        return self

    async def __anext__(self) -> ConsumerRecord:
        """Next record; StopAsyncIteration after consumer_timeout_ms without one, or
        once the consumer is stopped."""
        if self._fetcher is not None and not self._closed:
            check_loop(self._loop, "AIOConsumer", "__anext__")   # else it names getmany
        deadline = time.monotonic() + self.consumer_timeout_ms / 1000
        while not (self._closed or self._stopping):
            remaining_ms = min((deadline - time.monotonic()) * 1000,
                               limits.CONSUMER_ITERATION_POLL_SLICE_MS)
            try:
                out = await self.getmany(timeout_ms=max(0.0, remaining_ms), max_records=1)
            except ClosedError:
                if self._closed or self._stopping:   # stopped by another task meanwhile
                    break
                raise
            for records in out.values():
                return records[0]
            if time.monotonic() >= deadline:
                break
        raise StopAsyncIteration

    def _checked_only(self, call: str, partitions: tuple) -> set[TopicPartition] | None:
        """getmany's and getone's ``*partitions``: None (every partition) or the set of
        those given, each checked and assigned. A number among them is most likely
        a timeout given by position, as this getmany took it before aiokafka's form."""
        if not partitions:
            return None
        for each in partitions:
            if isinstance(each, (int, float)):
                raise TypeError(f"{call}({each!r}): give timeout_ms by keyword "
                                f"({call}(timeout_ms={each!r})); its positional arguments "
                                f"are the partitions to read, as aiokafka's")
        only = set(checked_tps(call, partitions))
        for tp in only:
            self._fetcher.state(*tp)   # PartitionNotAssignedError, naming those that are
        return only

    def _take_only(self, max_records: int, only: set[TopicPartition] | None
                   ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """``_take_records``, of the partitions in ``only`` (None: all). The others are
        marked paused for the take alone, which skips a paused partition's buffered
        records and keeps them; no await comes between, so no fetch sees the mark."""
        if only is None:
            return self._take_records(max_records)
        held = [state for tp, state in self._fetcher.partitions.items()
                if tp not in only and not state.paused]
        for state in held:
            state.paused = True
        try:
            return self._take_records(max_records)
        finally:
            for state in held:
                state.paused = False

    async def _poll(self, timeout_ms: float, max_records: int,
                    only: set[TopicPartition] | None = None
                    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Consumer._poll, awaiting the socket; records of ``only`` (None: of every
        partition). Turn held; positions are the caller's."""
        self._check_open()
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            if self._leaving is not None:   # before a new subscription joins
                await self._finish_leaving()
            if self._subscription is not None:
                await self._apply_subscription()
            if self._membership is not None:
                self._membership.note_poll()
                self._membership.raise_if_refused()
                await self._rebalance()
            if self._membership is not None:   # (a callback may have unsubscribed)
                self._auto_commit()
            self._resets.expire()
            self._expire_commits()
            self._fetcher.send_fetches()
            out = self._take_only(max_records, only)
            remaining_ms = (deadline - time.monotonic()) * 1000
            if out or remaining_ms <= 0 or self._stopping:   # stop() waits for the turn
                return out
            if self._membership is not None:   # wake up to apply a new assignment
                remaining_ms = min(remaining_ms, limits.CONSUMER_GROUP_POLL_SLICE_MS)
            for wake_s in (self._fetcher.next_retry_s(), self._resets.next_event_s(),
                           self._commits.next_expiry_s()):
                if wake_s is not None:   # to ask again, or end what timed out
                    remaining_ms = min(remaining_ms, (wake_s - time.monotonic()) * 1000)
            await self._conn.wait_async(max(1.0, remaining_ms))
            got = self._conn.recv(0)
            while got is not None:
                self._on_reply(*got)
                got = self._conn.recv(0)
            if self._stopping:   # stop() woke this wait: it waits for the turn
                return {}

    # --- Groups: rebalance and commits ----------------------------------------------------

    async def _rebalance(self) -> None:
        """Apply the coordinator's newest assignment: revoke first (lost partitions
        too, see ``_lost_positions``), then add. An unsubscribe() (or subscribe()) while
        it awaits, from a callback or another task, ends it: the partitions are the
        leave's to drop."""
        membership = self._membership
        change = self._assignment_change()
        if change is None:
            return
        revoked, added, lost = change
        if revoked:
            self._revoking = revoked
            try:
                await self._commit_revoked(revoked, lost)
                await _call(self._on_revoke, revoked)
            finally:
                self._revoking = set()
            if self._membership is not membership:
                return
            for tp in revoked:
                self._fetcher.remove(tp)
        if added:
            committed = await self._fetch_committed()
            if self._membership is not membership:
                return
            for tp in added:
                self._fetcher.add(tp, committed.get(tp))
                if tp in committed:
                    self._committed_positions[tp] = committed[tp]
            await _call(self._on_assign, added)
            if self._membership is not membership:
                return
        membership.set_owned(set(self._fetcher.partitions))

    async def _commit_revoked(self, revoked: set, lost: bool) -> None:
        if not self.enable_auto_commit:
            return
        if not lost:
            await self._commit_quietly(revoked)
            return
        try:
            positions = self._lost_positions(revoked, await self._fetch_committed())
            if positions:
                await self._commit(positions)
        except (BrokerError, ClientError) as exc:
            log.warning("group %s: commit of lost partitions failed: %s", self.group, exc)

    async def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Commit positions (default: of every record handed out so far) and await it;
        retried while the group's coordinator is unavailable, up to request_timeout_ms."""
        self._check_call("commit")
        async with self._turn:
            await self._commit(offsets)

    async def _commit(self, offsets) -> None:
        for part in self._offsets_to_commit(offsets).parts():
            try:
                await self._request_commit(self._membership, part)
            except BrokerError as exc:
                self._check_membership(exc)
                raise
            self._note_committed(part)

    async def _request_commit(self, membership: AIOGroupMembership, part: dict) -> None:
        """Commit one part (of ``commit_offsets_parts``) as ``membership``'s member, retried
        while the coordinator is unavailable; each try says the member's identity then."""
        await self._conn.request_retrying_async(
            lambda request_id: self._encode_commit(request_id, part, membership),
            self.request_timeout_ms)

    async def _commit_quietly(self, partitions=None) -> None:
        try:
            await self._commit(self._positions(partitions))
        except (BrokerError, ClientError) as exc:
            log.warning("group %s: commit failed: %s", self.group, exc)

    async def _fetch_committed(self) -> dict[TopicPartition, int]:
        view, _ = await self._conn.request_retrying_async(
            lambda request_id: protocol.encode_group_request(request_id, "fetchOffsets", self.group),
            self.request_timeout_ms)
        return {TopicPartition(*tp): offset for tp, offset in view.committed.items()}

    async def committed(self, topic, partition: int = OMITTED) -> int | None:
        """The group's committed offset for a partition, or None:
        ``committed(topic, partition)``, or aiokafka's ``committed(TopicPartition)``."""
        self._check_call("committed")
        tp = checked_tp_of("committed", topic, partition)
        if self.group is None:
            raise ValueError("committed() needs a consumer group")
        async with self._turn:
            return (await self._fetch_committed()).get(tp)
