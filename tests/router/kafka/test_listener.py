"""The Kafka listener's transport (router/kafka/listener.py) over real sockets on
127.0.0.1: a real kafka-python client negotiates versions with it; responses
stay in request order when handlers finish out of order; the in-flight and
connection bounds hold; oversized, negative and garbage frames close only
their own connection and the listener keeps serving."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from plinth.router.kafka import codec, error_codes
from plinth.router.kafka.listener import KafkaListener
from plinth.router.kafka.messages import API_VERSIONS, HEARTBEAT, METADATA, PRODUCE

WAIT_S = 10.0          # the bound on every wait for a condition or a reply


class TinyHandler:
    """Answers ApiVersions and Metadata (this listener as broker 0); a Heartbeat
    waits for its gate (if any), then echoes its ``generation_id`` as its error
    code; Produce acks=0 gets no response. Records the order in which handlers
    finished."""

    def __init__(self):
        self.address = ("127.0.0.1", 0)
        self.finished: list[int] = []          # correlation ids, in finishing order
        self.started = 0
        self.gate: threading.Event | None = None   # when given: every Heartbeat waits for it
        self.gates: dict[int, threading.Event] = {}   # or one per correlation id

    async def __call__(self, connection, header, body):
        self.started += 1
        if header.api_key == API_VERSIONS.key:
            return {"api_keys": codec.supported_api_keys()}
        if header.api_key == METADATA.key:
            return {"brokers": [{"node_id": 0, "host": self.address[0], "port": self.address[1]}],
                    "cluster_id": "plinth-test", "controller_id": 0}
        if header.api_key == PRODUCE.key:
            return None if body["acks"] == 0 else {}
        if header.api_key == HEARTBEAT.key:
            gate = self.gates.get(header.correlation_id, self.gate)
            if gate is not None:
                await asyncio.get_running_loop().run_in_executor(None, gate.wait, WAIT_S)
            self.finished.append(header.correlation_id)
            return {"error_code": body["generation_id"]}
        raise AssertionError(f"the tiny handler does not answer api {header.api_key}")


@pytest.fixture
def served():
    handler = TinyHandler()
    listener = KafkaListener("127.0.0.1", 0, handler)
    handler.address = listener.start()
    yield listener, handler
    listener.stop()


def connect(address) -> socket.socket:
    sock = socket.create_connection(address, timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def request(api, version, correlation_id, body, client_id="test") -> bytes:
    return b"".join(bytes(b) for b in codec.encode_request(
        codec.RequestHeader(api.key, version, correlation_id, client_id), body))


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def read_response(sock: socket.socket, api, version) -> tuple[int, dict]:
    size = struct.unpack(">i", read_exactly(sock, 4))[0]
    return codec.decode_response(api.key, version, read_exactly(sock, size))


def closed_by_peer(sock: socket.socket) -> bool:
    """True if the listener closed the connection (EOF or reset) within WAIT_S."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def still_serves(address) -> bool:
    with connect(address) as sock:
        sock.sendall(request(API_VERSIONS, 3, 99, {"client_software_name": "probe"}))
        correlation_id, body = read_response(sock, API_VERSIONS, 3)
    return correlation_id == 99 and body["error_code"] == 0 and len(body["api_keys"]) == len(codec.SUPPORTED_VERSIONS)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_kafka_python_client_negotiates_versions_with_the_listener(served):
    from kafka.net.compat import KafkaNetClient

    listener, _ = served
    client = KafkaNetClient(bootstrap_servers=f"{listener.address[0]}:{listener.address[1]}",
                            request_timeout_ms=int(WAIT_S * 1000))
    try:
        version = client.check_version(timeout_ms=int(WAIT_S * 1000))
    finally:
        client.close()
    # Metadata v12, Fetch v12 and ApiVersions v3 make kafka-python call the broker 2.8+
    print(f"kafka-python takes the listener for Kafka {version}")
    assert version is not None and tuple(version) >= (2, 8)


def test_a_librdkafka_client_negotiates_versions_and_reads_metadata(served):
    from confluent_kafka.admin import AdminClient

    listener, handler = served
    seen = []
    answer = handler.__call__

    async def recording(connection, header, body):
        seen.append((header.api_key, header.api_version))
        return await answer(connection, header, body)
    listener.handle = recording
    admin = AdminClient({"bootstrap.servers": f"{listener.address[0]}:{listener.address[1]}"})
    # All topics: librdkafka's Metadata v12 request with 3 bytes left over (codec.py)
    metadata = admin.list_topics(timeout=WAIT_S)
    assert metadata.cluster_id == "plinth-test"
    assert [(b.id, b.host, b.port) for b in metadata.brokers.values()] == \
        [(0, *listener.address)]
    assert seen[0] == (API_VERSIONS.key, 3) and (METADATA.key, 12) in seen


def test_api_versions_comes_back_over_a_raw_socket_in_every_version(served):
    listener, _ = served
    with connect(listener.address) as sock:
        for version in range(4):
            sock.sendall(request(API_VERSIONS, version, 10 + version, {}))
            correlation_id, body = read_response(sock, API_VERSIONS, version)
            assert correlation_id == 10 + version
            assert {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]} \
                == codec.SUPPORTED_VERSIONS


def test_an_api_versions_request_too_new_gets_the_v0_unsupported_version_answer(served):
    listener, _ = served
    with connect(listener.address) as sock:
        # Given ApiVersions v4 (Kafka 4's), which we do not serve
        frame = request(API_VERSIONS, 3, 7, {"client_software_name": "new"})
        sock.sendall(frame[:6] + struct.pack(">h", 4) + frame[8:])
        # Then the answer is v0 with UNSUPPORTED_VERSION and our ranges, and the
        # connection stays open for the retry in a version we serve
        correlation_id, body = read_response(sock, API_VERSIONS, 0)
        assert correlation_id == 7 and body["error_code"] == error_codes.UNSUPPORTED_VERSION
        assert len(body["api_keys"]) == len(codec.SUPPORTED_VERSIONS)
        sock.sendall(request(API_VERSIONS, 3, 8, {}))
        assert read_response(sock, API_VERSIONS, 3)[0] == 8


def test_responses_stay_in_request_order_when_handlers_finish_out_of_order(served):
    listener, handler = served
    handler.gates = {100 + i: threading.Event() for i in range(4)}
    with connect(listener.address) as sock:
        # Given four pipelined Heartbeats whose handlers all wait
        sock.sendall(b"".join(request(HEARTBEAT, 4, 100 + i, {"group_id": "g", "generation_id": i,
                                                                "member_id": "m"})
                              for i in range(4)))
        wait_for(lambda: handler.started == 4, "the four handlers to start")
        # When they are let finish last first
        for done, correlation_id in enumerate([103, 102, 101, 100], 1):
            handler.gates[correlation_id].set()
            wait_for(lambda: len(handler.finished) == done, f"handler {correlation_id} to finish")
        answers = [read_response(sock, HEARTBEAT, 4) for _ in range(4)]
    # Then the handlers finished out of order but the answers are in request order
    assert handler.finished == [103, 102, 101, 100]
    assert answers == [(100 + i, {"error_code": i, "throttle_time_ms": 0}) for i in range(4)]


def test_a_request_without_a_response_keeps_the_order_of_the_others(served):
    listener, _ = served
    with connect(listener.address) as sock:
        sock.sendall(request(PRODUCE, 9, 1, {"acks": 0, "timeout_ms": 100, "topic_data": []})
                     + request(HEARTBEAT, 4, 2, {"group_id": "g", "generation_id": 5}))
        assert read_response(sock, HEARTBEAT, 4)[0] == 2


def test_a_connection_stops_being_read_when_its_requests_in_flight_are_full():
    handler = TinyHandler()
    handler.gate = threading.Event()
    listener = KafkaListener("127.0.0.1", 0, handler, requests_in_flight_max=2)
    address = listener.start()
    try:
        with connect(address) as sock:
            # Given five pipelined requests whose handlers block
            sock.sendall(b"".join(request(HEARTBEAT, 4, i, {"generation_id": 0})
                                  for i in range(5)))
            # Then only two are taken in, however long we look
            wait_for(lambda: handler.started == 2, "two handlers to start")
            assert still_serves(address)        # (a round trip elsewhere: time for more to start)
            assert handler.started == 3         # the probe's ApiVersions, not a third Heartbeat
            # When the handlers are released, all five are answered in order
            handler.gate.set()
            assert [read_response(sock, HEARTBEAT, 4)[0] for _ in range(5)] == list(range(5))
    finally:
        listener.stop()


def test_a_connection_beyond_the_limit_is_closed_and_the_others_served():
    listener = KafkaListener("127.0.0.1", 0, TinyHandler(), connections_max=2)
    address = listener.start()
    try:
        first, second = connect(address), connect(address)
        wait_for(lambda: listener.connection_count() == 2, "two connections")
        with connect(address) as third:
            assert closed_by_peer(third)
        for sock in (first, second):
            sock.sendall(request(API_VERSIONS, 0, 1, {}))
            assert read_response(sock, API_VERSIONS, 0)[0] == 1
            sock.close()
        wait_for(lambda: listener.connection_count() == 0, "the connections to close")
        assert still_serves(address)
    finally:
        listener.stop()


@pytest.mark.parametrize("frame", [
    struct.pack(">i", 0x7FFF_FFFF),                       # 2 GB declared
    struct.pack(">i", 100 * 1024 * 1024 + 1),             # one byte over the limit
    struct.pack(">i", -5),                                # negative
    struct.pack(">i", 12) + b"\xde\xad\xbe\xef" * 3,      # garbage of the declared size
    struct.pack(">i", 0),                                 # empty
    struct.pack(">i", 10) + struct.pack(">hhih", METADATA.key, 13, 1, 0),   # Metadata v13
    struct.pack(">i", 10) + struct.pack(">hhih", 999, 0, 1, 0),             # unknown API
], ids=["2GB", "over-limit", "negative", "garbage", "empty", "unsupported-version", "unknown-api"])
def test_a_bad_frame_closes_only_its_connection(served, frame):
    listener, _ = served
    with connect(listener.address) as bystander:
        with connect(listener.address) as sock:
            sock.sendall(frame)
            assert closed_by_peer(sock)
        bystander.sendall(request(API_VERSIONS, 3, 5, {}))
        assert read_response(bystander, API_VERSIONS, 3)[0] == 5
    assert still_serves(listener.address)


def test_a_truncated_frame_then_a_hang_up_leaves_the_listener_serving(served):
    listener, _ = served
    with connect(listener.address) as sock:
        sock.sendall(request(API_VERSIONS, 3, 1, {})[:9])
    wait_for(lambda: listener.connection_count() == 0, "the connection to close")
    assert still_serves(listener.address)


def test_a_handler_that_fails_closes_its_connection_only(served):
    listener, _ = served
    with connect(listener.address) as sock:
        sock.sendall(request(codec_api("ListGroups"), 4, 1, {}))
        assert closed_by_peer(sock)
    assert still_serves(listener.address)


def codec_api(name):
    from plinth.router.kafka.messages import APIS
    return next(api for api in APIS if api.name == name)


def test_stop_closes_every_connection_and_frees_the_port():
    listener = KafkaListener("127.0.0.1", 0, TinyHandler())
    address = listener.start()
    sock = connect(address)
    wait_for(lambda: listener.connection_count() == 1, "the connection")
    listener.stop()
    assert closed_by_peer(sock)
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=WAIT_S)
    listener.stop()    # twice is fine


def test_a_port_in_use_fails_start_with_the_address():
    first = KafkaListener("127.0.0.1", 0, TinyHandler())
    host, port = first.start()
    try:
        with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{port}"):
            KafkaListener("127.0.0.1", port, TinyHandler()).start()
    finally:
        first.stop()


def test_an_oversized_frame_is_logged_with_the_peer_and_the_size(served, caplog):
    listener, _ = served
    with connect(listener.address) as sock:
        sock.sendall(struct.pack(">i", 0x7FFF_FFFF))
        assert closed_by_peer(sock)
        peer_port = sock.getsockname()[1]
    wait_for(lambda: "2147483647 bytes" in caplog.text, "the log line")
    assert f"from 127.0.0.1:{peer_port} closed: it declared a request of 2147483647 bytes " \
           f"(the limit is {100 * 1024 * 1024})" in caplog.text


def test_an_idle_connection_is_closed_but_not_one_with_a_request_in_flight():
    handler = TinyHandler()
    handler.gate = threading.Event()
    listener = KafkaListener("127.0.0.1", 0, handler, connection_idle_ms_max=200)
    address = listener.start()
    try:
        # Given a connection whose request is in flight (its handler blocks) ...
        busy = connect(address)
        busy.sendall(request(HEARTBEAT, 4, 1, {"generation_id": 0}))
        wait_for(lambda: handler.started == 1, "the busy connection's handler")
        # ... and, opened after it, a silent one and one trickling half a frame
        silent, trickling = connect(address), connect(address)
        trickling.sendall(request(API_VERSIONS, 3, 2, {})[:6])
        # Then the silent and the trickling ones are closed once idle too long
        assert closed_by_peer(silent) and closed_by_peer(trickling)
        # ... while the busy one, idle longer, was kept: its answer still comes
        handler.gate.set()
        assert read_response(busy, HEARTBEAT, 4)[0] == 1
        for sock in (busy, silent, trickling):
            sock.close()
    finally:
        listener.stop()


def self_signed_tls(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a
    client context that trusts it."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def test_a_tls_listener_serves_tls_clients_and_closes_plaintext_ones(tmp_path):
    server_context, client_context = self_signed_tls(tmp_path)
    listener = KafkaListener("127.0.0.1", 0, TinyHandler(), ssl_context=server_context)
    address = listener.start()
    try:
        # Given a plaintext client: its ApiVersions is not TLS, the connection closes
        with connect(address) as plain:
            plain.sendall(request(API_VERSIONS, 3, 1, {}))
            assert closed_by_peer(plain)
        # Then a TLS client is served
        with client_context.wrap_socket(connect(address), server_hostname="127.0.0.1") as tls:
            tls.sendall(request(API_VERSIONS, 3, 2, {}))
            correlation_id, body = read_response(tls, API_VERSIONS, 3)
        assert correlation_id == 2 and len(body["api_keys"]) == len(codec.SUPPORTED_VERSIONS)
    finally:
        listener.stop()


async def _parked(depth: int) -> None:
    """Waits on a task of its own, ``depth`` deep, each cancelling its own on the way
    out without waiting for it, as api_fetch's parked round does with its
    per-partition fetches (each waiting on the backend)."""
    inner = asyncio.get_running_loop().create_task(
        _parked(depth - 1) if depth > 1 else asyncio.sleep(3600))
    try:
        await inner
    finally:
        inner.cancel()


class ParkingHandler(TinyHandler):
    """A Heartbeat parks as a Fetch does (``_parked``), until a stop ends it."""

    async def __call__(self, connection, header, body):
        if header.api_key != HEARTBEAT.key:
            return await super().__call__(connection, header, body)
        self.started += 1
        await _parked(depth=4)


def test_a_stop_with_handlers_parked_ends_every_task_before_the_loop_closes(caplog):
    import gc

    handler = ParkingHandler()
    listener = KafkaListener("127.0.0.1", 0, handler)
    address = listener.start()
    with connect(address) as sock:
        # Given two connections' requests parked in their handlers
        sock.sendall(request(HEARTBEAT, 4, 1, {"generation_id": 0}))
        with connect(address) as other:
            other.sendall(request(HEARTBEAT, 4, 2, {"generation_id": 0}))
            wait_for(lambda: handler.started == 2, "both handlers to park")
            # When the listener stops
            with caplog.at_level(logging.ERROR, logger="asyncio"):
                listener.stop()
                gc.collect()   # a task destroyed while pending is reported when collected
    # Then no task was left pending when its loop closed
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    assert listener.loop.is_closed()


def padded_heartbeat(correlation_id: int, pad_bytes: int) -> bytes:
    """A Heartbeat frame made about ``pad_bytes`` larger by its client id."""
    return request(HEARTBEAT, 4, correlation_id, {"group_id": "g", "generation_id": 0},
                   client_id="x" * pad_bytes)


def listener_holding_request_1(request_bytes_in_flight_max: int):
    """A started listener taking requests of up to 700 bytes, 1,000 in flight over all its
    connections, ``request_bytes_in_flight_max`` per connection, whose handler holds
    request 1 until its gate is set; returns (handler, listener, address)."""
    handler = TinyHandler()
    handler.gates[1] = threading.Event()
    listener = KafkaListener("127.0.0.1", 0, handler, request_bytes_max=700,
                             request_bytes_in_flight_max=request_bytes_in_flight_max,
                             request_bytes_in_flight_total_max=1000)
    return handler, listener, listener.start()


def test_the_listener_s_request_bytes_in_flight_are_shared_by_its_connections():
    # Given a listener whose connections may have 700 bytes of requests in flight
    # each, but only 1,000 between them, and a handler that holds request 1
    handler, listener, address = listener_holding_request_1(request_bytes_in_flight_max=700)
    first_frame, second_frame = padded_heartbeat(1, 600), padded_heartbeat(2, 600)
    try:
        with connect(address) as first, connect(address) as second:
            # When one connection sends a 600-byte request, unanswered, and another one too
            first.sendall(first_frame)
            wait_for(lambda: handler.started == 1, "the first request's handler")
            second.sendall(second_frame)
            # Then the second waits, unread, and its connection is kept open
            wait_for(lambda: listener.request_bytes_waiting_count() == 1, "the second to wait")
            assert listener.request_bytes_in_flight() == len(first_frame) - 4
            assert handler.started == 1 and listener.connection_count() == 2
            # When the first is answered, the second is read and answered too
            handler.gates[1].set()
            assert read_response(first, HEARTBEAT, 4)[0] == 1
            assert read_response(second, HEARTBEAT, 4)[0] == 2
            wait_for(lambda: listener.request_bytes_in_flight() == 0, "every byte given back")
            assert listener.request_bytes_waiting_count() == 0
    finally:
        handler.gates[1].set()
        listener.stop()


def test_a_request_declared_on_a_connection_that_closes_gives_its_bytes_back():
    # Given a listener with 1,000 bytes in flight in all, and a connection that
    # declared a 900-byte request and sent only part of it
    handler = TinyHandler()
    listener = KafkaListener("127.0.0.1", 0, handler, request_bytes_max=1000,
                             request_bytes_in_flight_total_max=1000)
    address = listener.start()
    try:
        with connect(address) as second:
            with connect(address) as first:
                first.sendall(struct.pack(">i", 900) + b"\0" * 100)
                wait_for(lambda: listener.request_bytes_in_flight() == 900, "900 bytes taken")
                # When another connection sends a 600-byte request, it waits
                second.sendall(padded_heartbeat(2, 600))
                wait_for(lambda: listener.request_bytes_waiting_count() == 1, "the second to wait")
                assert handler.started == 0
            # When the first connection goes away without the rest of its request
            # Then its bytes come back and the second connection's request is answered
            assert read_response(second, HEARTBEAT, 4)[0] == 2
        wait_for(lambda: listener.request_bytes_in_flight() == 0, "every byte given back")
    finally:
        listener.stop()


def test_one_connection_whose_requests_fill_the_listener_s_bytes_is_not_stuck_behind_itself():
    # Given a connection that may have more bytes in flight than the listener as a
    # whole, and a handler that holds its first request
    handler, listener, address = listener_holding_request_1(request_bytes_in_flight_max=10_000)
    try:
        with connect(address) as sock:
            # When it pipelines three 600-byte requests (two would pass the budget)
            sock.sendall(b"".join(padded_heartbeat(i, 600) for i in (1, 2, 3)))
            wait_for(lambda: listener.request_bytes_waiting_count() == 1, "the second to wait")
            assert handler.started == 1
            # Then its own answers make room: all three are answered, in order
            handler.gates[1].set()
            assert [read_response(sock, HEARTBEAT, 4)[0] for _ in range(3)] == [1, 2, 3]
        wait_for(lambda: listener.request_bytes_in_flight() == 0, "every byte given back")
    finally:
        handler.gates[1].set()
        listener.stop()


class LoginHandler(TinyHandler):
    """A TinyHandler with a stand-in for a SASL login: a Heartbeat of generation 99
    logs its connection in (lifts its bound, as api_sasl.py does)."""

    async def __call__(self, connection, header, body):
        if header.api_key == HEARTBEAT.key and body["generation_id"] == 99:
            connection.request_bytes_max = None
            return {"error_code": 0}
        return await super().__call__(connection, header, body)


def test_a_connection_that_has_not_logged_in_takes_nothing_from_the_listener_s_bytes():
    # Given a listener whose connections must log in, with 1,000 bytes in flight in all
    handler = LoginHandler()
    listener = KafkaListener("127.0.0.1", 0, handler, request_bytes_max=1000,
                             request_bytes_in_flight_total_max=1000,
                             first_request_bytes_max=1000, login_timeout_ms=60_000)
    address = listener.start()
    try:
        with connect(address) as stranger, connect(address) as member:
            # When a connection that has not logged in declares a 900-byte request
            # and sends only part of it
            stranger.sendall(struct.pack(">i", 900) + b"\0" * 100)
            wait_for(lambda: listener.connection_count() == 2, "both connections")
            # And one that logged in sends a 600-byte request
            member.sendall(request(HEARTBEAT, 4, 1, {"group_id": "g", "generation_id": 99}))
            assert read_response(member, HEARTBEAT, 4)[0] == 1
            member.sendall(padded_heartbeat(2, 600))
            # Then it is answered: the stranger's bytes are not the budget's
            assert read_response(member, HEARTBEAT, 4)[0] == 2
            assert listener.request_bytes_waiting_count() == 0
        wait_for(lambda: listener.request_bytes_in_flight() == 0, "every byte given back")
    finally:
        listener.stop()


class ClosingLastFirstHandler(TinyHandler):
    """Refuses every Heartbeat with CloseConnection, the first one sent only once the
    others have been refused: the write loop ends at the first, with the others
    already finished behind it."""

    def __init__(self, refusals: int):
        super().__init__()
        self.refused = 0
        self.refusals = refusals
        self.rest_refused = asyncio.Event()

    async def __call__(self, connection, header, body):
        from plinth.router.kafka.listener import CloseConnection

        if header.api_key != HEARTBEAT.key:
            return await super().__call__(connection, header, body)
        if header.correlation_id == 0:
            await asyncio.wait_for(self.rest_refused.wait(), WAIT_S)
        self.refused += 1
        if self.refused == self.refusals - 1:
            self.rest_refused.set()
        raise CloseConnection(f"request {header.correlation_id} refused")


def close_at_the_first_of_four_refused_requests() -> None:
    """Four pipelined requests whose handlers all close the connection, the first to
    be answered finishing last; then the listener stops and everything is collected.
    Run in a process of its own (``python -c``), logging to stderr: in pytest the
    captured log records keep the first exception, and through it the connection
    and the tasks queued behind it, alive until the test ends."""
    import gc

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    handler = ClosingLastFirstHandler(refusals=4)
    listener = KafkaListener("127.0.0.1", 0, handler)
    address = listener.start()
    try:
        with connect(address) as sock:
            sock.sendall(b"".join(request(HEARTBEAT, 4, i, {"generation_id": 0})
                                  for i in range(4)))
            assert closed_by_peer(sock)
        wait_for(lambda: listener.connection_count() == 0, "the connection to go")
    finally:
        listener.stop()
    gc.collect()   # an exception never retrieved is reported when its task is collected
    print(f"refused {handler.refused}")


def test_requests_refused_behind_the_one_that_closed_the_connection_log_no_error():
    import sys

    # Given four pipelined requests whose handlers all close the connection, the first
    # to be answered finishing last
    # When the connection is closed at the first, and everything is collected
    done = subprocess.run(
        [sys.executable, "-c", "from tests.router.kafka.test_listener import "
         "close_at_the_first_of_four_refused_requests as run; run()"],
        capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[3])   # the repository: ``tests`` imports
    # Then one line says why, and no handler's exception is an error in the log
    assert done.returncode == 0, done.stderr
    assert done.stdout == "refused 4\n"
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("WARNING plinth.router.kafka.listener ") \
        and lines[0].endswith("closed: request 0 refused"), done.stderr
