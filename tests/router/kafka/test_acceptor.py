"""router/kafka/acceptor.py: a real Kafka listener (tests/router/kafka/test_listener.py's
tiny handler) whose process is at its open-file limit while clients connect says so
once, naming the limit, instead of asyncio's traceback per try, and serves the
waiting clients once files are free again."""

from __future__ import annotations

from tests.router.kafka.test_listener import served, still_serves  # noqa: F401 (a fixture)
from tests.router.test_accept_failures import CONNECTIONS, clients_at_the_open_file_limit
from tests.support import wait_until


def test_a_kafka_listener_at_its_open_file_limit_warns_once_and_serves_the_waiting_later(
        served, caplog):  # noqa: F811 (the fixture)
    # Given a Kafka listener
    listener, handler = served
    # When its process is at its open-file limit as clients connect
    with clients_at_the_open_file_limit(handler.address[1], caplog) as (limit, warnings,
                                                                        errors):
        # Then one WARNING names the listen address, the errno and the limit, and nothing
        # else is logged of it: asyncio's server logged a traceback per try, thousands a
        # second (tester T-fd, session 45)
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(
            f"Kafka listener: cannot accept new connections on 127.0.0.1:"
            f"{handler.address[1]}: Too many open files (errno 24, EMFILE): the process's "
            f"open file limit RLIMIT_NOFILE is {limit} (hard ")
        assert errors == []
        # And once files are free again, the clients that waited are served, and new ones
        wait_until(lambda: listener.connection_count() >= CONNECTIONS, timeout_s=10)
        assert still_serves(handler.address)
