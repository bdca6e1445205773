"""router/accept_failures.py: a real Router (fake shards and controller,
tests/router/fakes.py) whose process is at its open-file limit while clients connect
says so in its log, rate-limited, instead of letting them time out in silence."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import subprocess
import sys

import zmq
from zmq.utils.monitor import recv_monitor_message

from plinth import limits, protocol
from plinth.socket_monitor import monitor_socket
from tests.support import wait_until

CONNECTIONS = 5


@contextlib.contextmanager
def at_the_open_file_limit():
    """This process cannot open one more file (the soft RLIMIT_NOFILE lowered to its
    lowest free descriptor) until the block ends; yields the lowered limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield lowest_free
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connector(port: int) -> subprocess.Popen:
    """Another process that, once told (a line on its stdin), opens CONNECTIONS TCP
    connections to ``port`` and holds them until its stdin closes."""
    return subprocess.Popen(
        [sys.executable, "-c",
         "import socket, sys; sys.stdin.readline(); "
         f"held = [socket.create_connection(('127.0.0.1', {port})) for _ in range({CONNECTIONS})]; "
         "print('connected', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


@contextlib.contextmanager
def clients_at_the_open_file_limit(port: int, caplog, logger: str | None = None):
    """CONNECTIONS clients of another process connect to ``port`` while this process
    is at its open-file limit, until a WARNING says it cannot accept; yields (the
    lowered limit, the "cannot accept" lines, the lines at ERROR), both as logged by
    then, with the limit raised again. The clients stay connected until the block
    ends."""
    clients = connector(port)
    try:
        with caplog.at_level(logging.WARNING, logger=logger):
            with at_the_open_file_limit() as limit:
                clients.stdin.write("go\n")
                clients.stdin.flush()
                assert clients.stdout.readline() == "connected\n"   # the kernel's backlog
                warnings = wait_until(lambda: [r.getMessage() for r in caplog.records
                                               if "cannot accept" in r.getMessage()],
                                      timeout_s=10)
                errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            yield limit, warnings, errors
    finally:
        clients.stdin.close()
        clients.wait(10)
        clients.stdout.close()


def test_a_router_at_its_open_file_limit_warns_once_naming_the_address_errno_and_limit(
        router_rig, caplog):
    # Given a router
    rig = router_rig()
    # When its process is at its open-file limit as clients connect
    with clients_at_the_open_file_limit(int(rig.url.rsplit(":", 1)[1]), caplog,
                                        "plinth.router") as (limit, warnings, _):
        # Then a WARNING names the listen address, the errno and the limit; one only,
        # however many times libzmq retried the accept meanwhile
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(
            f"router: cannot accept new connections on {rig.url}: Too many open files "
            f"(errno 24, EMFILE): the process's open file limit RLIMIT_NOFILE is {limit} ")
        # And once files are free again, a new client is served
        assert rig.client().request(protocol.encode_list_offsets(1, "t", 0)) is not None


def test_unbinding_a_router_sockets_tcp_endpoint_cuts_off_the_clients_it_had_accepted():
    # Why the router does not pause its accepts at the open-file limit by unbinding its
    # listen address and binding it again, as the Kafka listener stops watching its
    # socket: libzmq 4.3's sessions of accepted connections are the listener's children,
    # and zmq_unbind ends them with it. The TCP connection stays open, so the client
    # learns it only at its heartbeat timeout (5 s for ours), and its requests are lost
    # meanwhile. Should libzmq change this, such a pause becomes possible.
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.HEARTBEAT_IVL, limits.CLIENT_ROUTER_HEARTBEAT_IVL_MS)
    client.setsockopt(zmq.HEARTBEAT_TIMEOUT, limits.CLIENT_ROUTER_HEARTBEAT_TIMEOUT_MS)
    events = monitor_socket(client, zmq.EVENT_DISCONNECTED)
    try:
        # Given a client connected to a router, and served
        router.bind("tcp://127.0.0.1:0")
        address = router.getsockopt(zmq.LAST_ENDPOINT).decode()
        client.connect(address)
        client.send(b"before")
        assert router.poll(10_000) and router.recv_multipart()[1] == b"before"
        # When the router unbinds its address and binds it again (once libzmq's I/O
        # thread has closed the old listener: until then the bind is refused)
        router.unbind(address)
        wait_until(lambda: _bound(router, address), timeout_s=10)
        client.send(b"after")
        # Then the client's connection is dropped (seen at its heartbeat timeout), and
        # what it sent meanwhile is lost
        assert events.poll(10_000), "the client was never disconnected"
        assert recv_monitor_message(events)["event"] == zmq.EVENT_DISCONNECTED
        assert not router.poll(1_000), "the client's request reached the router"
    finally:
        client.disable_monitor()
        for sock in (events, client, router):
            sock.close(linger=0)
        context.term()


def _bound(sock: zmq.Socket, address: str) -> bool:
    try:
        sock.bind(address)
    except zmq.ZMQError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        return False
    return True
