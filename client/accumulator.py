"""The producer's record accumulator: one open batch per partition.

Threads. ``append`` and ``add_topic`` are called by any application thread
inside ``Producer.send``; ``drain``, ``complete`` and the rest by the sender
thread. One condition variable guards the Python state here; the per-record
fast path, ``plinth.client._producer.Appender.append``, takes no lock: it keeps the
GIL and is atomic (see client/_producer.c). It appends only to a batch that
this module opened with ``Appender.open_batch`` and has not yet closed
with ``close_batch``, which both happen under the lock; a batch is closed
in C before it is handed to the sender, so the sender never sees it grow.

A batch is ready when it reaches ``batch_bytes_max``, when it has waited
``linger_ms``, or when a flush asks for everything. Memory is bounded:
records not yet acknowledged hold at most ``buffer_bytes_max``; past that
``append`` blocks up to ``max_block_ms`` and then raises PlinthTimeoutError.
A record counts as its key and value plus RECORD_OVERHEAD_BYTES against both.

Keyless records go to the topic's sticky partition, which moves on
(StickyPartitioner.next_batch) each time a keyless record needs a new batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from plinth.client._producer import RECORD_OVERHEAD_BYTES, Appender, RecordColumns
from plinth.client.futures import BatchResult, RecordFuture
from plinth.client.partitioner import StickyPartitioner
from plinth.format.record_batch import TIMESTAMP_SPAN_MS_MAX, BatchBuilder
from plinth import limits
from plinth.errors import PlinthTimeoutError, RecordTooLargeError


class OpenBatch:
    __slots__ = ("topic", "partition", "builder", "result", "created_s",
                 "encoded", "attempts", "retry_at_s")

    def __init__(self, topic: str, partition: int, columns: RecordColumns | None = None):
        self.topic = topic
        self.partition = partition
        self.builder = BatchBuilder(columns)
        self.result = BatchResult(topic, partition)
        self.created_s = time.monotonic()
        self.encoded: bytes | None = None   # the RecordBatch as sent; kept for retries
        self.attempts = 0
        self.retry_at_s = 0.0

    @property
    def bytes(self) -> int:
        """What the batch's records count against batch_bytes_max and buffer_memory."""
        return self.builder.columns.accounted_bytes


class RecordAccumulator:
    def __init__(self, *, batch_bytes_max: int, linger_ms: float, buffer_bytes_max: int,
                 max_block_ms: float, wake):
        self.batch_bytes_max = batch_bytes_max
        self.linger_s = linger_ms / 1000
        self.buffer_bytes_max = buffer_bytes_max
        self.max_block_s = max_block_ms / 1000
        self._wake = wake
        # A plain Lock under the condition: cheaper than the default RLock.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Headroom in a batch for its fixed encoding overhead.
        self._record_bytes_max = limits.BATCH_BYTES_MAX - 1024
        # The open batches as C sees them, and the fast path (Producer.send
        # calls it first: a future, or None for append()).
        self.appender = Appender(
            future_type=RecordFuture, batch_bytes_max=batch_bytes_max,
            buffer_bytes_max=buffer_bytes_max, record_bytes_max=self._record_bytes_max)
        self.append_fast = self.appender.append
        self._open: dict[tuple[str, int], OpenBatch] = {}
        self._sticky: dict[str, StickyPartitioner] = {}
        self._ready: deque[OpenBatch] = deque()
        self._incomplete: set[BatchResult] = set()
        self._flushes = 0
        # Columns of completed batches, cleared, for new batches to reuse.
        self._spare_columns: list[RecordColumns] = []

    def add_topic(self, topic: str, partition_count: int) -> None:
        """Any thread: make the topic known (once; later calls do nothing)."""
        with self._lock:
            if topic not in self._sticky:
                sticky = self._sticky[topic] = StickyPartitioner(partition_count)
                # str(): the C side takes exact str keys only (see add_topic).
                self.appender.add_topic(str(topic), partition_count, sticky.partition())

    def refuse_appends(self) -> None:
        """Any thread (Producer.close): the fast path stops taking records."""
        self.appender.close()

    def append(self, topic: str, partition: int | None, key: bytes | None,
               value: bytes | None, timestamp_ms: int, headers) -> RecordFuture:
        """Add one record (the slow path, when append_fast returned None); returns its future.

        Any thread (inside Producer.send), once the topic was added.
        ``partition`` None: the topic's sticky partition.
        """
        size = RECORD_OVERHEAD_BYTES + (0 if key is None else len(key)) + \
            (0 if value is None else len(value))
        if size > self._record_bytes_max:
            raise RecordTooLargeError(
                f"record of {size} bytes (key + value + {RECORD_OVERHEAD_BYTES}) is over the "
                f"batch limit of {limits.BATCH_BYTES_MAX} bytes")
        with self._lock:
            appender = self.appender
            if appender.buffered_bytes and appender.buffered_bytes + size > self.buffer_bytes_max:
                self._wait_for_room(size)
            batch = self._batch_with_room(topic, partition, size, timestamp_ms)
            index = batch.builder.append(key, value, timestamp_ms, headers)
            appender.reserve(size)
            if batch.bytes >= self.batch_bytes_max:
                self._seal(batch)
        return RecordFuture(batch.result, index)

    def _batch_with_room(self, topic: str, partition: int | None, size: int,
                         timestamp_ms: int) -> OpenBatch:
        """The open batch the record goes to, opened if need be. Lock held."""
        sticky = partition is None
        if sticky:
            partition = self._sticky[topic].partition()
        batch = self._open_with_room(topic, partition, size, timestamp_ms)
        if batch is None and sticky:
            partition = self._sticky[topic].next_batch()
            self.appender.set_sticky(topic, partition)
            batch = self._open_with_room(topic, partition, size, timestamp_ms)
        return batch if batch is not None else self._new_batch(topic, partition)

    def _open_with_room(self, topic: str, partition: int, size: int,
                        timestamp_ms: int) -> OpenBatch | None:
        """The partition's open batch if the record fits in it; else None, the
        batch (if any) sealed. Lock held.

        A record fits if the batch stays within batch_bytes_max and its
        timestamps within the UInt32 of ms that timestampDeltasMs holds (a
        batch spanning more could not be encoded).
        """
        batch = self._open.get((topic, partition))
        if batch is None:
            return None
        columns = batch.builder.columns
        span_ms = max(columns.timestamp_max_ms, timestamp_ms) - \
            min(columns.timestamp_min_ms, timestamp_ms) if columns.record_count else 0
        if batch.bytes + size > self.batch_bytes_max or span_ms > TIMESTAMP_SPAN_MS_MAX:
            self._seal(batch)
            return None
        return batch

    def _wait_for_room(self, size: int) -> None:
        deadline = time.monotonic() + self.max_block_s
        appender = self.appender
        while appender.buffered_bytes and appender.buffered_bytes + size > self.buffer_bytes_max:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PlinthTimeoutError(
                    f"producer buffer full: {appender.buffered_bytes} bytes of "
                    f"buffer_memory={self.buffer_bytes_max} wait for acknowledgement; "
                    f"blocked max_block_ms={self.max_block_s * 1000:.0f}")
            self._cond.wait(remaining)

    def _new_batch(self, topic: str, partition: int) -> OpenBatch:
        spare = self._spare_columns.pop() if self._spare_columns else None
        batch = OpenBatch(topic, partition, spare)
        self._open[(topic, partition)] = batch
        self.appender.open_batch(topic, partition, batch.builder.columns, batch.result)
        self._incomplete.add(batch.result)
        self._wake()   # the sender must start this batch's linger clock
        return batch

    def _seal(self, batch: OpenBatch) -> None:
        """No more records for ``batch``: closed in C first, then queued. Lock held."""
        self.appender.close_batch(batch.topic, batch.partition)
        del self._open[(batch.topic, batch.partition)]
        self._ready.append(batch)
        self._wake()

    def drain(self, batches_max: int, muted: frozenset = frozenset()) -> list[OpenBatch]:
        """Sender thread: up to ``batches_max`` batches that are ready to send.

        An open batch of a ``muted`` partition (one whose previous batch is still
        in flight) is not sealed when its linger ends: it keeps growing until the
        partition is free, rather than leaving as many one-record batches.
        """
        now = time.monotonic()
        with self._cond:
            for key, batch in list(self._open.items()):
                if key not in muted and (self._flushes or now - batch.created_s >= self.linger_s):
                    self._seal(batch)
            out = []
            while self._ready and len(out) < batches_max:
                out.append(self._ready.popleft())
            return out

    def next_linger_deadline_s(self, muted: frozenset = frozenset()) -> float | None:
        """When the next open batch of an unmuted partition is due (sender thread)."""
        with self._cond:
            if self._ready:
                return time.monotonic()
            waiting = [b for key, b in self._open.items() if key not in muted]
            if not waiting:
                return None
            if self._flushes:
                return time.monotonic()
            return min(b.created_s for b in waiting) + self.linger_s

    def complete(self, batch: OpenBatch, base_offset: int | None, error=None) -> None:
        """Sender thread: resolve a batch's futures and free its buffer bytes.

        The batch's columns go to the spares (its builder is left without
        columns): nothing may use the batch's builder or ``bytes`` after this.
        """
        batch.result.resolve(base_offset, error)
        with self._cond:
            self._incomplete.discard(batch.result)
            self.appender.release(batch.bytes)
            self._recycle(batch)
            self._cond.notify_all()

    def _recycle(self, batch: OpenBatch) -> None:
        """Keep the columns of a completed batch for a new one. Lock held."""
        columns, batch.builder.columns = batch.builder.columns, None
        if len(self._spare_columns) < limits.PRODUCER_SPARE_BATCHES_MAX:
            columns.clear()
            self._spare_columns.append(columns)

    def begin_flush(self) -> list[BatchResult]:
        with self._cond:
            self._flushes += 1
            pending = list(self._incomplete)
        self._wake()
        return pending

    def end_flush(self) -> None:
        with self._cond:
            self._flushes -= 1

    def abort_unsent(self, error: BaseException) -> list[OpenBatch]:
        """Take every batch not yet sent (on close without flush)."""
        with self._cond:
            for batch in list(self._open.values()):
                self.appender.close_batch(batch.topic, batch.partition)
            batches = list(self._ready) + list(self._open.values())
            self._ready.clear()
            self._open.clear()
        for batch in batches:
            self.complete(batch, None, error)
        return batches

    def empty(self) -> bool:
        with self._cond:
            return not self._incomplete
