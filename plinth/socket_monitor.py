"""A monitor socket for a ZeroMQ socket, on an inproc address no other socket has.

Whatever thread owns the socket (a client, a router's shard connections). pyzmq's
``Socket.get_monitor_socket`` names the monitor's inproc endpoint after the
socket's file descriptor. A socket closed (or collected) moments before may
still hold that name, until libzmq's reaper thread unbinds it; a new socket given
the same descriptor then fails to bind it, and a client's constructor raised
"Address already in use" (a test that made admin clients in turn, without
closing them). A process-wide counter names each monitor instead.
"""

from __future__ import annotations

import itertools

import zmq

_MONITOR_IDS = itertools.count()   # next() is atomic under the GIL


def monitor_socket(sock: zmq.Socket, events: int) -> zmq.Socket:
    """A PAIR socket that receives ``sock``'s ``events`` (read them with
    zmq.utils.monitor.recv_monitor_message), as get_monitor_socket returns one."""
    return sock.get_monitor_socket(events, addr=f"inproc://plinth-monitor-{next(_MONITOR_IDS)}")
