"""What a client connection's ZeroMQ handshakes with the router said, when they failed.

Client side; the thread that owns the Connection. A CurveZMQ broker answers
nothing at all to a client it does not admit: libzmq ends the handshake, and
the client's request simply gets no reply. Worse, after the broker's ZAP
handler refuses the client's key (ZAP status 400), libzmq drops the
connection's pipe for good and never reconnects, so a send can no longer be
queued. Without more, the client could only time out and guess.

A HandshakeWatch reads the socket's monitor (libzmq's handshake events: one
success per connection made, and the failures) when a request could not be
sent or got no reply, and names the cause:

- ``HANDSHAKE_FAILED_AUTH``, value 400: the broker refused this client's key.
- ``HANDSHAKE_FAILED_PROTOCOL``, mechanism mismatch: one side uses CurveZMQ and
  the other does not.
- ``HANDSHAKE_FAILED_NO_DETAIL``: with keys, the handshake broke off, as it does
  when ``curve_server_key_file`` is not the broker's key.

The first two are final (``final``): libzmq ends such a connection for good and
never reconnects, so the Connection raises HandshakeRefusedError instead of
waiting. With several routers, only once every one of them has refused: the
others may serve the client (one router's --authorized-keys out of date must
not fail a client the rest admit); until then the refusal, naming its router,
is a hint. The third is retried by libzmq at each reconnect and only hints.
``HANDSHAKE_SUCCEEDED`` (``shook_hands``): a broker is there and admitted this
client, so a request it leaves unanswered is slow there, not lost on the way;
but only while that connection lasts (``connected``): ``DISCONNECTED`` says it
dropped (the broker stopped, or the network between), and until a handshake
succeeds again nothing is there to answer. A handshake that succeeded once says
nothing about a broker that has gone since.

Until the connection's first reply (``settled``), waits for a reply look at the
watch every ``CLIENT_HANDSHAKE_CHECK_MS``, so a refusal ends a wait within that
instead of at its timeout; after it, only failed sends and timeouts look.

Bounds: the monitor socket's queue is libzmq's (its HWM; the events are sent
without waiting, so a full queue drops new ones), and ``cause`` reads at most
``CLIENT_HANDSHAKE_EVENTS_READ_MAX`` events per call.
"""

from __future__ import annotations

import zmq
from zmq.utils.monitor import recv_monitor_message

from plinth import limits
from plinth.socket_monitor import monitor_socket

_WATCHED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_DISCONNECTED)
_ZAP_REFUSED = 400
_MECHANISM_MISMATCH = zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH


class HandshakeWatch:
    """The monitor of one client DEALER. Construct before the socket connects."""

    def __init__(self, sock: zmq.Socket, has_keys: bool, endpoints: int = 1):
        """``endpoints``: how many routers the socket connects to."""
        self._socket = sock
        self._has_keys = has_keys
        self._endpoints = endpoints
        self._refused_by: set[str] = set()   # the endpoints that ended the handshake for good
        self._monitor = monitor_socket(sock, _WATCHED)
        self._cause: str | None = None
        self.final = False
        self.settled = False       # a reply came: some handshake succeeded
        self.shook_hands = False   # the monitor said a handshake succeeded (read by cause())
        # The endpoints whose last connection shook hands and has not dropped since (read
        # by cause()).
        self._up: set[str] = set()

    def cause(self) -> str | None:
        """Why the handshakes failed, as the last failure said, or None if none did."""
        for _ in range(limits.CLIENT_HANDSHAKE_EVENTS_READ_MAX):
            if self.final or not self._monitor.poll(0):
                break
            self._note(recv_monitor_message(self._monitor))
        return self._cause

    @property
    def connected(self) -> bool:
        """Whether a connection to a router that shook hands is up now, as the events
        read by the last ``cause()`` said."""
        return bool(self._up)

    def _note(self, event: dict) -> None:
        kind, value = event["event"], event["value"]
        endpoint = _text(event.get("endpoint", b""))
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.shook_hands = True
            self._up.add(endpoint)
            return
        if kind == zmq.EVENT_DISCONNECTED:
            self._up.discard(endpoint)
            return
        if kind in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
            self._refused_by.add(endpoint)
        self.final = len(self._refused_by) >= self._endpoints
        cause = self._cause_of(kind, value)
        if cause is not None:
            self._cause = f"{endpoint}: {cause}" if self._endpoints > 1 else cause

    def _cause_of(self, kind: int, value: int) -> str | None:
        """What one failure event says, or None (a broken-off handshake without keys)."""
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and value == _ZAP_REFUSED:
            return ("the broker refused this client's CurveZMQ key (ZAP status 400): "
                    "its public .key is not in the broker's --authorized-keys")
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return f"the broker refused this client in the handshake (ZAP status {value})"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value != _MECHANISM_MISMATCH:
            return f"the handshake failed on a ZMTP protocol error (libzmq code {value:#x})"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and self._has_keys:
            return ("the handshake failed: this client uses CurveZMQ (curve_key_file) and "
                    "the broker does not")
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            return ("the handshake failed: the broker requires CurveZMQ and this client has "
                    "no keys (curve_key_file, curve_server_key_file)")
        if self._has_keys:
            return ("the CurveZMQ handshake broke off: is curve_server_key_file the broker's "
                    "public .key?")
        return None

    def close(self) -> None:
        self._socket.disable_monitor()
        self._monitor.close(linger=0)


def _text(endpoint) -> str:
    return endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
