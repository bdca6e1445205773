"""The asyncio producer's futures: the sync producer's, made awaitable.

``AIOBatchResult`` is a BatchResult (client/futures.py) that also resolves the
asyncio futures of the tasks awaiting it, made only when a task awaits a
record of the batch before it resolved: resolving a batch of 10,000 records
stays one call, and a record awaited after its batch resolved costs no future
at all. ``AIORecordFuture``
is what ``AIOProducer.send`` returns, made in C by the same fast path as the
sync RecordFuture (it is one: a FutureBase subclass), with asyncio's future
protocol on top: ``await future``, ``asyncio.isfuture(future)`` is true, and
``asyncio.gather``, ``wait`` and ``as_completed`` take it.

Tasks. Everything here runs on the producer's event loop: the sender task
resolves batches, and callbacks added with ``add_done_callback`` are scheduled
on the loop (``call_soon``), as asyncio's own futures do. A record handed to
the producer cannot be withdrawn: ``cancel()`` returns False, so
``asyncio.wait_for(future, t)`` waits for the outcome past ``t``; bound a wait
with ``asyncio.wait(futures, timeout=t)``, or ``wait_for`` a coroutine that
awaits the record (cancelling it cancels only that wait).
"""

from __future__ import annotations

import asyncio

from plinth.client.futures import BatchResult, RecordFuture, RecordMetadata


class AIOBatchResult(BatchResult):
    """Made by the accumulator on the event loop's thread (inside ``send``)."""

    __slots__ = ("loop", "_waiters", "_record_callbacks")

    def __init__(self, topic: str, partition: int):
        super().__init__(topic, partition)
        self.loop = asyncio.get_running_loop()
        self._waiters: list[asyncio.Future] | None = None
        # The records' done callbacks: (fn, record future, context). One callback of
        # one waiter runs them all, rather than one loop callback per record
        # (asyncio.gather adds one to each of its futures).
        self._record_callbacks: list | None = None

    def waiter(self) -> asyncio.Future:
        """A new asyncio future, done when the batch resolves (at once if it has): one
        per waiting task, so that a task cancelled while it awaits its record
        cancels its own waiter, never the other tasks'. Event loop thread."""
        waiter = self.loop.create_future()
        if self.done():
            waiter.set_result(None)
        elif self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        return waiter

    def resolve(self, base_offset: int | None, error: BaseException | None = None) -> None:
        """The sender task: BatchResult.resolve, then wake the tasks awaiting it (or
        AIOProducer.stop() on another loop, failing what its own loop left)."""
        super().resolve(base_offset, error)
        waiters, self._waiters = self._waiters, None
        if waiters and self.loop.is_closed():
            # Their tasks ended with the loop, and a closed loop schedules nothing
            # (set_result would raise "Event loop is closed"): the record futures
            # hold the outcome, for whoever asks them.
            return
        for waiter in waiters or ():
            if not waiter.done():   # (a cancelled one is done)
                waiter.set_result(None)

    def add_record_callback(self, fn, record, context) -> None:
        """``fn(record)`` on the loop once the batch resolves (soon, if it has)."""
        if self._record_callbacks is None:
            self._record_callbacks = []
            self.waiter().add_done_callback(self._run_record_callbacks)
        self._record_callbacks.append((fn, record, context))

    def remove_record_callback(self, fn, record) -> int:
        """Forget ``fn`` as a callback of ``record``; how many were forgotten."""
        callbacks = self._record_callbacks or []
        kept = [entry for entry in callbacks if not (entry[0] == fn and entry[1] is record)]
        removed = len(callbacks) - len(kept)
        callbacks[:] = kept
        return removed

    def _run_record_callbacks(self, _waiter) -> None:
        callbacks, self._record_callbacks = self._record_callbacks, None
        for fn, record, context in callbacks:
            try:
                if context is None:
                    fn(record)
                else:
                    context.run(fn, record)
            except Exception as exc:   # as asyncio does with a callback's error
                self.loop.call_exception_handler({
                    "message": f"a done callback of a record sent to {self.topic}"
                               f"[{self.partition}] raised", "exception": exc})


class AIORecordFuture(RecordFuture):
    """The future of one record sent with AIOProducer.send: RecordMetadata(topic,
    partition, offset), or the send's error (the sync producer's errors)."""

    __slots__ = ()
    _asyncio_future_blocking = False   # asyncio.isfuture() is true

    def __await__(self):
        batch = self.batch
        if not batch.done():
            yield from batch.waiter().__await__()
        return self.result()

    __iter__ = __await__

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.batch.loop

    def result(self) -> RecordMetadata:
        """The RecordMetadata; raises the send's error, or asyncio.InvalidStateError
        before the batch is acknowledged (await the future instead)."""
        batch = self.batch
        if not batch.done():
            raise asyncio.InvalidStateError("the record is not acknowledged yet")
        error = batch.error_of(self._index)
        if error is not None:
            raise error
        return batch.metadata(self._index)

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """``result()``: never blocks the loop (the sync future's ``get`` waits)."""
        return self.result()

    def exception(self) -> BaseException | None:
        if not self.batch.done():
            raise asyncio.InvalidStateError("the record is not acknowledged yet")
        return self.batch.error_of(self._index)

    def cancelled(self) -> bool:
        return False

    def cancel(self, msg=None) -> bool:
        """A record handed to the producer cannot be withdrawn: False."""
        return False

    def add_done_callback(self, fn, *, context=None) -> None:
        """``fn(self)`` on the loop once the record's batch resolves."""
        self.batch.add_record_callback(fn, self, context)

    def remove_done_callback(self, fn) -> int:
        return self.batch.remove_record_callback(fn, self)


__all__ = ["AIOBatchResult", "AIORecordFuture", "RecordMetadata"]
