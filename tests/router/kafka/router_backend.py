"""The router, faked for the Kafka handlers' tests: a backend (router/kafka/backend.py's
PlinthBackend, as a handler sees it through its gateway) whose replies go through
Plinth's real encodings, and the gateway that carries it."""

from __future__ import annotations

from plinth import protocol


class RouterBackend:
    """Plays the router: decodes each request, records it in ``asked`` and its wait in
    ``timeouts_ms``, and answers it with the reply ``answer`` encodes, decoded as the
    real backend decodes the router's. Subclasses say what the router answers."""

    def __init__(self):
        self.asked: list[protocol.Request] = []
        self.timeouts_ms: list[int] = []
        self._next = 0

    def next_request_id(self) -> int:
        self._next += 1
        return self._next

    async def call(self, request_id: int, header: bytes, payload=None, timeout_ms: int = 0,
                   change: bool = False):
        request = protocol.decode_request(header)
        self.asked.append(request)
        self.timeouts_ms.append(timeout_ms)
        return protocol.decode_reply(self.answer(request_id, request)), None

    def answer(self, request_id: int, request: protocol.Request) -> bytes:
        """The encoded reply to ``request``."""
        raise NotImplementedError


class Gateway:
    """What a handler reaches the backend through (router/kafka/gateway.py's
    KafkaGateway)."""

    def __init__(self, backend: RouterBackend):
        self.backend = backend
