"""The listener's security hooks (router/kafka/listener.py) over real sockets on
127.0.0.1: with an ssl context it speaks only TLS; a connection's own request
bound (``first_request_bytes_max``) closes it at a bigger request until a
handler lifts it; a handler's CloseConnection closes its connection only."""

from __future__ import annotations

import socket
import ssl

import pytest

from plinth.router.kafka import codec
from plinth.router.kafka.codec import RequestHeader
from plinth.router.kafka.listener import CloseConnection, KafkaListener
from plinth.router.kafka.messages import API_VERSIONS, METADATA
from tests.router.kafka.self_signed import self_signed_certificate

WAIT_S = 10.0
BOUND_BYTES = 64


async def handler(connection, header, body):
    """ApiVersions answers and lifts the connection's bound; Metadata closes it."""
    if header.api_key == METADATA.key:
        raise CloseConnection("metadata is refused here")
    connection.request_bytes_max = None
    return {"api_keys": codec.supported_api_keys()}


@pytest.fixture
def tls_listener(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = KafkaListener("127.0.0.1", 0, handler, ssl_context=context,
                             first_request_bytes_max=BOUND_BYTES)
    listener.start()
    yield listener, ssl.create_default_context(cafile=str(cert))
    listener.stop()


def frame(api, version: int, correlation_id: int, client_id: str = "t") -> bytes:
    header = RequestHeader(api.key, version, correlation_id, client_id)
    return b"".join(bytes(p) for p in codec.encode_request(header, {}))


def answered(sock, correlation_id: int) -> bool:
    """Whether the next response is ``correlation_id``'s (False: the peer closed)."""
    size = sock.recv(4)
    if not size:
        return False
    body = b""
    while len(body) < int.from_bytes(size, "big"):
        body += sock.recv(65536)
    return int.from_bytes(body[:4], "big") == correlation_id


def tls_connect(listener, client_context) -> ssl.SSLSocket:
    raw = socket.create_connection(listener.address, timeout=WAIT_S)
    return client_context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_a_tls_listener_answers_over_tls_and_refuses_plaintext(tls_listener):
    listener, client_context = tls_listener
    with tls_connect(listener, client_context) as sock:
        sock.sendall(frame(API_VERSIONS, 0, 1))
        assert answered(sock, 1)
    with socket.create_connection(listener.address, timeout=WAIT_S) as plain:
        plain.sendall(frame(API_VERSIONS, 0, 2))
        assert received_until_closed(plain)[:1] in (b"", TLS_ALERT)   # no Kafka answer


TLS_ALERT = b"\x15"   # a TLS record of type alert


def received_until_closed(sock) -> bytes:
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def test_a_request_over_the_connections_bound_closes_it_until_a_handler_lifts_it(tls_listener):
    listener, client_context = tls_listener
    big = frame(API_VERSIONS, 0, 1, client_id="x" * (2 * BOUND_BYTES))
    # Given a fresh connection, When its first request is over the bound, Then it is closed
    with tls_connect(listener, client_context) as sock:
        sock.sendall(big)
        assert not answered(sock, 1)
    # Given a connection whose handler lifted the bound, Then the same request is answered
    with tls_connect(listener, client_context) as sock:
        sock.sendall(frame(API_VERSIONS, 0, 2))
        assert answered(sock, 2)
        sock.sendall(big)
        assert answered(sock, 1)


def test_close_connection_from_a_handler_closes_that_connection_only(tls_listener, caplog):
    listener, client_context = tls_listener
    with tls_connect(listener, client_context) as bystander:
        with tls_connect(listener, client_context) as sock:
            sock.sendall(frame(METADATA, 1, 1))
            assert not answered(sock, 1)
        bystander.sendall(frame(API_VERSIONS, 0, 2))
        assert answered(bystander, 2)
    assert "metadata is refused here" in caplog.text
