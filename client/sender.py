"""The producer's sender thread: the only thread that touches its socket.

It takes ready batches from the accumulator, encodes each as one produce
request (Request header + RecordBatch frame), keeps at most
``in_flight_max`` requests outstanding, matches replies by request id and
resolves the batches' futures. A request without a reply after
``request_timeout_ms`` fails its batch with PlinthTimeoutError.
"""

from __future__ import annotations

import logging
import threading
import time

import zmq

from plinth import protocol
from plinth.client.accumulator import OpenBatch, RecordAccumulator
from plinth.client.connection import Connection
from plinth.errors import ClosedError, PlinthTimeoutError
from plinth.wakeup import Wakeup

log = logging.getLogger(__name__)

_IDLE_POLL_MS = 1000


class Sender:
    def __init__(self, broker: str, acks: int, request_timeout_ms: float, in_flight_max: int):
        self._conn = Connection(broker)
        self.acks = acks
        self.request_timeout_s = request_timeout_ms / 1000
        self.in_flight_max = in_flight_max
        self._in_flight: dict[int, tuple[OpenBatch, float]] = {}
        self._wakeup = Wakeup()
        self._closing = False
        self.accumulator: RecordAccumulator | None = None
        self._thread = threading.Thread(target=self._run, name="plinth-producer-sender", daemon=True)

    def start(self, accumulator: RecordAccumulator) -> None:
        self.accumulator = accumulator
        self._thread.start()

    def wake(self) -> None:
        """Any thread: make the sender look at the accumulator now."""
        self._wakeup.wake()

    def close(self, timeout_s: float | None) -> None:
        """Stop after sending what is pending (caller flushed first)."""
        self._closing = True
        self.wake()
        self._thread.join(timeout_s)
        self._wakeup.close()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._conn.socket, zmq.POLLIN)
        poller.register(self._wakeup.fd, zmq.POLLIN)
        try:
            while not (self._closing and not self._in_flight and self.accumulator.empty()):
                events = dict(poller.poll(self._poll_timeout_ms()))
                if self._wakeup.fd in events:
                    self._wakeup.drain()
                self._read_replies()
                self._send_ready()
                self._expire(time.monotonic())
        except Exception as exc:   # never leave futures hanging
            log.exception("producer sender failed")
            self._fail_all(exc)
        finally:
            self._fail_all(ClosedError("producer closed before the record was sent"))
            self._conn.close()

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic()
        deadline = now + _IDLE_POLL_MS / 1000
        if len(self._in_flight) < self.in_flight_max:
            linger = self.accumulator.next_linger_deadline_s()
            if linger is not None:
                deadline = min(deadline, linger)
        if self._in_flight:
            oldest = min(sent for _, sent in self._in_flight.values())
            deadline = min(deadline, oldest + self.request_timeout_s)
        return max(0, int((deadline - now) * 1000) + 1)

    def _read_replies(self) -> None:
        while self._in_flight:
            got = self._conn.recv(0)
            if got is None:
                return
            view, _ = got
            entry = self._in_flight.pop(view.request_id, None)
            if entry is None:
                continue   # a reply to a request that already timed out
            self.accumulator.complete(entry[0], view.base_offset, view.error)

    def _send_ready(self) -> None:
        room = self.in_flight_max - len(self._in_flight)
        if room <= 0:
            return
        for batch in self.accumulator.drain(room):
            self._send(batch)

    def _send(self, batch: OpenBatch) -> None:
        request_id = self._conn.next_request_id()
        header = protocol.encode_produce(request_id, batch.topic, batch.partition, self.acks)
        self._conn.send(header, batch.builder.build())
        if self.acks == 0:
            self.accumulator.complete(batch, -1)
        else:
            self._in_flight[request_id] = (batch, time.monotonic())

    def _expire(self, now: float) -> None:
        for request_id, (batch, sent) in list(self._in_flight.items()):
            if now - sent > self.request_timeout_s:
                del self._in_flight[request_id]
                self.accumulator.complete(batch, None, PlinthTimeoutError(
                    f"no acknowledgement from {self._conn.url} for {batch.topic}-"
                    f"{batch.partition} within request_timeout_ms="
                    f"{self.request_timeout_s * 1000:.0f}"))

    def _fail_all(self, error: BaseException) -> None:
        for batch, _ in self._in_flight.values():
            if not batch.result.done():
                self.accumulator.complete(batch, None, error)
        self._in_flight.clear()
        if self.accumulator is not None:
            self.accumulator.abort_unsent(error)
