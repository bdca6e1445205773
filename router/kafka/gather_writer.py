"""Writing a response's buffers to a Kafka connection without joining them.

A response is a list of buffers (codec.py): small encoded pieces and, for a
Fetch, views of the record batches the shards sent. On Python 3.11 asyncio's
``writelines`` joins the list into one bytes object first, a copy of every
record fetched; on 3.12 and later it sends them with sendmsg. GatherWriter
does on 3.11 what 3.12 does: when the transport has nothing buffered, it hands
the buffers to ``sendmsg`` directly (at most IOV_MAX of them a call, the
kernel's limit) and gives the transport only what the socket did not take, so
that asyncio's flow control (``drain``) sees that rest as it sees any write.
While the transport holds unsent bytes, writes go through it as before, so
bytes are never reordered.

The socket it sends on is a duplicate of the transport's descriptor (the same
open socket: a write on either goes to the same stream, in call order); asyncio
offers no public way to the socket itself. It is closed by ``close``.

TLS and Python 3.12+ connections get the plain ``writelines`` path.

Threads: the listener's event loop thread only.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

# The kernel's limit on the buffers of one sendmsg (Linux: 1024).
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16
_WRITELINES_JOINS = sys.version_info < (3, 12)


class GatherWriter:
    """Writes lists of buffers to one connection. Event loop thread."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self._socket: socket.socket | None = None
        raw = writer.get_extra_info("socket")
        if _WRITELINES_JOINS and raw is not None and writer.get_extra_info("sslcontext") is None:
            try:
                self._socket = socket.socket(fileno=os.dup(raw.fileno()))
            except OSError:    # out of descriptors: this connection joins, as asyncio does
                return
            self._socket.setblocking(False)

    def write(self, buffers: list) -> None:
        """Queue ``buffers`` for sending, in order after every earlier write; the caller
        awaits ``writer.drain()`` as after any write. Raises ConnectionError if the peer
        has gone."""
        transport = self.writer.transport
        if (self._socket is None or transport.is_closing()
                or transport.get_write_buffer_size()):
            self.writer.writelines(buffers)
            return
        while buffers:
            head, buffers = buffers[:IOV_MAX], buffers[IOV_MAX:]
            try:
                sent = self._socket.sendmsg(head)
            except (BlockingIOError, InterruptedError):
                sent = 0
            rest = unsent(head, sent)
            if rest:        # the socket is full: the transport sends the rest when it can
                self.writer.writelines(rest + buffers)
                return

    def close(self) -> None:
        """Close the duplicate descriptor (the transport closes its own). Safe twice."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def unsent(buffers: list, sent_bytes: int) -> list:
    """What is left of ``buffers`` once their first ``sent_bytes`` bytes are gone."""
    for index, buffer in enumerate(buffers):
        size = memoryview(buffer).nbytes
        if sent_bytes < size:
            return [memoryview(buffer).cast("B")[sent_bytes:], *buffers[index + 1:]]
        sent_bytes -= size
    return []
