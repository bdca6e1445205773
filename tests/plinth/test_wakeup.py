"""Specification of plinth.wakeup.Wakeup: a pipe any thread writes to wake a poller."""

import os
import select
import tempfile

import pytest

from plinth.errors import ClosedError
from plinth.wakeup import Wakeup


def test_wake_makes_the_fd_readable_and_drain_empties_it():
    wakeup = Wakeup()
    try:
        # When another thread wakes it (twice) / Then the fd is readable until drained
        wakeup.wake()
        wakeup.wake()
        assert select.select([wakeup.fd], [], [], 0)[0] == [wakeup.fd]
        wakeup.drain()
        assert select.select([wakeup.fd], [], [], 0)[0] == []
    finally:
        wakeup.close()


def test_wake_after_close_raises_closed_error_and_writes_nothing_to_the_file_that_reused_its_fd():
    # Given a closed wake-up pipe whose fd numbers files opened after it took again
    wakeup = Wakeup()
    write_fd = wakeup._write_fd
    wakeup.close()
    with tempfile.TemporaryDirectory() as directory:
        files = [open(os.path.join(directory, f"victim{i}"), "w") for i in range(4)]
        try:
            assert write_fd in [f.fileno() for f in files]
            # When it is woken / Then ClosedError, and no file got a byte
            with pytest.raises(ClosedError, match="closed wake-up pipe"):
                wakeup.wake()
            with pytest.raises(ClosedError, match="closed wake-up pipe"):
                wakeup.drain()
        finally:
            for f in files:
                f.close()
        assert [os.path.getsize(f.name) for f in files] == [0] * 4


def test_a_second_close_does_nothing():
    wakeup = Wakeup()
    wakeup.close()
    wakeup.close()
