"""AIOProducer: the Producer for asyncio, in aiokafka's conventions.

Client side, on the caller's event loop: no thread. ``send`` appends the
record to its partition's open batch exactly as the sync Producer does (the
same C fast path and accumulator, client/producer.py RecordSending) and
returns an awaitable future of its RecordMetadata; one task per producer, the
sender task, drives the sync producer's sender logic (client/sender.py
SenderCore: idempotence, in-order retries, sequence numbers, timeouts) and
awaits its sockets on the event loop (client/aio/connection.py).

    async with AIOProducer(broker="tcp://127.0.0.1:7400", linger_ms=5) as producer:
        future = await producer.send("orders", b"hello", key=b"customer-1")
        print(await future)   # RecordMetadata(topic, partition, offset)
        print(await producer.send_and_wait("orders", b"again"))

Options, defaults and errors are the sync Producer's. What differs:

- ``await start()`` first (or ``async with``): a send before it raises
  ClosedError. ``await stop()`` delivers everything sent before it (waiting up
  to ``timeout`` seconds, None: until done); records still unacknowledged then
  fail with ClosedError.
- A topic's partition count is awaited on its first send, and again when due
  (client/partition_counts.py), one question per topic at a time.
- A full buffer (``buffer_memory``) makes ``send`` await room, up to
  ``max_block_ms``, instead of blocking the thread; then ProducerBufferFullError
  (a PlinthTimeoutError, as the sync producer raises).

Tasks. Any task on the loop that started the producer may call ``send``,
``send_and_wait`` and ``flush``; ``start`` and ``stop`` once each. Awaited on
another loop (a second ``asyncio.run``, in this thread or another while the
producer's loop runs), each raises WrongEventLoopError at once, naming the call
(client/aio/event_loop.py): no task there would send the record. ``stop()`` there,
once the producer's own loop is closed or not running, closes the sockets and
fails the futures of every record not acknowledged with that error, then raises
it saying how many batches failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio import get_running_loop

from plinth import limits
from plinth.client.accumulator import RecordAccumulator
from plinth.client.aio.admin import AIOAdmin
from plinth.client.arguments import checked_wait_s
from plinth.client.aio.connection import AIOConnection
from plinth.client.aio.event_loop import (check_loop, on_loop_thread,
                                          refuse_release_while_running, wrong_loop_error)
from plinth.client.aio.futures import AIOBatchResult, AIORecordFuture
from plinth.client.connection import broker_address
from plinth.client.futures import RecordMetadata
from plinth.client.kafka_option_names import kafka_option_names
from plinth.client.partition_counts import PartitionCounts
from plinth.client.producer import (RecordSending, _as_topic, checked_options,
                                    checked_serializers)
from plinth.client.sender import SenderCore
from plinth.errors import (ClosedError, PartitionOutOfRangeError, PlinthError, PlinthTimeoutError,
                           ProducerBufferFullError)
from plinth.wakeup import Wakeup

log = logging.getLogger(__name__)


class _Records(RecordSending):
    """The sync producer's way into the accumulator, with the partition counts the
    AIOProducer awaited before (``partitions_for`` never asks the broker here: a count
    it finds due leaves ``partition_counts``, and the next send awaits it)."""

    def __init__(self, accumulator: RecordAccumulator, counts: PartitionCounts,
                 key_serializer, value_serializer):
        self._accumulator = accumulator
        self._append_fast = accumulator.append_fast
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._closed = False
        self.counts = counts
        # The counts a record may be placed with now, for send's per-record look-up.
        self.partition_counts: dict[str, int] = counts.current
        has_serializers = key_serializer is not None or value_serializer is not None
        self._set_fast_path(None if has_serializers else accumulator.appender)

    def partitions_for(self, topic: str) -> int:
        self.counts.due(topic)
        return self.counts.known(topic)

    def _asked_again(self, topic: str) -> bool:
        """Never here: AIOProducer.send awaits the question, then places the record again."""
        self.counts.missing(topic)
        return False


@kafka_option_names
class AIOProducer:
    def __init__(self, *, broker: str | None = None,
                 bootstrap_servers: str | list[str] | None = None, acks: int | str = "all",
                 linger_ms: float = limits.PRODUCER_LINGER_MS_DEFAULT,
                 batch_bytes_max: int = limits.PRODUCER_BATCH_BYTES_DEFAULT,
                 buffer_memory: int = limits.PRODUCER_BUFFER_BYTES_MAX,
                 max_block_ms: float = limits.PRODUCER_MAX_BLOCK_MS_DEFAULT,
                 request_timeout_ms: float = limits.CLIENT_REQUEST_TIMEOUT_MS_DEFAULT,
                 max_in_flight_requests_per_connection: int = limits.PRODUCER_REQUESTS_IN_FLIGHT_MAX,
                 enable_idempotence: bool | None = None,
                 delivery_timeout_ms: float = limits.PRODUCER_DELIVERY_TIMEOUT_MS_DEFAULT,
                 retry_backoff_ms: float = limits.PRODUCER_RETRY_BACKOFF_MS_DEFAULT,
                 retry_backoff_max_ms: float = limits.PRODUCER_RETRY_BACKOFF_MAX_MS_DEFAULT,
                 key_serializer=None, value_serializer=None,
                 curve_key_file: str | None = None, curve_server_key_file: str | None = None,
                 direct_to_shards: bool = True, compression_type: str | None = None,
                 metadata_max_age_ms: float = limits.PRODUCER_METADATA_MAX_AGE_MS_DEFAULT):
        """The sync Producer's options (client/producer.py), checked alike; nothing
        connects until ``start()``. Any thread. ``enable_idempotence``: None (the
        default) is on with acks="all", off with acks=0 or 1; True with acks=0 or 1
        raises ValueError, as aiokafka's does."""
        self._acks, self._codec, idempotent = checked_options(
            acks, compression_type, enable_idempotence=enable_idempotence,
            batch_bytes_max=batch_bytes_max, linger_ms=linger_ms,
            buffer_memory=buffer_memory, max_block_ms=max_block_ms,
            request_timeout_ms=request_timeout_ms,
            max_in_flight_requests_per_connection=max_in_flight_requests_per_connection,
            delivery_timeout_ms=delivery_timeout_ms, retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms, direct_to_shards=direct_to_shards,
            metadata_max_age_ms=metadata_max_age_ms)
        self._metadata_max_age_ms = metadata_max_age_ms
        self._address = broker_address(broker, curve_key_file, curve_server_key_file,
                                       bootstrap_servers)
        self._options = dict(
            linger_ms=linger_ms, batch_bytes_max=batch_bytes_max, buffer_memory=buffer_memory,
            request_timeout_ms=request_timeout_ms,
            in_flight_max=max_in_flight_requests_per_connection, idempotent=idempotent,
            delivery_timeout_ms=delivery_timeout_ms, retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms, direct_to_shards=direct_to_shards)
        self._serializers = checked_serializers(key_serializer, value_serializer)
        self.max_block_s = max_block_ms / 1000
        self._records: _Records | None = None
        self._loop: asyncio.AbstractEventLoop | None = None   # start()'s; its tasks run there
        self._task: asyncio.Task | None = None
        self._abort = False
        self._room = asyncio.Event()
        self._room_waiters = 0
        self._acks0_settled = asyncio.Event()   # set (and replaced) as acks=0 requests settle
        self._sender_due = False   # the accumulator woke the sender since send last yielded
        # The question of a topic's partition count in flight, which its senders share.
        self._asking: dict[str, asyncio.Task] = {}

    # --- Lifetime (the task that owns the producer) ------------------------------------

    async def start(self) -> None:
        """Connect and start the sender task on the running loop. ClosedError after
        stop(), as AIOConsumer's: a stopped producer stays stopped."""
        if self._records is not None and self._records._closed:
            raise ClosedError("producer is stopped: a stopped AIOProducer cannot start again; "
                              "make a new one")
        if self._task is not None:
            raise ValueError("AIOProducer.start() was already called")
        o = self._options
        # Its one call, a new topic's partition count, is awaited in send(): bounded by
        # max_block_ms too, as Kafka bounds send()'s wait for metadata (at least the 1 ms
        # an AIOAdmin takes: max_block_ms=0 still asks once).
        self._admin = AIOAdmin(broker=self._address,
                               request_timeout_ms=max(1, min(o["request_timeout_ms"],
                                                             self.max_block_s * 1000)))
        self._conn = AIOConnection(self._address, direct=o["direct_to_shards"])
        self._core = SenderCore(
            self._conn, self._acks, request_timeout_ms=o["request_timeout_ms"],
            in_flight_max=o["in_flight_max"], idempotent=o["idempotent"],
            delivery_timeout_ms=o["delivery_timeout_ms"], retry_backoff_ms=o["retry_backoff_ms"],
            retry_backoff_max_ms=o["retry_backoff_max_ms"], compression=self._codec)
        self._core.on_acks0_settled = self._wake_acks0_waiters
        self._wakeup = Wakeup()
        self._wakeup_fd_open = True
        # max_block_ms=0: the accumulator never blocks the loop; send awaits room.
        self._accumulator = RecordAccumulator(
            batch_bytes_max=o["batch_bytes_max"], linger_ms=o["linger_ms"],
            buffer_bytes_max=o["buffer_memory"], max_block_ms=0, wake=self._wake,
            future_type=AIORecordFuture, result_type=AIOBatchResult)
        self._core.accumulator = self._accumulator
        counts = PartitionCounts(self._accumulator, metadata_max_age_ms=self._metadata_max_age_ms)
        self._core.partition_counts = counts
        self._records = _Records(self._accumulator, counts, *self._serializers)
        self._loop = get_running_loop()
        self._task = self._loop.create_task(self._run(), name="plinth-aio-sender")

    async def __aenter__(self) -> "AIOProducer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def stop(self, timeout: float | None = None) -> None:
        """Deliver everything sent so far, then end the sender task, within ``timeout``
        s in all (None: until done); what is still unacknowledged fails with
        ClosedError. If records failed meanwhile (those too, or out of
        delivery_timeout_ms), one WARNING says how many and why; each record's future
        raises its own error. On another loop than start()'s: see
        ``_release_elsewhere``."""
        timeout = checked_wait_s("stop timeout", timeout)
        records = self._records
        if records is None or records._closed:
            return
        if get_running_loop() is not self._loop:
            self._release_elsewhere()
        records._closed = True
        deadline_s = None if timeout is None else time.monotonic() + timeout
        self._accumulator.refuse_appends()
        self._core.begin_close()   # what fails from now on is logged as it ends
        try:
            await self._flush(timeout)
        except PlinthTimeoutError:
            pass   # what is left fails in the sender task
        finally:
            # The flush's time is the stop's: what is left of it, not another timeout.
            await self._end_sender(None if deadline_s is None
                                   else max(0.0, deadline_s - time.monotonic()))
            await self._admin.close()

    def _release_elsewhere(self) -> None:
        """stop() awaited on another loop than start()'s. No task of the producer can run
        there, so nothing more is sent: close the sockets and fail every record not
        acknowledged (its future raises the error), then raise WrongEventLoopError
        saying how many batches failed. Raises it, releasing nothing, while start()'s
        loop runs in another thread (its sender task still uses the sockets)."""
        loop = self._loop
        refuse_release_while_running(loop, "AIOProducer", "stop")
        self._records._closed = True
        self._accumulator.refuse_appends()
        unacknowledged = self._accumulator.unacknowledged()
        partitions = sorted({f"{r.topic}[{r.partition}]" for r in unacknowledged})
        lost = (f"{len(unacknowledged)} batches not acknowledged (of {', '.join(partitions)}) "
                f"failed with this error: those sent may be stored, the rest were not"
                if unacknowledged else "no record was waiting for an acknowledgement")
        error = wrong_loop_error("AIOProducer", "stop", loop, f"Its sockets are closed; {lost}")
        self._abort = True   # should that loop ever run again, its sender task ends
        self._core._closing = True
        self._core.on_acks0_settled = None   # no flush awaits on this loop
        self._core._fail_all(error)
        self._wakeup_fd_open = False
        self._wakeup.close()
        self._conn.close()
        self._admin.release()
        raise error

    async def _end_sender(self, timeout: float | None) -> None:
        """Let the sender task finish what is in flight (up to ``timeout``), else end it
        now; a stop() that is itself cancelled ends it now too."""
        self._core._closing = True
        self._wake()
        try:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._abort = True
                self._wake()
                await asyncio.wait({self._task})
        except asyncio.CancelledError:
            self._abort = True
            self._wake()
            raise

    # --- Sending (any task on the loop) -------------------------------------------------

    async def send(self, topic: str, value=None, *, key=None, partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None,
                   timestamp_ms: int | None = None) -> AIORecordFuture:
        """Queue one record; returns an awaitable future of its RecordMetadata (aiokafka's
        send). The sync Producer.send's arguments, checks and errors."""
        records = self._records
        if records is None:
            raise ClosedError("producer is not started: await producer.start() first")
        # Before anything else, once per record (see on_loop_thread).
        if not on_loop_thread(self._loop):
            raise wrong_loop_error("AIOProducer", "send", self._loop)
        if topic.__class__ is not str or topic not in records.partition_counts:
            await self.partitions_for(topic)
        try:
            if headers is None:
                future = records.send(topic, value, key=key, partition=partition,
                                      timestamp_ms=timestamp_ms)
            else:
                future = records.send(topic, value, key=key, partition=partition,
                                      headers=headers, timestamp_ms=timestamp_ms)
        except ProducerBufferFullError:
            return await self._send_when_room(topic, value, key, partition, headers, timestamp_ms)
        except PartitionOutOfRangeError:
            if not records.counts.due(topic):
                raise
            return await self._send_after_asking(topic, value, key, partition, headers,
                                                 timestamp_ms)
        if self._sender_due:
            # A batch opened or was sealed: let the sender task run now, so that a task
            # sending in a tight loop does not keep every batch waiting until it awaits.
            self._sender_due = False
            await asyncio.sleep(0)
        return future

    async def _send_after_asking(self, topic, value, key, partition, headers, timestamp_ms):
        """A send that named a partition beyond the count known, once that count is due
        (the topic may have grown): await the count, then place the record once more, as
        the sync producer does (client/producer.py RecordSending._send_slow); a
        partition still beyond it raises PartitionOutOfRangeError."""
        await self.partitions_for(topic)
        try:
            return self._records.send(topic, value, key=key, partition=partition,
                                      headers=headers, timestamp_ms=timestamp_ms)
        except ProducerBufferFullError:
            return await self._send_when_room(topic, value, key, partition, headers, timestamp_ms)

    async def _send_when_room(self, topic, value, key, partition, headers, timestamp_ms):
        """Retry a send refused for buffer room each time the sender frees some, until
        max_block_ms; then the sync producer's error."""
        deadline = time.monotonic() + self.max_block_s
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise ProducerBufferFullError(
                    f"producer buffer full: {self._accumulator.appender.buffered_bytes} bytes "
                    f"of buffer_memory={self._accumulator.buffer_bytes_max} wait for "
                    f"acknowledgement; waited max_block_ms={self.max_block_s * 1000:.0f}")
            self._room_waiters += 1
            try:
                await asyncio.wait_for(self._room.wait(), remaining_s)
            except asyncio.TimeoutError:
                continue
            finally:
                self._room_waiters -= 1
            try:
                return self._records.send(topic, value, key=key, partition=partition,
                                          headers=headers, timestamp_ms=timestamp_ms)
            except ProducerBufferFullError:
                continue

    async def send_and_wait(self, topic: str, value=None, *, key=None,
                            partition: int | None = None,
                            headers: list[tuple[str, bytes]] | None = None,
                            timestamp_ms: int | None = None) -> RecordMetadata:
        """``await (await send(...))``: the record's RecordMetadata once acknowledged.
        send's arguments spelt out, so that a wrong one is refused naming send_and_wait.
        The loop is checked here too, so that the refusal names send_and_wait."""
        if self._records is not None and not on_loop_thread(self._loop):
            raise wrong_loop_error("AIOProducer", "send_and_wait", self._loop)
        return await (await self.send(topic, value, key=key, partition=partition,
                                      headers=headers, timestamp_ms=timestamp_ms))

    async def partitions_for(self, topic: str) -> int:
        """The topic's partition count, asked of the broker at the first send to it and
        again when due (client/partition_counts.py: a partition found missing, or
        ``metadata_max_age_ms``); tasks asking at once share one question. ClosedError
        once stop() began: a stopped producer asks the broker nothing (a send whose
        topic's count is due comes here first, and so raises it)."""
        records = self._records
        if records is None:
            raise ClosedError("producer is not started: await producer.start() first")
        check_loop(self._loop, "AIOProducer", "partitions_for")
        if records._closed:   # its admin is closed: asking would only log a failure
            raise ClosedError("producer is closed")
        topic = _as_topic(topic)
        if records.counts.due(topic):
            asking = self._asking.get(topic)
            if asking is None:
                asking = self._asking[topic] = self._loop.create_task(
                    self._ask_partition_count(topic), name=f"plinth-aio-partitions-{topic}")
                asking.add_done_callback(_retrieve_error)
            # Shielded: a sender cancelled while it waits leaves the others theirs.
            await asyncio.shield(asking)
        return records.counts.known(topic)

    async def _ask_partition_count(self, topic: str) -> None:
        """The one question of the topic's count in flight; PartitionCounts takes the
        answer (and raises the error of a first one that failed)."""
        try:
            try:
                count = await self._admin.partition_count(topic)
            except PlinthError as exc:
                self._records.counts.not_learned(topic, exc)
            else:
                self._records.counts.learned(topic, count)
        finally:
            del self._asking[topic]

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything queued and await every acknowledgement (or error);
        PlinthTimeoutError after ``timeout`` seconds (None: no limit); ClosedError
        once stop() began (the sender task is ending: nothing would send)."""
        timeout = checked_wait_s("flush timeout", timeout)
        if self._records is None:
            return
        check_loop(self._loop, "AIOProducer", "flush")
        if self._records._closed:
            raise ClosedError("producer is stopped: flush() has nothing to send with")
        await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> None:
        """Await every pending batch's outcome, then (acks=0) the shards' answers to every
        request sent (client/producer.py Producer.flush), within ``timeout`` s."""
        deadline_s = None if timeout is None else time.monotonic() + timeout
        pending = self._accumulator.begin_flush()
        try:
            waiting = [result.waiter() for result in pending if not result.done()]
            if waiting:
                _, late = await asyncio.wait(waiting, timeout=timeout)
                if late:
                    raise PlinthTimeoutError(f"flush did not finish within {timeout} s")
            mark = self._core.acks0_requests_sent
            while not self._core.acks0_settled(mark):
                settled = self._acks0_settled
                remaining_s = None if deadline_s is None else deadline_s - time.monotonic()
                try:
                    await asyncio.wait_for(settled.wait(), remaining_s)
                except asyncio.TimeoutError:
                    raise PlinthTimeoutError(
                        f"flush did not finish within {timeout} s: acks=0 requests sent "
                        f"still await the shards' answer") from None
        finally:
            self._accumulator.end_flush()

    def _wake_acks0_waiters(self) -> None:
        """acks=0 requests settled: flushes awaiting them look again. Sender task."""
        self._acks0_settled.set()
        self._acks0_settled = asyncio.Event()

    @property
    def pipelined_sends(self) -> int:
        """Batches sent while an earlier one of their partition was in flight."""
        return self._core.pipelined_sends if self._records is not None else 0

    # --- The sender task ------------------------------------------------------------------

    async def _run(self) -> None:
        """SenderCore's loop: await a reply, a wake-up or the next deadline, then work.
        Never dies of an error (as the sender thread); only stop() ends it."""
        core = self._core
        try:
            while not self._abort and not core.finished():
                try:
                    if await self._conn.wait_async(core.poll_timeout_ms(), self._wakeup.fd):
                        self._wakeup.drain()
                    core.work()
                    self._wake_room_waiters()
                except Exception:   # a bug no batch explains: log it, keep every batch
                    log.exception("aio producer sender: unexpected error; going on")
                    await asyncio.sleep(limits.PRODUCER_SENDER_ERROR_PAUSE_MS / 1000)
        finally:
            if not self._records._closed:
                self._never_stopped()
            core.fail_all_closed()
            self._wake_room_waiters()
            self._conn.close()
            self._wakeup_fd_open = False   # a wake-up after this must not write to a reused fd
            self._wakeup.close()

    def _never_stopped(self) -> None:
        """The sender task ends without stop(): cancelled, as asyncio.run cancels every
        task left when its coroutine returns. aiokafka warns of an unclosed producer;
        here what it drops is counted too, in the close WARNING that follows (its
        unacknowledged records fail with ClosedError). Sender task, as it ends."""
        if self._accumulator.empty():
            return
        log.warning("AIOProducer was never stopped: its sender task was cancelled (did the "
                    "event loop end?) with records not acknowledged; await producer.stop(), "
                    "or use 'async with', before the loop ends")
        self._core.begin_close()

    def _wake(self) -> None:
        """Make the sender task look at the accumulator now (the accumulator calls it
        when a batch opens or is sealed). Event loop thread."""
        self._sender_due = True
        if self._wakeup_fd_open:
            self._wakeup.wake()

    def _wake_room_waiters(self) -> None:
        """Sends awaiting buffer room try again (batches may have completed)."""
        if not self._room_waiters:
            return
        self._room.set()
        self._room = asyncio.Event()


def _retrieve_error(asking: asyncio.Task) -> None:
    """Mark a partition-count question's error as seen (the loop's thread, as its done
    callback). The sends awaiting it through asyncio.shield raise it; a shield whose
    send was cancelled before the answer no longer looks at it, so with every such send
    cancelled asyncio logged "Task exception was never retrieved". The next send to the
    topic asks again and raises the error if the topic is still missing, as after an
    uncancelled one."""
    if not asking.cancelled():
        asking.exception()
