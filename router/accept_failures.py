"""The router's listening socket's accept failures, said in the log.

Runs in the router's process, on its loop thread (made in ``Router.start``, before
the loop runs). At the process's open-file limit (RLIMIT_NOFILE: ``ulimit -n``),
libzmq cannot accept a client's TCP connection. It says so only on a socket
monitor (ZMQ_EVENT_ACCEPT_FAILED, its value the errno: EMFILE), and tries again at
once for as long as the connection waits in the listen backlog (about 120,000
events a second, measured with libzmq 4.3.5). Nothing else said it: new clients
timed out (PlinthTimeoutError) and no log mentioned files. Here each failure is
read off the front socket's monitor and said as a WARNING naming the listen
address, the errno and the process's RLIMIT_NOFILE, at most once per address per
UNAUTHENTICATED_LOG_INTERVAL_S (plinth/log_limit.py: whoever connects causes them).

At most ROUTER_MONITOR_EVENTS_PER_ROUND_MAX events are read per loop round, so a
storm of them never starves the clients and shards. libzmq sends each event with a
blocking send, so its I/O thread waits while the monitor's queue is full, until
the next round reads some (which also slows its futile retries); ``close`` stops
the monitor before its socket is closed, so that no event waits for a reader gone.

Accepting is not paused, as the Kafka listener pauses its own (kafka/acceptor.py):
libzmq has no way to stop watching a listening socket but zmq_unbind, and that
ends the sessions of the connections it had accepted too (libzmq 4.3.5: their
requests are lost, and a client learns it only at its heartbeat timeout; pinned
by tests/router/test_accept_failures.py). Nor is the listen backlog drained from
here with a file kept in reserve (tried, with the socket given by ZMQ_USE_FD:
libzmq's I/O thread, retrying at once, mostly took the freed file first).
So while clients wait at the limit the router keeps more than a core busy.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import struct

import zmq

from plinth import limits
from plinth.log_limit import LogLimit
from plinth.socket_monitor import monitor_socket

log = logging.getLogger(__name__)

# A monitor event's first frame: the event (uint16) and its value (uint32, here the
# errno), native byte order, as libzmq writes them.
_EVENT = struct.Struct("=HI")


class AcceptFailures:
    """The monitor of ``listener``'s accept failures. Construct on the thread that
    owns ``listener`` before the loop runs; the rest on the loop thread."""

    def __init__(self, listener: zmq.Socket):
        self._listener = listener
        self.monitor = monitor_socket(listener, zmq.EVENT_ACCEPT_FAILED)
        self._log = LogLimit(log)

    def on_readable(self) -> int:
        """Read up to ROUTER_MONITOR_EVENTS_PER_ROUND_MAX events; warn of their failures
        (rate-limited); returns how many accept failures were read."""
        failures: dict[tuple[str, int], int] = {}
        for _ in range(limits.ROUTER_MONITOR_EVENTS_PER_ROUND_MAX):
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            event, value = _EVENT.unpack_from(frames[0])
            if event == zmq.EVENT_ACCEPT_FAILED and len(frames) > 1:
                key = (frames[1].decode(errors="replace"), value)
                failures[key] = failures.get(key, 0) + 1
        for address, error in failures:
            self._warn(address, error)
        return sum(failures.values())

    def _warn(self, address: str, error: int) -> None:
        warn_accept_failed(self._log, "router", address, error)

    def close(self) -> None:
        """Stop the monitor, then close it (before ``listener`` is closed). What it holds
        is read first: libzmq's I/O thread, blocked sending into a full monitor, would
        hold the lock disable_monitor waits for (it refills in about 10 ms at the rate
        above; closing with none queued leaves it that long)."""
        for _ in range(2 * self.monitor.getsockopt(zmq.RCVHWM)):   # its HWM each side
            try:
                self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
        self._listener.disable_monitor()
        self.monitor.close(linger=0)


def warn_accept_failed(log_limit: LogLimit, listener: str, address: str, error: int) -> None:
    """The WARNING of ``listener`` ("router", "Kafka listener") failing to accept on
    ``address`` with errno ``error``: at most one per address per ``log_limit``'s
    interval. Any thread."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log_limit.warning(
        address, "%s: cannot accept new connections on %s: %s (errno %d, %s): the "
        "process's open file limit RLIMIT_NOFILE is "
        "%s (hard %s); new clients time out until files are freed. Raise it (ulimit -n, "
        "or systemd's LimitNOFILE=) or run fewer clients per process",
        listener, address, os.strerror(error), error, errno.errorcode.get(error, "?"),
        _limit(soft), _limit(hard))


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)
