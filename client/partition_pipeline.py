"""One partition's batches of an idempotent producer, from sealed to acknowledged.

Sender thread only: client/sender.py keeps one PartitionPipeline per partition
it writes to, and asks it which batch to send next and what a reply means.

A partition has its own producer id and counts its own sequence numbers: every
batch carries both (record_batch.capnp), and the shard remembers the last
IDEMPOTENT_BATCHES_KEPT batches of each producer id (shards/producer_state.py).
Up to PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX (== IDEMPOTENT_BATCHES_KEPT)
batches of the partition are in flight at once. How order and exactly-once
hold through failures:

- ``batches`` holds the first unacknowledged batch and every batch after it,
  in sequence order; ``batches[:sent_count]`` were sent in the current pass
  (the ones in flight are among them). A batch acknowledged while an earlier
  one is not has its future resolved at once, but stays here, done, until
  every batch before it is acknowledged: only the first
  PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX batches of ``batches`` may be
  sent, so that a retry of the first unacknowledged one always finds it among
  the shard's last IDEMPOTENT_BATCHES_KEPT batches of the producer (answered
  with its original offsets), however many after it were stored.
- Any retriable error puts the partition in "rewinding": nothing more is sent
  for it until every request in flight has settled (a reply, or no reply
  within request_timeout_ms); then sending starts again from the first
  unacknowledged batch, in order, skipping those acknowledged meanwhile, with
  the same bytes (same producer id and sequences) and after its backoff. A
  batch the shard refused was not stored; a batch whose request timed out or
  whose connection dropped may have been, and its retry is then answered as a
  duplicate. So a batch can never be stored after a later one, nor twice.
- outOfOrderSequence for a batch that was not the first unacknowledged one
  when it was sent is the consequence of an earlier batch's failure, or of
  two batches overtaking each other on the way: it is retried in order, under
  the same producer id, without a backoff. (client/direct_routes.py keeps a
  partition's requests on one path, direct or through the router, while any
  of them is in flight; but when the direct socket takes no more, or its
  connection drops, the next ones go through the router, and may reach the
  shard before an earlier one.)
- outOfOrderSequence for a batch that was the first unacknowledged one when it
  was sent is a real gap: every batch before it was acknowledged, so the shard
  lost the producer's state. And a batch that fails for good (delivery
  timeout, or an error that is not retriable) leaves a gap if its sequence
  numbers were used. In both cases the partition takes a new producer id once
  nothing is in flight (so a partition never has batches of two producer ids
  in flight, which the shard could store out of order), and every
  unacknowledged batch is encoded again under it, from sequence 0. After a
  real gap none of them was stored (the shard refuses every batch after a
  gap). But a batch that failed for good after an attempt without an answer
  may have been stored, and so may a later batch whose last attempt got no
  answer either: sent again under the new id it could be stored twice, so
  such a batch fails too (PlinthTimeoutError saying its outcome is unknown).
- A batch refused as too large for its topic (recordTooLarge) was not stored:
  two batches carrying its records take its place and its sequence numbers
  (``split``), so the batches after it, refused as a gap meanwhile, keep theirs.
  A batch of one record refused so fails for good, as above.
- Until the shard acknowledged a batch under the current producer id, one
  batch is in flight at a time: a shard takes the first batch of a producer it
  does not know at any sequence, so a second batch overtaking a first one that
  failed would be stored, and the first one, retried, refused as a gap.

Without idempotence client/sender.py does not use this module.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Callable

from plinth import limits
from plinth.client.accumulator import OpenBatch
from plinth.errors import (DiskReserveRefusedError, NotEnoughReplicasBeforeWriteError,
                           OutOfOrderSequenceError, PlinthTimeoutError, TooManyProducersError)
from plinth.format.record_batch import SEQUENCE_MODULUS

# Errors a shard answers after checking a batch and before storing it: such an
# attempt stored nothing. Any other error may come after the batch was stored (a
# StorageError other than the disk reserve's refusal: a write or an fsync failed).
NOT_STORED_ERRORS = (OutOfOrderSequenceError, TooManyProducersError, DiskReserveRefusedError,
                     NotEnoughReplicasBeforeWriteError)

BATCHES_IN_FLIGHT_MAX = limits.PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX


class PartitionPipeline:
    """The unacknowledged batches of one partition (see the module). Sender thread only.

    ``complete(batch, base_offset, error)`` resolves a batch's futures
    (RecordAccumulator.complete); it is called once per batch, from here.
    """

    def __init__(self, topic: str, partition: int,
                 complete: Callable[[OpenBatch, int | None, BaseException | None], None]):
        self.topic = topic
        self.partition = partition
        self._complete = complete
        self.batches: deque[OpenBatch] = deque()
        self.sent_count = 0
        self.in_flight = 0
        self.rewinding = False
        self._new_id_due = False
        # A batch that failed for good may have been stored: later batches whose
        # outcome is unknown may have been too, after it.
        self._later_maybe_stored = False
        self._take_new_producer_id()

    def _take_new_producer_id(self) -> None:
        self.producer_id = random.getrandbits(62)
        self.next_sequence = 0
        self.confirmed = False   # no batch acknowledged under producer_id yet

    # --- Sending ---------------------------------------------------------------------

    def add(self, batch: OpenBatch) -> None:
        """A sealed batch of this partition, after every batch added before it."""
        self.batches.append(batch)

    def muted(self) -> bool:
        """Whether the partition's open batch should keep growing rather than be sealed:
        it could not be sent now anyway."""
        return (self.rewinding or self.in_flight >= BATCHES_IN_FLIGHT_MAX
                or self.sent_count < len(self.batches))

    def next_to_send(self, now_s: float) -> OpenBatch | None:
        """The batch to send now, or None: rewinding, nothing left, the window full, or
        the next batch waiting for its backoff."""
        if self.rewinding:
            return None
        batches = self.batches
        while self.sent_count < len(batches) and batches[self.sent_count].result.done():
            self.sent_count += 1   # acknowledged in an earlier pass
        if self.sent_count >= min(len(batches), BATCHES_IN_FLIGHT_MAX):
            return None
        if self.in_flight >= (BATCHES_IN_FLIGHT_MAX if self.confirmed else 1):
            return None
        batch = batches[self.sent_count]
        return batch if batch.retry_at_s <= now_s else None

    def retry_at_s(self) -> float | None:
        """When the next batch's backoff ends, if that is all it waits for."""
        if self.rewinding or self.sent_count >= len(self.batches):
            return None
        return self.batches[self.sent_count].retry_at_s

    def encode(self, batch: OpenBatch) -> bytes:
        """The batch as sent: encoded under the partition's producer id and its next
        sequence the first time, the same bytes for every retry. An error from the
        encoder leaves no gap: the sequence is taken only once the batch is built."""
        if batch.encoded is None:
            given = batch.base_sequence is not None   # a piece of a split batch
            base_sequence = batch.base_sequence if given else self.next_sequence
            batch.encoded = batch.builder.build(producer_id=self.producer_id,
                                                base_sequence=base_sequence)
            batch.base_sequence = base_sequence
            if not given:
                self.next_sequence = (base_sequence + batch.builder.record_count) % SEQUENCE_MODULUS
        return batch.encoded

    def sent(self, batch: OpenBatch) -> None:
        """``batch`` (what next_to_send returned) went out and expects a reply."""
        if batch is not self.batches[self.sent_count]:
            raise AssertionError(f"{self.topic}-{self.partition}: a batch was sent out of order")
        batch.sent_first = batch is self.batches[0]
        self.sent_count += 1
        self.in_flight += 1

    # --- Outcomes --------------------------------------------------------------------

    def acknowledged(self, batch: OpenBatch, base_offset: int) -> None:
        """The shard stored ``batch`` at ``base_offset`` (or had stored it)."""
        self.in_flight -= 1
        self.confirmed = True
        self._complete(batch, base_offset, None)
        self._resume_if_settled()

    def refused(self, batch: OpenBatch, error: BaseException, backoff_s: float,
                now_s: float) -> None:
        """``batch``'s request in flight failed with a retriable ``error``: rewind."""
        self.in_flight -= 1
        self.rewinding = True
        batch.unknown_outcome = None if isinstance(error, NOT_STORED_ERRORS) else error
        if not isinstance(error, OutOfOrderSequenceError):
            batch.retry_at_s = now_s + backoff_s
        elif batch.sent_first:
            self._new_id_due = True   # a real gap: the shard lost this producer's state
        self._resume_if_settled()

    def split(self, batch: OpenBatch, pieces: list[OpenBatch]) -> None:
        """``batch``'s request in flight was refused as too large, and ``pieces`` carry
        its records (RecordAccumulator.split): they take its place and its sequence
        numbers, in order, under the same producer id, so the batches after it keep
        theirs. The shard stored none of it, and refuses the later batches in flight
        as a gap (retried in order): rewind, and send the pieces first, at once."""
        self.in_flight -= 1
        self.rewinding = True
        sequence = batch.base_sequence
        assert sequence is not None, "a batch is encoded before it is sent"
        for piece in pieces:
            piece.base_sequence = sequence
            sequence = (sequence + piece.builder.record_count) % SEQUENCE_MODULUS
        index = self.batches.index(batch)
        del self.batches[index]
        for piece in reversed(pieces):
            self.batches.insert(index, piece)
        if index < self.sent_count:
            self.sent_count += len(pieces) - 1
        self._resume_if_settled()

    def not_sent(self, batch: OpenBatch, backoff_s: float, now_s: float) -> None:
        """``batch`` could not be sent (no router reachable) and will be retried: it
        stays next in line, after its backoff."""
        batch.retry_at_s = now_s + backoff_s

    def failed(self, batch: OpenBatch, error: BaseException, cause: BaseException,
               was_in_flight: bool) -> None:
        """``batch`` fails for good with ``error`` (``cause``: what ended its last
        attempt); it leaves the partition, and the batches after it go under a new
        producer id if it used sequence numbers."""
        if was_in_flight:
            self.in_flight -= 1
            batch.unknown_outcome = None if isinstance(cause, NOT_STORED_ERRORS) else cause
        index = self.batches.index(batch)
        del self.batches[index]
        if index < self.sent_count:
            self.sent_count -= 1
        if batch.encoded is not None:
            self.rewinding = True
            self._new_id_due = True
            self._later_maybe_stored |= batch.unknown_outcome is not None
        self._complete(batch, None, error)
        self._resume_if_settled()

    def _resume_if_settled(self) -> None:
        """Drop the acknowledged batches at the front; and once nothing is in flight, a
        rewinding partition sends again from its first unacknowledged batch, under a
        new producer id if one is due."""
        self._drop_acknowledged_front()
        if not self.rewinding or self.in_flight:
            return
        self.rewinding = False
        self.sent_count = 0
        if not self._new_id_due:
            return
        self._new_id_due = False
        later_maybe_stored, self._later_maybe_stored = self._later_maybe_stored, False
        old_id = self.producer_id
        self._take_new_producer_id()
        for batch in list(self.batches):
            if batch.result.done():
                continue
            if later_maybe_stored and batch.unknown_outcome is not None:
                self.batches.remove(batch)
                self._complete(batch, None, PlinthTimeoutError(
                    f"{self.topic}-{self.partition}: a batch of {batch.builder.record_count} "
                    f"records may or may not have been stored under producer id {old_id}: its "
                    f"last attempt's outcome is unknown "
                    f"({type(batch.unknown_outcome).__name__}: {batch.unknown_outcome}), and "
                    f"an earlier batch, maybe stored too, failed for good: the partition takes "
                    f"a new producer id, under which a retry could store it twice"))
                continue
            batch.encoded = None   # encoded again, in order, when next sent
            batch.base_sequence = None   # from the new id's next sequence
            batch.unknown_outcome = None   # nothing of it was sent under the new id yet
        self._drop_acknowledged_front()

    def _drop_acknowledged_front(self) -> None:
        batches = self.batches
        while batches and batches[0].result.done():
            batches.popleft()
            self.sent_count = max(0, self.sent_count - 1)
