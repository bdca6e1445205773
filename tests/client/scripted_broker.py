"""A scripted broker for client tests: a real ROUTER socket on loopback, in its own
thread, that answers the n-th request with the n-th step of a script.

A step is a BrokerError (answered as that error) or a function of the decoded
request (a protocol.*Request) returning the reply frames, ``None`` (no answer
for now), or ``Replies(...)``: several replies at once, for this request and
earlier ones, in that order (a broker answering out of order). With the script
used up, requests get no answer. Every request is recorded with its arrival
time; ``wait_for_requests`` waits for them. ``entry`` builds the log entries a
fetch reply carries.
"""

from __future__ import annotations

import threading
import time

import zmq

from plinth import protocol
from plinth.errors import BrokerError
from plinth.format.log_entry import build_entry_header
from plinth.format.record_batch import BatchBuilder

WAIT_S = 10.0   # the bound on waits for requests


def entry(base_offset: int, values: list[bytes]) -> bytes:
    """One log entry (header and batch) holding ``values`` without keys, from ``base_offset``."""
    builder = BatchBuilder()
    for value in values:
        builder.append(None, value, 1_700_000_000_000, None)
    batch = builder.build()
    return build_entry_header(base_offset, 1_700_000_000_000, len(values), batch) + batch


def this_protocols_topics_reply(request) -> list[bytes]:
    """A step: an empty topics reply saying this build's protocol version (the answer
    to the version question an admin asks before a guarded call)."""
    return [protocol.encode_topics_reply(request.request_id, [])]


class Replies(list):
    """A step's result: several replies (each a list of frames), sent in this order."""


def bound_router(url: str | None) -> tuple[zmq.Socket, str]:
    """A ROUTER socket bound at ``url`` (a broker restarting at its address), or at a
    free loopback port; with the URL it is bound at."""
    socket = zmq.Context.instance().socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    if url is None:
        return socket, f"tcp://127.0.0.1:{socket.bind_to_random_port('tcp://127.0.0.1')}"
    socket.bind(url)
    return socket, url


class ScriptedBroker:
    def __init__(self, script: list, url: str | None = None):
        """``url``: bind there (a broker restarting at its address); default a free port."""
        self.script = list(script)
        self.requests: list[tuple[float, protocol.Request]] = []   # (arrival, request)
        self._arrived = threading.Condition()
        self._socket, self.url = bound_router(url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(50):
                continue
            client, header, *_ = self._socket.recv_multipart()
            request = protocol.decode_request(header)
            with self._arrived:
                self.requests.append((time.monotonic(), request))
                self._arrived.notify_all()
            if not self.script:
                continue
            step = self.script.pop(0)
            if isinstance(step, BrokerError):
                self._socket.send_multipart([client, protocol.encode_error(request.request_id, step)])
                continue
            frames = step(request)
            for reply in (frames if isinstance(frames, Replies) else [frames] if frames else []):
                self._socket.send_multipart([client, *reply])

    def wait_for_requests(self, count: int) -> list[protocol.Request]:
        """The first ``count`` requests, once they have arrived (at most WAIT_S)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, WAIT_S):
                raise AssertionError(f"the broker got {len(self.requests)} requests within "
                                     f"{WAIT_S} s, not {count}")
            return [request for _, request in self.requests[:count]]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()
