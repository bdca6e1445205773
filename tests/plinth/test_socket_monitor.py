"""plinth/socket_monitor.py: a socket's monitor on an inproc address of its own,
free though the name pyzmq would give it (after the socket's file descriptor) is
still held, as by a socket just closed whose descriptor the new one got."""

from __future__ import annotations

import zmq
from zmq.utils.monitor import recv_monitor_message

from plinth import Admin
from plinth.socket_monitor import monitor_socket


def close_monitor(sock, monitor) -> None:
    """As the product closes one (handshake_watch.py): the monitor stopped first. A
    monitor socket closed while its socket still reports to it (EVENT_ALL) held up the
    shared context's teardown of later sockets: a later test's router never saw its
    client go, and in CI the context ran out of sockets ("Too many open files")."""
    sock.disable_monitor()
    monitor.close(0)


def test_a_monitor_starts_though_the_name_pyzmq_would_give_it_is_held():
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    # Given the inproc name pyzmq's get_monitor_socket would use for this socket held
    held = context.socket(zmq.PAIR)
    held.bind(f"inproc://monitor.s-{sock.FD}")
    try:
        # When the socket is monitored, and connects
        monitor = monitor_socket(sock, zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CONNECTED)
        sock.connect("tcp://127.0.0.1:1")
        # Then its monitor hears of it
        assert monitor.poll(5_000)
        assert recv_monitor_message(monitor)["endpoint"] == b"tcp://127.0.0.1:1"
        close_monitor(sock, monitor)
    finally:
        sock.close(0)
        held.close(0)


def test_two_sockets_get_monitors_on_different_addresses():
    context = zmq.Context.instance()
    a, b = context.socket(zmq.DEALER), context.socket(zmq.DEALER)
    try:
        monitors = [monitor_socket(a, zmq.EVENT_ALL), monitor_socket(b, zmq.EVENT_ALL)]
        endpoints = {m.getsockopt(zmq.LAST_ENDPOINT) for m in monitors}
        assert len(endpoints) == 2
        for sock, monitor in zip((a, b), monitors):
            close_monitor(sock, monitor)
    finally:
        a.close(0)
        b.close(0)


def test_a_client_is_made_though_the_name_pyzmq_would_give_its_monitor_is_held():
    # Given every inproc name pyzmq would give the next sockets' monitors held (by one
    # socket, so that the next sockets' descriptors are among them)
    context = zmq.Context.instance()
    holder = context.socket(zmq.PAIR)
    for fd in range(holder.FD, holder.FD + 256):
        holder.bind(f"inproc://monitor.s-{fd}")
    try:
        # When an admin client is made / Then it is, its monitor on its own address
        Admin(broker="tcp://127.0.0.1:1").close()
    finally:
        holder.close(0)
