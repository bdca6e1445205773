"""router/kafka/acceptor.py: a real Kafka listener (tests/router/kafka/test_listener.py's
tiny handler) whose process is at its open-file limit while clients connect says so
once, naming the limit, instead of asyncio's traceback per try, and serves the
waiting clients once files are free again."""

from __future__ import annotations

import logging

from tests.router.kafka.test_listener import served, still_serves  # noqa: F401 (a fixture)
from tests.router.test_accept_failures import CONNECTIONS, at_the_open_file_limit, connector
from tests.support import wait_until


def test_a_kafka_listener_at_its_open_file_limit_warns_once_and_serves_the_waiting_later(
        served, caplog):  # noqa: F811 (the fixture)
    # Given a Kafka listener, and a process ready to connect to it
    listener, handler = served
    clients = connector(handler.address[1])
    try:
        with caplog.at_level(logging.WARNING):
            # When the listener's process is at its open-file limit as clients connect
            with at_the_open_file_limit() as limit:
                clients.stdin.write("go\n")
                clients.stdin.flush()
                assert clients.stdout.readline() == "connected\n"   # the kernel's backlog
                # Then a WARNING names the listen address, the errno and the limit
                warnings = wait_until(lambda: [r.getMessage() for r in caplog.records
                                               if "cannot accept" in r.getMessage()],
                                      timeout_s=10)
                failed_so_far = listener_failures(caplog)
            # And nothing else was logged of it: asyncio's server logged a traceback per
            # try, thousands a second (tester T-fd, session 45)
            assert len(warnings) == 1, warnings
            assert warnings[0].startswith(
                f"Kafka listener: cannot accept new connections on 127.0.0.1:"
                f"{handler.address[1]}: Too many open files (errno 24, EMFILE): the process's "
                f"open file limit RLIMIT_NOFILE is {limit} (hard ")
            assert failed_so_far == []
            # And once files are free again, the clients that waited are served, and new ones
            wait_until(lambda: listener.connection_count() >= CONNECTIONS, timeout_s=10)
            assert still_serves(handler.address)
    finally:
        clients.stdin.close()
        clients.wait(10)
        clients.stdout.close()


def listener_failures(caplog) -> list[str]:
    """The lines at ERROR or above (asyncio's "socket.accept() out of system resource")."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
