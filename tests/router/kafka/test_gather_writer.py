"""GatherWriter (router/kafka/gather_writer.py) over real TCP sockets on 127.0.0.1:
what it writes arrives whole and in order, whether the socket takes everything,
part of a write, or nothing (a peer that does not read), across more buffers
than one sendmsg takes; what the socket does not take at once is never handed
to the transport (which would join it into one copy); closing it while a write
waits leaves nothing watched; and ``unsent`` cuts a list of buffers at any byte."""

from __future__ import annotations

import asyncio
import random
import sys

from plinth.router.kafka.gather_writer import IOV_MAX, GatherWriter, unsent
from tests.router.kafka.test_listener import self_signed_tls

WAIT_S = 10.0


async def _pair(tls: tuple | None = None):
    """(GatherWriter on the server's side, the client's reader, the server); over TLS
    with ``tls`` = (server context, client context)."""
    server_tls, client_tls = tls or (None, None)
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(lambda r, w: accepted.set_result(w), "127.0.0.1", 0,
                                        ssl=server_tls)
    reader, client_writer = await asyncio.open_connection(
        *server.sockets[0].getsockname()[:2], ssl=client_tls,
        server_hostname="127.0.0.1" if client_tls else None)
    writer = await asyncio.wait_for(accepted, WAIT_S)
    return GatherWriter(writer), reader, (server, writer, client_writer)


async def _close(gather: GatherWriter, parts) -> None:
    server, writer, client_writer = parts
    gather.close()
    for w in (writer, client_writer):
        w.close()
    server.close()
    await server.wait_closed()


def _buffers(count: int, size: int, seed: int) -> list:
    """``count`` buffers of mixed types (bytes, bytearray, memoryview), distinct bytes."""
    rng = random.Random(seed)
    return [(bytes, bytearray, memoryview)[n % 3](rng.randbytes(size)) for n in range(count)]


def test_a_write_of_more_buffers_than_one_sendmsg_takes_arrives_whole_and_in_order():
    async def scenario():
        # Given a connection, and three times IOV_MAX small buffers
        gather, reader, parts = await _pair()
        buffers = _buffers(3 * IOV_MAX + 7, 33, seed=1)
        # When they are written as one response
        await gather.write(buffers)
        # Then the peer reads exactly their concatenation
        expected = b"".join(bytes(b) for b in buffers)
        got = await asyncio.wait_for(reader.readexactly(len(expected)), WAIT_S)
        await _close(gather, parts)
        return got == expected

    assert asyncio.run(scenario())


async def _until(condition, what: str) -> None:
    """Yield to the event loop until ``condition()``; AssertionError after WAIT_S."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not within {WAIT_S} s: {what}"
        await asyncio.sleep(0.001)


def test_writes_larger_than_the_socket_takes_keep_their_order_when_the_peer_reads_late():
    async def scenario():
        # Given a peer that reads nothing yet, and writes far beyond the socket's buffers
        gather, reader, parts = await _pair()
        first = _buffers(64, 500_000, seed=2)       # 32 MB: the socket takes part of it
        second = _buffers(40, 100_000, seed=3)
        # When both are written, one after the other, before the peer reads
        writes = asyncio.create_task(_write_all(gather, first, second))
        await _until(lambda: gather.stalls > 0, "the first write fills the socket")
        held_by_transport = gather.writer.transport.get_write_buffer_size()
        # Then the peer reads the first write, then the second, byte for byte
        expected = b"".join(bytes(b) for b in first + second)
        got = await asyncio.wait_for(reader.readexactly(len(expected)), WAIT_S)
        await asyncio.wait_for(writes, WAIT_S)
        await _close(gather, parts)
        return held_by_transport, got == expected

    held_by_transport, same = asyncio.run(scenario())
    # and what the socket did not take waited as buffers, not as a joined copy in the
    # transport (on 3.12+ the transport's own writelines does the same: nothing to check)
    if sys.version_info < (3, 12):
        assert held_by_transport == 0
    assert same


async def _write_all(gather: GatherWriter, *responses) -> None:
    for buffers in responses:
        await gather.write(buffers)


def test_closing_the_writer_while_a_write_waits_for_room_stops_watching_its_socket():
    async def scenario():
        # Given a write waiting for a peer that does not read
        gather, reader, parts = await _pair()
        writes = asyncio.create_task(_write_all(gather, _buffers(64, 500_000, seed=5)))
        await _until(lambda: gather.stalls > 0, "the write fills the socket")
        fd = gather._socket.fileno()
        # When the connection's owner cancels it and closes the writer, as the listener does
        writes.cancel()
        gather.close()
        # Then the selector no longer watches that descriptor number (it may be reused)
        loop = asyncio.get_running_loop()
        still_watched = loop.remove_writer(fd)
        cancelled = await asyncio.gather(writes, return_exceptions=True)
        await _close(gather, parts)
        return still_watched, cancelled

    still_watched, cancelled = asyncio.run(scenario())
    assert sys.version_info >= (3, 12) or still_watched is False
    assert isinstance(cancelled[0], asyncio.CancelledError)


def test_a_plain_connection_gets_its_own_socket_below_3_12_and_closing_it_keeps_the_stream():
    async def scenario():
        # Given a plain TCP connection
        gather, reader, parts = await _pair()
        has_socket = gather._socket is not None
        # When the writer closes its duplicate descriptor
        gather.close()
        await gather.write([b"still", b" open"])      # now through the transport
        got = await asyncio.wait_for(reader.readexactly(10), WAIT_S)
        await _close(gather, parts)
        return has_socket, got

    has_socket, got = asyncio.run(scenario())
    # Then it had its own socket where writelines joins, and the stream outlives it
    assert has_socket == (sys.version_info < (3, 12))
    assert got == b"still open"


def test_a_tls_connection_is_written_through_its_transport_encrypted_and_whole(tmp_path):
    async def scenario():
        # Given a TLS connection
        gather, reader, parts = await _pair(self_signed_tls(tmp_path))
        # When a response of many buffers is written
        buffers = _buffers(IOV_MAX + 3, 1000, seed=4)
        await gather.write(buffers)
        # Then it never sent on the raw socket (the peer would read plaintext), and the
        # peer reads the whole response decrypted
        expected = b"".join(bytes(b) for b in buffers)
        got = await asyncio.wait_for(reader.readexactly(len(expected)), WAIT_S)
        await _close(gather, parts)
        return gather._socket, got == expected

    own_socket, same = asyncio.run(scenario())
    assert own_socket is None and same


def test_unsent_cuts_a_list_of_buffers_at_every_byte():
    buffers = [b"abc", bytearray(b""), memoryview(b"defg"), b"h"]
    whole = b"abcdefgh"
    for sent in range(len(whole) + 1):
        assert b"".join(bytes(b) for b in unsent(buffers, sent)) == whole[sent:], sent

