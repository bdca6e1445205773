"""Acceptor: the Kafka listener's listening socket, and its accepts bounded and backed off.

Runs on the Kafka listener's event loop thread (listener.py), but for ``bind``,
which the listener's ``_serve`` calls there too, before the loop serves.

asyncio's own server (loop.create_server) handles a failed accept badly at the
open-file limit: CPython 3.11's _accept_connection reports EMFILE through the
loop's exception handler (an ERROR with a traceback), removes its reader and
schedules a restart in a second, and then goes on trying the rest of its
backlog in the same pass, each try logged and each scheduling another restart.
Tester T-fd (session 45) saw 4,000 tracebacks a second, 95 MB of log in a
minute, more than two cores busy, and no line naming the limit.

Here each readable event of the listening socket accepts at most
KAFKA_ACCEPTS_PER_ROUND_MAX connections. A failure stops the round: at the
process's resource limits (EMFILE, ENFILE, ENOBUFS, ENOMEM) the socket is not
watched for KAFKA_ACCEPT_RETRY_MS, as asyncio meant to do, and the failure is one
WARNING naming the address, the errno and RLIMIT_NOFILE, at most once per address
per UNAUTHENTICATED_LOG_INTERVAL_S, as the ZeroMQ side's
(router/accept_failures.py). Connections that wait meanwhile stay in the kernel's
listen backlog (KAFKA_LISTEN_BACKLOG) and are accepted once files are free.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from plinth import limits
from plinth.log_limit import LogLimit
from plinth.router.accept_failures import warn_accept_failed

logger = logging.getLogger(__name__)

# What a process runs out of, not what a client did: back off, then try again.
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def bind(host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket listening on ``host``:``port`` (port 0: a free one),
    with SO_REUSEADDR as asyncio's servers have it. OSError if it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(limits.KAFKA_LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Acceptor:
    """Accepts ``sock``'s connections and hands each, non-blocking, to
    ``on_connection``. The listener's loop thread only."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 on_connection: Callable[[socket.socket], None]):
        self._loop = loop
        self._sock = sock
        self._on_connection = on_connection
        self.address = "%s:%s" % sock.getsockname()[:2]
        self._log = LogLimit(logger)
        self._retry: asyncio.TimerHandle | None = None   # set while backing off
        self.accepted = 0
        self.failures = 0

    def start(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._accept_some)

    def close(self) -> None:
        """Stop accepting and close the listening socket (the port is free after)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _accept_some(self) -> None:
        for _ in range(limits.KAFKA_ACCEPTS_PER_ROUND_MAX):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return   # none waits any more (or one gave up while waiting)
            except OSError as exc:
                self._failed(exc)
                return
            conn.setblocking(False)
            self.accepted += 1
            self._on_connection(conn)

    def _failed(self, exc: OSError) -> None:
        """One accept failed: said (rate-limited); at a resource limit, the socket is
        not watched for KAFKA_ACCEPT_RETRY_MS (the kernel would report it readable
        at once, and every try fail alike)."""
        self.failures += 1
        if exc.errno not in _OUT_OF_RESOURCES:
            self._log.warning(self.address, "Kafka listener: accepting a connection on %s "
                              "failed: %s", self.address, exc)
            return
        warn_accept_failed(self._log, "Kafka listener", self.address, exc.errno)
        self._loop.remove_reader(self._sock.fileno())
        self._retry = self._loop.call_later(limits.KAFKA_ACCEPT_RETRY_MS / 1000, self._resume)

    def _resume(self) -> None:
        self._retry = None
        self.start()
