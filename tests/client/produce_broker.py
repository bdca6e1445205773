"""A broker for producer tests: a real ROUTER socket on loopback, in its own thread,
that answers a producer as a router and its shards would, with real Cap'n Proto
replies.

It answers metadata for the topics it was given (unknownTopic for any other)
and keeps each produced batch in an in-memory log per partition, checked as a
shard checks it: ``batch_formats.summarize`` in the request's batch format (a Kafka
batch stamped with its base offset, as the shard stores it), and the idempotent producer's sequence
through shards/producer_state.py's ProducerStates, so an exact retry is
answered with its original offset and a gap with outOfOrderSequence. A produce
with acks=0 is stored and not answered. ``batch_bytes_max`` (None: no limit)
refuses a larger batch with recordTooLarge, stored nothing, as a shard refuses
one over its topic's max.message.bytes.

Faults are scripted per produce request, in arrival order: each request takes
the next entry of ``faults`` (a deque), if any:
    a BrokerError   answered with it; nothing stored
    DROP            no answer, nothing stored: the request was lost on the way
    LOSE_REPLY      stored, no answer: the reply was lost on the way back
    GARBAGE         answered with bytes that are not a Reply; nothing stored
Every request is recorded with its arrival time and its payload frame, and
``answered_at_s`` keeps when each reply went out, by request id.

``hold()`` keeps the produce requests that arrive from then on unanswered and
unread (recorded in ``arrivals`` all the same), so that a test can have several
in flight at once; ``release()`` answers them, in arrival order, and what
comes next as usual. ``hold(("metadata",))`` holds the metadata requests instead.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import NamedTuple

import zmq

from plinth import protocol
from plinth.errors import (BrokerError, PartitionOutOfRangeError, RecordTooLargeError,
                           UnknownTopicError)
from plinth.format import batch_formats
from plinth.format.kafka_batch import stamp_kafka_batch
from plinth.format.log_entry import BATCH_FORMAT_KAFKA_V2
from plinth.format.record_batch import ConsumerRecord
from plinth.shards.producer_state import ProducerStates
from tests.client.scripted_broker import bound_router

DROP, LOSE_REPLY, GARBAGE = "drop", "lose reply", "garbage"
_POLL_MS = 20


class Arrival(NamedTuple):
    at_s: float                      # time.monotonic() when it came in
    request: protocol.Request
    payload: bytes | None


class ProduceBroker:
    def __init__(self, topics: dict[str, int], url: str | None = None):
        """``url``: bind there (a broker back at the address of one that closed);
        default a free port."""
        self.topics = dict(topics)                      # name -> partition count
        self.faults: deque = deque()
        self.batch_bytes_max: int | None = None   # a topic's max.message.bytes
        self.arrivals: list[Arrival] = []
        self.answered_at_s: dict[int, float] = {}        # request id -> when answered
        self._holding = threading.Event()
        self._held_kinds: tuple[str, ...] = ("produce",)   # what hold() holds
        self._held: deque = deque()                      # (client, request, payload)
        # (base offset, record count, batch format, batch), per partition
        self._logs: dict[tuple[str, int], list[tuple[int, int, int, bytes]]] = {}
        self._producers: dict[tuple[str, int], ProducerStates] = {}
        self._lock = threading.Lock()                   # the logs: test thread vs broker
        self._socket, self.url = bound_router(url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    # --- What the tests read --------------------------------------------------

    def records(self, topic: str, partition: int) -> list[ConsumerRecord]:
        """Every record stored in the partition, in offset order."""
        with self._lock:
            batches = list(self._logs.get((topic, partition), []))
        return [record for base_offset, _, batch_format, batch in batches
                for record in batch_formats.decode(batch_format, topic, partition, base_offset,
                                                   batch)]

    def record_count(self) -> int:
        """Records stored in all partitions."""
        return sum(len(self.records(topic, p))
                   for topic, count in self.topics.items() for p in range(count))

    def produces(self) -> list[Arrival]:
        return [a for a in list(self.arrivals) if a.request.kind == "produce"]

    def hold(self, kinds: tuple[str, ...] = ("produce",)) -> None:
        """Answer no request of these kinds that arrives from now on until ``release()``."""
        self._held_kinds = kinds
        self._holding.set()

    def release(self) -> None:
        """Answer the held requests, in arrival order, and the later ones as they come."""
        self._holding.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()

    # --- The broker thread ------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            while self._held and not self._holding.is_set():
                self._handle(*self._held.popleft())
            if not self._socket.poll(_POLL_MS):
                continue
            client, header, *payload = self._socket.recv_multipart()
            request = protocol.decode_request(header)
            payload = payload[0] if payload else None
            self.arrivals.append(Arrival(time.monotonic(), request, payload))
            if self._holding.is_set() and request.kind in self._held_kinds:
                self._held.append((client, request, payload))
                continue
            self._handle(client, request, payload)

    def _handle(self, client: bytes, request: protocol.Request, payload: bytes | None) -> None:
        reply = self._answer(request, payload)
        if reply is not None:
            self._socket.send_multipart([client, reply])
            self.answered_at_s[request.request_id] = time.monotonic()

    def _answer(self, request: protocol.Request, payload: bytes | None) -> bytes | None:
        if request.kind == "metadata":
            return self._metadata(request)
        if request.kind != "produce":
            return protocol.encode_error(request.request_id,
                                         BrokerError(f"{request.kind} is not faked here"))
        fault = self.faults.popleft() if self.faults else None
        if isinstance(fault, BrokerError):
            return protocol.encode_error(request.request_id, fault)
        if fault in (DROP, GARBAGE):
            return b"not a reply" if fault == GARBAGE else None
        try:
            reply = protocol.encode_produce_reply(request.request_id, self._store(request, payload))
        except BrokerError as error:
            reply = protocol.encode_error(request.request_id, error)
        return None if fault == LOSE_REPLY or request.acks == 0 else reply

    def _metadata(self, request: protocol.MetadataRequest) -> bytes:
        unknown = [name for name in request.topics if name not in self.topics]
        if unknown:
            return protocol.encode_error(request.request_id,
                                         UnknownTopicError(f"unknown topic {unknown[0]!r}"))
        return protocol.encode_topics_reply(
            request.request_id, [protocol.TopicInfo(name, self.topics[name])
                                 for name in request.topics])

    def _store(self, request: protocol.ProduceRequest, payload: bytes) -> int:
        """Check and append a batch as a shard does; its base offset."""
        where = f"{request.topic}[{request.partition}]"
        if request.topic not in self.topics:
            raise UnknownTopicError(f"unknown topic {request.topic!r}")
        if not 0 <= request.partition < self.topics[request.topic]:
            raise PartitionOutOfRangeError(f"{where} does not exist")
        if self.batch_bytes_max is not None and len(payload) > self.batch_bytes_max:
            raise RecordTooLargeError(f"{where}: a batch of {len(payload)} bytes is over "
                                      f"max.message.bytes={self.batch_bytes_max}")
        summary = batch_formats.summarize(request.batch_format, payload)
        tp = (request.topic, request.partition)
        states = self._producers.setdefault(tp, ProducerStates())
        duplicate = states.check(where, summary.producer_id, summary.base_sequence,
                                 summary.record_count)
        if duplicate is not None:
            return duplicate
        with self._lock:
            log = self._logs.setdefault(tp, [])
            base_offset = log[-1][0] + log[-1][1] if log else 0
            stored = (bytes(stamp_kafka_batch(payload, base_offset, 0))
                      if request.batch_format == BATCH_FORMAT_KAFKA_V2 else bytes(payload))
            log.append((base_offset, summary.record_count, request.batch_format, stored))
        states.record(summary.producer_id, summary.base_sequence, summary.record_count,
                      base_offset)
        return base_offset
