"""Futures for produced records, one light object per record.

A batch has one ``BatchResult``, resolved once by the producer's sender
thread with the batch's base offset or an error; each record's
``RecordFuture`` is the batch result plus the record's index in the batch, so
resolving a batch of 10,000 records is one call, not 10,000. Any thread may
wait on a future; callbacks run on the sender thread.

A batch a shard refused as too large for its topic is split (client/sender.py):
its records go in smaller batches, each resolved on its own, and the batch's
result is resolved once they all are, with their outcomes (``resolve_split``):
each record's offset and error are then its piece's, so one record of the batch
may be stored while another failed.

A RecordFuture's two fields live in ``plinth.client._producer.FutureBase`` (C), so
that the producer's fast path creates one without running Python code; its
methods are here.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, NamedTuple

from plinth.client._producer import FutureBase
from plinth.client.arguments import checked_wait_s
from plinth.client.fetcher import TopicPartition
from plinth.errors import PlinthTimeoutError

log = logging.getLogger(__name__)


class RecordMetadata(NamedTuple):
    """Where a record was stored. aiokafka's ``topic_partition`` is here too; its
    ``timestamp``, ``timestamp_type`` and ``log_start_offset`` are not: a produce
    reply carries only the batch's base offset (the record's timestamp is the one
    it was sent with, or the time of the send)."""

    topic: str
    partition: int
    offset: int          # -1 when acks=0: the broker sends no offset back

    @property
    def topic_partition(self) -> TopicPartition:
        """aiokafka's field: TopicPartition(topic, partition)."""
        return TopicPartition(self.topic, self.partition)

    def __getattr__(self, name: str):
        """AttributeError for aiokafka's fields a produce reply does not carry, saying
        so (any other name: Python's own message)."""
        if name in _ABSENT_FIELDS:
            raise AttributeError(
                f"RecordMetadata has no {name}: Plinth's produce reply carries only the "
                f"offset (aiokafka's RecordMetadata has {name}); the record's timestamp "
                f"is the timestamp_ms it was sent with, or the time of the send")
        raise AttributeError(f"'RecordMetadata' object has no attribute {name!r}")


_ABSENT_FIELDS = frozenset({"timestamp", "timestamp_type", "log_start_offset"})


class Piece(NamedTuple):
    """Where some of a split batch's records went: its records from ``first_index``,
    ``record_count`` of them, and the result of the batch that carried them."""

    first_index: int
    record_count: int
    result: "BatchResult"


class BatchResult:
    __slots__ = ("topic", "partition", "base_offset", "error", "_done", "_callbacks", "_lock",
                 "_pieces")

    def __init__(self, topic: str, partition: int):
        self.topic = topic
        self.partition = partition
        self.base_offset = -1
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._callbacks: list[tuple[Callable, Callable | None, int]] = []
        self._lock = threading.Lock()   # orders add_callback against resolve
        self._pieces: list[Piece] | None = None   # resolve_split's; None: not split

    def resolve_split(self, pieces: list[Piece]) -> None:
        """Sender thread: resolve a batch that was split, once every piece is resolved:
        ``error`` is the first piece's error, if any (a record's own is ``error_of``),
        ``base_offset`` the first piece's."""
        assert pieces and all(piece.result.done() for piece in pieces), pieces
        self._pieces = pieces
        first_error = next((p.result.error for p in pieces if p.result.error is not None), None)
        self.resolve(pieces[0].result.base_offset, first_error)

    def _piece(self, index: int) -> tuple[Piece, int]:
        """The piece holding record ``index``, and the record's index in it."""
        for piece in self._pieces:
            if index < piece.first_index + piece.record_count:
                return piece, index - piece.first_index
        raise AssertionError(f"record {index} is in no piece of {self.topic}[{self.partition}]")

    def error_of(self, index: int) -> BaseException | None:
        """Record ``index``'s error, or None if it was stored (the batch is resolved)."""
        if self._pieces is None:
            return self.error
        piece, index_in_piece = self._piece(index)
        return piece.result.error_of(index_in_piece)

    def records_acknowledged(self, record_count: int) -> int:
        """How many of the batch's first ``record_count`` records were stored."""
        if self._pieces is None:
            return record_count if self.error is None else 0
        return sum(piece.result.records_acknowledged(
                       max(0, min(piece.record_count, record_count - piece.first_index)))
                   for piece in self._pieces)

    def resolve(self, base_offset: int | None, error: BaseException | None = None) -> None:
        """Sender thread: set the outcome once and run callbacks.

        Raises AssertionError, changing nothing, if the batch was resolved
        before: its futures already told their records' fate.
        """
        with self._lock:
            if self._done.is_set():
                raise AssertionError(
                    f"batch of {self.topic}[{self.partition}] resolved twice: first "
                    f"{self.error or self.base_offset!r}, now {error or base_offset!r}")
            if error is None:
                self.base_offset = base_offset
            self.error = error
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for on_success, on_error, index in callbacks:
            self._run_callback(on_success, on_error, index)

    def _run_callback(self, on_success, on_error, index: int) -> None:
        """Run one callback; an exception from it is the application's bug, logged here."""
        try:
            error = self.error_of(index)
            if error is None and on_success is not None:
                on_success(self.metadata(index))
            elif error is not None and on_error is not None:
                on_error(error)
        except Exception:
            log.exception("a callback of a record sent to %s[%s] raised", self.topic,
                          self.partition)

    def metadata(self, index: int) -> RecordMetadata:
        if self._pieces is not None:
            piece, index_in_piece = self._piece(index)
            return piece.result.metadata(index_in_piece)
        offset = -1 if self.base_offset < 0 else self.base_offset + index
        return RecordMetadata(self.topic, self.partition, offset)

    def wait(self, timeout_s: float | None) -> bool:
        return self._done.wait(timeout_s)

    def add_done_callback(self, fn: Callable[["BatchResult"], None]) -> None:
        """Call ``fn(self)`` once when the batch resolves, success or error.

        Runs on the sender thread, or at once on the caller's thread if the
        batch has already resolved. One callback per batch, not per record:
        what ``plinth bench`` uses to time acknowledgements cheaply.
        """
        def on_done(_outcome) -> None:
            fn(self)

        with self._lock:
            if not self.done():
                self._callbacks.append((on_done, on_done, 0))
                return
        fn(self)

    def done(self) -> bool:
        return self._done.is_set()


class RecordFuture(FutureBase):
    """What ``Producer.send`` returns: resolves to RecordMetadata(topic, partition, offset).

    ``RecordFuture(batch, index)``; ``batch`` (read-only) is the BatchResult
    shared by every record of the record's batch, ``_index`` the record's
    index in it.
    """

    __slots__ = ()

    def done(self) -> bool:
        return self.batch.done()

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Wait up to ``timeout`` seconds; raise the send's error if it failed."""
        batch = self.batch
        if not batch.wait(checked_wait_s("get timeout", timeout)):
            raise PlinthTimeoutError(f"record not acknowledged within {timeout} s")
        error = batch.error_of(self._index)
        if error is not None:
            raise error
        return batch.metadata(self._index)

    result = get  # concurrent.futures spelling

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.batch.wait(checked_wait_s("exception timeout", timeout)):
            raise PlinthTimeoutError(f"record not acknowledged within {timeout} s")
        return self.batch.error_of(self._index)

    def add_callback(self, fn: Callable[[RecordMetadata], None]) -> "RecordFuture":
        return self._add(fn, None)

    def add_errback(self, fn: Callable[[BaseException], None]) -> "RecordFuture":
        return self._add(None, fn)

    def _add(self, on_success, on_error) -> "RecordFuture":
        batch = self.batch
        with batch._lock:
            if not batch.done():
                batch._callbacks.append((on_success, on_error, self._index))
                return self
        batch._run_callback(on_success, on_error, self._index)
        return self


__all__ = ["RecordMetadata", "BatchResult", "Piece", "RecordFuture"]
