"""client/connect_probe.py: whether anything listens at a router's address, asked of a
real port nothing listens on, from a process like the ones that hit its limits."""

from __future__ import annotations

import logging
import os
import resource

import pytest

from plinth import limits, protocol
from plinth.client.connect_probe import refused_urls
from plinth.client.connection import Connection
from plinth.errors import PlinthTimeoutError
from tests.support import free_port

SELECT_FD_MAX = 1024          # FD_SETSIZE: select.select refuses a descriptor at or above it
HIGH_FD_FIRST = SELECT_FD_MAX + 64


@pytest.fixture
def over_1024_fds():
    """This process holds descriptors up to HIGH_FD_FIRST, so the next one it opens
    is numbered above FD_SETSIZE (the soft RLIMIT_NOFILE raised within the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = HIGH_FD_FIRST + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard RLIMIT_NOFILE {hard} is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    held = []
    try:
        while not held or held[-1] < HIGH_FD_FIRST:
            held.append(os.dup(0 if not held else held[0]))
        yield held
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_port_nothing_listens_on_is_refused_when_the_probe_descriptor_is_above_1024(
        over_1024_fds):
    # Given a process whose next descriptor is numbered above 1024
    url = f"tcp://127.0.0.1:{free_port()}"
    # When the probe asks whether anything listens at a dead port
    # Then it says refused (select.select raised "filedescriptor out of range")
    assert refused_urls(url) == [url]


def test_a_request_to_a_dead_broker_from_a_process_with_over_1024_fds_times_out_naming_the_refusal(
        over_1024_fds, caplog):
    # Given a client process holding more than 1024 descriptors, and no broker
    url = f"tcp://127.0.0.1:{free_port()}"
    conn = Connection(url)
    try:
        # When a request waits past the probe's time
        with caplog.at_level(logging.WARNING, logger="plinth.client.connection"), \
                pytest.raises(PlinthTimeoutError, match=f"the connection was refused at {url}"):
            conn.request(protocol.encode_list_offsets(1, "t", 0), 1,
                         limits.CLIENT_CONNECT_PROBE_AFTER_MS + 500)
    finally:
        conn.close()
    # Then the error is the normal timeout naming the refusal, and the WARNING said so
    assert any("connection refused: nothing listens there" in r.getMessage()
               for r in caplog.records)
