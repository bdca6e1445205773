"""Locust load test of a Plinth broker: producers and consumers over ZeroMQ.

Shows the request rate and response times one broker sustains while many
clients produce and fetch record batches at once, in Locust's statistics.
The users speak the wire protocol (schemas/protocol.capnp) themselves over
gevent-friendly ``zmq.green`` DEALER sockets, one request in flight each, so
the Plinth client library and Ray stay out of the Locust process.

    plinth serve &
    locust -f loadtest/locustfile.py --headless -u 6 -r 6 -t 20s \\
        --host tcp://127.0.0.1:7400 --only-summary

``ProducerUser`` (weight 2) re-sends one RecordBatch of PLINTH_BATCH_RECORDS
records of PLINTH_VALUE_BYTES-byte values (no keys), built once per user, to
the topic's partitions in turn, acks=1, and waits for the acknowledgement
(after fsync with the broker's default policy). ``ConsumerUser`` (weight 1)
reads every partition from offset 0 in turn with long-poll fetches, walks
each reply's log entries (CRC checked, records not decoded) and continues
from the last entry's end offset.

Statistics: a "produce" and a "fetch" row named after the topic, and a
"fetch" row "<topic> (empty)" for long polls that found no records (their
response time is mostly the PLINTH_FETCH_WAIT_MS wait). The content size is
the record-batch bytes moved: sent for produce, received for fetch. A "createTopic" row records the topic's creation at test start
(topicExists counts as success). Records produced and fetched, and their
rates, are logged when Locust quits ("plinth records: ...").

Environment: PLINTH_TOPIC (default "locust"), PLINTH_PARTITIONS (4),
PLINTH_BATCH_RECORDS (1000), PLINTH_VALUE_BYTES (100), PLINTH_FETCH_WAIT_MS
(500), PLINTH_FETCH_BYTES (4 MiB), PLINTH_REQUEST_TIMEOUT_MS (5000: a
request without a reply by then fails, and the user reopens its socket),
PLINTH_PRODUCE_REQUESTS_PER_S (0: each producer sends its next batch as soon as
the last is acknowledged; else at most this many a second per producer, Locust's
constant_throughput, to soak a shared machine at a rate: records/s = producers x
this x PLINTH_BATCH_RECORDS).
"""

from __future__ import annotations

# Locust first: importing it monkey-patches the standard library for gevent,
# which must happen before anything imports ssl (pycapnp does, via asyncio).
from locust import User, constant, constant_throughput, events, task  # isort: skip
from locust.runners import WorkerRunner  # isort: skip

import itertools
import logging
import os
import sys
import time

import zmq.green as zmq

from plinth import limits, protocol
from plinth.format.record_batch import BatchBuilder
from plinth.errors import MalformedReplyError, PlinthError, PlinthTimeoutError, TopicExistsError
from plinth.format.log_entry import iter_entries

TOPIC = os.environ.get("PLINTH_TOPIC", "locust")
PARTITIONS = int(os.environ.get("PLINTH_PARTITIONS", "4"))
BATCH_RECORDS = int(os.environ.get("PLINTH_BATCH_RECORDS", "1000"))
VALUE_BYTES = int(os.environ.get("PLINTH_VALUE_BYTES", "100"))
FETCH_WAIT_MS = int(os.environ.get("PLINTH_FETCH_WAIT_MS", "500"))
FETCH_BYTES = int(os.environ.get("PLINTH_FETCH_BYTES", str(limits.FETCH_BYTES_DEFAULT)))
REQUEST_TIMEOUT_MS = int(os.environ.get("PLINTH_REQUEST_TIMEOUT_MS", "5000"))
PRODUCE_REQUESTS_PER_S = float(os.environ.get("PLINTH_PRODUCE_REQUESTS_PER_S", "0"))
ACKS = 1

log = logging.getLogger(__name__)

# Records moved by this process's users since the last report to the master
# (distributed runs) or since the start (everything else).
_records = {"produce": 0, "fetch": 0}
_context_by_pid: dict[int, zmq.Context] = {}


def _context() -> zmq.Context:
    """This process's green context, made after any fork (Locust --processes)."""
    pid = os.getpid()
    if pid not in _context_by_pid:
        _context_by_pid[pid] = zmq.Context()
    return _context_by_pid[pid]


class _Link:
    """A DEALER socket to the router, with one request in flight at a time.

    Belongs to one greenlet. Every wait is bounded by ``poll`` (zmq.green
    ignores RCVTIMEO); after a timeout the socket is replaced, so a late reply
    can never be taken for the next request's.
    """

    def __init__(self, url: str):
        self.url = url
        self._ids = itertools.count(1)
        self._socket = self._open()

    def _open(self) -> zmq.Socket:
        socket = _context().socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, limits.FRAME_BYTES_MAX)
        socket.connect(self.url)
        return socket

    def close(self) -> None:
        self._socket.close(linger=0)

    def call(self, encode, *args, payload: bytes | None = None, timeout_ms: int):
        """Send ``encode(request_id, *args)`` [+ payload]; return (ReplyView, payload or None).

        Raises PlinthTimeoutError without a reply within ``timeout_ms``, the
        reply's BrokerError if it carries one, MalformedReplyError if the
        reply is not one for this request.
        """
        request_id = next(self._ids)
        header = encode(request_id, *args)
        frames = [header] if payload is None else [header, payload]
        deadline = time.monotonic() + timeout_ms / 1000
        if not self._socket.poll(timeout_ms, zmq.POLLOUT):
            self._timed_out(request_id, timeout_ms, "send")
        self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
        if not self._socket.poll(remaining_ms, zmq.POLLIN):
            self._timed_out(request_id, timeout_ms, "reply")
        reply = self._socket.recv_multipart(copy=False)
        view = protocol.decode_reply(reply[0].buffer)
        if view.request_id != request_id:
            raise MalformedReplyError(
                f"{self.url} replied to request {view.request_id} while request "
                f"{request_id} was the only one in flight")
        if view.error is not None:
            raise view.error
        return view, (reply[1].buffer if len(reply) > 1 else None)

    def _timed_out(self, request_id: int, timeout_ms: int, what: str):
        self._socket.close(linger=0)
        self._socket = self._open()
        raise PlinthTimeoutError(
            f"no {what} for request {request_id} to {self.url} within {timeout_ms} ms")


def _fire(environment, request_type: str, name: str, started_s: float,
          length_bytes: int, exception: BaseException | None) -> None:
    environment.events.request.fire(
        request_type=request_type, name=name,
        response_time=(time.perf_counter() - started_s) * 1000,
        response_length=length_bytes, exception=exception, context={})


def _build_batch(record_count: int, value_bytes: int) -> bytes:
    builder = BatchBuilder()
    value, timestamp_ms = os.urandom(value_bytes), int(time.time() * 1000)
    for _ in range(record_count):
        builder.append(None, value, timestamp_ms)
    return builder.build()


def _partition_cycle(ordinal: int):
    """Every partition in turn, starting at the user's own, so users spread out."""
    first = ordinal % PARTITIONS
    return itertools.cycle([(first + i) % PARTITIONS for i in range(PARTITIONS)])


class ProducerUser(User):
    weight = 2
    wait_time = (constant(0) if PRODUCE_REQUESTS_PER_S <= 0
                 else constant_throughput(PRODUCE_REQUESTS_PER_S))
    host = limits.BROKER_URL_DEFAULT
    _ordinals = itertools.count()

    def on_start(self) -> None:
        self._link = _Link(self.host)
        self._batch = _build_batch(BATCH_RECORDS, VALUE_BYTES)
        self._partitions = _partition_cycle(next(self._ordinals))

    def on_stop(self) -> None:
        self._link.close()

    @task
    def produce(self) -> None:
        partition = next(self._partitions)
        started_s = time.perf_counter()
        try:
            self._link.call(protocol.encode_produce, TOPIC, partition, ACKS,
                            payload=self._batch, timeout_ms=REQUEST_TIMEOUT_MS)
        except (PlinthError, zmq.ZMQError) as exc:
            _fire(self.environment, "produce", TOPIC, started_s, 0, exc)
            return
        _records["produce"] += BATCH_RECORDS
        _fire(self.environment, "produce", TOPIC, started_s, len(self._batch), None)


class ConsumerUser(User):
    weight = 1
    wait_time = constant(0)
    host = limits.BROKER_URL_DEFAULT
    _ordinals = itertools.count()

    def on_start(self) -> None:
        self._link = _Link(self.host)
        self._partitions = _partition_cycle(next(self._ordinals))
        self._offsets = [0] * PARTITIONS

    def on_stop(self) -> None:
        self._link.close()

    @task
    def fetch(self) -> None:
        partition = next(self._partitions)
        offset = self._offsets[partition]
        started_s, response_ms = time.perf_counter(), None
        try:
            _, payload = self._link.call(
                protocol.encode_fetch, TOPIC, partition, offset, FETCH_BYTES, FETCH_WAIT_MS,
                timeout_ms=REQUEST_TIMEOUT_MS + FETCH_WAIT_MS)
            response_ms = (time.perf_counter() - started_s) * 1000
            end_offset = offset
            for header, _batch in iter_entries(payload if payload is not None else b""):
                end_offset = header.end_offset
        except (PlinthError, zmq.ZMQError) as exc:
            _fire(self.environment, "fetch", TOPIC, started_s, 0, exc)
            return
        self._offsets[partition] = end_offset
        _records["fetch"] += end_offset - offset
        name = TOPIC if end_offset > offset else f"{TOPIC} (empty)"
        # Response time up to the reply, not the CRC checks after it.
        self.environment.events.request.fire(
            request_type="fetch", name=name, response_time=response_ms,
            response_length=len(payload) if payload is not None else 0,
            exception=None, context={})


@events.init.add_listener
def _check_host(environment, **_kwargs) -> None:
    """Ends Locust at once, in one line, for a --host that is not tcp://HOST:PORT:
    ZeroMQ raised "Protocol not supported" from every user, each with a traceback.
    (SystemExit passes Locust's event hook, which logs any Exception and goes on.)"""
    from plinth.client.connection import check_url

    try:
        check_url(environment.host or limits.BROKER_URL_DEFAULT, "--host")
    except ValueError as exc:
        sys.exit(f"error: {exc}")


@events.test_start.add_listener
def _create_topic(environment, **_kwargs) -> None:
    """Create the topic on every node at test start; one that exists is fine."""
    link = _Link(environment.host or limits.BROKER_URL_DEFAULT)
    started_s, exception = time.perf_counter(), None
    try:
        link.call(protocol.encode_create_topic, TOPIC, PARTITIONS, {},
                  timeout_ms=REQUEST_TIMEOUT_MS)
    except TopicExistsError:
        pass
    except (PlinthError, zmq.ZMQError) as exc:
        exception = exc
        log.error("cannot create topic %r with %d partitions: %s", TOPIC, PARTITIONS, exc)
    finally:
        link.close()
    _fire(environment, "createTopic", TOPIC, started_s, 0, exception)


@events.report_to_master.add_listener
def _send_records(client_id, data, **_kwargs) -> None:
    data["plinth_records"] = dict(_records)
    for kind in _records:
        _records[kind] = 0


@events.worker_report.add_listener
def _add_records(client_id, data, **_kwargs) -> None:
    for kind, count in data.get("plinth_records", {}).items():
        _records[kind] += count


@events.quitting.add_listener
def _log_records(environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    total = environment.stats.total
    seconds = max(total.last_request_timestamp - total.start_time, 1e-3) \
        if total.last_request_timestamp else float("inf")
    log.info("plinth records: produced %d (%.0f records/s), fetched %d (%.0f records/s) "
             "in %.1f s", _records["produce"], _records["produce"] / seconds,
             _records["fetch"], _records["fetch"] / seconds, seconds)
