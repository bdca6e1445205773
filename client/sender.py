"""The producer's sender thread: the only thread that touches its socket.

It takes ready batches from the accumulator into one queue per partition,
encodes each as one produce request (Request header + RecordBatch frame),
keeps at most ``in_flight_max`` requests outstanding, matches replies by
request id and resolves the batches' futures.

Idempotence (the default, as in Kafka 3.0+). The producer has a random
producer id; every batch carries it and the sequence number of its first
record in its partition. A partition has at most one batch in flight, so a
retry can never overtake the batch after it. A batch whose request fails
with a retriable error (broker unavailable, queue full, no reply within
``request_timeout_ms``, too few in-sync replicas for acks="all", a shard that
no longer leads the partition) is sent again, unchanged, after a backoff doubling
from ``retry_backoff_ms`` to ``retry_backoff_max_ms``; the shard recognises
a retry of a batch it already stored and answers with the original offsets,
so retries never duplicate records. A batch not acknowledged within
``delivery_timeout_ms`` of its creation fails; the sender then takes a new
producer id, so the sequence numbers of the batches after it start afresh.

Without idempotence (or with acks=0) batches are sent once, several per
partition may be in flight, and any error fails the batch.

The thread never dies of an error: a batch that cannot be encoded or sent
fails alone (none of its records was stored), a reply that does not decode is
dropped (its request times out and is retried), a callback that raises is
logged by the future, and an error no batch explains is logged and the loop
goes on. Only close() ends it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque

from plinth import limits, protocol
from plinth.client.accumulator import OpenBatch, RecordAccumulator
from plinth.client.connection import Connection
from plinth.errors import (TRANSIENT_ERRORS, ClosedError, MalformedReplyError,
                           OutOfOrderSequenceError, PlinthTimeoutError, UnavailableError)
from plinth.format.record_batch import SEQUENCE_MODULUS
from plinth.wakeup import Wakeup

log = logging.getLogger(__name__)

# What an idempotent producer retries: the transient conditions every client
# retries, plus a sequence gap (retried in order under a new producer id) and
# no reply in time (the shard answers a retry of a stored batch with its
# original offsets, so a retry never duplicates).
RETRIABLE_ERRORS = TRANSIENT_ERRORS + (OutOfOrderSequenceError, PlinthTimeoutError)
# baseSequence is an Int32 that wraps to 0.


class Sender:
    def __init__(self, broker: str, acks: int, *, request_timeout_ms: float, in_flight_max: int,
                 idempotent: bool, delivery_timeout_ms: float, retry_backoff_ms: float,
                 retry_backoff_max_ms: float, direct_to_shards: bool = True):
        """``direct_to_shards``: send batches straight to their partition's leader shard
        where the broker offers it (client/direct_routes.py)."""
        self._conn = Connection(broker, direct=direct_to_shards)
        self.acks = acks
        self.idempotent = idempotent and acks != 0
        self.request_timeout_s = request_timeout_ms / 1000
        self.delivery_timeout_s = delivery_timeout_ms / 1000
        self.retry_backoff_s = retry_backoff_ms / 1000
        self.retry_backoff_max_s = retry_backoff_max_ms / 1000
        self.in_flight_max = in_flight_max
        self._in_flight: dict[int, tuple[OpenBatch, float]] = {}
        self._queues: dict[tuple[str, int], deque[OpenBatch]] = {}
        self._busy: set[tuple[str, int]] = set()      # partitions with a batch in flight
        self._new_producer_id()
        self._wakeup = Wakeup()
        self._closing = False
        self._closing_hard = False   # failing everything: no more retries
        self._abort = False          # close() ran out of time: stop now
        self.accumulator: RecordAccumulator | None = None
        self._thread = threading.Thread(target=self._run, name="plinth-producer-sender", daemon=True)

    def start(self, accumulator: RecordAccumulator) -> None:
        self.accumulator = accumulator
        self._thread.start()

    def wake(self) -> None:
        """Any thread: make the sender look at the accumulator now."""
        self._wakeup.wake()

    def close(self, timeout_s: float | None) -> None:
        """Stop after sending what is pending, waiting up to ``timeout_s``; then fail
        whatever is left with ClosedError. The thread that started the sender (the
        producer's close); a second call does nothing."""
        if self._closing:
            return
        self._closing = True
        self.wake()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._abort = True
            self.wake()
            self._thread.join()
        self._wakeup.close()

    def _new_producer_id(self) -> None:
        self.producer_id = random.getrandbits(62) if self.idempotent else -1
        self._next_sequence: dict[tuple[str, int], int] = {}
        for queue in self._queues.values():
            for batch in queue:
                if batch.encoded is not None and (batch.topic, batch.partition) not in self._busy:
                    batch.encoded = None   # re-encoded with the new id when next sent

    # --- The loop ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._abort and not (
                    self._closing and not self._in_flight and self.accumulator.empty()):
                try:
                    self._step()
                except Exception:   # a bug no batch explains: log it, keep every batch
                    log.exception("producer sender: unexpected error; going on")
                    time.sleep(limits.PRODUCER_SENDER_ERROR_PAUSE_MS / 1000)
        finally:
            self._fail_all(ClosedError("producer closed before the record was sent"))
            self._conn.close()

    def _step(self) -> None:
        if self._conn.wait(self._poll_timeout_ms(), self._wakeup.fd):
            self._wakeup.drain()
        self._read_replies()
        self._queue_ready()
        self._send_queued(time.monotonic())
        self._expire(time.monotonic())

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic()
        deadline = now + limits.PRODUCER_SENDER_POLL_MS_MAX / 1000
        linger = self.accumulator.next_linger_deadline_s(self._muted())
        if linger is not None:
            deadline = min(deadline, linger)
        for queue in self._queues.values():
            if queue and queue[0].retry_at_s > now:
                deadline = min(deadline, queue[0].retry_at_s)
        if self._in_flight:
            oldest = min(sent for _, sent in self._in_flight.values())
            deadline = min(deadline, oldest + self.request_timeout_s)
        return max(0, int((deadline - now) * 1000) + 1)

    def _muted(self) -> frozenset:
        """Partitions whose open batch should keep growing: idempotent ones with a
        batch in flight or waiting to be sent."""
        if not self.idempotent:
            return frozenset()
        return frozenset(self._busy) | frozenset(tp for tp, q in self._queues.items() if q)

    def _queue_ready(self) -> None:
        for batch in self.accumulator.drain(batches_max=1 << 30, muted=self._muted()):
            self._queues.setdefault((batch.topic, batch.partition), deque()).append(batch)

    def _send_queued(self, now: float) -> None:
        for tp, queue in self._queues.items():
            while queue and len(self._in_flight) < self.in_flight_max:
                if self.idempotent and (tp in self._busy or queue[0].retry_at_s > now):
                    break
                batch = queue[0] if self.idempotent else queue.popleft()
                self._send(batch)

    def _send(self, batch: OpenBatch) -> None:
        """Send one batch (the head of its queue when idempotent). One that cannot be
        encoded or sent fails alone, or waits for a retry if the error is retriable:
        none of its records reached a shard."""
        try:
            if batch.encoded is None:
                batch.encoded = self._encode(batch)
            request_id = self._conn.next_request_id()
            header = protocol.encode_produce(request_id, batch.topic, batch.partition, self.acks)
            batch.attempts += 1
            self._conn.send_to((batch.topic, batch.partition), request_id, header, batch.encoded,
                               expects_reply=self.acks != 0)
        except UnavailableError as exc:   # no router reachable right now
            self._not_sent(batch, exc)
            return
        except Exception as exc:
            log.exception("cannot send a batch of %d records to %s-%s; it fails alone",
                          batch.builder.record_count, batch.topic, batch.partition)
            self._not_sent(batch, exc)
            return
        if self.acks == 0:
            self.accumulator.complete(batch, -1)
            return
        self._in_flight[request_id] = (batch, time.monotonic())
        self._busy.add((batch.topic, batch.partition))

    def _not_sent(self, batch: OpenBatch, error: BaseException) -> None:
        if self.idempotent:
            self._settle(batch, None, error)   # retriable: stays at its queue's head
        else:
            self.accumulator.complete(batch, None, error)

    def _encode(self, batch: OpenBatch) -> bytes:
        """The batch as a RecordBatch. If it cannot be encoded, it fails (_not_sent),
        which also takes a new producer id: the sequence taken here leaves no gap."""
        if not self.idempotent:
            return batch.builder.build()
        tp = (batch.topic, batch.partition)
        base_sequence = self._next_sequence.get(tp, 0)
        self._next_sequence[tp] = (base_sequence + batch.builder.record_count) % SEQUENCE_MODULUS
        return batch.builder.build(producer_id=self.producer_id, base_sequence=base_sequence)

    # --- Outcomes ------------------------------------------------------------------

    def _read_replies(self) -> None:
        while self._in_flight:
            try:
                got = self._conn.recv(0)
            except MalformedReplyError as exc:   # its request times out and is retried
                log.warning("producer sender: dropped a reply from %s: %s", self._conn.url, exc)
                continue
            if got is None:
                return
            view, _ = got
            entry = self._in_flight.pop(view.request_id, None)
            if entry is None:
                continue   # a reply to a request that already timed out
            self._settle(entry[0], view.base_offset, view.error)

    def _expire(self, now: float) -> None:
        for request_id, (batch, sent) in list(self._in_flight.items()):
            if now - sent > self.request_timeout_s:
                del self._in_flight[request_id]
                self._conn.forget(request_id)
                self._settle(batch, None, PlinthTimeoutError(
                    f"no acknowledgement from {self._conn.url} for {batch.topic}-"
                    f"{batch.partition} within request_timeout_ms="
                    f"{self.request_timeout_s * 1000:.0f}"))

    def _settle(self, batch: OpenBatch, base_offset: int | None, error) -> None:
        tp = (batch.topic, batch.partition)
        self._busy.discard(tp)
        if error is not None and self._retriable(batch, error):
            if isinstance(error, OutOfOrderSequenceError):
                self._new_producer_id()
                batch.encoded = None
            backoff_s = min(self.retry_backoff_max_s, self.retry_backoff_s * 2 ** (batch.attempts - 1))
            batch.retry_at_s = time.monotonic() + backoff_s
            log.info("retrying %s-%s in %.0f ms: %s", *tp, backoff_s * 1000, error)
            return
        if self.idempotent:
            self._queues[tp].popleft()
            if error is not None:
                self._new_producer_id()   # later batches' sequences must not follow a gap
        if error is not None and isinstance(error, RETRIABLE_ERRORS) and self.idempotent:
            error = PlinthTimeoutError(
                f"{batch.topic}-{batch.partition}: not acknowledged within delivery_timeout_ms="
                f"{self.delivery_timeout_s * 1000:.0f} after {batch.attempts} attempts; last "
                f"error: {error}")
        self.accumulator.complete(batch, base_offset, error)

    def _retriable(self, batch: OpenBatch, error) -> bool:
        return (self.idempotent and isinstance(error, RETRIABLE_ERRORS) and not self._closing_hard
                and time.monotonic() - batch.created_s < self.delivery_timeout_s)

    def _fail_all(self, error: BaseException) -> None:
        self._closing_hard = True
        for batch, _ in self._in_flight.values():
            if not batch.result.done():
                self.accumulator.complete(batch, None, error)
        self._in_flight.clear()
        for queue in self._queues.values():
            for batch in queue:
                if not batch.result.done():
                    self.accumulator.complete(batch, None, error)
        self._queues.clear()
        if self.accumulator is not None:
            self.accumulator.abort_unsent(error)
