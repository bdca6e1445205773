"""Whether anything listens at a router's address, asked once when no broker answers.

Client side; the thread (or event loop) that owns the Connection. libzmq keeps
reconnecting to a router address where nothing listens, silently: a request
there waited out its whole timeout (30 s by default) before anything said so,
and then only guessed. A Connection whose router has not shaken hands
CLIENT_CONNECT_PROBE_AFTER_MS after it was made asks here, once: a TCP connect
of its own, non-blocking, polled for at most CLIENT_CONNECT_PROBE_WAIT_MS. A
refusal (ECONNREFUSED: nothing listens on that port) is certain, and the
connection says so at once at WARNING and in its timeout's message. Anything
else (accepted, still pending, a name that is not an address) says nothing:
the request waits as before, for a broker may be starting.

Only tcp:// addresses of an IP address or ``localhost`` are probed: a host name
would need a resolution that may block.
"""

from __future__ import annotations

import errno
import ipaddress
import selectors
import socket

from plinth import limits
from plinth.client.connection import tcp_host_port

_LOCALHOST = "127.0.0.1"


def refused_urls(url: str) -> list[str]:
    """Those of ``url``'s comma-separated tcp:// addresses whose TCP connect is
    refused now."""
    return [one for one in url.split(",") if _refused(one)]


def _refused(url: str) -> bool:
    address = _ip_address(url)
    if address is None:
        return False
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        outcome = probe.connect_ex((host, port))
        if outcome == errno.EINPROGRESS:
            if not _writable_within(probe, limits.CLIENT_CONNECT_PROBE_WAIT_MS / 1000):
                return False   # no verdict within the wait: say nothing
            outcome = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return outcome == errno.ECONNREFUSED


def _writable_within(probe: socket.socket, wait_s: float) -> bool:
    """Whether ``probe``'s connect settled (writable) within ``wait_s``. A selector,
    not ``select.select``: a client holding more than 1024 descriptors gets a
    probe numbered above FD_SETSIZE, which select() refuses with ValueError."""
    with selectors.DefaultSelector() as selector:
        selector.register(probe, selectors.EVENT_WRITE)
        return bool(selector.select(wait_s))


def _ip_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a tcp:// URL whose host is an IP address or localhost, else None."""
    address = tcp_host_port(url)
    if address is None:
        return None
    host, port = address
    if host == "localhost":
        host = _LOCALHOST
    try:
        ipaddress.ip_address(host)
        return host, port
    except ValueError:
        return None
