"""A scripted broker for client tests: a real ROUTER socket on loopback, in its own
thread, that answers the n-th request with the n-th step of a script.

A step is a BrokerError (answered as that error) or a function of the request's
decoded request (a protocol.*Request) returning the reply frames. With the script used up, requests get
no answer. Every request is recorded with its arrival time.
"""

from __future__ import annotations

import threading
import time

import zmq

from plinth import protocol
from plinth.errors import BrokerError


class ScriptedBroker:
    def __init__(self, script: list):
        self.script = list(script)
        self.requests: list[tuple[float, protocol.Request]] = []   # (arrival, request)
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
            request = protocol.decode_request(header)
            self.requests.append((time.monotonic(), request))
            if not self.script:
                continue
            step = self.script.pop(0)
            if isinstance(step, BrokerError):
                self._socket.send_multipart([client, protocol.encode_error(request.request_id, step)])
            else:
                self._socket.send_multipart([client, *step(request)])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()
