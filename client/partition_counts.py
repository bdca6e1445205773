"""A producer's partition counts: what it places records with, and when it asks again.

Client side, shared by Producer (client/producer.py) and AIOProducer
(client/aio/producer.py); each asks the broker itself (one blocks, the other
awaits) and tells this what came of it. A producer asks a topic's partition
count at its first send to the topic, and asks again, as Kafka's producer
refreshes its metadata:

- when a batch of the topic was refused because its partition does not exist
  (PartitionOutOfRangeError: the topic was deleted and re-created with fewer
  partitions), which the sender reports (``missing``), or a send named a
  partition beyond the count the producer knows (the topic may have grown);
- when the count it knows is ``metadata_max_age_ms`` old (Kafka's
  metadata.max.age.ms: the topic may have grown).

The first of these questions is asked as soon as it is due; each later one no
sooner than PRODUCER_METADATA_REFRESH_MS_MIN after the one before, whatever its
answer was; and at most one question per topic is in flight (the producer holds
its lock, or shares one task, while it asks): past its first send, a topic costs
a producer at most one metadata request per PRODUCER_METADATA_REFRESH_MS_MIN. A
batch refused that was placed before the count was last learnt says nothing of
that count, and is not reported.

A new count applies to the records sent after it is learnt (the accumulator's
``set_partition_count``). Records already placed keep their partition: one the
partitioner put on a partition that is gone fails with the broker's
PartitionOutOfRangeError and is not placed again, as in Kafka, which
re-partitions only new records. A question that fails for a topic the
producer knew keeps the count it had (the topic may be between its delete and
its re-create: the broker holds such a send until the topic is back) and is
asked again later; for a topic it never knew, the send fails with the error,
as a first send always did.
"""

from __future__ import annotations

import logging
import threading
import time

from plinth import limits
from plinth.client.accumulator import RecordAccumulator

log = logging.getLogger(__name__)


class PartitionCounts:
    """The partition count of each topic a producer sends to, and whether to ask again.

    Any thread: the producer's sending threads call ``due``, ``known``, ``learned``
    and ``not_learned``, its sender thread ``missing``; a lock guards the state.
    ``current`` is for the asyncio producer's per-record look-up on its loop: a
    topic absent from it must be asked (``due``) before a record of it is placed.
    """

    def __init__(self, accumulator: RecordAccumulator, *, metadata_max_age_ms: float,
                 clock=time.monotonic):
        self._accumulator = accumulator
        self._clock = clock
        self._refresh_s_min = limits.PRODUCER_METADATA_REFRESH_MS_MIN / 1000
        self._max_age_s = max(metadata_max_age_ms / 1000, self._refresh_s_min)
        self._lock = threading.Lock()
        self.current: dict[str, int] = {}      # known and not due (as last seen)
        self._known: dict[str, int] = {}       # the last count learnt
        self._learned_s: dict[str, float] = {}
        # The last question after the first (a refresh), answered or not.
        self._asked_again_s: dict[str, float] = {}
        self._missing: set[str] = set()        # found a partition missing since learnt

    def due(self, topic: str) -> bool:
        """Whether the producer must ask the broker the topic's count before it places a
        record of it: it never learnt it; or a partition was found missing, or the count
        is metadata_max_age_ms old, and the last question after the first (if any) is
        PRODUCER_METADATA_REFRESH_MS_MIN old. A known topic found due leaves
        ``current``."""
        with self._lock:
            return self._due_locked(topic)

    def _due_locked(self, topic: str) -> bool:
        if topic not in self._known:
            return True
        now_s = self._clock()
        asked_again_s = self._asked_again_s.get(topic)
        due = ((asked_again_s is None or now_s - asked_again_s >= self._refresh_s_min)
               and (topic in self._missing
                    or now_s - self._learned_s[topic] >= self._max_age_s))
        if due:
            self.current.pop(topic, None)
        return due

    def missing(self, topic: str, placed_s: float | None = None) -> None:
        """A partition of the topic does not exist: a batch placed at ``placed_s`` (the
        clock's time; None: now) was refused for it (PartitionOutOfRangeError), or a
        send named a partition beyond the count known. The next record of the topic
        placed once ``due`` says so asks again first; a batch placed before the count
        was learnt is not counted (the count it was placed with is gone already).
        Any thread (the sender's, for a refused batch)."""
        with self._lock:
            learned_s = self._learned_s.get(topic)
            if learned_s is not None and (placed_s is None or placed_s >= learned_s):
                self._missing.add(topic)
                self._due_locked(topic)

    def known(self, topic: str) -> int:
        """The count to place the topic's records with; KeyError if never learnt."""
        with self._lock:
            return self._known[topic]

    def learned(self, topic: str, partition_count: int) -> None:
        """The broker answered: the topic has ``partition_count`` partitions. The
        accumulator places the records sent from now on with it."""
        self._accumulator.set_partition_count(topic, partition_count)
        with self._lock:
            old = self._known.get(topic)
            if old is not None and old != partition_count:
                log.info("topic %r has %d partitions now (had %d): records sent from now "
                         "on are placed with %d", topic, partition_count, old, partition_count)
            now_s = self._clock()
            if old is not None:
                self._asked_again_s[topic] = now_s
            self._known[topic] = self.current[topic] = partition_count
            self._learned_s[topic] = now_s
            self._missing.discard(topic)

    def not_learned(self, topic: str, error: BaseException) -> None:
        """The question failed with ``error``: raised again for a topic never learnt (its
        send fails, as a first send always did); otherwise the count known stays, and
        the question is asked again once due."""
        with self._lock:
            if topic not in self._known:
                raise error
            self._asked_again_s[topic] = self._clock()
            count = self.current[topic] = self._known[topic]
        log.warning("could not ask the partition count of topic %r again (%s); placing its "
                    "records with the %d partitions known, asking again in %.0f ms or more",
                    topic, error, count, self._refresh_s_min * 1000)
