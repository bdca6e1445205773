"""The consumer against a scripted broker: a real ROUTER socket on loopback that
answers each fetch from a script, so the consumer's handling of each answer is
checked exactly (no Ray, no shards)."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from plinth import Consumer, limits, protocol
from plinth.client.record_batch import BatchBuilder
from plinth.errors import CorruptDataError, TooManyRequestsError, UnavailableError
from plinth.shards.log_entry import build_entry_header


def entry(base_offset: int, values: list[bytes]) -> bytes:
    builder = BatchBuilder()
    for value in values:
        builder.append(None, value, 1_700_000_000_000, None)
    batch = builder.build()
    return build_entry_header(base_offset, 1_700_000_000_000, len(values), batch) + batch


class ScriptedBroker:
    """Answers the n-th fetch with ``script[n]``: an error, or (payload, high watermark).
    Records when each fetch arrived. Its own thread owns the socket."""

    def __init__(self, script: list):
        self.script = list(script)
        self.fetches: list[tuple[float, int]] = []   # (arrival, offset)
        self._socket = zmq.Context.instance().socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.url = f"tcp://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(50):
                continue
            client, header, *_ = self._socket.recv_multipart()
            view = protocol.decode_request(header)
            self.fetches.append((time.monotonic(), view.offset))
            answer = self.script.pop(0) if self.script else None
            if answer is None:
                continue   # nothing scripted: let the fetch hang
            if isinstance(answer, Exception):
                self._socket.send_multipart([client, protocol.encode_error(view.request_id, answer)])
            else:
                payload, high_watermark = answer
                self._socket.send_multipart(
                    [client, protocol.encode_fetch_reply(view.request_id, high_watermark, 0), payload])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()


@pytest.fixture
def scripted():
    brokers = []

    def make(script):
        brokers.append(ScriptedBroker(script))
        return brokers[-1]

    yield make
    for broker in brokers:
        broker.close()


def consumer_of(broker: ScriptedBroker) -> Consumer:
    consumer = Consumer(broker=broker.url, fetch_max_wait_ms=100, request_timeout_ms=5_000)
    consumer.assign([("t", 0)])
    consumer.seek("t", 0, 0)
    return consumer


def poll_until(consumer: Consumer, count: int, timeout_s: float = 10) -> list:
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        records += [r for rs in consumer.poll(200).values() for r in rs]
    return records


def test_transient_fetch_errors_are_retried_after_a_backoff_and_never_raised(scripted):
    # Given a broker whose first answers are "unavailable" and "too many requests"
    broker = scripted([UnavailableError("shard-0 is restarting"),
                       TooManyRequestsError("queue full"),
                       (entry(0, [b"a", b"b"]), 2)])
    with consumer_of(broker) as consumer:
        # When the consumer polls / Then it gets the records, without an error
        assert [r.value for r in poll_until(consumer, 2)] == [b"a", b"b"]
    # And it asked again each time, from the same offset, after at least the backoff
    arrivals = [t for t, _ in broker.fetches[:3]]
    assert [offset for _, offset in broker.fetches[:3]] == [0, 0, 0]
    backoff_s = limits.CLIENT_RETRY_BACKOFF_MS / 1000
    assert all(later - earlier >= backoff_s * 0.9 for earlier, later in zip(arrivals, arrivals[1:]))


def test_a_non_transient_fetch_error_is_raised_to_the_application(scripted):
    broker = scripted([CorruptDataError("entry at offset 0 fails its CRC")])
    with consumer_of(broker) as consumer:
        with pytest.raises(CorruptDataError, match="fails its CRC"):
            poll_until(consumer, 1)
