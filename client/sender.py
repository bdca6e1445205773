"""The producer's sender: the only thread (or task) that touches its socket.

SenderCore is the logic, sans-IO: it never waits. Sender drives it with a
thread of its own (the sync Producer); client/aio/producer.py drives the same
core with one asyncio task on the caller's event loop.

It takes ready batches from the accumulator into one queue per partition,
encodes each as one produce request (Request header + RecordBatch frame),
keeps at most ``in_flight_max`` requests outstanding, matches replies by
request id and resolves the batches' futures.

Idempotence (the default, as in Kafka 3.0+). Each partition's batches carry a
producer id and the sequence number of their first record, and up to
PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX (5, as Kafka allows) of a
partition's batches are in flight at once, within ``in_flight_max`` requests
in all. A batch whose request fails with a retriable error (broker
unavailable, queue full, no reply within ``request_timeout_ms``, too few
in-sync replicas for acks="all", a shard that no longer leads the partition,
a sequence gap, a disk that refused it) is sent again, unchanged, after a
backoff doubling from ``retry_backoff_ms`` to ``retry_backoff_max_ms``; the
shard recognises a retry of a batch it already stored and answers with the
original offsets, so retries never duplicate records. A partition whose batch failed so stops
sending until its other requests in flight settle and then sends again from
its first unacknowledged batch, in order, so a retry never overtakes a later
batch: client/partition_pipeline.py holds these rules, and when a partition
takes a new producer id. A batch not acknowledged within
``delivery_timeout_ms`` of its creation fails; its partition then takes a new
producer id, so the sequence numbers of the batches after it start afresh.
That holds wherever the batch is: a request in flight waits at most until
its batch's delivery deadline (not a whole request_timeout_ms past it), and a
batch waiting to be sent or retried expires at its deadline too (Kafka's
RecordAccumulator.expiredBatches): at each wake-up the sender looks at the
oldest waiting batch of each partition, never at each record.
While a partition cannot send (its window of batches in flight is full, or it
is rewinding), its open batch keeps growing (the accumulator's ``muted``).

Without idempotence (Kafka's rule: acks=0 or 1, or enable_idempotence=False)
batches carry no producer id and wait in one plain queue per partition, in
the order they were sealed; any number of a partition's batches may be in
flight, within ``in_flight_max``. A retriable error is retried as above, until
``delivery_timeout_ms`` and with the same backoff, as Kafka's producer retries
without idempotence: the batch goes back into its partition's queue, ahead of
the batches sealed after it, and nothing more of the partition is sent until
its backoff ends. While a sealed batch of a partition waits in its queue, its
open batch is not sealed but keeps growing (muted, as above), so a partition
that can send one batch per round trip sends bigger ones rather than falling
behind with many small ones. The shard cannot recognise a retry, so, as in
Kafka, a batch whose reply was lost (no reply within ``request_timeout_ms``, a
dropped connection) may be stored twice, and a retry may be stored after a
later batch of its partition that was already in flight: order holds only with
one request in flight (``in_flight_max`` 1), Kafka's
max.in.flight.requests.per.connection=1.

acks=0. A batch's futures complete once it is sent (offset -1: acks=0 promises
nothing, and no user code waits for the shard), and only a send that fails (no
router reachable) is retried, which is safe, as nothing of it left. But the
request goes on the wire as acks=1 and stays in the window of requests in flight
(``in_flight_max``, and at most buffer_memory of batches) until the shard answers
it: a fast acks=0 producer so sends no faster than the shards store, as Kafka's is
held back by TCP and its max.in.flight window. Sent without waiting (as before),
whatever went past the router's bounds for a client (CLIENT_REQUESTS_IN_FLIGHT_MAX,
CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX) or a socket's queue was refused or dropped and
lost: 10,000 to 51,000 of 200,000 records sent at once in some 1,400 batches of
16 KiB, through the router or straight to the shards. An answer that is an
error, no answer within ``request_timeout_ms``, or a dropped connection is not
retried (the batch's records are gone from the producer): it is logged, a WARNING
once per partition until one of its batches is stored again (with how many records
were lost meanwhile), and counted in ``acks0_records_unconfirmed``. A flush waits
for these answers too (Kafka's flush waits for its requests to complete), and so
does a close, within its timeout.

A batch a shard refuses as too large for its topic (recordTooLarge: the
topic's max.message.bytes is below batch_bytes_max) is split in halves and the
halves sent at once in its place (RecordAccumulator.split; with idempotence
they take its sequence numbers, PartitionPipeline.split), again until each
fits, as Kafka's producer splits a batch refused with MESSAGE_TOO_LARGE. A
record too large alone fails; its batch's other records are stored, and each
record's future has its own outcome (client/futures.py).

What the log says of an outage, once per partition and not per retry, and the
WARNING that counts the records a close failed: client/send_outages.py.

The thread never dies of an error: a batch that cannot be encoded or sent
fails alone (none of its records was stored), a reply that does not decode is
dropped (its request times out and is retried), a callback that raises is
logged by the future, and an error no batch explains is logged and the loop
goes on. Only close() ends it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from plinth import limits, protocol
from plinth.client.accumulator import OpenBatch, RecordAccumulator
from plinth.client.compression import compressed_kafka_batch
from plinth.client.connection import Connection
from plinth.client.partition_counts import PartitionCounts
from plinth.client.partition_pipeline import NOT_STORED_ERRORS, PartitionPipeline
from plinth.client.send_outages import SendOutages
from plinth.errors import (TRANSIENT_ERRORS, ClosedError, HandshakeRefusedError,
                           MalformedReplyError, OutOfOrderSequenceError,
                           PartitionOutOfRangeError, PlinthTimeoutError, RecordTooLargeError,
                           StorageError, UnavailableError)
from plinth.format.log_entry import BATCH_FORMAT_KAFKA_V2, BATCH_FORMAT_PLINTH
from plinth.wakeup import Wakeup

log = logging.getLogger(__name__)

# What a producer retries, until delivery_timeout_ms: the transient conditions
# every client retries, plus a sequence gap (an idempotent producer's only:
# retried in order under a new producer id), no reply in time (the shard
# answers an idempotent retry of a stored batch with its original offsets, so
# it never duplicates; without idempotence it may, as in Kafka), and a disk that
# refused the batch (a shard's disk reserve, shards/disk_reserve.py, or a failed
# write: Kafka's producer retries KAFKA_STORAGE_ERROR too), which a disk freed
# meanwhile takes after all; past the timeout the error names it.
RETRIABLE_ERRORS = TRANSIENT_ERRORS + (OutOfOrderSequenceError, PlinthTimeoutError,
                                       StorageError)

# What a record's future raises when its producer closes (or runs out of time to)
# before it was acknowledged: the record never left, or it did and nothing says
# whether the shard stored it.
CLOSED_BEFORE_SENT = "producer closed before the record was sent"
CLOSED_BEFORE_ACKNOWLEDGED = ("producer closed before the record was acknowledged; it was "
                              "sent, so it may have been stored")


class _Unanswered:
    """An acks=0 request awaiting its answer: what the sender still needs of its batch,
    whose futures are resolved and whose records are recycled. ``number``: its place
    among the acks=0 requests sent (SenderCore.acks0_requests_sent)."""

    __slots__ = ("topic", "partition", "record_count", "bytes", "sent_s", "number")

    def __init__(self, topic: str, partition: int, record_count: int, bytes_: int,
                 sent_s: float, number: int):
        self.topic = topic
        self.partition = partition
        self.record_count = record_count
        self.bytes = bytes_
        self.sent_s = sent_s
        self.number = number


class SenderCore:
    """The sender's logic, without a thread or a wait: what to send, what a reply
    means, when a request or a batch has run out of time (sans-IO: every call
    returns at once). The thread below (Sender) and the asyncio producer's task
    (client/aio/producer.py) drive it: wait until ``poll_timeout_ms()`` passes, a
    reply may be read, or ``wake()`` was called; then ``work()``. Only the driver's
    thread or task calls it. ``conn`` is a Connection whose ``send_to`` and
    ``recv(0)`` never wait."""

    def __init__(self, conn: Connection, acks: int, *, request_timeout_ms: float,
                 in_flight_max: int, idempotent: bool, delivery_timeout_ms: float,
                 retry_backoff_ms: float, retry_backoff_max_ms: float,
                 compression: int | None = None):
        """``compression``: a Kafka codec (client/compression.py): every batch goes as a
        Kafka batch it compresses; None: as a Plinth batch."""
        self._conn = conn
        self.compression = compression
        self._batch_format = BATCH_FORMAT_PLINTH if compression is None else BATCH_FORMAT_KAFKA_V2
        self.acks = acks
        # Producer and AIOProducer never ask for idempotence with acks=0 (nor 1: see
        # client/producer.py _idempotence); senders built directly (tests) may.
        self.idempotent = idempotent and acks != 0
        self.request_timeout_s = request_timeout_ms / 1000
        self.delivery_timeout_s = delivery_timeout_ms / 1000
        self.retry_backoff_s = retry_backoff_ms / 1000
        self.retry_backoff_max_s = retry_backoff_max_ms / 1000
        self.in_flight_max = in_flight_max
        # Requests awaiting an answer, by request id: their batches' futures unresolved.
        self._in_flight: dict[int, tuple[OpenBatch, float]] = {}
        # acks=0 requests awaiting an answer, by request id, oldest first: their batches'
        # futures resolved and their records recycled (the accumulator's), so kept apart
        # from _in_flight, whose batches are live; both count in the window.
        self._unanswered: dict[int, _Unanswered] = {}
        self._unanswered_bytes = 0   # their batches' buffer bytes (OpenBatch.bytes)
        # acks=0 requests sent so far (each numbered by it), and the highest number up to
        # which every one has been answered or given up: a flush waits for it. Written
        # by the driver only; read by any thread (an int, so a read is atomic).
        self.acks0_requests_sent = 0
        self.acks0_requests_settled = 0
        # Called by the driver when acks0_requests_settled moves (its waiters wake).
        self.on_acks0_settled = None
        # Records of acks=0 batches whose request got an error, or no answer in time.
        self.acks0_records_unconfirmed = 0
        # Partitions whose acks=0 batches fail now: (batches, records) lost since their
        # first failure; logged once as each starts and as it ends (at most one a
        # partition).
        self._acks0_losing: dict[tuple[str, int], list[int]] = {}
        # Batches not yet sent, or waiting to be retried, oldest first: per partition
        # without idempotence; with it, each partition's unacknowledged batches
        # (client/partition_pipeline.py).
        self._queues: dict[tuple[str, int], deque[OpenBatch]] = {}
        self._pipelines: dict[tuple[str, int], PartitionPipeline] = {}
        # Batches sent while an earlier batch of their partition was in flight
        # (tests and benchmarks read it to see that the producer pipelined).
        self.pipelined_sends = 0
        # When the oldest batch waiting (not in flight) of some partition reaches its
        # delivery deadline; set by each _expire_waiting.
        self._waiting_deadline_s: float | None = None
        self._closing = False
        self._closing_hard = False   # failing everything: no more retries
        self.outages = SendOutages(delivery_timeout_ms)   # what the log says of failures
        self.accumulator: RecordAccumulator | None = None
        # Told when a batch is refused because its partition does not exist; the
        # producer sets it with the accumulator (None: nobody to tell).
        self.partition_counts: PartitionCounts | None = None

    def finished(self) -> bool:
        """Closing, and nothing left to send or to wait for: the driver may stop."""
        return (self._closing and not self._in_flight and not self._unanswered
                and self.accumulator.empty())

    def acks0_settled(self, mark: int) -> bool:
        """Whether every acks=0 request among the first ``mark`` sent
        (``acks0_requests_sent`` then) has been answered or given up. Any thread."""
        return self.acks0_requests_settled >= mark

    def _requests_in_flight(self) -> int:
        return len(self._in_flight) + len(self._unanswered)

    def work(self) -> None:
        """One round: read the replies there are, expire what waited too long, send
        what is ready (expiry first, as Kafka's sender: a batch past its delivery
        deadline is never sent). Never waits."""
        self._read_replies()
        self._refused()
        self._queue_ready()
        self._expire(time.monotonic())
        self._expire_waiting(time.monotonic())
        self._send_queued(time.monotonic())

    def poll_timeout_ms(self) -> int:
        """How long the driver may wait before the next ``work()``."""
        now = time.monotonic()
        deadline = now + limits.PRODUCER_SENDER_POLL_MS_MAX / 1000
        linger = self.accumulator.next_linger_deadline_s(self._muted())
        if linger is not None:
            deadline = min(deadline, linger)
        for pipeline in self._pipelines.values():
            retry_at_s = pipeline.retry_at_s()
            if retry_at_s is not None and retry_at_s > now:
                deadline = min(deadline, retry_at_s)
        for queue in self._queues.values():
            if queue and queue[0].retry_at_s > now:
                deadline = min(deadline, queue[0].retry_at_s)
        if self._in_flight:
            deadline = min(deadline, min(self._request_deadline_s(batch, sent)
                                         for batch, sent in self._in_flight.values()))
        if self._unanswered:   # the oldest first: all wait request_timeout_ms
            oldest = next(iter(self._unanswered.values()))
            deadline = min(deadline, oldest.sent_s + self.request_timeout_s)
        if self._waiting_deadline_s is not None:
            deadline = min(deadline, self._waiting_deadline_s)
        return max(0, int((deadline - now) * 1000) + 1)

    def _request_deadline_s(self, batch: OpenBatch, sent_s: float) -> float:
        """When a request in flight has waited long enough: request_timeout_ms after it
        was sent, or its batch's delivery deadline if that comes first (as Kafka caps it)."""
        return min(sent_s + self.request_timeout_s, batch.created_s + self.delivery_timeout_s)

    def _muted(self) -> frozenset:
        """Partitions whose open batch should keep growing: idempotent ones that could
        not send it now (PartitionPipeline.muted), and the others while a sealed batch
        already waits in their queue (to be sent, or retried after its backoff).
        Sealing more behind it would leave one small batch per linger_ms, each to
        wait its turn: with few requests in flight one batch goes per round trip, so
        the backlog of small batches would grow without bound where one growing
        batch keeps up (as Kafka's accumulator holds at most one waiting batch
        back). Once the queue drains, the open batch is sealed at the next
        ``work()``: by its linger, or by a flush."""
        muted = {tp for tp, pipeline in self._pipelines.items() if pipeline.muted()}
        muted.update(tp for tp, queue in self._queues.items() if queue)
        return frozenset(muted)

    def _queue_ready(self) -> None:
        for batch in self.accumulator.drain(batches_max=1 << 30, muted=self._muted()):
            tp = (batch.topic, batch.partition)
            if not self.idempotent:
                self._queues.setdefault(tp, deque()).append(batch)
                continue
            pipeline = self._pipelines.get(tp)
            if pipeline is None:
                pipeline = self._pipelines[tp] = PartitionPipeline(*tp, self._complete)
            pipeline.add(batch)

    def _send_queued(self, now: float) -> None:
        for queue in self._queues.values():
            # A batch waiting for its retry's backoff holds back the ones after it.
            while (queue and queue[0].retry_at_s <= now
                   and self._requests_in_flight() < self.in_flight_max
                   and self._acks0_room(queue[0])):
                self._send(queue.popleft())
        for pipeline in self._pipelines.values():
            while self._requests_in_flight() < self.in_flight_max:
                batch = pipeline.next_to_send(now)
                if batch is None:
                    break
                self._send(batch, pipeline)

    def _acks0_room(self, batch: OpenBatch) -> bool:
        """Whether ``batch`` may go now as far as bytes go: with acks=0, while the batches
        awaiting an answer and it count at most buffer_memory (one always may when none
        waits), as the futures of acks 1 and "all" hold their bytes in buffer_memory
        until answered; so a producer never has more in flight than the router takes of
        one client (CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX)."""
        return (self.acks != 0 or not self._unanswered or
                self._unanswered_bytes + batch.bytes <= self.accumulator.buffer_bytes_max)

    def _send(self, batch: OpenBatch, pipeline: PartitionPipeline | None = None) -> None:
        """Send one batch (the one its pipeline names when idempotent). One that cannot
        be encoded or sent fails alone, or waits for a retry if the error is
        retriable: none of its records reached a shard."""
        try:
            if batch.encoded is None:
                self._encode(batch, pipeline)
            request_id = self._conn.next_request_id()
            # acks=0 goes as acks=1, so that the shard answers it (see the module).
            header = protocol.encode_produce(request_id, batch.topic, batch.partition,
                                             self.acks or 1, self._batch_format)
            batch.attempts += 1
            self._conn.send_to((batch.topic, batch.partition), request_id, header, batch.encoded)
            batch.ever_sent = True
        except UnavailableError as exc:   # no router reachable right now
            self._not_sent(batch, exc)
            return
        except HandshakeRefusedError as exc:   # final: every batch fails with it
            log.error("cannot send a batch of %d records to %s-%s: %s",
                      batch.builder.record_count, batch.topic, batch.partition, exc)
            self._not_sent(batch, exc)
            return
        except Exception as exc:
            log.exception("cannot send a batch of %d records to %s-%s; it fails alone",
                          batch.builder.record_count, batch.topic, batch.partition)
            self._not_sent(batch, exc)
            return
        if self.acks == 0:
            self._sent_unanswered(request_id, batch)
            return
        self._in_flight[request_id] = (batch, time.monotonic())
        if pipeline is not None:
            self.pipelined_sends += pipeline.in_flight > 0
            pipeline.sent(batch)

    def _encode(self, batch: OpenBatch, pipeline: PartitionPipeline | None) -> None:
        """Make the bytes the batch is sent as, once (every retry sends them again):
        under its pipeline's producer id and next sequence when idempotent, then as
        one compressed Kafka batch with compression (the same id and sequence)."""
        if pipeline is not None:
            pipeline.encode(batch)
        else:
            batch.encoded = batch.builder.build()
        if self.compression is not None:
            batch.encoded = compressed_kafka_batch(batch.encoded, self.compression)

    def _not_sent(self, batch: OpenBatch, error: BaseException) -> None:
        self._settle(batch, None, error, was_in_flight=False)

    def _requeue(self, batch: OpenBatch, retry_at_s: float) -> None:
        """Put a batch that is not idempotent back in its partition's queue for a retry
        at ``retry_at_s``, ahead of every batch sealed after it (the queue holds its
        partition's batches oldest first; one of them may be back for a retry too)."""
        batch.retry_at_s = retry_at_s
        queue = self._queues.setdefault((batch.topic, batch.partition), deque())
        index = next((i for i, later in enumerate(queue) if later.created_s > batch.created_s),
                     len(queue))
        queue.insert(index, batch)

    # --- Outcomes ------------------------------------------------------------------

    def _read_replies(self) -> None:
        while self._in_flight or self._unanswered:
            try:
                got = self._conn.recv(0)
            except MalformedReplyError as exc:   # its request times out and is retried
                log.warning("producer sender: dropped a reply from %s: %s", self._conn.url, exc)
                continue
            if got is None:
                return
            view, _ = got
            entry = self._in_flight.pop(view.request_id, None)
            if entry is not None:
                self._settle(entry[0], view.base_offset, view.error)
            elif view.request_id in self._unanswered:
                self._answered(view.request_id, view.error)
            # else: a reply to a request that already timed out

    def _refused(self) -> None:
        """Fail the batches in flight with the refusal once the broker has ended the
        connection's handshake for good (they would wait out request_timeout_ms, then be
        retried in vain). Batches sent later fail at their send. Once a reply has come,
        this costs no look at the watch (the sender's loop runs per batch)."""
        if not (self._in_flight or self._unanswered) or self._conn.handshake_settled:
            return
        refusal = self._conn.handshake_refusal()
        if refusal is None:
            return
        for request_id, (batch, _) in list(self._in_flight.items()):
            del self._in_flight[request_id]
            self._conn.forget(request_id)
            self._settle(batch, None, refusal)
        for request_id in list(self._unanswered):
            self._conn.forget(request_id)
            self._answered(request_id, refusal)

    def _expire(self, now: float) -> None:
        for request_id, (batch, sent) in list(self._in_flight.items()):
            if now >= self._request_deadline_s(batch, sent):
                del self._in_flight[request_id]
                self._conn.forget(request_id)
                waited = ("request_timeout_ms" if now - sent >= self.request_timeout_s
                          else "its delivery deadline (delivery_timeout_ms)")
                self._settle(batch, None, PlinthTimeoutError(
                    f"no acknowledgement from {self._conn.url} for {batch.topic}-"
                    f"{batch.partition} within {waited}: waited {(now - sent) * 1000:.0f} ms "
                    f"(request_timeout_ms={self.request_timeout_s * 1000:.0f})"))
        while self._unanswered:   # oldest first: all wait request_timeout_ms
            request_id, unanswered = next(iter(self._unanswered.items()))
            if now < unanswered.sent_s + self.request_timeout_s:
                break
            self._conn.forget(request_id)
            self._answered(request_id, PlinthTimeoutError(
                f"no answer from {self._conn.url} within request_timeout_ms="
                f"{self.request_timeout_s * 1000:.0f}: waited "
                f"{(now - unanswered.sent_s) * 1000:.0f} ms; it may have been stored"))

    # --- acks=0 requests awaiting an answer ----------------------------------------

    def _sent_unanswered(self, request_id: int, batch: OpenBatch) -> None:
        """An acks=0 batch left as ``request_id``: its futures complete now (offset -1),
        and its request waits for the shard's answer in the window."""
        self.outages.recovered(batch)
        self.acks0_requests_sent += 1
        self._unanswered[request_id] = _Unanswered(
            batch.topic, batch.partition, batch.builder.record_count, batch.bytes,
            time.monotonic(), self.acks0_requests_sent)
        self._unanswered_bytes += batch.bytes
        self._complete(batch, -1)

    def _answered(self, request_id: int, error: BaseException | None) -> None:
        """The outcome of an acks=0 request: an answer (``error`` None: stored), no answer
        in time, or a dropped connection. Never retried: its records are recycled, and
        acks=0 promises nothing. A failure is logged once per partition until a batch of
        it is stored again."""
        unanswered = self._unanswered.pop(request_id)
        self._unanswered_bytes -= unanswered.bytes
        self._note_acks0_settled()
        tp = (unanswered.topic, unanswered.partition)
        if error is None:
            losing = self._acks0_losing.pop(tp, None)
            if losing is not None:
                log.info("acks=0 produce to %s-%s stored again; %d records of %d batches were "
                         "not confirmed meanwhile", *tp, losing[1], losing[0])
            return
        self.acks0_records_unconfirmed += unanswered.record_count
        losing = self._acks0_losing.get(tp)
        if losing is None:
            losing = self._acks0_losing[tp] = [0, 0]
            log.warning("acks=0 produce to %s-%s of %d records not confirmed: %s: %s; not "
                        "retried (acks=0: its futures completed when it was sent); later ones "
                        "of %s-%s are not logged until one is stored", *tp,
                        unanswered.record_count, type(error).__name__, error, *tp)
        losing[0] += 1
        losing[1] += unanswered.record_count

    def _note_acks0_settled(self) -> None:
        """Move ``acks0_requests_settled`` up to just below the oldest request still
        awaiting an answer, and wake its waiters if it moved."""
        oldest = next(iter(self._unanswered.values()), None)
        settled = self.acks0_requests_sent if oldest is None else oldest.number - 1
        if settled != self.acks0_requests_settled:
            self.acks0_requests_settled = settled
            if self.on_acks0_settled is not None:
                self.on_acks0_settled()

    def _expire_waiting(self, now: float) -> None:
        """Fail every batch that waits to be sent (or retried) past its delivery deadline,
        oldest first per partition; note when the next one is due."""
        self._waiting_deadline_s = None
        for queue in self._queues.values():
            while queue and self._expired(queue[0], now):
                batch = queue.popleft()
                self._complete(batch, None, self._delivery_timeout_error(batch, now))
        if self._pipelines:
            in_flight = {id(batch) for batch, _ in self._in_flight.values()}
            for pipeline in self._pipelines.values():
                self._expire_pipeline(pipeline, in_flight, now)

    def _expire_pipeline(self, pipeline: PartitionPipeline, in_flight: set[int],
                         now: float) -> None:
        """_expire_waiting for an idempotent partition: its oldest unacknowledged batches,
        up to one in flight (its request's deadline covers it) or not yet due."""
        for batch in list(pipeline.batches):
            if batch.result.done():
                continue   # acknowledged before an earlier batch: it only waits to leave
            if id(batch) in in_flight or not self._expired(batch, now):
                return
            pipeline.failed(batch, self._delivery_timeout_error(batch, now),
                            batch.unknown_outcome, was_in_flight=False)

    def _expired(self, batch: OpenBatch, now: float) -> bool:
        """Whether a waiting batch is past its delivery deadline; else notes the deadline."""
        deadline_s = batch.created_s + self.delivery_timeout_s
        if now >= deadline_s:
            return True
        if self._waiting_deadline_s is None or deadline_s < self._waiting_deadline_s:
            self._waiting_deadline_s = deadline_s
        return False

    def _delivery_timeout_error(self, batch: OpenBatch, now: float) -> PlinthTimeoutError:
        """The error of a batch out of time, saying first whether it may have been stored
        (a user who reads only the start of it must not take "failed" for "not stored")."""
        if batch.maybe_stored:
            outcome = (f"and may have been stored (it was sent, {batch.attempts} attempts: its "
                       f"outcome is unknown)")
        elif batch.ever_sent:
            outcome = (f"and was not stored (it was sent, {batch.attempts} attempts, each "
                       f"refused before it was stored)")
        elif batch.attempts:
            outcome = (f"and was not stored (it never left the producer: {batch.attempts} "
                       f"attempts to send it failed)")
        else:
            outcome = "and was not stored (it was never sent)"
        last = f"; last error: {batch.last_error}" if batch.last_error else ""
        return PlinthTimeoutError(
            f"{batch.topic}-{batch.partition}: a batch of {batch.builder.record_count} records "
            f"was not acknowledged within delivery_timeout_ms="
            f"{self.delivery_timeout_s * 1000:.0f} {outcome}: it waited "
            f"{(now - batch.created_s) * 1000:.0f} ms{last}")

    def _settle(self, batch: OpenBatch, base_offset: int | None, error,
                was_in_flight: bool = True) -> None:
        """The outcome of one attempt of ``batch``: a reply, no reply in time, or (not
        ``was_in_flight``) a send that failed. A retriable error is retried until the
        batch's delivery deadline, idempotent or not (as Kafka's producer does)."""
        pipeline = self._pipelines.get((batch.topic, batch.partition))   # None: not idempotent
        if error is None:
            self.outages.recovered(batch)
            if pipeline is None:
                self._complete(batch, base_offset, None)
            else:
                pipeline.acknowledged(batch, base_offset)
            return
        batch.last_error = error
        if was_in_flight and not isinstance(error, NOT_STORED_ERRORS):
            batch.maybe_stored = True   # for good: a later refusal does not undo a store
        now = time.monotonic()
        if self._splittable(batch, error, was_in_flight):
            self._split(batch, pipeline, now)
            return
        if self._retriable(batch, error):
            backoff_s = min(self.retry_backoff_max_s, self.retry_backoff_s * 2 ** (batch.attempts - 1))
            self.outages.retrying(batch, error, backoff_s)
            if pipeline is None:
                self._requeue(batch, now + backoff_s)
            elif was_in_flight:
                pipeline.refused(batch, error, backoff_s, now)
            else:
                pipeline.not_sent(batch, backoff_s, now)
            return
        cause = error
        if isinstance(error, PartitionOutOfRangeError) and self.partition_counts is not None:
            # The topic has fewer partitions than this batch was placed with (it was
            # re-created): the producer asks its count again. The batch fails, as in
            # Kafka: its records are not placed again.
            self.partition_counts.missing(batch.topic, batch.created_s)
        if isinstance(error, RETRIABLE_ERRORS):
            # Out of time: said as a batch that expired while waiting is.
            error = self._delivery_timeout_error(batch, now)
        if pipeline is None:
            self._complete(batch, None, error)
        else:
            pipeline.failed(batch, error, cause, was_in_flight)

    def _splittable(self, batch: OpenBatch, error, was_in_flight: bool) -> bool:
        """Whether a shard refused ``batch`` as too large for its topic and it holds
        records to split (a record alone too large fails, as in Kafka)."""
        return (was_in_flight and isinstance(error, RecordTooLargeError)
                and batch.builder.record_count > 1 and not self._closing_hard
                and time.monotonic() - batch.created_s < self.delivery_timeout_s)

    def _split(self, batch: OpenBatch, pipeline: PartitionPipeline | None, now: float) -> None:
        """Send ``batch``'s records again in two batches, at once (Kafka's producer
        splits a batch refused with MESSAGE_TOO_LARGE so): a topic whose
        max.message.bytes is below batch_bytes_max still takes every record that fits
        it alone."""
        record_count = batch.builder.record_count
        pieces = self.accumulator.split(batch)
        log.info("%s-%s refused a batch of %d records as too large (%s): sending it again "
                 "as batches of %d and %d", batch.topic, batch.partition, record_count,
                 batch.last_error, pieces[0].builder.record_count, pieces[1].builder.record_count)
        if pipeline is not None:
            pipeline.split(batch, pieces)
            return
        for piece in pieces:   # at the front of its partition's queue, in order
            self._requeue(piece, now)

    def _retriable(self, batch: OpenBatch, error) -> bool:
        return (isinstance(error, RETRIABLE_ERRORS) and not self._closing_hard
                and time.monotonic() - batch.created_s < self.delivery_timeout_s)

    def _complete(self, batch: OpenBatch, base_offset: int | None,
                  error: BaseException | None = None) -> None:
        """Resolve ``batch``'s futures (RecordAccumulator.complete), noting a failure
        first: the accumulator recycles the batch's records."""
        if error is not None:
            self.outages.failed(batch, error)
        self.accumulator.complete(batch, base_offset, error)

    # --- Close ---------------------------------------------------------------------

    def begin_close(self) -> None:
        """The producer begins to close (before its flush): from now on the records that
        fail are counted, for one WARNING when the driver stops. Any thread (a dict
        set once, read by the driver); a second call does nothing."""
        self.outages.begin_close()

    def fail_all_closed(self) -> None:
        """The driver stops (closed, or out of time): fail every batch not acknowledged
        with ClosedError, saying whether it may have been stored; then one WARNING if
        records failed since the close began. The driver's thread or task, as it ends."""
        self._fail_all(ClosedError(CLOSED_BEFORE_SENT), ClosedError(CLOSED_BEFORE_ACKNOWLEDGED))
        self.outages.closed()

    def _fail_all(self, error: BaseException,
                  sent_error: BaseException | None = None) -> None:
        """Fail every batch not acknowledged: with ``sent_error`` (default ``error``)
        those an attempt of which left (in flight, or waiting for a retry), as they may
        have been stored; with ``error`` the rest."""
        self._closing_hard = True
        if self.accumulator is None:   # never started: nothing was sent
            return
        sent_error = error if sent_error is None else sent_error
        for request_id in list(self._unanswered):   # acks=0: their futures completed
            self._answered(request_id, sent_error)
        waiting = [batch for batch, _ in self._in_flight.values()]
        self._in_flight.clear()
        waiting += [batch for queue in self._queues.values() for batch in queue]
        waiting += [batch for pipeline in self._pipelines.values() for batch in pipeline.batches]
        waiting += self._seal_all()
        for batch in waiting:
            if not batch.result.done():
                self._complete(batch, None, sent_error if batch.ever_sent else error)
        self._queues.clear()
        self._pipelines.clear()
        self.accumulator.abort_unsent(error)   # none left: appends were refused

    def _seal_all(self) -> list[OpenBatch]:
        """Every batch the accumulator still holds, sealed (open ones too, muted or not:
        a flush seals them all), so that their records can be counted as they fail."""
        self.accumulator.begin_flush()
        try:
            return self.accumulator.drain(batches_max=1 << 30)
        finally:
            self.accumulator.end_flush()


class Sender(SenderCore):
    """SenderCore driven by a thread of its own, which waits on the connection and a
    wake-up pipe (the sync Producer's sender)."""

    def __init__(self, broker: str, acks: int, *, request_timeout_ms: float, in_flight_max: int,
                 idempotent: bool, delivery_timeout_ms: float, retry_backoff_ms: float,
                 retry_backoff_max_ms: float, direct_to_shards: bool = True,
                 compression: int | None = None):
        """``direct_to_shards``: send batches straight to their partition's leader shard
        where the broker offers it (client/direct_routes.py). ``compression``: a Kafka
        codec (client/compression.py): every batch goes as a Kafka batch it compresses;
        None: as a Plinth batch."""
        super().__init__(
            Connection(broker, direct=direct_to_shards), acks,
            request_timeout_ms=request_timeout_ms, in_flight_max=in_flight_max,
            idempotent=idempotent, delivery_timeout_ms=delivery_timeout_ms,
            retry_backoff_ms=retry_backoff_ms, retry_backoff_max_ms=retry_backoff_max_ms,
            compression=compression)
        self._wakeup = Wakeup()
        self._abort = False          # close() ran out of time: stop now
        # Notified by the sender thread when acks=0 requests settle (wait_acks0_answered).
        self._acks0_settled_cond = threading.Condition()
        self.on_acks0_settled = self._wake_acks0_waiters
        self._thread = threading.Thread(target=self._run, name="plinth-producer-sender", daemon=True)

    def start(self, accumulator: RecordAccumulator) -> None:
        self.accumulator = accumulator
        self._thread.start()

    def wake(self) -> None:
        """Any thread: make the sender look at the accumulator now."""
        self._wakeup.wake()

    def wait_acks0_answered(self, timeout_s: float | None) -> bool:
        """Wait until every acks=0 request sent so far has been answered or given up (no
        answer within request_timeout_ms, the sender stopped), at most ``timeout_s``
        (None: no limit); whether it was. Any thread but the sender's (the producer's
        flush); True at once with acks 1 or "all"."""
        mark = self.acks0_requests_sent
        with self._acks0_settled_cond:
            return self._acks0_settled_cond.wait_for(lambda: self.acks0_settled(mark),
                                                     timeout_s)

    def _wake_acks0_waiters(self) -> None:
        with self._acks0_settled_cond:
            self._acks0_settled_cond.notify_all()

    def close(self, timeout_s: float | None) -> None:
        """Stop after sending what is pending, waiting up to ``timeout_s``; then fail
        whatever is left with ClosedError. The thread that started the sender (the
        producer's close); a second call does nothing."""
        if self._closing:
            return
        self.begin_close()
        self._closing = True
        if self._thread.ident is None:   # never started (its producer's constructor failed)
            self._conn.close()
            self._wakeup.close()
            return
        self.wake()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._abort = True
            self.wake()
            self._thread.join()
        self._wakeup.close()

    def _run(self) -> None:
        try:
            while not self._abort and not self.finished():
                try:
                    self._step()
                except Exception:   # a bug no batch explains: log it, keep every batch
                    log.exception("producer sender: unexpected error; going on")
                    time.sleep(limits.PRODUCER_SENDER_ERROR_PAUSE_MS / 1000)
        finally:
            self.fail_all_closed()
            self._conn.close()

    def _step(self) -> None:
        if self._conn.wait(self.poll_timeout_ms(), self._wakeup.fd):
            self._wakeup.drain()
        self.work()
