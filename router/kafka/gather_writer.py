"""Writing a response's buffers to a Kafka connection without joining them.

A response is a list of buffers (codec.py): small encoded pieces and, for a
Fetch, views of the record batches the shards sent. On Python 3.11 asyncio's
``writelines`` joins the list into one bytes object first, a copy of every
record fetched; on 3.12 and later it sends them with sendmsg. GatherWriter
does on 3.11 what 3.12 does: it hands the buffers to ``sendmsg`` directly (at
most IOV_MAX of them a call, the kernel's limit), and when the socket takes
only part, it waits until the socket is writable and sends the rest, never
through the transport. (Until session 18 it gave that rest to the
transport, which joined it: a fetch response of megabytes fills a loopback
socket's buffer at once, so most fetched bytes were still copied, and that
copy was 60 % of the listener thread's busy time while a consumer read.)

``write`` returns once the whole response is in the kernel, so the caller's
next response waits for it, as after ``drain()``: a client that does not read
stalls only its own connection. If the transport holds unsent bytes (a write
made through it directly), they are drained first, so bytes are never
reordered.

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
        self.stalls = 0      # times a write waited for the socket to take more
        self._waiting_in: asyncio.AbstractEventLoop | None = None   # while a write waits
        raw = writer.get_extra_info("socket")
        if _WRITELINES_JOINS and raw is not None and writer.get_extra_info("sslcontext") is None:
            try:
                self._socket = socket.socket(fileno=os.dup(raw.fileno()))
            except OSError:    # out of descriptors: this connection joins, as asyncio does
                return
            self._socket.setblocking(False)

    async def write(self, buffers: list) -> None:
        """Send ``buffers`` in order after every earlier write, returning once the kernel
        has all of them. Raises ConnectionError if the peer has gone."""
        writer = self.writer
        if self._socket is None or writer.transport.is_closing():
            writer.writelines(buffers)
            await writer.drain()
            return
        if writer.transport.get_write_buffer_size():
            await writer.drain()     # what went through the transport goes first
        while buffers:
            head, buffers = buffers[:IOV_MAX], buffers[IOV_MAX:]
            try:
                sent = self._socket.sendmsg(head)
            except (BlockingIOError, InterruptedError):
                sent = 0
            rest = unsent(head, sent)
            if rest:
                self.stalls += 1
                await self._writable()
                buffers = rest + buffers

    async def _writable(self) -> None:
        """Wait until the socket takes bytes again (or has failed: the next sendmsg says)."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(self._socket.fileno(), lambda: ready.done() or ready.set_result(None))
        self._waiting_in = loop
        try:
            await ready
        finally:
            self._stop_waiting()

    def _stop_waiting(self) -> None:
        # Before the descriptor closes: a closed number the selector still watched
        # could be reused by the next connection accepted.
        if self._waiting_in is not None and self._socket is not None:
            self._waiting_in.remove_writer(self._socket.fileno())
        self._waiting_in = None

    def close(self) -> None:
        """Close the duplicate descriptor (the transport closes its own), first
        unwatching it if a write waits on it (that write then fails or is cancelled by
        its owner). Event loop thread; safe twice."""
        self._stop_waiting()
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
