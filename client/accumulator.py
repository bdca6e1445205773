"""The producer's record accumulator: one open batch per partition.

Threads. ``append`` and ``add_topic`` are called by any application thread
inside ``Producer.send``; ``drain``, ``complete`` and the rest by the sender
thread. One condition variable guards the Python state here; the per-record
fast path, ``plinth.client._producer.Appender.append``, takes no lock: it keeps
the GIL and is atomic (see client/_producer.c). It appends only to a batch that
this module opened (``Appender.add``) and has not yet closed with
``close_batch``, which both happen under the lock; a batch is closed in C
before it is handed to the sender, so the sender never sees it grow.

Where a record goes and whether it fits is decided in one place, C's
``place_record``, which both paths ask. The slow path here acts on its verdict,
under the lock, until the record is in: it waits for buffer room, seals a full
batch, moves the sticky partition, or opens a batch (and appends the record in
the same C call, so no batch is ever left open empty). A record C refuses (too
large, no such partition), or that waits longer than ``max_block_ms``, leaves
no trace: the checks that refuse come before anything changes.

A batch is ready when it is full (``batch_bytes_max`` encoded, its own
BATCH_OVERHEAD_BYTES included, or BATCH_RECORDS_MAX records), when it has waited ``linger_ms``, or when a flush asks for
everything. Memory is bounded: records not yet acknowledged count at most
``buffer_bytes_max``; past that ``append`` blocks up to ``max_block_ms`` and
then raises PlinthTimeoutError. A record counts as the bytes it adds to its
encoded batch (key, value, headers and RECORD_OVERHEAD_BYTES), against both;
C counts them (``commit_record``) and ``complete`` gives a batch's back.

Keyless records go to the topic's sticky partition, which moves on
(StickyPartitioner.next_batch) each time a keyless record needs a new batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from plinth import limits
from plinth.client._producer import (BATCH_FULL, BUFFER_FULL, FITS_AND_FILLS, NO_OPEN_BATCH,
                                     NO_SUCH_PARTITION, TOO_LARGE, Appender)
from plinth.client.futures import BatchResult, Piece, RecordFuture
from plinth.client.partitioner import StickyPartitioner
from plinth.errors import (PartitionOutOfRangeError, PlinthTimeoutError, ProducerBufferFullError,
                           RecordTooLargeError)
from plinth.format.record_batch import (BATCH_OVERHEAD_BYTES, RECORD_OVERHEAD_BYTES,
                                        BatchBuilder, RecordColumns)

# The largest record: one that fills a batch of BATCH_BYTES_MAX on its own.
RECORD_BYTES_MAX = limits.BATCH_BYTES_MAX - BATCH_OVERHEAD_BYTES


def _records_bytes_max(batch_bytes_max: int) -> int:
    """What a batch's records may count for it to encode within ``batch_bytes_max``
    (at least 1: a batch_bytes_max below the overhead puts each record alone in its
    batch, as one larger than batch_bytes_max always is)."""
    return max(1, min(batch_bytes_max, limits.BATCH_BYTES_MAX) - BATCH_OVERHEAD_BYTES)


class OpenBatch:
    """One batch of one partition, from its first record to its acknowledgement."""

    __slots__ = ("topic", "partition", "builder", "result", "created_s", "bytes",
                 "encoded", "attempts", "retry_at_s", "last_error", "sent_first",
                 "unknown_outcome", "ever_sent", "maybe_stored", "base_sequence",
                 "split_of")

    def __init__(self, topic: str, partition: int, columns: RecordColumns | None = None,
                 result_type: type = BatchResult):
        self.topic = topic
        self.partition = partition
        self.builder = BatchBuilder(columns)
        self.result = result_type(topic, partition)
        self.created_s = time.monotonic()
        # What the batch's records count against buffer_memory; set when it is sealed.
        self.bytes = 0
        self.encoded: bytes | None = None   # the RecordBatch as sent; kept for retries
        self.attempts = 0
        self.retry_at_s = 0.0
        # What ended its last attempt, for the delivery timeout's message.
        self.last_error: BaseException | None = None
        # Idempotent producers (client/partition_pipeline.py): whether its last attempt
        # went out as its partition's first unacknowledged batch, and the error that
        # ended its last attempt if that may have come after the batch was stored.
        self.sent_first = False
        self.unknown_outcome: BaseException | None = None
        # Whether an attempt of it ever left for a shard: until it is acknowledged,
        # it may then have been stored, whatever came of its later attempts.
        self.ever_sent = False
        # Whether an attempt of it ended in a way that may follow a store: no reply in
        # time, or an error not in NOT_STORED_ERRORS (client/partition_pipeline.py). A
        # batch sent whose every attempt was refused before the append was not stored.
        self.maybe_stored = False
        # The sequence number of its first record, once encoded under a producer id
        # (or given it by a split: client/partition_pipeline.py).
        self.base_sequence: int | None = None
        # The split this batch is a piece of (RecordAccumulator.split), or None.
        self.split_of: _Split | None = None


class _Split:
    """A batch split in pieces: its result resolves once every piece's has. Sender
    thread only."""

    __slots__ = ("result", "pieces", "pieces_left", "split_of")

    def __init__(self, batch: OpenBatch, pieces: list[OpenBatch]):
        first_indexes = [0]
        for piece in pieces[:-1]:
            first_indexes.append(first_indexes[-1] + piece.builder.record_count)
        self.result = batch.result
        self.pieces = [Piece(first, piece.builder.record_count, piece.result)
                       for first, piece in zip(first_indexes, pieces)]
        self.pieces_left = len(pieces)
        self.split_of = batch.split_of   # a piece split again resolves its own split

class RecordAccumulator:
    def __init__(self, *, batch_bytes_max: int, linger_ms: float, buffer_bytes_max: int,
                 max_block_ms: float, wake, future_type: type = RecordFuture,
                 result_type: type = BatchResult):
        """``future_type`` and ``result_type``: the per-record future and the per-batch
        result (the asyncio producer's are awaitable: client/aio/futures.py). With
        ``max_block_ms=0`` an append never waits for buffer room: it raises
        ProducerBufferFullError at once (the asyncio producer awaits room itself)."""
        self._future_type = future_type
        self._result_type = result_type
        self.batch_bytes_max = batch_bytes_max
        self.linger_s = linger_ms / 1000
        self.buffer_bytes_max = buffer_bytes_max
        self.max_block_s = max_block_ms / 1000
        self._wake = wake
        # A plain Lock under the condition: cheaper than the default RLock.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # The open batches as C sees them, and the fast path (Producer.send
        # calls it first: a future, or None for append()). A batch's records
        # count at most batch_bytes_max less the batch's own overhead, so that it
        # encodes within batch_bytes_max, as Kafka's batch.size counts the batch
        # header: the default 1 MiB batch fits Kafka's default max.message.bytes
        # (1 MiB + 12), which a batch of 1 MiB of records overran by 68 bytes.
        self.appender = Appender(
            future_type=future_type, batch_bytes_max=_records_bytes_max(batch_bytes_max),
            buffer_bytes_max=buffer_bytes_max, record_bytes_max=RECORD_BYTES_MAX,
            records_max=limits.BATCH_RECORDS_MAX, partitions_max=limits.PARTITIONS_PER_TOPIC_MAX)
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
                self._add_topic_locked(topic, partition_count)

    def _add_topic_locked(self, topic: str, partition_count: int) -> None:
        sticky = StickyPartitioner(partition_count)
        # str(): the C side takes exact str keys only (see add_topic).
        self.appender.add_topic(str(topic), partition_count, sticky.partition())
        self._sticky[topic] = sticky

    def set_partition_count(self, topic: str, partition_count: int) -> None:
        """Any thread: the topic's partition count from now on (the producer asked the
        broker again: the topic grew, or was deleted and re-created with another count).
        A new topic is added. Open batches of partitions the topic no longer has are
        sealed as they are: sent, the broker refuses them, and their records fail with
        its PartitionOutOfRangeError, as records already given to a partition do in
        Kafka. Keyless records get a sticky partition within the new count."""
        with self._lock:
            sticky = self._sticky.get(topic)
            if sticky is None or sticky.partition_count == partition_count:
                if sticky is None:
                    self._add_topic_locked(topic, partition_count)
                return
            for partition in range(partition_count, sticky.partition_count):
                batch = self._open.get((topic, partition))
                if batch is not None:
                    self._seal(batch)
            sticky = StickyPartitioner(partition_count)
            self.appender.resize_topic(str(topic), partition_count, sticky.partition())
            self._sticky[topic] = sticky

    def refuse_appends(self) -> None:
        """Any thread (Producer.close): the fast path stops taking records."""
        self.appender.close()

    def append(self, topic: str, partition: int | None, key: bytes | None,
               value: bytes | None, timestamp_ms: int, headers=(),
               headers_bytes: int = 0) -> RecordFuture:
        """Add one record (the slow path, when append_fast returned None); returns its future.

        Any thread (inside Producer.send), once the topic was added. The
        arguments are of the plain types: key and value bytes or None,
        partition None (the key's partition, or the sticky one) or an int,
        timestamp_ms an int, headers and headers_bytes what
        format.record_batch.checked_headers returned. Raises RecordTooLargeError,
        PartitionOutOfRangeError, PlinthTimeoutError (no buffer room within
        max_block_ms) or OverflowError (timestamp_ms outside Int64), leaving no
        trace.
        """
        sticky = partition is None and key is None
        moved = False
        new_batch: OpenBatch | None = None
        deadline_s: float | None = None
        with self._lock:
            for _ in range(limits.PRODUCER_PLACEMENT_STEPS_MAX):
                verdict, chosen, record_bytes, index = self.appender.add(
                    topic, partition, key, value, timestamp_ms, headers_bytes,
                    None if new_batch is None else new_batch.builder.columns,
                    None if new_batch is None else new_batch.result)
                if index >= 0:
                    return self._appended(topic, chosen, verdict, index, headers,
                                          headers_bytes, new_batch)
                if verdict == BUFFER_FULL:
                    deadline_s = self._wait_for_room(record_bytes, deadline_s)
                elif verdict == BATCH_FULL:
                    self._seal(self._open[(topic, chosen)])
                elif verdict == NO_OPEN_BATCH and sticky and not moved:
                    self._move_sticky(topic)
                    moved = True
                elif verdict == NO_OPEN_BATCH:
                    new_batch = new_batch or OpenBatch(topic, chosen, self._spare_columns_pop(),
                                                       self._result_type)
                else:
                    self._refuse(verdict, topic, partition, record_bytes)
        raise PlinthTimeoutError(
            f"could not place a record for {topic!r} in {limits.PRODUCER_PLACEMENT_STEPS_MAX} "
            f"steps: other threads kept filling the buffer and the batches it opened")

    def _appended(self, topic: str, partition: int, verdict: int, index: int, headers,
                  headers_bytes: int, new_batch: OpenBatch | None) -> RecordFuture:
        """The record is record ``index`` of the partition's batch. Lock held."""
        batch = self._open.get((topic, partition))
        if batch is None:   # add() opened new_batch with the record in it
            if new_batch is None or new_batch.partition != partition:
                raise AssertionError(f"{topic}[{partition}] has a batch in C but none here")
            batch = self._open[(topic, partition)] = new_batch
            self._incomplete.add(batch.result)
            self._wake()   # the sender must start this batch's linger clock
        if headers:
            batch.builder.add_headers(index, headers, headers_bytes)
        if verdict == FITS_AND_FILLS:
            self._seal(batch)
        return self._future_type(batch.result, index)

    def _refuse(self, verdict: int, topic: str, partition: int | None, record_bytes: int):
        if verdict == TOO_LARGE:
            raise RecordTooLargeError(
                f"record of {record_bytes} bytes (key, value, headers and "
                f"{RECORD_OVERHEAD_BYTES} bytes of column entries) is over the "
                f"{RECORD_BYTES_MAX} bytes a batch of at most {limits.BATCH_BYTES_MAX} "
                f"bytes holds")
        if verdict == NO_SUCH_PARTITION:
            count = self._sticky[topic].partition_count
            raise PartitionOutOfRangeError(
                f"partition {partition} of topic {topic!r} does not exist: it has "
                f"{count} partitions (0 to {count - 1})")
        raise AssertionError(f"Appender.add answered verdict {verdict} for {topic!r}")

    def _move_sticky(self, topic: str) -> None:
        """Keyless records of the topic go to another partition from now on. Lock held."""
        self.appender.set_sticky(topic, self._sticky[topic].next_batch())

    def _spare_columns_pop(self) -> RecordColumns | None:
        return self._spare_columns.pop() if self._spare_columns else None

    def _wait_for_room(self, record_bytes: int, deadline_s: float | None) -> float:
        """Wait until buffer_memory takes ``record_bytes`` more, at most max_block_ms
        from the first wait of this send; returns that deadline. Lock held (the
        wait releases it)."""
        if deadline_s is None:
            deadline_s = time.monotonic() + self.max_block_s
        while not self.appender.buffer_has_room(record_bytes):
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                raise ProducerBufferFullError(
                    f"producer buffer full: {self.appender.buffered_bytes} bytes of "
                    f"buffer_memory={self.buffer_bytes_max} wait for acknowledgement; "
                    f"blocked max_block_ms={self.max_block_s * 1000:.0f}")
            self._cond.wait(remaining_s)
        return deadline_s

    def _seal(self, batch: OpenBatch) -> None:
        """No more records for ``batch``: closed in C first, then queued. Lock held.

        A batch without records is dropped instead: the shard would refuse it
        (recordCount 0) and no future waits on it. add() never leaves one open;
        this keeps that bug (issue 10) from ever reaching the sender again.
        """
        batch.bytes = self.appender.close_batch(batch.topic, batch.partition)
        del self._open[(batch.topic, batch.partition)]
        if batch.builder.record_count == 0:
            self._incomplete.discard(batch.result)
            batch.result.resolve(-1)
            self.appender.release(batch.bytes)
            self._recycle(batch)
            return
        self._ready.append(batch)
        self._wake()

    def drain(self, batches_max: int, muted: frozenset = frozenset()) -> list[OpenBatch]:
        """Sender thread: up to ``batches_max`` batches that are ready to send.

        An open batch of a ``muted`` partition (one that could not send it now:
        its window of batches in flight is full, or it is retrying, see
        client/partition_pipeline.py) is not sealed when its linger ends: it keeps
        growing until the partition can send, rather than leaving as many
        one-record batches.
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
        """Sender thread: resolve a sealed batch's futures and free its buffer bytes.

        Raises AssertionError, changing nothing, for a batch completed before.
        The batch's columns go to the spares (its builder is left without
        columns): nothing may use the batch's builder after this.
        """
        batch.result.resolve(base_offset, error)
        with self._cond:
            self._incomplete.discard(batch.result)
            self.appender.release(batch.bytes)
            self._recycle(batch)
            self._cond.notify_all()
        split = batch.split_of
        while split is not None:   # the last piece of a split resolves the split batch
            split.pieces_left -= 1
            if split.pieces_left:
                return
            split.result.resolve_split(split.pieces)
            with self._cond:
                self._incomplete.discard(split.result)
                self._cond.notify_all()
            split = split.split_of

    def split(self, batch: OpenBatch) -> list[OpenBatch]:
        """Sender thread: ``batch``, of 2 records or more, which its shard refused as
        too large, as two batches holding its records in order (the first half, the
        rest), each sent and resolved on its own; ``batch``'s result resolves once
        both have (BatchResult.resolve_split), as Kafka's producer splits a batch
        refused with MESSAGE_TOO_LARGE. Its buffer bytes go to the two, by records."""
        assert batch.builder.record_count > 1, "a batch of one record cannot be split"
        pieces = []
        for half in batch.builder.halves():
            piece = OpenBatch(batch.topic, batch.partition)
            piece.builder, piece.created_s, piece.last_error = half, batch.created_s, batch.last_error
            pieces.append(piece)
        first_bytes = batch.bytes * pieces[0].builder.record_count // batch.builder.record_count
        pieces[0].bytes, pieces[1].bytes = first_bytes, batch.bytes - first_bytes
        split = _Split(batch, pieces)
        for piece in pieces:
            piece.split_of = split
        with self._cond:
            batch.bytes = 0
            self._recycle(batch)
        return pieces

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
            for batch in self._open.values():
                batch.bytes = self.appender.close_batch(batch.topic, batch.partition)
            batches = list(self._ready) + list(self._open.values())
            self._ready.clear()
            self._open.clear()
        for batch in batches:
            self.complete(batch, None, error)
        return batches

    def unacknowledged(self) -> list[BatchResult]:
        """The results of every batch not completed yet, open, sealed or in flight. Any
        thread."""
        with self._cond:
            return list(self._incomplete)

    def empty(self) -> bool:
        with self._cond:
            return not self._incomplete
