"""Consumer: read partitions from any offset, long-polling for new records.

Client side, in the conventions of kafka-python: ``Consumer(*topics)`` reads
every partition of the topics; ``assign([(topic, partition)])`` reads exactly
those. ``poll()`` returns {TopicPartition: [ConsumerRecord]}; iterating the
consumer yields records one by one. One thread at a time may use a Consumer:
poll() does its network I/O on the caller's thread, there is no background
thread.

Each assigned partition has at most one fetch in flight. A fetch at the log
end is parked by the shard until records arrive or ``fetch_max_wait_ms``
passes, so an idle consumer costs one request per partition per wait.
Every entry's CRC is checked before its records are handed out.
"""

from __future__ import annotations

import time
from collections import deque
from typing import NamedTuple

from plinth import limits, protocol
from plinth.client.admin import Admin
from plinth.client.connection import Connection
from plinth.client.record_batch import ConsumerRecord, decode_records
from plinth.errors import ClosedError, OffsetOutOfRangeError
from plinth.shards.log_entry import iter_entries

OFFSET_RESETS = ("earliest", "latest", "none")


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class _PartitionState:
    __slots__ = ("position", "fetch_offset", "fetch_id", "records")

    def __init__(self):
        self.position: int | None = None       # next offset handed to the application
        self.fetch_offset: int | None = None   # next offset to ask the broker for
        self.fetch_id: int | None = None       # request id of the fetch in flight
        self.records: deque[ConsumerRecord] = deque()


class Consumer:
    def __init__(self, *topics: str, broker: str | None = None,
                 auto_offset_reset: str = "latest",
                 fetch_max_bytes: int = limits.FETCH_BYTES_DEFAULT,
                 fetch_max_wait_ms: int = limits.FETCH_WAIT_MS_DEFAULT,
                 request_timeout_ms: float = limits.CLIENT_REQUEST_TIMEOUT_MS_DEFAULT,
                 consumer_timeout_ms: float = float("inf"),
                 max_poll_records: int = 500,
                 key_deserializer=None, value_deserializer=None):
        if auto_offset_reset not in OFFSET_RESETS:
            raise ValueError(f"auto_offset_reset={auto_offset_reset!r} is not one of {OFFSET_RESETS}")
        if not 0 < fetch_max_bytes <= limits.FETCH_BYTES_MAX:
            raise ValueError(f"fetch_max_bytes={fetch_max_bytes} must be 1..{limits.FETCH_BYTES_MAX}")
        if not 0 <= fetch_max_wait_ms <= limits.FETCH_WAIT_MS_MAX:
            raise ValueError(f"fetch_max_wait_ms={fetch_max_wait_ms} must be 0..{limits.FETCH_WAIT_MS_MAX}")
        self.auto_offset_reset = auto_offset_reset
        self.fetch_max_bytes = fetch_max_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.request_timeout_ms = request_timeout_ms
        self.consumer_timeout_ms = consumer_timeout_ms
        self.max_poll_records = max_poll_records
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self._conn = Connection(broker)
        self._admin = Admin(broker=self._conn.url, request_timeout_ms=request_timeout_ms)
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._fetches: dict[int, TopicPartition] = {}
        self._iterated: deque[ConsumerRecord] = deque()   # polled, not yet yielded
        self._rotation = 0                                 # where _take starts, for fairness
        self._closed = False
        if topics:
            self.subscribe(list(topics))

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- Assignment and position -----------------------------------------------

    def subscribe(self, topics: list[str]) -> None:
        """Read every partition of these topics (no group: this consumer gets them all)."""
        self.assign([(t, p) for t in topics for p in range(self._admin.partition_count(t))])

    def assign(self, partitions: list[tuple[str, int]]) -> None:
        self._partitions = {TopicPartition(*tp): _PartitionState() for tp in partitions}
        self._fetches.clear()
        self._iterated.clear()

    def assignment(self) -> set[TopicPartition]:
        return set(self._partitions)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``topic``/``partition`` from ``offset`` next."""
        state = self._state(topic, partition)
        state.position = state.fetch_offset = offset
        state.fetch_id = None
        state.records.clear()
        self._iterated = deque(r for r in self._iterated
                               if (r.topic, r.partition) != (topic, partition))

    def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        for tp in partitions or list(self._partitions):
            self.seek(*tp, self._admin.list_offsets(*tp).start_offset)

    def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        for tp in partitions or list(self._partitions):
            self.seek(*tp, self._admin.list_offsets(*tp).end_offset)

    def position(self, topic: str, partition: int) -> int:
        state = self._state(topic, partition)
        if state.position is None:
            self._reset(TopicPartition(topic, partition), state)
        return state.position

    def _state(self, topic: str, partition: int) -> _PartitionState:
        state = self._partitions.get(TopicPartition(topic, partition))
        if state is None:
            raise ValueError(f"{topic}-{partition} is not assigned to this consumer")
        return state

    def _reset(self, tp: TopicPartition, state: _PartitionState) -> None:
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(f"no position for {tp.topic}-{tp.partition} and "
                                        f"auto_offset_reset='none'")
        info = self._admin.list_offsets(tp.topic, tp.partition)
        offset = info.start_offset if self.auto_offset_reset == "earliest" else info.end_offset
        self.seek(tp.topic, tp.partition, offset)

    # --- Polling -----------------------------------------------------------------

    def poll(self, timeout_ms: float = 0, max_records: int | None = None) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records ready within ``timeout_ms``, at most ``max_records`` of them."""
        if self._closed:
            raise ClosedError("consumer is closed")
        max_records = max_records or self.max_poll_records
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            self._send_fetches()
            out = self._take(max_records)
            remaining_ms = (deadline - time.monotonic()) * 1000
            if out or remaining_ms <= 0:
                return out
            got = self._conn.recv(remaining_ms)
            while got is not None:
                self._on_reply(*got)
                got = self._conn.recv(0)

    def __iter__(self):
        return self

    def __next__(self) -> ConsumerRecord:
        """Next record; StopIteration after consumer_timeout_ms without one."""
        if self._iterated:
            return self._iterated.popleft()
        deadline = time.monotonic() + self.consumer_timeout_ms / 1000
        while True:
            remaining_ms = min((deadline - time.monotonic()) * 1000, 1000.0)
            polled = self.poll(timeout_ms=max(0.0, remaining_ms))
            if polled:
                for records in polled.values():
                    self._iterated.extend(records)
                return self._iterated.popleft()
            if time.monotonic() >= deadline:
                raise StopIteration

    def _send_fetches(self) -> None:
        for tp, state in self._partitions.items():
            if state.fetch_id is not None or state.records:
                continue
            if state.position is None:
                self._reset(tp, state)
            request_id = self._conn.next_request_id()
            self._conn.send(protocol.encode_fetch(request_id, tp.topic, tp.partition,
                                                  state.fetch_offset, self.fetch_max_bytes,
                                                  self.fetch_max_wait_ms))
            state.fetch_id = request_id
            self._fetches[request_id] = tp

    def _on_reply(self, view: protocol.ReplyView, payload) -> None:
        tp = self._fetches.pop(view.request_id, None)
        state = self._partitions.get(tp) if tp is not None else None
        if state is None or state.fetch_id != view.request_id:
            return   # a fetch made stale by seek() or assign()
        state.fetch_id = None
        if isinstance(view.error, OffsetOutOfRangeError) and self.auto_offset_reset != "none":
            self._reset(tp, state)
            return
        if view.error is not None:
            raise view.error
        if payload is not None and len(payload.buffer):
            self._buffer(tp, state, payload.buffer)

    def _buffer(self, tp: TopicPartition, state: _PartitionState, data) -> None:
        for header, batch in iter_entries(data, verify_crc=True):
            records = decode_records(tp.topic, tp.partition, header.base_offset, batch,
                                     offset_min=state.fetch_offset)
            state.records.extend(self._deserialize(records))
            state.fetch_offset = max(state.fetch_offset, header.base_offset + header.record_count)

    def _deserialize(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        if self._key_deserializer is None and self._value_deserializer is None:
            return records
        for record in records:
            if self._key_deserializer is not None and record.key is not None:
                record.key = self._key_deserializer(record.key)
            if self._value_deserializer is not None and record.value is not None:
                record.value = self._value_deserializer(record.value)
        return records

    def _take(self, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Buffered records, starting one partition further each call (fairness)."""
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        items = list(self._partitions.items())
        if not items:
            return out
        self._rotation = (self._rotation + 1) % len(items)
        room = max_records
        for tp, state in items[self._rotation:] + items[:self._rotation]:
            take = min(len(state.records), room)
            if take <= 0:
                continue
            records = [state.records.popleft() for _ in range(take)]
            out[tp] = records
            state.position = records[-1].offset + 1
            room -= take
            if room == 0:
                break
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()
            self._admin.close()
