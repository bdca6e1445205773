"""router/accept_failures.py: a real Router (fake shards and controller,
tests/router/fakes.py) whose process is at its open-file limit while clients connect
says so in its log, rate-limited, instead of letting them time out in silence."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import subprocess
import sys


from plinth import protocol
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
