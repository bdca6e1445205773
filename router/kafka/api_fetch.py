"""Fetch: Plinth's log as Kafka record batches.

Runs on the Kafka listener's event loop thread (gateway.py). Each partition
asked for becomes one Plinth fetch; the shard answers with a run of log
entries (format/log_entry.py). A Kafka batch in it is served as stored, a
view into the shard's reply (zero copy: the codec writes the views as they
are); a Plinth batch is converted to one uncompressed Kafka batch in C
(format/kafka_batch.py), after its entry CRC is checked, because the
converted batch gets a fresh Kafka CRC that would hide a flip in the stored
one. A stored Kafka batch keeps its own CRC, which Kafka clients check.

Many partitions. The listener is one Plinth client for all its connections, so
its fetches in flight are bounded by the router (CLIENT_REQUESTS_IN_FLIGHT_MAX
and CLIENT_FETCH_BYTES_IN_FLIGHT_MAX, each fetch counted at its maximum, at
least FETCH_BYTES_COUNTED_MIN). A Kafka fetch's partitions therefore go
through a window, in the request's order: at most
KAFKA_FETCH_PARTITIONS_IN_FLIGHT_MAX Plinth fetches and
KAFKA_FETCH_BYTES_IN_FLIGHT_MAX counted bytes at once. Sent all at once, a
librdkafka fetch of 1000 partitions (1 MiB each) met the router's fetch bytes
after 256 of them; in the fetches after, 600 to 744 were refused, beside the
parked fetches of the fetch before, and were answered empty although they held
records, read in bursts every few seconds. The window's cost is a round trip
per window's worth of partitions. Once the answers in hand hold the response's
max_bytes, the partitions not yet fetched are left empty, as
keep_within_response_bytes would drop their batches anyway (a small batch that
would still have fitted after a cut-short partition waits for the next fetch).

Waiting (Kafka's max_wait_ms and min_bytes): every partition is first fetched
without waiting; if that gives fewer than min_bytes and the client allows a
wait, the partitions with room left (their partition_max_bytes) are fetched
again from where their records end, parked at their shards, at most
KAFKA_FETCH_PARKED_PARTITIONS_MAX at once, in the request's order (one that
ends makes room for the next), and the answer goes once min_bytes have come in
all, or max_wait_ms ran out. So a fetch with min_bytes 1 is answered as soon as
a record arrives in any parked partition, as Kafka answers it.

Parked fetches outlive their Kafka fetch: Plinth has no way to call one back,
so once the Kafka fetch is answered the others stay at their shards to the end
of their wait, counted against the listener's requests and fetch bytes in
flight. The connection holds them (``connection.state``, by partition) until
their replies come, and its next fetch takes over each one still parked at the
offset it asks from: it waits for that reply instead of parking a second fetch
(and parks again for its own time left if that one's wait ends first). Before,
each early answer left its partitions parked and the next fetch parked as many
again: at 16 partitions those orphans took the listener's whole fetch bytes
within a few fetches, the new parked fetches were refused, and a record
arriving in a refused partition waited out max_wait_ms (KafkaJS: 5 s). A
connection holds at most KAFKA_FETCH_PARKED_PARTITIONS_MAX parked fetches;
partitions beyond that bound (a fetch of more partitions, or a connection
still holding others) are not parked, and a record arriving there is answered
by the next fetch, within max_wait_ms. A partition whose parked fetch answers
with records while min_bytes are not there yet is asked again from its new
end, parked for the time left, so that a consumer with a large fetch.min.bytes
gets few large answers, as from Kafka, not one per record (a shard answers a
parked fetch at its first new batch). A parked fetch that has not answered at
the end adds nothing to this answer; its reply, held, serves the next fetch
at the same offset (fetching does not consume). A parked fetch asks for at
most KAFKA_FETCH_PARKED_PARTITION_BYTES_MAX. A later round that fails (the
partition moved, say) or does not fit the partition's room ends that
partition's answer with what it had; the next fetch meets the cause again.

A partition the router still refuses because the listener has too many fetch
bytes in flight (tooManyRequests: other connections' fetches, which the window
does not see) is answered empty without an error, as a partition with nothing
new: the consumer fetches again. Kafka has no partition error for it, and
librdkafka gives THROTTLING_QUOTA_EXCEEDED to the application as a failure.

The response's max_bytes (Kafka's fetch.max.bytes) is kept as Kafka keeps it:
partitions are fetched through the window, then their batches are taken in the
request's order while they fit; the first batch of the first partition with
data goes whatever its size, so a consumer always makes progress. A partition
cut short is answered with the batches that fit (or none), without error: the
client fetches it again from where its records end.

A negative partition is UNKNOWN_TOPIC_OR_PARTITION and a negative
partition_max_bytes INVALID_REQUEST, for that partition only, never fetched
(request_values.py; Kafka's log read throws for the latter, which it answers
as that partition's UNKNOWN_SERVER_ERROR).

Fetch sessions (KIP-227) are declined: every answer has session id 0, so
clients send full fetches.
"""

from __future__ import annotations

import asyncio
import struct

from plinth import limits, protocol
from plinth.errors import CorruptDataError, TooManyRequestsError
from plinth.format.kafka_batch import kafka_batch_from_plinth
from plinth.format.log_entry import BATCH_FORMAT_KAFKA_V2, check_entry_crc, scan_whole_entries
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import ask
from plinth.router.kafka.plinth_errors import kafka_code
from plinth.router.kafka.request_values import fetch_bytes_error, partition_error
from plinth.router.requests_in_flight import counted_bytes

NO_SESSION = 0
_BASE_OFFSET, _LAST_OFFSET_DELTA = struct.Struct(">q"), struct.Struct(">i")
UNKNOWN_LEADER_EPOCH = -1


class _PartitionFetch:
    """One partition's part of a Kafka fetch: its request and, once answered, its answer
    (the batches of every round). ``offset``: where the next round reads from;
    ``ended``: no round more (it failed, or was refused or cut short)."""

    __slots__ = ("topic", "partition", "offset", "bytes_max", "answer", "records_bytes",
                 "ended")

    def __init__(self, topic: str, partition: int, offset: int, bytes_max: int):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.bytes_max = bytes_max
        self.records_bytes = 0
        self.ended = False
        self.answer = {"partition_index": partition, "error_code": kafka.NONE,
                       "high_watermark": -1, "last_stable_offset": -1, "log_start_offset": -1,
                       "aborted_transactions": [], "preferred_read_replica": -1,
                       "records": []}


async def fetch(gateway, header, body: dict, connection) -> dict:
    parts, responses = [], []
    for topic in body.get("topics") or []:
        answers = []
        responses.append({"topic": topic["topic"], "partitions": answers})
        for wanted in topic.get("partitions") or []:
            bytes_max = wanted.get("partition_max_bytes") or 0
            part = _PartitionFetch(topic["topic"], wanted["partition"], wanted["fetch_offset"],
                                   min(bytes_max, limits.FETCH_BYTES_MAX))
            answers.append(part.answer)
            refusal = partition_error(part.partition) or fetch_bytes_error(bytes_max)
            if refusal != kafka.NONE:
                part.answer["error_code"] = refusal   # answered so, never fetched
                continue
            parts.append(part)
    min_bytes = max(body.get("min_bytes", 1), 1)
    wait_ms = min(max(body.get("max_wait_ms", 0), 0), limits.KAFKA_FETCH_WAIT_MS_MAX)
    response_bytes_max = body.get("max_bytes", limits.FETCH_BYTES_MAX)
    await _fetch_at_once(gateway, parts, response_bytes_max)
    if wait_ms and sum(part.records_bytes for part in parts) < min_bytes:
        await _fetch_parked(gateway, connection, parts, wait_ms, min_bytes)
    keep_within_response_bytes(parts, response_bytes_max)
    return {"throttle_time_ms": 0, "error_code": kafka.NONE, "session_id": NO_SESSION,
            "responses": responses}


def keep_within_response_bytes(parts: list[_PartitionFetch], response_bytes_max: int) -> None:
    """Drop the batches beyond ``response_bytes_max``, in the request's order; the first
    batch of the answer stays whatever its size (Kafka's rule, so a consumer progresses)."""
    taken_bytes = 0
    for part in parts:
        kept = []
        for batch in part.answer["records"]:
            if taken_bytes and taken_bytes + len(batch) > response_bytes_max:
                break
            kept.append(batch)
            taken_bytes += len(batch)
        if len(kept) < len(part.answer["records"]):
            part.answer["records"] = kept
            part.records_bytes = sum(len(batch) for batch in kept)


async def _fetch_at_once(gateway, parts: list[_PartitionFetch], response_bytes_max: int) -> None:
    """Fetch each of ``parts`` once without waiting, in the request's order, through a
    window of at most KAFKA_FETCH_PARTITIONS_IN_FLIGHT_MAX fetches and
    KAFKA_FETCH_BYTES_IN_FLIGHT_MAX counted bytes at once; once the answers in hand
    hold ``response_bytes_max``, the partitions not yet fetched end empty (module
    docstring). Listener's event loop."""
    in_flight: dict[asyncio.Task, tuple[_PartitionFetch, int]] = {}   # -> (part, counted)
    in_flight_bytes = taken_bytes = 0
    try:
        for index, part in enumerate(parts):
            counted = counted_bytes(part.bytes_max)
            while in_flight and (len(in_flight) >= limits.KAFKA_FETCH_PARTITIONS_IN_FLIGHT_MAX
                                 or in_flight_bytes + counted
                                 > limits.KAFKA_FETCH_BYTES_IN_FLIGHT_MAX):
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    done_part, done_counted = in_flight.pop(task)
                    task.result()   # a handler's bug fails the fetch, as before
                    in_flight_bytes -= done_counted
                    taken_bytes += done_part.records_bytes
            if taken_bytes and taken_bytes >= response_bytes_max:
                # keep_within_response_bytes would drop theirs anyway: not read for nothing
                # (with nothing taken, the first batch goes whatever the max: no stop)
                for unread in parts[index:]:
                    unread.ended = True
                break
            in_flight[asyncio.get_running_loop().create_task(_fetch_one(gateway, part))] = (
                part, counted)
            in_flight_bytes += counted
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        for task in in_flight:
            task.cancel()


async def _fetch_parked(gateway, connection, parts: list[_PartitionFetch], wait_ms: int,
                        min_bytes: int) -> None:
    """Fetch ``parts`` parked at their shards, each again from its new end while it
    answers with records, until min_bytes came in all or ``wait_ms`` ran out; a
    partition's fetch still parked for ``connection`` from its fetch before, at the
    same offset, is waited for, not parked again (module docstring). Listener's
    event loop."""
    loop = asyncio.get_running_loop()
    deadline_s = loop.time() + wait_ms / 1000
    held = _held_parked(connection)
    tasks: dict[asyncio.Task, tuple[_PartitionFetch, bool]] = {}   # -> (part, taken over)
    unparked = iter(parts)

    def park(part: _PartitionFetch) -> None:
        wait_left_ms = int((deadline_s - loop.time()) * 1000)
        if wait_left_ms <= 0 or part.ended or part.records_bytes >= part.bytes_max:
            return
        parked = held.get((part.topic, part.partition))
        if parked is not None and parked.offset == part.offset and not parked.task.done():
            tasks[parked.task] = (part, True)
        elif parked is not None or len(held) < limits.KAFKA_FETCH_PARKED_PARTITIONS_MAX:
            tasks[_park_one(gateway, held, part, wait_left_ms)] = (part, False)
        # else: the connection holds its bound of parked fetches; this one waits for the next fetch

    def park_more() -> None:
        """Park the next partitions in the request's order, up to the limit at once."""
        while len(tasks) < limits.KAFKA_FETCH_PARKED_PARTITIONS_MAX:
            part = next(unparked, None)
            if part is None:
                return
            park(part)

    park_more()
    try:
        while tasks and sum(part.records_bytes for part in parts) < min_bytes:
            done, _ = await asyncio.wait(tasks, timeout=max(deadline_s - loop.time(), 0),
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                return   # max_wait_ms ran out
            for task in done:
                part, taken_over = tasks.pop(task)
                if _take_reply(part, *task.result()) or taken_over:
                    # it had records: there may be more by now; or the fetch before's
                    # wait ended before this one's: park for the time left
                    park(part)
            park_more()   # the place of one refused or ended
    finally:
        if connection is None:   # no later fetch can take them over
            for task in tasks:
                task.cancel()


class _Parked:
    """A Plinth fetch parked at its shard for a Kafka connection: the offset it asks
    from and the task that awaits its reply, ``(reply, payload)``."""

    __slots__ = ("offset", "task")

    def __init__(self, offset: int, task: asyncio.Task):
        self.offset, self.task = offset, task


def _held_parked(connection) -> dict:
    """``connection``'s Plinth fetches still parked, by (topic, partition), at most
    KAFKA_FETCH_PARKED_PARTITIONS_MAX: they outlive the Kafka fetch that parked them
    (the shard keeps them to the end of their wait), and its next fetch takes them
    over. A fresh dict without a connection (a test's direct call)."""
    if connection is None:
        return {}
    return connection.state.setdefault("kafka_parked_fetches", {})


def _park_one(gateway, held: dict, part: _PartitionFetch, wait_ms: int) -> asyncio.Task:
    """Park ``part``'s fetch from ``part.offset`` for ``wait_ms``, held in ``held`` until
    its reply comes (in place of one at another offset, which a reply is on its way
    to: the log moved past it). Listener's event loop."""
    key = (part.topic, part.partition)
    room_bytes = min(part.bytes_max - part.records_bytes,
                     limits.KAFKA_FETCH_PARKED_PARTITION_BYTES_MAX)
    task = asyncio.get_running_loop().create_task(
        _ask_fetch(gateway, part.topic, part.partition, part.offset, room_bytes, wait_ms))
    parked = held[key] = _Parked(part.offset, task)

    def unhold(_task) -> None:
        if held.get(key) is parked:
            del held[key]

    task.add_done_callback(unhold)
    return task


async def _fetch_one(gateway, part: _PartitionFetch) -> bool:
    """One round of ``part``'s fetch without waiting, from ``part.offset``: its batches
    are added to its answer. Returns whether it got any. Listener's event loop."""
    reply, payload = await _ask_fetch(gateway, part.topic, part.partition, part.offset,
                                      part.bytes_max - part.records_bytes, 0)
    return _take_reply(part, reply, payload)


async def _ask_fetch(gateway, topic: str, partition: int, offset: int, room_bytes: int,
                     wait_ms: int) -> tuple:
    """One Plinth fetch and its ``(reply, payload)``. Listener's event loop."""
    return await ask(
        gateway.backend, lambda rid: protocol.encode_fetch(
            rid, topic, partition, offset, room_bytes, wait_ms),
        timeout_ms=wait_ms + limits.KAFKA_BACKEND_REQUEST_TIMEOUT_MS)


def _take_reply(part: _PartitionFetch, reply, payload) -> bool:
    """Add a Plinth fetch's reply to ``part``'s answer; returns whether it had batches.
    The first round (nothing taken yet) answers a failure with its Kafka code; a later
    one ends the partition's answer as it is (module docstring)."""
    first = not part.answer["records"]
    answer = part.answer
    if isinstance(reply.error, TooManyRequestsError):
        part.ended = True   # the listener's fetch bytes are all in flight: nothing new, for now
        return False
    if reply.error is not None:
        part.ended = True
        if first:
            answer["error_code"] = kafka_code(reply.error)
        return False
    answer["high_watermark"] = answer["last_stable_offset"] = reply.high_watermark
    answer["log_start_offset"] = reply.log_start_offset
    if payload is None or not len(payload.buffer):
        return False
    try:
        batches = kafka_batches(payload.buffer)
    except CorruptDataError:
        part.ended = True
        if first:
            answer["error_code"] = kafka.CORRUPT_MESSAGE
        return False
    got_bytes = sum(len(batch) for batch in batches)
    if not first and part.records_bytes + got_bytes > part.bytes_max:
        part.ended = True   # only the first batch of a partition may go over its max
        return False
    answer["records"].extend(batches)
    part.records_bytes += got_bytes
    part.offset = _next_offset(batches[-1])
    return bool(batches)


def _next_offset(batch) -> int:
    """The offset after a Kafka RecordBatch v2: its baseOffset (int64 at byte 0) plus
    its lastOffsetDelta (int32 at byte 23) plus one."""
    base_offset, = _BASE_OFFSET.unpack_from(batch, 0)
    last_offset_delta, = _LAST_OFFSET_DELTA.unpack_from(batch, 23)
    return base_offset + last_offset_delta + 1


def kafka_batches(entries) -> list:
    """The Kafka batches of a run of log entries: stored Kafka batches as views into
    ``entries``, Plinth batches converted (their entry CRC checked first). Raises
    CorruptDataError for a damaged entry."""
    batches = []
    for position, header, batch in scan_whole_entries(entries, verify_crc=False):
        if header.attributes == BATCH_FORMAT_KAFKA_V2:
            batches.append(batch)
        else:
            check_entry_crc(header, batch, position)
            batches.append(kafka_batch_from_plinth(batch, header.base_offset,
                                                   UNKNOWN_LEADER_EPOCH))
    return batches
